"""Training and evaluation loops (official recipe by default, any device, 1 or N processes).

Recipe (official LAVT): AdamW, weight decay off for norms and relative-position tables, only
BERT encoder layers 0..9 optimised, polynomial decay (power 0.9) stepped every iteration without
warm-up, weighted cross-entropy (or Dice), model selection by validation oIoU.

Exact resume: a checkpoint holds model, optimizer, scheduler, scaler, RNG states, epoch and step.
The data order of an epoch is a pure function of (seed, epoch) and the random sentence drawn for
an object a pure function of (seed, epoch, index), so a resumed run skips the finished batches
of the interrupted epoch and continues with exactly the same samples.
"""

from __future__ import annotations

import json
import os
import re
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler
from ..config import Preprocessing
from ..errors import CheckpointError, ConfigError, TrainingInterrupted
from .losses import build_loss
from ..evaluation.metrics import RISMeter
from ..models.lavt import LAVT, load_state_dict_strict
from ..models.text import trim_padding
from ..runtime.precision import warn_if_slow
from ..runtime.progress import progress_bar
from ..io.torch_files import atomic_write_text
from .checkpoint import fingerprint, load_training_checkpoint, rng_state, save_atomic, set_rng_state
from .config import RunConfig, yaml_dump
from .distributed import DistEnv, all_gather_objects, barrier, cleanup, init_distributed, max_over_ranks
from .interrupt import StopRequests

NO_DECAY_KEYS = ("norm", "relative_position_bias_table", "absolute_pos_embed")

# What a run writes into train.output_dir: their presence means "this folder holds a run", and
# --overwrite removes exactly these (never other files a user keeps there).
RUN_FILES = ("last.pt", "best.pt", "config.yaml", "history.json", "final_model", "best_model", "tensorboard")

# data.name -> (module in lavt.data, dataset class) for the video benchmarks
VIDEO_DATASETS = {
    "ytvos": ("ytvos", "ReferYouTubeVOS"),
    "davis": ("davis", "ReferDAVIS17"),
    "a2d": ("a2d", "A2DSentences"),  # scored on annotated frames (oIoU / mIoU / P@K), not J&F
    "jhmdb": ("a2d", "JHMDBSentences"),
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
            from ..weights.official import init_backbone_from_video_swin

            init_backbone_from_video_swin(model, t.init_video_swin)
        if t.init_image_model or t.init_video_model:
            init_unified(model, image_model=t.init_image_model, video_model=t.init_video_model)
    elif m.video:
        from ..weights.official import init_backbone_from_video_swin, inflate_image_lavt

        if t.init_swin:
            raise ConfigError("train.init_swin is for image models; a video model takes train.init_video_swin")
        if t.init_image_model:
            inflate_image_lavt(model, t.init_image_model)
        if t.init_video_swin:
            init_backbone_from_video_swin(model, t.init_video_swin)
    elif t.init_swin:
        from ..weights.official import init_backbone_from_swin

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
        from ..data.synthetic_video import generate_synthetic_videos

        generate_synthetic_videos(d.root, **d.synthetic)
    train = video_dataset(d, d.train_split, "train", tokenizer, cfg.train.seed)
    val = video_dataset(d, d.val_split, "eval", tokenizer)
    return train, val


def make_tokenizer(model: LAVT):
    if model.config.text_encoder is None:
        raise ConfigError("training needs a text encoder: set model.text_encoder")
    from ..models.text import Tokenizer

    return Tokenizer.from_config(model.config.text_encoder)


def autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device.type, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------------
@torch.inference_mode()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    env: DistEnv | None = None,
    batch_size: int = 8,
    precision: str = "fp32",
    max_samples: int | None = None,
    protocol: str = "official",
    progress: bool = True,
) -> dict[str, Any]:
    """oIoU / mIoU / P@K over the dataset's samples (every expression), grouped by expression type.

    ``official``: argmax at the model resolution vs the nearest-resized ground truth;
    ``original``: logits upsampled (bilinear, align_corners) to the image size vs the original mask.
    """
    from ..evaluation.metrics import score_prediction

    env = env or DistEnv(device=next(model.parameters()).device)
    if getattr(dataset, "scores_annotated_frames", False):  # A2D / JHMDB: one annotated frame per clip
        return evaluate_annotated(model, dataset, env, precision, max_samples, protocol, progress)
    if hasattr(dataset, "original_masks"):  # video clips: J&F
        return evaluate_video(model, dataset, env, precision, max_samples, progress)
    was_training = model.training
    model.eval()
    n = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    indices = list(range(n))[env.rank :: env.world_size]
    loader = DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size, collate_fn=_collate)
    records = []
    for batch in progress_bar(loader, progress and env.is_main, desc="eval", leave=False):
        with autocast(precision, env.device):
            logits = model(
                batch["image"].to(env.device),
                batch["input_ids"].to(env.device),
                batch["attention_mask"].to(env.device),
            ).float()
        for k in range(logits.shape[0]):
            if protocol == "official":
                pred = logits[k].argmax(0).cpu()
                gt = batch["target"][k].bool()
                i, u = int((pred.bool() & gt).sum()), int((pred.bool() | gt).sum())
            else:
                i, u = score_prediction(logits[k].cpu(), dataset.original_target(int(batch["index"][k])), "original")
            records.append((i, u, batch["type"][k]))
    gathered = [r for part in all_gather_objects(records, env) for r in part]
    meter = RISMeter()
    for i, u, group in gathered:
        meter.update_counts(i, u, group=group or None)
    model.train(was_training)
    result = meter.compute()
    result["protocol"] = protocol
    return result


