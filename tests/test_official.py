"""Official checkpoints: parity with the official LAVT outputs, layouts (lavt / lavt_one / DDP),
invariants at odd input sizes, an independent check of the window attention, clear errors, and
initialisation from a Swin ImageNet classification checkpoint.

Run with HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 (everything here is local).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from cli_helpers import swin_checkpoint_name
from torchvision.models.swin_transformer import ShiftedWindowAttention

from lavt.config import LAVTConfig
from lavt.errors import CheckpointError
from lavt.models.lavt import LAVT
from lavt.models.swin import WindowAttention2d
from lavt.weights.official import (
    convert_image_state_dict,
    infer_config,
    load_official_checkpoint,
    split_official_checkpoint,
)
from lavt.weights.swin import init_backbone_from_swin, swin_checkpoint_config

PARITY = Path(__file__).resolve().parents[2] / "shared" / "parity"  # shared/ sits beside the repo
FIXTURE = PARITY / "lavt_ris_tiny_w7.pth"
FIXTURE_IO = PARITY / "lavt_ris_tiny_w7.io.pt"
needs_fixture = pytest.mark.skipif(not FIXTURE.is_file(), reason=f"parity fixture {FIXTURE} not available")

# Architecture of the fixture (embed 32, window 7); the Swin tests use the same dims with lang 64.
TINY = dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), lang_dim=64)


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def io():
    if not FIXTURE_IO.is_file():
        pytest.skip(f"{FIXTURE_IO} not available")
    return torch.load(FIXTURE_IO, weights_only=False)


@pytest.fixture(scope="module")
def fixture_sd():
    if not FIXTURE.is_file():
        pytest.skip(f"{FIXTURE} not available")
    return torch.load(FIXTURE, map_location="cpu", weights_only=False)["model"]


@pytest.fixture(scope="module")
def parity_model():
    if not FIXTURE.is_file():
        pytest.skip(f"{FIXTURE} not available")
    return load_official_checkpoint(FIXTURE)


def words_of(io):
    return io["lang_feats"].transpose(1, 2).contiguous(), io["lang_mask"]


# --------------------------------------------------------------------------------------------
# 1. parity with the official outputs
# --------------------------------------------------------------------------------------------
@needs_fixture
def test_parity_fixture_logits_and_stage_features(parity_model, io):
    words, mask = words_of(io)
    assert not parity_model.training
    with torch.no_grad():
        logits = parity_model(io["image"], text_features=words, text_mask=mask)
        feats = parity_model.stage_features(io["image"], text_features=words, text_mask=mask)
    assert logits.shape == io["expected_logits"].shape
    assert (logits - io["expected_logits"]).abs().max().item() <= 1e-4
    assert len(feats) == len(io["expected_stage_features"]) == 4
    for i, (ours, expected) in enumerate(zip(feats, io["expected_stage_features"])):
        assert ours.shape == expected.shape, f"stage {i + 1}"
        assert (ours - expected).abs().max().item() <= 1e-4, f"stage {i + 1}"


@needs_fixture
def test_parity_fixture_with_winograd_decoder(io):
    """The Winograd decoder convolutions (what ``lavt predict`` runs on CPU) stay within the
    parity tolerance of the official outputs."""
    model = load_official_checkpoint(FIXTURE)
    if not model.use_winograd(True):
        pytest.skip("this PyTorch build / CPU has no NNPACK")
    words, mask = words_of(io)
    with torch.no_grad():
        logits = model(io["image"], text_features=words, text_mask=mask)
    assert (logits - io["expected_logits"]).abs().max().item() <= 1e-4


@needs_fixture
def test_parity_fixture_inferred_config(parity_model, fixture_sd, io):
    cfg = parity_model.config
    expected = io["config"]
    assert cfg.embed_dim == expected["embed_dim"]
    assert list(cfg.depths) == list(expected["depths"])
    assert list(cfg.num_heads) == list(expected["num_heads"])
    assert cfg.window_size == expected["window_size"]
    assert cfg.lang_dim == expected["lang_dim"]
    assert cfg.text_encoder is None  # no BERT in the fixture: the model takes word features
    assert infer_config(fixture_sd) == cfg


# --------------------------------------------------------------------------------------------
# 2. invariants at sizes that are not multiples of the window or of 32
# --------------------------------------------------------------------------------------------
@needs_fixture
@pytest.mark.parametrize("size", [(200, 150), (97, 131)])
def test_odd_size_invariants(parity_model, io, size):
    g = torch.Generator().manual_seed(sum(size))
    image = torch.randn(2, 3, *size, generator=g)
    words, mask = words_of(io)
    assert (mask == 0).any(), "the fixture should contain padded words"
    with torch.no_grad():
        logits = parity_model(image, text_features=words, text_mask=mask)
        assert logits.shape == (2, 2, *size)
        assert torch.isfinite(logits).all()

        # padded words do not matter
        noisy = words.clone()
        pad = mask == 0
        noisy[pad] = 50.0 * torch.randn(int(pad.sum()), words.shape[-1], generator=g)
        assert (parity_model(image, text_features=noisy, text_mask=mask) - logits).abs().max().item() <= 1e-6

        # batch consistency: each sample alone equals its row of the batch
        for b in range(2):
            alone = parity_model(image[b : b + 1], text_features=words[b : b + 1], text_mask=mask[b : b + 1])
            torch.testing.assert_close(alone[0], logits[b], atol=1e-5, rtol=0)

        # one image shared by two expressions equals the image repeated
        shared = parity_model(image[:1], text_features=words, text_mask=mask)
        repeated = parity_model(image[:1].expand(2, -1, -1, -1), text_features=words, text_mask=mask)
        torch.testing.assert_close(shared, repeated, atol=1e-5, rtol=0)
        # the two expressions do give different masks' logits (the language is used)
        assert (shared[0] - shared[1]).abs().max().item() > 1e-3


# --------------------------------------------------------------------------------------------
# 3. window attention: torchvision and an explicit reference
# --------------------------------------------------------------------------------------------
def naive_window_attention(x: torch.Tensor, attn: torch.nn.Module, window: int, shift: int) -> torch.Tensor:
    """Official-style (mmseg Swin) window attention written out step by step, on (B, H, W, C):
    zero-pad right/bottom to a multiple of the window (pads are not masked), roll by -shift,
    region ids on the padded canvas (-100 between different regions), per window and head
    softmax(Q K^T * scale + bias + mask) V, output projection, roll back, crop."""
    b, h, w, c = x.shape
    heads = attn.num_heads
    hd = c // heads
    hp, wp = -(-h // window) * window, -(-w // window) * window
    canvas = x.new_zeros(b, hp, wp, c)
    canvas[:, :h, :w] = x
    if shift:
        canvas = torch.roll(canvas, shifts=(-shift, -shift), dims=(1, 2))
    region = torch.zeros(hp, wp, dtype=torch.long)
    if shift:
        n = 0
        for rows in (slice(0, hp - window), slice(hp - window, hp - shift), slice(hp - shift, hp)):
            for cols in (slice(0, wp - window), slice(wp - window, wp - shift), slice(wp - shift, wp)):
                region[rows, cols] = n
                n += 1
    coords = [(i, j) for i in range(window) for j in range(window)]
    n_tok = len(coords)
    table = attn.relative_position_bias_table.detach()
    bias = torch.empty(heads, n_tok, n_tok)
    for p, (i1, j1) in enumerate(coords):
        for q, (i2, j2) in enumerate(coords):
            bias[:, p, q] = table[(i1 - i2 + window - 1) * (2 * window - 1) + (j1 - j2 + window - 1)]
    wq, bq = attn.qkv.weight.detach(), attn.qkv.bias.detach()
    wo, bo = attn.proj.weight.detach(), attn.proj.bias.detach()
    out = torch.zeros_like(canvas)
    for bi in range(b):
        for r0 in range(0, hp, window):
            for c0 in range(0, wp, window):
                tokens = canvas[bi, r0 : r0 + window, c0 : c0 + window].reshape(n_tok, c)
                ids = region[r0 : r0 + window, c0 : c0 + window].reshape(n_tok)
                mask = torch.where(ids[:, None] == ids[None, :], 0.0, -100.0)
                q, k, v = (tokens @ wq.T + bq).view(n_tok, 3, heads, hd).unbind(1)
                per_head = []
                for hh in range(heads):
                    scores = q[:, hh] @ k[:, hh].T * hd**-0.5 + bias[hh] + mask
                    per_head.append(torch.softmax(scores, dim=-1) @ v[:, hh])
                o = torch.cat(per_head, dim=-1) @ wo.T + bo
                out[bi, r0 : r0 + window, c0 : c0 + window] = o.view(window, window, c)
    if shift:
        out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
    return out[:, :h, :w]


def make_attention_pair(dim, heads, window, shift, seed):
    torch.manual_seed(seed)
    ours = WindowAttention2d(dim, [window, window], [shift, shift], heads).eval()
    with torch.no_grad():  # weights large enough for the bias, mask and attention to matter
        ours.relative_position_bias_table.normal_(0, 1.0)
        ours.qkv.weight.normal_(0, 0.4)
        ours.qkv.bias.normal_(0, 0.5)
        ours.proj.weight.normal_(0, 0.3)
        ours.proj.bias.normal_(0, 0.1)
    reference = ShiftedWindowAttention(dim, [window, window], [shift, shift], heads).eval()
    missing, unexpected = reference.load_state_dict(ours.state_dict(), strict=False)
    assert not unexpected and set(missing) <= {"relative_position_index"}
    torch.testing.assert_close(reference.relative_position_index, ours.relative_position_index, atol=0, rtol=0)
    return ours, reference


@pytest.mark.parametrize(
    "shape, heads, window",
    [((1, 23, 17, 16), 2, 7), ((2, 23, 17, 16), 2, 7), ((1, 30, 30, 12), 3, 12)],
)
@pytest.mark.parametrize("shifted", [False, True])
def test_window_attention_matches_torchvision_when_map_exceeds_window(shape, heads, window, shifted):
    shift = window // 2 if shifted else 0
    ours, reference = make_attention_pair(shape[-1], heads, window, shift, seed=shape[1] + window + shift)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        y = ours(x)
        torch.testing.assert_close(y, reference(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(y, naive_window_attention(x, ours, window, shift), atol=1e-5, rtol=1e-5)
    if shifted:  # the shift really changes the result (else the test would be vacuous)
        with torch.no_grad():
            unshifted = naive_window_attention(x, ours, window, 0)
        assert (y - unshifted).abs().max().item() > 1e-3


@pytest.mark.parametrize("shape, window", [((1, 7, 7, 16), 7), ((1, 5, 6, 16), 7)])
def test_window_attention_keeps_the_shift_when_map_fits_in_one_window(shape, window):
    shift = window // 2
    ours, reference = make_attention_pair(shape[-1], 2, window, shift, seed=3)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        y = ours(x)
        torch.testing.assert_close(y, naive_window_attention(x, ours, window, shift), atol=1e-5, rtol=1e-5)
        # torchvision drops the shift when the (padded) map is not larger than the window
        tv = reference(x)
        torch.testing.assert_close(tv, naive_window_attention(x, ours, window, 0), atol=1e-5, rtol=1e-5)
    assert (y - tv).abs().max().item() > 1e-3


# --------------------------------------------------------------------------------------------
# 4. checkpoint layouts with BERT: lavt (separate bert_model), lavt_one (text_encoder.*), DDP
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A 1-layer BERT with the fixture's 768-wide words and MiniLM's vocabulary/tokenizer."""
    import transformers

    from lavt.models.text import resolve_text_encoder

    try:
        minilm = Path(resolve_text_encoder("minilm"))
    except Exception as e:  # pragma: no cover - depends on the optional package
        pytest.skip(f"MiniLM tokenizer not available: {e}")
    directory = tmp_path_factory.mktemp("tiny_bert")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (minilm / name).is_file():
            shutil.copy(minilm / name, directory / name)
    config = transformers.BertConfig(
        vocab_size=30522, hidden_size=768, num_hidden_layers=1, num_attention_heads=12, intermediate_size=64
    )
    config.save_pretrained(str(directory))
    torch.manual_seed(5)
    bert = transformers.BertModel(config, add_pooling_layer=False).eval()
    with torch.no_grad():  # non-trivial LayerNorms so a missed copy would show
        for name, p in bert.named_parameters():
            if "LayerNorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return directory, bert


