"""Official LAVT checkpoints in (LAVT-RIS ``lavt`` / ``lavt_one``), architecture inferred from keys.

Layouts read (see docs/official-checkpoints.md):
* ``lavt``: ``{'model': image model, 'bert_model': BERT state dict (no pooler), ...}``
* ``lavt_one``: ``{'model': image model with ``text_encoder.*`` inside, ...}``
* either without BERT at all (the model then takes word features directly), or a bare state dict.

The window size comes from the relative-position table, depths from block indices, heads from
table widths, the language width from the PWAM key projection, the decoder width from
``classifier.conv1_4`` — so no ``--window12`` flag is needed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .config import LAVTConfig, TextEncoderConfig
from .errors import CheckpointError
from .models.lavt import LAVT, load_state_dict_strict

# official key (after the stage prefix) -> our key; Conv1d k=1 weights become Linear weights.
_FUSION_RENAMES = {
    "fusion.image_lang_att.f_query.0.": "fusion.query.",
    "fusion.image_lang_att.f_key.0.": "fusion.key.",
    "fusion.image_lang_att.f_value.0.": "fusion.value.",
    "fusion.image_lang_att.W.0.": "fusion.out.",
    "fusion.vis_project.0.": "fusion.vis_project.0.",
    "fusion.project_mm.0.": "fusion.project_mm.0.",
}


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """torch.load with clear errors. Official files pickle an argparse Namespace, so
    ``weights_only=False`` is needed: only load checkpoints you trust."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(ckpt).__name__}, not a state dict")
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


def infer_config(model_sd: dict[str, Tensor], **overrides: Any) -> LAVTConfig:
    """Architecture of an official image LAVT from its state dict alone."""
    try:
        embed_dim = model_sd["backbone.patch_embed.proj.weight"].shape[0]
        patch = model_sd["backbone.patch_embed.proj.weight"].shape[-1]
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
            windows.add(round((table.shape[0] ** 0.5 + 1) / 2))
        if len(windows) != 1:
            raise CheckpointError(f"stages use different window sizes {sorted(windows)}")
        if "backbone.layers.0.fusion.image_lang_att.f_key.0.weight" in model_sd:
            fusion = "pwam"
            lang_dim = model_sd["backbone.layers.0.fusion.image_lang_att.f_key.0.weight"].shape[1]
        else:
            raise CheckpointError("no PWAM keys (backbone.layers.0.fusion.image_lang_att.*): unsupported fusion module")
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
    )
    fields.update(overrides)
    return LAVTConfig(**fields)


def convert_image_state_dict(model_sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Official image LAVT keys -> ours (without the text encoder)."""
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
            rest = m.group(2)
            rest = rest.replace("mlp.fc1.", "mlp.0.").replace("mlp.fc2.", "mlp.3.").replace("res_gate.", "gate.")
            for old, ours in _FUSION_RENAMES.items():
                if rest.startswith(old):
                    rest = ours + rest[len(old) :]
                    if value.dim() == 3 and value.shape[-1] == 1:
                        value = value.squeeze(-1)  # Conv1d(k=1) -> Linear
            new = f"backbone.stages.{m.group(1)}.{rest}"
        out[new] = value
    return out


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
    if bert_sd is not None:
        own_text_keys = {k for k in model.state_dict() if k.startswith("text_encoder.")}
        for k, v in bert_sd.items():
            if f"text_encoder.{k}" in own_text_keys:  # skip buffers that modern HF keeps non-persistent
                state[f"text_encoder.{k}"] = v
    load_state_dict_strict(model, state, source=str(path))
    return model.eval()
