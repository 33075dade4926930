"""LAVT: the assembly users instantiate (language-aware Swin + decoder [+ text encoder]).

Pure tensors in, tensors out: preprocessing and postprocessing live in ``lavt.predict``.
The text encoder, when present, is a submodule (the official ``lavt_one`` layout), so one DDP
wrapper covers the whole model. Without one, the model takes word features directly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import PREPROCESSOR_NAME, LAVTConfig, Preprocessing
from ..errors import CheckpointError, ConfigError, InputError
from .decoder import Conv3x3, SimpleDecoder, winograd_available
from .encoder import LanguageAwareSwin

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TEXT_ASSETS_DIR = "text_encoder"  # tokenizer + HF config of the text encoder (weights are in WEIGHTS_NAME)


class LAVT(nn.Module):
    def __init__(self, config: LAVTConfig, text_encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.backbone = LanguageAwareSwin(config)
        in_dims = config.stage_dims if config.decoder_features != "V" else config.stage_dims[1:]
        self.decoder = SimpleDecoder(in_dims, config.hidden_dim, config.num_classes)
        self.text_encoder = text_encoder
        # how images become input (size, normalisation): from preprocessor_config.json when the
        # model was loaded from a directory, set by the trainer, None when unknown
        self.preprocessing: Preprocessing | None = None
        # unified models: None = automatic (both paths in training, one by input at inference);
        # "2d" / "3d" / "dual" force a path (ablations, tests)
        self.stream: str | None = None
        if text_encoder is not None:
            width = text_encoder.config.hidden_size
            if width != config.lang_dim:
                raise ConfigError(f"text encoder width {width} does not match config lang_dim {config.lang_dim}")

    # ------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: LAVTConfig, pretrained_text_encoder: bool = True) -> LAVT:
        """Build a model; with ``config.text_encoder`` set, the encoder is created too
        (pretrained weights when ``pretrained_text_encoder``; the architecture only otherwise)."""
        encoder = None
        if config.text_encoder is not None:
            from .text import build_text_encoder, resolve_text_encoder

            encoder = build_text_encoder(resolve_text_encoder(config.text_encoder.name_or_path), pretrained_text_encoder)
        return cls(config, encoder)

    def use_winograd(self, enabled: bool = True) -> bool:
        """Run the decoder's 3x3 convolutions with NNPACK's Winograd kernel in CPU float32
        inference (see ``lavt.models.decoder``): ~3x faster convolutions, logits within ~1e-5
        relative of the direct ones. Returns whether it is active (False where this PyTorch build
        or CPU has no NNPACK, and for a model whose decoder is not on the CPU: NNPACK is a CPU
        kernel). Training and autocast always use the direct convolution."""
        on_cpu = all(p.device.type == "cpu" for p in self.decoder.parameters())
        active = bool(enabled) and on_cpu and winograd_available()
        for module in self.modules():
            if isinstance(module, Conv3x3):
                module.winograd = active
        return active

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Word features (B, L, C_l): the text encoder's last hidden state (no pooler)."""
        if self.text_encoder is None:
            raise ConfigError("this model has no text encoder: pass text_features and text_mask instead of input_ids")
        from .text import encode_text

        return encode_text(self.text_encoder, input_ids, attention_mask)

    def stage_features(
        self,
        image: Tensor,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        *,
        text_features: Tensor | None = None,
        text_mask: Tensor | None = None,
    ) -> list[Tensor]:
        """The decoder inputs LN(F_i) (or E_i / V_i per config), finest first; for videos one
        map per frame, (B*T, C_i, H_i, W_i) batch-major."""
        words, mask = self._words(input_ids, attention_mask, text_features, text_mask)
        is_image = image.dim() == 4
        image = self._check_visual_input(image)
        if image.shape[0] not in (1, words.shape[0]):
            kind = "clips" if self.config.video else "images"
            raise InputError(f"{image.shape[0]} {kind} but {words.shape[0]} expressions")
        stream = self.stream or self.backbone.stream_for(is_image)
        return self.backbone(image, words, mask, stream=stream)

    def _check_visual_input(self, x: Tensor) -> Tensor:
        if self.config.video:
            if x.dim() == 4 and x.shape[1] == 3:  # an image is a one-frame clip
                return x.unsqueeze(1)
            if x.dim() != 5 or x.shape[2] != 3 or x.shape[1] < 1:
                raise InputError(f"expected a video batch of shape (B, T, 3, H, W), got {tuple(x.shape)}")
            return x
        if x.dim() != 4 or x.shape[1] != 3:
            raise InputError(f"expected an image batch of shape (B, 3, H, W), got {tuple(x.shape)}")
        return x

    def forward(
        self,
        image: Tensor,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        *,
        text_features: Tensor | None = None,
        text_mask: Tensor | None = None,
    ) -> Tensor:
        """Logits (B, 2, H, W) at the input size; channel 1 = object. ``argmax`` gives the mask.
        Video models take clips (B, T, 3, H, W) and return (B, T, 2, H, W) (an image batch
        (B, 3, H, W) is a batch of one-frame clips and gives (B, 2, H, W)).

        Give either token ids (``input_ids``, ``attention_mask``; needs a text encoder) or word
        features ``text_features`` (B, L, C_l) with ``text_mask`` (B, L), 1 = real word.
        One image with B expressions is allowed (the image is shared).
        """
        feats = self.stage_features(
            image, input_ids, attention_mask, text_features=text_features, text_mask=text_mask
        )
        logits = self.decoder(feats)  # video: the decoder sees the B*T frames as a batch
        logits = F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=True)
        if self.config.video and image.dim() == 5:
            logits = logits.view(-1, image.shape[1], *logits.shape[1:])
        return logits

    def _words(self, input_ids, attention_mask, text_features, text_mask) -> tuple[Tensor, Tensor]:
        if text_features is not None:
            if text_mask is None:
                text_mask = torch.ones(text_features.shape[:2], dtype=torch.long, device=text_features.device)
            if text_features.dim() != 3 or text_features.shape[-1] != self.config.lang_dim:
                raise InputError(
                    f"text_features must be (B, L, {self.config.lang_dim}), got {tuple(text_features.shape)}"
                )
            return text_features, text_mask
        if input_ids is None:
            raise InputError("give input_ids (with attention_mask) or text_features")
        if attention_mask is None:
            attention_mask = (input_ids != 0).long()
        return self.encode_text(input_ids, attention_mask), attention_mask

    # ------------------------------------------------------------------------------------
    def save_pretrained(
        self, directory: str | os.PathLike, tokenizer: Any | None = None, preprocessing: Preprocessing | None = None
    ) -> Path:
        """Write ``config.json`` + ``model.safetensors`` + ``preprocessor_config.json``
        (+ ``text_encoder/``: tokenizer and HF config). ``preprocessing`` defaults to the model's
        own (``self.preprocessing``), else the official 480 px."""
        from safetensors.torch import save_file

        from ..io.torch_files import atomic_write, atomic_write_text

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        config = self.config
        if self.text_encoder is not None:
            from .text import Tokenizer, save_text_encoder_assets

            assert config.text_encoder is not None
            if tokenizer is None:
                tokenizer = Tokenizer.from_config(config.text_encoder)
            save_text_encoder_assets(self.text_encoder, tokenizer, out / TEXT_ASSETS_DIR)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        metadata = {"format": "pt", "lavt_config": json.dumps(config.to_dict())}
        # atomic: a crash never leaves half a weights file
        atomic_write(out / WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp), metadata=metadata))
        (preprocessing or self.preprocessing or Preprocessing()).save(out / PREPROCESSOR_NAME)
        atomic_write_text(out / CONFIG_NAME, json.dumps(config.to_dict(), indent=2) + "\n")
        return out

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, map_location: str | torch.device = "cpu") -> LAVT:
        """Load a model directory written by ``save_pretrained`` (or a hub repo id holding one).
        ``model.preprocessing`` is read from its ``preprocessor_config.json`` (None when absent)."""
        from safetensors.torch import load_file

        directory = _resolve_model_dir(name_or_path)
        config_path = directory / CONFIG_NAME
        if not config_path.is_file():
            raise CheckpointError(f"{directory} is not a lavt model directory (no {CONFIG_NAME})")
        config = LAVTConfig.load(config_path)
        if config.text_encoder is not None:
            assets = directory / TEXT_ASSETS_DIR
            if not assets.is_dir():
                raise CheckpointError(f"{directory} has a text encoder in its config but no {TEXT_ASSETS_DIR}/ folder")
            _check_tokenizer_files(assets)
            config.text_encoder.name_or_path = str(assets)
        weights = directory / WEIGHTS_NAME
        if not weights.is_file():
            raise CheckpointError(f"{directory} has no {WEIGHTS_NAME}")
        preprocessing = directory / PREPROCESSOR_NAME
        model = cls.from_config(config, pretrained_text_encoder=False)
        try:
            state = load_file(str(weights), device=str(map_location))
        except Exception as e:  # safetensors raises its own error types for corrupt files
            raise CheckpointError(f"cannot read {weights}: {' '.join(str(e).split())}") from None
        load_state_dict_strict(model, state, source=str(weights))
        model.preprocessing = Preprocessing.load(preprocessing) if preprocessing.is_file() else None
        return model.eval()


