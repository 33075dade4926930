"""Run an exported LAVT (``lavt export MODEL DIR --format onnx``) without PyTorch.

Needs only onnxruntime, tokenizers, numpy and Pillow (``pip install 'lavt[onnxruntime]'`` on a
machine without torch). :class:`OnnxPredictor` has the interface and output of
:class:`lavt.predict.Predictor` for images:

>>> from lavt.onnx_runtime import OnnxPredictor
>>> predictor = OnnxPredictor("lavt-onnx/")                        # doctest: +SKIP
>>> pred = predictor.predict("photo.jpg", ["the dog on the left"])  # doctest: +SKIP
>>> pred.masks.shape  # (K, H0, W0) bool, at the original size     # doctest: +SKIP

The pipeline is the official one, as in ``lavt.predict``: the image is resized to S x S (PIL
bilinear), scaled to [0, 1] and normalised; the expressions are tokenised by the rules of
``lavt.io.tokens``; the text graph gives word features, the vision graph logits at S x S, which
are upsampled to the original size (bilinear, align_corners=True) and argmaxed.
The vision graph takes one image per expression, so an image with K expressions runs as a
batch of K copies (PyTorch's predictor computes the language-free stage-1 blocks once instead).

``precision="int8"`` runs ``lavt.int8.onnx`` (exported with ``int8=True``): int8 weights and
dynamically quantised activations in the MatMuls.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .config import Preprocessing
from .errors import CheckpointError, ConfigError
from .io.images import load_image
from .io.inputs import validate_expressions
from .io.tokens import expression_ids
from .results import Prediction, warn_empty

MANIFEST_NAME = "lavt_onnx.json"  # written by lavt.export.onnx, which takes these two names from here
FORMAT_VERSION = 1
PRECISIONS = ("fp32", "int8")


def _need(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise ConfigError(f"the ONNX runtime path needs the package {module!r}: pip install 'lavt[onnxruntime]'") from None


class OnnxTokenizer:
    """The ``tokenizers`` version of ``lavt.models.text.Tokenizer``: the same ids, masks and warnings."""

    def __init__(self, directory: str | os.PathLike[str], max_tokens: int, truncation: str, pad_token_id: int = 0) -> None:
        tokenizers = _need("tokenizers")
        path = Path(directory) / "tokenizer.json"
        if not path.is_file():
            raise CheckpointError(f"{path} is missing: the export directory is incomplete")
        self._tok = tokenizers.Tokenizer.from_file(str(path))
        self._tok.no_padding()
        self._tok.no_truncation()
        self._truncating = tokenizers.Tokenizer.from_file(str(path))
        self._truncating.no_padding()
        self._truncating.enable_truncation(max_length=max_tokens)
        self.max_tokens, self.truncation, self.pad_token_id = max_tokens, truncation, pad_token_id
        self._num_special = self._tok.post_processor.num_special_tokens_to_add(False) if self._tok.post_processor else 0
        self._unk_id = self._unk_token_id()

    def _unk_token_id(self) -> int | None:
        model = json.loads(self._tok.to_str()).get("model", {})
        unk = model.get("unk_token")
        return self._tok.token_to_id(unk) if unk else None

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(input_ids, attention_mask)``, int64 (K, max_tokens), right-padded with 0."""
        ids = np.full((len(texts), self.max_tokens), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(texts), self.max_tokens), dtype=np.int64)
        for i, text in enumerate(texts):
            row = expression_ids(
                text,
                "the expression" if len(texts) == 1 else f"expression {i + 1}",
                encode=lambda t: self._tok.encode(t).ids,
                encode_truncated=lambda t: self._truncating.encode(t).ids,
                max_tokens=self.max_tokens,
                truncation=self.truncation,
                unk_id=self._unk_id,
                num_special=self._num_special,
                stacklevel=4,
            )
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return ids, mask


def _interpolation_matrix(out_size: int, in_size: int) -> np.ndarray:
    """(out, in) float32 weights of 1-D linear interpolation with align_corners=True (PyTorch's rule)."""
    m = np.zeros((out_size, in_size), dtype=np.float32)
    if in_size == 1 or out_size == 1:
        m[:, 0] = 1.0
        return m
    src = np.arange(out_size, dtype=np.float64) * ((in_size - 1) / (out_size - 1))
    lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = (src - lo).astype(np.float32)
    rows = np.arange(out_size)
    m[rows, lo] += 1.0 - frac
    m[rows, hi] += frac
    return m


def upsample_logits(logits: np.ndarray, height: int, width: int) -> Iterator[np.ndarray]:
    """(K, 2, h, w) -> (K, 2, height, width): bilinear, align_corners=True, as F.interpolate does.
    A generator of (2, height, width) rows, one at a time to bound memory on large images; the
    interpolation weights are built once."""
    ry = _interpolation_matrix(height, logits.shape[-2])
    rx_t = _interpolation_matrix(width, logits.shape[-1]).T
    for row in logits.astype(np.float32, copy=False):
        yield np.stack([ry @ channel @ rx_t for channel in row])


