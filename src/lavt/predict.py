"""Inference for users: image + expressions in, masks at the original image size out.

Pipeline (the official LAVT evaluation): the RGB image is resized to exactly
``image_size x image_size`` with PIL bilinear resampling, scaled to [0, 1] and normalised with
the ImageNet mean/std; the model's logits are upsampled back to the original size
(bilinear, ``align_corners=True``) and the mask is their argmax (no threshold).

All expressions of one image run as one batch that shares the image (the language-free part of
the backbone is computed once).

>>> from lavt.predict import Predictor
>>> predictor = Predictor("path/to/model")                       # doctest: +SKIP
>>> pred = predictor.predict("photo.jpg", ["the dog on the left", "the red car"])  # doctest: +SKIP
>>> pred.masks.shape                                              # doctest: +SKIP
(2, 480, 640)

Videos (:meth:`Predictor.predict_video`) follow the official Ref-YouTube-VOS inference: every
frame gets the same preprocessing, a video model sees the whole video as one clip (or, for long
videos, consecutive windows of ``window`` frames) and each frame's logits are upsampled to the
original frame size and argmaxed. An image model runs frame by frame (official
``evaluate_single_frames``).

>>> vpred = predictor.predict_video("clip.mp4", ["the dog on the left"])  # doctest: +SKIP
>>> vpred.masks.shape  # (K, frames, H0, W0)                      # doctest: +SKIP
(1, 96, 720, 1280)
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageOps

from .data.transforms import IMAGENET_MEAN, IMAGENET_STD, preprocess_image  # the one official input transform
from .errors import CheckpointError, ConfigError, InputError
from .precision import warn_if_slow
from .models.lavt import CONFIG_NAME, LAVT
from .video_io import load_video, write_gif, write_mp4

OFFICIAL_SUFFIXES = (".pth", ".pt", ".bin")
PRECISIONS = ("fp32", "bf16")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# Distinct, colour-blind-friendly-ish tints (Okabe-Ito, then a few more), cycled for K > 10.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
    (255, 0, 0),
    (0, 255, 255),
    (148, 103, 189),
)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"invalid device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r} was requested but CUDA is not available; use --device cpu")
    return dev


def load_model(
    spec: str | os.PathLike[str],
    device: str | torch.device | None = None,
    *,
    text_encoder: str | None = None,
    max_tokens: int = 20,
) -> LAVT:
    """Load a model from what a user would type, in eval mode on ``device`` (default: CPU).

    * a directory with ``config.json`` (written by ``LAVT.save_pretrained``) -> ``LAVT.from_pretrained``
    * a file ending ``.pth`` / ``.pt`` / ``.bin`` -> an official LAVT checkpoint
      (:func:`lavt.official.load_official_checkpoint`; ``text_encoder`` / ``max_tokens`` are
      passed on and only matter for checkpoints holding BERT weights)
    * ``namespace/name`` that is not a local path -> a hub repo holding a saved model directory
    * anything else raises :class:`CheckpointError`.
    """
    dev = torch.device("cpu") if device is None else _resolve_device(device)
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            raise CheckpointError(
                f"{path} is not a lavt model directory (no {CONFIG_NAME}); give a directory written by "
                f"save_pretrained / `lavt convert`, or an official .pth checkpoint"
            )
        model = LAVT.from_pretrained(path)
    elif path.is_file():
        if path.suffix.lower() not in OFFICIAL_SUFFIXES:
            raise CheckpointError(
                f"{path} is a file but not a checkpoint (expected a lavt model directory or an official "
                f"checkpoint ending {', '.join(OFFICIAL_SUFFIXES)})"
            )
        from .official import load_official_checkpoint

        model = load_official_checkpoint(path, text_encoder=text_encoder, max_tokens=max_tokens)
    elif path.suffix.lower() in OFFICIAL_SUFFIXES:
        raise CheckpointError(f"checkpoint file {text} does not exist")
    elif _HUB_ID.match(text) and not text.startswith((".", "~")):
        model = LAVT.from_pretrained(text)
    else:
        raise CheckpointError(
            f"model {text} does not exist (expected a lavt model directory, an official .pth checkpoint "
            f"or a hub repo id 'namespace/name')"
        )
    return model.to(dev).eval()


def load_image(image: str | os.PathLike[str] | Image.Image | np.ndarray) -> Image.Image:
    """An RGB PIL image from a path, a PIL image or a uint8 numpy array (H, W) or (H, W, 3).

    Files are fully decoded here (a corrupt or truncated file raises :class:`InputError`) and
    turned upright according to their EXIF orientation, so masks match what image viewers show.
    Other modes are converted with ``Image.convert("RGB")`` as the official code does: grey,
    palette and CMYK images become RGB and an alpha channel is dropped (not composited).
    16-bit / 32-bit integer images are scaled (16-bit: / 257) or clipped to 8 bits first.
    """
    if isinstance(image, Image.Image):
        return _to_rgb(image)
    if isinstance(image, np.ndarray):
        return _from_array(image)
    if not isinstance(image, (str, os.PathLike)):
        raise InputError(f"expected an image path, a PIL image or a numpy array, got {type(image).__name__}")
    path = Path(image).expanduser()
    if not path.exists():
        raise InputError(f"image file not found: {os.fspath(image)}")
    if path.is_dir():
        raise InputError(f"cannot read image {path}: it is a directory")
    try:
        with Image.open(path) as img:
            img.load()  # force decoding now: truncated files fail here, not later
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except Image.DecompressionBombError as e:
        raise InputError(f"cannot read image {path}: {e}") from None
    except (OSError, ValueError, EOFError, SyntaxError) as e:  # UnidentifiedImageError is an OSError
        msg = " ".join(str(e).split()) or type(e).__name__
        raise InputError(f"cannot read image {path}: {msg}") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.width < 1 or img.height < 1:
        raise InputError(f"image has no pixels (size {img.width}x{img.height})")
    if img.mode == "RGB":
        return img.copy()
    if img.mode.startswith("I;16"):
        arr = np.asarray(img).astype(np.float64) / 257.0
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode in ("I", "F"):
        arr = np.asarray(img).astype(np.float64)
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L").convert("RGB")
    return img.convert("RGB")


def _from_array(arr: np.ndarray) -> Image.Image:
    if arr.dtype != np.uint8:
        raise InputError(f"image arrays must be uint8 (0..255), got dtype {arr.dtype}")
    if arr.ndim == 2:
        img = Image.fromarray(np.ascontiguousarray(arr), "L")
    elif arr.ndim == 3 and arr.shape[2] == 3:
        img = Image.fromarray(np.ascontiguousarray(arr), "RGB")
    else:
        raise InputError(f"image arrays must have shape (H, W) or (H, W, 3), got {arr.shape}")
    return _to_rgb(img)


def validate_expressions(expressions: str | Sequence[str]) -> list[str]:
    """A list of non-blank strings (a single string is one expression); else InputError."""
    if isinstance(expressions, str):
        expressions = [expressions]
    elif not isinstance(expressions, (list, tuple)):
        raise InputError(f"expressions must be a str or a list of str, got {type(expressions).__name__}")
    if not expressions:
        raise InputError("no expression given")
    for i, text in enumerate(expressions):
        if not isinstance(text, str):
            raise InputError(f"expression {i + 1} must be a str, got {type(text).__name__}")
        if not text.strip():
            raise InputError(f"expression {i + 1} is empty")
    return list(expressions)


# --------------------------------------------------------------------------------------------
# Predictor
# --------------------------------------------------------------------------------------------
@dataclass
class Prediction:
    """Result for one image and K expressions, at the original image size (H0, W0).

    ``masks`` (K, H0, W0) bool; ``logits`` (K, 2, H0, W0) float32 (channel 1 = object) and
    ``probs`` (K, H0, W0) float32 object probability, when requested.
    """

    masks: np.ndarray
    expressions: list[str]
    logits: np.ndarray | None = None
    probs: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.expressions)


@dataclass
class VideoPrediction:
    """Result for one video of N frames and K expressions, at the original frame size (H0, W0).

    ``masks`` (K, N, H0, W0) bool; ``probs`` (K, N, H0, W0) float32 object probability when
    requested; ``frame_names`` the N frame names (file stems for a frame directory, ``00000``...
    otherwise); ``fps`` the source frame rate when known.
    """

    masks: np.ndarray
    expressions: list[str]
    frame_names: list[str]
    fps: float | None = None
    probs: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.expressions)


def _upsampled(logits: torch.Tensor, size: tuple[int, int]):
    """Each row of ``logits`` (N, 2, h, w) upsampled to ``size`` = (H, W) (bilinear,
    align_corners=True: the official post-processing, as ``data.ytvos.logits_to_masks``), one
    row at a time to bound memory on large frames. Yields (2, H, W) tensors."""
    for i in range(logits.shape[0]):
        yield F.interpolate(logits[i : i + 1], size=size, mode="bilinear", align_corners=True)[0]


class Predictor:
    """Runs a LAVT model with a text encoder on images and raw English expressions.

    ``model``: a :class:`LAVT` or anything :func:`load_model` accepts. ``device``: default
    "cuda" if available else "cpu". ``precision``: "fp32" or "bf16" (autocast around the model;
    outputs are float32). ``image_size``: the square side the image is resized to (official 480).
    ``tokenizer``: defaults to the one described by ``model.config.text_encoder``.
    ``exact``: False (default) runs the decoder's 3x3 convolutions with the Winograd algorithm on
    CPUs where PyTorch ships NNPACK (``LAVT.use_winograd``; about 25-30 % less time per image on a
    Swin-B, logits within ~1e-5 relative); True keeps the direct convolution of the official model.
    The choice is set on the model (``model.use_winograd(not exact)``); ``self.winograd`` says
    whether Winograd is active.
    """

    def __init__(
        self,
        model: LAVT | str | os.PathLike[str],
        device: str | torch.device | None = None,
        precision: str = "fp32",
        image_size: int = 480,
        tokenizer: Any | None = None,
        exact: bool = False,
    ) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"precision {precision!r} is not one of {PRECISIONS}")
        if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
            raise ConfigError(f"image_size must be a positive integer, got {image_size!r}")
        self.device = _resolve_device(device)
        warn_if_slow(precision, self.device)
        if not isinstance(model, LAVT):
            if not isinstance(model, (str, os.PathLike)):
                raise ConfigError(f"model must be a LAVT or a model path / hub id, got {type(model).__name__}")
            model = load_model(model, self.device)
        if model.config.text_encoder is None or model.text_encoder is None:
            raise ConfigError(
                "this model has no text encoder: it takes word features (text_features=...) and cannot "
                "run on raw text; use a model saved with a text encoder (e.g. an official checkpoint "
                "that includes BERT weights)"
            )
        self.model = model.to(self.device).eval()
        self.winograd = self.model.use_winograd(not exact)
        self.precision = precision
        self.image_size = image_size
        if tokenizer is None:
            from .models.text import Tokenizer

            tokenizer = Tokenizer.from_config(model.config.text_encoder)
        self.tokenizer = tokenizer

    # ------------------------------------------------------------------------------------
    def preprocess(self, image: Any) -> torch.Tensor:
        """The official input tensor (1, 3, S, S): bilinear resize to S x S, /255, ImageNet norm."""
        return preprocess_image(load_image(image), self.image_size).unsqueeze(0)

    def predict(
        self,
        image: Any,
        expressions: str | Sequence[str],
        return_logits: bool = False,
        return_probs: bool = False,
    ) -> Prediction:
        """Masks (K, H0, W0) for the K expressions, at the original image size."""
        texts = validate_expressions(expressions)
        img = load_image(image)
        width, height = img.size
        input_ids, attention_mask = self.tokenizer(texts)
        x = self.preprocess(img).to(self.device)
        input_ids = input_ids.to(self.device)
        attention_mask = attention_mask.to(self.device)

        self.model.eval()
        with torch.inference_mode():
            logits = self._forward(x, input_ids, attention_mask)
            k = len(texts)
            masks = np.zeros((k, height, width), dtype=bool)
            out_logits = np.zeros((k, 2, height, width), dtype=np.float32) if return_logits else None
            out_probs = np.zeros((k, height, width), dtype=np.float32) if return_probs else None
            for i, up in enumerate(_upsampled(logits, (height, width))):
                masks[i] = up.argmax(0).bool().cpu().numpy()
                if out_logits is not None:
                    out_logits[i] = up.cpu().numpy()
                if out_probs is not None:
                    out_probs[i] = up.softmax(0)[1].cpu().numpy()
        return Prediction(
            masks=masks,
            expressions=texts,
            logits=out_logits,
            probs=out_probs,
            meta={
                "image_size": self.image_size,
                "precision": self.precision,
                "winograd": self.winograd,
                "original_size": (height, width),
            },
        )

    __call__ = predict

    def _forward(self, x: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The model's float32 logits, under bf16 autocast when asked (call in inference mode)."""
        if self.precision == "bf16":
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                return self.model(x, input_ids, attention_mask).float()
        return self.model(x, input_ids, attention_mask).float()

    # ------------------------------------------------------------------------------------
    def predict_video(
        self,
        video: Any,
        expressions: str | Sequence[str],
        *,
        window: int | None = None,
        max_frames: int | None = None,
        frame_names: Sequence[str] | None = None,
        fps: float | None = None,
        return_probs: bool = False,
        progress: bool = True,
    ) -> VideoPrediction:
        """Masks (K, N, H0, W0) for the K expressions on the N frames of a video.

        ``video``: a path :func:`lavt.video_io.load_video` reads (frame directory, GIF/WebP,
        video file) or a sequence of frames (anything :func:`load_image` takes; then
        ``frame_names`` / ``fps`` may name them). ``max_frames`` keeps the first frames only.

        A video model sees the whole video as one clip when ``window`` is None (the official
        Ref-YouTube-VOS inference; memory grows with the length), else consecutive windows of
        ``window`` frames (the last one shorter) run independently. All expressions share each
        clip as one batch. An image model runs frame by frame (``window`` does not change its
        result). ``progress``: a tqdm bar over windows / frames on a terminal's stderr.
        """
        from tqdm.auto import tqdm

        from .data.ytvos import windows

        texts = validate_expressions(expressions)
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
            raise ConfigError(f"window must be a positive number of frames or None (whole video), got {window!r}")
        frames, names, fps = _video_frames(video, max_frames, frame_names, fps)
        width, height = frames[0].size
        n, k = len(frames), len(texts)
        input_ids, attention_mask = self.tokenizer(texts)
        input_ids = input_ids.to(self.device)
        attention_mask = attention_mask.to(self.device)
        masks = np.zeros((k, n, height, width), dtype=bool)
        probs = np.zeros((k, n, height, width), dtype=np.float32) if return_probs else None

        is_video = bool(self.model.config.video)
        # an image model: one frame at a time, exactly as predict() on that frame
        groups = (windows(n, window) if window is not None else [list(range(n))]) if is_video else windows(n, 1)
        bar = tqdm(
            groups, desc="video" if is_video else "frames", unit="window" if is_video else "frame",
            disable=None if progress else True, leave=False,
        )
        self.model.eval()
        with torch.inference_mode():
            for idx in bar:
                x = torch.stack([preprocess_image(frames[i], self.image_size) for i in idx]).to(self.device)
                if is_video:
                    logits = self._forward(x[None], input_ids, attention_mask)  # (K, T, 2, S, S)
                else:
                    logits = self._forward(x, input_ids, attention_mask)[:, None]  # (K, 1, 2, S, S)
                for e in range(k):
                    for t, up in zip(idx, _upsampled(logits[e], (height, width))):
                        masks[e, t] = up.argmax(0).bool().cpu().numpy()
                        if probs is not None:
                            probs[e, t] = up.softmax(0)[1].cpu().numpy()
        return VideoPrediction(
            masks=masks,
            expressions=texts,
            frame_names=names,
            fps=fps,
            probs=probs,
            meta={
                "image_size": self.image_size,
                "precision": self.precision,
                "winograd": self.winograd,
                "original_size": (height, width),
                "mode": "clip" if is_video else "per-frame",
                "window": window if is_video else 1,
            },
        )


