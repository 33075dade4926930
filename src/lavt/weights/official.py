"""Official LAVT checkpoints in (LAVT-RIS ``lavt`` / ``lavt_one``, LAVT-RS ``lavt_video``),
architecture inferred from keys.

Layouts read (see docs/official-checkpoints.md):
* ``lavt``: ``{'model': image model, 'bert_model': BERT state dict (no pooler), ...}``
* ``lavt_one``: ``{'model': image model with ``text_encoder.*`` inside, ...}``
* either without BERT at all (the model then takes word features directly), or a bare state dict.

The window size comes from the relative-position table, depths from block indices, heads from
table widths, the language width from the PWAM key projection, the decoder width from
``classifier.conv1_4`` — so no ``--window12`` flag is needed.

:func:`init_backbone_from_swin` starts a new model from a Microsoft Swin classification
checkpoint (the ImageNet-22K weights of the paper), resizing relative-position tables to the
model's window and refusing any other shape mismatch.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import LAVTConfig, Preprocessing, TextEncoderConfig
from ..errors import CheckpointError, ConfigError
from ..models.lavt import LAVT, load_state_dict_strict
from ..io.torch_files import load_torch_file

logger = logging.getLogger(__name__)

# official key (after the stage prefix) -> our key; Conv1d k=1 weights become Linear weights.
_FUSION_RENAMES = {
    "fusion.image_lang_att.f_query.0.": "fusion.query.",
    "fusion.image_lang_att.f_key.0.": "fusion.key.",
    "fusion.image_lang_att.f_value.0.": "fusion.value.",
    "fusion.image_lang_att.W.0.": "fusion.out.",
    "fusion.vis_project.0.": "fusion.vis_project.0.",
    "fusion.project_mm.0.": "fusion.project_mm.0.",
}


# Video LAVT (LAVT-RS ``lavt_video``) 3D PWAM = SepTPWAM: each projection is a 3x3x3 conv ("_t")
# beside a 1x1x1 conv ("_s"); ours names the two branches 0 and 1. The 1x1x1 names without a
# "_t" partner (``W.0``, ``project_mm.0``, structures 7/10/11) are inferred, not verified.
_SEPT_PROJECTIONS = {
    "temporal_vis_project": ("vis_project", 0),
    "spatial_vis_project": ("vis_project", 1),
    "f_query_t": ("query", 0),
    "f_query_s": ("query", 1),
    "W_t": ("out", 0),
    "W_s": ("out", 1),
    "W": ("out", 0),
    "project_mm_t": ("project_mm", 0),
    "project_mm_s": ("project_mm", 1),
    "project_mm": ("project_mm", 0),
}


# BERT buffers older transformers versions saved; derived from the config, safe to drop.
_BERT_NONPERSISTENT_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")


def read_checkpoint(path: str | Path, what: str = "checkpoint") -> dict[str, Any]:
    """A torch checkpoint as a dict, loaded safely (:func:`lavt.io.torch_files.load_torch_file`:
    tensors, plain containers and the ``argparse.Namespace`` official files carry; never code)."""
    ckpt = load_torch_file(path, what)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{what} {path} holds a {type(ckpt).__name__}, not a state dict")
    return ckpt


def split_official_checkpoint(ckpt: dict[str, Any], source: str = "checkpoint") -> tuple[dict, dict | None]:
    """-> (image model state dict, BERT state dict or None), whatever the official layout."""
    model = ckpt.get("model", ckpt.get("state_dict", ckpt))
    if not isinstance(model, dict) or not any(isinstance(v, Tensor) for v in model.values()):
        raise CheckpointError(f"{source}: no state dict found under 'model' or 'state_dict'")
    model = {k.removeprefix("module."): v for k, v in model.items()}
    bert = ckpt.get("bert_model")
    if bert is not None:
        bert = {k.removeprefix("module."): v for k, v in bert.items() if not k.startswith(("pooler.", "module.pooler."))}
    else:
        inner = {k[len("text_encoder.") :]: v for k, v in model.items() if k.startswith("text_encoder.")}
        bert = {k: v for k, v in inner.items() if not k.startswith("pooler.")} or None
        model = {k: v for k, v in model.items() if not k.startswith("text_encoder.")}
    if not any(k.startswith("backbone.layers.") for k in model):
        raise CheckpointError(
            f"{source}: not an official LAVT checkpoint (no 'backbone.layers.*' keys; first keys: {list(model)[:3]})"
        )
    return model, bert


def _video_window(table_rows: int, index_side: int | None) -> tuple[int, int]:
    """(temporal, spatial) window from a 3D bias table of (2wt-1)(2ws-1)^2 rows (and the
    prod(window)-sided index when the checkpoint has it)."""
    candidates = [
        (wt, ws)
        for wt in range(1, 65)
        for ws in range(1, 65)
        if (2 * wt - 1) * (2 * ws - 1) ** 2 == table_rows and (index_side is None or wt * ws * ws == index_side)
    ]
    if len(candidates) > 1:  # without the index the split can be ambiguous: official windows use wt = 8
        candidates = [c for c in candidates if c[0] == 8] or candidates
    if len(candidates) != 1:
        raise CheckpointError(f"cannot infer the 3D window from a relative-position table of {table_rows} rows")
    return candidates[0]


def _video_pwam_structure(model_sd: dict[str, Tensor]) -> int:
    """Table-1 structure from which 3D PWAM keys exist (1 = naive, 2D PWAM keys)."""
    prefix = "backbone.layers.0.fusion."
    if f"{prefix}image_lang_att.f_key.0.weight" in model_sd:
        return 1
    if f"{prefix}temporal_vis_project.0.weight" not in model_sd:
        raise CheckpointError("video checkpoint without a known PWAM (no image_lang_att.* or temporal_vis_project.* keys)")
    parallel_w = f"{prefix}W_t.0.weight" in model_sd
    parallel_o = f"{prefix}project_mm_t.0.weight" in model_sd
    return {(True, True): 12, (True, False): 10, (False, True): 11, (False, False): 7}[(parallel_w, parallel_o)]


def infer_config(model_sd: dict[str, Tensor], **overrides: Any) -> LAVTConfig:
    """Architecture of an official image or video LAVT from its state dict alone."""
    try:
        patch_weight = model_sd["backbone.patch_embed.proj.weight"]
        video = patch_weight.dim() == 5
        embed_dim = patch_weight.shape[0]
        patch = patch_weight.shape[-1]
        depths, heads, windows = [], [], set()
        for i in range(4):
            blocks = {
                int(m.group(1))
                for k in model_sd
                if (m := re.match(rf"backbone\.layers\.{i}\.blocks\.(\d+)\.", k))
            }
            if not blocks:
                raise KeyError(f"backbone.layers.{i}.blocks")
            depths.append(max(blocks) + 1)
            table = model_sd[f"backbone.layers.{i}.blocks.0.attn.relative_position_bias_table"]
            heads.append(table.shape[1])
            if video:
                index = model_sd.get(f"backbone.layers.{i}.blocks.0.attn.relative_position_index")
                windows.add(_video_window(table.shape[0], None if index is None else index.shape[0]))
            else:
                windows.add(round((table.shape[0] ** 0.5 + 1) / 2))
        if len(windows) != 1:
            raise CheckpointError(f"stages use different window sizes {sorted(windows)}")
        video_fields: dict[str, Any] = {}
        if video:
            temporal_window, window = windows.pop()
            structure = _video_pwam_structure(model_sd)
            video_fields = dict(video=True, temporal_window=temporal_window, pwam_structure=structure)
            windows = {window}
        key_name = "fusion.image_lang_att.f_key.0.weight"
        if video and video_fields["pwam_structure"] != 1:
            key_name = "fusion.f_key.0.weight"
        if f"backbone.layers.0.{key_name}" in model_sd:
            fusion = "pwam"
            lang_dim = model_sd[f"backbone.layers.0.{key_name}"].shape[1]
        else:
            raise CheckpointError(f"no PWAM keys (backbone.layers.0.{key_name}): unsupported fusion module")
        hidden = model_sd["classifier.conv1_4.weight"].shape[0]
    except KeyError as e:
        raise CheckpointError(f"official checkpoint lacks expected key {e}") from None
    gate = "tanh" if "backbone.layers.0.res_gate.0.weight" in model_sd else "none"
    fields = dict(
        embed_dim=embed_dim,
        patch_size=patch,
        depths=tuple(depths),
        num_heads=tuple(heads),
        window_size=windows.pop(),
        lang_dim=lang_dim,
        fusion=fusion,
        gate=gate,
        decoder_hidden=hidden if hidden != 4 * embed_dim else None,
        **video_fields,
    )
    fields.update(overrides)
    return LAVTConfig(**fields)


def convert_image_state_dict(model_sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Official image or video LAVT keys -> ours (without the text encoder)."""
    sept_pwam = any(".fusion.temporal_vis_project." in k for k in model_sd)
    out: dict[str, Tensor] = {}
    for key, value in model_sd.items():
        if key.endswith("relative_position_index") or key.endswith("attn_mask"):
            continue  # derived from the window size; we rebuild them
        new = key
        if key.startswith("classifier."):
            new = "decoder." + key[len("classifier.") :]
        elif m := re.match(r"backbone\.norm(\d)\.(.*)", key):
            new = f"backbone.out_norms.{m.group(1)}.{m.group(2)}"
        elif m := re.match(r"backbone\.layers\.(\d+)\.(.*)", key):
            new, value = _rename_stage_key(m.group(1), m.group(2), value, sept_pwam)
            new = "backbone." + new
        out[new] = value
    return out


