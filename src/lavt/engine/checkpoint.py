"""Training checkpoints and the run folder: everything an exact resume needs, written atomically,
loadable with ``torch.load(weights_only=True)`` (tensors, numbers, strings and plain containers
only); a run folder is never mixed with another run.

Frozen text-encoder weights are not stored: they never change during training and are rebuilt
from the run's model config (the pretrained encoder, or ``train.init_from``). A fingerprint of
them is stored instead and checked on resume, so a run never continues on another encoder.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import CheckpointError, ConfigError
from ..io.torch_files import load_torch_file, save_torch_atomic
from ..runtime.distributed import DistEnv, barrier


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
        # this process's own device only: under torchrun each rank drives one GPU, and every rank
        # saves its own states (the trainer gathers them), so restoring all devices from one
        # process would overwrite the other ranks' streams
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    np.random.set_state(
        (npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


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


# What a run writes into train.output_dir: their presence means "this folder holds a run", and
# --overwrite removes exactly these (never other files a user keeps there).
RUN_FILES = ("last.pt", "best.pt", "config.yaml", "history.json", "final_model", "best_model", "tensorboard")


# ----------------------------------------------------------------------------------------------
# run folder, files, checkpoint contents
# ----------------------------------------------------------------------------------------------
def existing_run_files(out: Path) -> list[Path]:
    """The files of a run in ``out``; empty when ``out`` holds no run (a log folder alone is
    not a run: it is what an interrupted start may leave)."""
    found = [out / name for name in RUN_FILES if (out / name).exists()]
    return found if any(p.name != "tensorboard" for p in found) else []


def prepare_output_dir(out: Path, resume: str | Path | None, overwrite: bool, env: DistEnv) -> None:
    """Refuse to mix two runs in one folder: a folder holding a run needs ``--resume`` (continue
    it) or ``--overwrite`` (delete its files first: no stale best model beside a new final one).
    Every rank checks before rank 0 changes anything."""
    import shutil

    if out.exists() and not out.is_dir():
        raise ConfigError(f"train.output_dir {out} is a file, not a folder")
    found = existing_run_files(out)
    if found and resume is None and not overwrite:
        names = ", ".join(p.name for p in found[:3])
        raise ConfigError(
            f"train.output_dir {out} already holds a run ({names}); continue it with --resume {out}, "
            f"start again with --overwrite (deletes that run's files), or choose another train.output_dir"
        )
    if resume is not None and overwrite:
        raise ConfigError("--resume continues the run in train.output_dir and --overwrite deletes it: give one of them")
    if resume is not None:
        ckpt = Path(resume)
        if not (ckpt / "last.pt" if ckpt.is_dir() else ckpt).is_file():
            raise CheckpointError(f"resume checkpoint {ckpt / 'last.pt' if ckpt.is_dir() else ckpt} does not exist")
    if resume is not None and found:
        ckpt = Path(resume)
        ckpt_dir = ckpt if ckpt.is_dir() else ckpt.parent
        if ckpt_dir.resolve() != out.resolve():
            raise ConfigError(
                f"train.output_dir {out} holds another run than the one resumed from {resume}; resume into "
                f"train.output_dir={ckpt_dir} or an empty folder"
            )
    barrier(env)
    if env.is_main:
        if overwrite:
            for path in found:
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / f".lavt-write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise ConfigError(f"cannot write to train.output_dir {out}: {e.strerror or e}") from None
    barrier(env)


def frozen_text_encoder_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the text encoder that training never changes (frozen parameters and
    buffers): rebuilt from the model config on resume, so checkpoints need not carry them."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    return {k for k in model.state_dict() if k.startswith("text_encoder.") and k not in trainable}


def plain_values(obj: Any) -> Any:
    """Metrics as plain Python numbers (NumPy scalars would not load with weights_only=True)."""
    if isinstance(obj, dict):
        return {k: plain_values(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_values(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
