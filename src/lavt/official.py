"""Compatibility name kept for the parity fixtures' contract: ``from lavt.official import
load_official_checkpoint``. The official-checkpoint importer lives in :mod:`lavt.weights.official`."""

from .weights.official import load_official_checkpoint

__all__ = ["load_official_checkpoint"]
