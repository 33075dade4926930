"""Video LAVT initialisation: Video Swin Kinetics checkpoints (mmaction layout) into the video
backbone, and inflation of an image LAVT into a video LAVT (tiled relative-position tables,
unsqueezed patch kernel, PWAM copied / dropped / 1x1x1-seeded).

Everything is tiny and written by the tests themselves (the parity fixtures are used when present).
Run with HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from cli_helpers import swin_checkpoint_name

from lavt.config import LAVTConfig
from lavt.errors import CheckpointError, ConfigError
from lavt.models.lavt import LAVT
from lavt.models.swin import WindowAttention2d, WindowAttention3d
from lavt.weights.inflate import inflate_image_lavt
from lavt.weights.official import (
    convert_image_state_dict,
    infer_config,
    load_official_checkpoint,
    read_checkpoint,
)
from lavt.weights.swin import (
    inflate_relative_position_bias_table,
    init_backbone_from_video_swin,
    resize_relative_position_bias_table,
    resize_video_relative_position_bias_table,
    video_swin_checkpoint_config,
)

PARITY = Path(__file__).resolve().parents[2] / "shared" / "parity"
IMAGE_FIXTURE = PARITY / "lavt_ris_tiny_w7.pth"
VIDEO_FIXTURE = PARITY / "lavt_rs_video_pwam3d_s12_tiny.pth"

TINY = dict(embed_dim=16, depths=(2, 2, 1, 1), num_heads=(1, 2, 2, 4), lang_dim=8, window_size=3, drop_path_rate=0.0)
TABLE = "attn.relative_position_bias_table"


def image_model(seed: int = 0, **overrides) -> LAVT:
    torch.manual_seed(seed)
    return LAVT(LAVTConfig(**{**TINY, **overrides})).eval()


def video_model(seed: int = 0, **overrides) -> LAVT:
    fields = {**TINY, "video": True, "temporal_window": 2, "pwam_structure": 12, **overrides}
    torch.manual_seed(seed)
    return LAVT(LAVTConfig(**fields)).eval()


def randomise(model: LAVT, seed: int = 7) -> LAVT:
    """Large random weights everywhere (tables std 1), so a wrong mapping changes the output a lot."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 1.0 if name.endswith(TABLE) else 0.1
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


def snapshot(model: LAVT) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: LAVT, before: dict[str, torch.Tensor]) -> None:
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def words(batch: int = 2, length: int = 5, dim: int = 8):
    g = torch.Generator().manual_seed(3)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[-1, 3:] = 0
    return torch.randn(batch, length, dim, generator=g), mask


# --------------------------------------------------------------------------------------------
# Video Swin Kinetics checkpoints
# --------------------------------------------------------------------------------------------
def kinetics_checkpoint(source: LAVT, patch_t: int = 2, seed: int = 123):
    """mmaction-style ``{'state_dict', 'meta'}`` from ``source``'s own Swin weights: official names
    + ``backbone.``, a (C, 3, patch_t, p, p) patch kernel whose temporal sum is ``source``'s kernel,
    relative_position_index buffers, the final norm and a cls_head.
    -> (checkpoint, {our key: checkpoint key}, keys the loader must report as ignored)."""
    g = torch.Generator().manual_seed(seed)
    sd, mapping = {}, {}
    for ours, value in source.state_dict().items():
        name = swin_checkpoint_name(ours)
        if name is None:
            continue
        if name == "patch_embed.proj.weight":
            parts = [torch.randn(value.shape, generator=g) for _ in range(patch_t - 1)]
            parts.append(value - sum(parts) if parts else value)
            value = torch.cat(parts, dim=2)  # (C, 3, patch_t, p, p)
        sd[f"backbone.{name}"] = value.clone()
        mapping[ours] = name
    cfg = source.config
    n = cfg.temporal_window * cfg.window_size**2
    ignored = []
    for i, depth in enumerate(cfg.depths):
        for j in range(depth):
            sd[f"backbone.layers.{i}.blocks.{j}.attn.relative_position_index"] = torch.randint(0, 10, (n, n))
            ignored.append(f"layers.{i}.blocks.{j}.attn.relative_position_index")
    width = cfg.stage_dims[-1]
    sd["backbone.norm.weight"], sd["backbone.norm.bias"] = torch.ones(width), torch.zeros(width)
    sd["cls_head.fc_cls.weight"], sd["cls_head.fc_cls.bias"] = torch.randn(400, width, generator=g), torch.zeros(400)
    ignored += ["norm.weight", "norm.bias", "cls_head.fc_cls.weight", "cls_head.fc_cls.bias"]
    return {"state_dict": sd, "meta": {"epoch": 30}}, mapping, ignored