def _video_frames(
    video: Any, max_frames: int | None, frame_names: Sequence[str] | None, fps: float | None
) -> tuple[list[Image.Image], list[str], float | None]:
    if isinstance(video, (str, os.PathLike)):
        frames, names, source_fps = load_video(video, max_frames=max_frames)
        fps = source_fps if fps is None else fps
        if frame_names is not None:
            names = _check_frame_names(frame_names, len(frames))
        return frames, names, fps
    if not isinstance(video, (list, tuple)):
        raise InputError(
            f"expected a video path (file or frame directory) or a list of frames, got {type(video).__name__}"
        )
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1):
        raise InputError(f"max_frames must be a positive integer, got {max_frames!r}")
    items = list(video)[:max_frames]
    if not items:
        raise InputError("the video has no frames")
    frames = [load_image(f) for f in items]
    names = _check_frame_names(frame_names, len(frames)) if frame_names is not None else [f"{i:05d}" for i in range(len(frames))]
    for frame, name in zip(frames, names):
        if frame.size != frames[0].size:
            raise InputError(
                f"frames have different sizes: {names[0]} is {frames[0].width}x{frames[0].height} "
                f"but {name} is {frame.width}x{frame.height} (W x H)"
            )
    return frames, names, fps


def _check_frame_names(names: Sequence[str], n: int) -> list[str]:
    out = [str(x) for x in names]
    if len(out) < n:
        raise InputError(f"{len(out)} frame names for {n} frames")
    out = out[:n]
    for name in out:
        if not name or name in (".", "..") or any(c in name for c in "/\\\x00"):
            raise InputError(f"frame name {name!r} is not a plain file name")
    if len(set(out)) != len(out):
        raise InputError("frame names are not unique")
    return out


