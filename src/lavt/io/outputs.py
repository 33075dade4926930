"""Output folders of ``lavt predict``: one folder per input, written whole, never mixed.

``lavt predict --image photo.jpg --out out/`` writes ``out/photo.jpg/`` (the input's file name,
extension included, so ``photo.jpg`` and ``photo.png`` never share a folder). The folder is
built under a temporary name and swapped in when complete, so a re-run replaces the previous
result of the same input entirely (no stale mask of an expression the new run does not have)
and an interrupted run leaves the old result intact. ``expressions.json`` in each folder records the
source and what each file is; a folder without it, or made for another source, is never
replaced: the run stops before inference with a one-line error.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InputError

MANIFEST_NAME = "expressions.json"  # which mask is which expression, and the source


def check_writable_folder(folder: str | os.PathLike[str], what: str = "--out") -> Path:
    """Prove that ``folder`` (or, while it does not exist, the nearest existing folder above it,
    where it would be created) takes files; else InputError (one line). Creates nothing."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{what} {folder} is an existing file, not a folder")
    probe_in = folder
    while not probe_in.exists():
        if probe_in.parent == probe_in:
            break
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise InputError(f"cannot create {what} {folder}: {probe_in} is a file")
    try:
        fd, probe = tempfile.mkstemp(prefix=".lavt-write-test-", dir=probe_in)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        where = "" if probe_in == folder else f" ({probe_in} does not take new files)"
        raise InputError(f"cannot write to {what} {folder}: {e.strerror or e}{where}") from None
    return folder


def read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_output_folder(folder: str | os.PathLike[str], source: str | None) -> Path:
    """Raise InputError unless ``folder`` may receive the prediction for ``source``: it does not
    exist yet, is empty, or holds lavt's earlier prediction for the same source. Its parent must
    be writable. Cheap: run it before loading a model."""
    folder = Path(folder)
    check_writable_folder(folder.parent, "--out")
    if not folder.exists():
        return folder
    if not folder.is_dir():
        raise InputError(f"output {folder} is an existing file; remove it or choose another --out")
    if not any(folder.iterdir()):
        return folder
    manifest = read_manifest(folder)
    if manifest is None:
        raise InputError(f"output folder {folder} already exists and was not written by lavt predict; choose another --out")
    if manifest.get("source") != source:
        raise InputError(
            f"output folder {folder} holds the prediction for another input ({manifest.get('source')}); "
            f"choose another --out"
        )
    return folder


def write_output_folder(
    folder: str | os.PathLike[str],
    source: str | None,
    write: Callable[[Path], dict[str, Any]],
) -> list[Path]:
    """Build the folder with ``write(tmp_folder) -> manifest fields`` and swap it in whole.

    Returns the paths of the files written (final locations), manifest last."""
    folder = check_output_folder(folder, source)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    old: Path | None = None
    try:
        fields = write(tmp)
        manifest = {"source": source, **fields}
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written = sorted((p for p in tmp.rglob("*") if p.is_file() and p.name != MANIFEST_NAME), key=_natural)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            os.replace(folder, old)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not folder.exists():
            with contextlib.suppress(OSError):
                os.replace(old, folder)  # put the previous result back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return [folder / p.relative_to(tmp) for p in written] + [folder / MANIFEST_NAME]


def _natural(path: Path) -> tuple[str, ...]:
    return path.parts


__all__ = ["MANIFEST_NAME", "check_output_folder", "check_writable_folder", "read_manifest", "write_output_folder"]
