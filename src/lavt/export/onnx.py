"""Export a LAVT model to ONNX: a deployment directory that runs without PyTorch.

``export_onnx(model, out_dir)`` writes

* ``lavt.onnx`` -- the language-aware Swin + decoder: ``pixel_values`` (B, 3, S, S) float32 (video
  models: (B, T, 3, S, S)), ``text_features`` (B, L, C_l) float32 and ``text_mask`` (B, L) int64
  in; ``logits`` (B, 2, S, S) (video: (B, T, 2, S, S)) out, channel 1 = object. B (the batch:
  one image per expression) and L (words) are dynamic; the side S -- and a video model's T -- are
  fixed at export time (the shifted-window mask and the window padding are built from them), so
  another size needs another export (``image_size=`` / ``frames=``);
* ``text_encoder.onnx`` -- the BERT-family encoder: ``input_ids`` / ``attention_mask`` (B, L)
  int64 in, ``text_features`` (B, L, C_l) out (its last hidden state, token types all zero);
* ``lavt_onnx.json`` -- what a runtime needs besides the graphs: preprocessing (side, mean/std,
  resize rule), tokenisation (max_tokens, truncation rule, pad id), the graphs' inputs, and the
  export check (max |ONNX Runtime - PyTorch| on the logits of the export inputs);
* ``tokenizer/`` -- the tokenizer files (``tokenizer.json`` is what the torch-free runtime reads);
* ``lavt.int8.onnx`` (``int8=True``) -- the vision graph with int8 weights for its MatMuls
  (ONNX Runtime dynamic quantisation: activations quantised per call, VNNI where the CPU has it).

The graphs come from ``torch.onnx.export`` (the torch.export-based exporter) of the exact fp32
path (direct decoder convolutions, no Winograd). While exporting, the window attention takes its
batch-independent form (``lavt.models.swin.exporting``); the function is the same.
Every export is checked: ``onnx.checker`` on each graph, then ONNX Runtime against PyTorch on
the export inputs; a difference above ``tolerance`` raises :class:`~lavt.errors.ExportError`.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError, ExportError
from ..models.lavt import LAVT
from ..onnx_runtime import FORMAT_VERSION, MANIFEST_NAME  # the format's one definition (torch-free side)
from ..predict import resolve_preprocessing

VISION_GRAPH = "lavt.onnx"
VISION_GRAPH_INT8 = "lavt.int8.onnx"
TEXT_GRAPH = "text_encoder.onnx"
TOKENIZER_DIR = "tokenizer"
OPSET = 18
# A single .onnx file holds at most 2 GB (protobuf); bigger models keep their weights beside it.
_SINGLE_FILE_LIMIT = 1800 * 2**20


class _VisionGraph(nn.Module):
    """The exported function: pixels + word features + mask -> logits (the exact fp32 path)."""

    def __init__(self, model: LAVT) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: Tensor, text_features: Tensor, text_mask: Tensor) -> Tensor:
        return self.model(pixel_values, text_features=text_features, text_mask=text_mask)


class _TextGraph(nn.Module):
    def __init__(self, model: LAVT) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.model.encode_text(input_ids, attention_mask)


@dataclass
class ExportResult:
    """Where the export went and how closely ONNX Runtime reproduced PyTorch on its inputs."""

    directory: Path
    files: list[str]
    max_abs_diff: dict[str, float]

    def summary(self) -> str:
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in self.max_abs_diff.items())
        return f"wrote {', '.join(self.files)} to {self.directory} (ONNX Runtime vs PyTorch, max |diff|: {diffs})"


def check_installed() -> None:
    """One line naming what is missing when the ``onnx`` extra is not installed (call it before
    loading a model: a missing package should not cost a model load)."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"ONNX export needs {', '.join(missing)}: pip install 'lavt[onnx]'")


