"""Starting a LAVT from classification weights, as the paper trains: the Swin part of an image
LAVT from a Microsoft Swin checkpoint (ImageNet-22K), of a video LAVT from a Video Swin one
(Kinetics, mmaction layout). Relative-position tables of another window are resized; every other
mismatch is one CheckpointError line, and the model changes only when everything fits.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import LAVTConfig
from ..errors import CheckpointError, ConfigError
from ..models.lavt import LAVT
from .official import _rename_stage_key, _video_window, read_checkpoint

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Swin ImageNet classification checkpoints (Microsoft Swin-Transformer) -> our backbone's Swin
# --------------------------------------------------------------------------------------------
# Checkpoint keys that carry no Swin weights LAVT uses: the classifier head, the final
# classification norm (and mmseg's per-stage out norms, which LAVT re-initialises), the
# buffers derived from the window size, and an absolute position embedding (LAVT has ape=False).
_SWIN_IGNORED = re.compile(r"^(head\.|norm\.|norm\d+\.|absolute_pos_embed$)|(relative_position_index|attn_mask)$")


_OUR_SWIN_KEY = re.compile(r"^backbone\.(patch_embed\.|stages\.\d+\.(blocks|downsample)\.)")


def _swin_state(path_or_state: str | Path | dict[str, Any]) -> tuple[dict[str, Tensor], list[str], str]:
    """-> (bare Swin state dict, checkpoint keys dropped because they are not under ``backbone.``, source).

    Accepts ``{'model': sd}`` (Microsoft classification files), ``{'state_dict': sd}`` (mmcls /
    mmseg), or a bare state dict; strips ``module.``; for UperNet-style files whose keys start
    with ``backbone.``, keeps only those and strips the prefix.
    """
    if isinstance(path_or_state, dict):
        ckpt, source = path_or_state, "Swin state dict"
    else:
        ckpt, source = read_checkpoint(path_or_state), str(path_or_state)
    state: Any = ckpt
    for wrapper in ("model", "state_dict"):
        if isinstance(ckpt.get(wrapper), dict):
            state = ckpt[wrapper]
            break
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, Tensor)}
    if not state:
        raise CheckpointError(f"{source}: no state dict found under 'model', 'state_dict' or at the top level")
    dropped: list[str] = []
    if any(k.startswith("backbone.") for k in state):
        dropped = [k for k in state if not k.startswith("backbone.")]
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    if "patch_embed.proj.weight" not in state or not any(k.startswith("layers.") for k in state):
        raise CheckpointError(
            f"{source}: not a Swin checkpoint (no 'patch_embed.proj.weight' and 'layers.*' keys; "
            f"first keys: {list(state)[:3]})"
        )
    return state, dropped, source


def _table_side(length: int, what: str) -> int:
    side = math.isqrt(length)
    if side * side != length or side % 2 == 0:
        raise CheckpointError(f"{what} has {length} rows, not (2 * window - 1)^2 for an integer window")
    return side


def swin_checkpoint_config(state: str | Path | dict[str, Any]) -> dict[str, Any]:
    """Swin architecture of a classification checkpoint: ``embed_dim``, ``depths``, ``num_heads``,
    ``window_size`` (from the relative-position tables; the largest over stages, since the
    classification Swin shrinks the window of a stage whose map is smaller than the window).

    ``state`` is a path, a wrapped checkpoint (``{'model': ...}``) or a bare state dict.
    """
    sd = _swin_state(state)[0]
    stages = sorted({int(m.group(1)) for k in sd if (m := re.match(r"layers\.(\d+)\.blocks\.\d+\.", k))})
    if not stages or stages != list(range(len(stages))):
        raise CheckpointError(f"Swin checkpoint: stages {stages} are not numbered 0..n-1 (layers.{{i}}.blocks.*)")
    depths, heads, windows = [], [], []
    for i in stages:
        blocks = {int(m.group(1)) for k in sd if (m := re.match(rf"layers\.{i}\.blocks\.(\d+)\.", k))}
        depths.append(max(blocks) + 1)
        key = f"layers.{i}.blocks.0.attn.relative_position_bias_table"
        table = sd.get(key)
        if table is None or table.dim() != 2:
            raise CheckpointError(
                f"Swin checkpoint lacks {key} (a Swin V2 or non-Swin checkpoint?); LAVT needs Swin V1 weights"
            )
        heads.append(int(table.shape[1]))
        windows.append((_table_side(table.shape[0], key) + 1) // 2)
    return dict(
        embed_dim=int(sd["patch_embed.proj.weight"].shape[0]),
        depths=tuple(depths),
        num_heads=tuple(heads),
        window_size=max(windows),
    )


def resize_relative_position_bias_table(table: Tensor, length: int) -> Tensor:
    """(L, heads) -> (length, heads): each head's sqrt(L) x sqrt(L) table resized bicubically
    (align_corners=False), as Swin does when fine-tuning at another window size."""
    old = _table_side(table.shape[0], "relative_position_bias_table")
    new = _table_side(length, "target relative_position_bias_table")
    heads = table.shape[1]
    image = table.detach().float().t().reshape(1, heads, old, old)
    image = torch.nn.functional.interpolate(image, size=(new, new), mode="bicubic", align_corners=False)
    return image.reshape(heads, new * new).t().contiguous().to(table.dtype)


def init_backbone_from_swin(model: LAVT, path_or_state: str | Path | dict[str, Any]) -> dict[str, list[str]]:
    """Initialise the Swin part of ``model.backbone`` (patch embedding, blocks, patch merging)
    from an official Microsoft Swin classification checkpoint (e.g. the ImageNet-22K weights the
    paper starts from). PWAMs, gates, output norms, the decoder and the text encoder are left as
    they are.

    Relative-position tables of another window size are resized bicubically (e.g. 22K window-12
    weights into a window-7 model: 23x23 -> 13x13 per head). Every other shape mismatch, a
    depth/width/heads mismatch, or a Swin key the model has no place for raises CheckpointError;
    the model is only modified when everything fits.

    Returns ``{'loaded': our keys, 'resized': our keys whose table was resized, 'ignored':
    checkpoint keys not used (head, final norm, relative_position_index, attn_mask, ...),
    'missing': our Swin keys the checkpoint does not provide}``.
    """
    if model.config.video:
        raise ConfigError(
            "init_backbone_from_swin initialises image models; for a video model use "
            "init_backbone_from_video_swin (Kinetics) or inflate_image_lavt, for a unified model "
            "lavt.weights.unified.init_unified_2d_from_swin"
        )
    state, ignored, source = _swin_state(path_or_state)
    found = swin_checkpoint_config(state)
    cfg = model.config
    problems = []
    if found["embed_dim"] != cfg.embed_dim:
        shape = tuple(state["patch_embed.proj.weight"].shape)
        problems.append(f"patch_embed.proj.weight {shape}: embed_dim {found['embed_dim']} vs model {cfg.embed_dim}")
    if len(found["depths"]) != len(cfg.depths):
        problems.append(f"{len(found['depths'])} stages vs model {len(cfg.depths)}")
    else:
        for i, (n_ckpt, n_model) in enumerate(zip(found["depths"], cfg.depths)):
            if n_ckpt != n_model:
                problems.append(
                    f"layers.{i} has {n_ckpt} blocks (layers.{i}.blocks.0..{n_ckpt - 1}) vs model {n_model}"
                )
        for i, (h_ckpt, h_model) in enumerate(zip(found["num_heads"], cfg.num_heads)):
            if h_ckpt != h_model:
                key = f"layers.{i}.blocks.0.attn.relative_position_bias_table"
                problems.append(f"{key} {tuple(state[key].shape)}: {h_ckpt} heads vs model {h_model}")
    _refuse_unfit(f"Swin checkpoint {source}", found, cfg, problems)

    own = model.state_dict()
    resized: list[str] = []

    def fit(key: str, ours: str, value: Tensor) -> Tensor:
        target = own[ours]
        if value.shape == target.shape:
            return value
        if key.endswith(_TABLE_SUFFIX) and value.dim() == target.dim() == 2 and value.shape[1] == target.shape[1]:
            resized.append(ours)
            return resize_relative_position_bias_table(value, target.shape[0])
        raise CheckpointError(
            f"Swin checkpoint {source}: {key} has shape {tuple(value.shape)} but the model's "
            f"{ours} has shape {tuple(target.shape)}"
        )

    new_state = _swin_weights_for(model, state, ignored, fit, f"Swin checkpoint {source}")
    return _load_swin_weights(
        model, new_state, resized, ignored, "Swin", source, f"{len(resized)} bias table(s) resized to window {cfg.window_size}"
    )


# --------------------------------------------------------------------------------------------
# Video LAVT initialisation: Video Swin (Kinetics, mmaction layout) -> our video backbone's Swin,
# and image LAVT -> video LAVT ("inflation", LAVT-RS --pretrained2d_lavt_weights[_for_a_3d_model])
# --------------------------------------------------------------------------------------------
_TABLE_SUFFIX = "attn.relative_position_bias_table"


def _video_window_candidates(rows: int, index_side: int | None) -> list[tuple[int, int]]:
    """Every (temporal, spatial) window whose 3D table has ``rows`` rows (and whose window has
    ``index_side`` tokens when the checkpoint stores the relative_position_index)."""
    return [
        (wt, ws)
        for wt in range(1, 65)
        for ws in range(1, 65)
        if (2 * wt - 1) * (2 * ws - 1) ** 2 == rows and (index_side is None or wt * ws * ws == index_side)
    ]


def _stage_depths(keys: Any, pattern: str) -> list[int]:
    """Blocks per stage from keys like ``<pattern with {i}>.blocks.{j}.`` -> [depth_0, ...]."""
    depths = []
    for i in range(64):
        blocks = {int(m.group(1)) for k in keys if (m := re.match(pattern.format(i=i) + r"\.blocks\.(\d+)\.", k))}
        if not blocks:
            break
        depths.append(max(blocks) + 1)
    return depths


def video_swin_checkpoint_config(state: str | Path | dict[str, Any]) -> dict[str, Any]:
    """Architecture of a Video Swin checkpoint (mmaction ``{'state_dict': {'backbone.*', 'cls_head.*'}}``,
    or bare): ``embed_dim``, ``depths``, ``num_heads``, ``window_size`` (temporal, spatial, spatial)
    from the relative-position tables (and indices when stored), ``patch_size`` (t, p, p)."""
    sd = _swin_state(state)[0]
    patch = sd["patch_embed.proj.weight"]
    if patch.dim() != 5:
        raise CheckpointError(
            f"patch_embed.proj.weight {tuple(patch.shape)} is not a Conv3d kernel: not a Video Swin checkpoint"
        )
    depths = _stage_depths(sd, r"layers\.{i}")
    if not depths:
        raise CheckpointError("Video Swin checkpoint has no layers.{i}.blocks.{j}.* keys")
    heads, windows = [], set()
    for i in range(len(depths)):
        key = f"layers.{i}.blocks.0.{_TABLE_SUFFIX}"
        table = sd.get(key)
        if table is None or table.dim() != 2:
            raise CheckpointError(f"Video Swin checkpoint lacks {key}")
        heads.append(int(table.shape[1]))
        index = sd.get(f"layers.{i}.blocks.0.attn.relative_position_index")
        wt, ws = _video_window(table.shape[0], None if index is None else index.shape[0])
        windows.add((wt, ws, ws))
    if len(windows) != 1:
        raise CheckpointError(f"Video Swin checkpoint: stages use different windows {sorted(windows)}")
    return dict(
        embed_dim=int(patch.shape[0]),
        depths=tuple(depths),
        num_heads=tuple(heads),
        window_size=windows.pop(),
        patch_size=tuple(int(s) for s in patch.shape[2:]),
    )


def resize_video_relative_position_bias_table(
    table: Tensor, window: tuple[int, int], new_window: tuple[int, int]
) -> Tensor:
    """((2wt-1)(2ws-1)^2, heads) -> the table of ``new_window`` (wt', ws'): every temporal slice
    resized bicubically as a (2ws-1)^2 image (as :func:`resize_relative_position_bias_table`),
    then linear interpolation along the temporal offsets (align_corners=False). Not in the
    official code (it cannot load a checkpoint of another window at all)."""
    (wt, ws), (nt, ns) = window, new_window
    dt, s, new_dt, new_s = 2 * wt - 1, 2 * ws - 1, 2 * nt - 1, 2 * ns - 1
    heads = table.shape[1]
    if table.shape[0] != dt * s * s:
        raise CheckpointError(
            f"relative_position_bias_table has {table.shape[0]} rows, not {dt * s * s} for window {window}"
        )
    x = table.detach().float().t().reshape(heads, dt, s, s)
    if new_s != s:
        x = torch.nn.functional.interpolate(x, size=(new_s, new_s), mode="bicubic", align_corners=False)
    if new_dt != dt:
        x = x.permute(0, 2, 3, 1).reshape(heads * new_s * new_s, 1, dt)
        x = torch.nn.functional.interpolate(x, size=new_dt, mode="linear", align_corners=False)
        x = x.reshape(heads, new_s, new_s, new_dt).permute(0, 3, 1, 2)
    return x.reshape(heads, -1).t().contiguous().to(table.dtype)


def inflate_relative_position_bias_table(table: Tensor, temporal_window: int, window: int) -> Tensor:
    """2D table ((2w-1)^2, heads) -> 3D table ((2wt-1)(2ws-1)^2, heads) for window (wt, ws, ws):
    bicubic resize to (2ws-1)^2 rows if w != ws, then the whole 2D block repeated 2wt-1 times
    (official ``--pretrained2d_lavt_weights``): the same spatial bias at every temporal offset.
    The temporal offset is the slowest-varying component of the 3D index (torchvision / Video
    Swin: (dt + wt-1)(2ws-1)^2 + (dh + ws-1)(2ws-1) + dw + ws-1), so block k = offset k - wt + 1."""
    rows = (2 * window - 1) ** 2
    if table.shape[0] != rows:
        table = resize_relative_position_bias_table(table, rows)
    return table.repeat(2 * temporal_window - 1, 1)


def _fits_or_problems(found: dict[str, Any], cfg: LAVTConfig, stage: str, what: str) -> list[str]:
    """Depth / width / heads problems between a source's Swin and ``cfg``; ``stage`` names a
    stage in the source's key layout (``"layers.{i}"``), ``what`` the patch-embedding weight."""
    problems = []
    if found["embed_dim"] != cfg.embed_dim:
        problems.append(f"{what}: embed_dim {found['embed_dim']} vs model {cfg.embed_dim}")
    if len(found["depths"]) != len(cfg.depths):
        problems.append(f"{len(found['depths'])} stages vs model {len(cfg.depths)}")
        return problems
    for i, (n_src, n_model) in enumerate(zip(found["depths"], cfg.depths)):
        if n_src != n_model:
            name = stage.format(i=i)
            problems.append(f"{name} has {n_src} blocks ({name}.blocks.0..{n_src - 1}) vs model {n_model}")
    for i, (h_src, h_model) in enumerate(zip(found["num_heads"], cfg.num_heads)):
        if h_src != h_model:
            problems.append(f"{stage.format(i=i)}.blocks.0.{_TABLE_SUFFIX}: {h_src} heads vs model {h_model}")
    return problems


