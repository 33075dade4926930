"""Reading images: one reader for every image lavt takes (files, PIL images, uint8 arrays),
with EXIF orientation, RGB conversion and one-line errors. Torch-free, so the CLI can check an
input before importing torch."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..errors import InputError, LargeImageWarning


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
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()  # force decoding now: truncated files fail here, not later
                img = ImageOps.exif_transpose(img)
                rgb = _to_rgb(img)
        for w in caught:
            if issubclass(w.category, Image.DecompressionBombWarning):
                warnings.warn(
                    f"image {path} is {rgb.width}x{rgb.height} = {rgb.width * rgb.height:,} pixels, more than "
                    f"Pillow's decompression-bomb limit ({Image.MAX_IMAGE_PIXELS:,}); decoding it anyway",
                    LargeImageWarning,
                    stacklevel=2,
                )
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return rgb
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


__all__ = ["load_image"]
