"""Video training and evaluation through the engine on a Ref-YouTube-VOS-format fixture:
`lavt train` on clips, and `lavt eval` writing the CodaLab submission for a split without masks."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from PIL import Image
from test_ytvos import VALID, build

from lavt.apps.cli import main

TINY_VIDEO = [
    "model.video=true", "model.embed_dim=16", "model.depths=[1,1,1,1]", "model.num_heads=[1,2,2,4]",
    "model.window_size=4", "model.temporal_window=4", "model.decoder_hidden=16", "model.lang_dim=384",
    "model.drop_path_rate=0.0", "model.text_encoder={name_or_path: minilm}",
    "data.name=ytvos", "data.image_size=32", "data.clip_len=3", "data.num_workers=0",
    "train.batch_size=2", "train.epochs=1", "train.val_every=0", "train.text_encoder_layers=none",
    "train.device=cpu", "eval.split=valid",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("video_engine")
    root = build(tmp / "ytvos")
    out = tmp / "run"
    rc = main(["train", "demo_video", *TINY_VIDEO, f"data.root={root}", "data.synthetic=null", f"train.output_dir={out}"])
    assert rc == 0
    return root, out


def test_video_training_runs_and_saves_a_video_model(trained, capsys):
    _, out = trained
    history = json.loads((out / "history.json").read_text())
    assert history["train"] and not history["val"]  # val_every=0: no validation
    config = json.loads((out / "final_model" / "config.json").read_text())
    assert config["video"] is True


def test_eval_on_a_split_without_masks_writes_the_submission(trained, tmp_path, capsys):
    root, out = trained
    zip_path = tmp_path / "sub.zip"
    rc = main(["eval", "demo_video", *TINY_VIDEO, f"data.root={root}", "data.synthetic=null",
               "--model", str(out / "final_model"), "--out", str(zip_path)])
    capsys.readouterr()
    assert rc == 0
    with zipfile.ZipFile(zip_path) as z:
        names = sorted(z.namelist())
    assert names and all(n.startswith("Annotations/") for n in names)
    expected = {f"Annotations/{vid}/{exp}/{n:05d}.png" for vid, (frames, _) in VALID.items() for exp in ("0", "1") for n in frames}
    assert set(names) == expected
    vid, (frames, hw) = next(iter(VALID.items()))
    mask = Image.open(tmp_path / "sub" / "Annotations" / vid / "0" / f"{frames[0]:05d}.png")
    assert mask.mode == "L" and mask.size == (hw[1], hw[0])
    assert set(np.unique(np.asarray(mask))) <= {0, 255}


def test_eval_without_out_on_such_a_split_is_one_clear_error(trained, capsys):
    root, out = trained
    rc = main(["eval", "demo_video", *TINY_VIDEO, f"data.root={root}", "data.synthetic=null", "--model", str(out / "final_model")])
    err = capsys.readouterr().err
    assert rc == 2 and "no ground truth" in err and err.count("\n") == 1
