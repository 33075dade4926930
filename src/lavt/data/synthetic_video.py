"""The synthetic video set's former module: serves the video names of :mod:`lavt.data.synthetic`."""

from __future__ import annotations

from typing import Any

from . import synthetic as _package

__all__ = _package.clips.__all__ + _package.video_grammar.__all__ + _package.videos.__all__


def __getattr__(name: str) -> Any:
    p = _package
    return p._former_name(name, __name__, (p.videos, p.video_grammar, p.clips, p.grammar, p.render, p.writing))
