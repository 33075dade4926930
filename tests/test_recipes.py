"""Every bundled recipe parses and runs: a tiny model for 2 optimizer steps on fixture data in
the recipe's own layout (the paper-scale sizes, pretrained weights and paths are overridden)."""

from __future__ import annotations

import json

import pytest
import yaml
from test_a2d import build_a2d, build_jhmdb
from test_davis import build as build_davis
from test_refer import build_fixture
from test_ytvos import build as build_ytvos

from lavt.apps.cli import main
from lavt.engine.config import BUNDLED_CONFIGS, bundled_configs

TINY_MODEL = [
    "model.embed_dim=16", "model.depths=[1,1,1,1]", "model.num_heads=[1,2,2,4]", "model.window_size=4",
    "model.decoder_hidden=16", "model.lang_dim=384", "model.drop_path_rate=0.0",
    "model.text_encoder={name_or_path: minilm, max_tokens: 20, truncation: official}",
]
RUN = [
    "data.image_size=32", "data.num_workers=0", "data.cache_images=false", "train.batch_size=2", "train.max_steps=2",
    "train.device=cpu", "train.log_every=1", "train.text_encoder_layers=0-1", "train.init_swin=null", "train.init_video_swin=null",
    "train.init_image_model=null", "train.init_video_model=null", "train.init_from=null", "train.val_every=0",
]


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recipes")
    return {
        "refer": build_fixture(tmp / "refer"),
        "ytvos": build_ytvos(tmp / "ytvos"),
        "davis": build_davis(tmp / "davis"),
        "a2d": build_a2d(tmp / "a2d"),
        "jhmdb": build_jhmdb(tmp / "jhmdb"),
    }


def _data_overrides(raw: dict, roots, tmp) -> list[str]:
    data = raw.get("data", {})
    name = data.get("name", "refer")
    refer = [f"data.root={roots['refer']}", "data.dataset=refcoco", "data.split_by=unc", "data.synthetic=null"]
    if data.get("datasets"):
        refer.append("data.datasets=[refcoco/unc, refcocog/umd]")  # the fixture has no refcoco+
    if name == "refer":
        return refer if data.get("synthetic") is None else [
            f"data.root={tmp / 'synthetic'}", "data.synthetic={num_images: {train: 6, val: 2, testA: 1, testB: 1}}"]
    if name in ("a2d", "jhmdb"):
        return ["data.clip_len=2", "data.eval_clip_len=3", f"data.root={roots[name]}", "data.synthetic=null"]
    if name in ("ytvos", "davis"):
        clip = ["data.clip_len=2"]
        if data.get("synthetic") is not None:
            return [*clip, f"data.root={tmp / 'videos'}", "data.synthetic={num_videos: {train: 3, valid: 1}, frames: 6}"]
        return [*clip, f"data.root={roots[name]}", "data.synthetic=null"]
    if name == "joint":
        if data["joint"]["image"].get("synthetic") is not None:
            image = (f"{{root: {tmp / 'synthetic'}, dataset: synthetic, split_by: unc, train_split: train, val_split: val, "
                     "synthetic: {num_images: {train: 6, val: 2, testA: 1, testB: 1}}}")
            video = f"{{root: {tmp / 'videos'}, train_split: train, val_split: valid, synthetic: {{num_videos: {{train: 3, valid: 1}}, frames: 6}}}}"
        else:
            image = f"{{root: {roots['refer']}, dataset: refcoco, split_by: unc, train_split: train, val_split: val}}"
            video = f"{{root: {roots['ytvos']}, train_split: train, val_split: valid}}"
        return ["data.clip_len=2", f"data.joint={{image: {image}, video: {video}}}"]
    raise AssertionError(f"no fixture for data.name={name}")


@pytest.mark.parametrize("name", bundled_configs())
def test_recipe_runs_two_steps(name, roots, tmp_path, capsys):
    raw = yaml.safe_load((BUNDLED_CONFIGS / f"{name}.yaml").read_text())
    model = [*TINY_MODEL]
    if raw.get("model", {}).get("video"):
        model.append("model.temporal_window=2")
    overrides = [*model, *RUN, *_data_overrides(raw, roots, tmp_path), f"train.output_dir={tmp_path / 'run'}"]
    if raw.get("train", {}).get("cache_text_features"):  # cached features need the frozen encoder it ships with
        overrides.append("train.text_encoder_layers=none")
    eval_only = {"davis": "J&F", "jhmdb": "oIoU"}  # evaluation recipes: their datasets have no training split here
    if raw.get("data", {}).get("name") in eval_only:
        from lavt.config import LAVTConfig
        from lavt.engine.config import load_run_config
        from lavt.models.lavt import LAVT

        cfg = load_run_config(name, overrides)
        LAVT.from_config(cfg.model).save_pretrained(tmp_path / "model")
        rc = main(["eval", name, *overrides, "--model", str(tmp_path / "model"), "--out", str(tmp_path / "m.json")])
        capsys.readouterr()
        assert rc == 0 and eval_only[raw["data"]["name"]] in json.loads((tmp_path / "m.json").read_text())
        assert isinstance(cfg.model, LAVTConfig)
        return
    rc = main(["train", name, *overrides])
    capsys.readouterr()
    assert rc == 0
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [p["step"] for p in history["train"]][-1] == 2
    assert (tmp_path / "run" / "final_model" / "model.safetensors").is_file()