@pytest.mark.parametrize("wrapping", ["mmaction_file", "dict"])
def test_init_from_kinetics_checkpoint(wrapping, tmp_path, caplog):
    source = video_model(seed=1)
    ckpt, mapping, expected_ignored = kinetics_checkpoint(source)
    kernel = ckpt["state_dict"]["backbone.patch_embed.proj.weight"]
    assert kernel.shape == (16, 3, 2, 4, 4)
    target = video_model(seed=2)
    before = snapshot(target)
    arg = ckpt
    if wrapping == "mmaction_file":
        arg = tmp_path / "swin_tiny_patch244_window877_kinetics400_1k.pth"
        torch.save(ckpt, arg)
    with caplog.at_level(logging.INFO, logger="lavt.weights.swin"):
        report = init_backbone_from_video_swin(target, arg)

    after, src = target.state_dict(), source.state_dict()
    assert len(mapping) == 4 + 6 * 13 + 3 * 3  # patch embed, 6 blocks x 13 tensors, 3 patch mergings
    patch = "backbone.patch_embed.proj.weight"
    assert after[patch].shape == (16, 3, 1, 4, 4)
    assert torch.equal(after[patch], kernel[:, :, :1] + kernel[:, :, 1:])  # summed over time, keepdim
    torch.testing.assert_close(after[patch], src[patch], atol=1e-6, rtol=0)
    assert not torch.allclose(after[patch], kernel[:, :, :1])  # not just the first temporal slice
    for ours in mapping:
        if ours != patch:
            assert torch.equal(after[ours], src[ours]), ours
        if ours.endswith(".weight") and ".norm" not in ours:  # random before: the load changed them
            assert not torch.equal(before[ours], src[ours]), ours
    for k, v in before.items():
        if k not in mapping:  # fusion, gates, out_norms, decoder untouched
            assert torch.equal(after[k], v), k
    assert sorted(report) == ["ignored", "loaded", "missing", "resized"]
    assert set(report["loaded"]) == set(mapping) and report["missing"] == [] and report["resized"] == []
    assert sorted(report["ignored"]) == sorted(expected_ignored)
    summary = [r.getMessage() for r in caplog.records if r.name == "lavt.weights.swin"]
    assert len(summary) == 1 and "initialised 91 Video Swin weights" in summary[0] and "\n" not in summary[0]
    with torch.no_grad():
        out = target(torch.randn(1, 3, 3, 45, 37), text_features=torch.randn(1, 4, 8))
    assert out.shape == (1, 3, 2, 45, 37) and torch.isfinite(out).all()


def test_video_swin_checkpoint_config():
    ckpt, _, _ = kinetics_checkpoint(video_model(seed=1, temporal_window=4, window_size=4))
    expected = dict(
        embed_dim=16, depths=(2, 2, 1, 1), num_heads=(1, 2, 2, 4), window_size=(4, 4, 4), patch_size=(2, 4, 4)
    )
    assert video_swin_checkpoint_config(ckpt) == expected
    bare = {k.removeprefix("backbone."): v for k, v in ckpt["state_dict"].items() if "relative_position_index" not in k}
    assert video_swin_checkpoint_config(bare)["window_size"] == (4, 4, 4)  # from the table rows alone


