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

import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .config import (
    OFFICIAL_IMAGE_SIZE,
    Preprocessing,
    check_image_size,
)
from .data.transforms import preprocess_image  # the one official input transform
from .errors import (
    ConfigError,
    InputError,
    InputSizeWarning,
)
from .io.images import load_image
from .io.inputs import model_source, validate_expressions
from .io.videos import check_frame_names, load_video
from .models.lavt import LAVT
from .results import Prediction, VideoPrediction, warn_empty
from .runtime.precision import default_inference_precision, warn_if_slow

PRECISIONS = ("fp32", "bf16")



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
      (:func:`lavt.weights.official.load_official_checkpoint`; ``text_encoder`` / ``max_tokens`` are
      passed on and only matter for checkpoints holding BERT weights)
    * ``namespace/name`` that is not a local path -> a hub repo holding a saved model directory
    * anything else raises :class:`CheckpointError` (:func:`lavt.io.inputs.model_source`).
    """
    dev = torch.device("cpu") if device is None else _resolve_device(device)
    kind, where = model_source(spec)
    if kind == "official":
        from .weights.official import load_official_checkpoint

        model = load_official_checkpoint(where, text_encoder=text_encoder, max_tokens=max_tokens)
    else:
        model = LAVT.from_pretrained(where)
    return model.to(dev).eval()


# --------------------------------------------------------------------------------------------
# Predictor
# --------------------------------------------------------------------------------------------
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
    outputs are float32); default (None): bf16 on a CPU with native bf16 instructions (AVX512-BF16
    / AMX: less than half the fp32 time; masks agree with exact fp32 on >= 99.9 % of pixels, README),
    fp32 elsewhere and with ``exact=True`` (:func:`lavt.runtime.precision.default_inference_precision`).
    ``image_size``: the square side images are resized to; default (None)
    the size the model was trained at (``model.preprocessing``, from its model directory's
    ``preprocessor_config.json``; 480 for official checkpoints). Another value runs anyway with an
    :class:`~lavt.errors.InputSizeWarning`.
    ``tokenizer``: defaults to the one described by ``model.config.text_encoder``.
    ``exact``: True runs the official computation: fp32 (unless ``precision`` says otherwise) with
    the direct convolutions of the official decoder. False (default): where fp32 runs on a CPU with
    NNPACK, the decoder's 3x3 convolutions use the Winograd algorithm (``LAVT.use_winograd``; logits
    within ~1e-5 relative, ~8 % less time per image on a Swin-B at batch 1, README).
    The choice is set on the model (``model.use_winograd(...)``); ``self.winograd`` says whether
    Winograd is active: never on a GPU nor under bf16 autocast, where the direct convolution runs.

    An expression for which the model finds nothing (an all-background mask) gets an
    :class:`~lavt.errors.EmptyMaskWarning` naming it.
    """

    def __init__(
        self,
        model: LAVT | str | os.PathLike[str],
        device: str | torch.device | None = None,
        precision: str | None = None,
        image_size: int | None = None,
        tokenizer: Any | None = None,
        exact: bool = False,
    ) -> None:
        if precision is not None and precision not in PRECISIONS:
            raise ConfigError(f"precision {precision!r} is not one of {PRECISIONS}")
        if image_size is not None:
            check_image_size(image_size, "image_size")
        self.device = _resolve_device(device)
        precision = precision or default_inference_precision(self.device, exact)
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
        # a CPU float32 kernel: claiming it for CUDA or bf16 would misreport how masks were made
        self.winograd = self.model.use_winograd(not exact and self.device.type == "cpu" and precision == "fp32")
        self.precision = precision
        self.preprocessing = resolve_preprocessing(model, image_size)
        self.image_size = self.preprocessing.image_size
        if tokenizer is None:
            from .models.text import Tokenizer

            tokenizer = Tokenizer.from_config(model.config.text_encoder)
        self.tokenizer = tokenizer

    # ------------------------------------------------------------------------------------
    def preprocess(self, image: Any) -> torch.Tensor:
        """The official input tensor (1, 3, S, S): bilinear resize to S x S, /255, ImageNet norm."""
        return self._tensor(load_image(image)).unsqueeze(0)

    def _tensor(self, image: Image.Image) -> torch.Tensor:
        p = self.preprocessing
        return preprocess_image(image, p.image_size, p.image_mean, p.image_std)

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
        warn_empty(texts, masks.reshape(k, -1).any(1))
        return Prediction(
            masks=masks,
            expressions=texts,
            logits=out_logits,
            probs=out_probs,
            meta=self._meta(height, width),
        )

    __call__ = predict

    def _meta(self, height: int, width: int, **extra: Any) -> dict[str, Any]:
        """How a prediction was made (input size, precision, decoder algorithm, original size)."""
        return {"image_size": self.image_size, "precision": self.precision, "winograd": self.winograd,
                "original_size": (height, width), **extra}

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

        ``video``: a path :func:`lavt.io.videos.load_video` reads (frame directory, GIF/WebP,
        video file) or a sequence of frames (anything :func:`load_image` takes; then
        ``frame_names`` / ``fps`` may name them). ``max_frames`` keeps the first frames only.

        A video model sees the whole video as one clip when ``window`` is None (the official
        Ref-YouTube-VOS inference; memory grows with the length), else consecutive windows of
        ``window`` frames (the last one shorter) run independently. All expressions share each
        clip as one batch. An image model runs frame by frame (``window`` does not change its
        result). ``progress``: a tqdm bar over windows / frames on a terminal's stderr.
        """
        from .data.ytvos import windows
        from .runtime.progress import progress_bar

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
        bar = progress_bar(
            groups, progress, desc="video" if is_video else "frames", unit="window" if is_video else "frame", leave=False
        )
        self.model.eval()
        with torch.inference_mode():
            for idx in bar:
                x = torch.stack([self._tensor(frames[i]) for i in idx]).to(self.device)
                if is_video:
                    logits = self._forward(x[None], input_ids, attention_mask)  # (K, T, 2, S, S)
                else:
                    logits = self._forward(x, input_ids, attention_mask)[:, None]  # (K, 1, 2, S, S)
                for e in range(k):
                    for t, up in zip(idx, _upsampled(logits[e], (height, width))):
                        masks[e, t] = up.argmax(0).bool().cpu().numpy()
                        if probs is not None:
                            probs[e, t] = up.softmax(0)[1].cpu().numpy()
        warn_empty(texts, masks.reshape(k, -1).any(1), frames=n)
        return VideoPrediction(
            masks=masks,
            expressions=texts,
            frame_names=names,
            fps=fps,
            probs=probs,
            meta=self._meta(height, width, mode="clip" if is_video else "per-frame", window=window if is_video else 1),
        )


def resolve_preprocessing(model: LAVT, image_size: int | None = None) -> Preprocessing:
    """The preprocessing to run ``model`` with: its own (``model.preprocessing``), with the side
    replaced by ``image_size`` when given. Warns when the side differs from the training size,
    and when the model does not record one (then the official 480)."""
    own = getattr(model, "preprocessing", None)
    if own is None:
        own = Preprocessing()
        if image_size is None:
            warnings.warn(
                f"the model does not record the input size it was trained at (built in code, or a model "
                f"directory without preprocessor_config.json); assuming the official {OFFICIAL_IMAGE_SIZE} px: "
                "pass the training size (--image-size / image_size=) if it was another",
                InputSizeWarning,
                stacklevel=3,
            )
        return Preprocessing(image_size or own.image_size, own.image_mean, own.image_std)
    if image_size is not None and image_size != own.image_size:
        smallest = 32 * getattr(model.config, "window_size", 1)
        coarse = f"; below {smallest} px stage 4 is smaller than one attention window" if image_size < smallest else ""
        warnings.warn(
            f"running at {image_size} px but the model was trained at {own.image_size} px (its "
            f"preprocessor_config.json): masks may be worse{coarse}",
            InputSizeWarning,
            stacklevel=3,
        )
    return Preprocessing(image_size or own.image_size, own.image_mean, own.image_std)


def _video_frames(
    video: Any, max_frames: int | None, frame_names: Sequence[str] | None, fps: float | None
) -> tuple[list[Image.Image], list[str], float | None]:
    if isinstance(video, (str, os.PathLike)):
        frames, names, source_fps = load_video(video, max_frames=max_frames)
        fps = source_fps if fps is None else fps
        if frame_names is not None:
            names = check_frame_names(frame_names, len(frames))
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
    names = check_frame_names(frame_names, len(frames)) if frame_names is not None else [f"{i:05d}" for i in range(len(frames))]
    for frame, name in zip(frames, names):
        if frame.size != frames[0].size:
            raise InputError(
                f"frames have different sizes: {names[0]} is {frames[0].width}x{frames[0].height} "
                f"but {name} is {frame.width}x{frame.height} (W x H)"
            )
    return frames, names, fps


__all__ = [
    "Prediction",
    "Predictor",
    "VideoPrediction",
    "load_model",
    "resolve_preprocessing",
]
