"""What a run is built from: the model (with its initialisation and which parameters train), the
official optimizer parameter groups and LR schedule, the datasets and their epoch order, and the
text-feature cache. The trainer (``lavt.engine.trainer``) only runs what this module builds.

Recipe (official LAVT): AdamW, weight decay off for norms and relative-position tables, only
BERT encoder layers 0..9 optimised, polynomial decay (power 0.9) stepped every iteration without
warm-up. The data order of an epoch is a pure function of (seed, epoch) and the sentence drawn for
an object a pure function of (seed, epoch, index), which is what makes resuming exact.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Sampler

from ..errors import ConfigError
from ..models.lavt import LAVT
from ..runtime.distributed import (
    DistEnv,
)
from .config import RunConfig

NO_DECAY_KEYS = ("norm", "relative_position_bias_table", "absolute_pos_embed")


# data.name -> (module in lavt.data, dataset class) for the video benchmarks
VIDEO_DATASETS = {
    "ytvos": ("ytvos", "ReferYouTubeVOS"),
    "davis": ("davis", "ReferDAVIS17"),
    "a2d": ("a2d", "A2DSentences"),  # scored on annotated frames (oIoU / mIoU / P@K), not J&F
    "jhmdb": ("jhmdb", "JHMDBSentences"),
}


# ----------------------------------------------------------------------------------------------
# model, optimizer, schedule
# ----------------------------------------------------------------------------------------------
def build_model(cfg: RunConfig) -> LAVT:
    t = cfg.train
    if t.init_from:
        from ..predict import load_model

        model = load_model(t.init_from)
        if model.config != cfg.model:
            raise ConfigError(f"train.init_from={t.init_from} has another architecture than the run's model config")
    else:
        model = LAVT.from_config(cfg.model, pretrained_text_encoder=True)
    m = cfg.model
    if t.init_video_model and not m.unified:
        raise ConfigError("train.init_video_model initialises unified models; use train.init_from for a video model")
    if t.init_image_model and not m.video:
        raise ConfigError("train.init_image_model initialises video or unified models; use train.init_from for an image model")
    if t.init_video_swin and not m.video:
        raise ConfigError("train.init_video_swin needs a video model (model.video: true)")
    if m.unified:
        from ..weights.unified import init_unified, init_unified_2d_from_swin

        if t.init_swin:
            init_unified_2d_from_swin(model, t.init_swin)
        if t.init_video_swin:
            from ..weights.swin import init_backbone_from_video_swin

            init_backbone_from_video_swin(model, t.init_video_swin)
        if t.init_image_model or t.init_video_model:
            init_unified(model, image_model=t.init_image_model, video_model=t.init_video_model)
    elif m.video:
        from ..weights.inflate import inflate_image_lavt
        from ..weights.swin import init_backbone_from_video_swin

        if t.init_swin:
            raise ConfigError("train.init_swin is for image models; a video model takes train.init_video_swin")
        if t.init_image_model:
            inflate_image_lavt(model, t.init_image_model)
        if t.init_video_swin:
            init_backbone_from_video_swin(model, t.init_video_swin)
    elif t.init_swin:
        from ..weights.swin import init_backbone_from_swin

        init_backbone_from_swin(model, t.init_swin)
    return model


def _layer_range(spec: str, num_layers: int) -> set[int]:
    spec = spec.strip().lower()
    if spec == "all":
        return set(range(num_layers))
    if spec in ("none", ""):
        return set()
    m = re.fullmatch(r"(\d+)-(\d+)", spec)
    if not m:
        raise ConfigError(f"train.text_encoder_layers={spec!r}: use 'all', 'none' or a range like '0-9'")
    return set(range(int(m.group(1)), min(int(m.group(2)), num_layers - 1) + 1))


def freeze_untrained(model: LAVT, cfg: RunConfig) -> None:
    """requires_grad=False for what the official recipe never updates (cheaper than computing
    their gradients, same result): BERT embeddings, BERT layers outside the range, the pooler,
    and parameters that cannot influence the output (e.g. the stage-4 gate)."""
    for name in model.backbone.unused_parameters():
        model.backbone.get_parameter(name).requires_grad_(False)
    if model.text_encoder is None:
        return
    layers = _layer_range(cfg.train.text_encoder_layers, model.text_encoder.config.num_hidden_layers)
    for name, p in model.text_encoder.named_parameters():
        m = re.match(r"encoder\.layer\.(\d+)\.", name)
        if m:
            p.requires_grad_(int(m.group(1)) in layers)
        else:
            p.requires_grad_(name.startswith("embeddings.") and cfg.train.text_encoder_embeddings)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Official groups: no weight decay on backbone norms and position tables; everything else
    (PWAM, gates, decoder incl. BatchNorm, trained BERT layers) with weight decay."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("backbone.") and any(k in name for k in NO_DECAY_KEYS):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def poly_schedule(total_steps: int, power: float = 0.9):
    """LR factor at optimizer step ``it``: (1 - it / total) ** power (official, no warm-up)."""

    def factor(it: int) -> float:
        return max(0.0, 1.0 - it / max(1, total_steps)) ** power

    return factor


def build_optimizer(model: nn.Module, t: Any) -> torch.optim.AdamW:
    """The official optimizer: AdamW (decoupled weight decay, betas 0.9/0.999, eps 1e-8, no
    AMSGrad) over :func:`param_groups` of the parameters that train, learning rate ``t.lr``."""
    return torch.optim.AdamW(param_groups(model, t.weight_decay), lr=t.lr, betas=(0.9, 0.999), eps=1e-8)


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, t: Any) -> torch.optim.lr_scheduler.LambdaLR:
    """Polynomial decay ``(1 - step / total_steps) ** t.lr_power`` stepped after every optimizer
    step (official; no warm-up). ``total_steps`` spans the whole run (every epoch)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, poly_schedule(total_steps, t.lr_power))