@pytest.mark.parametrize(
    "source_kwargs, patch_t, expected",
    [
        (dict(depths=(2, 2, 2, 1)), 2, r"layers\.2 has 2 blocks \(layers\.2\.blocks\.0\.\.1\) vs model 1"),
        (dict(num_heads=(1, 2, 2, 2)), 2, r"layers\.3\.blocks\.0\.attn\.relative_position_bias_table: 2 heads vs model 4"),
        (dict(embed_dim=32), 2, r"patch_embed\.proj\.weight \(32, 3, 2, 4, 4\): embed_dim 32 vs model 16"),
        (
            dict(temporal_window=4),
            2,
            r"6 relative-position table\(s\) of window \(4, 3, 3\), e\.g\. layers\.0\.blocks\.0\.attn\."
            r"relative_position_bias_table \(175, 1\), but the model's window \(2, 3, 3\) needs 75 rows "
            r"\(pass resize_tables=True to interpolate\)",
        ),
        (dict(window_size=4), 2, r"window \(2, 4, 4\), e\.g\. .*\(147, 1\), but the model's window \(2, 3, 3\)"),
        (dict(patch_size=2), 1, r"patch_embed\.proj\.weight \(16, 3, 1, 2, 2\): patch \(\*, 2, 2\) vs model \(1, 4, 4\)"),
    ],
)
def test_video_swin_mismatch_is_one_line_and_leaves_the_model_unchanged(source_kwargs, patch_t, expected):
    ckpt, _, _ = kinetics_checkpoint(video_model(seed=1, **source_kwargs), patch_t=patch_t)
    target = video_model(seed=2)
    before = snapshot(target)
    with pytest.raises(CheckpointError, match=expected) as info:
        init_backbone_from_video_swin(target, ckpt)
    assert "\n" not in str(info.value) and "does not fit the model" in str(info.value)
    assert_unchanged(target, before)


def test_video_swin_single_shape_mismatch_names_the_key():
    ckpt, _, _ = kinetics_checkpoint(video_model(seed=1))
    ckpt["state_dict"]["backbone.layers.1.blocks.0.attn.qkv.weight"] = torch.randn(95, 32)
    target = video_model(seed=2)
    before = snapshot(target)
    expected = r"layers\.1\.blocks\.0\.attn\.qkv\.weight has shape \(95, 32\) .*\(96, 32\)"
    with pytest.raises(CheckpointError, match=expected):
        init_backbone_from_video_swin(target, ckpt)
    assert_unchanged(target, before)
    ckpt["state_dict"]["backbone.layers.1.blocks.0.attn.qkv.weight"] = torch.randn(96, 32)
    ckpt["state_dict"]["backbone.layers.0.blocks.0.attn.logit_scale"] = torch.zeros(1)
    expected = r"1 key\(s\) the model has no place for, e\.g\. layers\.0\.blocks\.0\.attn\.logit_scale"
    with pytest.raises(CheckpointError, match=expected):
        init_backbone_from_video_swin(target, ckpt)
    assert_unchanged(target, before)


def test_video_swin_resize_tables_option():
    ckpt, mapping, _ = kinetics_checkpoint(video_model(seed=1, temporal_window=4, window_size=4))
    sd = ckpt["state_dict"]
    # tables that are the same 2D pattern at every temporal offset, except one with a temporal ramp
    g = torch.Generator().manual_seed(0)
    ramp_key = "backbone.layers.1.blocks.1.attn.relative_position_bias_table"
    for key in [k for k in sd if k.endswith(TABLE)]:
        if key == ramp_key:
            sd[key] = torch.arange(7.0).repeat_interleave(49)[:, None].repeat(1, sd[key].shape[1])
        else:
            sd[key] = torch.randn(49, sd[key].shape[1], generator=g).repeat(7, 1)
    target = video_model(seed=2)  # window (2, 3, 3)
    report = init_backbone_from_video_swin(target, ckpt, resize_tables=True)
    tables = sorted(k for k in mapping if k.endswith(TABLE))
    assert sorted(report["resized"]) == tables and len(tables) == 6
    after = target.state_dict()
    for ours in tables:
        src = sd["backbone." + mapping[ours]]
        assert after[ours].shape == (75, src.shape[1])
        torch.testing.assert_close(after[ours], resize_video_relative_position_bias_table(src, (4, 4), (2, 3)))
        if "backbone." + mapping[ours] == ramp_key:  # temporal offsets 0..6 -> 3 by linear interpolation
            blocks = after[ours][:, 0].view(3, 25)  # (align_corners=False: sampled at 2/3, 3, 16/3)
            torch.testing.assert_close(blocks, torch.tensor([2 / 3, 3.0, 16 / 3])[:, None].expand(3, 25))
        else:  # resizing commutes with tiling: the spatial part is the 2D bicubic resize
            torch.testing.assert_close(after[ours], resize_relative_position_bias_table(src[:49], 25).repeat(3, 1))


