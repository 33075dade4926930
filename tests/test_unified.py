"""Unified LAVT: single-stream inference equals running that path alone, both paths in training,
weights from an image and a video LAVT, save/load; and the bi-3D-PWAM switch."""

from __future__ import annotations

import pytest
import torch

from lavt.config import LAVTConfig
from lavt.errors import CheckpointError, ConfigError
from lavt.models.lavt import LAVT
from lavt.weights.unified import init_unified

DIMS = dict(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4), window_size=4, lang_dim=24, drop_path_rate=0.0)


def _video(**kw) -> LAVTConfig:
    return LAVTConfig(**DIMS, video=True, temporal_window=4, **kw)


def _inputs(b=2, t=3, h=40, w=36, seed=0):
    g = torch.Generator().manual_seed(seed)
    clip = torch.randn(b, t, 3, h, w, generator=g)
    words = torch.randn(b, 5, 24, generator=g)
    mask = torch.ones(b, 5, dtype=torch.long)
    mask[1, 2:] = 0
    return clip, words, mask


def _randomise(model: LAVT, seed: int) -> LAVT:
    """Random weights everywhere (norms, gates and BN statistics included) so copies are tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g) * 0.2 + (1.0 if name.endswith("running_var") else 0.0))
                if name.endswith("running_var"):
                    t.abs_()
    return model.eval()


def test_unified_needs_a_video_model():
    with pytest.raises(ConfigError, match="video"):
        LAVTConfig(**DIMS, unified=True)


def test_video_input_runs_only_the_video_swin_path():
    video = _randomise(LAVT(_video(pwam_structure=12)), 1)
    unified = _randomise(LAVT(_video(pwam_structure=12, unified=True)), 2)
    report = init_unified(unified, video_model=video)
    assert not any(".blocks2d." in k for k in report["from_video"])
    assert all(".blocks2d." in k for k in report["untouched"])
    clip, words, mask = _inputs()
    with torch.no_grad():
        expected = video(clip, text_features=words, text_mask=mask)
        got = unified(clip, text_features=words, text_mask=mask)
    assert torch.allclose(got, expected, atol=1e-5)


def test_image_input_runs_only_the_2d_path():
    """With 2D-compatible fusion (structure 1) the unified model on an image is exactly the image
    LAVT its 2D path came from."""
    image = _randomise(LAVT(LAVTConfig(**DIMS)), 3)
    unified = _randomise(LAVT(_video(pwam_structure=1, unified=True)), 4)
    report = init_unified(unified, image_model=image)
    assert any(".blocks2d." in k for k in report["from_image"])
    assert "backbone.patch_embed.proj.weight" in report["from_image"]
    clip, words, mask = _inputs(h=37, w=45)  # odd size: padding paths must agree too
    with torch.no_grad():
        expected = image(clip[:, 0], text_features=words, text_mask=mask)
        got = unified(clip[:, 0], text_features=words, text_mask=mask)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5)


def test_training_runs_both_paths_and_inference_one():
    torch.manual_seed(0)
    model = LAVT(_video(unified=True))
    clip, words, mask = _inputs()
    model.train()
    assert model.backbone.stream_for(is_image=False) == "dual"
    logits = model(clip, text_features=words, text_mask=mask)
    logits.logsumexp(2).mean().backward()
    b2d = model.backbone.stages[0].blocks2d[0].mlp[0].weight.grad
    b3d = model.backbone.stages[0].blocks[0].mlp[0].weight.grad
    assert b2d is not None and b2d.abs().sum() > 0 and b3d is not None and b3d.abs().sum() > 0
    model.eval()
    assert model.backbone.stream_for(is_image=False) == "3d" and model.backbone.stream_for(is_image=True) == "2d"
    with torch.no_grad():
        single = model(clip, text_features=words, text_mask=mask)
        model.stream = "dual"
        dual = model(clip, text_features=words, text_mask=mask)
        model.stream = "3d"
        forced = model(clip, text_features=words, text_mask=mask)
    assert torch.equal(single, forced)
    assert (single - dual).abs().max() > 1e-4  # the 2D path contributes in dual mode


def test_single_train_stream_uses_the_inputs_own_path():
    model = LAVT(_video(unified=True, unified_train_stream="single")).train()
    assert model.backbone.stream_for(is_image=True) == "2d"
    assert model.backbone.stream_for(is_image=False) == "3d"


def test_center_merge_changes_only_what_it_should():
    torch.manual_seed(0)
    broadcast = _randomise(LAVT(_video(unified=True, unified_merge="broadcast")), 5)
    center = LAVT(_video(unified=True, unified_merge="center")).eval()
    center.load_state_dict(broadcast.state_dict())
    stage = broadcast.backbone.stages[0]
    x = torch.randn(2, 3, 10, 9, 16)
    with torch.no_grad():
        vb = stage.run_blocks(x, "dual")
        vc = center.backbone.stages[0].run_blocks(x, "dual")
        v3 = stage.run_blocks(x, "3d")
    assert torch.allclose(vb[:, 1], vc[:, 1])  # the central frame gets the 2D output either way
    assert torch.allclose(vc[:, [0, 2]], v3[:, [0, 2]])  # "center": other frames untouched
    assert (vb[:, 0] - v3[:, 0]).abs().max() > 1e-4  # "broadcast": every frame gets it


def test_init_rejects_models_of_another_size():
    unified = LAVT(_video(unified=True))
    other = LAVT(LAVTConfig(**{**DIMS, "embed_dim": 32}))
    with pytest.raises(CheckpointError, match="embed_dim"):
        init_unified(unified, image_model=other)
    with pytest.raises(CheckpointError, match="video LAVT"):
        init_unified(unified, video_model=LAVT(LAVTConfig(**DIMS)))


def test_unified_round_trips_through_save_pretrained(tmp_path):
    model = _randomise(LAVT(_video(unified=True, bidirectional=True)), 6)
    model.save_pretrained(tmp_path / "u")
    again = LAVT.from_pretrained(tmp_path / "u")
    assert again.config == model.config
    clip, words, mask = _inputs()
    with torch.no_grad():
        for x in (clip, clip[:, 0]):
            assert torch.equal(model(x, text_features=words, text_mask=mask), again(x, text_features=words, text_mask=mask))


@pytest.mark.parametrize("video", [False, True])
def test_bidirectional_pwam_updates_words_between_stages(video):
    cfg = _video(bidirectional=True) if video else LAVTConfig(**DIMS, bidirectional=True)
    torch.manual_seed(0)
    model = LAVT(cfg)
    stages = model.backbone.stages
    assert [s.word_update is not None for s in stages] == [True, True, True, False]
    clip, words, mask = _inputs()
    x = clip if video else clip[:, 0]
    out = model(x, text_features=words, text_mask=mask)
    out.logsumexp(-3).mean().backward()
    assert stages[0].word_update.key.weight.grad.abs().sum() > 0
    plain = LAVT(LAVTConfig.from_dict({**cfg.to_dict(), "bidirectional": False}))
    _randomise(model, 7)  # the initial update is tiny (a near-zero tanh gate): make it matter
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert not missing and unexpected and all(".word_update." in k for k in unexpected)
    plain.eval()
    with torch.no_grad():
        # padded words must not change the update of real ones
        words2 = words.clone()
        words2[1, 2:] = 7.0
        a = model(x, text_features=words, text_mask=mask)
        b = model(x, text_features=words2, text_mask=mask)
        assert torch.allclose(a, b, atol=1e-5)
        assert (a - plain(x, text_features=words, text_mask=mask)).abs().max() > 1e-5


def test_trainer_initialises_a_unified_model_from_image_and_video_models(tmp_path):
    from lavt.engine.build import build_model
    from lavt.engine.config import load_run_config

    image = _randomise(LAVT(LAVTConfig(**DIMS)), 11)
    video = _randomise(LAVT(_video(pwam_structure=12)), 12)
    image.save_pretrained(tmp_path / "image")
    video.save_pretrained(tmp_path / "video")
    fields = {**DIMS, "video": True, "temporal_window": 4, "unified": True}
    overrides = [f"model.{k}={list(v) if isinstance(v, tuple) else v}" for k, v in fields.items()]
    cfg = load_run_config(None, [*overrides, f"train.init_image_model={tmp_path / 'image'}",
                                 f"train.init_video_model={tmp_path / 'video'}"])
    model = build_model(cfg)
    own = model.state_dict()
    assert torch.equal(own["backbone.stages.1.blocks2d.0.mlp.0.weight"], image.state_dict()["backbone.stages.1.blocks.0.mlp.0.weight"])
    assert torch.equal(own["backbone.stages.1.blocks.0.mlp.0.weight"], video.state_dict()["backbone.stages.1.blocks.0.mlp.0.weight"])
    assert torch.equal(own["decoder.conv1_4.weight"], video.state_dict()["decoder.conv1_4.weight"])
    bad = load_run_config(None, [*overrides[:-3], f"train.init_video_model={tmp_path / 'video'}"])
    with pytest.raises(ConfigError, match="unified"):
        build_model(bad)


def test_unified_paths_from_swin_and_video_swin_checkpoints():
    """The 2D path from a Swin ImageNet-22K classification checkpoint, the 3D path from a Video
    Swin Kinetics checkpoint (the two checkpoint kinds the paper starts from)."""
    from test_official import swin_classification_state
    from test_video_init import kinetics_checkpoint

    from lavt.weights.swin import init_backbone_from_video_swin
    from lavt.weights.unified import init_unified_2d_from_swin

    unified = LAVT(_video(unified=True))
    image_shaped = LAVT(LAVTConfig(**DIMS))
    swin_sd, mapping, _ = swin_classification_state(image_shaped)
    init_unified_2d_from_swin(unified, {"model": swin_sd})
    own = unified.state_dict()
    key = "backbone.stages.2.blocks.1.attn.qkv.weight"
    assert torch.equal(own[key.replace(".blocks.", ".blocks2d.")], swin_sd[mapping[key]])

    source = _randomise(LAVT(_video()), 21)
    ckpt, kin_mapping, _ = kinetics_checkpoint(source)
    before_2d = own["backbone.stages.0.blocks2d.0.mlp.0.weight"].clone()
    init_backbone_from_video_swin(unified, ckpt)
    own = unified.state_dict()
    key3d = "backbone.stages.1.blocks.0.mlp.0.weight"
    assert torch.equal(own[key3d], source.state_dict()[key3d])
    assert torch.equal(own["backbone.stages.0.blocks2d.0.mlp.0.weight"], before_2d)  # 2D path untouched
