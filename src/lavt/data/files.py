"""Reading a dataset's own files: every failure is one :class:`DatasetError` line naming the file.

Every loader (``refer``, ``ytvos_index``, ``davis``, ``a2d``, ``jhmdb``...) reads its JSON lists,
text tables and frames through these helpers, so a missing or corrupt file is reported the same
way whichever dataset it belongs to.
"""

from __future__ import annotations

import csv
import io
import json
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import LAVTError

# What PIL raises for a file that is not a decodable image.
IMAGE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError)
# A name that is safe as one path component (video ids, frame names read from a dataset's lists).
SAFE_NAME = re.compile(r"^[^/\\\x00]+$")


class DatasetError(LAVTError):
    """A dataset on disk that is missing, unreadable or inconsistent (the message names the file)."""


def one_line(text: object) -> str:
    """``text`` with every whitespace run folded to one space, so an error stays one line."""
    return " ".join(str(text).split()) or "unknown error"


def require_file(path: Path, what: str, folder: str = "folder") -> Path:
    """``path`` when it is a file; otherwise "<what> <path> not found", plus a hint when the
    file's ``folder`` is missing too (the usual mistake: a wrong root or an unextracted archive)."""
    if not path.is_file():
        hint = "" if path.parent.is_dir() else f" (the {folder} {path.parent} does not exist)"
        raise DatasetError(f"{what} {path} not found{hint}")
    return path


def load_json(path: Path, what: str) -> Any:
    """The JSON file ``path`` (``what`` names it in the "not found" message)."""
    if not path.is_file():
        raise DatasetError(f"{what} {path} not found")
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror or e}") from None
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise DatasetError(f"{path} is not valid JSON (corrupt or truncated?): {one_line(e)}") from None


def read_text(path: Path, what: str) -> str:
    """A text table as published: UTF-8 (a BOM is dropped), else latin-1 (older releases)."""
    if not path.is_file():
        raise DatasetError(f"{what} {path} not found")
    try:
        return path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        return path.read_text(encoding="latin-1")


def csv_body(path: Path, what: str, columns: Sequence[str]) -> list[tuple[int, list[str]]]:
    """``(line, row)`` for each non-blank row below the header of a published CSV table (line 1 is
    the header, which must have at least as many columns as ``columns`` names)."""
    rows = list(csv.reader(io.StringIO(read_text(path, what))))
    if not rows or len(rows[0]) < len(columns):
        raise DatasetError(f"{path} must be a CSV with a header row: {', '.join(columns)}")
    return [(k, row) for k, row in enumerate(rows[1:], start=2) if row and "".join(row).strip()]


def load_rgb_frame(path: Path, folder: str = "folder") -> Image.Image:
    """A frame file as an RGB PIL image at its original size (``folder`` names its folder in the
    hint of the "not found" message)."""
    require_file(path, "frame file", folder)
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB") if im.mode != "RGB" else im.copy()
    except IMAGE_ERRORS as e:
        raise DatasetError(f"cannot read frame {path}: {one_line(e)}") from None


def int_value(value: Any) -> int | None:
    """An integer from an int, an integral float or a digit string (sample lists store frame
    numbers and ids either way); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return int(value) if float(value).is_integer() else None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles plain data only: any class or function reference (the way a pickle runs code)
    is refused. REFER's refs files are lists of dicts of strings and numbers."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"it references {module}.{name}, and lavt reads only plain lists and dicts")


def load_plain_pickle(path: Path) -> Any:
    """Read a pickle of plain data (a refs file) safely; Python 2 byte strings are retried as latin-1, corruption is one line."""

    def load(**kwargs: Any) -> Any:
        with open(path, "rb") as f:
            return _PlainUnpickler(f, **kwargs).load()

    try:
        try:
            return load()
        except UnicodeDecodeError:
            return load(encoding="latin1")
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror or e}") from None
    except Exception as e:  # UnpicklingError, EOFError, ValueError, ... : all mean a bad file
        raise DatasetError(
            f"{path} is not a readable refs pickle (corrupt, truncated or not plain data?): {type(e).__name__}: {e}"
        ) from None