def example_inputs(model: LAVT, image_size: int, frames: int, batch: int = 2, words: int = 20) -> tuple[Tensor, ...]:
    """Seeded pixels, word features and a mask with padding (two different lengths)."""
    g = torch.Generator().manual_seed(0)
    shape = (batch, frames, 3, image_size, image_size) if model.config.video else (batch, 3, image_size, image_size)
    pixels = torch.randn(shape, generator=g)
    features = torch.randn(batch, words, model.config.lang_dim, generator=g)
    mask = torch.zeros(batch, words, dtype=torch.long)
    for i in range(batch):
        mask[i, : max(2, words - 7 * i)] = 1
    return pixels, features, mask


def _torch_export(module: nn.Module, args: tuple[Tensor, ...], path: Path, names: dict[str, Any], outputs: list[str],
                  large: bool) -> None:
    """torch.onnx.export with its progress chatter captured (re-raised as one line on failure)."""
    chatter = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(chatter):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                args,
                str(path),
                input_names=list(names),
                output_names=outputs,
                dynamic_shapes=tuple(names.values()),
                opset_version=OPSET,
                dynamo=True,
                external_data=large,
            )
    except Exception as e:  # the exporter raises many types; the user needs one line and the cause
        first = " ".join(str(e).split())[:300]
        raise ExportError(f"torch.onnx.export failed for {path.name}: {type(e).__name__}: {first}") from e


def _ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _max_diff(path: Path, feeds: dict[str, Tensor], expected: Tensor) -> float:
    got = _ort_session(path).run(None, {k: v.numpy() for k, v in feeds.items()})[0]
    return float(np.abs(got - expected.numpy()).max())


def check_agreement(diffs: dict[str, float], tolerance: float) -> None:
    """Raise :class:`ExportError` unless every max |ONNX Runtime - PyTorch| is finite and <= ``tolerance``."""
    bad = {k: v for k, v in diffs.items() if not np.isfinite(v) or v > tolerance}
    if bad:
        shown = ", ".join(f"{k} {v:.3g}" for k, v in bad.items())
        raise ExportError(f"ONNX Runtime disagrees with PyTorch on the export inputs: max |diff| {shown} "
                          f"(tolerance {tolerance:g}); the exported graph is wrong, please report it")