def test_video_swin_rejects_image_inputs():
    image_ckpt, _, _ = kinetics_checkpoint(video_model(seed=1))
    image_ckpt["state_dict"]["backbone.patch_embed.proj.weight"] = torch.randn(16, 3, 4, 4)
    with pytest.raises(CheckpointError, match=r"is a 2D kernel \(an image Swin checkpoint\); use init_backbone_from_swin"):
        init_backbone_from_video_swin(video_model(), image_ckpt)
    with pytest.raises(ConfigError, match=r"needs a video LAVT"):
        init_backbone_from_video_swin(image_model(), kinetics_checkpoint(video_model(seed=1))[0])
    with pytest.raises(CheckpointError, match=r"not a Swin checkpoint"):
        init_backbone_from_video_swin(video_model(), {"state_dict": {"cls_head.fc_cls.weight": torch.zeros(3)}})


@pytest.mark.skipif(not VIDEO_FIXTURE.is_file(), reason=f"{VIDEO_FIXTURE} not available")
def test_init_from_an_official_lavt_rs_file_loads_only_swin():
    official = load_official_checkpoint(VIDEO_FIXTURE)
    cfg = official.config
    target = video_model(
        seed=3,
        embed_dim=cfg.embed_dim,
        depths=cfg.depths,
        num_heads=cfg.num_heads,
        window_size=cfg.window_size,
        temporal_window=cfg.temporal_window,
    )  # lang_dim 8: the fixture's 768-wide PWAMs must be ignored
    before = snapshot(target)
    report = init_backbone_from_video_swin(target, VIDEO_FIXTURE)
    after, expected = target.state_dict(), official.state_dict()
    assert report["missing"] == [] and len(report["loaded"]) == 4 + 13 * sum(cfg.depths) + 9
    for k in report["loaded"]:
        assert torch.equal(after[k], expected[k]), k
    assert any(".fusion." in k for k in report["ignored"]) and any(k.startswith("classifier.") for k in report["ignored"])
    for k, v in before.items():
        if k not in report["loaded"]:
            assert torch.equal(after[k], v), k


# --------------------------------------------------------------------------------------------
# relative-position index ordering: tiling = the same 2D bias at every temporal offset
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("wt, ws", [(2, 3), (3, 2), (4, 3)])
def test_tiled_table_gives_the_2d_bias_at_every_temporal_offset(wt, ws):
    heads = 2
    att3 = WindowAttention3d(8, [wt, ws, ws], [0, 0, 0], heads)
    att2 = WindowAttention2d(8, [ws, ws], [0, 0], heads)
    table2 = torch.randn((2 * ws - 1) ** 2, heads)
    n2 = ws * ws
    bias2 = table2[att2.relative_position_index].view(n2, n2, heads)

    def blocks(table3):
        bias3 = table3[att3.relative_position_index].view(wt, n2, wt, n2, heads)  # (t_i, hw_i, t_j, hw_j)
        return [(ti, tj, bias3[ti, :, tj]) for ti in range(wt) for tj in range(wt)]

    table3 = inflate_relative_position_bias_table(table2, wt, ws)
    assert table3.shape == att3.relative_position_bias_table.shape
    for ti, tj, b in blocks(table3):  # same time (dt = 0) and every other offset: the 2D bias
        assert torch.equal(b, bias2), (ti, tj)
    # the check has teeth: tiling the other way round (repeat_interleave) breaks it at dt = 0
    wrong = table2.repeat_interleave(2 * wt - 1, dim=0)
    assert not all(torch.equal(b, bias2) for ti, tj, b in blocks(wrong) if ti == tj)


