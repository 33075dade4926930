"""Ref-YouTube-VOS loader and submission writer on a tiny fixture in the published format
(data-and-metrics.md 2.1-2.7)."""

from __future__ import annotations

import json
import shutil
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from dataset_fixtures import FakeTokenizer, built_once, fresh_copy, one_line
from PIL import Image

from lavt.data.refer import DatasetError
from lavt.data.transforms import preprocess_image, resize_mask
from lavt.data.ytvos import (
    PseudoVideoDataset,
    ReferYouTubeVOS,
    YTVOSIndex,
    collate_video,
    logits_to_masks,
    sample_clip_indices,
    windows,
    write_submission,
    zip_submission,
)
from lavt.errors import ConfigError, InputError

S = 16  # model input size in these tests
PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9)  # DAVIS colours: 1 red, 2 green

# video id -> (frame numbers, (H, W), {obj_id: frames (positions) where it is absent})
VA, VB, VC = "a1b2c3d4e5", "b2c3d4e5f6", "c3d4e5f6a7"
TRAIN = {
    VA: ([0, 5, 10], (32, 48), {2: {1}}),  # object 2 absent from 00005
    VB: ([0, 5, 10], (32, 48), {}),
    # starts late (00010) with a gap (no 00030); object 1 only visible in the last 3 frames
    VC: ([10, 15, 20, 25, 35, 40, 45, 50, 55, 60, 65, 70], (24, 40), {1: set(range(9))}),
}
TRAIN_EXPS = {
    VA: {"0": ("the red box on the left", "1"), "1": ("the green box", "2")},
    VB: {"0": ("a green square", "2")},
    VC: {"10": ("the late red box", "1"), "2": ("red thing appearing at the end", "1")},
}
VALID = {"d4e5f6a7b8": ([0, 5, 10], (32, 48)), "e5f6a7b8c9": ([0, 5, 10, 15, 20], (24, 40))}
TEST = {"f6a7b8c9d0": ([0, 5], (32, 48))}


def fname(n: int) -> str:
    return f"{n:05d}"


def frame_colour(video: str, pos: int) -> tuple[int, int, int]:
    return (20 + 17 * pos, 30 + 40 * sorted(TRAIN | VALID | TEST).index(video), 200 - 9 * pos)