def lr_at(step: int, total: int, base_lr: float, power: float = 0.9) -> float:
    """The learning rate after ``step`` optimizer steps (for docs and tests)."""
    return base_lr * poly_schedule(total, power)(step)


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
class EpochSampler(Sampler[int]):
    """This rank's indices of one epoch: a permutation seeded by (seed, epoch), split across ranks
    (drop_last, like the official DistributedSampler use), minus the first ``skip`` indices."""

    def __init__(self, size: int, seed: int, epoch: int, env: DistEnv, shuffle: bool = True, skip: int = 0):
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(size, generator=g).tolist() if shuffle else list(range(size))
        per_rank = size // env.world_size
        self.indices = order[env.rank * per_rank : (env.rank + 1) * per_rank][skip:]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class EpochConcatDataset(torch.utils.data.ConcatDataset):
    """ConcatDataset that passes ``set_epoch`` on (seeded sentence draws stay exact on resume)."""

    def set_epoch(self, epoch: int) -> None:
        for d in self.datasets:
            if hasattr(d, "set_epoch"):
                d.set_epoch(epoch)


def build_datasets(cfg: RunConfig, tokenizer) -> tuple[Dataset, Any]:
    """(train set, val set); for ``data.name=joint`` the val "set" is ``{"image": ..., "video": ...}``."""
    d = cfg.data
    if d.name in VIDEO_DATASETS:
        return _video_datasets(cfg, tokenizer)
    if d.name == "joint":
        return _joint_datasets(cfg, tokenizer)
    if d.name != "refer":
        raise ConfigError(
            f"data.name={d.name!r}: use 'refer' (RefCOCO family, synthetic images), one of "
            f"{', '.join(sorted(VIDEO_DATASETS))} (videos) or 'joint'"
        )
    from ..data.refer import ReferSegmentation

    if d.synthetic is not None:
        from ..data.synthetic import generate_synthetic_refer

        generate_synthetic_refer(d.root, dataset_name=d.dataset, **d.synthetic)
    common = dict(
        data_root=d.root,
        dataset=d.dataset,
        split_by=d.split_by,
        image_size=d.image_size,
        tokenizer=tokenizer,
        mask_mode=d.mask_mode,
        blank_expressions=d.blank_expressions,
        cache_images=d.cache_images,
    )
    mode = "eval" if d.per_expression else "train"  # "eval" items = one per expression
    if d.datasets:
        parts = []
        for spec in d.datasets:
            name, _, split_by = spec.partition("/")
            if not split_by:
                raise ConfigError(f"data.datasets entry {spec!r} must look like 'refcoco/unc'")
            parts.append(
                ReferSegmentation(split=d.train_split, mode=mode, seed=cfg.train.seed,
                                  **{**common, "dataset": name, "split_by": split_by})
            )
        train: Dataset = EpochConcatDataset(parts)
    else:
        train = ReferSegmentation(split=d.train_split, mode=mode, seed=cfg.train.seed, **common)
    val = ReferSegmentation(split=d.val_split, mode="eval", **common)
    if cfg.model.video and d.clip_len > 1:
        # video LAVT on referring images: pseudo-clips of the image repeated (official pretraining)
        from ..data.ytvos import PseudoVideoDataset

        train = PseudoVideoDataset(train, d.clip_len)
    return train, val


