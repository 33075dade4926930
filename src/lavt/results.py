"""What a prediction returns (:class:`Prediction`, :class:`VideoPrediction`), shared by the
PyTorch predictor (``lavt.predict``) and the torch-free ONNX one (``lavt.onnx_runtime``): no torch
import here."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import EmptyMaskWarning


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


def warn_empty(texts: Sequence[str], found: np.ndarray, frames: int | None = None) -> None:
    for text, any_pixel in zip(texts, found):
        if not any_pixel:
            where = f" in any of the {frames} frames" if frames else ""
            warnings.warn(f'nothing found for "{text}"{where} (the mask is empty)', EmptyMaskWarning, stacklevel=3)


__all__ = ["Prediction", "VideoPrediction", "warn_empty"]
