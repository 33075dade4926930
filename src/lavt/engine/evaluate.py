"""``lavt eval``: a saved model scored on a dataset split with the benchmark protocol (or, for a
split without ground truth, the CodaLab submission written). The model is evaluated as loaded, at
the input size it was trained at.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ..errors import ConfigError
from ..evaluation.protocols import evaluate, evaluate_davis_toolkit, forward_visual
from ..io.torch_files import atomic_write_text
from ..runtime.distributed import (
    DistEnv,
    all_gather_objects,
    barrier,
    cleanup,
    init_distributed,
)
from ..runtime.precision import autocast
from ..runtime.progress import progress_bar
from .build import VIDEO_DATASETS, make_tokenizer, video_dataset
from .checkpoint import (
    plain_values,
)
from .config import RunConfig


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
        if d.name == "davis" and cfg.eval.davis_protocol == "toolkit":
            result = evaluate_davis_toolkit(model, dataset, env, cfg.train.precision, cfg.eval.max_samples)
        else:
            result = evaluate(
                model, dataset, env, cfg.eval.batch_size, cfg.train.precision, cfg.eval.max_samples, cfg.eval.protocol
            )
            if d.name == "davis":  # per object: the sets' J, F, J&F, then their mean (as the toolkit path)
                from ..data.davis import davis_protocol_summary

                result.update(davis_protocol_summary(result, sets=sorted(result.get("groups", {}))))
                result["protocol"] = "per_object: each expression against its own object; " + result["protocol"]
        result.update(
            model=str(model_spec), dataset=d.dataset, split_by=d.split_by, split=cfg.eval.split, image_size=size
        )
        if out is not None and env.is_main:
            atomic_write_text(out, json.dumps(plain_values(result), indent=2))
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
    videos, frames = set(), 0
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
        videos.add(item["video_id"])
        frames += len(masks)
    counts = all_gather_objects((sorted(videos), frames), env)
    barrier(env)
    result: dict[str, Any] = {
        "submission": str(folder), "split": cfg.eval.split, "expressions": n,
        "videos": len({v for vs, _ in counts for v in vs}), "masks": sum(f for _, f in counts),
    }
    if out.suffix == ".zip" and env.is_main:
        zip_submission(folder, out)
        result["zip"] = str(out)
    return result
