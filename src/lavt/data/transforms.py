"""The official LAVT image/mask preprocessing (no augmentation).

The image is resized to exactly ``size x size`` (aspect ratio not kept) with torchvision's
``resize`` on a PIL image, i.e. PIL bilinear resampling, which is antialiased; it is then scaled
to [0, 1] and normalised with the ImageNet mean/std. Ground-truth masks are resized with PIL
NEAREST so they stay binary.
"""

from __future__ import annotations

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from ..config import IMAGENET_MEAN, IMAGENET_STD


def _side(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    return size


def resize_image(image: Image.Image, size: int) -> Image.Image:
    """Resize a PIL image to exactly (size, size): bilinear with antialiasing (official LAVT)."""
    s = _side(size)
    return TF.resize(image, [s, s], interpolation=InterpolationMode.BILINEAR, antialias=True)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize a 2-D mask to (size, size) with PIL NEAREST; returns uint8 with the input's values."""
    s = _side(size)
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {m.shape}")
    pil = Image.fromarray(m.astype(np.uint8, copy=False))
    return np.asarray(pil.resize((s, s), resample=Image.NEAREST))


def to_normalized_tensor(
    image: Image.Image, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
) -> torch.Tensor:
    """PIL RGB image -> float32 (3, H, W) in [0, 1], normalised with ``mean`` / ``std`` (ImageNet)."""
    return TF.normalize(TF.to_tensor(image), mean, std)


def preprocess_image(
    image: Image.Image, size: int, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
) -> torch.Tensor:
    """The official input tensor (3, size, size) for one RGB PIL image."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    return to_normalized_tensor(resize_image(image, size), mean, std)
