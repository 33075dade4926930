"""Cheap checks of what a user typed, with no torch import: the CLI runs them before loading
anything heavy, so a typo costs a fraction of a second, not the seconds torch takes to import."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from ..errors import CheckpointError, InputError

CONFIG_NAME = "config.json"  # a lavt model directory's architecture file
OFFICIAL_SUFFIXES = (".pth", ".pt", ".bin")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


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


def model_source(spec: str | os.PathLike[str]) -> tuple[str, str]:
    """What a ``--model`` value names: ``("directory" | "official" | "hub", path or id)``.

    * a directory with ``config.json`` (written by ``LAVT.save_pretrained``);
    * a file ending ``.pth`` / ``.pt`` / ``.bin``: an official LAVT checkpoint;
    * ``namespace/name`` that is not a local path: a hub repo holding a saved model directory;
    anything else raises :class:`CheckpointError` naming the problem."""
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / "lavt_onnx.json").is_file() and not (path / CONFIG_NAME).is_file():
            raise CheckpointError(
                f"{path} is an ONNX export (lavt export): run it with `lavt predict --backend onnxruntime` "
                f"or lavt.onnx_runtime.OnnxPredictor, or give the model directory it was exported from"
            )
        if not (path / CONFIG_NAME).is_file():
            raise CheckpointError(
                f"{path} is not a lavt model directory (no {CONFIG_NAME}); give a directory written by "
                f"save_pretrained / `lavt convert`, or an official .pth checkpoint"
            )
        return "directory", str(path)
    if path.is_file():
        if path.suffix.lower() not in OFFICIAL_SUFFIXES:
            raise CheckpointError(
                f"{path} is a file but not a checkpoint (expected a lavt model directory or an official "
                f"checkpoint ending {', '.join(OFFICIAL_SUFFIXES)})"
            )
        return "official", str(path)
    if path.suffix.lower() in OFFICIAL_SUFFIXES:
        raise CheckpointError(f"checkpoint file {text} does not exist")
    if _HUB_ID.match(text) and not text.startswith((".", "~")):
        return "hub", text
    raise CheckpointError(
        f"model {text} does not exist (expected a lavt model directory, an official .pth checkpoint "
        f"or a hub repo id 'namespace/name')"
    )


def existing_input(path: str | os.PathLike[str], what: str = "image file") -> Path:
    """``path`` if it exists, else InputError ``<what> not found: <path>``."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"{what} not found: {os.fspath(path)}")
    return p


__all__ = ["OFFICIAL_SUFFIXES", "existing_input", "model_source", "validate_expressions"]
