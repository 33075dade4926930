"""The one object behind the web page and the HTTP API: a :class:`~lavt.predict.Predictor`, the
limits, the inference gate, and what is loaded.

Both faces call :meth:`Service.predict_image` / :meth:`Service.predict_video` with a file on disk
(an upload saved under the size limit); there is no second inference path: the masks are the
``Predictor``'s, bit for bit.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import CheckpointError, InputError
from ..io.images import load_image
from ..io.videos import IMAGE_SUFFIXES, load_video
from .limits import InferenceGate, Limits

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".webm", ".mkv", ".m4v", ".mpg", ".mpeg")
VIDEO_WINDOW = 16  # frames per clip for video models: bounds memory whatever the video's length
DEMO_MODEL = Path("lavt-demo") / "lavt" / "final_model"  # what `lavt demo` leaves behind


def default_model(cwd: Path | None = None) -> Path:
    """The model ``lavt serve`` uses without ``--model``: the one ``lavt demo`` trained here."""
    path = (cwd or Path.cwd()) / DEMO_MODEL
    if not (path / "config.json").is_file():
        raise CheckpointError(
            f"no --model given and no demo model in {path.parent.parent}/; run `lavt demo` first "
            f"(about 7 minutes on a CPU) or pass --model (a lavt model directory, an official .pth, or a hub id)"
        )
    return path


@dataclass
class ImageResult:
    """One image's answer: masks (K, H, W) bool, object probabilities (K, H, W) float32, the
    decoded image, and per expression its area (pixels) and score (mean object probability inside
    its mask; 0 for an empty mask). The overlay is drawn on request (the API never needs it)."""

    expressions: list[str]
    masks: np.ndarray
    probs: np.ndarray
    image: Image.Image
    warnings: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def areas(self) -> list[int]:
        return [int(m.sum()) for m in self.masks]

    @property
    def scores(self) -> list[float]:
        return [float(p[m].mean()) if m.any() else 0.0 for m, p in zip(self.masks, self.probs)]

    def overlay(self) -> Image.Image:
        """Every mask tinted in its colour on the image, with a legend (lavt.io.outputs.overlay)."""
        from ..io.outputs import overlay

        return overlay(self.image, self.masks, self.expressions)


@dataclass
class VideoResult:
    expressions: list[str]
    masks: np.ndarray  # (K, N, H, W) bool
    frames: list[Image.Image]
    frame_names: list[str]
    fps: float | None
    warnings: list[str] = field(default_factory=list)


class Service:
    """``model``: anything :func:`lavt.predict.load_model` takes (or a :class:`LAVT`); the
    Predictor is built once, on ``device``, with ``precision`` (None: the Predictor's default)."""

    def __init__(self, model: Any, *, limits: Limits | None = None, device: str | None = "cpu",
                 precision: str | None = None, source: str | None = None) -> None:
        from ..predict import Predictor

        self.limits = limits or Limits()
        self.predictor = Predictor(model, device=device, precision=precision)
        self.source = source if source is not None else (os.fspath(model) if isinstance(model, (str, os.PathLike)) else "in memory")
        self.gate = InferenceGate(self.limits.queue_size, self.limits.timeout_s)

    # ------------------------------------------------------------------------------ describing
    def model_info(self) -> dict[str, Any]:
        """What is loaded: architecture, input size, text encoder, weights' origin (GET /model)."""
        cfg = self.predictor.model.config
        kind = "unified LAVT" if cfg.unified else ("video LAVT" if cfg.video else "LAVT (images)")
        if cfg.video and not cfg.unified:
            kind += " (naive, 2D PWAM)" if cfg.pwam_structure == 1 else f" (3D PWAM structure {cfg.pwam_structure})"
        params = sum(p.numel() for p in self.predictor.model.parameters())
        text = cfg.text_encoder
        return {
            "architecture": kind,
            "backbone": {"embed_dim": cfg.embed_dim, "depths": list(cfg.depths), "window_size": cfg.window_size},
            "parameters_m": round(params / 1e6, 2),
            "input_size": self.predictor.image_size,
            "text_encoder": getattr(text, "name_or_path", None),
            "max_tokens": getattr(text, "max_tokens", None),
            "weights": self.source,
            "device": str(self.predictor.device),
            "precision": self.predictor.precision,
            "decoder_convolution": "winograd" if self.predictor.winograd else "direct",
            "video": bool(cfg.video),
        }

    # ------------------------------------------------------------------------------ inputs
    def check_file(self, path: str | os.PathLike[str], name: str | None = None) -> Path:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"upload {name or p.name} not found on the server")
        self.limits.check_upload_size(p.stat().st_size, name or p.name)
        return p

    @staticmethod
    def is_video(path: Path) -> bool:
        """By extension; an animated GIF/WebP/APNG with more than one frame counts as a video."""
        suffix = path.suffix.lower()
        if suffix in VIDEO_SUFFIXES:
            return True
        if suffix in IMAGE_SUFFIXES:
            try:
                with Image.open(path) as img:
                    return getattr(img, "n_frames", 1) > 1
            except (UnidentifiedImageError, OSError, ValueError):
                return False  # load_image names the problem
        return False

    def read_image(self, path: Path, name: str) -> Image.Image:
        """Header first (pixel limit before any decoding), then the full decode of load_image."""
        try:
            with Image.open(path) as img:
                size = img.size
        except (UnidentifiedImageError, OSError, ValueError):
            raise InputError(f"{name} is not an image lavt can read (corrupt, truncated or not an image file)") from None
        self.limits.check_pixels(*size, what=name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own pixel limit applies
            try:
                return load_image(path)
            except InputError as e:
                raise InputError(f"{name}: {str(e).replace(str(path), 'file')}") from None

    def read_video(self, path: Path, name: str) -> tuple[list[Image.Image], list[str], float | None]:
        lim = self.limits
        try:
            frames, names, fps = load_video(path, max_frames=lim.max_video_frames + 1)
        except InputError as e:
            raise InputError(f"{name}: {str(e).replace(str(path), 'file')}") from None
        if len(frames) > lim.max_video_frames:
            raise InputError(f"{name} has more than {lim.max_video_frames} frames; this server accepts at most {lim.max_video_frames}")
        if fps and len(frames) / fps > lim.max_video_seconds:
            raise InputError(f"{name} lasts {len(frames) / fps:.1f} s; this server accepts at most {lim.max_video_seconds:g} s")
        lim.check_pixels(*frames[0].size, what=f"{name}'s frames")
        return frames, names, fps

    # ------------------------------------------------------------------------------ inference
    def predict_image(self, path: str | os.PathLike[str], expressions: list[str], name: str | None = None) -> ImageResult:
        """Masks for ``expressions`` on the image at ``path`` (an InputError for bad input, a
        ServerBusy when the queue is full)."""
        p = self.check_file(path, name)
        label = name or p.name
        texts = self.limits.check_expressions(expressions)
        image = self.read_image(p, label)
        with self.gate.turn() as waited, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pred = self.predictor.predict(image, texts, return_probs=True)
        return ImageResult(
            expressions=texts, masks=pred.masks, probs=pred.probs, image=image,
            warnings=[_one_line(w.message) for w in caught if _user_warning(w)],
            meta={**pred.meta, "queued_s": round(waited, 3)},
        )

    def predict_video(self, path: str | os.PathLike[str], expressions: list[str], name: str | None = None) -> VideoResult:
        p = self.check_file(path, name)
        label = name or p.name
        texts = self.limits.check_expressions(expressions)
        frames, names, fps = self.read_video(p, label)
        window = VIDEO_WINDOW if self.predictor.model.config.video else None
        with self.gate.turn(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pred = self.predictor.predict_video(frames, texts, window=window, frame_names=names, fps=fps, progress=False)
        return VideoResult(expressions=texts, masks=pred.masks, frames=frames, frame_names=list(names), fps=fps,
                           warnings=[_one_line(w.message) for w in caught if _user_warning(w)])


def mask_png(mask: np.ndarray) -> bytes:
    """A (H, W) bool mask as an 8-bit PNG (0 / 255), the format of every mask lavt writes."""
    import io

    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255, "L").save(buf, format="PNG")
    return buf.getvalue()


def _user_warning(w: warnings.WarningMessage) -> bool:
    """lavt's own warnings (empty mask, [UNK] words, input size) are shown to the user."""
    return type(w.message).__module__.startswith("lavt")


def _one_line(message: Any) -> str:
    return " ".join(str(message).split())


__all__ = ["Service", "ImageResult", "VideoResult", "default_model", "mask_png", "DEMO_MODEL", "VIDEO_WINDOW"]