def _joint_datasets(cfg: RunConfig, tokenizer) -> tuple[Dataset, dict[str, Dataset]]:
    import dataclasses

    from ..data.joint import JointDataset

    d = cfg.data
    if not d.joint or set(d.joint) != {"image", "video"}:
        raise ConfigError("data.name=joint needs data.joint with exactly the keys 'image' and 'video'")
    parts = {}
    for kind, name in (("image", "refer"), ("video", "ytvos")):
        fields = {f.name for f in dataclasses.fields(d)}
        unknown = sorted(set(d.joint[kind]) - fields)
        if unknown:
            raise ConfigError(f"unknown key(s) in data.joint.{kind}: {', '.join(unknown)}")
        # Images are one-frame samples unless data.joint.image sets clip_len (then pseudo-clips of
        # the image repeated): a unified model infers images on its 2D path with T = 1, and
        # single-stream training would never reach that path with multi-frame pseudo-clips.
        defaults = {"clip_len": 1} if kind == "image" else {}
        sub = dataclasses.replace(d, **{**defaults, **d.joint[kind], "name": name, "joint": None})
        parts[kind] = build_datasets(dataclasses.replace(cfg, data=sub), tokenizer)
    train = JointDataset(parts["image"][0], parts["video"][0])
    return train, {"image": parts["image"][1], "video": parts["video"][1]}


def video_dataset(d: Any, split: str, mode: str, tokenizer: Any, seed: int | None = None) -> Dataset:
    """A video dataset of ``data.name`` (every class has the Ref-YouTube-VOS item format)."""
    if d.name not in VIDEO_DATASETS:
        raise ConfigError(f"data.name={d.name!r} is not a video dataset ({', '.join(sorted(VIDEO_DATASETS))})")
    module_name, class_name = VIDEO_DATASETS[d.name]
    import importlib

    cls = getattr(importlib.import_module(f"..data.{module_name}", __package__), class_name)
    import inspect

    kwargs: dict[str, Any] = dict(image_size=d.image_size, tokenizer=tokenizer, clip_len=d.clip_len, mode=mode)
    if mode == "train":
        kwargs["seed"] = seed
    elif "eval_clip_len" in inspect.signature(cls).parameters:
        kwargs["eval_clip_len"] = d.eval_clip_len  # None = whole video
    else:  # A2D / JHMDB: the clip around the annotated frame (official 16 when None)
        kwargs["clip_len"] = d.eval_clip_len
    return cls(d.root, split=split, **kwargs)


def _video_datasets(cfg: RunConfig, tokenizer) -> tuple[Dataset, Dataset]:
    d = cfg.data
    if d.blank_expressions:
        raise ConfigError("data.blank_expressions is only implemented for the refer layout")
    if d.synthetic is not None:
        from ..data.synthetic import generate_synthetic_videos

        generate_synthetic_videos(d.root, **d.synthetic)
    train = video_dataset(d, d.train_split, "train", tokenizer, cfg.train.seed)
    val = video_dataset(d, d.val_split, "eval", tokenizer)
    return train, val