def _official_args(model: str) -> argparse.Namespace:
    return argparse.Namespace(model=model, swin_type="tiny", window12=False, ck_bert="bert-base-uncased", lr=5e-5)


@needs_fixture
@pytest.mark.parametrize("layout", ["lavt", "lavt_one", "lavt_ddp", "lavt_one_ddp"])
def test_official_layouts_with_bert(layout, tiny_bert, fixture_sd, parity_model, tmp_path):
    from lavt.models.text import Tokenizer, encode_text

    bert_dir, bert = tiny_bert
    bert_sd = {k: v.clone() for k, v in bert.state_dict().items()}
    ddp = layout.endswith("_ddp")
    pre = "module." if ddp else ""
    pooler = {"pooler.dense.weight": torch.randn(768, 768), "pooler.dense.bias": torch.zeros(768)} if ddp else {}
    if layout.startswith("lavt_one"):
        model_sd = {**fixture_sd, **{f"text_encoder.{k}": v for k, v in {**bert_sd, **pooler}.items()}}
        ckpt = {"model": {pre + k: v for k, v in model_sd.items()}, "args": _official_args("lavt_one"), "epoch": 39}
    else:
        ckpt = {
            "model": {pre + k: v for k, v in fixture_sd.items()},
            "bert_model": {pre + k: v for k, v in {**bert_sd, **pooler}.items()},
            "args": _official_args("lavt"),
            "epoch": 39,
        }
    path = tmp_path / f"model_best_{layout}.pth"
    torch.save(ckpt, path)

    model = load_official_checkpoint(path, text_encoder=str(bert_dir), max_tokens=20)
    path.unlink()
    assert not model.training
    assert model.text_encoder is not None
    assert model.config.text_encoder.name_or_path == str(bert_dir)
    assert model.config.text_encoder.max_tokens == 20
    loaded = model.text_encoder.state_dict()
    assert set(loaded) == set(bert_sd)
    for k, v in bert_sd.items():
        assert torch.equal(loaded[k], v), k
    own = model.state_dict()
    for k, v in convert_image_state_dict(fixture_sd).items():
        assert torch.equal(own[k], v), k

    tokenizer = Tokenizer(str(bert_dir), max_tokens=20)
    ids, mask = tokenizer(["the man on the left in a red shirt", "a car"])
    image = torch.randn(2, 3, 96, 80, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = model(image, ids, mask)
        words = encode_text(bert, ids, mask)  # the reference BERT that was saved
        expected = parity_model(image, text_features=words, text_mask=mask)
    assert logits.shape == (2, 2, 96, 80)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


@needs_fixture
def test_bert_weights_must_fit_the_text_encoder(tiny_bert, fixture_sd, tmp_path):
    """Old-transformers buffers are tolerated; a BERT deeper than the encoder config is not dropped silently."""
    import transformers

    bert_dir, bert = tiny_bert
    old_style = dict(bert.state_dict())
    old_style["embeddings.position_ids"] = torch.arange(512)[None]  # saved by transformers 3.x
    path = tmp_path / "old_hf.pth"
    torch.save({"model": fixture_sd, "bert_model": old_style}, path)
    model = load_official_checkpoint(path, text_encoder=str(bert_dir))
    assert torch.equal(model.text_encoder.state_dict()["encoder.layer.0.output.dense.weight"],
                       old_style["encoder.layer.0.output.dense.weight"])

    deeper_config = transformers.BertConfig.from_pretrained(str(bert_dir), num_hidden_layers=2)
    deeper = transformers.BertModel(deeper_config, add_pooling_layer=False).state_dict()
    torch.save({"model": fixture_sd, "bert_model": deeper}, path)
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\), e\.g\. text_encoder\.encoder\.layer\.1\."):
        load_official_checkpoint(path, text_encoder=str(bert_dir))


