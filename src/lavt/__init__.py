"""lavt: Language-Aware Vision Transformers for referring segmentation."""

from importlib import import_module
from typing import Any

__version__ = "0.1.0.dev0"

# Public names, imported on first use so `import lavt` stays light (no transformers import).
_EXPORTS = {
    "LAVT": "lavt.models.lavt",
    "LAVTConfig": "lavt.config",
    "TextEncoderConfig": "lavt.config",
    "Predictor": "lavt.predict",
    "Prediction": "lavt.predict",
    "load_model": "lavt.predict",
    "load_official_checkpoint": "lavt.weights.official",
    "LAVTError": "lavt.errors",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lavt' has no attribute {name!r}")


__all__ = [*_EXPORTS, "__version__"]