def _guess_window(candidates: list[tuple[int, int]]) -> tuple[int, int]:
    return candidates[0] if len(candidates) == 1 else min(candidates, key=lambda c: c[0] != 8)  # official wt = 8


def init_backbone_from_video_swin(
    model: LAVT, path_or_state: str | Path | dict[str, Any], resize_tables: bool = False
) -> dict[str, list[str]]:
    """Initialise the Swin part of a video LAVT's backbone (patch embedding, blocks, patch
    merging) from a Video Swin checkpoint, e.g. ``swin_tiny_patch244_window877_kinetics400_1k.pth``
    (mmaction layout ``{'state_dict': {'backbone.*', 'cls_head.*'}, 'meta': ...}``; a bare or
    ``{'model': ...}`` dict works too). As the official LAVT-RS ``init_weights``: only keys under
    ``backbone.`` are used, and the (C, 3, 2, 4, 4) patch kernel is summed over its temporal axis
    (keepdim) into our (C, 3, 1, 4, 4) one. PWAMs, gates, output norms, decoder and text encoder
    are left as they are.

    The official code raises a raw torch shape error for a checkpoint of another window (e.g.
    the (16, 7, 7) sthv2 weights into a (8, 7, 7) model); here a depth / width / heads / window /
    patch mismatch, any other shape mismatch, or a backbone key the model has no place for raises
    one CheckpointError line, and the model is only modified when everything fits.
    ``resize_tables=True`` (not official) instead interpolates the 3D relative-position tables
    to the model's window (:func:`resize_video_relative_position_bias_table`).

    Returns ``{'loaded': our keys, 'resized': our keys whose table was interpolated, 'ignored':
    checkpoint keys not used (cls_head.*, the final norm, relative_position_index, ...),
    'missing': our Swin keys the checkpoint does not provide}``.
    """
    cfg = model.config
    if not cfg.video:
        raise ConfigError(
            "init_backbone_from_video_swin needs a video LAVT (config.video=True); "
            "use init_backbone_from_swin for images"
        )
    state, ignored, source = _swin_state(path_or_state)
    patch = state["patch_embed.proj.weight"]
    if patch.dim() != 5:
        raise CheckpointError(
            f"{source}: patch_embed.proj.weight {tuple(patch.shape)} is a 2D kernel (an image Swin checkpoint); "
            "use init_backbone_from_swin on an image model, or inflate_image_lavt"
        )
    depths = _stage_depths(state, r"layers\.{i}")
    heads = []
    for i in range(len(depths)):
        key = f"layers.{i}.blocks.0.{_TABLE_SUFFIX}"
        if key not in state or state[key].dim() != 2:
            raise CheckpointError(f"Video Swin checkpoint {source} lacks {key}")
        heads.append(int(state[key].shape[1]))
    found = dict(embed_dim=int(patch.shape[0]), depths=tuple(depths), num_heads=tuple(heads))
    patch_what = f"patch_embed.proj.weight {tuple(patch.shape)}"
    problems = _fits_or_problems(found, cfg, "layers.{i}", patch_what)
    p = cfg.patch_size
    if patch.shape[1] != 3 or tuple(patch.shape[3:]) != (p, p):
        problems.append(f"{patch_what}: patch (*, {patch.shape[3]}, {patch.shape[4]}) vs model (1, {p}, {p})")
    # every block's table (and index, when stored) must describe the model's window
    model_window = (cfg.temporal_window, cfg.window_size)
    model_rows = (2 * cfg.temporal_window - 1) * (2 * cfg.window_size - 1) ** 2
    table_windows: dict[str, tuple[int, int]] = {}  # checkpoint key -> its window, when it differs
    bad_tables = []
    for key, table in state.items():
        if not (key.endswith(_TABLE_SUFFIX) and re.match(r"layers\.\d+\.blocks\.\d+\.", key)):
            continue
        index = state.get(key.removesuffix("relative_position_bias_table") + "relative_position_index")
        candidates = _video_window_candidates(table.shape[0], None if index is None else index.shape[0])
        if model_window in candidates:
            continue
        if candidates and resize_tables:
            table_windows[key] = _guess_window(candidates)
        else:
            bad_tables.append((key, tuple(table.shape), candidates))
    if bad_tables:
        key, shape, candidates = bad_tables[0]
        wt, ws = _guess_window(candidates) if candidates else (None, None)
        what = f"window ({wt}, {ws}, {ws})" if candidates else "no 3D window"
        hint = "" if resize_tables or not candidates else " (pass resize_tables=True to interpolate)"
        problems.append(
            f"{len(bad_tables)} relative-position table(s) of {what}, e.g. {key} {shape}, but the model's window "
            f"({cfg.temporal_window}, {cfg.window_size}, {cfg.window_size}) needs {model_rows} rows{hint}"
        )
    _refuse_unfit(f"Video Swin checkpoint {source}", found, cfg, problems)

    own = model.state_dict()
    resized: list[str] = []

    def fit(key: str, ours: str, value: Tensor) -> Tensor:
        if key == "patch_embed.proj.weight":
            value = value.sum(dim=2, keepdim=True)  # official: temporal patch 2 -> 1 by summing
        if key in table_windows:
            value = resize_video_relative_position_bias_table(value, table_windows[key], model_window)
            resized.append(ours)
        if value.shape != own[ours].shape:
            raise CheckpointError(
                f"Video Swin checkpoint {source}: {key} has shape {tuple(state[key].shape)} but the model's "
                f"{ours} has shape {tuple(own[ours].shape)}"
            )
        return value

    new_state = _swin_weights_for(model, state, ignored, fit, f"Video Swin checkpoint {source}")
    return _load_swin_weights(
        model, new_state, resized, ignored, "Video Swin", source,
        f"patch kernel summed over time, {len(resized)} bias table(s) interpolated",
    )


