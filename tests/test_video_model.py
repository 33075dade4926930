"""Video LAVT: official parity (LAVT-RS fixtures), the Video Swin window rule at any clip length
and size, every Table-1 3D PWAM structure, and the video input contract."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models.video.swin_transformer import ShiftedWindowAttention3d

from lavt.config import LAVTConfig
from lavt.errors import CheckpointError, InputError
from lavt.models.lavt import LAVT
from lavt.models.pwam3d import STRUCTURES
from lavt.models.swin import WindowAttention3d
from lavt.weights.official import (
    _video_window,
    load_official_checkpoint,
    read_checkpoint,
)

PARITY = Path(__file__).resolve().parents[2] / "shared" / "parity"
VIDEO_FIXTURES = ["lavt_rs_video_pwam3d_s12_tiny", "lavt_rs_video_naive_s1_tiny"]
TOL = 1e-4


def _fixture(name: str):
    path = PARITY / f"{name}.pth"
    if not path.is_file():
        pytest.skip(f"parity fixture {path} not available")
    return path, torch.load(PARITY / f"{name}.io.pt", weights_only=False)


@pytest.mark.parametrize("name", VIDEO_FIXTURES)
def test_official_video_parity(name):
    path, io = _fixture(name)
    model = load_official_checkpoint(path)
    cfg = io["config"]
    assert model.config.video
    assert model.config.pwam_structure == cfg["pwam_structure"]
    assert (model.config.temporal_window, model.config.window_size, model.config.window_size) == tuple(cfg["window_size"])
    assert model.config.embed_dim == cfg["embed_dim"] and list(model.config.depths) == cfg["depths"]
    video = io["video"]
    words, mask = io["lang_feats"].transpose(1, 2), io["lang_mask"]
    with torch.no_grad():
        logits = model(video, text_features=words, text_mask=mask)
        feats = model.stage_features(video, text_features=words, text_mask=mask)
    b, t = video.shape[:2]
    assert logits.shape == (b, t, 2, *video.shape[-2:])
    expected = io["expected_logits"].view(b, t, 2, *video.shape[-2:])  # (B*T, ...) batch-major
    assert (logits - expected).abs().max().item() <= TOL
    for ours, theirs in zip(feats, io["expected_stage_features"], strict=True):
        assert ours.shape == theirs.shape
        assert (ours - theirs).abs().max().item() <= TOL


def test_checkpoint_without_stage4_gate_loads_and_gives_the_same_output(tmp_path):
    path, io = _fixture("lavt_rs_video_pwam3d_s12_tiny")
    ckpt = read_checkpoint(path)
    ckpt["model"] = {k: v for k, v in ckpt["model"].items() if not k.startswith("backbone.layers.3.res_gate.")}
    stripped = tmp_path / "no_gate.pth"
    torch.save(ckpt, stripped)
    words, mask = io["lang_feats"].transpose(1, 2), io["lang_mask"]
    with torch.no_grad():
        a = load_official_checkpoint(stripped)(io["video"], text_features=words, text_mask=mask)
    b, t = io["video"].shape[:2]
    assert (a - io["expected_logits"].view(b, t, *a.shape[2:])).abs().max().item() <= TOL


def test_a_missing_stage1_key_is_one_clear_error(tmp_path):
    path, _ = _fixture("lavt_rs_video_pwam3d_s12_tiny")
    ckpt = read_checkpoint(path)
    del ckpt["model"]["backbone.layers.0.fusion.W_s.0.weight"]
    broken = tmp_path / "broken.pth"
    torch.save(ckpt, broken)
    with pytest.raises(CheckpointError, match="missing key"):
        load_official_checkpoint(broken)


@pytest.mark.parametrize(
    "size, window",
    [
        ((10, 9, 11), (8, 7, 7)),  # T > 8: temporal padding to 16 and a temporal shift
        ((17, 5, 6), (8, 7, 7)),  # T > 2 windows; H, W inside one window (clamped, no shift)
        ((3, 13, 15), (8, 12, 12)),  # window 12, clip shorter than the temporal window
        ((8, 7, 7), (8, 7, 7)),  # exactly one window on every axis: no shift anywhere
        ((1, 16, 9), (8, 7, 7)),  # a one-frame clip
    ],
)
@pytest.mark.parametrize("shifted", [False, True])
def test_window_attention_3d_matches_the_video_swin_rule(size, window, shifted):
    """Ours (SDPA, cached mask) against torchvision's stock 3D attention, whose window rule
    (clamp an axis not larger than its window, no shift there; zero pad after LN1; -100 mask;
    bias rows index[:N, :N]) is the official Video Swin's."""
    torch.manual_seed(0)
    shift = [w // 2 for w in window] if shifted else [0, 0, 0]
    ours = WindowAttention3d(16, list(window), shift, num_heads=2)
    torch.nn.init.normal_(ours.relative_position_bias_table, std=0.5)  # make the bias matter
    x = torch.randn(2, *size, 16)
    with torch.no_grad():
        expected = ShiftedWindowAttention3d.forward(ours, x)
        got = ours(x)
    assert (got - expected).abs().max().item() < 1e-5


def _tiny_video_config(structure: int = 12, **kw) -> LAVTConfig:
    fields = dict(
        embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), window_size=4, lang_dim=24,
        video=True, temporal_window=4, pwam_structure=structure, drop_path_rate=0.0,
    )
    fields.update(kw)
    return LAVTConfig(**fields)