class OnnxPredictor:
    """Image + expressions -> masks at the original size, with ONNX Runtime (no PyTorch).

    ``directory``: an export directory (``lavt_onnx.json`` + graphs + tokenizer). ``precision``:
    "fp32" (``lavt.onnx``, the exact computation) or "int8" (``lavt.int8.onnx``). ``threads``:
    ONNX Runtime intra-op threads (default: its own choice, all cores). ``providers``: ONNX Runtime
    execution providers (default CPU).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        precision: str = "fp32",
        threads: int | None = None,
        providers: Sequence[str] | None = None,
    ) -> None:
        ort = _need("onnxruntime")
        if precision not in PRECISIONS:
            raise ConfigError(f"precision {precision!r} is not one of {PRECISIONS} for the ONNX runtime")
        self.directory = Path(directory)
        manifest_path = self.directory / MANIFEST_NAME
        if not manifest_path.is_file():
            raise CheckpointError(f"{self.directory} is not a lavt ONNX export (no {MANIFEST_NAME}); "
                                  "make one with `lavt export MODEL DIR --format onnx`")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"cannot read {manifest_path}: {e}") from None
        if manifest.get("format") != "lavt-onnx" or manifest.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"{manifest_path} is not a lavt-onnx format {FORMAT_VERSION} manifest "
                                  f"(export it again with this version of lavt)")
        if manifest.get("video"):
            raise ConfigError("this export is a video model: OnnxPredictor runs image models (run the video graph "
                              "with onnxruntime directly, or lavt.Predictor.predict_video)")
        if not manifest.get("text_graph"):
            raise ConfigError("this export has no text encoder graph (the model takes word features); "
                              "export a model saved with a text encoder")
        self.manifest = manifest
        self.precision = precision
        graph = manifest["vision_graph_int8" if precision == "int8" else "vision_graph"]
        if not graph:
            raise ConfigError("this export has no int8 graph: export again with --int8")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads is not None:
            options.intra_op_num_threads = threads
        providers = list(providers or ["CPUExecutionProvider"])
        self.vision = self._session(ort, graph, options, providers)
        self.text = self._session(ort, manifest["text_graph"], options, providers)
        p = manifest["preprocessing"]
        self.preprocessing = Preprocessing(p["image_size"], tuple(p["image_mean"]), tuple(p["image_std"]))
        self.image_size = self.preprocessing.image_size
        t = manifest["tokenizer"]
        self.tokenizer = OnnxTokenizer(self.directory / t["directory"], t["max_tokens"], t["truncation"],
                                       t.get("pad_token_id", 0))

    def _session(self, ort: Any, name: str, options: Any, providers: list[str]):
        path = self.directory / name
        if not path.is_file():
            raise CheckpointError(f"{path} is missing: the export directory is incomplete")
        try:
            return ort.InferenceSession(str(path), options, providers=providers)
        except Exception as e:  # onnxruntime's own error types: corrupt or foreign files
            raise CheckpointError(f"cannot load {path}: {' '.join(str(e).split())[:200]}") from None

    def preprocess(self, image: Any) -> np.ndarray:
        """The official input (1, 3, S, S) float32: bilinear resize to S x S, /255, ImageNet norm."""
        img = load_image(image)
        if img.mode != "RGB":
            img = img.convert("RGB")
        s = self.image_size
        pixels = np.asarray(img.resize((s, s), Image.BILINEAR), dtype=np.float32) / np.float32(255)
        mean = np.asarray(self.preprocessing.image_mean, dtype=np.float32)
        std = np.asarray(self.preprocessing.image_std, dtype=np.float32)
        return ((pixels - mean) / std).transpose(2, 0, 1)[None].copy()

    def logits(self, pixel_values: np.ndarray, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Logits (K, 2, S, S) for K expressions on one image (1, 3, S, S) or K images."""
        words = self.text.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]
        k = input_ids.shape[0]
        if pixel_values.shape[0] != k:  # one image per expression in the graph
            pixel_values = np.ascontiguousarray(np.broadcast_to(pixel_values, (k, *pixel_values.shape[1:])))
        return self.vision.run(None, {"pixel_values": pixel_values, "text_features": words, "text_mask": attention_mask})[0]

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
        logits = self.logits(self.preprocess(img), input_ids, attention_mask)
        k = len(texts)
        masks = np.zeros((k, height, width), dtype=bool)
        out_logits = np.zeros((k, 2, height, width), dtype=np.float32) if return_logits else None
        out_probs = np.zeros((k, height, width), dtype=np.float32) if return_probs else None
        for i, up in enumerate(upsample_logits(logits, height, width)):
            masks[i] = up[1] > up[0]  # argmax; a tie goes to background, as torch.argmax
            if out_logits is not None:
                out_logits[i] = up
            if out_probs is not None:
                out_probs[i] = 1.0 / (1.0 + np.exp(up[0] - up[1]))  # softmax over the two channels
        warn_empty(texts, masks.reshape(k, -1).any(1))
        meta = {"image_size": self.image_size, "precision": self.precision, "backend": "onnxruntime",
                "original_size": (height, width)}
        return Prediction(masks=masks, expressions=texts, logits=out_logits, probs=out_probs, meta=meta)

    __call__ = predict


__all__ = ["OnnxPredictor", "OnnxTokenizer", "upsample_logits"]