@torch.inference_mode()
def evaluate_video(
    model: nn.Module,
    dataset: Dataset,
    env: DistEnv | None = None,
    precision: str = "fp32",
    max_samples: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Region J, boundary F and J&F (DAVIS definitions) per expression over its frames at the
    original frame size (logits upsampled bilinearly, align_corners, then argmax: the official
    LAVT-RS post-processing), averaged over expressions; grouped by expression type when the
    data has one. Also frame-level oIoU / mIoU at the model resolution (A2D style)."""
    from ..data.ytvos import logits_to_masks
    from ..evaluation.video_metrics import JFMeter

    env = env or DistEnv(device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    n = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    indices = list(range(n))[env.rank :: env.world_size]
    jf_records, ris_records = [], []
    for index in progress_bar(indices, progress and env.is_main, desc="eval", leave=False):
        item = dataset[index]  # one expression, its whole video (or window): clip lengths vary
        with autocast(precision, env.device):
            logits = forward_visual(
                model,
                item["video"][None].to(env.device),
                item["input_ids"][None].to(env.device),
                item["attention_mask"][None].to(env.device),
            )[0].float().cpu()  # (T, 2, S, S)
        gt = dataset.original_masks(index)
        pred = logits_to_masks(logits, gt.shape[-2:]).numpy()
        key = (item["video_id"], item["exp_id"])
        jf_records.append((key, int(item["frame_indices"][0]), pred, gt, item.get("type") or None))
        small = logits.argmax(1).bool()
        target = item["target"].bool()
        for t in range(small.shape[0]):
            ris_records.append((int((small[t] & target[t]).sum()), int((small[t] | target[t]).sum()), item.get("type") or None))
    # an expression evaluated in windows is scored once, over all its frames
    windows: dict[tuple[str, str], list] = {}
    for part in all_gather_objects(jf_records, env):
        for key, first, pred, gt, group in part:
            windows.setdefault(key, []).append((first, pred, gt, group))
    meter = JFMeter()
    for (video, expression), parts in windows.items():
        parts.sort(key=lambda p: p[0])
        pred = np.concatenate([p[1] for p in parts])
        gt = np.concatenate([p[2] for p in parts])
        meter.update(video, expression, pred, gt, group=parts[0][3])
    ris = RISMeter()
    for part in all_gather_objects(ris_records, env):
        for i, u, group in part:
            ris.update_counts(i, u, group=group)
    model.train(was_training)
    result = meter.compute()
    frames = ris.compute()
    result.update(oIoU=frames["oIoU"], mIoU=frames["mIoU"], protocol="davis")
    return result


@torch.inference_mode()
def evaluate_annotated(
    model: nn.Module,
    dataset: Any,
    env: DistEnv | None = None,
    precision: str = "fp32",
    max_samples: int | None = None,
    protocol: str = "official",
    progress: bool = True,
) -> dict[str, Any]:
    """A2D-Sentences / JHMDB-Sentences protocol: each sample is a clip around one annotated frame
    (16 consecutive frames at test time, clamped to the video); that frame's argmax at the model
    resolution is compared with its nearest-resized mask; oIoU / mIoU / P@K (IoU >= K)."""
    from ..data.a2d import score_annotated_frame

    env = env or DistEnv(device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    n = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    records = []
    for index in progress_bar(range(env.rank, n, env.world_size), progress and env.is_main, desc="eval", leave=False):
        item = dataset[index]
        with autocast(precision, env.device):
            logits = forward_visual(
                model, item["video"][None].to(env.device), item["input_ids"][None].to(env.device),
                item["attention_mask"][None].to(env.device),
            )[0].float().cpu()
        gt = dataset.original_masks(index) if protocol != "official" else None
        records.append(score_annotated_frame(logits, item, protocol=protocol, gt_original=gt))
    meter = RISMeter()
    for part in all_gather_objects(records, env):
        for i, u in part:
            meter.update_counts(i, u)
    model.train(was_training)
    result = meter.compute()
    result["protocol"] = f"annotated frames ({protocol})"
    return result


def forward_visual(
    model: nn.Module, visual: Tensor, input_ids: Tensor, attention_mask: Tensor, text_features: Tensor | None = None
) -> Tensor:
    """Logits for an image batch (B, 3, H, W) or a clip batch (B, T, 3, H, W) -> (B, T, 2, H, W).

    An image model given clips runs their frames as one batch with each expression repeated T
    times (the per-frame baseline of paper Table 8; official ``evaluate_single_frames``).
    ``text_features`` (B, L, C_l), when given, replace the text encoder (cached features)."""
    core = model.module if isinstance(model, DistributedDataParallel) else model
    if visual.dim() == 5 and not core.config.video:
        b, t = visual.shape[:2]
        feats = None if text_features is None else text_features.repeat_interleave(t, 0)
        logits = forward_visual(
            model, visual.flatten(0, 1), input_ids.repeat_interleave(t, 0), attention_mask.repeat_interleave(t, 0), feats
        )
        return logits.view(b, t, *logits.shape[1:])
    if text_features is not None:
        return model(visual, text_features=text_features, text_mask=attention_mask)
    return model(visual, input_ids, attention_mask)


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


def _collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    if "video" in batch[0]:
        from ..data.ytvos import collate_video

        return collate_video(batch)
    from ..data.refer import collate_refer

    return collate_refer(batch)


# ----------------------------------------------------------------------------------------------
# run folder, files, checkpoint contents
# ----------------------------------------------------------------------------------------------
def existing_run_files(out: Path) -> list[Path]:
    """The files of a run in ``out``; empty when ``out`` holds no run (a log folder alone is
    not a run: it is what an interrupted start may leave)."""
    found = [out / name for name in RUN_FILES if (out / name).exists()]
    return found if any(p.name != "tensorboard" for p in found) else []


def prepare_output_dir(out: Path, resume: str | Path | None, overwrite: bool, env: DistEnv) -> None:
    """Refuse to mix two runs in one folder: a folder holding a run needs ``--resume`` (continue
    it) or ``--overwrite`` (delete its files first: no stale best model beside a new final one).
    Every rank checks before rank 0 changes anything."""
    import shutil

    if out.exists() and not out.is_dir():
        raise ConfigError(f"train.output_dir {out} is a file, not a folder")
    found = existing_run_files(out)
    if found and resume is None and not overwrite:
        names = ", ".join(p.name for p in found[:3])
        raise ConfigError(
            f"train.output_dir {out} already holds a run ({names}); continue it with --resume {out}, "
            f"start again with --overwrite (deletes that run's files), or choose another train.output_dir"
        )
    if resume is not None and overwrite:
        raise ConfigError("--resume continues the run in train.output_dir and --overwrite deletes it: give one of them")
    if resume is not None:
        ckpt = Path(resume)
        if not (ckpt / "last.pt" if ckpt.is_dir() else ckpt).is_file():
            raise CheckpointError(f"resume checkpoint {ckpt / 'last.pt' if ckpt.is_dir() else ckpt} does not exist")
    if resume is not None and found:
        ckpt = Path(resume)
        ckpt_dir = ckpt if ckpt.is_dir() else ckpt.parent
        if ckpt_dir.resolve() != out.resolve():
            raise ConfigError(
                f"train.output_dir {out} holds another run than the one resumed from {resume}; resume into "
                f"train.output_dir={ckpt_dir} or an empty folder"
            )
    barrier(env)
    if env.is_main:
        if overwrite:
            for path in found:
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / f".lavt-write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise ConfigError(f"cannot write to train.output_dir {out}: {e.strerror or e}") from None
    barrier(env)


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


def frozen_text_encoder_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the text encoder that training never changes (frozen parameters and
    buffers): rebuilt from the model config on resume, so checkpoints need not carry them."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    return {k for k in model.state_dict() if k.startswith("text_encoder.") and k not in trainable}


def _plain(obj: Any) -> Any:
    """Metrics as plain Python numbers (NumPy scalars would not load with weights_only=True)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj



# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------
class Trainer:
    def __init__(
        self,
        cfg: RunConfig,
        resume: str | Path | None = None,
        env: DistEnv | None = None,
        desc: str = "train",
        progress: bool = True,
        overwrite: bool = False,
    ):
        self.cfg = cfg
        self.desc, self.progress = desc, progress
        t = cfg.train
        if t.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"train.precision={t.precision!r} is not one of fp32, bf16, fp16")
        self.env = env or init_distributed(t.device)
        if t.precision == "fp16" and self.env.device.type != "cuda":
            raise ConfigError("train.precision=fp16 needs CUDA; use bf16 on CPU")
        warn_if_slow(t.precision, self.env.device)
        torch.manual_seed(t.seed + self.env.rank)
        np.random.seed(t.seed + self.env.rank)
        self.out = Path(t.output_dir)
        prepare_output_dir(self.out, resume, overwrite, self.env)

        self.model = build_model(cfg).to(self.env.device)
        # saved with every model directory: `lavt predict` then runs the model at its training size
        self.model.preprocessing = Preprocessing(image_size=cfg.data.image_size)
        freeze_untrained(self.model, cfg)
        # frozen text-encoder weights are rebuilt from the config, not stored in each checkpoint
        self.frozen_keys = frozen_text_encoder_keys(self.model)
        own = self.model.state_dict()
        self.frozen_fingerprint = fingerprint((k, own[k]) for k in self.frozen_keys)
        for stage in self.model.backbone.stages:
            stage.activation_checkpointing = t.activation_checkpointing
        self.text_cache = TextFeatureCache(self.model) if t.cache_text_features else None
        self.tokenizer = make_tokenizer(self.model)
        self.train_set, self.val_set = build_datasets(cfg, self.tokenizer)
        check_files_exist(self.train_set, self.val_set)
        self.joint = cfg.data.name == "joint"
        self.loss_fn = build_loss(t.loss)

        world_batch = t.batch_size * self.env.world_size
        if self.joint:
            from ..data.joint import batches_per_epoch

            n_batches = batches_per_epoch(self.train_set, t.batch_size, cfg.data.image_ratio, self.env.world_size)
            self.steps_per_epoch = n_batches // t.grad_accum
        else:
            self.steps_per_epoch = (len(self.train_set) // world_batch) // t.grad_accum
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"train split has {len(self.train_set)} samples: fewer than one step of "
                f"batch {t.batch_size} x {self.env.world_size} process(es) x grad_accum {t.grad_accum}"
            )
        self.total_steps = self.steps_per_epoch * t.epochs  # the LR schedule always spans the full run
        self.stop_step = self.total_steps if t.max_steps is None else min(self.total_steps, t.max_steps)

        self.ddp_model: nn.Module = self.model
        if self.env.distributed:
            if t.sync_bn and self.env.device.type == "cuda":
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            m = cfg.model
            self.ddp_model = DistributedDataParallel(
                self.model,
                device_ids=[self.env.device] if self.env.device.type == "cuda" else None,
                # a unified model trained single-stream leaves one Swin path idle in each batch
                find_unused_parameters=m.unified and m.unified_train_stream == "single",
            )
        self.optimizer = torch.optim.AdamW(param_groups(self.model, t.weight_decay), lr=t.lr, betas=(0.9, 0.999), eps=1e-8)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, poly_schedule(self.total_steps, t.lr_power))
        self.scaler = torch.amp.GradScaler("cuda", enabled=t.precision == "fp16")
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.best_oiou = -1.0  # best validation score: oIoU (images) or J&F (videos)
        self.history: dict[str, list] = {"train": [], "val": []}
        self._saved_step = -1  # the step last.pt holds
        if resume is not None:
            self._load(resume)
        # written once everything checked out: a failed start leaves no run behind
        self.writer = self._tensorboard()
        if self.env.is_main:
            atomic_write_text(self.out / "config.yaml", yaml_dump(cfg.to_dict()))

    # -- state ---------------------------------------------------------------------------------
    def _tensorboard(self):
        if not self.env.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is an optional extra
            return None
        return SummaryWriter(str(self.out / "tensorboard"))

    def state_dict(self) -> dict[str, Any]:
        """What ``last.pt`` / ``best.pt`` hold: tensors, numbers, strings and plain containers."""
        return {
            "model": {k: v for k, v in self.model.state_dict().items() if k not in self.frozen_keys},
            "frozen_text_encoder": {"keys": sorted(self.frozen_keys), "sha256": self.frozen_fingerprint},
            "model_config": self.cfg.model.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "best_oiou": float(self.best_oiou),
            "history": _plain(self.history),
            "run_config": self.cfg.to_dict(),
        }

    def _load(self, path: str | Path) -> None:
        state = load_training_checkpoint(path)
        if state.get("model_config") != self.cfg.model.to_dict():
            raise CheckpointError(
                f"cannot resume from {path}: it was trained with another model architecture than this config"
            )
        frozen = state.get("frozen_text_encoder", {"keys": [], "sha256": fingerprint([])})
        if sorted(frozen["keys"]) != sorted(self.frozen_keys) or frozen["sha256"] != self.frozen_fingerprint:
            encoder = self.cfg.model.text_encoder.name_or_path if self.cfg.model.text_encoder else "none"
            raise CheckpointError(
                f"cannot resume from {path}: the frozen text-encoder weights this run builds (model.text_encoder "
                f"{encoder!r}, train.text_encoder_layers={self.cfg.train.text_encoder_layers!r}) differ from the ones "
                "it was trained with; resume with the same text encoder and settings"
            )
        own = self.model.state_dict()
        load_state_dict_strict(self.model, {**{k: own[k] for k in self.frozen_keys}, **state["model"]}, source=str(path))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.best_oiou, self.history = state["best_oiou"], state["history"]
        self._saved_step = self.step

    def save(self, name: str = "last.pt") -> None:
        if self.env.is_main:
            save_atomic(self.state_dict(), self.out / name)
        if name == "last.pt":
            self._saved_step = self.step

    # -- loop ----------------------------------------------------------------------------------
    def _loader(self, epoch: int, skip_batches: int) -> DataLoader:
        t = self.cfg.train
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(epoch)
        if self.joint:
            from ..data.joint import JointBatchSampler

            batches = JointBatchSampler(
                self.train_set, t.batch_size, self.cfg.data.image_ratio, t.seed, epoch,
                self.env.rank, self.env.world_size, skip=skip_batches,
            )
            return DataLoader(self.train_set, batch_sampler=batches, num_workers=self.cfg.data.num_workers, collate_fn=_collate)
        sampler = EpochSampler(len(self.train_set), t.seed, epoch, self.env, skip=skip_batches * t.batch_size)
        return DataLoader(
            self.train_set,
            batch_size=t.batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=self.cfg.data.num_workers,
            collate_fn=_collate,
            # its own generator: creating the iterator must not consume the global RNG, or a
            # resumed run (which creates one mid-epoch) would diverge from an uninterrupted one
            generator=torch.Generator().manual_seed(t.seed * 100_003 + epoch),
        )

    def train_step(self, batches: list[dict[str, Any]]) -> float:
        """One optimizer step over ``grad_accum`` micro-batches; returns the mean loss."""
        t, dev = self.cfg.train, self.env.device
        total = 0.0
        for k, batch in enumerate(batches):
            sync = k == len(batches) - 1
            ctx = self.ddp_model.no_sync() if (self.env.distributed and not sync) else nullcontext()
            with ctx:
                visual = batch["video"] if "video" in batch else batch["image"]
                # training only: evaluation keeps the official fixed length (bit-for-bit numbers)
                input_ids, attention_mask = trim_padding(batch["input_ids"], batch["attention_mask"])
                input_ids, attention_mask = input_ids.to(dev), attention_mask.to(dev)
                text_features = self.text_cache(input_ids, attention_mask) if self.text_cache is not None else None
                with autocast(t.precision, dev):
                    logits = forward_visual(self.ddp_model, visual.to(dev), input_ids, attention_mask, text_features)
                target = batch["target"].to(dev)
                if logits.dim() == 5:  # video: every frame of every clip is supervised (official)
                    logits, target = logits.flatten(0, 1), target.flatten(0, 1)
                loss = self.loss_fn(logits.float(), target) / len(batches)
                self.scaler.scale(loss).backward()
            total += loss.item()
        if t.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        return total

    def fit(self) -> dict[str, Any]:
        """Train to the end (or ``train.max_steps``), then write ``final_model/`` and
        ``history.json``. SIGINT / SIGTERM stop after the current optimizer step with a checkpoint
        (every rank at the same step) and raise :class:`TrainingInterrupted`."""
        t = self.cfg.train
        bar = progress_bar(None, self.progress and self.env.is_main, total=self.stop_step, initial=self.step, desc=self.desc)
        batches_per_epoch = self.steps_per_epoch * t.grad_accum  # leftovers never make a full step
        try:
            with StopRequests(announce=self.env.is_main) as stop:
                while self.step < self.stop_step and self.epoch < t.epochs:
                    self._stop_if_asked(stop)
                    self.model.train()
                    pending: list[dict[str, Any]] = []
                    for batch in self._loader(self.epoch, self.batch_in_epoch):
                        if self.batch_in_epoch >= batches_per_epoch:
                            break
                        pending.append(batch)
                        self.batch_in_epoch += 1
                        if len(pending) < t.grad_accum:
                            continue
                        start = time.perf_counter()
                        loss = self.train_step(pending)
                        pending = []
                        self._log_step(loss, time.perf_counter() - start, bar)
                        if self.step % t.checkpoint_every == 0:
                            self.save()
                        if self.step >= self.stop_step:
                            break
                        self._stop_if_asked(stop)
                    if self.batch_in_epoch < batches_per_epoch:
                        break  # train.max_steps reached inside the epoch
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    if t.val_every and (self.epoch % t.val_every == 0 or self.epoch == t.epochs):
                        result = self._validate()
                        if self.progress and self.env.is_main:
                            video = "J&F" in result
                            bar.write(
                                f"{self.desc}: epoch {self.epoch} step {self.step}: val "
                                + (f"J&F {result['J&F']:.2f} " if video else "")
                                + f"oIoU {result['oIoU']:.2f} mIoU {result['mIoU']:.2f} "
                                f"(best {'score' if 'score' in result else 'J&F' if video else 'oIoU'} {self.best_oiou:.2f})"
                            )
                    self.save()
                self.save()
                if self.env.is_main:
                    # the weights the run ended with, ready for `lavt predict` / `lavt eval`
                    self.model.save_pretrained(self.out / "final_model", tokenizer=self.tokenizer)
        finally:
            bar.close()
            if self.writer is not None:
                self.writer.close()
            if self.env.is_main:
                atomic_write_text(self.out / "history.json", json.dumps(_plain(self.history), indent=1))
        return self.history

    def _stop_if_asked(self, stop: StopRequests) -> None:
        """After a finished step: if any rank got SIGINT / SIGTERM, every rank saves (rank 0
        writes) at this same step and stops. One tiny all-reduce per step keeps ranks in step."""
        signum = max_over_ranks(stop.signum, self.env)
        if not signum:
            return
        if self._saved_step != self.step:
            self.save()
        barrier(self.env)
        raise TrainingInterrupted(self.step, signum, str(self.out))

    def _log_step(self, loss: float, seconds: float, bar: Any) -> None:
        lr = self.optimizer.param_groups[0]["lr"]
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", epoch=self.epoch)
        if self.step % self.cfg.train.log_every == 0 or self.step == 1:
            self.history["train"].append({"step": self.step, "epoch": self.epoch, "loss": loss, "lr": lr, "s": seconds})
            if self.writer is not None:
                self.writer.add_scalar("train/loss", loss, self.step)
                self.writer.add_scalar("train/lr", lr, self.step)

    def _validate(self) -> dict[str, Any]:
        t = self.cfg.train
        model = self.ddp_model.module if self.env.distributed else self.model
        val_sets = self.val_set if isinstance(self.val_set, dict) else {"": self.val_set}
        parts = {
            name: evaluate(
                model, ds, self.env, batch_size=self.cfg.eval.batch_size, precision=t.precision,
                max_samples=t.val_max_samples, progress=self.progress,
            )
            for name, ds in val_sets.items()
        }
        if "" in parts:
            result = parts[""]
        else:  # joint: image oIoU and video J&F side by side; selection on their mean
            image, video = parts["image"], parts["video"]
            result = {
                "oIoU": image["oIoU"], "mIoU": image["mIoU"], "J": video["J"], "F": video["F"], "J&F": video["J&F"],
                "score": (image["oIoU"] + video["J&F"]) / 2, "image": image, "video": video,
            }
        keys = [k for k in ("oIoU", "mIoU", "J", "F", "J&F", "score") if k in result]
        self.history["val"].append({"step": self.step, "epoch": self.epoch, **{k: result[k] for k in keys}})
        if self.writer is not None:
            for k in keys:
                self.writer.add_scalar(f"val/{k}", result[k], self.step)
        # model selection: oIoU for images, J&F for videos, their mean for joint training
        score = result.get("score", result.get("J&F", result["oIoU"]))
        if score > self.best_oiou:
            self.best_oiou = score
            if t.keep_best:
                self.save("best.pt")
                if self.env.is_main:
                    self.model.save_pretrained(self.out / "best_model", tokenizer=self.tokenizer)
        barrier(self.env)
        return result

    def close(self) -> None:
        cleanup(self.env)