# --------------------------------------------------------------------------------------------
# inflation of an image LAVT
# --------------------------------------------------------------------------------------------
def test_inflated_naive_video_model_equals_the_image_model_on_one_frame():
    image = randomise(image_model(seed=1))
    video = video_model(seed=2, pwam_structure=1)  # the naive video LAVT: 2D PWAM, copied
    report = inflate_image_lavt(video, image)
    assert set(report["loaded"]) == set(video.state_dict())
    assert report["missing"] == report["dropped"] == report["ignored"] == report["resized"] == []
    img_sd, vid_sd = image.state_dict(), video.state_dict()
    assert torch.equal(vid_sd["backbone.patch_embed.proj.weight"], img_sd["backbone.patch_embed.proj.weight"][:, :, None])
    for k in (k for k in vid_sd if k.endswith(TABLE)):
        assert vid_sd[k].shape == (75, img_sd[k].shape[1]) and torch.equal(vid_sd[k], img_sd[k].repeat(3, 1)), k

    # 128 px: stage maps 32/16/8/4 all exceed the window 3, so the 2D rule (never clamp) and the
    # Video Swin rule (clamp when size <= window) agree; a 1-frame clip only reads dt = 0.
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    w, m = words()
    with torch.no_grad():
        expected = image(x, text_features=w, text_mask=m)
        got = video(x[:, None], text_features=w, text_mask=m)
        assert got.shape == (2, 1, 2, 128, 128)
        assert (got[:, 0] - expected).abs().max().item() <= 1e-5
        # and the comparison has teeth: the other tiling order changes the output
        for k, p in video.named_parameters():
            if k.endswith(TABLE):
                p.copy_(img_sd[k].repeat_interleave(3, dim=0))
        wrong = video(x[:, None], text_features=w, text_mask=m)
    assert (wrong[:, 0] - expected).abs().max().item() > 1e-2


def test_inflation_into_a_3d_pwam_drops_fusion_and_runs():
    image = randomise(image_model(seed=1))
    video = video_model(seed=2)  # structure 12
    before = snapshot(video)
    report = inflate_image_lavt(video, image)
    img_sd, after = image.state_dict(), video.state_dict()
    img_fusion = sorted(k for k in img_sd if ".fusion." in k)
    vid_fusion = sorted(k for k in after if ".fusion." in k)
    assert sorted(report["dropped"]) == img_fusion and len(img_fusion) == 4 * 12
    assert sorted(report["missing"]) == vid_fusion
    assert set(report["loaded"]) == set(after) - set(vid_fusion)
    for k in vid_fusion:
        assert torch.equal(after[k], before[k]), k
    for k in report["loaded"]:
        if k == "backbone.patch_embed.proj.weight":
            assert torch.equal(after[k], img_sd[k].unsqueeze(2))
        elif k.endswith(TABLE):
            assert torch.equal(after[k], img_sd[k].repeat(3, 1)), k
        else:
            assert torch.equal(after[k], img_sd[k]), k
    w, m = words()
    with torch.no_grad():
        out = video(torch.randn(2, 3, 3, 40, 52), text_features=w, text_mask=m)
    assert out.shape == (2, 3, 2, 40, 52) and torch.isfinite(out).all()


