"""Writing predictions: mask and probability PNGs, overlays (images, GIF/MP4), in output folders
of one input each, written whole and never mixed.

``lavt predict --image photo.jpg --out out/`` writes ``out/photo.jpg/`` (the input's file name,
extension included, so ``photo.jpg`` and ``photo.png`` never share a folder). The folder is
built under a temporary name and swapped in when complete, so a re-run replaces the previous
result of the same input entirely (no stale mask of an expression the new run does not have)
and an interrupted run leaves the old result intact. ``expressions.json`` in each folder records the
source and what each file is; a folder without it, or made for another source, is never
replaced: the run stops before inference with a one-line error.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw

from ..errors import InputError
from .images import load_image
from .videos import check_frame_names, have_av, load_video, write_gif, write_mp4

if TYPE_CHECKING:  # the result types of lavt.predict (importing it here would pull in torch)
    from ..predict import Prediction, VideoPrediction

MANIFEST_NAME = "expressions.json"  # which mask is which expression, and the source


def check_writable_folder(folder: str | os.PathLike[str], what: str = "--out") -> Path:
    """Prove that ``folder`` (or, while it does not exist, the nearest existing folder above it,
    where it would be created) takes files; else InputError (one line). Creates nothing."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{what} {folder} is an existing file, not a folder")
    probe_in = folder
    while not probe_in.exists():
        if probe_in.parent == probe_in:
            break
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise InputError(f"cannot create {what} {folder}: {probe_in} is a file")
    try:
        fd, probe = tempfile.mkstemp(prefix=".lavt-write-test-", dir=probe_in)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        where = "" if probe_in == folder else f" ({probe_in} does not take new files)"
        raise InputError(f"cannot write to {what} {folder}: {e.strerror or e}{where}") from None
    return folder


def read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_output_folder(folder: str | os.PathLike[str], source: str | None) -> Path:
    """Raise InputError unless ``folder`` may receive the prediction for ``source``: it does not
    exist yet, is empty, or holds lavt's earlier prediction for the same source. Its parent must
    be writable. Cheap: run it before loading a model."""
    folder = Path(folder)
    check_writable_folder(folder.parent, "--out")
    if not folder.exists():
        return folder
    if not folder.is_dir():
        raise InputError(f"output {folder} is an existing file; remove it or choose another --out")
    if not any(folder.iterdir()):
        return folder
    manifest = read_manifest(folder)
    if manifest is None:
        raise InputError(f"output folder {folder} already exists and was not written by lavt predict; choose another --out")
    if manifest.get("source") != source:
        raise InputError(
            f"output folder {folder} holds the prediction for another input ({manifest.get('source')}); "
            f"choose another --out"
        )
    return folder


def write_output_folder(
    folder: str | os.PathLike[str],
    source: str | None,
    write: Callable[[Path], dict[str, Any]],
) -> list[Path]:
    """Build the folder with ``write(tmp_folder) -> manifest fields`` and swap it in whole.

    Returns the paths of the files written (final locations), manifest last."""
    folder = check_output_folder(folder, source)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    old: Path | None = None
    try:
        fields = write(tmp)
        manifest = {"source": source, **fields}
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written = sorted((p for p in tmp.rglob("*") if p.is_file() and p.name != MANIFEST_NAME), key=_natural)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            os.replace(folder, old)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not folder.exists():
            with contextlib.suppress(OSError):
                os.replace(old, folder)  # put the previous result back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return [folder / p.relative_to(tmp) for p in written] + [folder / MANIFEST_NAME]


def _natural(path: Path) -> tuple[str, ...]:
    return path.parts


# ---------------------------------------------------------------------------------------------
# What goes into a folder: masks, probabilities, overlays
# ---------------------------------------------------------------------------------------------
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


def _as_masks(masks: Any, size: tuple[int, int]) -> np.ndarray:
    arr = np.asarray(getattr(masks, "masks", masks))  # a Prediction or an array
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


