"""The benchmark protocols: how a model is scored on a referring image set (oIoU / mIoU / P@K,
official or original-resolution), on referring videos (J, F, J&F per expression, DAVIS
definitions) and on annotated frames (A2D-Sentences / JHMDB-Sentences). One process or many
(each rank scores its share; results are gathered before the metrics are computed).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from ..data.batch import collate
from ..runtime.distributed import (
    DistEnv,
    all_gather_objects,
)
from ..runtime.precision import autocast
from ..runtime.progress import progress_bar
from .metrics import RISMeter


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
    from .metrics import score_prediction

    env = env or DistEnv(device=next(model.parameters()).device)
    if getattr(dataset, "scores_annotated_frames", False):  # A2D / JHMDB: one annotated frame per clip
        return evaluate_annotated(model, dataset, env, precision, max_samples, protocol, progress)
    if hasattr(dataset, "original_masks"):  # video clips: J&F
        return evaluate_video(model, dataset, env, precision, max_samples, progress)
    was_training = model.training
    model.eval()
    n = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    indices = list(range(n))[env.rank :: env.world_size]
    # page-locked batches on a GPU run: the non_blocking copies below then overlap the previous batch's work
    loader = DataLoader(
        torch.utils.data.Subset(dataset, indices), batch_size=batch_size, collate_fn=collate, pin_memory=env.pin_memory
    )
    records = []
    for batch in progress_bar(loader, progress and env.is_main, desc="eval", leave=False):
        with autocast(precision, env.device):
            logits = model(
                batch["image"].to(env.device, non_blocking=True),
                batch["input_ids"].to(env.device, non_blocking=True),
                batch["attention_mask"].to(env.device, non_blocking=True),
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
    from .video_metrics import JFMeter

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
    from ..data.annotated_frame import score_annotated_frame

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


@torch.inference_mode()
def evaluate_davis_toolkit(
    model: nn.Module,
    dataset: Any,
    env: DistEnv | None = None,
    precision: str = "fp32",
    max_samples: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Ref-DAVIS17 as the field reports it (:mod:`lavt.evaluation.davis_toolkit`): per expression
    set and video, the objects' predictions merged into one index map per frame and scored by the
    davis2017 toolkit's unsupervised protocol (Hungarian matching to the ground-truth objects);
    J, F, J&F per set over its objects, and their mean over the sets. Videos are split across
    ranks; ``max_samples`` keeps the first videos whose expressions fit in that many."""
    import torch.nn.functional as F

    from .davis_toolkit import MergedPrediction, score_sequence, summarise

    env = env or DistEnv(device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    by_video: dict[str, list[int]] = {}
    for index in range(len(dataset)):
        by_video.setdefault(dataset.sample_info(index)["video_id"], []).append(index)
    videos, taken = [], 0
    for video, indices in by_video.items():
        if max_samples is not None and taken + len(indices) > max_samples and videos:
            break
        videos.append(video)
        taken += len(indices)
    records: list[tuple[str, str, np.ndarray, np.ndarray]] = []  # (set, video, J (n, T), F (n, T))
    for video in progress_bar(videos[env.rank :: env.world_size], progress and env.is_main, desc="eval", leave=False):
        merged: dict[str, MergedPrediction] = {}
        frame_names: list[str] = []
        for index in by_video[video]:  # expression order: objects in the order the toolkit's index uses
            item = dataset[index]
            frame_names = item["frame_names"]
            with autocast(precision, env.device):
                logits = forward_visual(
                    model, item["video"][None].to(env.device), item["input_ids"][None].to(env.device),
                    item["attention_mask"][None].to(env.device),
                )[0].float().cpu()  # (T, 2, S, S)
            size = tuple(int(v) for v in item["orig_sizes"][0].tolist())
            probs = F.interpolate(logits, size=size, mode="bilinear", align_corners=True).softmax(1)[:, 1].numpy()
            label = item.get("type") or ""
            merged.setdefault(label, MergedPrediction(probs.shape)).add(probs)
        gt = np.stack([dataset.index.load_annotation(video, f) for f in frame_names])
        for label, prediction in merged.items():
            j, f = score_sequence(gt, prediction.index)
            records.append((label, video, j, f))
    per_set: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for part in all_gather_objects(records, env):
        for label, _, j, f in part:
            per_set.setdefault(label, []).extend(zip(j, f))
    model.train(was_training)
    groups = {label: summarise(objects) for label, objects in sorted(per_set.items())}
    result: dict[str, Any] = {
        k: float(np.mean([g[k] for g in groups.values()])) if groups else float("nan") for k in ("J", "F", "J&F")
    }
    result.update(
        groups=groups, n_sets=len(groups), videos=len(videos),
        protocol="davis2017 unsupervised (merged objects, Hungarian matching), mean over the expression sets",
    )
    return result