# --------------------------------------------------------------------------------------------
# 5. errors users see as one line
# --------------------------------------------------------------------------------------------
def test_error_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_official_checkpoint(tmp_path / "nope.pth")


def test_error_not_a_torch_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*notes\.pth"):
        load_official_checkpoint(path)


def test_error_unknown_layout(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"model": {"encoder.conv.weight": torch.zeros(2, 2)}, "epoch": 1}, path)
    with pytest.raises(CheckpointError, match=r"not an official LAVT checkpoint \(no 'backbone.layers"):
        load_official_checkpoint(path)
    with pytest.raises(CheckpointError, match="not an official LAVT checkpoint"):
        split_official_checkpoint({"model": {"encoder.conv.weight": torch.zeros(2, 2)}})


def test_error_checkpoint_without_state_dict(tmp_path):
    path = tmp_path / "args_only.pth"
    torch.save({"args": _official_args("lavt"), "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="no state dict found"):
        load_official_checkpoint(path)


@needs_fixture
@pytest.mark.parametrize(
    "official_key, our_key",
    [
        ("backbone.layers.1.blocks.1.mlp.fc1.weight", "backbone.stages.1.blocks.1.mlp.0.weight"),
        ("backbone.layers.2.fusion.image_lang_att.f_value.0.weight", "backbone.stages.2.fusion.value.weight"),
        ("backbone.layers.3.blocks.1.attn.relative_position_bias_table", None),
        ("classifier.conv2_3.weight", "decoder.conv2_3.weight"),
    ],
)
def test_error_altered_tensor_shape(fixture_sd, tmp_path, official_key, our_key):
    our_key = our_key or official_key.replace("layers", "stages")
    sd = dict(fixture_sd)
    old_shape = tuple(sd[official_key].shape)
    sd[official_key] = torch.zeros(old_shape[0] + 1, *old_shape[1:])
    path = tmp_path / "altered.pth"
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointError) as info:
        load_official_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message
    assert our_key in message
    new_shape = (old_shape[0] + 1, *old_shape[1:])
    if official_key.endswith(".0.weight") and len(old_shape) == 3:  # Conv1d k=1 -> Linear
        old_shape, new_shape = old_shape[:-1], new_shape[:-1]
    assert str(new_shape) in message and str(old_shape) in message


@needs_fixture
@pytest.mark.parametrize(
    "edit, expected",
    [
        (
            {"window_size": 12},
            r"backbone\.stages\.\d\.blocks\.\d\.attn\.relative_position_bias_table: "
            r"checkpoint \(169, \d\) vs model \(529, \d\)",
        ),
        ({"depths": [2, 2, 3, 2]}, r"missing key\(s\), e\.g\. backbone\.stages\.2\.blocks\.2\."),
        ({"lang_dim": 384}, r"fusion\.(key|value)\.weight: checkpoint \(\d+, 768\) vs model \(\d+, 384\)"),
    ],
)
def test_error_from_pretrained_with_edited_config(parity_model, tmp_path, edit, expected):
    directory = parity_model.save_pretrained(tmp_path / "saved")
    reloaded = LAVT.from_pretrained(directory)  # sanity: the untouched directory loads
    for (k, a), b in zip(parity_model.state_dict().items(), reloaded.state_dict().values()):
        assert torch.equal(a, b), k
    config = json.loads((directory / "config.json").read_text())
    config.update(edit)
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"do not fit the model config") as info:
        LAVT.from_pretrained(directory)
    assert re.search(expected, str(info.value)), str(info.value)


