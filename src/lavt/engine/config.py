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
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import LAVTConfig, TextEncoderConfig, check_image_size, coerce_numbers
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
    # true: the text encoder follows model.train() (its dropout is active in training), as in the
    # official lavt_one and LAVT-RS models (BERT inside the model; the Dice recipes); false: kept in
    # eval mode for the whole run, as the official two-model `lavt` (a separate BERT; the
    # conference cross-entropy models)
    text_encoder_dropout: bool = True
    # With a frozen text encoder (text_encoder_layers: none): run it in eval mode (no dropout) and
    # compute each distinct expression's word features once, then reuse them. Pays off when the
    # same expressions recur over many epochs; memory grows with their number (L x C_l floats each).
    cache_text_features: bool = False
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16 with a GradScaler; on CPUs without fp16 kernels: slow)
    activation_checkpointing: bool = False
    sync_bn: bool = True  # under DDP on CUDA
    seed: int = 0
    clip_grad_norm: float | None = None
    log_every: int = 10
    checkpoint_every: int = 500  # optimizer steps; plus one at every epoch end and at the best val oIoU
    keep_best: bool = True  # at each new best validation score write best.pt and best_model/
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
    # Ref-DAVIS17: "toolkit" = davis2017-evaluation's unsupervised protocol on merged objects with
    # Hungarian matching (what the field reports); "per_object" = each expression against its own object
    davis_protocol: str = "toolkit"
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
        Path(path).write_text(yaml_dump(self.to_dict()))


_SECTIONS = {"data": DataConfig, "train": TrainConfig, "eval": EvalConfig}


def yaml_dump(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False)


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


def _parse_value(text: str, dotted: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"override {dotted}={text!r}: the value is not valid YAML ({reason})") from None
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
        if node is None:
            node = raw[keys[0]] = {}
        if not isinstance(node, dict):
            raise ConfigError(f"config section '{keys[0]}' must be a mapping of keys, got {node!r}")
        for k in keys[1:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {dotted!r}: {k} is not a section")
        node[keys[-1]] = _parse_value(text, dotted.strip())
    return raw


# data.root "cache:NAME" = NAME inside lavt's cache folder: the synthetic sets `lavt demo` makes
# live there, so `lavt train demo` and `lavt demo` share one copy.
CACHE_PREFIX = "cache:"


def lavt_cache_dir() -> Path:
    """``$LAVT_CACHE``, else ``$XDG_CACHE_HOME/lavt``, else ``~/.cache/lavt``."""
    if os.environ.get("LAVT_CACHE"):
        return Path(os.environ["LAVT_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "lavt"


def resolve_root(root: str) -> str:
    """A data root as a path: ``cache:NAME`` -> the cache folder's NAME, ``~`` expanded."""
    if isinstance(root, str) and root.startswith(CACHE_PREFIX):
        name = root[len(CACHE_PREFIX) :].strip("/")
        if not name:
            raise ConfigError(f"data.root {root!r}: give a folder name after '{CACHE_PREFIX}'")
        return str(lavt_cache_dir() / name)
    return os.path.expanduser(root) if isinstance(root, str) else root


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
    for name in ("model", *_SECTIONS):
        if raw.get(name) is not None and not isinstance(raw[name], dict):
            raise ConfigError(f"config section '{name}' must be a mapping of keys, got {raw[name]!r}")
    cfg = RunConfig(
        model=_build_model(raw.get("model") or {}),
        **{name: _build_section(cls, raw.get(name) or {}, name) for name, cls in _SECTIONS.items()},
    )
    validate_run_config(cfg)
    cfg.data.root = resolve_root(cfg.data.root)
    for part in (cfg.data.joint or {}).values():
        if isinstance(part, dict) and "root" in part:
            part["root"] = resolve_root(part["root"])
    return cfg


def _number(value: Any, key: str, *, whole: bool = False, minimum: float | None = None,
            above: float | None = None, optional: bool = False) -> None:
    """One-line ConfigError unless ``value`` is a (whole) number within the bound (or None if optional)."""
    if value is None and optional:
        return
    kind = "whole number" if whole else "number"
    ok_type = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok_type or (whole and float(value) != int(value)):
        raise ConfigError(f"{key} must be a {kind}{' or null' if optional else ''}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{key} must be >= {minimum:g}, got {value!r}")
    if above is not None and value <= above:
        raise ConfigError(f"{key} must be > {above:g}, got {value!r}")


def validate_run_config(cfg: RunConfig) -> None:
    """Values no run can use (batch 0, negative learning rate, 0 epochs, a 100000 px input) are
    one-line errors here, before any model is built or file written."""
    t, d, e = cfg.train, cfg.data, cfg.eval
    for section, values in (("train", t), ("data", d), ("eval", e)):
        for f in dataclasses.fields(values):
            value = getattr(values, f.name)
            if f.type in (bool, "bool") and not isinstance(value, bool):
                raise ConfigError(f"{section}.{f.name} must be true or false, got {value!r}")
    for key, minimum in (("epochs", 1), ("batch_size", 1), ("grad_accum", 1), ("checkpoint_every", 1),
                         ("log_every", 1), ("val_every", 0), ("seed", 0)):
        _number(getattr(t, key), f"train.{key}", whole=True, minimum=minimum)
    _number(t.max_steps, "train.max_steps", whole=True, minimum=1, optional=True)
    _number(t.val_max_samples, "train.val_max_samples", whole=True, minimum=1, optional=True)
    _number(t.lr, "train.lr", above=0)
    _number(t.weight_decay, "train.weight_decay", minimum=0)
    _number(t.lr_power, "train.lr_power", above=0)
    _number(t.clip_grad_norm, "train.clip_grad_norm", above=0, optional=True)
    check_image_size(d.image_size, "data.image_size")
    _number(d.num_workers, "data.num_workers", whole=True, minimum=0)
    _number(d.clip_len, "data.clip_len", whole=True, minimum=1)
    _number(d.eval_clip_len, "data.eval_clip_len", whole=True, minimum=1, optional=True)
    _number(d.image_ratio, "data.image_ratio", minimum=0)
    if d.image_ratio > 1:
        raise ConfigError(f"data.image_ratio is a fraction of the batches: 0..1, got {d.image_ratio!r}")
    _number(e.batch_size, "eval.batch_size", whole=True, minimum=1)
    _number(e.max_samples, "eval.max_samples", whole=True, minimum=1, optional=True)
    if e.protocol not in ("official", "original"):
        raise ConfigError(f"eval.protocol={e.protocol!r} is not one of official, original")
    if e.davis_protocol not in ("toolkit", "per_object"):
        raise ConfigError(f"eval.davis_protocol={e.davis_protocol!r} is not one of toolkit, per_object")
    if not isinstance(d.root, str) or not d.root:
        raise ConfigError(f"data.root must be a folder path, got {d.root!r}")
