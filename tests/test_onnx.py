"""ONNX export (``lavt export``, :mod:`lavt.export.onnx`) and the torch-free runtime
(:mod:`lavt.onnx_runtime`, ``lavt predict --backend onnxruntime``).

* parity: the official fixtures (image LAVT; video LAVT with the final 3D PWAM) exported and run
  by ONNX Runtime reproduce the official logits within 1e-4; the image graph also at a second side
  (160 px: the windows need padding there) against PyTorch, at other batch sizes and word counts;
* the runtime: OnnxPredictor gives Predictor's masks (exact fp32) at the original size, with the
  same tokens and warnings; the CLI end to end; bad inputs get one line;
* torch-free: a venv without torch (built once and cached) runs OnnxPredictor and the CLI.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

sys.path.insert(0, str(Path(__file__).parent))
from cli_helpers import assert_one_error, balance_head, run, tiny_config  # noqa: E402

from lavt.apps.cli import main  # noqa: E402

from lavt.config import LAVTConfig, Preprocessing  # noqa: E402
from lavt.errors import (  # noqa: E402
    CheckpointError,
    ConfigError,
    ExportError,
    ExpressionTruncatedWarning,
    InputError,
    UnknownWordsWarning,
)
from lavt.export.onnx import MANIFEST_NAME, check_agreement, export_onnx  # noqa: E402
from lavt.models.lavt import LAVT  # noqa: E402

PARITY_DIR = Path(__file__).resolve().parents[2] / "shared" / "parity"
IMAGE_FIXTURE = PARITY_DIR / "lavt_ris_tiny_w7"
VIDEO_FIXTURE = PARITY_DIR / "lavt_rs_video_pwam3d_s12_tiny"
SRC = Path(__file__).resolve().parents[1] / "src"
TOL = 1e-4
SIZE, H0, W0 = 64, 45, 70


def _fixture(stem: Path) -> tuple[LAVT, dict]:
    if not stem.with_suffix(".pth").is_file():
        pytest.skip(f"parity fixture {stem} not available")
    from lavt.official import load_official_checkpoint

    io = torch.load(stem.with_suffix(".io.pt"), map_location="cpu", weights_only=False)
    return load_official_checkpoint(stem.with_suffix(".pth")).eval(), io


def _session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(session, pixels: torch.Tensor, features: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    feeds = {"pixel_values": pixels.numpy(), "text_features": features.numpy(), "text_mask": mask.numpy()}
    return session.run(None, feeds)[0]


# ------------------------------------------------------------------------------------ parity
@pytest.fixture(scope="module")
def image_fixture():
    return _fixture(IMAGE_FIXTURE)


def test_image_export_reproduces_the_official_logits(image_fixture, tmp_path) -> None:
    model, io = image_fixture
    size = io["image"].shape[-1]
    result = export_onnx(model, tmp_path / "x", image_size=size)
    assert result.max_abs_diff["logits"] <= TOL
    import onnx

    onnx.checker.check_model(str(tmp_path / "x" / "lavt.onnx"))
    manifest = json.loads((tmp_path / "x" / MANIFEST_NAME).read_text())
    assert manifest["preprocessing"]["image_size"] == size and manifest["video"] is False
    assert manifest["text_graph"] is None  # the fixture takes word features
    session = _session(tmp_path / "x" / "lavt.onnx")
    features, mask = io["lang_feats"].transpose(1, 2).contiguous(), io["lang_mask"]
    got = _run(session, io["image"], features, mask)
    assert np.abs(got - io["expected_logits"].numpy()).max() <= TOL
    # the batch and the word count are free: one sample alone, with its padding cut, and 3 at once
    n = int(mask[0].sum())
    one = _run(session, io["image"][:1], features[:1, :n], mask[:1, :n])
    assert np.abs(one - io["expected_logits"][:1].numpy()).max() <= TOL
    three = _run(session, io["image"][[0, 1, 0]], features[[0, 1, 0]], mask[[0, 1, 0]])
    assert np.abs(three - io["expected_logits"][[0, 1, 0]].numpy()).max() <= TOL
    # exporting leaves the model as it was: eval mode, and its own (PyTorch) output unchanged
    assert not model.training
    with torch.inference_mode():
        again = model(io["image"], text_features=features, text_mask=mask)
    assert (again - io["expected_logits"]).abs().max() <= TOL


def test_image_export_at_a_second_side_matches_pytorch(image_fixture, tmp_path) -> None:
    model, io = image_fixture
    export_onnx(model, tmp_path / "x", image_size=160)  # 160 = 5 x 32: stages 1-3 need window padding
    g = torch.Generator().manual_seed(3)
    pixels = torch.randn(2, 3, 160, 160, generator=g)
    features, mask = io["lang_feats"].transpose(1, 2).contiguous(), io["lang_mask"]
    with torch.inference_mode():
        expected = model(pixels, text_features=features, text_mask=mask)
    got = _run(_session(tmp_path / "x" / "lavt.onnx"), pixels, features, mask)
    assert got.shape == (2, 2, 160, 160)
    assert np.abs(got - expected.numpy()).max() <= TOL
    with pytest.raises(Exception, match="(?i)dimension|shape|invalid"):  # the side is fixed
        _run(_session(tmp_path / "x" / "lavt.onnx"), torch.randn(1, 3, 224, 224), features[:1], mask[:1])


def test_video_export_with_the_3d_pwam_reproduces_the_official_logits(tmp_path) -> None:
    model, io = _fixture(VIDEO_FIXTURE)
    video = io["video"]  # (B, T, 3, H, W)
    b, t = video.shape[:2]
    result = export_onnx(model, tmp_path / "v", image_size=video.shape[-1], frames=t)
    assert result.max_abs_diff["logits"] <= TOL
    manifest = json.loads((tmp_path / "v" / MANIFEST_NAME).read_text())
    assert manifest["video"] is True and manifest["frames"] == t and manifest["pwam_structure"] == 12
    got = _run(_session(tmp_path / "v" / "lavt.onnx"), video, io["lang_feats"].transpose(1, 2).contiguous(),
               io["lang_mask"])
    assert got.shape == (b, t, 2, *video.shape[-2:])
    assert np.abs(got.reshape(b * t, *got.shape[2:]) - io["expected_logits"].numpy()).max() <= TOL


def test_the_export_check_refuses_a_graph_that_disagrees() -> None:
    check_agreement({"logits": 3e-5, "text_features": 1e-6}, 1e-4)
    with pytest.raises(ExportError, match="logits"):
        check_agreement({"logits": 2e-3}, 1e-4)
    with pytest.raises(ExportError, match="nan"):
        check_agreement({"logits": float("nan")}, 1e-4)


# ------------------------------------------------------------------------------------ runtime
@pytest.fixture(scope="module")
def model_with_text(tmp_path_factory) -> tuple[LAVT, Path, Path, str]:
    """A tiny LAVT with the MiniLM encoder whose head is balanced (about half the pixels object),
    saved as a model directory and exported by ``lavt export DIR OUT --int8``: (model, model
    directory, export directory, what the command printed)."""
    from lavt.predict import Predictor

    torch.manual_seed(0)
    model = LAVT.from_config(tiny_config()).eval()
    model.preprocessing = Preprocessing(SIZE)
    probe = Predictor(model, device="cpu", precision="fp32", exact=True)
    probs = probe.predict(_image(1), ["the red car", "sky"], return_probs=True).probs
    balance_head(model, probs)
    root = tmp_path_factory.mktemp("onnx")
    model_dir = model.save_pretrained(root / "model")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):  # exported by the command users run
        assert main(["export", str(model_dir), str(root / "export"), "--int8"]) == 0
    return model, model_dir, root / "export", stdout.getvalue()


def _image(seed: int, size=(W0, H0)) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)  # blobs, not pixel noise
    return Image.fromarray(small).resize(size, Image.BILINEAR)


TEXTS = ["the red car", "a man on the left", "sky"]


def test_onnx_predictor_gives_the_predictors_masks(model_with_text) -> None:
    from lavt.onnx_runtime import OnnxPredictor
    from lavt.predict import Predictor

    model, _, export, _ = model_with_text
    ours = OnnxPredictor(export)
    exact = Predictor(model, device="cpu", precision="fp32", exact=True)
    assert ours.image_size == exact.image_size == SIZE
    for seed, size in ((2, (W0, H0)), (3, (31, 97)), (4, (SIZE, SIZE))):
        image = _image(seed, size)
        a = ours.predict(image, TEXTS, return_logits=True, return_probs=True)
        b = exact.predict(image, TEXTS, return_logits=True, return_probs=True)
        assert a.masks.shape == b.masks.shape == (3, size[1], size[0]) and a.masks.dtype == bool
        assert 0.2 < b.masks.mean() < 0.8  # balanced head: a comparison that can fail
        assert (a.masks == b.masks).mean() >= 0.999
        assert np.abs(a.logits - b.logits).max() <= TOL
        assert np.abs(a.probs - b.probs).max() <= 1e-5
        assert a.expressions == TEXTS and a.meta["backend"] == "onnxruntime"
    int8 = OnnxPredictor(export, precision="int8").predict(_image(2), TEXTS)
    assert int8.masks.shape == (3, H0, W0) and int8.meta["precision"] == "int8"


def test_onnx_tokenizer_gives_the_same_tokens_and_warnings(model_with_text) -> None:
    from lavt.models.text import Tokenizer
    from lavt.onnx_runtime import OnnxPredictor

    _, _, export, _ = model_with_text
    ours = OnnxPredictor(export).tokenizer
    for truncation in ("official", "standard"):
        ours.truncation = truncation
        theirs = Tokenizer("minilm", max_tokens=20, truncation=truncation)
        texts = ["The man IN the Red shirt, left!", "café naïve Ünïcode", "a " * 40 + "dog", "x"]
        with warnings.catch_warnings(record=True) as mine:
            warnings.simplefilter("always")
            ids, mask = ours(texts)
        with warnings.catch_warnings(record=True) as reference:
            warnings.simplefilter("always")
            tid, tmask = theirs(texts)
        np.testing.assert_array_equal(ids, tid.numpy())
        np.testing.assert_array_equal(mask, tmask.numpy())
        assert [str(w.message) for w in mine] == [str(w.message) for w in reference]
        assert [w.category for w in mine] == [ExpressionTruncatedWarning]
    with pytest.warns(UnknownWordsWarning):
        ours(["\u732b\u732b \u72d7"])
    with pytest.raises(InputError, match="empty"):
        ours(["  "])


def test_onnx_predictor_refuses_bad_directories_in_one_line(model_with_text, tmp_path) -> None:
    from lavt.onnx_runtime import OnnxPredictor

    _, model_dir, export, _ = model_with_text
    with pytest.raises(CheckpointError, match="not a lavt ONNX export"):
        OnnxPredictor(model_dir)
    with pytest.raises(ConfigError, match="precision"):
        OnnxPredictor(export, precision="bf16")
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in export.iterdir():
        if f.is_file():
            (broken / f.name).write_bytes(f.read_bytes())
    (broken / "lavt.onnx").write_bytes(b"not a graph")
    with pytest.raises(CheckpointError, match="cannot load"):
        OnnxPredictor(broken)
    (broken / "lavt.onnx").write_bytes((export / "lavt.onnx").read_bytes())
    with pytest.raises(CheckpointError, match="tokenizer.json"):  # tokenizer/ was not copied
        OnnxPredictor(broken)


def test_export_refuses_what_it_cannot_do(model_with_text, tmp_path) -> None:
    model, _, export, _ = model_with_text
    with pytest.raises(ConfigError, match="not empty"):
        export_onnx(model, export)
    unified = LAVT(LAVTConfig(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), window_size=7,
                              video=True, unified=True))
    with pytest.raises(ConfigError, match="unified"):
        export_onnx(unified, tmp_path / "u")


def test_a_failed_export_leaves_nothing_and_keeps_the_previous_one(model_with_text, tmp_path, monkeypatch) -> None:
    import lavt.export.onnx as onnx_export

    model, _, export, _ = model_with_text
    previous = tmp_path / "previous"
    previous.mkdir()
    for f in export.rglob("*"):
        if f.is_file():
            (previous / f.relative_to(export)).parent.mkdir(parents=True, exist_ok=True)
            (previous / f.relative_to(export)).write_bytes(f.read_bytes())
    before = sorted(p.name for p in previous.rglob("*"))

    def broken(module, args, path, *rest, **kw):
        path.write_bytes(b"half a graph")
        raise ExportError(f"torch.onnx.export failed for {path.name}: simulated")

    monkeypatch.setattr(onnx_export, "_torch_export", broken)
    with pytest.raises(ExportError, match="simulated"):
        export_onnx(model, tmp_path / "new")
    with pytest.raises(ExportError, match="simulated"):
        export_onnx(model, previous, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["previous"]  # no partial folder, no "new"
    assert sorted(p.name for p in previous.rglob("*")) == before  # the old export is intact
    assert model.training is False and (previous / MANIFEST_NAME).is_file()


def test_cli_export_and_predict_with_onnxruntime(capsys, model_with_text, tmp_path) -> None:
    from lavt.onnx_runtime import OnnxPredictor

    _, model_dir, export, printed = model_with_text
    for name in ("lavt.onnx", "lavt.int8.onnx", "text_encoder.onnx", "tokenizer/", "max |diff|"):
        assert name in printed
    rc, _, err = run(capsys, ["export", model_dir, export])
    assert_one_error(rc, err, "not empty", "--overwrite")
    rc, _, err = run(capsys, ["export", model_dir, tmp_path / "new", "--frames", "0"])
    assert_one_error(rc, err, "--frames")
    image = tmp_path / "street.png"
    _image(5).save(image)
    args = ["predict", "--backend", "onnxruntime", "--model", export, "--image", image, "--out", tmp_path / "o"]
    rc, stdout, err = run(capsys, args + ["--text", "the red car", "--text", "sky"])
    assert rc == 0, err
    expected = OnnxPredictor(export).predict(image, ["the red car", "sky"])
    for k in range(2):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o" / "street.png" / f"{k:02d}.png")) == 255,
                                      expected.masks[k])
    info = json.loads((tmp_path / "o" / "street.png" / "expressions.json").read_text())
    assert info["backend"] == "onnxruntime" and info["precision"] == "fp32"
    rc, _, err = run(capsys, args + ["--text", "sky", "--bf16"])
    assert_one_error(rc, err, "--precision", "onnxruntime")
    rc, _, err = run(capsys, args[:4] + [model_dir] + args[5:] + ["--text", "sky"])
    assert_one_error(rc, err, "not a lavt ONNX export")
    rc, _, err = run(capsys, args + ["--text", "sky", "--int8"])
    assert rc == 0, err
    assert json.loads((tmp_path / "o" / "street.png" / "expressions.json").read_text())["precision"] == "int8"
    rc, _, err = run(capsys, args + ["--text", "sky", "--image-size", "96"])
    assert_one_error(rc, err, "64 px only")


def test_export_without_the_onnx_extra_says_what_to_install(capsys, model_with_text, tmp_path, monkeypatch) -> None:
    import importlib.util

    _, model_dir, _, _ = model_with_text
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    rc, _, err = run(capsys, ["export", model_dir, tmp_path / "e"])
    assert_one_error(rc, err, "onnxscript", "lavt[onnx]")
    assert not (tmp_path / "e").exists()


# ------------------------------------------------------------------------------------ torch-free
TORCH_FREE_REQUIREMENTS = ["onnxruntime", "tokenizers", "numpy", "pillow"]


def _torch_free_python() -> Path:
    """A venv with only the runtime's four packages, built once per requirement list and cached
    (``LAVT_TEST_CACHE``, default ~/.cache/lavt/test-venvs). lavt itself comes from src/ on
    PYTHONPATH, as an install with --no-deps would provide it."""
    key = hashlib.sha1(" ".join([sys.version, *TORCH_FREE_REQUIREMENTS]).encode()).hexdigest()[:12]
    root = Path(os.environ.get("LAVT_TEST_CACHE", Path.home() / ".cache" / "lavt" / "test-venvs"))
    venv = root / f"torch-free-{key}"
    python = venv / "bin" / "python"
    if not (venv / ".complete").is_file():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *TORCH_FREE_REQUIREMENTS], check=True)
        (venv / ".complete").write_text("ok\n")
    return python


def test_the_runtime_needs_no_torch(model_with_text, tmp_path) -> None:
    _, model_dir, export, _ = model_with_text
    python = _torch_free_python()
    image = tmp_path / "street.png"
    _image(6).save(image)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    script = (
        "import importlib.util, sys, numpy as np\n"
        "assert importlib.util.find_spec('torch') is None, 'torch is installed'\n"
        "from lavt.onnx_runtime import OnnxPredictor\n"
        f"pred = OnnxPredictor({str(export)!r}).predict({str(image)!r}, {TEXTS!r}, return_logits=True)\n"
        f"np.save({str(tmp_path / 'masks.npy')!r}, pred.masks)\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    done = subprocess.run([str(python), "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    from lavt.onnx_runtime import OnnxPredictor

    expected = OnnxPredictor(export).predict(image, TEXTS)
    np.testing.assert_array_equal(np.load(tmp_path / "masks.npy"), expected.masks)
    cli = subprocess.run(
        [str(python), "-m", "lavt", "predict", "--backend", "onnxruntime", "--model", str(export), "--image",
         str(image), "--text", "the red car", "--out", str(tmp_path / "out")],
        env=env, capture_output=True, text=True,
    )
    assert cli.returncode == 0, cli.stderr[-2000:]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "street.png" / "00.png")) == 255,
                                  expected.masks[0])
    # without --backend: one line each, naming the way out (no traceback from a missing import)
    for model, needle in ((export, "--backend onnxruntime"), (model_dir, "pytorch is not installed")):
        bad = subprocess.run([str(python), "-m", "lavt", "predict", "--model", str(model), "--image", str(image),
                              "--text", "sky", "--out", str(tmp_path / "o2")], env=env, capture_output=True, text=True)
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
        assert needle in bad.stderr.lower(), bad.stderr