# --------------------------------------------------------------------------------------------
# 6. initialisation from a Swin ImageNet classification checkpoint
# --------------------------------------------------------------------------------------------
def tiny_model(window: int = 7, seed: int = 0, **overrides) -> LAVT:
    torch.manual_seed(seed)
    return LAVT(LAVTConfig(**{**TINY, "window_size": window, **overrides})).eval()


def swin_classification_state(model: LAVT, seed: int = 123, num_classes: int = 1000):
    """A classification checkpoint in the official key layout built from ``model``'s Swin shapes,
    with random values, plus head / final norm / relative_position_index / attn_mask entries.
    -> (state dict, {our key: official key}, the extra keys)."""
    g = torch.Generator().manual_seed(seed)
    sd, mapping = {}, {}
    for ours, value in model.state_dict().items():
        official = swin_checkpoint_name(ours)
        if official is not None:
            sd[official] = torch.randn(value.shape, generator=g)
            mapping[ours] = official
    cfg = model.config
    n = cfg.window_size**2
    extras = {}
    for i, depth in enumerate(cfg.depths):
        for j in range(depth):
            extras[f"layers.{i}.blocks.{j}.attn.relative_position_index"] = torch.randint(0, 10, (n, n))
            if j % 2:
                extras[f"layers.{i}.blocks.{j}.attn_mask"] = torch.zeros(4, n, n)
    width = cfg.stage_dims[-1]
    extras.update(
        {
            "head.weight": torch.randn(num_classes, width, generator=g),
            "head.bias": torch.zeros(num_classes),
            "norm.weight": torch.ones(width),
            "norm.bias": torch.zeros(width),
        }
    )
    sd.update(extras)
    return sd, mapping, sorted(extras)


