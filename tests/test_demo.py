"""`lavt demo`: a shortened end-to-end run (tiny data, a few steps) and the report's pieces."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from lavt.apps.cli import main
from lavt.apps.demo import TYPES, demo_config, pick_examples, run_configs, summarise

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TINY = [
    "data.synthetic.num_images={train: 12, val: 6, testA: 1, testB: 1}",
    "data.image_size=64",
    "train.batch_size=4",
    "train.epochs=2",
    "train.val_max_samples=6",
    "eval.batch_size=16",
]


def test_control_differs_only_in_blanked_expressions(tmp_path):
    cfg = demo_config(tmp_path / "out", tmp_path / "data")
    runs = run_configs(cfg, tmp_path / "out")
    lavt, control = runs["lavt"].to_dict(), runs["control"].to_dict()
    assert lavt["data"].pop("blank_expressions") is False
    assert control["data"].pop("blank_expressions") is True
    assert lavt["train"].pop("output_dir").endswith("lavt")
    assert control["train"].pop("output_dir").endswith("control")
    assert lavt == control
    # the demo's own config was not modified in place
    assert cfg.data.blank_expressions is False


def test_summary_margins():
    def val(o, groups):
        return {"val": {"oIoU": o, "mIoU": o - 1, "P@0.5": o, "n": 10, "groups": {
            t: {"oIoU": g, "mIoU": g, "P@0.5": g, "n": 2} for t, g in groups.items()}}}

    s = summarise({"lavt": val(80.0, {"attribute": 90.0, "relation": 70.0}), "control": val(35.0, {"attribute": 40.0, "relation": 30.0})})
    assert s["margin"]["overall"]["oIoU"] == pytest.approx(45.0)
    assert s["margin"]["relation"]["oIoU"] == pytest.approx(40.0)
    assert "position" not in s["lavt"]


def test_shortened_demo_end_to_end(tmp_path, capsys):
    out, data = tmp_path / "report", tmp_path / "data"
    rc = main(["demo", "--out", str(out), "--data-root", str(data), "--parallel", "yes", *TINY])
    stdout = capsys.readouterr().out
    assert rc == 0
    assert "LAVT - control" in stdout and "index.html" in stdout
    assert "target" not in stdout.lower()  # the output speaks to users, not to our issue tracker

    report = json.loads((out / "metrics.json").read_text())
    for run in ("lavt", "control"):
        overall = report["summary"][run]["overall"]
        assert 0.0 <= overall["oIoU"] <= 100.0
        assert overall["n"] == report["data"]["val_sentences"]  # every val expression is scored
        assert set(report["summary"][run]) - {"overall"} <= set(TYPES)
        assert (out / run / "val_metrics.json").is_file()
        assert report["runs"][run]["steps"] > 0
    assert math.isclose(
        report["summary"]["margin"]["overall"]["oIoU"],
        report["summary"]["lavt"]["overall"]["oIoU"] - report["summary"]["control"]["overall"]["oIoU"],
    )
    # the reported numbers are each run's own val_metrics.json, and the LAVT one is the oIoU of
    # the kept final model on the val set, recounted here without the library's evaluate()
    for run in ("lavt", "control"):
        own = json.loads((out / run / "val_metrics.json").read_text())
        assert report["summary"][run]["overall"]["oIoU"] == pytest.approx(own["oIoU"], abs=1e-9)
        for t, g in own.get("groups", {}).items():
            assert report["summary"][run][t]["oIoU"] == pytest.approx(g["oIoU"], abs=1e-9)
    low, high, n = recount_oiou(out / "lavt" / "final_model", out, data)
    assert n == report["data"]["val_sentences"]
    assert high - low < 0.05  # only a few near-tie pixels are in doubt
    assert low - 1e-9 <= report["summary"]["lavt"]["overall"]["oIoU"] <= high + 1e-9, (low, high)
    assert "targets" not in report
    # what is kept: the LAVT model (self-contained) and its checkpoint; the control's weights go
    assert (out / "lavt" / "final_model" / "model.safetensors").is_file() and (out / "lavt" / "last.pt").is_file()
    assert not (out / "control" / "final_model").exists() and not (out / "control" / "last.pt").exists()
    assert not list(out.rglob("best*"))  # the demo reports final weights: no best copies
    assert not list(out.rglob("*.tmp"))
    assert report["machine"]["parallel_runs"] is True
    assert report["machine"]["processor"] and report["machine"]["cpu_capability"]  # timings are per CPU kind
    # the control was trained on blanked expressions, the LAVT run on the real ones
    import yaml

    assert yaml.safe_load((out / "control" / "config.yaml").read_text())["data"]["blank_expressions"] is True
    assert yaml.safe_load((out / "lavt" / "config.yaml").read_text())["data"]["blank_expressions"] is False

    for name in ("overlays.png", "curves.png"):
        with Image.open(out / name) as im:
            assert im.width > 300 and im.height > 200
            assert np.asarray(im.convert("L")).std() > 5  # not a blank canvas
    page = (out / "index.html").read_text()
    assert 'src="overlays.png"' in page and 'src="curves.png"' in page and "language-blind control" in page
    assert len(report["examples"]) >= 4
    assert all(e["text"] for e in report["examples"])

    # a second run into the same folder needs --overwrite; it reuses the cached synthetic set
    before = (out / "metrics.json").read_bytes()
    rc = main(["demo", "--out", str(out), "--data-root", str(data), "--parallel", "no", *TINY, "train.max_steps=1"])
    err = capsys.readouterr().err
    assert rc == 2 and "--overwrite" in err and err.count("\n") == 1
    assert (out / "metrics.json").read_bytes() == before  # nothing touched
    rc = main(["demo", "--out", str(out), "--data-root", str(data), "--parallel", "no", "--overwrite", *TINY,
               "train.max_steps=1"])
    capsys.readouterr()
    assert rc == 0
    assert json.loads((out / "metrics.json").read_text())["data"]["cached"] is True
    assert json.loads((out / "metrics.json").read_text())["runs"]["lavt"]["steps"] == 1


def recount_oiou(model_dir, out, data, tie=1e-5) -> tuple[float, float, int]:
    """Val oIoU of a saved model under the official protocol (argmax at the model resolution vs
    the nearest-resized mask, summed intersections over summed unions), counted by hand: the
    bounds it takes with every pixel whose two logits are within ``tie`` counted as background /
    as object (the run was scored in another process, whose float rounding may differ), and the
    number of val expressions."""
    import torch

    from lavt.data.refer import ReferSegmentation, collate_refer
    from lavt.models.lavt import LAVT
    from lavt.models.text import Tokenizer

    d = demo_config(out, data, TINY).data
    model = LAVT.from_pretrained(model_dir).eval()
    val = ReferSegmentation(d.root, d.dataset, d.split_by, split=d.val_split, image_size=d.image_size, mode="eval",
                            tokenizer=Tokenizer.from_config(model.config.text_encoder), mask_mode=d.mask_mode)
    inter, union = np.zeros(2), np.zeros(2)  # [ties as background, ties as object]
    with torch.inference_mode():
        for start in range(0, len(val), 16):
            batch = collate_refer([val[i] for i in range(start, min(start + 16, len(val)))])
            logits = model(batch["image"], batch["input_ids"], batch["attention_mask"])
            margin = logits[:, 1] - logits[:, 0]
            gt = batch["target"].bool()
            for k, pred in enumerate((margin > tie, margin > -tie)):
                inter[k] += int((pred & gt).sum())
                union[k] += int((pred | gt).sum())
    return 100 * inter.min() / union.max(), 100 * inter.max() / union.min(), len(val)


def test_lavt_train_demo_uses_the_cache_lavt_demo_fills(tmp_path, monkeypatch):
    from lavt.apps.demo import default_data_root
    from lavt.apps.demo_video import default_data_root as video_root
    from lavt.engine.config import load_run_config

    monkeypatch.setenv("LAVT_CACHE", str(tmp_path / "cache"))
    assert load_run_config("demo").data.root == str(default_data_root()) == str(tmp_path / "cache" / "synthetic-demo")
    assert load_run_config("demo_video").data.root == str(video_root())
    joint = load_run_config("demo_unified").data.joint
    assert joint["video"]["root"] == str(video_root())
    assert joint["image"]["root"] == str(tmp_path / "cache" / "synthetic-unified-images")
    monkeypatch.delenv("LAVT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert load_run_config("demo").data.root == str(tmp_path / "xdg" / "lavt" / "synthetic-demo")


def test_pick_examples_covers_every_type_on_distinct_images(tmp_path):
    from lavt.data.refer import ReferSegmentation
    from lavt.data.synthetic import generate_synthetic_refer

    generate_synthetic_refer(tmp_path, seed=1, num_images={"train": 1, "val": 12, "testA": 1, "testB": 1}, progress=False)
    ds = ReferSegmentation(tmp_path, "synthetic", "unc", split="val", image_size=32, mode="eval")
    chosen = pick_examples(ds, per_type=2)
    infos = [ds.sample_info(i) for i in chosen]
    assert [i["type"] for i in infos] == sorted((i["type"] for i in infos), key=TYPES.index)
    assert {i["type"] for i in infos} == set(TYPES)
    assert len({i["image_id"] for i in infos}) == len(infos)


def test_unknown_override_is_one_clear_error(tmp_path, capsys):
    rc = main(["demo", "--out", str(tmp_path / "o"), "--data-root", str(tmp_path / "d"), "train.no_such_key=1"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "no_such_key" in err


def test_video_demo_tables():
    from lavt.apps.demo_video import summarise as video_summary
    from lavt.apps.demo_video import unified_summary

    def jf(overall, motion):
        return {"J&F": overall, "J": overall, "F": overall, "n": 4, "groups": {"motion": {"J&F": motion, "J": motion, "F": motion, "n": 2}}}

    s = video_summary({"pwam3d": {"val": jf(40.0, 35.0)}, "naive": {"val": jf(41.0, 30.0)}})
    assert s["pwam3d"]["motion"]["J&F"] == 35.0 and "appearance" not in s["pwam3d"]
    assert s["naive"]["overall"]["J&F"] == 41.0

    image = {"oIoU": 50.0, "mIoU": 45.0, "n": 3}
    u = unified_summary({
        "unified": {"val": {"image": image, "video": jf(30.0, 20.0)}},
        "image": {"val": image},
        "video": {"val": jf(25.0, 22.0)},
    })
    assert u["unified"] == {"image_oIoU": 50.0, "video_J&F": 30.0, "video_J&F_motion": 20.0}
    assert u["image"] == {"image_oIoU": 50.0}
    assert u["video"] == {"video_J&F": 25.0, "video_J&F_motion": 22.0}


def test_unified_demo_runs_differ_only_in_their_switch(tmp_path):
    from lavt.apps.demo_video import UNIFIED_TITLES, unified_run_configs

    runs = unified_run_configs(tmp_path / "out", tmp_path / "data")
    assert set(runs) == set(UNIFIED_TITLES)
    m = {name: c.model for name, c in runs.items()}
    assert m["unified"].unified and m["unified"].unified_train_stream == "dual" and not m["unified"].bidirectional
    assert m["unified_single"].unified and m["unified_single"].unified_train_stream == "single"
    assert m["unified_bi"].unified and m["unified_bi"].bidirectional
    assert not m["image"].unified and not m["image"].video and runs["image"].data.name == "refer"
    assert not m["video"].unified and m["video"].video and runs["video"].data.name == "ytvos"
    # same sizes everywhere: the comparison is between training regimes, not model sizes
    assert len({(x.embed_dim, tuple(x.depths), x.window_size) for x in m.values()}) == 1
    assert len({c.train.output_dir for c in runs.values()}) == len(runs)