def make_tokenizer(model: LAVT):
    if model.config.text_encoder is None:
        raise ConfigError("training needs a text encoder: set model.text_encoder")
    from ..models.text import Tokenizer

    return Tokenizer.from_config(model.config.text_encoder)


def check_files_exist(*datasets: Any) -> None:
    """Existence (not decoding) of every file the splits will read, before the first step: a
    missing image must not end a long run hours in."""
    missing: list[Path] = []
    total = 0
    for dataset in datasets:
        for leaf in _leaf_datasets(dataset):
            files = leaf.required_files() if hasattr(leaf, "required_files") else []
            total += len(files)
            missing += [f for f in files if not os.path.isfile(f)]
    if missing:
        from ..data.refer import DatasetError

        raise DatasetError(
            f"{len(missing)} of the {total} files the training and validation splits read are missing, "
            f"e.g. {missing[0]}; check the dataset with `lavt data check`"
        )


def _leaf_datasets(dataset: Any) -> list[Any]:
    """The datasets that read files, inside wrappers (concat, joint, pseudo-video, dict of val sets)."""
    if isinstance(dataset, dict):
        return [d for part in dataset.values() for d in _leaf_datasets(part)]
    inner = getattr(dataset, "datasets", None)  # ConcatDataset
    if isinstance(inner, (list, tuple)):
        return [d for part in inner for d in _leaf_datasets(part)]
    wrapped = [getattr(dataset, a) for a in ("dataset", "image", "video") if isinstance(getattr(dataset, a, None), Dataset)]
    if wrapped:  # PseudoVideoDataset (.dataset), JointDataset (.image, .video)
        return [d for part in wrapped for d in _leaf_datasets(part)]
    return [dataset]


class TextFeatureCache:
    """Word features of a frozen, eval-mode text encoder, computed once per distinct expression
    (``train.cache_text_features``).

    Each expression is encoded alone, at its own length: its features are then a function of its
    tokens only. Encoding the new expressions of a batch together would make them depend on which
    other expressions shared that batch (matrix-multiply rounding changes with the batch), so a
    resumed run, whose cache starts empty and fills in other batches, would drift from the
    uninterrupted one."""

    def __init__(self, model: LAVT):
        if model.text_encoder is None:
            raise ConfigError("train.cache_text_features needs a model with a text encoder")
        if any(p.requires_grad for p in model.text_encoder.parameters()):
            raise ConfigError(
                "train.cache_text_features needs a frozen text encoder: set train.text_encoder_layers=none "
                "and train.text_encoder_embeddings=false"
            )
        self.model = model
        self.features: dict[bytes, Tensor] = {}

    def __call__(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        ids, mask = input_ids.cpu(), attention_mask.cpu()
        # an expression's key and stored features cover its own tokens only, so the same
        # expression hits the cache whatever padding length its batch was trimmed to
        lengths = [int(m.nonzero().max()) + 1 if m.any() else 1 for m in mask]
        keys = [i[:n].numpy().tobytes() + m[:n].numpy().tobytes() for i, m, n in zip(ids, mask, lengths)]
        missing = [k for k, key in enumerate(keys) if key not in self.features]
        if missing:
            encoder = self.model.text_encoder
            was_training = encoder.training
            encoder.eval()  # no dropout: the features must not depend on when they were computed
            with torch.no_grad():
                for k in missing:
                    if keys[k] in self.features:  # the same expression twice in one batch
                        continue
                    n = lengths[k]
                    feats = self.model.encode_text(input_ids[k : k + 1, :n], attention_mask[k : k + 1, :n])
                    self.features[keys[k]] = feats[0].float().cpu()
            encoder.train(was_training)
        out = torch.zeros(len(keys), ids.shape[1], self.features[keys[0]].shape[-1])
        for row, (key, n) in enumerate(zip(keys, lengths)):
            out[row, :n] = self.features[key]  # padded words stay 0: every consumer masks them
        return out.to(input_ids.device)