def _snapshot(model: LAVT) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("wrapping", ["file_model", "bare", "state_dict_module", "upernet_file"])
def test_init_backbone_from_swin(wrapping, tmp_path, caplog):
    source_sd, mapping, extras = swin_classification_state(tiny_model(seed=1))
    target = tiny_model(seed=2)
    before = _snapshot(target)
    expected_ignored = set(extras)
    if wrapping == "file_model":
        arg = tmp_path / "swin_tiny_patch4_window7_224_22k.pth"
        torch.save({"model": source_sd}, arg)
    elif wrapping == "bare":
        arg = dict(source_sd)
    elif wrapping == "state_dict_module":
        arg = {"state_dict": {f"module.{k}": v for k, v in source_sd.items()}, "meta": {"epoch": 90}}
    else:  # mmseg UperNet: backbone.* + decode_head.* (+ the per-stage out norms norm0..3)
        sd = {f"backbone.{k}": v for k, v in source_sd.items()}
        sd["backbone.norm0.weight"] = torch.ones(32)
        sd["decode_head.conv_seg.weight"] = torch.zeros(150, 512, 1, 1)
        arg = tmp_path / "upernet_swin.pth"
        torch.save({"state_dict": sd, "meta": {}}, arg)
        expected_ignored |= {"norm0.weight", "decode_head.conv_seg.weight"}

    with caplog.at_level(logging.INFO, logger="lavt.weights.swin"):
        report = init_backbone_from_swin(target, arg)

    after = target.state_dict()
    for ours, official in mapping.items():
        assert torch.equal(after[ours], source_sd[official]), ours
    swin_keys = set(mapping)
    assert len(swin_keys) == 4 + 8 * 13 + 3 * 3  # patch embed, 8 blocks x 13, 3 patch mergings
    for k, v in before.items():
        if k not in swin_keys:  # fusion, gates, out_norms, decoder untouched
            assert torch.equal(after[k], v), k
    assert sorted(report) == ["ignored", "loaded", "missing", "resized"]
    assert set(report["loaded"]) == swin_keys and len(report["loaded"]) == len(swin_keys)
    assert report["resized"] == [] and report["missing"] == []
    assert set(report["ignored"]) == expected_ignored
    summary = [r.getMessage() for r in caplog.records if r.name == "lavt.weights.swin"]
    assert len(summary) == 1 and "initialised 117 Swin weights" in summary[0] and "\n" not in summary[0]

    with torch.no_grad():  # the initialised model runs at an odd size
        out = target(torch.randn(1, 3, 75, 61), text_features=torch.randn(1, 4, 64))
    assert out.shape == (1, 2, 75, 61) and torch.isfinite(out).all()