# A tokenizer directory needs its vocabulary: without one, transformers may build a tokenizer
# with an empty vocabulary that maps every word to [UNK] -- a model that silently ignores text.
_TOKENIZER_VOCAB_FILES = ("tokenizer.json", "vocab.txt")


def _check_tokenizer_files(assets: Path) -> None:
    if not any((assets / name).is_file() for name in _TOKENIZER_VOCAB_FILES):
        raise CheckpointError(
            f"{assets} has no tokenizer vocabulary ({' or '.join(_TOKENIZER_VOCAB_FILES)}): the model directory "
            f"is incomplete; copy it again or re-save it with save_pretrained"
        )


def _resolve_model_dir(name_or_path: str | os.PathLike) -> Path:
    path = Path(name_or_path)
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path} is a file; a lavt model directory or an official .pth checkpoint is expected")
        return path
    text = str(name_or_path)
    if text.startswith((".", "/", "~")) or os.sep in text and text.count("/") != 1:
        raise CheckpointError(f"model directory {text} does not exist")
    # A hub repo id ("user/lavt-swin-b-refcoco"): download the directory (needs internet).
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(text, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, PREPROCESSOR_NAME, f"{TEXT_ASSETS_DIR}/*"]))
    except Exception as e:
        raise CheckpointError(f"model {text!r} is neither a local directory nor a downloadable hub repo: {e}") from None


def load_state_dict_strict(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Strict load with a one-line message naming what does not fit (never a silent mismatch)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [k for k in own.keys() & state.keys() if own[k].shape != state[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            k = sorted(mismatched)[0]
            parts.append(
                f"{len(mismatched)} shape mismatch(es), e.g. {k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
            )
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}")
        raise CheckpointError(f"weights in {source} do not fit the model config: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