# --------------------------------------------------------------------------------------------
# Visualisation and saving
# --------------------------------------------------------------------------------------------
def _as_masks(masks: Any, size: tuple[int, int]) -> np.ndarray:
    arr = np.asarray(masks.masks if isinstance(masks, Prediction) else masks)
    if arr.ndim == 2:
        arr = arr[None]
    width, height = size
    if arr.ndim != 3 or arr.shape[1:] != (height, width):
        raise InputError(f"masks of shape {arr.shape} do not fit an image of size {width}x{height} (W x H)")
    return arr.astype(bool)


def _contour(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask with a 4-neighbour outside it (the image border counts as outside)."""
    padded = np.pad(mask, 1, constant_values=False)
    inner = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def overlay(
    image: Any,
    masks: Any,
    expressions: Sequence[str] | None = None,
    alpha: float = 0.5,
    *,
    first_colour: int = 0,
) -> Image.Image:
    """The image with mask k tinted in colour ``PALETTE[first_colour + k]`` (``alpha`` blend)
    and outlined.

    With ``expressions`` and an image at least 128 px wide, a small legend (colour + text) is
    drawn in the top-left corner. The result has the image's size.
    """
    img = load_image(image)
    ms = _as_masks(masks, img.size)
    out = np.asarray(img, dtype=np.float32).copy()
    for k, m in enumerate(ms):
        colour = np.asarray(PALETTE[(first_colour + k) % len(PALETTE)], dtype=np.float32)
        out[m] = (1.0 - alpha) * out[m] + alpha * colour
        out[_contour(m)] = colour
    result = Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "RGB")
    if expressions and img.width >= 128 and img.height >= 16:
        draw = ImageDraw.Draw(result)
        line_h = 12
        for k, text in enumerate(expressions[: max(1, (img.height - 4) // line_h)]):
            y = 2 + k * line_h
            label = text if len(text) <= 40 else text[:37] + "..."
            colour = PALETTE[(first_colour + k) % len(PALETTE)]
            box = draw.textbbox((14, y), label)
            draw.rectangle((0, y - 1, box[2] + 2, y + line_h - 2), fill=(0, 0, 0))
            draw.rectangle((2, y + 1, 10, y + 9), fill=colour)
            draw.text((14, y), label, fill=(255, 255, 255))
    return result


def save_prediction(pred: Prediction, image: Any, out_dir: str | os.PathLike[str], stem: str) -> list[Path]:
    """Write ``{stem}_{k:02d}.png`` (mode "L", 0/255, original size) per expression,
    ``{stem}_{k:02d}_prob.png`` (8-bit object probability) when ``pred.probs`` is set,
    ``{stem}_overlay.png`` and ``{stem}_expressions.json`` (mask file name -> expression).
    Returns the written paths."""
    img = load_image(image)
    masks = _as_masks(pred.masks, img.size)
    if len(masks) != len(pred.expressions):
        raise InputError(f"{len(masks)} masks but {len(pred.expressions)} expressions")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create output directory {out}: {e}") from None
    written: list[Path] = []
    index: dict[str, str] = {}
    for k, (mask, text) in enumerate(zip(masks, pred.expressions)):
        path = out / f"{stem}_{k:02d}.png"
        Image.fromarray(mask.astype(np.uint8) * 255, "L").save(path)
        written.append(path)
        index[path.name] = text
        if pred.probs is not None:
            prob_path = out / f"{stem}_{k:02d}_prob.png"
            prob = np.clip(np.rint(np.asarray(pred.probs[k], dtype=np.float64) * 255), 0, 255).astype(np.uint8)
            Image.fromarray(prob, "L").save(prob_path)
            written.append(prob_path)
    overlay_path = out / f"{stem}_overlay.png"
    overlay(img, masks, pred.expressions).save(overlay_path)
    written.append(overlay_path)
    json_path = out / f"{stem}_expressions.json"
    json_path.write_text(json.dumps(index, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    written.append(json_path)
    return written


def save_video_prediction(
    pred: VideoPrediction,
    frames: Any,
    out_dir: str | os.PathLike[str],
    *,
    mp4: bool = False,
    fps: float | None = None,
) -> list[Path]:
    """Write, for expression k (two digits ``kk``):

    * ``kk/<frame_name>.png``: the masks (mode "L", 0/255, original size), one per frame;
    * ``kk_prob/<frame_name>.png``: the 8-bit object probability, when ``pred.probs`` is set;
    * ``kk_overlay.gif`` (and ``kk_overlay.mp4`` with ``mp4=True``; needs PyAV, else a warning):
      the frames with the mask tinted in colour ``PALETTE[k]`` and the expression as a legend;

    and ``expressions.json`` (``{"kk": expression}``). ``frames``: the video's frames (a list of
    images) or the path it was read from. ``fps``: overlay rate (default: ``pred.fps``, else 10).
    Returns the written paths in that order."""
    import warnings

    from .video_io import have_av

    names = pred.frame_names
    if isinstance(frames, (str, os.PathLike)):
        frames, _, _ = load_video(frames, max_frames=len(names))
    images = [load_image(f) for f in frames]
    masks = np.asarray(pred.masks)
    if masks.ndim != 4 or masks.shape[0] != len(pred.expressions):
        raise InputError(f"video masks must be (K, N, H, W) for {len(pred.expressions)} expressions, got {masks.shape}")
    if masks.shape[1] != len(images) or len(names) != len(images):
        raise InputError(f"{masks.shape[1]} mask frames and {len(names)} frame names for a video of {len(images)} frames")
    _check_frame_names(names, len(names))
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create output directory {out}: {e}") from None
    if mp4 and not have_av():
        warnings.warn("--mp4 / mp4=True needs PyAV (pip install av); writing the GIF overlays only", UserWarning, stacklevel=2)
        mp4 = False
    rate = fps if fps is not None else pred.fps
    written: list[Path] = []
    index: dict[str, str] = {}
    for k, text in enumerate(pred.expressions):
        key = f"{k:02d}"
        index[key] = text
        folder = out / key
        folder.mkdir(exist_ok=True)
        overlays = []
        for t, (image, name) in enumerate(zip(images, names)):
            mask = _as_masks(masks[k, t], image.size)[0]
            path = folder / f"{name}.png"
            Image.fromarray(mask.astype(np.uint8) * 255, "L").save(path)
            written.append(path)
            overlays.append(overlay(image, mask, [text], first_colour=k))
        if pred.probs is not None:
            prob_folder = out / f"{key}_prob"
            prob_folder.mkdir(exist_ok=True)
            for t, name in enumerate(names):
                prob = np.clip(np.rint(np.asarray(pred.probs[k, t], dtype=np.float64) * 255), 0, 255).astype(np.uint8)
                path = prob_folder / f"{name}.png"
                Image.fromarray(prob, "L").save(path)
                written.append(path)
        written.append(write_gif(out / f"{key}_overlay.gif", overlays, rate))
        if mp4:
            written.append(write_mp4(out / f"{key}_overlay.mp4", overlays, rate))
    json_path = out / "expressions.json"
    json_path.write_text(json.dumps(index, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    written.append(json_path)
    return written


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PALETTE",
    "Prediction",
    "Predictor",
    "VideoPrediction",
    "load_image",
    "load_model",
    "overlay",
    "save_prediction",
    "save_video_prediction",
    "validate_expressions",
]