def _rename_stage_key(stage: str, rest: str, value: Tensor, sept_pwam: bool = False) -> tuple[str, Tensor]:
    """Official ``layers.{i}.<rest>`` -> our ``stages.{i}.<rest>`` (no ``backbone.`` prefix).

    Shared by the LAVT importer and the Swin classification initialiser: the Swin block, MLP and
    PatchMerging names, plus (LAVT only) the PWAM and gate names; ``sept_pwam`` for the 3D PWAM
    of video checkpoints.
    """
    rest = rest.replace("mlp.fc1.", "mlp.0.").replace("mlp.fc2.", "mlp.3.").replace("res_gate.", "gate.")
    if sept_pwam and (m := re.match(r"fusion\.(\w+)\.0\.(weight|bias)$", rest)):
        if m.group(1) in _SEPT_PROJECTIONS:  # 3D PWAM (SepTPWAM) projection
            name, branch = _SEPT_PROJECTIONS[m.group(1)]
            if value.dim() == 5 and value.shape[2:] == (1, 1, 1):
                value = value.flatten(1)  # Conv3d 1x1x1 -> Linear
            return f"stages.{stage}.fusion.{name}.branches.{branch}.convs.0.proj.{m.group(2)}", value
        if m.group(1) in ("f_key", "f_value"):  # 3D PWAM word projections: Conv1d k=1 -> Linear
            return f"stages.{stage}.fusion.{m.group(1)[2:]}.{m.group(2)}", value.squeeze(-1)
    for old, ours in _FUSION_RENAMES.items():
        if rest.startswith(old):
            rest = ours + rest[len(old) :]
            if value.dim() == 3 and value.shape[-1] == 1:
                value = value.squeeze(-1)  # Conv1d(k=1) -> Linear
    return f"stages.{stage}.{rest}", value