def test_inflation_drop_fusion_false_seeds_the_1x1x1_branches():
    image = randomise(image_model(seed=1))
    video = video_model(seed=2)  # structure 12: every projection is 3x3x3 (branch 0) + 1x1x1 (branch 1)
    before = snapshot(video)
    report = inflate_image_lavt(video, image, drop_fusion=False)
    img_sd, after = image.state_dict(), video.state_dict()
    assert report["dropped"] == []
    pairs = {"vis_project.0": "vis_project", "query": "query", "out": "out", "project_mm.0": "project_mm"}
    for s in range(4):
        f = f"backbone.stages.{s}.fusion."
        for p in ("weight", "bias"):
            for name in ("key", "value"):
                assert torch.equal(after[f"{f}{name}.{p}"], img_sd[f"{f}{name}.{p}"])
            for old, new in pairs.items():
                assert torch.equal(after[f"{f}{new}.branches.1.convs.0.proj.{p}"], img_sd[f"{f}{old}.{p}"])
                conv = f"{f}{new}.branches.0.convs.0.proj.{p}"
                assert torch.equal(after[conv], before[conv]) and conv in report["missing"]
    # structure 2: omega_w / omega_o are pure 1x1x1 projections -> exactly the 2D ones
    video2 = video_model(seed=2, pwam_structure=2)
    inflate_image_lavt(video2, image, drop_fusion=False)
    sd2 = video2.state_dict()
    f = "backbone.stages.0.fusion."
    assert torch.equal(sd2[f"{f}out.branches.0.convs.0.proj.weight"], img_sd[f"{f}out.weight"])
    assert not torch.equal(sd2[f"{f}query.branches.0.convs.0.proj.bias"], img_sd[f"{f}query.bias"])  # 3x1x1 conv


def test_inflation_drop_fusion_true_on_the_naive_model():
    image = randomise(image_model(seed=1))
    video = video_model(seed=2, pwam_structure=1)
    before = snapshot(video)
    report = inflate_image_lavt(video, image, drop_fusion=True)
    fusion = sorted(k for k in before if ".fusion." in k)
    assert sorted(report["dropped"]) == fusion == sorted(report["missing"])
    for k in fusion:
        assert torch.equal(video.state_dict()[k], before[k])


def test_inflation_resizes_the_spatial_window_then_tiles():
    image = randomise(image_model(seed=1, window_size=4))
    video = video_model(seed=2, temporal_window=3)  # window (3, 3, 3)
    report = inflate_image_lavt(video, image)
    tables = sorted(k for k in video.state_dict() if k.endswith(TABLE))
    assert sorted(report["resized"]) == tables
    for k in tables:
        src = image.state_dict()[k]  # (49, h)
        heads = src.shape[1]
        expected = F.interpolate(src.t().reshape(1, heads, 7, 7), size=(5, 5), mode="bicubic", align_corners=False)
        expected = expected.reshape(heads, 25).t().repeat(5, 1)
        torch.testing.assert_close(video.state_dict()[k], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "image_kwargs, video_kwargs, expected",
    [
        (dict(embed_dim=32), {}, r"backbone\.patch_embed\.proj\.weight \(32, 3, 4, 4\): embed_dim 32 vs model 16"),
        (dict(depths=(2, 2, 2, 1)), {}, r"backbone\.stages\.2 has 2 blocks .* vs model 1"),
        (
            dict(lang_dim=12),
            dict(pwam_structure=1),
            r"shape mismatch\(es\), e\.g\. backbone\.stages\.\d\.fusion\.(key|value)\.weight: image \(16, 12\)",
        ),
        (dict(gate="none"), {}, r"video weight\(s\) the image model lacks, e\.g\. backbone\.stages\.0\.gate\.0\.weight"),
        (dict(decoder_hidden=32), {}, r"shape mismatch\(es\), e\.g\. decoder\."),
    ],
)
def test_inflation_mismatch_is_one_line_and_leaves_the_video_model_unchanged(image_kwargs, video_kwargs, expected):
    image = image_model(seed=1, **image_kwargs)
    video = video_model(seed=2, **video_kwargs)
    before = snapshot(video)
    with pytest.raises(CheckpointError, match=expected) as info:
        inflate_image_lavt(video, image)
    assert "\n" not in str(info.value) and "does not fit the video model" in str(info.value)
    assert_unchanged(video, before)


