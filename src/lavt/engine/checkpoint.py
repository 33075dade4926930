"""Training checkpoints: everything an exact resume needs, written atomically, loadable with
``torch.load(weights_only=True)`` (tensors, numbers, strings and plain containers only).

Frozen text-encoder weights are not stored: they never change during training and are rebuilt
from the run's model config (the pretrained encoder, or ``train.init_from``). A fingerprint of
them is stored instead and checked on resume, so a run never continues on another encoder.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import CheckpointError
from ..io.torch_files import load_torch_file, save_torch_atomic


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA) generator states as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    np.random.set_state(
        (npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def fingerprint(tensors: Iterable[tuple[str, Tensor]]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes: equal exactly when the tensors are equal."""
    digest = hashlib.sha256()
    for name, t in sorted(tensors, key=lambda item: item[0]):
        t = t.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_atomic(state: dict[str, Any], path: str | Path) -> Path:
    """Write a training checkpoint atomically (temporary file, fsync, rename, fsync of the folder)."""
    return save_torch_atomic(state, path)


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read ``last.pt`` (or ``path/last.pt`` for a run directory) safely, with one-line errors."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"resume checkpoint {path} does not exist")
    state = load_torch_file(path, "resume checkpoint")
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise CheckpointError(f"{path} is not a lavt training checkpoint (no model/step entries)")
    return state