def load_official_checkpoint(
    path: str | Path,
    text_encoder: str | None = None,
    max_tokens: int = 20,
    **config_overrides: Any,
) -> LAVT:
    """Build our LAVT from an official checkpoint, in eval mode.

    If the checkpoint holds BERT weights (``lavt`` or ``lavt_one``), the model gets a text
    encoder whose architecture (and tokenizer) comes from ``text_encoder`` (default
    ``bert-base-uncased``, the encoder of every released model; a local directory works offline).
    Without BERT weights the model takes word features (``text_features=...``).
    ``config_overrides`` set what weights cannot tell, e.g. ``pwam_heads=(1, 1, 1, 1)``.
    """
    ckpt = read_checkpoint(path)
    model_sd, bert_sd = split_official_checkpoint(ckpt, source=str(path))
    if bert_sd is not None:
        config_overrides.setdefault(
            "text_encoder", TextEncoderConfig(name_or_path=text_encoder or "bert-base-uncased", max_tokens=max_tokens)
        )
    config = infer_config(model_sd, **config_overrides)
    model = LAVT.from_config(config, pretrained_text_encoder=False)
    state = convert_image_state_dict(model_sd)
    if config.video:
        # LAVT-RS trained with --use_checkpoint saves no stage-4 gate; it never influences the
        # output (E_4 is discarded), so the freshly initialised one is kept.
        last = f"backbone.stages.{config.num_stages - 1}.gate."
        if not any(k.startswith(last) for k in state):
            own = model.state_dict()
            state.update({k: v for k, v in own.items() if k.startswith(last)})
    if bert_sd is not None:
        own_text_keys = {k for k in model.state_dict() if k.startswith("text_encoder.")}
        for k, v in bert_sd.items():
            if k in _BERT_NONPERSISTENT_BUFFERS and f"text_encoder.{k}" not in own_text_keys:
                continue  # saved by older transformers, non-persistent in modern HF
            state[f"text_encoder.{k}"] = v  # anything else must fit: the strict load names it
    load_state_dict_strict(model, state, source=str(path))
    model.preprocessing = Preprocessing()  # every released checkpoint: 480 x 480, ImageNet mean/std
    return model.eval()


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
    if problems:
        raise CheckpointError(
            f"Swin checkpoint {source} does not fit the model (checkpoint depths {found['depths']}, "
            f"heads {found['num_heads']}, embed_dim {found['embed_dim']}; model {cfg.depths}, {cfg.num_heads}, "
            f"{cfg.embed_dim}): " + "; ".join(problems)
        )

    own = model.state_dict()
    new_state: dict[str, Tensor] = {}
    resized, unexpected = [], []
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
        target = own[ours]
        if value.shape != target.shape:
            if (
                key.endswith("attn.relative_position_bias_table")
                and value.dim() == target.dim() == 2
                and value.shape[1] == target.shape[1]
            ):
                value = resize_relative_position_bias_table(value, target.shape[0])
                resized.append(ours)
            else:
                raise CheckpointError(
                    f"Swin checkpoint {source}: {key} has shape {tuple(value.shape)} but the model's "
                    f"{ours} has shape {tuple(target.shape)}"
                )
        new_state[ours] = value
    if unexpected:
        raise CheckpointError(
            f"Swin checkpoint {source}: {len(unexpected)} key(s) the model has no place for, e.g. {unexpected[0]} "
            f"{tuple(state[unexpected[0]].shape)} (another Swin version or layout?)"
        )
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
        "initialised %d Swin weights of the backbone from %s (%d bias table(s) resized to window %d, "
        "%d checkpoint key(s) ignored, %d Swin weight(s) missing%s)",
        len(report["loaded"]),
        source,
        len(resized),
        cfg.window_size,
        len(ignored),
        len(report["missing"]),
        f", e.g. {report['missing'][0]}" if report["missing"] else "",
    )
    return report


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
    if problems:
        raise CheckpointError(
            f"Video Swin checkpoint {source} does not fit the model (checkpoint depths {found['depths']}, "
            f"heads {found['num_heads']}, embed_dim {found['embed_dim']}; model {cfg.depths}, {cfg.num_heads}, "
            f"{cfg.embed_dim}): " + "; ".join(problems)
        )

    own = model.state_dict()
    new_state: dict[str, Tensor] = {}
    resized, unexpected = [], []
    for key, value in state.items():
        if _SWIN_IGNORED.search(key):
            ignored.append(key)
            continue
        if m := re.match(r"layers\.(\d+)\.(.*)", key):
            if not m.group(2).startswith(("blocks.", "downsample.")):
                ignored.append(key)  # e.g. PWAM / gate keys of a LAVT-RS file: not Swin weights
                continue
            ours, value = _rename_stage_key(m.group(1), m.group(2), value)
            ours = "backbone." + ours
        elif key.startswith("patch_embed."):
            ours = "backbone." + key
            if key == "patch_embed.proj.weight":
                value = value.sum(dim=2, keepdim=True)  # official: temporal patch 2 -> 1 by summing
        else:
            unexpected.append(key)
            continue
        if ours not in own:
            unexpected.append(key)
            continue
        if key in table_windows:
            value = resize_video_relative_position_bias_table(value, table_windows[key], model_window)
            resized.append(ours)
        if value.shape != own[ours].shape:
            raise CheckpointError(
                f"Video Swin checkpoint {source}: {key} has shape {tuple(state[key].shape)} but the model's "
                f"{ours} has shape {tuple(own[ours].shape)}"
            )
        new_state[ours] = value
    if unexpected:
        raise CheckpointError(
            f"Video Swin checkpoint {source}: {len(unexpected)} key(s) the model has no place for, e.g. "
            f"{unexpected[0]} {tuple(state[unexpected[0]].shape)} (another Swin version or layout?)"
        )
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
        "initialised %d Video Swin weights of the backbone from %s (patch kernel summed over time, %d bias "
        "table(s) interpolated, %d checkpoint key(s) ignored, %d Swin weight(s) missing%s)",
        len(report["loaded"]),
        source,
        len(resized),
        len(ignored),
        len(report["missing"]),
        f", e.g. {report['missing'][0]}" if report["missing"] else "",
    )
    return report


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
