"""The tokenisation rules of LAVT, shared by the PyTorch tokenizer (``lavt.models.text``) and the
torch-free ONNX runtime (``lavt.onnx_runtime``): one place decides what an expression becomes.

An expression is encoded with the encoder's special tokens ([CLS] ... [SEP]). Blank text and text
without a known token are refused; mostly-[UNK] text and text longer than ``max_tokens`` warn.
``truncation="official"`` keeps the first ``max_tokens`` ids (a long expression loses its [SEP],
as in official LAVT); ``"standard"`` truncates the words so the [SEP] stays.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

from ..errors import ExpressionTruncatedWarning, InputError, UnknownWordsWarning


def shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def expression_ids(
    text: object,
    label: str,
    *,
    encode: Callable[[str], list[int]],
    encode_truncated: Callable[[str], list[int]],
    max_tokens: int,
    truncation: str,
    unk_id: int | None,
    num_special: int,
    stacklevel: int = 3,
) -> list[int]:
    """The token ids of one expression (at most ``max_tokens``), by the rules above.

    ``encode(text)``: ids with special tokens, untruncated; ``encode_truncated(text)``: the same
    truncated to ``max_tokens`` keeping the special tokens (used by ``"standard"``).
    ``label`` names the expression in messages ("expression 2").
    """
    if not isinstance(text, str):
        raise InputError(f"{label} must be a str, got {type(text).__name__}")
    if not text.strip():
        raise InputError(f"{label} is empty")
    ids = encode(text)
    if len(ids) <= num_special:
        raise InputError(f"{label} has no tokens the text encoder knows: {text!r}")
    # at least half [UNK]: emoji, or a script the vocabulary lacks (an English-only BERT reads
    # Chinese as [UNK]s), so the model sees almost no language
    words = ids[1:-1] if len(ids) > 2 else ids
    n_unk = sum(1 for i in words if i == unk_id)
    if unk_id is not None and words and 2 * n_unk >= len(words):
        warnings.warn(
            f"{label} {shorten(text)!r}: {n_unk} of its {len(words)} tokens are unknown to the text encoder's "
            f"vocabulary ([UNK]); the model sees little of it (write it in English)",
            UnknownWordsWarning,
            stacklevel=stacklevel,
        )
    if len(ids) <= max_tokens:
        return ids
    warnings.warn(
        f"{label} {shorten(text)!r} has {len(ids)} tokens (with [CLS] and [SEP]) but max_tokens is "
        f"{max_tokens}; it was truncated",
        ExpressionTruncatedWarning,
        stacklevel=stacklevel,
    )
    if truncation == "official":
        # Official LAVT cuts the encoded ids directly, dropping [SEP]; checkpoints trained
        # that way expect it, so this is the default.
        return ids[:max_tokens]
    return encode_truncated(text)