def _swin_weights_for(
    model: LAVT, state: dict[str, Tensor], ignored: list[str], fit: Any, what: str
) -> dict[str, Tensor]:
    """Checkpoint Swin keys -> our backbone keys, each value passed through ``fit(key, ours,
    value)`` (which resizes or refuses it). Keys that are no Swin weights LAVT uses go to
    ``ignored``; a Swin key the model has no place for is an error (another Swin version or layout)."""
    own = model.state_dict()
    new_state: dict[str, Tensor] = {}
    unexpected = []
    for key, value in state.items():
        if _SWIN_IGNORED.search(key):
            ignored.append(key)
            continue
        if m := re.match(r"layers\.(\d+)\.(.*)", key):
            if not m.group(2).startswith(("blocks.", "downsample.")):
                ignored.append(key)  # e.g. the PWAM / gate of an official LAVT file: not Swin weights
                continue
            ours, value = _rename_stage_key(m.group(1), m.group(2), value)
            ours = "backbone." + ours
        elif key.startswith("patch_embed."):
            ours = "backbone." + key
        else:
            unexpected.append(key)
            continue
        if ours not in own:
            unexpected.append(key)
            continue
        new_state[ours] = fit(key, ours, value)
    if unexpected:
        raise CheckpointError(
            f"{what}: {len(unexpected)} key(s) the model has no place for, e.g. {unexpected[0]} "
            f"{tuple(state[unexpected[0]].shape)} (another Swin version or layout?)"
        )
    return new_state