def save_prediction(
    pred: Prediction,
    image: Any,
    folder: str | os.PathLike[str],
    *,
    source: str | None = None,
    info: dict[str, Any] | None = None,
) -> list[Path]:
    """Write one image's prediction into ``folder`` (``lavt predict`` uses ``OUT/<image file name>/``):

    * ``kk.png``: the mask of expression ``kk`` (two digits; mode "L", 0/255, original size);
    * ``kk_prob.png``: the 8-bit object probability, when ``pred.probs`` is set;
    * ``overlay.png``: every mask tinted in its colour on the image, with a legend;
    * ``expressions.json``: ``{"source": ..., "expressions": {"kk": text}, "files": {...}, ...}``.

    The folder is written whole and swapped in (:mod:`lavt.io.outputs`): a previous prediction for
    the same ``source`` is replaced entirely, any other existing content is refused with an
    InputError. ``info`` adds fields to ``expressions.json`` (model, image size...). Returns the
    written paths."""
    img = load_image(image)
    masks = _as_masks(pred.masks, img.size)
    if len(masks) != len(pred.expressions):
        raise InputError(f"{len(masks)} masks but {len(pred.expressions)} expressions")

    def write(tmp: Path) -> dict[str, Any]:
        files: dict[str, str] = {}
        for k, (mask, text) in enumerate(zip(masks, pred.expressions)):
            key = f"{k:02d}"
            Image.fromarray(mask.astype(np.uint8) * 255, "L").save(tmp / f"{key}.png")
            files[f"{key}.png"] = f"mask of expression {key}"
            if pred.probs is not None:
                prob = np.clip(np.rint(np.asarray(pred.probs[k], dtype=np.float64) * 255), 0, 255).astype(np.uint8)
                Image.fromarray(prob, "L").save(tmp / f"{key}_prob.png")
                files[f"{key}_prob.png"] = f"object probability of expression {key} (0-255)"
        overlay(img, masks, pred.expressions).save(tmp / "overlay.png")
        files["overlay.png"] = "all masks on the image"
        expressions = {f"{k:02d}": text for k, text in enumerate(pred.expressions)}
        return {**(info or {}), "expressions": expressions, "files": files}

    return write_output_folder(folder, source, write)


def save_video_prediction(
    pred: VideoPrediction,
    frames: Any,
    folder: str | os.PathLike[str],
    *,
    mp4: bool = False,
    fps: float | None = None,
    source: str | None = None,
    info: dict[str, Any] | None = None,
) -> list[Path]:
    """Write one video's prediction into ``folder`` (``lavt predict`` uses ``OUT/<video name>/``);
    for expression ``kk`` (two digits):

    * ``kk/<frame_name>.png``: the masks (mode "L", 0/255, original size), one per frame;
    * ``kk_prob/<frame_name>.png``: the 8-bit object probability, when ``pred.probs`` is set;
    * ``kk_overlay.gif`` (and ``kk_overlay.mp4`` with ``mp4=True``; needs PyAV, else a warning):
      the frames with the mask tinted in colour ``PALETTE[k]`` and the expression as a legend;

    and ``expressions.json``. ``frames``: the video's frames (a list of images) or the path it was
    read from. ``fps``: overlay rate (default: ``pred.fps``, else 10). The folder is replaced
    whole, as :func:`save_prediction`. Returns the written paths."""
    names = pred.frame_names
    if isinstance(frames, (str, os.PathLike)):
        frames, _, _ = load_video(frames, max_frames=len(names))
    images = [load_image(f) for f in frames]
    masks = np.asarray(pred.masks)
    if masks.ndim != 4 or masks.shape[0] != len(pred.expressions):
        raise InputError(f"video masks must be (K, N, H, W) for {len(pred.expressions)} expressions, got {masks.shape}")
    if masks.shape[1] != len(images) or len(names) != len(images):
        raise InputError(f"{masks.shape[1]} mask frames and {len(names)} frame names for a video of {len(images)} frames")
    check_frame_names(names, len(names))
    if mp4 and not have_av():
        warnings.warn("--mp4 / mp4=True needs PyAV (pip install av); writing the GIF overlays only", UserWarning, stacklevel=2)
        mp4 = False
    rate = fps if fps is not None else pred.fps

    def write(tmp: Path) -> dict[str, Any]:
        files: dict[str, str] = {}
        for k, text in enumerate(pred.expressions):
            key = f"{k:02d}"
            (tmp / key).mkdir()
            overlays = []
            for t, (image, name) in enumerate(zip(images, names)):
                mask = _as_masks(masks[k, t], image.size)[0]
                Image.fromarray(mask.astype(np.uint8) * 255, "L").save(tmp / key / f"{name}.png")
                overlays.append(overlay(image, mask, [text], first_colour=k))
            files[f"{key}/"] = f"masks of expression {key}, one PNG per frame"
            if pred.probs is not None:
                (tmp / f"{key}_prob").mkdir()
                for t, name in enumerate(names):
                    prob = np.clip(np.rint(np.asarray(pred.probs[k, t], dtype=np.float64) * 255), 0, 255).astype(np.uint8)
                    Image.fromarray(prob, "L").save(tmp / f"{key}_prob" / f"{name}.png")
                files[f"{key}_prob/"] = f"object probability of expression {key} (0-255), one PNG per frame"
            write_gif(tmp / f"{key}_overlay.gif", overlays, rate)
            files[f"{key}_overlay.gif"] = f"expression {key} on the video"
            if mp4:
                write_mp4(tmp / f"{key}_overlay.mp4", overlays, rate)
                files[f"{key}_overlay.mp4"] = f"expression {key} on the video"
        expressions = {f"{k:02d}": text for k, text in enumerate(pred.expressions)}
        return {**(info or {}), "frames": len(names), "expressions": expressions, "files": files}

    return write_output_folder(folder, source, write)


__all__ = [
    "MANIFEST_NAME",
    "PALETTE",
    "check_output_folder",
    "check_writable_folder",
    "overlay",
    "read_manifest",
    "save_prediction",
    "save_video_prediction",
    "write_output_folder",
]
