"""Weights for unified LAVT (paper Sec. 3.2.3): the 2D path from an image model, the Video Swin
path from a video model, saved and loaded as one model directory like any other LAVT.

A unified model is a video LAVT (``video: true``) plus, per stage, 2D Swin blocks
``stages.{i}.blocks2d`` on the central frame (see ``docs/unified-lavt.md``). Everything else --
patch embedding, patch merging, 3D PWAMs, gates, output norms, decoder, text encoder -- exists
once and is shared by both paths, so:

* from a **video LAVT** of the same size, every key of the unified model but ``blocks2d`` is
  copied;
* from an **image LAVT** of the same widths, its Swin blocks become ``blocks2d`` (relative-
  position tables resized bicubically when the windows differ); the patch embedding (a 2D conv
  is a 1x4x4 3D conv), gates, output norms and decoder are copied too unless a video model
  supplies them; the image model's 2D PWAMs fit only a structure-1 (naive) unified model;
* from a **Swin ImageNet-22K** classification checkpoint the 2D path, and from a **Video Swin
  Kinetics** checkpoint the 3D path (:mod:`lavt.weights.official`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import LAVTConfig
from ..errors import CheckpointError
from ..models.lavt import LAVT


def _as_model(spec: LAVT | str | Path) -> LAVT:
    if isinstance(spec, LAVT):
        return spec
    from ..predict import load_model

    return load_model(str(spec))


def _check_widths(unified: LAVTConfig, other: LAVTConfig, what: str) -> None:
    for field in ("embed_dim", "depths", "num_heads", "patch_size"):
        if getattr(unified, field) != getattr(other, field):
            raise CheckpointError(
                f"{what} has {field}={getattr(other, field)} but the unified model {getattr(unified, field)}"
            )


def init_unified(
    model: LAVT,
    image_model: LAVT | str | Path | None = None,
    video_model: LAVT | str | Path | None = None,
) -> dict[str, list[str]]:
    """Fill a unified model from an image LAVT (2D path) and/or a video LAVT (3D path and the
    shared parts). Checks every shape before touching the model. Returns ``{'from_video',
    'from_image', 'resized', 'untouched'}`` lists of our keys."""
    from .swin import resize_relative_position_bias_table

    cfg = model.config
    if not cfg.unified:
        raise CheckpointError("init_unified needs a unified model (config unified: true)")
    own = model.state_dict()
    new: dict[str, Tensor] = {}
    report: dict[str, list[str]] = {"from_video": [], "from_image": [], "resized": [], "untouched": []}

    if image_model is not None:
        image = _as_model(image_model)
        if image.config.video:
            raise CheckpointError("image_model is a video LAVT; give an image LAVT for the 2D path")
        _check_widths(cfg, image.config, "the image model")
        for key, value in image.state_dict().items():
            target = key
            if m := re.match(r"backbone\.stages\.(\d+)\.blocks\.(.*)", key):
                target = f"backbone.stages.{m.group(1)}.blocks2d.{m.group(2)}"
            elif key == "backbone.patch_embed.proj.weight":
                value = value.unsqueeze(2)  # Conv2d (C,3,p,p) -> Conv3d (C,3,1,p,p)
            elif ".fusion." in key and cfg.pwam_structure != 1:
                continue  # 2D PWAM shapes do not fit a 3D PWAM
            if target not in own:
                continue
            if target.endswith("relative_position_bias_table") and value.shape != own[target].shape:
                value = resize_relative_position_bias_table(value, own[target].shape[0])
                report["resized"].append(target)
            if value.shape != own[target].shape:
                raise CheckpointError(
                    f"image model {key} {tuple(value.shape)} does not fit unified {target} {tuple(own[target].shape)}"
                )
            new[target] = value
            report["from_image"].append(target)

    if video_model is not None:
        video = _as_model(video_model)
        if not video.config.video or video.config.unified:
            raise CheckpointError("video_model must be a (non-unified) video LAVT")
        _check_widths(cfg, video.config, "the video model")
        for key, value in video.state_dict().items():
            if key not in own:
                continue
            if value.shape != own[key].shape:
                raise CheckpointError(
                    f"video model {key} {tuple(value.shape)} does not fit the unified model {tuple(own[key].shape)}"
                )
            new[key] = value
            report["from_video"].append(key)
        report["from_image"] = [k for k in report["from_image"] if ".blocks2d." in k or k not in report["from_video"]]

    with torch.no_grad():
        for key, value in new.items():
            own[key].copy_(value)
    report["untouched"] = sorted(set(own) - set(new))
    return report


def init_unified_2d_from_swin(model: LAVT, path_or_state: str | Path | dict[str, Any]) -> dict[str, list[str]]:
    """The 2D path of a unified model from a Swin classification checkpoint (ImageNet-22K),
    through the image initialiser on a same-size image LAVT."""
    from .swin import init_backbone_from_swin

    cfg = model.config
    fields = {f: getattr(cfg, f) for f in ("embed_dim", "depths", "num_heads", "window_size", "patch_size", "mlp_ratio")}
    image = LAVT(LAVTConfig(**fields, lang_dim=cfg.lang_dim, decoder_hidden=cfg.decoder_hidden))
    init_backbone_from_swin(image, path_or_state)
    blocks_only = {k: v for k, v in image.state_dict().items() if ".blocks." in k}
    own = model.state_dict()
    loaded = []
    with torch.no_grad():
        for key, value in blocks_only.items():
            target = key.replace(".blocks.", ".blocks2d.", 1)
            own[target].copy_(value)
            loaded.append(target)
    return {"loaded": loaded}