def _load_swin_weights(
    model: LAVT, new_state: dict[str, Tensor], resized: list[str], ignored: list[str], kind: str, source: str,
    detail: str,
) -> dict[str, list[str]]:
    """Load checked weights into the model and report (and log) what was loaded, resized, ignored
    and left missing."""
    own = model.state_dict()
    result = model.load_state_dict(new_state, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys  # every key was checked against own above
    report = {
        "loaded": [k for k in own if k in new_state],
        "resized": resized,
        "ignored": ignored,
        "missing": [k for k in own if _OUR_SWIN_KEY.match(k) and k not in new_state],
    }
    log = logger.warning if report["missing"] else logger.info
    log(
        "initialised %d %s weights of the backbone from %s (%s, %d checkpoint key(s) ignored, %d Swin weight(s) "
        "missing%s)",
        len(report["loaded"]),
        kind,
        source,
        detail,
        len(ignored),
        len(report["missing"]),
        f", e.g. {report['missing'][0]}" if report["missing"] else "",
    )
    return report


def _refuse_unfit(what: str, found: dict[str, Any], cfg: LAVTConfig, problems: list[str]) -> None:
    """One CheckpointError line listing every way the checkpoint's architecture differs."""
    if problems:
        raise CheckpointError(
            f"{what} does not fit the model (checkpoint depths {found['depths']}, heads {found['num_heads']}, "
            f"embed_dim {found['embed_dim']}; model {cfg.depths}, {cfg.num_heads}, {cfg.embed_dim}): "
            + "; ".join(problems)
        )
