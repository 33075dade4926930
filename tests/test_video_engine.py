"""Video training and evaluation through the engine on a Ref-YouTube-VOS-format fixture:
`lavt train` on clips, and `lavt eval` writing the CodaLab submission for a split without masks."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from PIL import Image
from test_ytvos import TRAIN, TRAIN_EXPS, VALID, build

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
    rc = main(["train", "demo_video", *TINY_VIDEO, f"data.root={root}", "data.synthetic=null", f"train.output_dir={out}",
               f"train.log_every={LOG_EVERY}"])
    assert rc == 0
    return root, out


LOG_EVERY = 2


def test_video_training_runs_and_saves_a_video_model(trained, capsys):
    _, out = trained
    history = json.loads((out / "history.json").read_text())
    assert history["train"] and not history["val"]  # val_every=0: no validation
    # the schedule the fixture implies: one sample per (expression, anchor every clip_len=3 frames)
    # -> 2+1+8 = 11 clips, batch 2 -> 5 steps in the one epoch; logged at step 1 and every LOG_EVERY
    samples = sum(len(TRAIN_EXPS[v]) * -(-len(frames) // 3) for v, (frames, _, _) in TRAIN.items())
    steps = samples // 2
    assert (samples, steps) == (11, 5)
    logged = [1] + [s for s in range(LOG_EVERY, steps + 1, LOG_EVERY) if s != 1]
    assert [h["step"] for h in history["train"]] == logged == [1, 2, 4]
    for h in history["train"]:
        assert h["epoch"] == 0
        assert 0.0 < h["loss"] < 1.0  # demo_video trains with the dice loss, which lies in [0, 1]
        # after the step: the official poly decay 5e-4 * (1 - step / total) ** 0.9 of demo_video.yaml
        assert h["lr"] == pytest.approx(5e-4 * (1 - h["step"] / steps) ** 0.9, rel=1e-6)
        assert h["s"] > 0
    config = json.loads((out / "final_model" / "config.json").read_text())
    assert config["video"] is True


def balanced_copy(model_dir, root, tmp_path):
    """The trained model with its last layer scaled x20 and its object bias moved so that about
    half of the valid pixels are foreground (the 5-step model marks every pixel foreground, and a
    pixel-for-pixel comparison of constant masks would prove nothing); saved to tmp_path."""
    from cli_helpers import balance_head

    from lavt.models.lavt import LAVT
    from lavt.predict import Predictor

    model = LAVT.from_pretrained(model_dir).eval()
    p = Predictor(model, device="cpu", exact=True)
    probs = [p.predict_video(root / "valid" / "JPEGImages" / vid, texts, return_probs=True, progress=False).probs
             for vid, texts in valid_texts().items()]
    balance_head(model, np.concatenate([q.ravel() for q in probs]))
    return model.save_pretrained(tmp_path / "balanced")


def valid_texts():
    """video id -> its expressions in exp id order ("0", "1"), as test_ytvos.build writes them."""
    return {vid: [f"first object of {vid}", "the same object again"] for vid in VALID}


def test_eval_on_a_split_without_masks_writes_the_submission(trained, tmp_path, capsys):
    root, out = trained
    model_dir = balanced_copy(out / "final_model", root, tmp_path)
    zip_path = tmp_path / "sub.zip"
    rc = main(["eval", "demo_video", *TINY_VIDEO, f"data.root={root}", "data.synthetic=null",
               "--model", str(model_dir), "--out", str(zip_path)])
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

    # contents: what Predictor.predict_video gives on the same clip (whole video in one pass, the
    # direct convolution `lavt eval` runs), pixel for pixel, in the folder and in the zip
    from lavt.predict import Predictor

    predictor = Predictor(str(model_dir), device="cpu", exact=True)
    assert predictor.image_size == 32
    foreground = []
    with zipfile.ZipFile(zip_path) as z:
        for vid, texts in valid_texts().items():
            frames, _ = VALID[vid]
            pred = predictor.predict_video(root / "valid" / "JPEGImages" / vid, texts, progress=False)
            assert pred.frame_names == [f"{n:05d}" for n in frames]
            for k, exp in enumerate(("0", "1")):
                for t, n in enumerate(frames):
                    name = f"Annotations/{vid}/{exp}/{n:05d}.png"
                    written = np.asarray(Image.open(tmp_path / "sub" / name))
                    np.testing.assert_array_equal(written == 255, pred.masks[k, t], err_msg=name)
                    with z.open(name) as f:
                        np.testing.assert_array_equal(np.asarray(Image.open(f)), written, err_msg=name)
                foreground.append(pred.masks[k].mean())
    assert all(0.1 < f < 0.9 for f in foreground), foreground  # both classes everywhere: the comparison has teeth


def test_eval_without_out_on_such_a_split_is_one_clear_error(trained, capsys):
    root, out = trained
    rc = main(["eval", "demo_video", *TINY_VIDEO, f"data.root={root}", "data.synthetic=null", "--model", str(out / "final_model")])
    err = capsys.readouterr().err
    assert rc == 2 and "no ground truth" in err and err.count("\n") == 1