def test_swin_checkpoint_config():
    sd, _, _ = swin_classification_state(tiny_model(window=12))
    expected = dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=12)
    assert swin_checkpoint_config(sd) == expected
    assert swin_checkpoint_config({"model": sd}) == expected
    assert swin_checkpoint_config({"state_dict": {f"module.backbone.{k}": v for k, v in sd.items()}}) == expected
    deeper, _, _ = swin_classification_state(tiny_model(depths=(2, 2, 6, 2), num_heads=(2, 4, 8, 16)))
    assert swin_checkpoint_config(deeper) == dict(
        embed_dim=32, depths=(2, 2, 6, 2), num_heads=(2, 4, 8, 16), window_size=7
    )


def _resized(table: torch.Tensor, side: int) -> torch.Tensor:
    heads, old = table.shape[1], int(table.shape[0] ** 0.5)
    image = table.t().reshape(1, heads, old, old)
    return F.interpolate(image, size=(side, side), mode="bicubic", align_corners=False).reshape(heads, -1).t()


def test_init_resizes_window12_tables_into_window7_model():
    source_sd, mapping, _ = swin_classification_state(tiny_model(window=12, seed=1))
    assert source_sd["layers.0.blocks.0.attn.relative_position_bias_table"].shape == (529, 1)
    target = tiny_model(window=7, seed=2)
    report = init_backbone_from_swin(target, {"model": source_sd})
    after = target.state_dict()
    tables = [k for k in mapping if k.endswith("relative_position_bias_table")]
    assert len(tables) == 8
    assert sorted(report["resized"]) == sorted(tables)
    for ours in tables:
        src = source_sd[mapping[ours]]
        assert after[ours].shape == (169, src.shape[1])
        torch.testing.assert_close(after[ours], _resized(src, 13), atol=1e-6, rtol=0)
        assert not torch.equal(after[ours][:, 0], src[:169, 0])
    for ours, official in mapping.items():
        if ours not in tables:
            assert torch.equal(after[ours], source_sd[official]), ours
    assert report["missing"] == []