def train(cfg: RunConfig, resume: str | Path | None = None, overwrite: bool = False) -> dict[str, Any]:
    trainer = Trainer(cfg, resume=resume, overwrite=overwrite)
    try:
        return trainer.fit()
    finally:
        trainer.close()


def evaluate_checkpoint(
    cfg: RunConfig,
    model_spec: str,
    out: str | Path | None = None,
    image_size_given: bool = False,
    model_fields_given: set[str] | frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """``lavt eval``: every expression of ``cfg.eval.split``, official (or original) protocol for
    images, J&F for videos.

    The model is evaluated as loaded: the config's ``model`` section does not apply (a warning
    names the fields where it disagrees; an error when a field the user set on the command line,
    ``model_fields_given``, disagrees: that request cannot be honoured), and the input size is the model's own training size
    (its ``preprocessor_config.json``) unless ``image_size_given`` (``data.image_size=`` on the
    command line), which wins with a warning when it differs."""
    import dataclasses
    import warnings

    from ..errors import InputSizeWarning, LAVTWarning
    from ..predict import load_model

    env = init_distributed(cfg.train.device)
    try:
        model = load_model(model_spec).to(env.device)
        differences = config_differences(cfg.model, model.config)
        contradicted = [d for d in differences if d.split("=")[0].split(".")[0] in model_fields_given]
        if contradicted:
            raise ConfigError(
                f"lavt eval evaluates the model given with --model as it is, and {model_spec} has "
                + ", ".join(contradicted[:3])
                + ": drop the model.* override(s) or give a model that has them"
            )
        if differences:
            warnings.warn(
                f"the config's model section is not used: {model_spec} has "
                + ", ".join(differences[:4])
                + (f" and {len(differences) - 4} more" if len(differences) > 4 else "")
                + "; lavt eval evaluates the loaded model as it is",
                LAVTWarning,
                stacklevel=2,
            )
        own = model.preprocessing.image_size if model.preprocessing is not None else None
        size = cfg.data.image_size if (image_size_given or own is None) else own
        if image_size_given and own is not None and own != size:
            warnings.warn(
                f"evaluating at data.image_size={size} px but the model was trained at {own} px", InputSizeWarning,
                stacklevel=2,
            )
        d = dataclasses.replace(cfg.data, image_size=size)
        tokenizer = make_tokenizer(model)
        if d.name in VIDEO_DATASETS:
            dataset: Dataset = video_dataset(d, cfg.eval.split, "eval", tokenizer)
            if not getattr(getattr(dataset, "index", None), "has_annotations", True):
                # no ground truth (Ref-YouTube-VOS valid/test): write the CodaLab submission
                return write_video_submission(model, dataset, env, cfg, out)
        else:
            from ..data.refer import ReferSegmentation

            dataset = ReferSegmentation(
                d.root, d.dataset, d.split_by, split=cfg.eval.split, image_size=d.image_size, mode="eval",
                tokenizer=tokenizer, mask_mode=d.mask_mode, blank_expressions=d.blank_expressions,
            )
        if out is not None and Path(out).is_dir():
            raise ConfigError(f"--out {out} is a folder; give a file name for the metrics JSON (e.g. {Path(out) / 'metrics.json'})")
        result = evaluate(
            model, dataset, env, cfg.eval.batch_size, cfg.train.precision, cfg.eval.max_samples, cfg.eval.protocol
        )
        result.update(
            model=str(model_spec), dataset=d.dataset, split_by=d.split_by, split=cfg.eval.split, image_size=size
        )
        if out is not None and env.is_main:
            atomic_write_text(out, json.dumps(_plain(result), indent=2))
        return result
    finally:
        cleanup(env)


def config_differences(wanted: Any, actual: Any) -> list[str]:
    """``field=actual (config: wanted)`` for every architecture field where two LAVTConfigs
    differ; the text encoder by its settings (its path differs once saved in a model directory)."""
    a, b = wanted.to_dict(), actual.to_dict()
    out = []
    for key in a:
        if key == "text_encoder":
            ta, tb = a[key] or {}, b[key] or {}
            for sub in ("max_tokens", "truncation"):
                if ta.get(sub) != tb.get(sub) and ta and tb:
                    out.append(f"text_encoder.{sub}={tb.get(sub)!r} (config: {ta.get(sub)!r})")
            if bool(ta) != bool(tb):
                out.append(f"text_encoder={'yes' if tb else 'none'} (config: {'yes' if ta else 'none'})")
        elif a[key] != b.get(key):
            out.append(f"{key}={b.get(key)!r} (config: {a[key]!r})")
    return out


@torch.inference_mode()
def write_video_submission(model: nn.Module, dataset: Any, env: DistEnv, cfg: RunConfig, out: str | Path | None) -> dict[str, Any]:
    """Masks of every expression of an unannotated split in the Ref-YouTube-VOS submission
    layout (``Annotations/<video>/<exp_id>/<frame>.png``, 0/255 at the frame size), zipped when
    ``out`` ends in .zip (else written into the folder ``out``)."""
    from ..data.ytvos import logits_to_masks, write_submission, zip_submission

    if out is None:
        raise ConfigError(f"split {cfg.eval.split!r} has no ground truth: give --out sub.zip to write the submission")
    out = Path(out)
    folder = out.with_suffix("") if out.suffix == ".zip" else out
    model.eval()
    n = len(dataset) if cfg.eval.max_samples is None else min(cfg.eval.max_samples, len(dataset))
    for index in progress_bar(range(env.rank, n, env.world_size), env.is_main, desc="predict"):
        item = dataset[index]
        with autocast(cfg.train.precision, env.device):
            logits = forward_visual(
                model, item["video"][None].to(env.device), item["input_ids"][None].to(env.device),
                item["attention_mask"][None].to(env.device),
            )[0].float().cpu()
        sizes = item["orig_sizes"]
        masks = [logits_to_masks(logits[t : t + 1], sizes[t].tolist())[0].numpy() for t in range(logits.shape[0])]
        write_submission(folder, item["video_id"], item["exp_id"], item["frame_names"], masks)
    barrier(env)
    result: dict[str, Any] = {"submission": str(folder), "expressions": n, "split": cfg.eval.split}
    if out.suffix == ".zip" and env.is_main:
        zip_submission(folder, out)
        result["zip"] = str(out)
    return result


def lr_at(step: int, total: int, base_lr: float, power: float = 0.9) -> float:
    """The learning rate after ``step`` optimizer steps (for docs and tests)."""
    return base_lr * poly_schedule(total, power)(step)


__all__ = ["Trainer", "train", "evaluate", "param_groups", "poly_schedule", "lr_at", "EpochSampler"]
