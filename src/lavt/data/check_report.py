"""What ``lavt data check`` reports (:class:`Problem`, :class:`CheckReport`) and the
:class:`CheckContext` every dataset's check records its findings through.

A check never raises for a problem in the data: each one becomes a :class:`Problem` (paths shown
relative to the dataset root), so one run lists everything that is wrong.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .files import IMAGE_ERRORS, DatasetError

__all__ = ["CheckContext", "CheckReport", "Problem"]

_MAX_LISTED = 5  # paths named in one problem line (the JSON report keeps up to _MAX_PATHS)
_MAX_PATHS = 1000


@dataclass
class Problem:
    """One thing wrong with the data: ``kind`` is ``missing``, ``unreadable``, ``size`` (a count
    differs from the published one) or ``content``; ``paths`` names the files concerned."""

    kind: str
    message: str
    paths: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        paths = self.paths[:_MAX_PATHS]
        return {"kind": self.kind, "message": self.message, "paths": paths, "n_paths": len(self.paths)}


@dataclass
class CheckReport:
    """What :func:`check_dataset` found. ``counts``/``published``: ``{part: {split: {what: n}}}``
    (part is e.g. ``refcoco/unc`` or ``ytvos``); ``decoded``: files decoded per kind; ``notes``:
    facts that are not problems (optional files absent, sampling limits)."""

    dataset: str
    root: str
    full: bool = False
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    published: dict[str, Any] = field(default_factory=dict)
    decoded: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, kind: str, message: str, paths: Iterable[Any] = ()) -> None:
        self.problems.append(Problem(kind, " ".join(message.split()), [str(p) for p in paths]))

    def decode_count(self, kind: str, n: int = 1) -> None:
        self.decoded[kind] = self.decoded.get(kind, 0) + n

    def summary(self) -> str:
        """One line: ``<dataset>: OK (...)`` or ``<dataset>: N problems (...)``."""
        parts = []
        for part, splits in self.counts.items():
            desc = "; ".join(
                (f"{split} " if split else "") + ", ".join(f"{n} {what}" for what, n in c.items() if isinstance(n, int))
                for split, c in splits.items()
            )
            parts.append(f"{part}: {desc}" if desc else part)
        if self.decoded:
            parts.append("decoded " + ", ".join(f"{n} {k}" for k, n in self.decoded.items()))
        state = "OK" if self.ok else f"{len(self.problems)} problem{'s' * (len(self.problems) != 1)}"
        return f"{self.dataset} at {self.root}: {state}" + (f" ({' | '.join(parts)})" if parts else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "root": self.root,
            "ok": self.ok,
            "full": self.full,
            "problems": [p.to_dict() for p in self.problems],
            "notes": list(self.notes),
            "counts": self.counts,
            "published": self.published,
            "decoded": dict(self.decoded),
        }


class CheckContext:
    """One check's report, dataset root and sampling settings, with the ways to record a finding."""

    def __init__(self, report: CheckReport, root: Path, full: bool, samples: int):
        self.report, self.root, self.full, self.samples = report, root, full, samples

    def rel(self, path: Path | str) -> str:
        path = Path(path)
        try:
            return path.relative_to(self.root).as_posix() or "."
        except ValueError:
            return str(path)

    def missing(self, paths: Sequence[Path], what: str, total: int | None = None) -> None:
        """One problem for a list of missing paths (named up to _MAX_LISTED)."""
        if not paths:
            return
        shown = ", ".join(self.rel(p) for p in paths[:_MAX_LISTED]) + (", ..." if len(paths) > _MAX_LISTED else "")
        of = f" of {total}" if total is not None else ""
        if len(paths) == 1 and total is None:
            self.report.add("missing", f"{what} missing: {shown}", paths)
        else:
            self.report.add("missing", f"{len(paths)}{of} {what} missing: {shown}", paths)

    def need(self, path: Path, what: str, is_dir: bool = False) -> bool:
        ok = path.is_dir() if is_dir else path.is_file()
        if not ok:
            self.missing([path], what)
        return ok

    def compare(self, part: str, split: str, got: dict[str, int], published: dict[str, int | None]) -> None:
        self.report.counts.setdefault(part, {})[split] = dict(got)
        self.report.published.setdefault(part, {})[split] = dict(published)
        for what, want in published.items():
            if want is not None and what in got and got[what] != want:
                where = f"{part} split {split}" if split else part
                self.report.add("size", f"{where}: {got[what]} {what}, published {want}")

    def pick(self, items: Sequence[Any]) -> list[Any]:
        """All items with full=True, else up to ``samples`` spread evenly (first and last included)."""
        items = list(items)
        if self.full or len(items) <= self.samples:
            return items
        if self.samples <= 0:
            return []
        idx = sorted({int(round(i)) for i in np.linspace(0, len(items) - 1, self.samples)})
        return [items[i] for i in idx]

    def image(self, path: Path, what: str = "image") -> Image.Image | None:
        """Decode an image (counted); a problem and None when it cannot be read."""
        try:
            with Image.open(path) as im:
                im.load()
                self.report.decode_count(what + "s")
                return im.copy()
        except FileNotFoundError:
            self.missing([path], what)
        except IMAGE_ERRORS as e:
            self.report.add("unreadable", f"{what} {self.rel(path)} cannot be decoded: {e}", [path])
        return None

    def dataset_error(self, err: DatasetError, path: Path) -> None:
        msg = str(err).replace(str(self.root) + os.sep, "")
        kind = "missing" if "not found" in msg else "unreadable"
        self.report.add(kind, msg, [path])

    def read_text(self, path: Path, what: str, encoding: str = "utf-8") -> str | None:
        """The text of a file the layout needs; a problem and None when it is absent or unreadable."""
        if not self.need(path, what):
            return None
        try:
            return path.read_bytes().decode(encoding)
        except (OSError, UnicodeDecodeError) as e:
            self.report.add("unreadable", f"{what} {self.rel(path)} cannot be read: {e}", [path])
            return None
