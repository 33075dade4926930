"""Model assembly: ablation switches, shared-image batching, gradients, save/load, config checks."""

import json

import pytest
import torch

from lavt.config import LAVTConfig
from lavt.errors import CheckpointError, ConfigError, InputError
from lavt.models.decoder import Conv3x3, winograd_available
from lavt.models.lavt import LAVT

TINY = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=7, lang_dim=24)


def tiny(**overrides) -> LAVT:
    torch.manual_seed(0)
    return LAVT(LAVTConfig(**{**TINY, **overrides})).eval()


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    image = torch.randn(2, 3, 72, 88, generator=g)
    words = torch.randn(2, 6, 24, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    return image, words, mask


def run(model, inputs):
    image, words, mask = inputs
    with torch.no_grad():
        return model(image, text_features=words, text_mask=mask)


def test_default_is_the_paper_final_model():
    cfg = LAVTConfig()
    assert (cfg.fusion, cfg.pwam_norm, cfg.gate, cfg.decoder_features) == ("pwam", "instance", "tanh", "F")
    assert cfg.language_pathway and cfg.pwam_heads == (1, 1, 1, 1) and cfg.window_size == 12
    assert cfg.stage_dims == (128, 256, 512, 1024) and cfg.hidden_dim == 512


@pytest.mark.parametrize(
    "overrides",
    [
        dict(gate="sigmoid"),
        dict(gate="none"),
        dict(language_pathway=False),
        dict(pwam_norm="layer"),
        dict(pwam_norm="batch"),
        dict(pwam_norm="none"),
        dict(fusion="pooled"),
        dict(decoder_features="E"),
        dict(decoder_features="V"),
        dict(pwam_heads=(2, 2, 4, 4)),
        dict(pwam_activation="relu"),
        dict(gate_bias=True),
        dict(stage_norm=False),
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_every_ablation_switch_builds_runs_and_changes_the_output(overrides, inputs):
    base = tiny()
    # Official gate init (std 0.02) makes the gate nearly zero; widen it so the pathway matters.
    for name, p in base.named_parameters():
        if ".gate." in name:
            p.data.normal_(0, 0.5)
    ablated = tiny(**overrides)
    # Share every weight the two models have in common, so only the switch differs.
    shared = {k: v for k, v in base.state_dict().items() if k in ablated.state_dict()}
    shared = {k: v for k, v in shared.items() if ablated.state_dict()[k].shape == v.shape}
    ablated.load_state_dict(shared, strict=False)
    for name, p in ablated.named_parameters():
        if name not in shared and name.endswith(".bias"):
            p.data.normal_(0, 0.5)  # new biases start at zero: give them a value so they can act
    out_base, out_ablated = run(base, inputs), run(ablated, inputs)
    assert out_ablated.shape == out_base.shape == (2, 2, 72, 88)
    assert torch.isfinite(out_ablated).all()
    assert (out_ablated - out_base).abs().max() > 1e-4


def test_decoder_variants_read_the_documented_features(inputs):
    image, words, mask = inputs
    feats_v = tiny(decoder_features="V").stage_features(image, text_features=words, text_mask=mask)
    assert [f.shape[1] for f in feats_v] == [32, 64, 128]  # V_2..V_4: V_1 is language-free
    feats_f = tiny().stage_features(image, text_features=words, text_mask=mask)
    assert [tuple(f.shape[-2:]) for f in feats_f] == [(18, 22), (9, 11), (5, 6), (3, 3)]


def test_padded_words_do_not_matter(inputs):
    image, words, mask = inputs
    model = tiny()
    noisy = words.clone()
    noisy[mask == 0] = 1e3 * torch.randn_like(noisy[mask == 0])
    with torch.no_grad():
        a = model(image, text_features=words, text_mask=mask)
        b = model(image, text_features=noisy, text_mask=mask)
    assert torch.allclose(a, b, atol=1e-5)


def test_cutting_padding_columns_keeps_the_logits(inputs):
    from lavt.models.text import trim_padding

    image, words, mask = inputs
    mask = mask.clone()
    mask[1, 4:] = 0  # longest expression: 4 of 6 words
    ids, cut = trim_padding(torch.ones_like(mask), mask)
    assert cut.shape == (2, 4) and ids.shape == (2, 4)
    model = tiny()
    with torch.no_grad():
        full = model(image, text_features=words, text_mask=mask)
        short = model(image, text_features=words[:, :4], text_mask=cut)
    assert torch.allclose(full, short, atol=1e-5)
    assert trim_padding(torch.zeros(2, 6), torch.zeros(2, 6))[1].shape == (2, 1)  # all padding: one column


def test_one_image_many_expressions_equals_repeated_image(inputs):
    image, words, mask = inputs
    model = tiny()
    with torch.no_grad():
        shared = model(image[:1], text_features=words, text_mask=mask)
        repeated = model(image[:1].expand(2, -1, -1, -1), text_features=words, text_mask=mask)
    assert torch.allclose(shared, repeated, atol=1e-5)


def test_gradients_reach_every_parameter_except_the_dead_stage4_gate(inputs):
    image, words, mask = inputs
    model = tiny().train()
    logits = model(image, text_features=words.requires_grad_(), text_mask=mask)
    logits.logsumexp(1).mean().backward()
    no_grad = sorted(n for n, p in model.named_parameters() if p.grad is None)
    # Official behaviour: E_4 is never used, so the stage-4 gate gets no gradient.
    assert no_grad == ["backbone.stages.3.gate.0.weight", "backbone.stages.3.gate.2.weight"]
    assert words.grad is not None and words.grad[mask == 0].abs().max() == 0


def test_stage4_gate_is_used_when_the_decoder_reads_E(inputs):
    image, words, mask = inputs
    model = tiny(decoder_features="E").train()
    model(image, text_features=words, text_mask=mask).sum().backward()
    assert model.backbone.stages[3].gate[0].weight.grad is not None


def test_save_load_round_trip(tmp_path, inputs):
    model = tiny(gate="sigmoid", pwam_heads=(1, 2, 2, 4))
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    loaded = LAVT.from_pretrained(tmp_path / "m")
    assert loaded.config == model.config
    assert torch.equal(run(model, inputs), run(loaded, inputs))


def test_config_mismatch_is_one_clear_error(tmp_path):
    tiny().save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["embed_dim"] = 32
    cfg["num_heads"] = [1, 2, 4, 8]
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"do not fit the model config.*shape mismatch"):
        LAVT.from_pretrained(tmp_path / "m")


def test_unknown_config_field_and_bad_values_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="unknown config field"):
        LAVTConfig.from_dict({**TINY, "windw_size": 7})
    with pytest.raises(ConfigError, match="gate"):
        LAVTConfig(**TINY, gate="relu")
    with pytest.raises(ConfigError, match="not divisible"):
        LAVTConfig(**{**TINY, "num_heads": (3, 2, 2, 4)})
    with pytest.raises(ConfigError, match="unknown Swin preset"):
        LAVTConfig.from_preset("huge")


def test_presets_match_the_official_table():
    for size, dims in [("tiny", 96), ("small", 96), ("base", 128), ("large", 192)]:
        assert LAVTConfig.from_preset(size, 7).embed_dim == dims
    assert LAVTConfig.from_preset("small").depths == (2, 2, 18, 2)


def test_bad_tensor_inputs_are_named(inputs):
    image, words, mask = inputs
    model = tiny()
    with pytest.raises(InputError, match="text_features"):
        model(image, text_features=words[..., :10], text_mask=mask)
    with pytest.raises(InputError, match="2 images but 3 expressions"):
        model(image, text_features=words[[0, 1, 1]], text_mask=mask[[0, 1, 1]])
    with pytest.raises(ConfigError, match="no text encoder"):
        model(image, input_ids=torch.ones(2, 4, dtype=torch.long))


# ------------------------------------------------------------------ Winograd decoder convolutions
needs_nnpack = pytest.mark.skipif(not winograd_available(), reason="this PyTorch build / CPU has no NNPACK")


class _CountNNPACK:
    """Wraps torch._nnpack_spatial_convolution to count the calls that reach it."""

    def __init__(self, monkeypatch, fail: bool = False):
        self.calls = 0
        self._orig = torch._nnpack_spatial_convolution
        self._fail = fail
        monkeypatch.setattr(torch, "_nnpack_spatial_convolution", self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self._fail:
            raise RuntimeError("NNPACK SpatialConvolution_updateOutput failed")
        return self._orig(*args, **kwargs)


def test_decoder_convolutions_are_direct_by_default(inputs, monkeypatch):
    counter = _CountNNPACK(monkeypatch)
    run(tiny(), inputs)
    assert counter.calls == 0


@needs_nnpack
def test_winograd_decoder_matches_direct_convolution(inputs, monkeypatch):
    model = tiny()
    exact = run(model, inputs)
    assert model.use_winograd(True)
    counter = _CountNNPACK(monkeypatch)
    fast = run(model, inputs)
    assert counter.calls == 6  # the six 3x3 convolutions of the 4-map decoder
    assert fast.shape == exact.shape
    assert (fast - exact).abs().max().item() <= 1e-5 * max(1.0, exact.abs().max().item())
    # O(1) weights and inputs (outputs up to ~100): the error stays ~1e-5 of the largest output
    conv = model.decoder.conv2_2
    x = torch.randn(2, conv.in_channels, 23, 31)
    with torch.no_grad():
        w = conv.weight.clone()
        conv.weight.normal_()
        direct = torch.nn.functional.conv2d(x, conv.weight, padding=1)
        assert (conv(x) - direct).abs().max().item() <= 3e-5 * direct.abs().max().item()
        conv.weight.copy_(w)
    assert not model.use_winograd(False)
    assert torch.equal(run(model, inputs), exact)


@needs_nnpack
def test_winograd_is_never_used_where_autograd_or_autocast_runs(inputs, monkeypatch):
    model = tiny()
    model.use_winograd(True)
    counter = _CountNNPACK(monkeypatch)
    image, words, mask = inputs
    model(image, text_features=words, text_mask=mask).sum().backward()  # training: direct conv (has a backward)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(image, text_features=words, text_mask=mask)
    assert counter.calls == 0
    assert model.decoder.conv1_2.weight.grad is not None


@needs_nnpack
def test_winograd_failure_falls_back_to_direct_convolution_once(inputs, monkeypatch):
    model = tiny()
    exact = run(model, inputs)
    model.use_winograd(True)
    monkeypatch.setattr(Conv3x3, "_nnpack_failed", False)
    counter = _CountNNPACK(monkeypatch, fail=True)
    with pytest.warns(UserWarning, match="NNPACK Winograd convolution failed"):
        out = run(model, inputs)
    assert counter.calls == 1 and Conv3x3._nnpack_failed
    assert torch.equal(out, exact)
    run(model, inputs)
    assert counter.calls == 1  # no retry after a failure
