"""Files lavt reads and writes, made safe: torch files loaded without running code, and writes
that are atomic and durable.

**Reading.** Every ``.pth`` / ``.pt`` lavt opens (official LAVT checkpoints, Swin / Video Swin
classification weights, its own training checkpoints) goes through :func:`load_torch_file`,
which is ``torch.load(weights_only=True)``: tensors, plain Python containers and numbers only, so
a pickle whose ``__reduce__`` calls ``os.system`` raises instead of running. Official LAVT-RIS /
LAVT-RS checkpoints also pickle the training script's ``argparse.Namespace`` under ``args``; that
class (a plain attribute bag, nothing is called when it is rebuilt) is the one extra type allowed.
Anything else is refused with one line naming the types the file wants to construct.

**Writing.** :func:`save_torch_atomic` and :func:`atomic_write` write to a temporary file in the
same folder, ``fsync`` it, ``os.replace`` it over the target and ``fsync`` the folder, so a crash
or a full disk leaves either the old file or the new one, never half of one, and no ``*.tmp``
survives a successful save.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

# The only non-container class a torch file may construct when lavt loads it (besides what
# torch's weights-only unpickler allows itself: tensors, dtypes, OrderedDict, ...).
SAFE_CHECKPOINT_CLASSES: tuple[type, ...] = (argparse.Namespace,)

TRUSTED_LOAD_HINT = (
    "if you trust the file, keep only its weights with: python -c \"import torch; "
    "c = torch.load('IN', weights_only=False); torch.save({'model': c['model']}, 'OUT')\" "
    "(see README, Security)"
)


def _unsafe_globals(path: Path, error: Exception) -> list[str]:
    """The classes / functions a refused file wants to construct (read without unpickling)."""
    import torch

    names: list[str] = []
    finder = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if finder is not None:
        with contextlib.suppress(Exception):
            safe = {f"{c.__module__}.{c.__qualname__}" for c in SAFE_CHECKPOINT_CLASSES}
            names = [n for n in finder(str(path)) if n not in safe]
    if not names:  # older torch or a legacy (non-zip) file: the unpickler's message names one
        names = re.findall(r"GLOBAL ([\w.]+)", str(error))
    return sorted(set(names))


def load_torch_file(path: str | os.PathLike[str], what: str = "checkpoint") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with ``argparse.Namespace``
    allowed, and one-line :class:`CheckpointError` for a missing, unreadable or unsafe file.

    ``what`` names the file in messages ("checkpoint", "resume checkpoint", "Swin checkpoint").
    """
    import pickle

    import torch

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{what} {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"{what} {path} is a directory, not a file")
    try:
        with torch.serialization.safe_globals(list(SAFE_CHECKPOINT_CLASSES)), warnings.catch_warnings():
            # torch notes pickle protocols it did not write; the load below succeeds or fails on its own
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        names = _unsafe_globals(path, e)
        if not names:  # not a code problem: a truncated / corrupt file or not a torch file at all
            raise CheckpointError(f"cannot read {what} {path}: not a readable torch file ({_first_reason(e)})") from None
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        raise CheckpointError(
            f"refusing to load {what} {path}: it holds pickled objects other than tensors and plain "
            f"containers ({shown}), which could run code when loaded; {TRUSTED_LOAD_HINT}"
        ) from None
    except Exception as e:  # zip / EOF / storage errors: a corrupt or non-torch file
        raise CheckpointError(f"cannot read {what} {path}: {type(e).__name__}: {_one_line(e)}") from None


def _first_reason(error: BaseException) -> str:
    """The informative line of torch's long weights-only message (or the whole one-line text)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("Trying to", "Unsupported", "Unpickling", "invalid load key", "pickle data")):
            return _one_line(line)
    return _one_line(lines[-1] if lines else type(error).__name__)


def _one_line(error: BaseException | str) -> str:
    text = " ".join(str(error).split())
    return text[:300] + ("..." if len(text) > 300 else "")


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make a rename inside ``directory`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _default_file_mode() -> int:
    """0o666 minus the process umask: what open() would give a new file (mkstemp gives 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed over
    ``path`` (then the folder is fsynced); on failure it is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _default_file_mode())  # readable by others as any file the user writes
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_directory(path.parent)


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` and atomically move the result to ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_torch_atomic(state: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` that never leaves a half-written ``path`` (crash, full disk, kill -9)."""
    import torch

    return atomic_write(path, lambda tmp: torch.save(state, tmp))


__all__ = [
    "SAFE_CHECKPOINT_CLASSES",
    "atomic_path",
    "atomic_write",
    "atomic_write_text",
    "fsync_directory",
    "load_torch_file",
    "save_torch_atomic",
]
