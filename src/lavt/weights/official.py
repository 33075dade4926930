"""Official LAVT checkpoints in (LAVT-RIS ``lavt`` / ``lavt_one``, LAVT-RS ``lavt_video``),
architecture inferred from keys.

Layouts read (see docs/official-checkpoints.md):
* ``lavt``: ``{'model': image model, 'bert_model': BERT state dict (no pooler), ...}``
* ``lavt_one``: ``{'model': image model with ``text_encoder.*`` inside, ...}``
* either without BERT at all (the model then takes word features directly), or a bare state dict.

The window size comes from the relative-position table, depths from block indices, heads from
table widths, the language width from the PWAM key projection, the decoder width from
``classifier.conv1_4`` — so no ``--window12`` flag is needed.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from torch import Tensor

from ..config import LAVTConfig, Preprocessing, TextEncoderConfig
from ..errors import CheckpointError
from ..io.torch_files import load_torch_file
from ..models.lavt import LAVT, load_state_dict_strict

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