def export_onnx(
    model: LAVT,
    out_dir: str | os.PathLike[str],
    *,
    image_size: int | None = None,
    frames: int = 8,
    int8: bool = False,
    tolerance: float = 1e-4,
    overwrite: bool = False,
) -> ExportResult:
    """Write the ONNX deployment directory of ``model`` (see the module docstring).

    ``image_size``: the side the graph is built for (default: the model's own preprocessing size).
    ``frames``: the clip length of a video model's graph. ``int8``: also write ``lavt.int8.onnx``.
    ``tolerance``: the largest |ONNX Runtime - PyTorch| logit difference accepted on the export
    inputs. An existing non-empty ``out_dir`` is refused unless ``overwrite`` (then it is replaced
    once the new export is complete and checked). A failed export leaves nothing behind.
    """
    check_installed()
    import onnx

    if model.config.unified:
        raise ConfigError("ONNX export of unified LAVT models is not supported (export its image or video stream "
                          "as a plain model instead)")
    preprocessing = resolve_preprocessing(model, image_size)
    size = preprocessing.image_size
    final = Path(out_dir)
    if final.exists() and not final.is_dir():
        raise ConfigError(f"{final} is a file; give a directory for the export")
    if final.is_dir() and any(final.iterdir()) and not overwrite:
        raise ConfigError(f"{final} exists and is not empty; choose a new directory or pass --overwrite")
    # built in a hidden sibling folder and swapped in when complete and checked: a failed export
    # leaves nothing behind, and --overwrite keeps the previous export until the new one is good
    final.parent.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))

    was_training = model.training
    winograd_was = any(getattr(m, "winograd", False) for m in model.modules())
    model.eval().float()
    model.use_winograd(False)  # NNPACK is a PyTorch CPU kernel: the graph holds the direct convolution
    large = sum(p.numel() * 4 for p in model.parameters()) > _SINGLE_FILE_LIMIT
    files: list[str] = []
    diffs: dict[str, float] = {}
    try:
        pixels, features, mask = example_inputs(model, size, frames)
        batch, words = torch.export.Dim("batch", min=1), torch.export.Dim("words", min=2)
        vision = _VisionGraph(model).eval()
        _torch_export(
            vision,
            (pixels, features, mask),
            out / VISION_GRAPH,
            {"pixel_values": {0: batch}, "text_features": {0: batch, 1: words}, "text_mask": {0: batch, 1: words}},
            ["logits"],
            large,
        )
        onnx.checker.check_model(str(out / VISION_GRAPH))
        files.append(VISION_GRAPH)
        with torch.inference_mode():
            expected = vision(pixels, features, mask)
        feeds = {"pixel_values": pixels, "text_features": features, "text_mask": mask}
        diffs["logits"] = _max_diff(out / VISION_GRAPH, feeds, expected)

        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            logging.disable(logging.WARNING)  # the quantiser logs advice to the root logger; users need none
            try:
                quantize_dynamic(str(out / VISION_GRAPH), str(out / VISION_GRAPH_INT8), op_types_to_quantize=["MatMul"],
                                 weight_type=QuantType.QInt8)
            finally:
                logging.disable(logging.NOTSET)
            onnx.checker.check_model(str(out / VISION_GRAPH_INT8))
            files.append(VISION_GRAPH_INT8)

        tokenizer_info: dict[str, Any] | None = None
        if model.text_encoder is not None:
            from ..models.text import Tokenizer

            tokenizer = Tokenizer.from_config(model.config.text_encoder)
            ids, id_mask = tokenizer(["the dog on the left", "a red car"])
            text = _TextGraph(model).eval()
            _torch_export(text, (ids, id_mask), out / TEXT_GRAPH,
                          {"input_ids": {0: batch, 1: words}, "attention_mask": {0: batch, 1: words}},
                          ["text_features"], large=False)
            onnx.checker.check_model(str(out / TEXT_GRAPH))
            files.append(TEXT_GRAPH)
            with torch.inference_mode():
                diffs["text_features"] = _max_diff(out / TEXT_GRAPH, {"input_ids": ids, "attention_mask": id_mask},
                                                   text(ids, id_mask))
            tokenizer.save(out / TOKENIZER_DIR)
            if not (out / TOKENIZER_DIR / "tokenizer.json").is_file():
                raise ExportError("the text encoder's tokenizer has no fast version (tokenizer.json); the torch-free "
                                  "runtime cannot read it")
            files.append(TOKENIZER_DIR + "/")
            tokenizer_info = {
                "directory": TOKENIZER_DIR,
                "max_tokens": tokenizer.max_tokens,
                "truncation": tokenizer.truncation,
                "pad_token_id": tokenizer.pad_token_id,
            }
        check_agreement(diffs, tolerance)
        manifest = {
            "format": "lavt-onnx",
            "format_version": FORMAT_VERSION,
            "lavt_version": _lavt_version(),
            "torch_version": torch.__version__,
            "opset": OPSET,
            "video": bool(model.config.video),
            "frames": frames if model.config.video else None,
            "pwam_structure": model.config.pwam_structure if model.config.video else None,
            "lang_dim": model.config.lang_dim,
            "preprocessing": preprocessing.to_dict(),
            "vision_graph": VISION_GRAPH,
            "vision_graph_int8": VISION_GRAPH_INT8 if int8 else None,
            "text_graph": TEXT_GRAPH if tokenizer_info else None,
            "tokenizer": tokenizer_info,
            "export_check": {"max_abs_diff": diffs, "tolerance": tolerance},
        }
        from ..io.torch_files import atomic_write_text

        atomic_write_text(out / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
        files.append(MANIFEST_NAME)
        if final.exists():
            shutil.rmtree(final)
        os.replace(out, final)
    finally:
        model.use_winograd(winograd_was)
        model.train(was_training)
        shutil.rmtree(out, ignore_errors=True)  # gone already when the export succeeded
    return ExportResult(final, files, diffs)


def _lavt_version() -> str:
    from .. import __version__

    return __version__


__all__ = ["MANIFEST_NAME", "ExportResult", "check_agreement", "check_installed", "example_inputs", "export_onnx"]
