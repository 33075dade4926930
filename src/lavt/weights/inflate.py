"""A video LAVT initialised from an image LAVT (official LAVT-RS ``--pretrained2d_lavt_weights``):
patch kernel unsqueezed over time, position tables tiled over time, PWAMs copied or dropped.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from torch import Tensor

from ..errors import CheckpointError, ConfigError
from ..models.lavt import LAVT
from .official import (
    _BERT_NONPERSISTENT_BUFFERS,
    convert_image_state_dict,
    read_checkpoint,
    split_official_checkpoint,
)
from .swin import (
    _TABLE_SUFFIX,
    _fits_or_problems,
    _stage_depths,
    inflate_relative_position_bias_table,
)

logger = logging.getLogger(__name__)


# image-PWAM key (after ``fusion.``) -> the 3D-PWAM projection whose 1x1x1 branches it may seed
_PWAM2D_TO_3D = {
    "vis_project.0.": "vis_project",
    "query.": "query",
    "out.": "out",
    "project_mm.0.": "project_mm",
}


_OUR_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar")


def _pwam3d_targets(own: dict[str, Tensor], stage: str, rest: str) -> list[str]:
    """Video keys a 2D-PWAM key ``stages.{stage}.fusion.{rest}`` may seed in a 3D PWAM: the word
    projections (key/value) as they are, and the single-Linear (1x1x1) branches of omega_m/q/w/o."""
    prefix = f"backbone.stages.{stage}.fusion."
    if rest.startswith(("key.", "value.")):
        return [prefix + rest] if prefix + rest in own else []
    for old, name in _PWAM2D_TO_3D.items():
        if rest.startswith(old):
            param = rest[len(old) :]
            branches = sorted(
                {m.group(1) for k in own if (m := re.match(rf"{re.escape(prefix)}{name}\.branches\.(\d+)\.", k))}
            )
            targets = []
            for b in branches:
                conv = f"{prefix}{name}.branches.{b}.convs"
                weight = own.get(f"{conv}.0.proj.weight")
                if weight is not None and weight.dim() == 2 and f"{conv}.1.proj.weight" not in own:
                    targets.append(f"{conv}.0.proj.{param}")
            return [t for t in targets if t in own]
    return []


def _image_lavt_state(source: LAVT | str | Path) -> tuple[dict[str, Tensor], str, dict[str, Any] | None]:
    """-> (image LAVT state dict in our key layout, description, frozen text-encoder record).
    ``source``: an ``LAVT``, a model directory (``LAVT.from_pretrained``), our training checkpoint
    (``{'model': our keys}``; its frozen text-encoder weights are not stored, only their keys and
    fingerprint, returned third), or an official LAVT-RIS checkpoint (converted key by key: no
    model, and no BERT architecture, is built)."""
    if isinstance(source, LAVT):
        if source.config.video:
            raise CheckpointError("the source model is a video LAVT; inflate_image_lavt needs an image LAVT")
        return dict(source.state_dict()), "image LAVT model", None
    if not isinstance(source, (str, Path)):
        raise CheckpointError(
            f"image LAVT source must be an LAVT, a model directory or a checkpoint path, not {type(source).__name__}"
        )
    path = Path(source)
    if path.is_dir() or not (path.exists() or path.suffix in _OUR_CHECKPOINT_SUFFIXES):
        model = LAVT.from_pretrained(path)  # clear errors for a missing directory or a hub id
        return _image_lavt_state(model)[0], str(path), None
    ckpt = read_checkpoint(path)
    inner = ckpt.get("model", ckpt.get("state_dict", ckpt))
    if isinstance(inner, dict) and any(str(k).removeprefix("module.").startswith("backbone.stages.") for k in inner):
        state = {k.removeprefix("module."): v for k, v in inner.items() if isinstance(v, Tensor)}  # ours
    else:
        model_sd, bert_sd = split_official_checkpoint(ckpt, source=str(path))
        state = convert_image_state_dict(model_sd)
        for k, v in (bert_sd or {}).items():
            state[f"text_encoder.{k}"] = v
    weight = state.get("backbone.patch_embed.proj.weight")
    if weight is None:
        raise CheckpointError(f"{path}: no backbone.patch_embed.proj.weight: not a LAVT checkpoint")
    if weight.dim() != 4:
        raise CheckpointError(
            f"{path}: backbone.patch_embed.proj.weight {tuple(weight.shape)} is a Conv3d kernel: "
            "a video LAVT checkpoint, not an image one"
        )
    return state, str(path), ckpt.get("frozen_text_encoder")


def inflate_image_lavt(
    video_model: LAVT, image_model_or_path: LAVT | str | Path, drop_fusion: bool | None = None
) -> dict[str, list[str]]:
    """Initialise a video LAVT from an image LAVT (official LAVT-RS ``--pretrained2d_lavt_weights``
    and, for a 3D PWAM, ``--pretrained2d_lavt_weights_for_a_3d_model``).

    ``image_model_or_path``: an image ``LAVT``, our model directory (``save_pretrained``), our
    training checkpoint, or an official LAVT-RIS ``lavt`` / ``lavt_one`` checkpoint (its BERT
    weights become ``text_encoder.*``).

    * patch embedding: the (C, 3, p, p) kernel is unsqueezed to (C, 3, 1, p, p) (no division);
    * relative-position tables: bicubic-resized to the video spatial window if needed, then tiled
      2wt-1 times (:func:`inflate_relative_position_bias_table`), so a one-frame clip sees exactly
      the image model's spatial bias;
    * PWAM (``.fusion.``): copied when the video model's fusion is the 2D module (structure 1, the
      "naive" video LAVT, or fusion="pooled"); dropped (left at init) for a 3D PWAM. ``drop_fusion``
      overrides: True drops them always; False with a 3D PWAM copies the word projections
      (key/value) and seeds every 1x1x1 branch of each 3D projection (omega_m/q/w/o) with the 2D
      Linear weights (the 3x3x3 branches, and a concat structure's reduction, stay at init) -- an
      extension, not official, and not equivalent to the image PWAM (the parallel branches are summed);
    * everything else (blocks, patch merging, gates, out_norms, decoder) is copied and must match
      in name and shape; the text encoder is copied if both models have one of equal keys and shapes
      (otherwise it is skipped with a warning and the video model keeps its own).

    Any architecture or shape mismatch in the shared part raises one CheckpointError line and
    leaves the video model unchanged. Returns ``{'loaded': video keys set, 'resized': video tables
    whose spatial window was resized, 'dropped': image fusion keys not used, 'ignored': other
    image keys not used (a text encoder the video model lacks or that differs), 'missing': video
    keys left at their initial values}``.
    """
    cfg = video_model.config
    if not cfg.video:
        raise ConfigError("inflate_image_lavt needs a video LAVT (config.video=True) to initialise")
    image_sd, source, frozen = _image_lavt_state(image_model_or_path)
    own = video_model.state_dict()
    fusion_3d = any(re.search(r"\.fusion\.\w+\.branches\.", k) for k in own)  # a PWAM3d
    if drop_fusion is None:
        drop_fusion = fusion_3d

    patch = image_sd["backbone.patch_embed.proj.weight"]
    depths = _stage_depths(image_sd, r"backbone\.stages\.{i}")
    heads = []
    for i in range(len(depths)):
        table = image_sd.get(f"backbone.stages.{i}.blocks.0.{_TABLE_SUFFIX}")
        if table is None:
            raise CheckpointError(f"image LAVT {source} lacks backbone.stages.{i}.blocks.0.{_TABLE_SUFFIX}")
        heads.append(int(table.shape[1]))
    found = dict(embed_dim=int(patch.shape[0]), depths=tuple(depths), num_heads=tuple(heads))
    patch_what = f"backbone.patch_embed.proj.weight {tuple(patch.shape)}"
    problems = _fits_or_problems(found, cfg, "backbone.stages.{i}", patch_what)
    if problems:
        raise CheckpointError(
            f"image LAVT {source} does not fit the video model (image depths {found['depths']}, heads "
            f"{found['num_heads']}, embed_dim {found['embed_dim']}; video {cfg.depths}, {cfg.num_heads}, "
            f"{cfg.embed_dim}): " + "; ".join(problems)
        )

    new_state: dict[str, Tensor] = {}
    resized, dropped, ignored, unexpected, mismatched = [], [], [], [], []
    for key, value in image_sd.items():
        if key.startswith("text_encoder."):
            continue  # handled as a unit below
        m = re.match(r"backbone\.stages\.(\d+)\.fusion\.(.*)", key)
        if m and drop_fusion:
            dropped.append(key)
            continue
        if m and fusion_3d:  # drop_fusion=False: seed the 3D PWAM's 1x1x1 branches
            targets = _pwam3d_targets(own, *m.groups())
            if not targets or any(own[t].shape != value.shape for t in targets):
                dropped.append(key)
            else:
                new_state.update({t: value for t in targets})
            continue
        ours = key
        if key == "backbone.patch_embed.proj.weight":
            value = value.unsqueeze(2)  # (C, 3, p, p) -> (C, 3, 1, p, p), no division
        elif key.endswith(_TABLE_SUFFIX) and key in own:
            if value.shape[0] != (2 * cfg.window_size - 1) ** 2:
                resized.append(key)
            try:
                value = inflate_relative_position_bias_table(value, cfg.temporal_window, cfg.window_size)
            except CheckpointError as e:
                raise CheckpointError(f"image LAVT {source}: {key}: {e}") from None
        if ours not in own:
            unexpected.append(key)
        elif value.shape != own[ours].shape:
            shapes = f"image {tuple(image_sd[key].shape)} -> {tuple(value.shape)} vs video {tuple(own[ours].shape)}"
            mismatched.append(f"{key}: {shapes}")
        else:
            new_state[ours] = value

    # the text encoder: all or nothing
    image_text = {k: v for k, v in image_sd.items() if k.startswith("text_encoder.")}
    own_text = {k: v for k, v in own.items() if k.startswith("text_encoder.")}
    image_text = {  # buffers older transformers saved and modern HF does not keep
        k: v
        for k, v in image_text.items()
        if k in own_text or k.removeprefix("text_encoder.") not in _BERT_NONPERSISTENT_BUFFERS
    }
    if frozen and frozen.get("keys"):
        # our training checkpoint: its frozen encoder weights were not stored; the video model's
        # own ones stand in when they are the very same tensors (the stored fingerprint says so)
        from ..engine.checkpoint import fingerprint

        absent = set(frozen["keys"])
        if absent <= own_text.keys() and fingerprint((k, own[k]) for k in absent) == frozen.get("sha256"):
            image_text.update({k: own[k] for k in absent if k not in image_text})
    if image_text and own_text:
        if image_text.keys() == own_text.keys() and all(v.shape == own_text[k].shape for k, v in image_text.items()):
            new_state.update(image_text)
        else:
            ignored += list(image_text)
            diff = sorted(image_text.keys() ^ own_text.keys()) or [
                k for k, v in image_text.items() if v.shape != own_text[k].shape
            ]
            logger.warning(
                "inflate_image_lavt: the text encoders differ (e.g. %s); the video model keeps its own", diff[0]
            )
    else:
        ignored += list(image_text)

    shared_missing = [
        k for k in own if k not in new_state and not k.startswith("text_encoder.") and ".fusion." not in k
    ]
    if mismatched or unexpected or shared_missing:
        parts = []
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es), e.g. {mismatched[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} image key(s) the video model has no place for, e.g. {unexpected[0]}")
        if shared_missing:
            parts.append(f"{len(shared_missing)} video weight(s) the image model lacks, e.g. {shared_missing[0]}")
        raise CheckpointError(f"image LAVT {source} does not fit the video model: " + "; ".join(parts))
    if not drop_fusion and not fusion_3d:
        fusion_missing = [k for k in own if ".fusion." in k and k not in new_state]
        if fusion_missing:
            raise CheckpointError(
                f"image LAVT {source}: the video model's 2D fusion does not match the image model's "
                f"({len(fusion_missing)} weight(s) without a source, e.g. {fusion_missing[0]})"
            )

    result = video_model.load_state_dict(new_state, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    report = {
        "loaded": [k for k in own if k in new_state],
        "resized": resized,
        "dropped": dropped,
        "ignored": ignored,
        "missing": [k for k in own if k not in new_state],
    }
    logger.info(
        "inflated %d weights of the video model from %s (%d bias table(s) spatially resized, tiled x%d in time; "
        "%d fusion key(s) dropped, %d image key(s) ignored, %d video weight(s) left at init)",
        len(report["loaded"]),
        source,
        len(resized),
        2 * cfg.temporal_window - 1,
        len(dropped),
        len(ignored),
        len(report["missing"]),
    )
    return report