def _inputs(b=2, t=3, h=40, w=36, words=5, lang=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(b, t, 3, h, w, generator=g)
    feats = torch.randn(b, words, lang, generator=g)
    mask = torch.ones(b, words, dtype=torch.long)
    mask[0, 3:] = 0
    return video, feats, mask


@pytest.mark.parametrize("structure", sorted(STRUCTURES))
def test_every_table1_structure_builds_runs_and_learns(structure):
    torch.manual_seed(structure)
    model = LAVT(_tiny_video_config(structure))
    video, feats, mask = _inputs()
    logits = model(video, text_features=feats, text_mask=mask)
    assert logits.shape == (2, 3, 2, 40, 36)
    assert torch.isfinite(logits).all()
    logits.logsumexp(1).mean().backward()
    fusion = model.backbone.stages[0].fusion
    grads = [p.grad for p in fusion.parameters()]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    # the kernels really are the table's
    if structure == 1:
        assert type(fusion).__name__ == "PWAM"
        return
    m, q, w, o = STRUCTURES[structure]
    for proj, spec in ((fusion.vis_project, m), (fusion.query, q), (fusion.out, w), (fusion.project_mm, o)):
        parts = spec.split(";") if ";" in spec else spec.split("+")
        assert len(proj.branches) == len(parts)
        for branch, part in zip(proj.branches, parts):
            kernels = [c.kernel for c in branch.convs]
            expected = [tuple(int(v) for v in k.split("x")) for k in reversed(part.split("o"))]
            assert kernels == expected
        assert (proj.reduce is not None) == (";" in spec)


def test_structures_differ_where_the_table_differs():
    counts = {s: sum(p.numel() for p in LAVT(_tiny_video_config(s)).backbone.stages[0].fusion.parameters()) for s in STRUCTURES}
    assert counts[1] < counts[2] < counts[4]  # 1x1x1 < 3x1x1 < 3x3x3 in omega_m, omega_q
    assert counts[3] < counts[4]
    assert counts[7] == counts[4] + 2 * (16 * 16 + 16)  # + a 1x1x1 branch in omega_m and omega_q
    assert counts[10] == counts[11]  # one parallel pair moved from omega_w to omega_o
    assert counts[12] > counts[10]
    assert counts[8] > counts[7]  # the concatenation needs a channel reduction


def test_instance_norm_spans_the_whole_clip():
    """Official 3D PWAM: a frame's output depends on the rest of the clip (IN over T*H*W)."""
    torch.manual_seed(0)
    model = LAVT(_tiny_video_config(12)).eval()
    video, feats, mask = _inputs(b=1, t=4)
    with torch.no_grad():
        full = model(video, text_features=feats[:1], text_mask=mask[:1])[:, 0]
        alone = model(video[:, :1], text_features=feats[:1], text_mask=mask[:1])[:, 0]
    assert (full - alone).abs().max().item() > 1e-4


def test_image_input_is_a_one_frame_clip_and_a_shared_clip_equals_repeats():
    torch.manual_seed(0)
    model = LAVT(_tiny_video_config(12)).eval()
    video, feats, mask = _inputs(b=2, t=3)
    with torch.no_grad():
        as_image = model(video[:, 0], text_features=feats, text_mask=mask)
        as_clip = model(video[:, :1], text_features=feats, text_mask=mask)
        shared = model(video[:1], text_features=feats, text_mask=mask)
        repeated = model(video[:1].expand(2, -1, -1, -1, -1), text_features=feats, text_mask=mask)
    assert as_image.shape == (2, 2, 40, 36)
    assert torch.allclose(as_image, as_clip[:, 0], atol=1e-6)
    assert torch.allclose(shared, repeated, atol=1e-5)


def test_bad_video_inputs_are_clear_errors():
    model = LAVT(_tiny_video_config(12)).eval()
    video, feats, mask = _inputs(b=2, t=3)
    with pytest.raises(InputError, match=r"\(B, T, 3, H, W\)"):
        model(video[:, :, :2], text_features=feats, text_mask=mask)
    with pytest.raises(InputError, match="3 clips but 2 expressions"):
        model(torch.cat([video, video[:1]]), text_features=feats, text_mask=mask)


def test_video_window_inference():
    assert _video_window(15 * 13 * 13, 8 * 7 * 7) == (8, 7)
    assert _video_window(15 * 23 * 23, None) == (8, 12)
    assert _video_window(7 * 13 * 13, 4 * 49) == (4, 7)
    with pytest.raises(CheckpointError, match="3D window"):
        _video_window(1000, None)


def test_video_model_round_trips_through_save_pretrained(tmp_path):
    torch.manual_seed(0)
    model = LAVT(_tiny_video_config(10)).eval()
    model.save_pretrained(tmp_path / "m")
    again = LAVT.from_pretrained(tmp_path / "m")
    assert again.config == model.config
    video, feats, mask = _inputs()
    with torch.no_grad():
        assert torch.equal(model(video, text_features=feats, text_mask=mask), again(video, text_features=feats, text_mask=mask))


def test_official_video_model_on_a_long_clip_of_odd_size():
    """T = 10 > the temporal window 8 (temporal padding + shift in the odd blocks) at 83x97:
    runs, and the first frames differ from a T = 8 run only through the clip-wide parts
    (temporal attention across the window boundary, clip-wide InstanceNorm)."""
    path, io = _fixture("lavt_rs_video_pwam3d_s12_tiny")
    model = load_official_checkpoint(path)
    g = torch.Generator().manual_seed(0)
    clip = torch.randn(1, 10, 3, 83, 97, generator=g)
    words, mask = io["lang_feats"][:1].transpose(1, 2), io["lang_mask"][:1]
    with torch.no_grad():
        long = model(clip, text_features=words, text_mask=mask)
        short = model(clip[:, :8], text_features=words, text_mask=mask)
    assert long.shape == (1, 10, 2, 83, 97) and torch.isfinite(long).all()
    assert (long[:, :8] - short).abs().max() > 1e-6  # frames 8-9 influence frames 0-7