def test_init_resizes_only_the_clamped_stage():
    # e.g. swin_large_patch4_window12_192_22k: stage 4 (6x6 map) was built with window 6 -> 11x11 table
    source_sd, mapping, _ = swin_classification_state(tiny_model(window=12, seed=1))
    for j in range(2):
        source_sd[f"layers.3.blocks.{j}.attn.relative_position_bias_table"] = torch.randn(121, 8)
    assert swin_checkpoint_config(source_sd)["window_size"] == 12
    target = tiny_model(window=12, seed=2)
    report = init_backbone_from_swin(target, source_sd)
    assert sorted(report["resized"]) == [
        f"backbone.stages.3.blocks.{j}.attn.relative_position_bias_table" for j in range(2)
    ]
    table = target.state_dict()["backbone.stages.3.blocks.1.attn.relative_position_bias_table"]
    torch.testing.assert_close(table, _resized(source_sd["layers.3.blocks.1.attn.relative_position_bias_table"], 23))


@pytest.mark.parametrize(
    "source_kwargs, expected",
    [
        (dict(depths=(2, 2, 4, 2)), r"layers\.2 has 4 blocks .* vs model 2"),
        (
            dict(num_heads=(1, 2, 4, 4)),
            r"layers\.3\.blocks\.0\.attn\.relative_position_bias_table \(169, 4\): 4 heads vs model 8",
        ),
        (dict(embed_dim=48), r"patch_embed\.proj\.weight \(48, 3, 4, 4\): embed_dim 48 vs model 32"),
    ],
)
def test_init_architecture_mismatch_raises(source_kwargs, expected):
    source_sd, _, _ = swin_classification_state(tiny_model(**source_kwargs))
    target = tiny_model(seed=2)
    before = _snapshot(target)
    with pytest.raises(CheckpointError, match=expected) as info:
        init_backbone_from_swin(target, {"model": source_sd})
    assert "\n" not in str(info.value)
    for k, v in target.state_dict().items():
        assert torch.equal(v, before[k]), k  # nothing was loaded


