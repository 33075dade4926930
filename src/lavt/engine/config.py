"""Run configuration: YAML files in ``configs/`` plus ``section.key=value`` command-line overrides.

The recipes ship inside the package (``lavt/configs/*.yaml``; ``configs/`` at the repository root
links there), so ``lavt train refcoco_swin_b`` works after a plain ``pip install``: a config
argument that is not an existing file is looked up by name among them.

A run config has four sections: ``model`` (a :class:`lavt.config.LAVTConfig`, optionally from a
``preset``), ``data``, ``train`` and ``eval``. Unknown keys are errors (a typo must never be
silently ignored), and the resolved config is written next to every run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import LAVTConfig, TextEncoderConfig, coerce_numbers
from ..errors import ConfigError


@dataclass
class DataConfig:
    # "refer": RefCOCO / RefCOCO+ / G-Ref / synthetic (refer layout); "ytvos": Ref-YouTube-VOS
    # layout; "joint": both at once (unified LAVT), see ``joint``
    name: str = "refer"
    root: str = "./refer/data"
    dataset: str = "refcoco"
    split_by: str = "unc"
    # refer layout: train on several datasets at once, e.g. ["refcoco/unc", "refcoco+/unc", "refcocog/umd"]
    # (the paper's pretraining set); validation uses `dataset`/`split_by`
    datasets: list[str] | None = None
    per_expression: bool = False  # train on every expression once per epoch (official pseudo-video pretraining)
    train_split: str = "train"
    val_split: str = "val"
    image_size: int = 480
    mask_mode: str = "union"  # "legacy": the official overlapping-polygon quirk
    blank_expressions: bool = False  # language-blind control: every expression is [CLS][SEP]
    num_workers: int = 2
    cache_images: bool = False
    synthetic: dict[str, Any] | None = None  # generate the synthetic set into root first (kwargs)
    clip_len: int = 8  # video: frames per training clip (official sampling: anchor + local + global)
    eval_clip_len: int | None = None  # video eval: None = the whole video in one pass (official)
    # name=joint: {"image": {data keys of the refer set}, "video": {data keys of the ytvos set}};
    # each part is this section with those keys replaced
    joint: dict[str, Any] | None = None
    image_ratio: float = 0.5  # name=joint: fraction of the (homogeneous) batches that are images


@dataclass
class TrainConfig:
    output_dir: str = "runs/lavt"
    epochs: int = 40
    batch_size: int = 8  # per process
    grad_accum: int = 1
    lr: float = 5e-5
    weight_decay: float = 1e-2
    lr_power: float = 0.9  # polynomial decay per iteration, no warm-up (official)
    loss: str = "ce"  # ce | dice | dice_boundary
    text_encoder_layers: str = "0-9"  # official: only BERT encoder layers 0..9 are optimised; "all", "none", "a-b"
    text_encoder_embeddings: bool = False
    # With a frozen text encoder (text_encoder_layers: none): run it in eval mode (no dropout) and
    # compute each distinct expression's word features once, then reuse them. Pays off when the
    # same expressions recur over many epochs; memory grows with their number (L x C_l floats each).
    cache_text_features: bool = False
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16 uses a GradScaler, CUDA only)
    activation_checkpointing: bool = False
    sync_bn: bool = True  # under DDP on CUDA
    seed: int = 0
    clip_grad_norm: float | None = None
    log_every: int = 10
    checkpoint_every: int = 500  # optimizer steps; plus one at every epoch end and at the best val oIoU
    val_every: int = 1  # epochs; 0 = never (e.g. Ref-YouTube-VOS valid has no public masks)
    val_max_samples: int | None = None  # None: the whole val split (one random sentence per object)
    init_swin: str | None = None  # Swin ImageNet-22K checkpoint: image backbone, or a unified model's 2D path
    init_video_swin: str | None = None  # Video Swin Kinetics checkpoint (mmaction layout) for a video model's Swin
    init_image_model: str | None = None  # image LAVT (dir or official .pth): inflated into a video model / a unified 2D path
    init_video_model: str | None = None  # video LAVT (dir or official .pth): a unified model's 3D path and shared parts
    init_from: str | None = None  # a lavt model directory or official .pth to fine-tune from
    max_steps: int | None = None  # stop after this many optimizer steps (the LR schedule still spans all epochs)
    device: str = "auto"


@dataclass
class EvalConfig:
    split: str = "val"
    protocol: str = "official"  # official: 480x480 vs nearest-resized GT; original: at image size
    batch_size: int = 8
    max_samples: int | None = None


@dataclass
class RunConfig:
    model: LAVTConfig = field(default_factory=LAVTConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "data": dataclasses.asdict(self.data),
            "train": dataclasses.asdict(self.train),
            "eval": dataclasses.asdict(self.eval),
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


_SECTIONS = {"data": DataConfig, "train": TrainConfig, "eval": EvalConfig}


def _build_section(cls, values: dict[str, Any], section: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) in section '{section}': {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return cls(**coerce_numbers(cls, values, section))


def _build_model(values: dict[str, Any]) -> LAVTConfig:
    values = dict(values)
    values.pop("model_type", None)
    preset = values.pop("preset", None)
    values = coerce_numbers(LAVTConfig, values, "model")  # the one place YAML reaches a model config
    if isinstance(values.get("text_encoder"), dict):
        values["text_encoder"] = TextEncoderConfig(**values["text_encoder"])
    if preset is not None:
        window = values.pop("window_size", 12)
        try:
            return LAVTConfig.from_preset(preset, window, **values)
        except TypeError as e:
            raise ConfigError(f"section 'model': {e}") from None
    return LAVTConfig.from_dict(values)


def _parse_value(text: str) -> Any:
    value = yaml.safe_load(text)
    return text if value is None and text.lower() not in ("null", "none", "~") else value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``section.key=value`` (nested with more dots); values are parsed as YAML."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, text = item.split("=", 1)
        keys = dotted.strip().split(".")
        if len(keys) < 2 or keys[0] not in ("model", *_SECTIONS):
            raise ConfigError(f"override {dotted!r} must start with model., data., train. or eval.")
        node = raw.setdefault(keys[0], {})
        for k in keys[1:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {dotted!r}: {k} is not a section")
        node[keys[-1]] = _parse_value(text)
    return raw


BUNDLED_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def bundled_configs() -> list[str]:
    """Names of the recipes shipped with the package (``lavt train NAME``)."""
    return sorted(p.stem for p in BUNDLED_CONFIGS.glob("*.yaml"))


def resolve_config_path(path: str | Path) -> Path:
    """An existing file, else a bundled recipe by name (``demo`` or ``demo.yaml``)."""
    p = Path(path)
    if p.is_file():
        return p
    bundled = BUNDLED_CONFIGS / (p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml")
    if p.parent == Path(".") and bundled.is_file():
        return bundled
    raise ConfigError(f"config file {path} does not exist (bundled recipes: {', '.join(bundled_configs())})")


def load_run_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    raw: dict[str, Any] = {}
    if path is not None:
        path = resolve_config_path(path)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} must hold a mapping of sections")
    return load_run_config_dict(apply_overrides(raw, overrides or []))


def load_run_config_dict(raw: dict[str, Any]) -> RunConfig:
    """A RunConfig from its dict form (``RunConfig.to_dict()`` round-trips through this)."""
    unknown = sorted(set(raw) - {"model", *_SECTIONS})
    if unknown:
        raise ConfigError(f"unknown config section(s): {', '.join(unknown)} (known: model, data, train, eval)")
    return RunConfig(
        model=_build_model(raw.get("model") or {}),
        **{name: _build_section(cls, raw.get(name) or {}, name) for name, cls in _SECTIONS.items()},
    )
