"""Joint image + video training: homogeneous batches in the configured ratio, exact epoch plans,
and a unified model trained through `lavt train` on both synthetic sets."""

from __future__ import annotations

import json

import pytest
import torch

from lavt.data.joint import JointBatchSampler, JointDataset, joint_batches
from lavt.errors import ConfigError


def _kinds(batches, n_image):
    return ["image" if all(i < n_image for i in b) else "video" if all(i >= n_image for i in b) else "mixed" for b in batches]


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_batches_are_homogeneous_in_the_ratio_and_cover_every_clip(ratio):
    n_image, n_video, bs = 50, 40, 4
    plan = joint_batches(n_image, n_video, bs, ratio, seed=3, epoch=1)
    kinds = _kinds(plan, n_image)
    assert "mixed" not in kinds
    assert all(len(b) == bs for b in plan)
    videos = sorted(i for b in plan for i in b if i >= n_image)
    assert videos == list(range(n_image, n_image + n_video))  # every clip once
    share = kinds.count("image") / len(kinds)
    assert abs(share - ratio) < 0.05
    # evenly interleaved: no long run of one kind where the ratio asks for a mix
    longest = max(len(run) for run in "".join("i" if k == "image" else "v" for k in kinds).replace("i", " i ").split())
    assert longest <= 1 / min(ratio, 1 - ratio) + 1
    images = [i for b in plan for i in b if i < n_image]
    assert len(set(images[:n_image])) == min(len(images), n_image)  # without replacement until exhausted


def test_plans_are_a_function_of_seed_and_epoch():
    a = joint_batches(30, 20, 4, 0.5, seed=0, epoch=0)
    assert a == joint_batches(30, 20, 4, 0.5, seed=0, epoch=0)
    assert a != joint_batches(30, 20, 4, 0.5, seed=0, epoch=1)
    assert a != joint_batches(30, 20, 4, 0.5, seed=1, epoch=0)


def test_ratio_extremes_and_errors():
    assert set(_kinds(joint_batches(30, 20, 4, 0.0, 0, 0), 30)) == {"video"}
    only_images = joint_batches(30, 20, 4, 1.0, 0, 0)
    assert set(_kinds(only_images, 30)) == {"image"} and len(only_images) == 7
    with pytest.raises(ConfigError, match="image_ratio"):
        joint_batches(30, 20, 4, 1.5, 0, 0)
    with pytest.raises(ConfigError, match="fewer than one batch"):
        joint_batches(2, 20, 4, 0.5, 0, 0)


def test_ranks_split_the_plan_and_skip_resumes_inside_it():
    ds = JointDataset(list(range(30)), list(range(20)))
    full = JointBatchSampler(ds, 4, 0.5, seed=0, epoch=2).batches
    r0 = JointBatchSampler(ds, 4, 0.5, seed=0, epoch=2, rank=0, world_size=2).batches
    r1 = JointBatchSampler(ds, 4, 0.5, seed=0, epoch=2, rank=1, world_size=2).batches
    assert len(r0) == len(r1) == len(full) // 2
    assert not {tuple(b) for b in r0} & {tuple(b) for b in r1}
    assert JointBatchSampler(ds, 4, 0.5, seed=0, epoch=2, skip=3).batches == full[3:]
    assert ds[5] == 5 and ds[30] == 0 and ds[49] == 19


def test_unified_model_trains_jointly_end_to_end(tmp_path, capsys):
    from lavt.apps.cli import main

    img, vid, out = tmp_path / "img", tmp_path / "vid", tmp_path / "run"
    rc = main([
        "train", "demo_video",
        "model.unified=true", "model.embed_dim=16", "model.depths=[1,1,1,1]", "model.num_heads=[1,2,2,4]",
        "model.window_size=4", "model.decoder_hidden=16",
        "data.name=joint", "data.image_size=48", "data.clip_len=3", "data.synthetic=null",
        f"data.joint={{image: {{root: {img}, dataset: synthetic, split_by: unc, train_split: train, val_split: val, "
        f"synthetic: {{num_images: {{train: 8, val: 2, testA: 1, testB: 1}}}}}}, "
        f"video: {{root: {vid}, synthetic: {{num_videos: {{train: 6, valid: 2}}, frames: 6}}}}}}",
        "train.epochs=1", "train.batch_size=4", "train.val_max_samples=4", f"train.output_dir={out}",
    ])
    capsys.readouterr()
    assert rc == 0
    history = json.loads((out / "history.json").read_text())
    val = history["val"][-1]
    assert {"oIoU", "J&F", "score"} <= set(val)
    assert val["score"] == pytest.approx((val["oIoU"] + val["J&F"]) / 2)
    assert (out / "final_model" / "config.json").is_file()


def test_joint_images_are_one_frame_samples_unless_clip_len_is_set(tmp_path):
    import dataclasses

    from lavt.engine.build import build_datasets, make_tokenizer
    from lavt.engine.config import load_run_config
    from lavt.models.lavt import LAVT

    img, vid = tmp_path / "img", tmp_path / "vid"
    joint = (
        f"data.joint={{image: {{root: {img}, dataset: synthetic, split_by: unc, train_split: train, val_split: val, "
        f"synthetic: {{num_images: {{train: 4, val: 2, testA: 1, testB: 1}}}}}}, "
        f"video: {{root: {vid}, train_split: train, val_split: valid, synthetic: {{num_videos: {{train: 3, valid: 1}}, frames: 6}}}}}}"
    )
    cfg = load_run_config("demo_unified", ["data.image_size=32", "data.clip_len=3", joint])
    tokenizer = make_tokenizer(LAVT.from_config(cfg.model))
    train, _ = build_datasets(cfg, tokenizer)
    image_item, video_item = train[0], train[train.n_image]
    assert image_item["image"].shape == (3, 32, 32) and "video" not in image_item  # T = 1: the 2D path
    assert video_item["video"].shape[0] == 3
    # pseudo-clips on request: the image repeated clip_len times
    cfg.data = dataclasses.replace(cfg.data, joint={**cfg.data.joint, "image": {**cfg.data.joint["image"], "clip_len": 3}})
    train, _ = build_datasets(cfg, tokenizer)
    clip = train[0]["video"]
    assert clip.shape == (3, 3, 32, 32) and torch.equal(clip[0], clip[2])