def test_inflation_source_dispatch(tmp_path):
    image = randomise(image_model(seed=1))
    expected = video_model(seed=2, pwam_structure=1)
    inflate_image_lavt(expected, image)
    directory = image.save_pretrained(tmp_path / "image_model")
    training = tmp_path / "last.pt"
    torch.save({"model": {f"module.{k}": v for k, v in image.state_dict().items()}, "step": 3}, training)
    for source in (directory, str(directory), training):
        video = video_model(seed=2, pwam_structure=1)
        report = inflate_image_lavt(video, source)
        assert report["missing"] == []
        for k, v in video.state_dict().items():
            assert torch.equal(v, expected.state_dict()[k]), (source, k)

    with pytest.raises(ConfigError, match="needs a video LAVT"):
        inflate_image_lavt(image_model(), image)
    with pytest.raises(CheckpointError, match="the source model is a video LAVT"):
        inflate_image_lavt(video_model(), video_model(seed=1))
    with pytest.raises(CheckpointError, match="does not exist"):
        inflate_image_lavt(video_model(), tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        inflate_image_lavt(video_model(), tmp_path / "missing_dir")
    video_dir = video_model(seed=1).save_pretrained(tmp_path / "video_model")
    with pytest.raises(CheckpointError, match="the source model is a video LAVT"):
        inflate_image_lavt(video_model(), video_dir)


@pytest.mark.skipif(not IMAGE_FIXTURE.is_file(), reason=f"{IMAGE_FIXTURE} not available")
def test_inflation_from_an_official_image_checkpoint_matches_it_on_one_frame():
    official = load_official_checkpoint(IMAGE_FIXTURE)
    sd = read_checkpoint(IMAGE_FIXTURE)["model"]
    config = infer_config(sd, video=True, temporal_window=2, pwam_structure=1)
    torch.manual_seed(0)
    video = LAVT(config).eval()
    report = inflate_image_lavt(video, IMAGE_FIXTURE)
    assert report["missing"] == [] and set(report["loaded"]) == set(convert_image_state_dict(sd))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 256, 256, generator=g)  # stage maps 64/32/16/8 > window 7
    w, m = torch.randn(1, 6, 768, generator=g), torch.ones(1, 6, dtype=torch.long)
    with torch.no_grad():
        expected = official(x, text_features=w, text_mask=m)
        got = video(x[:, None], text_features=w, text_mask=m)[:, 0]
    assert (got - expected).abs().max().item() <= 1e-5
    if VIDEO_FIXTURE.is_file():  # an official *video* checkpoint is refused as the image source
        with pytest.raises(CheckpointError, match=r"Conv3d kernel: a video LAVT checkpoint, not an image one"):
            inflate_image_lavt(video, VIDEO_FIXTURE)


def _tiny_bert(intermediate: int = 16):
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=50,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=intermediate,
        max_position_embeddings=32,
    )
    return BertModel(config, add_pooling_layer=False)


def test_inflation_copies_an_equal_text_encoder_and_skips_a_different_one(caplog):
    torch.manual_seed(1)
    image = LAVT(LAVTConfig(**TINY), text_encoder=_tiny_bert()).eval()
    randomise(image)
    text_keys = sorted(k for k in image.state_dict() if k.startswith("text_encoder."))
    assert text_keys
    video = LAVT(LAVTConfig(**TINY, video=True, temporal_window=2), text_encoder=_tiny_bert()).eval()
    report = inflate_image_lavt(video, image)
    for k in text_keys:
        assert torch.equal(video.state_dict()[k], image.state_dict()[k]), k
    assert not any(k.startswith("text_encoder.") for k in report["missing"] + report["ignored"])

    other = LAVT(LAVTConfig(**TINY, video=True, temporal_window=2), text_encoder=_tiny_bert(intermediate=24)).eval()
    before = snapshot(other)
    with caplog.at_level(logging.WARNING, logger="lavt.weights.inflate"):
        report = inflate_image_lavt(other, image)
    assert sorted(report["ignored"]) == text_keys
    assert {k for k in before if k.startswith("text_encoder.")} <= set(report["missing"])
    assert any("text encoders differ" in r.getMessage() for r in caplog.records)
    for k, v in before.items():
        if k.startswith("text_encoder."):
            assert torch.equal(other.state_dict()[k], v), k

    no_text = video_model(seed=3)
    report = inflate_image_lavt(no_text, image)
    assert sorted(report["ignored"]) == text_keys