def obj_mask(obj: int, pos: int, hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    m = np.zeros(hw, dtype=bool)
    if obj == 1:
        m[4 : h // 2 + 4, 2 + pos : 14 + pos] = True
    else:
        m[h // 3 : h - 2, w - 18 : w - 2] = True
    return m


def annotation(video: str, pos: int) -> np.ndarray:
    _, hw, absent = TRAIN[video]
    ann = np.zeros(hw, dtype=np.uint8)
    for obj in (1, 2):
        if pos not in absent.get(obj, set()):
            ann[obj_mask(obj, pos, hw)] = obj
    return ann


def write_frames(root: Path, split: str, video: str, frames: list[int], hw: tuple[int, int]) -> None:
    d = root / split / "JPEGImages" / video
    d.mkdir(parents=True)
    for pos, n in enumerate(frames):
        img = np.zeros((*hw, 3), dtype=np.uint8)
        img[:] = frame_colour(video, pos)
        Image.fromarray(img).save(d / f"{fname(n)}.jpg", quality=95)


def build(root: Path) -> Path:
    meta_exp: dict = {"videos": {}}
    meta: dict = {"videos": {}}
    for vid, (frames, hw, _) in TRAIN.items():
        write_frames(root, "train", vid, frames, hw)
        ad = root / "train" / "Annotations" / vid
        ad.mkdir(parents=True)
        for pos, n in enumerate(frames):
            im = Image.fromarray(annotation(vid, pos))
            im.putpalette(PALETTE)
            assert im.mode == "P"
            im.save(ad / f"{fname(n)}.png")
        names = [fname(n) for n in frames]
        meta_exp["videos"][vid] = {
            "expressions": {k: {"exp": t, "obj_id": o} for k, (t, o) in TRAIN_EXPS[vid].items()},
            "frames": names[::-1] if vid == VA else names,  # listed out of order: must come back sorted
        }
        objects = {"1": {"category": "box", "frames": names}, "2": {"category": "square", "frames": names}}
        meta["videos"][vid] = {"objects": objects}
    write_json(root / "meta_expressions" / "train" / "meta_expressions.json", meta_exp)
    write_json(root / "train" / "meta.json", meta)

    valid_meta: dict = {"videos": {}}
    for split, videos in (("valid", VALID), ("test", TEST)):
        for vid, (frames, hw) in videos.items():
            write_frames(root, split, vid, frames, hw)
            valid_meta["videos"][vid] = {
                "expressions": {"0": {"exp": f"first object of {vid}"}, "1": {"exp": "the same object again"}},
                "frames": [fname(n) for n in frames],
            }
    test_meta = {"videos": {v: valid_meta["videos"][v] for v in TEST}}
    write_json(root / "meta_expressions" / "valid" / "meta_expressions.json", valid_meta)
    write_json(root / "meta_expressions" / "test" / "meta_expressions.json", test_meta)
    return root


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


root = built_once(build, "ytvos")
fresh_root = fresh_copy("root", "copy")


# --------------------------------------------------------------------------------------------
# The official sampling rule, checked by brute force
# --------------------------------------------------------------------------------------------
def follows_rule(clip: list[int], anchor: int, n: int, T: int, max_off: int = 3) -> bool:
    if clip != sorted(clip) or len(clip) != T:
        return False
    if T == 1:
        return clip == [anchor]
    for b in range(1, max_off + 1):
        for a in range(1, max_off + 1):
            before, after = max(0, anchor - b), min(n - 1, anchor + a)
            local = [anchor, after] if T == 2 else [anchor, before, after]
            if Counter(local) - Counter(clip):
                continue  # the local frames are not all in the clip
            rest = list((Counter(clip) - Counter(local)).elements())
            g = max(0, T - 3)
            lo, hi = min(local), max(local)
            outside = [i for i in range(n) if i < lo or i > hi]
            if len(outside) >= g:
                ok = len(set(rest)) == len(rest) == g and all(i in outside for i in rest)
            elif n >= g:
                ok = len(set(rest)) == len(rest) == g
            else:
                ok = len(rest) == g and set(rest) == set(range(n))
            if ok:
                return True
    return False


def test_sample_clip_indices_local_frames_are_uniform_1_to_3():
    seen = Counter()
    for s in range(400):
        clip = sample_clip_indices(10, 30, 3, np.random.default_rng(s))
        assert follows_rule(clip, 10, 30, 3)
        seen[tuple(clip)] += 1
    assert set(seen) == {(10 - b, 10, 10 + a) for b in (1, 2, 3) for a in (1, 2, 3)}
    assert min(seen.values()) > 20  # all nine combinations, roughly uniformly


def test_sample_clip_indices_clipped_at_the_ends():
    for s in range(50):
        assert sample_clip_indices(0, 5, 3, np.random.default_rng(s))[:2] == [0, 0]
        assert sample_clip_indices(4, 5, 3, np.random.default_rng(s))[-2:] == [4, 4]
    assert sample_clip_indices(0, 1, 3, np.random.default_rng(0)) == [0, 0, 0]


@pytest.mark.parametrize(
    "anchor,n,T",
    [
        (10, 30, 8), (0, 30, 8), (29, 30, 8), (0, 8, 8), (7, 8, 8), (2, 6, 8),  # tiers 1 and 2
        (3, 7, 8), (1, 3, 8), (0, 1, 5),  # tier 3 (video shorter than the global count)
        (2, 12, 2), (5, 12, 1), (4, 12, 4),  # short clips
    ],
)
def test_sample_clip_indices_follow_the_official_rule(anchor, n, T):
    for s in range(60):
        clip = sample_clip_indices(anchor, n, T, np.random.default_rng(s))
        assert follows_rule(clip, anchor, n, T), clip


def test_global_frames_come_from_outside_the_local_span_on_both_sides():
    used = Counter()
    for s in range(300):
        clip = sample_clip_indices(10, 30, 8, np.random.default_rng(s))
        used.update(i for i in clip if not 7 <= i <= 13)
    assert set(used) == set(range(7)) | set(range(14, 30))


def test_rule_checker_rejects_wrong_clips():  # the brute-force checker itself can fail
    assert not follows_rule([6, 10, 11], 10, 30, 3)  # before-offset 4
    assert not follows_rule([9, 10, 10], 10, 30, 3)  # after-frame missing
    assert not follows_rule([0, 1, 9, 10, 11, 12, 20, 20], 10, 30, 8)  # repeated global with room to spare
    assert not follows_rule([0, 1, 2, 9, 11, 12, 13, 20], 10, 30, 8)  # anchor missing
    assert not follows_rule([0, 1, 2, 3, 4, 4, 4, 5], 2, 6, 8)  # 6 frames >= 5 globals: no repeats
    assert follows_rule([0, 1, 2, 9, 10, 11, 12, 20], 10, 30, 8)


def test_global_frames_exclude_the_local_span_white_box():
    # white box: the two local offsets are the generator's first two draws (before, then after)
    for s in range(200):
        clip = sample_clip_indices(10, 30, 8, np.random.default_rng(s))
        r = np.random.default_rng(s)
        before, after = 10 - int(r.integers(1, 4)), 10 + int(r.integers(1, 4))
        rest = list((Counter(clip) - Counter([before, 10, after])).elements())
        assert len(rest) == 5 and len(set(rest)) == 5 and all(i < before or i > after for i in rest), clip


# --------------------------------------------------------------------------------------------
# Index
# --------------------------------------------------------------------------------------------
def test_train_index(root):
    idx = YTVOSIndex(root, "train")
    assert idx.video_ids == sorted(TRAIN) and len(idx) == 3
    assert idx.videos[VA].frames == ("00000", "00005", "00010")  # listed reversed, returned sorted
    assert idx.videos[VC].frames[0] == "00010" and "00030" not in idx.videos[VC].frames
    got = [(e.video_id, e.exp_id, e.text, e.obj_id) for e in idx.expressions]
    assert got == [
        (VA, "0", "the red box on the left", 1),
        (VA, "1", "the green box", 2),
        (VB, "0", "a green square", 2),
        (VC, "2", "red thing appearing at the end", 1),  # numeric order: 2 before 10
        (VC, "10", "the late red box", 1),
    ]
    assert idx.has_annotations and idx.annotation_dir == root / "train" / "Annotations"
    assert idx.category(VA, 2) == "square" and idx.meta_json_path == root / "train" / "meta.json"
    assert idx.frame_path(VA, "00005") == root / "train" / "JPEGImages" / VA / "00005.jpg"


def test_annotation_is_read_as_palette_indices(root):
    idx = YTVOSIndex(root, "train")
    ann = idx.load_annotation(VA, "00000")
    assert ann.dtype == np.uint8 and set(np.unique(ann)) == {0, 1, 2}
    np.testing.assert_array_equal(ann, annotation(VA, 0))
    assert idx.object_ids(VA) == [frozenset({1, 2}), frozenset({1}), frozenset({1, 2})]


def test_valid_is_the_set_difference_with_test(root):
    idx = YTVOSIndex(root, "valid")
    assert idx.video_ids == sorted(VALID)  # the valid meta lists 3 videos, the test meta 1
    assert all(e.obj_id is None for e in idx.expressions) and len(idx.expressions) == 4
    assert not idx.has_annotations and idx.annotation_dir is None
    test = YTVOSIndex(root, "test")
    assert test.video_ids == list(TEST) and test.image_dir == root / "test" / "JPEGImages"


def test_meta_json_is_optional(fresh_root):
    (fresh_root / "train" / "meta.json").unlink()
    idx = YTVOSIndex(fresh_root, "train")
    assert idx.meta_json_path is None and idx.category(VA, 1) is None and len(idx.expressions) == 5


def edit_train_meta(root: Path, fn) -> Path:
    p = root / "meta_expressions" / "train" / "meta_expressions.json"
    data = json.loads(p.read_text())
    fn(data["videos"])
    p.write_text(json.dumps(data))
    return p


def test_unknown_obj_id_with_meta_json(fresh_root):
    p = edit_train_meta(fresh_root, lambda v: v[VB]["expressions"]["0"].update(obj_id="7"))
    with pytest.raises(DatasetError) as e:
        YTVOSIndex(fresh_root, "train")
    one_line(e, p, "meta.json", "obj_id 7", VB)


def test_unknown_obj_id_without_meta_json_fails_at_fetch(fresh_root):
    (fresh_root / "train" / "meta.json").unlink()
    edit_train_meta(fresh_root, lambda v: v[VB]["expressions"]["0"].update(obj_id="7"))
    ds = ReferYouTubeVOS(fresh_root, clip_len=3, image_size=S, seed=0)
    i = next(i for i, (k, _) in enumerate(ds.samples) if ds.index.expressions[k].video_id == VB)
    with pytest.raises(DatasetError) as e:
        ds[i]
    one_line(e, "obj_id 7", Path("Annotations") / VB)


@pytest.mark.parametrize(
    "edit,words",
    [
        (lambda v: v[VA]["expressions"]["0"].pop("obj_id"), "no 'obj_id'"),
        (lambda v: v[VA]["expressions"]["0"].update(obj_id="one"), "not an integer"),
        (lambda v: v[VA]["expressions"]["0"].pop("exp"), "no 'exp'"),
        (lambda v: v[VA].update(frames=[]), "no frames"),
        (lambda v: v[VA].pop("expressions"), "'expressions'"),
    ],
)
def test_bad_meta_entries(fresh_root, edit, words):
    p = edit_train_meta(fresh_root, edit)
    with pytest.raises(DatasetError) as e:
        YTVOSIndex(fresh_root, "train")
    one_line(e, p, words, VA)


# --------------------------------------------------------------------------------------------
# Train samples
# --------------------------------------------------------------------------------------------
def test_one_sample_per_expression_and_anchor(root):
    ds = ReferYouTubeVOS(root, clip_len=3, image_size=S)
    # 3-frame videos: anchors {0}; 12-frame video: anchors 0, 3, 6, 9 (two expressions)
    assert len(ds) == 3 + 2 * 4
    assert [a for k, a in ds.samples if ds.index.expressions[k].video_id == VC] == [0, 3, 6, 9] * 2
    ds2 = ReferYouTubeVOS(root, clip_len=2, image_size=S, anchor_stride=5)
    assert len(ds2) == 3 + 2 * 3


def expected_item_check(ds: ReferYouTubeVOS, item: dict) -> None:
    vid, obj = item["video_id"], item["obj_id"]
    frames = list(ds.index.videos[vid].frames)
    assert item["frame_names"] == [frames[i] for i in item["frame_indices"].tolist()]
    for t, name in enumerate(item["frame_names"]):
        pos = frames.index(name)
        drawn = annotation(vid, pos) == obj  # the referred object only, as drawn
        assert torch.equal(item["target"][t], torch.from_numpy(resize_mask(drawn, S).astype(np.int64)))
        assert bool(item["valid"][t]) == bool(drawn.any())
        frame = Image.open(ds.index.frame_path(vid, name)).convert("RGB")
        assert torch.equal(item["video"][t], preprocess_image(frame, S))
        assert item["orig_sizes"][t].tolist() == list(TRAIN[vid][1])


def test_train_item_fields_masks_and_frames(root):
    ds = ReferYouTubeVOS(root, clip_len=4, image_size=S, tokenizer=FakeTokenizer(), seed=1)
    for i in range(len(ds)):
        item = ds[i]
        assert item["video"].shape == (4, 3, S, S) and item["video"].dtype == torch.float32
        assert item["target"].shape == (4, S, S) and item["target"].dtype == torch.int64
        assert item["valid"].shape == (4,) and item["valid"].dtype == torch.bool
        assert set(item["target"].unique().tolist()) <= {0, 1} and item["valid"].any()
        e = ds.index.expressions[ds.samples[item["sample_index"]][0]]
        got = (item["video_id"], item["exp_id"], item["obj_id"], item["text"])
        assert got == (e.video_id, e.exp_id, e.obj_id, e.text)
        ids, mask = FakeTokenizer()([e.text])
        assert torch.equal(item["input_ids"], ids[0]) and torch.equal(item["attention_mask"], mask[0])
        n = len(ds.index.videos[item["video_id"]].frames)
        assert follows_rule(item["frame_indices"].tolist(), item["anchor"], n, 4)
        expected_item_check(ds, item)


def test_referred_object_only(root):
    ds = ReferYouTubeVOS(root, clip_len=3, image_size=S, mode="eval")
    red = ds[0]  # VA "0" -> object 1
    green = ds[1]  # VA "1" -> object 2
    assert red["obj_id"] == 1 and green["obj_id"] == 2
    assert not (red["target"].bool() & green["target"].bool()).any()
    assert red["target"].sum() > 0 and green["target"].sum() > 0


def test_absent_object_frames_have_empty_targets(root):
    ds = ReferYouTubeVOS(root, clip_len=3, image_size=S, seed=0)
    k = next(i for i, (k, _) in enumerate(ds.samples) if ds.index.expressions[k].obj_id == 2
             and ds.index.expressions[k].video_id == VA)
    found = False
    for epoch in range(30):
        ds.set_epoch(epoch)
        item = ds[k]
        assert item["video_id"] == VA  # visible in other frames: no redraw
        for t, name in enumerate(item["frame_names"]):
            if name == "00005":
                assert item["target"][t].sum() == 0 and not item["valid"][t]
                found = True
            else:
                assert item["target"][t].sum() > 0 and item["valid"][t]
    assert found


def test_seeded_draws_are_a_function_of_seed_epoch_and_index(root):
    def fetch(ds, order):
        return {i: ds[i] for i in order}

    n = len(ReferYouTubeVOS(root, clip_len=5, image_size=S))
    a = fetch(ReferYouTubeVOS(root, clip_len=5, image_size=S, seed=7), range(n))
    b = fetch(ReferYouTubeVOS(root, clip_len=5, image_size=S, seed=7), reversed(range(n)))
    for i in range(n):
        assert a[i]["frame_names"] == b[i]["frame_names"] and a[i]["sample_index"] == b[i]["sample_index"]
        assert torch.equal(a[i]["video"], b[i]["video"]) and torch.equal(a[i]["target"], b[i]["target"])
    c = ReferYouTubeVOS(root, clip_len=5, image_size=S, seed=7)
    c.set_epoch(1)
    assert any(c[i]["frame_names"] != a[i]["frame_names"] for i in range(n))
    d = ReferYouTubeVOS(root, clip_len=5, image_size=S, seed=8)
    assert any(d[i]["frame_names"] != a[i]["frame_names"] for i in range(n))
    # unseeded: drawn from the global torch RNG
    u = ReferYouTubeVOS(root, clip_len=5, image_size=S)
    torch.manual_seed(3)
    first = [u[i]["frame_names"] for i in range(n)]
    torch.manual_seed(3)
    assert [u[i]["frame_names"] for i in range(n)] == first


def test_invisible_object_redraws_a_random_sample(root):
    ds = ReferYouTubeVOS(root, clip_len=1, image_size=S, seed=0)
    vc = [i for i, (k, a) in enumerate(ds.samples) if ds.index.expressions[k].video_id == VC and a < 9]
    assert vc
    for i in vc:  # object 1 of VC is invisible in frames 0..8: every such anchor is redrawn
        item = ds[i]
        assert item["index"] == i and item["sample_index"] != i and item["valid"].all()
        expected_item_check(ds, item)
    off = ReferYouTubeVOS(root, clip_len=1, image_size=S, seed=0, resample_invisible=False)
    item = off[vc[0]]
    assert item["sample_index"] == vc[0] and not item["valid"].any() and item["target"].sum() == 0


# --------------------------------------------------------------------------------------------
# Eval samples
# --------------------------------------------------------------------------------------------
def test_windows_helper(root):
    assert windows(5, 2) == [[0, 1], [2, 3], [4]]
    assert windows(["a", "b", "c"], 3) == [["a", "b", "c"]]
    video = YTVOSIndex(root, "train").videos[VC]
    w = windows(video, 5)
    assert [len(x) for x in w] == [5, 5, 2] and sum(w, []) == list(video.frames)
    with pytest.raises(ConfigError):
        windows(5, 0)


def test_eval_whole_video_per_expression(root):
    ds = ReferYouTubeVOS(root, split="valid", image_size=S, mode="eval", tokenizer=FakeTokenizer())
    assert len(ds) == 4
    for i in range(len(ds)):
        item = ds[i]
        frames, hw = VALID[item["video_id"]]
        assert item["frame_names"] == [fname(n) for n in frames]
        assert item["video"].shape == (len(frames), 3, S, S)
        assert item["orig_size"].tolist() == list(hw) and item["orig_sizes"].tolist() == [list(hw)] * len(frames)
        assert "target" not in item and item["obj_id"] is None and "input_ids" in item
    assert [ds[i]["exp_id"] for i in range(4)] == ["0", "1", "0", "1"]


def test_eval_windows_cover_every_frame_once(root):
    whole = ReferYouTubeVOS(root, split="train", image_size=S, mode="eval")
    ds = ReferYouTubeVOS(root, split="train", image_size=S, mode="eval", eval_clip_len=5)
    assert len(whole) == 5 and len(ds) == 3 + 2 * 3
    covered: dict = {}
    for i in range(len(ds)):
        item = ds[i]
        covered.setdefault((item["video_id"], item["exp_id"]), []).extend(item["frame_names"])
        assert len(item["frame_names"]) <= 5
        expected_item_check(ds, item)
    for e in ds.index.expressions:
        assert covered[(e.video_id, e.exp_id)] == list(ds.index.videos[e.video_id].frames)
    # the whole-video item equals the concatenated windows
    vc = next(i for i in range(len(whole)) if whole[i]["video_id"] == VC)
    parts = [ds[i] for i in range(len(ds)) if ds[i]["video_id"] == VC and ds[i]["exp_id"] == whole[vc]["exp_id"]]
    assert torch.equal(torch.cat([p["target"] for p in parts]), whole[vc]["target"])
    np.testing.assert_array_equal(
        whole.original_masks(vc), np.stack([annotation(VC, p) == 1 for p in range(12)])
    )


# --------------------------------------------------------------------------------------------
# Pseudo-videos and collation
# --------------------------------------------------------------------------------------------
class TinyImageDataset(torch.utils.data.Dataset):
    def __init__(self):
        self.epoch = None

    def __len__(self):
        return 3

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        target = torch.zeros(S, S, dtype=torch.int64)
        target[2 : 5 + i, 3:9] = 1
        if i == 2:
            target.zero_()
        ids, mask = FakeTokenizer()([f"object {i}"])
        return {"image": torch.randn(3, S, S, generator=g), "target": target, "text": f"object {i}",
                "ref_id": 40 + i, "sent_id": 70 + i, "input_ids": ids[0], "attention_mask": mask[0], "index": i}


def test_pseudo_video_repeats_the_image(root):
    base = TinyImageDataset()
    ds = PseudoVideoDataset(base, 4)
    assert len(ds) == 3
    item = ds[1]
    src = base[1]
    assert item["video"].shape == (4, 3, S, S) and item["target"].shape == (4, S, S)
    for t in range(4):
        assert torch.equal(item["video"][t], src["image"]) and torch.equal(item["target"][t], src["target"])
    assert item["valid"].tolist() == [True] * 4 and not ds[2]["valid"].any()
    assert (item["video_id"], item["exp_id"], item["text"]) == ("ref41", "71", "object 1")
    assert item["frame_names"] == ["00000"] * 4 and item["orig_size"].tolist() == [S, S]
    video_keys = set(ReferYouTubeVOS(root, clip_len=4, image_size=S, tokenizer=FakeTokenizer(), seed=0)[0])
    assert video_keys - {"anchor", "sample_index"} <= set(item)
    item["video"][0].zero_()  # a real copy, not a view of one frame
    assert not torch.equal(item["video"][1], item["video"][0])
    ds.set_epoch(5)
    assert base.epoch == 5
    batch = collate_video([ds[0], ds[1]])
    assert batch["video"].shape == (2, 4, 3, S, S) and batch["video_id"] == ["ref40", "ref41"]


def test_collate_video(root):
    ds = ReferYouTubeVOS(root, clip_len=3, image_size=S, tokenizer=FakeTokenizer(), seed=0)
    batch = collate_video([ds[0], ds[1], ds[2]])
    assert batch["video"].shape == (3, 3, 3, S, S) and batch["target"].shape == (3, 3, S, S)
    assert batch["valid"].shape == (3, 3) and batch["input_ids"].shape == (3, 8)
    assert batch["frame_names"][1] == ds[1]["frame_names"] and isinstance(batch["text"], list)
    ev = ReferYouTubeVOS(root, split="valid", image_size=S, mode="eval")
    mixed = collate_video([ev[0], ev[2]])  # 3 and 5 frames: kept as lists
    assert isinstance(mixed["video"], list) and [v.shape[0] for v in mixed["video"]] == [3, 5]
    with pytest.raises(ValueError):
        collate_video([])


# --------------------------------------------------------------------------------------------
# Submission
# --------------------------------------------------------------------------------------------
def test_logits_to_masks():
    logits = torch.zeros(2, 2, 4, 4)
    logits[0, 1, :2] = 5.0
    logits[1, 0] = 5.0
    m = logits_to_masks(logits, (8, 6))
    assert m.shape == (2, 8, 6) and m.dtype == torch.bool
    assert m[0, 0].all() and not m[0, -1].any() and not m[1].any()
    with pytest.raises(InputError):
        logits_to_masks(torch.zeros(2, 3, 4, 4), (8, 8))


def test_submission_layout_and_zip(root, tmp_path):
    idx = YTVOSIndex(root, "valid")
    out = tmp_path / "pred"
    expected = {}
    for e in idx.expressions:
        frames, (h, w) = VALID[e.video_id]
        masks = np.zeros((len(frames), h, w), dtype=bool)
        for t in range(len(frames)):
            masks[t, : t + 1, : 2 * t + 3] = True
        names = list(idx.videos[e.video_id].frames)
        paths = write_submission(out, e.video_id, e.exp_id, names, torch.from_numpy(masks))
        for name, p, m in zip(names, paths, masks):
            assert p == out / "Annotations" / e.video_id / e.exp_id / f"{name}.png"
            expected[f"Annotations/{e.video_id}/{e.exp_id}/{name}.png"] = m
    for arc, m in expected.items():
        with Image.open(out / arc) as im:
            assert im.mode == "L" and im.size == (m.shape[1], m.shape[0])
            arr = np.array(im)
        assert set(np.unique(arr)) == {0, 255}
        np.testing.assert_array_equal(arr == 255, m)

    z = zip_submission(out, tmp_path / "sub" / "submission.zip", index=idx)
    with zipfile.ZipFile(z) as zf:
        names = zf.namelist()
        assert sorted(names) == sorted(expected) and len(names) == 2 * 3 + 2 * 5
        assert {n.split("/")[0] for n in names} == {"Annotations"}
        for n in names:
            with Image.open(zf.open(n)) as im:
                assert im.size == (expected[n].shape[1], expected[n].shape[0])

    (out / "Annotations" / "e5f6a7b8c9" / "1" / "00020.png").unlink()
    with pytest.raises(DatasetError) as e:
        zip_submission(out, tmp_path / "again.zip", index=idx)
    one_line(e, "e5f6a7b8c9/1/00020.png")


def test_submission_bad_input(tmp_path):
    with pytest.raises(InputError) as e:
        write_submission(tmp_path, "vid", "0", ["00000", "00005"], np.zeros((1, 4, 4), bool))
    one_line(e, "1 masks for 2 frame names")
    with pytest.raises(InputError):
        write_submission(tmp_path, "../x", "0", ["00000"], np.zeros((1, 4, 4), bool))
    with pytest.raises(InputError):
        write_submission(tmp_path, "vid", "0", ["00000"], np.zeros((1, 4, 4), np.float32))
    with pytest.raises(DatasetError) as e:
        zip_submission(tmp_path / "nothing", tmp_path / "s.zip")
    one_line(e, tmp_path / "nothing")


# --------------------------------------------------------------------------------------------
# Bad input on disk: one line naming the file
# --------------------------------------------------------------------------------------------
def test_missing_meta_files(fresh_root):
    p = fresh_root / "meta_expressions" / "test" / "meta_expressions.json"
    p.unlink()
    with pytest.raises(DatasetError) as e:
        YTVOSIndex(fresh_root, "valid")
    one_line(e, p, "valid from test")
    shutil.rmtree(fresh_root / "meta_expressions" / "train")
    with pytest.raises(DatasetError) as e:
        ReferYouTubeVOS(fresh_root)
    one_line(e, fresh_root / "meta_expressions" / "train" / "meta_expressions.json", "not found")


def test_corrupt_meta_file(fresh_root):
    p = fresh_root / "meta_expressions" / "train" / "meta_expressions.json"
    p.write_text('{"videos": {')
    with pytest.raises(DatasetError) as e:
        YTVOSIndex(fresh_root)
    one_line(e, p, "not valid JSON")


def test_unknown_split_and_bad_arguments(root, tmp_path):
    with pytest.raises(DatasetError) as e:
        ReferYouTubeVOS(root, split="val")
    one_line(e, "'val'", "train, valid, test")
    with pytest.raises(DatasetError) as e:
        YTVOSIndex(tmp_path / "absent")
    one_line(e, tmp_path / "absent")
    with pytest.raises(ConfigError):
        ReferYouTubeVOS(root, split="valid", mode="train")
    with pytest.raises(ConfigError):
        ReferYouTubeVOS(root, mode="test")
    with pytest.raises(ConfigError):
        ReferYouTubeVOS(root, clip_len=0)


def first_sample_of(ds: ReferYouTubeVOS, vid: str) -> int:
    return next(i for i, (k, _) in enumerate(ds.samples) if ds.index.expressions[k].video_id == vid)


@pytest.mark.parametrize("kind", ["frame", "frame_folder", "annotation"])
def test_missing_files(fresh_root, kind):
    base = {"frame": "JPEGImages", "frame_folder": "JPEGImages", "annotation": "Annotations"}[kind]
    ext = "png" if kind == "annotation" else "jpg"
    p = fresh_root / "train" / base / VB / f"00000.{ext}"
    if kind == "frame_folder":
        shutil.rmtree(p.parent)
    else:
        p.unlink()
    ds = ReferYouTubeVOS(fresh_root, clip_len=3, image_size=S, mode="eval")
    with pytest.raises(DatasetError) as e:
        ds[first_sample_of(ds, VB)]
    one_line(e, p, "not found")


@pytest.mark.parametrize("kind", ["jpg", "png", "rgb_png", "size"])
def test_corrupt_files(fresh_root, kind):
    if kind == "jpg":
        p = fresh_root / "train" / "JPEGImages" / VB / "00005.jpg"
        p.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    else:
        p = fresh_root / "train" / "Annotations" / VB / "00005.png"
        if kind == "png":
            p.write_bytes(p.read_bytes()[:40])
        elif kind == "rgb_png":
            Image.new("RGB", (48, 32)).save(p)
        else:
            Image.new("P", (40, 32)).save(p)
    ds = ReferYouTubeVOS(fresh_root, clip_len=3, image_size=S, mode="eval")
    with pytest.raises(DatasetError) as e:
        ds[first_sample_of(ds, VB)]
    one_line(e, p, {"jpg": "cannot read", "png": "cannot read", "rgb_png": "mode RGB", "size": "40x32"}[kind])