@pytest.mark.parametrize(
    "key, shape",
    [
        ("layers.1.blocks.0.attn.qkv.weight", (195, 64)),
        ("layers.2.downsample.reduction.weight", (256, 512 + 4)),
        ("patch_embed.proj.weight", (32, 3, 2, 2)),
        ("layers.0.blocks.1.attn.relative_position_bias_table", (169, 3)),
    ],
)
def test_init_single_shape_mismatch_names_key_and_shapes(key, shape):
    source_sd, _, _ = swin_classification_state(tiny_model(seed=1))
    model_shape = tuple(source_sd[key].shape)
    source_sd[key] = torch.randn(shape)
    target = tiny_model(seed=2)
    before = _snapshot(target)
    with pytest.raises(CheckpointError) as info:
        init_backbone_from_swin(target, {"model": source_sd})
    message = str(info.value)
    assert key in message and str(tuple(shape)) in message and str(model_shape) in message, message
    for k, v in target.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize(
    "extra, expected",
    [
        ({"layers.0.blocks.0.attn.logit_scale": torch.zeros(1, 1, 1)}, r"no place for, e\.g\. layers\.0\.blocks\.0\.attn"),
        ({"layers.3.downsample.reduction.weight": torch.zeros(512, 1024)}, r"no place for, e\.g\. layers\.3\.downsample"),
        ({"fpn.conv.weight": torch.zeros(1)}, r"no place for, e\.g\. fpn\.conv\.weight"),
    ],
)
def test_init_unknown_swin_keys_raise(extra, expected):
    source_sd, _, _ = swin_classification_state(tiny_model(seed=1))
    with pytest.raises(CheckpointError, match=expected):
        init_backbone_from_swin(tiny_model(seed=2), {**source_sd, **extra})


def test_init_rejects_non_swin_inputs(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        init_backbone_from_swin(tiny_model(), tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="not a Swin checkpoint"):
        init_backbone_from_swin(tiny_model(), {"model": {"conv1.weight": torch.zeros(3)}})
    with pytest.raises(CheckpointError, match="no state dict"):
        init_backbone_from_swin(tiny_model(), {"epoch": 3})


@needs_fixture
def test_init_from_an_official_lavt_file_loads_only_swin(fixture_sd):
    target = tiny_model(seed=3)  # lang_dim 64: the fixture's 768-wide PWAMs must be ignored
    before = _snapshot(target)
    report = init_backbone_from_swin(target, FIXTURE)
    converted = convert_image_state_dict(fixture_sd)
    after = target.state_dict()
    for k in report["loaded"]:
        assert torch.equal(after[k], converted[k]), k
    assert len(report["loaded"]) == 117 and report["missing"] == [] and report["resized"] == []
    assert any(".fusion." in k for k in report["ignored"])
    assert any(k.startswith("classifier.") for k in report["ignored"])
    for k, v in before.items():
        if k not in report["loaded"]:
            assert torch.equal(after[k], v), k
