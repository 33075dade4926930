"""A2D-Sentences / JHMDB-Sentences loaders and the annotated-frame protocol, on tiny fixtures in
the published layouts (data-and-metrics.md 3.1, 3.2, 4.1; official-lavt-facts.md 4.6)."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

h5py = pytest.importorskip("h5py")
scipy_io = pytest.importorskip("scipy.io")

from dataset_fixtures import built_once, fresh_copy, one_line  # noqa: E402

from lavt.data.a2d import (  # noqa: E402
    A2DSample,
    A2DSentences,
    build_a2d_samples,
    read_a2d_masks,
    read_a2d_samples,
)
from lavt.data.annotated_frame import (  # noqa: E402
    annotated_position,
    consecutive_window,
    evaluate_annotated_frames,
    score_annotated_batch,
    score_annotated_frame,
)
from lavt.data.jhmdb import JHMDBSentences  # noqa: E402
from lavt.data.refer import DatasetError  # noqa: E402
from lavt.data.transforms import resize_mask  # noqa: E402
from lavt.data.ytvos import collate_video, sample_clip_indices  # noqa: E402
from lavt.errors import ConfigError, InputError  # noqa: E402

H, W = 48, 64  # A2D fixture frames (non-square, so a missing transpose cannot go unnoticed)
S = 16  # model input size in these tests: 48x64 -> 16x16 samples rows 3i+1, cols 4j+2
N_FRAMES = 6
VA, VB, VM = "vidA_train", "vidB_test", "vidM_missed"


def gray(i: int) -> int:
    return 20 + 35 * i  # frame i (0-based) is a flat grey: frames can be told apart after decoding


def rect(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[r0:r1, c0:c1] = True
    return m


# (video, frame 1-based) -> [(instance id, mask)] in the h5 'instance' order
MASKS = {
    (VA, 2): [(1, rect(6, 24, 8, 40)), (2, rect(27, 45, 4, 16)), (7, np.zeros((H, W), bool))],  # 7: empty
    (VA, 5): [(1, rect(9, 30, 12, 44))],  # N == 1: reMask stored 2-D; instance 2 absent here
    (VB, 1): [(3, rect(24, 48, 44, 64)), (1, rect(6, 24, 8, 40))],  # ids not sorted
    (VB, 6): [(3, rect(24, 48, 40, 64))],  # instance 1 absent here
}
TEXT_ROWS = [  # a2d_annotation.txt rows: video_id, instance_id, sentence
    (VA, "1", "The man  RUNNING on the left"),
    (VA, "2", '"a dog, jumping"'),
    (VA, "1 (copy)", "the man running"),  # the known bad row: dropped
    (VB, "1", "left person"),
    (VB, "3", "The Right person"),
    (VM, "1", "a missed video"),  # excluded by a2d_missed_videos.txt (and it has no files)
]
# what MTTR's rule gives: rows in order, then annotated frames sorted, only where the instance is listed
EXPECTED = {
    "train": [
        ["the man  running on the left", VA, 2, 1],
        ["the man  running on the left", VA, 5, 1],
        ["a dog, jumping", VA, 2, 2],
    ],
    "test": [["left person", VB, 1, 1], ["the right person", VB, 1, 3], ["the right person", VB, 6, 3]],
}


def write_h5(path: Path, entries: list[tuple[int, np.ndarray]]) -> None:
    """MATLAB v7.3 as h5py sees it: 'instance' (1, N) doubles, 'reMask' column-major (N, W, H) or
    (W, H) for one instance, 'reBBox' (4, N), 'id'."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = np.array([[float(i) for i, _ in entries]])
    masks = np.stack([m.T.astype(np.uint8) for _, m in entries])  # (N, W, H)
    with h5py.File(path, "w") as f:
        f["instance"] = ids
        f["reMask"] = masks[0] if len(entries) == 1 else masks
        f["reBBox"] = np.zeros((4, len(entries)))
        f["id"] = np.array([[11.0]])


def frame_images() -> list[Image.Image]:
    return [Image.fromarray(np.full((H, W, 3), gray(i), np.uint8)) for i in range(N_FRAMES)]


def build_a2d(root: Path, layout: str = "mttr", with_json: bool = True) -> Path:
    """``layout="mttr"``: text_annotations/ + JSONs at the root; ``"lavt"``: all under Release/."""
    from lavt.io.videos import write_mp4

    text = root / ("text_annotations" if layout == "mttr" else "Release")
    json_dir = root if layout == "mttr" else root / "Release"
    (root / "Release").mkdir(parents=True, exist_ok=True)
    (root / "Release" / "videoset.csv").write_text(
        f"{VA},11,0,1,{H},{W},{N_FRAMES},2,0\n{VB},11,0,1,{H},{W},{N_FRAMES},2,1\n{VM},11,0,1,{H},{W},{N_FRAMES},2,1\n"
    )
    text.mkdir(parents=True, exist_ok=True)
    (text / "a2d_missed_videos.txt").write_text(f"{VM}\n")
    lines = ["video_id,instance_id,query"] + [",".join(r) for r in TEXT_ROWS]
    (text / "a2d_annotation.txt").write_text("\n".join(lines) + "\n")
    for (vid, frame), entries in MASKS.items():
        write_h5(text / "a2d_annotation_with_instances" / vid / f"{frame:05d}.h5", entries)
    write_mp4(root / "Release" / "clips320H" / f"{VA}.mp4", frame_images(), fps=6)  # train video: mp4
    folder = root / "Release" / "pngs320H" / VB  # test video: pre-extracted PNG frames
    folder.mkdir(parents=True)
    for i, im in enumerate(frame_images()):
        im.save(folder / f"{i + 1:05d}.png")
    if with_json:
        for split, samples in EXPECTED.items():
            (json_dir / f"a2d_sentences_single_frame_{split}_annotations.json").write_text(json.dumps(samples))
    return root


a2d_root = built_once(build_a2d, "a2d")
fresh_a2d = fresh_copy("a2d_root", "a2d")


# --------------------------------------------------------------------------------------------
# Files and sample lists
# --------------------------------------------------------------------------------------------
def test_h5_masks_are_transposed_and_follow_the_instance_list(a2d_root):
    ids, masks = read_a2d_masks(a2d_root / "text_annotations/a2d_annotation_with_instances" / VB / "00001.h5")
    assert ids == [3, 1]
    assert masks.shape == (2, H, W) and masks.dtype == bool
    np.testing.assert_array_equal(masks[0], MASKS[(VB, 1)][0][1])
    np.testing.assert_array_equal(masks[1], MASKS[(VB, 1)][1][1])
    ids, masks = read_a2d_masks(a2d_root / "text_annotations/a2d_annotation_with_instances" / VA / "00005.h5")
    assert ids == [1] and masks.shape == (1, H, W)  # the 2-D (W, H) single-instance case
    np.testing.assert_array_equal(masks[0], MASKS[(VA, 5)][0][1])


def test_sample_counts_from_json_and_from_text_agree(a2d_root, tmp_path):
    for split in ("train", "test"):
        ds = A2DSentences(a2d_root, split, mode="eval", image_size=S)
        assert [s.to_list() for s in ds.samples] == EXPECTED[split]
        assert ds.annotations_path == a2d_root / f"a2d_sentences_single_frame_{split}_annotations.json"
        # MTTR's construction from the text release: missed video and "1 (copy)" dropped,
        # frames without the instance skipped
        assert [s.to_list() for s in build_a2d_samples(a2d_root, split)] == EXPECTED[split]
    no_json = build_a2d(tmp_path / "nojson", with_json=False)
    ds = A2DSentences(no_json, "test", mode="eval", image_size=S)
    assert ds.annotations_path is None and len(ds) == 3
    assert ds.sample_info(1) == {"video_id": VB, "annotated_frame": 1, "instance_id": 3,
                                 "text": "the right person", "image_id": f"v_{VB}_f_1_i_3"}


def test_lavt_rs_layout_is_found(tmp_path):
    root = build_a2d(tmp_path / "lavt", layout="lavt")
    assert not (root / "text_annotations").exists()
    ds = A2DSentences(root, "train", mode="eval", image_size=S, clip_len=4)
    assert ds.annotations_path == root / "Release/a2d_sentences_single_frame_train_annotations.json"
    assert ds.mask_dir == root / "Release/a2d_annotation_with_instances"
    np.testing.assert_array_equal(ds.original_masks(2)[0], MASKS[(VA, 2)][1][1])


# --------------------------------------------------------------------------------------------
# Eval clips: 16 consecutive frames around the annotated one, clamped
# --------------------------------------------------------------------------------------------
def test_consecutive_window_rule():
    assert consecutive_window(20, 40, 16) == list(range(12, 28))  # [f-1-8, f-1+8)
    assert consecutive_window(20, 40, 5) == [18, 19, 20, 21, 22]  # odd T: (T+1)//2 after
    assert consecutive_window(0, 6, 16) == [0] * 9 + [1, 2, 3, 4, 5, 5, 5]
    assert consecutive_window(5, 6, 16) == [0, 0, 0, 0, 1, 2, 3, 4] + [5] * 8
    assert annotated_position([0] * 9 + [1, 2], 0) == 0  # official list.index
    assert annotated_position([0] * 9 + [1, 2], 0, "center") == 5
    with pytest.raises(ValueError):
        consecutive_window(6, 6, 4)


def test_eval_items_window_target_and_original_mask(a2d_root):
    ds = A2DSentences(a2d_root, "test", mode="eval", image_size=S)  # clip_len default 16
    assert ds.clip_len == 16
    item = ds[0]  # vidB frame 1, instance 1 (second in the h5 list)
    assert item["frame_indices"].tolist() == [0] * 9 + [1, 2, 3, 4, 5, 5, 5]
    assert item["frame_names"][:10] == ["00001"] * 9 + ["00002"]
    assert item["annotated"] == 0 and item["annotated_frame"] == 1
    assert item["video"].shape == (16, 3, S, S) and item["target"].shape == (16, S, S)
    assert item["target"].dtype == torch.int64 and item["valid"].tolist() == [True] + [False] * 15
    assert item["target"][1:].sum() == 0
    gt = MASKS[(VB, 1)][1][1]
    np.testing.assert_array_equal(item["target"][0].numpy(), resize_mask(gt, S))
    assert int(item["target"][0].sum()) == 6 * 8  # rows 2..7, cols 2..9 of the 16x16 grid
    assert item["orig_sizes"].tolist() == [[H, W]] * 16 and item["orig_size"].tolist() == [H, W]
    assert (item["text"], item["video_id"], item["exp_id"], item["instance_id"]) == ("left person", VB, "1", 1)
    assert item["image_id"] == f"v_{VB}_f_1_i_1"
    orig = ds.original_masks(0)
    assert orig.shape == (1, H, W) and orig.dtype == bool
    np.testing.assert_array_equal(orig[0], gt)
    np.testing.assert_array_equal(ds.original_masks(1)[0], MASKS[(VB, 1)][0][1])  # instance 3
    # the frames are the right ones (PNG frames: exact grey levels, de-normalised)
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    levels = [round(float((v * std + mean).mean() * 255)) for v in item["video"]]
    assert levels == [gray(i) for i in item["frame_indices"].tolist()]

    last = ds[2]  # frame 6 = the last frame: clamped at the end
    assert last["frame_indices"].tolist() == [0, 0, 0, 0, 1, 2, 3, 4] + [5] * 8
    assert last["annotated"] == 8 and last["valid"].nonzero().flatten().tolist() == [8]
    np.testing.assert_array_equal(last["target"][8].numpy(), resize_mask(MASKS[(VB, 6)][0][1], S))

    center = A2DSentences(a2d_root, "test", mode="eval", image_size=S, score_position="center")
    assert center[0]["annotated"] == 8 and center[0]["valid"].nonzero().flatten().tolist() == [8]


def test_eval_clip_len_and_tokenizer_and_collate(a2d_root):
    def tok(texts):
        ids = torch.tensor([[101, len(texts[0].split()), 102, 0]])
        return ids, (ids != 0).long()

    ds = A2DSentences(a2d_root, "test", mode="eval", image_size=S, clip_len=4, tokenizer=tok)
    items = [ds[0], ds[2]]
    assert items[0]["frame_indices"].tolist() == [0, 0, 0, 1]  # [f-1-2, f-1+2) clamped
    assert items[1]["frame_indices"].tolist() == [3, 4, 5, 5]
    assert items[0]["input_ids"].tolist() == [101, 2, 102, 0]
    batch = collate_video(items)
    assert batch["video"].shape == (2, 4, 3, S, S) and batch["annotated"] == [0, 2]


# --------------------------------------------------------------------------------------------
# Train clips: official local + global sampling around the annotated frame
# --------------------------------------------------------------------------------------------
def test_train_items_follow_the_official_sampling(a2d_root):
    ds = A2DSentences(a2d_root, "train", mode="train", image_size=S, clip_len=4, seed=3)
    assert len(ds) == 3
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            f = EXPECTED["train"][i][2]
            idx = item["frame_indices"].tolist()
            expected = sample_clip_indices(f - 1, N_FRAMES, 4, np.random.default_rng([3, epoch, i]))
            assert idx == expected and idx == sorted(idx) and len(idx) == 4
            assert f - 1 in idx
            # one local frame 1..3 before (clamped at 0) and one 1..3 after (clamped at the end)
            assert any(j == max(0, f - 1 - b) for j in idx for b in (1, 2, 3))
            assert any(j == min(N_FRAMES - 1, f - 1 + a) for j in idx for a in (1, 2, 3))
            pos = item["annotated"]
            assert pos == idx.index(f - 1)
            assert item["valid"].nonzero().flatten().tolist() == [pos]
            others = torch.ones(4, dtype=torch.bool)
            others[pos] = False
            assert item["target"][others].sum() == 0 and item["target"][pos].sum() > 0
            mp4_level = [float(v.mean()) for v in item["video"]]
            assert mp4_level == sorted(mp4_level)  # decoded mp4 frames in index order (brighter later)
    ds.set_epoch(0)
    a, b = ds[1], ds[1]
    assert torch.equal(a["frame_indices"], b["frame_indices"]) and torch.equal(a["video"], b["video"])
    draws = set()
    for e in range(12):
        ds.set_epoch(e)
        draws.add(tuple(ds[1]["frame_indices"].tolist()))
    assert len(draws) > 1  # the epoch changes the draw
    item = ds[2]  # instance 2 at frame 2: the right mask, not instance 1's
    np.testing.assert_array_equal(item["target"][item["annotated"]].numpy(), resize_mask(MASKS[(VA, 2)][1][1], S))


def test_dataloader_workers_after_the_main_process_decoded(a2d_root):
    """FFmpeg objects inherited through fork hang: a worker forked after the main process read an
    mp4 item must still load (the DataLoader timeout turns a hang into a failure)."""
    ds = A2DSentences(a2d_root, "train", mode="train", image_size=S, clip_len=4, seed=0)
    first = ds[0]
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=1, collate_fn=collate_video, timeout=30)
    batch = next(iter(loader))
    assert batch["video"].shape == (3, 4, 3, S, S)
    assert torch.equal(batch["video"][0], first["video"])


def test_train_redraws_an_empty_annotated_mask(a2d_root, tmp_path):
    custom = tmp_path / "custom.json"
    custom.write_text(json.dumps([["the ghost", VA, 2, 7], ["a dog", VA, 2, 2]]))
    ds = A2DSentences(a2d_root, "train", mode="train", image_size=S, clip_len=3, seed=0, annotations=custom)
    item = ds[0]
    assert item["index"] == 0 and item["sample_index"] == 1 and item["text"] == "a dog"
    ev = A2DSentences(a2d_root, "train", mode="eval", image_size=S, clip_len=3, annotations=custom)
    kept = ev[0]  # eval keeps (and scores) it: no silent replacement
    assert kept["sample_index"] == 0 and not kept["valid"].any() and kept["target"].sum() == 0


def test_eval_random_sampling_is_seeded(a2d_root):
    ds = A2DSentences(a2d_root, "test", mode="eval", image_size=S, clip_len=5, seed=1, eval_sampling="random")
    idx = ds[2]["frame_indices"].tolist()
    assert idx == sample_clip_indices(5, N_FRAMES, 5, np.random.default_rng([1, 0, 2]))
    assert 5 in idx and ds[2]["annotated"] == idx.index(5)
    ds.set_epoch(1)
    assert ds[2]["frame_indices"].tolist() == sample_clip_indices(5, N_FRAMES, 5, np.random.default_rng([1, 1, 2]))


# --------------------------------------------------------------------------------------------
# Scoring: hand-counted I and U
# --------------------------------------------------------------------------------------------
def block(r0, r1, c0, c1) -> torch.Tensor:
    m = torch.zeros(S, S, dtype=torch.bool)
    m[r0:r1, c0:c1] = True
    return m


def logits_for(pred: torch.Tensor, t: int, annotated: int) -> torch.Tensor:
    lg = torch.zeros(t, 2, S, S)
    lg[:, 1] = 1.0  # every other frame predicts "everything": must be ignored
    lg[annotated, 1] = pred.float()
    lg[annotated, 0] = 0.5
    return lg


def test_official_numbers_by_hand(a2d_root):
    ds = A2DSentences(a2d_root, "test", mode="eval", image_size=S)
    # GT in the 16x16 grid: s0 inst 1 rows 2..7 x cols 2..9 (48 px); s1 inst 3 rows 8..15 x
    # cols 11..15 (40 px); s2 inst 3 at frame 6 rows 8..15 x cols 10..15 (48 px)
    assert [int(ds[i]["target"].sum()) for i in range(3)] == [48, 40, 48]
    preds = {
        f"v_{VB}_f_1_i_1": block(2, 8, 2, 6),  # left half of the GT: I = 24, U = 48 -> 0.5
        f"v_{VB}_f_1_i_3": torch.zeros(S, S, dtype=torch.bool),  # empty: I = 0, U = 40 -> 0
        f"v_{VB}_f_6_i_3": block(8, 16, 10, 16) | block(0, 2, 0, 4),  # GT + 8 px: I = 48, U = 56
    }
    expected_iu = [(24, 48), (0, 40), (48, 56)]
    for i in range(3):
        item = ds[i]
        lg = logits_for(preds[item["image_id"]], 16, item["annotated"])
        assert score_annotated_frame(lg, item) == expected_iu[i]
        assert score_annotated_frame(lg[item["annotated"]], item) == expected_iu[i]
        # the same numbers from the original mask (official GT resize = PIL NEAREST)
        assert score_annotated_frame(lg, item, gt_original=ds.original_masks(i)) == expected_iu[i]

    meter = evaluate_annotated_frames(lambda it: logits_for(preds[it["image_id"]], 16, it["annotated"]), ds)
    r = meter.compute()
    assert r["n"] == 3
    assert math.isclose(r["oIoU"], 100 * 72 / 144)
    assert math.isclose(r["mIoU"], 100 * (0.5 + 0 + 48 / 56) / 3)
    assert math.isclose(r["P@0.5"], 100 * 2 / 3)  # IoU 0.5 passes (>=, LAVT)
    assert math.isclose(r["P@0.6"], 100 / 3) and math.isclose(r["P@0.8"], 100 / 3)
    assert r["P@0.9"] == 0.0

    batch = collate_video([ds[0], ds[2]])
    lg = torch.stack([logits_for(preds[k], 16, a) for k, a in zip(batch["image_id"], batch["annotated"])])
    assert score_annotated_batch(lg, batch) == [(24, 48), (48, 56)]
    assert score_annotated_batch(lg.flatten(0, 1), batch) == [(24, 48), (48, 56)]  # (B*T, 2, S, S)


def test_scoring_input_errors(a2d_root):
    ds = A2DSentences(a2d_root, "test", mode="eval", image_size=S, clip_len=2)
    item = ds[0]
    with pytest.raises(InputError):
        score_annotated_frame(torch.zeros(2, 3, S, S), item)  # not 2 classes
    with pytest.raises(InputError):
        score_annotated_frame(torch.zeros(2, 2, 8, 8), item)  # wrong size without gt_original
    with pytest.raises(InputError):
        score_annotated_frame(torch.zeros(2, 2, S, S), item, protocol="original")
    i, u = score_annotated_frame(torch.zeros(2, 2, 8, 8), item, gt_original=ds.original_masks(0))
    assert (i, u) == (0, 12)  # empty prediction vs the GT resized to 8x8 (rows 1..3, cols 1..4)


# --------------------------------------------------------------------------------------------
# One-line errors
# --------------------------------------------------------------------------------------------
def test_errors_at_construction(a2d_root, tmp_path):
    with pytest.raises(DatasetError) as e:
        A2DSentences(a2d_root, "val")
    one_line(e, "'val'", "train, test")
    with pytest.raises(DatasetError) as e:
        A2DSentences(tmp_path / "nowhere")
    one_line(e, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError) as e:
        A2DSentences(tmp_path / "empty", "test")
    one_line(e, "a2d_sentences_single_frame_test_annotations.json", "a2d_annotation.txt")
    bad = tmp_path / "bad.json"
    bad.write_text('[["x", "v", 1, ')
    with pytest.raises(DatasetError) as e:
        A2DSentences(a2d_root, annotations=bad)
    one_line(e, bad, "not valid JSON")
    bad.write_text('[["x", "v", "first", 1]]')
    with pytest.raises(DatasetError) as e:
        A2DSentences(a2d_root, annotations=bad)
    one_line(e, bad, "entry 0")
    with pytest.raises(ConfigError):
        A2DSentences(a2d_root, mode="test")
    with pytest.raises(ConfigError):
        A2DSentences(a2d_root, frames="gif")


def test_errors_for_missing_and_corrupt_files(fresh_a2d):
    masks = fresh_a2d / "text_annotations" / "a2d_annotation_with_instances"
    ds = A2DSentences(fresh_a2d, "test", mode="eval", image_size=S, clip_len=2)
    (masks / VB / "00006.h5").unlink()
    with pytest.raises(DatasetError) as e:
        ds[2]
    one_line(e, masks / VB / "00006.h5", "not found")
    (masks / VB / "00006.h5").write_bytes(b"not an hdf5 file at all")
    with pytest.raises(DatasetError) as e:
        ds[2]
    one_line(e, masks / VB / "00006.h5", "cannot read")
    shutil.rmtree(fresh_a2d / "Release" / "pngs320H" / VB)
    with pytest.raises(DatasetError) as e:
        ds[0]
    one_line(e, fresh_a2d / "Release" / "clips320H" / f"{VB}.mp4", "not found")
    with pytest.raises(DatasetError) as e:
        A2DSentences(fresh_a2d, "test", mode="eval", frames="png")[0]
    one_line(e, fresh_a2d / "Release" / "pngs320H" / VB)

    train = A2DSentences(fresh_a2d, "train", mode="eval", image_size=S, clip_len=2)
    mp4 = fresh_a2d / "Release" / "clips320H" / f"{VA}.mp4"
    mp4.write_bytes(b"\x00" * 64)
    with pytest.raises(DatasetError) as e:
        train[0]
    one_line(e, mp4, "cannot read video")

    # a sample list naming an instance the frame does not show
    custom = fresh_a2d / "wrong.json"
    custom.write_text(json.dumps([["x", VA, 5, 2]]))
    with pytest.raises(DatasetError) as e:
        A2DSentences(fresh_a2d, "train", mode="eval", annotations=custom, image_size=S)[0]
    one_line(e, masks / VA / "00005.h5", "no instance 2")


def test_untransposed_masks_are_caught(fresh_a2d):
    """An h5 whose reMask is stored (N, H, W) (not MATLAB's column-major) no longer fits the frame."""
    path = fresh_a2d / "text_annotations" / "a2d_annotation_with_instances" / VB / "00006.h5"
    with h5py.File(path, "w") as f:
        f["instance"] = np.array([[3.0]])
        f["reMask"] = MASKS[(VB, 6)][0][1].astype(np.uint8)  # (H, W): wrong orientation
    ds = A2DSentences(fresh_a2d, "test", mode="eval", image_size=S, clip_len=2)
    with pytest.raises(DatasetError) as e:
        ds[2]
    one_line(e, "64x48", "48x64")


def test_missing_optional_dependencies(a2d_root, monkeypatch):
    ds = A2DSentences(a2d_root, "train", mode="eval", image_size=S, clip_len=2, cache_videos=0)
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(DatasetError) as e:
        ds[0]
    one_line(e, "h5py", "pip install")
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(DatasetError) as e:
        ds[0]
    one_line(e, f"{VA}.mp4", "PyAV", "pip install av")


# --------------------------------------------------------------------------------------------
# JHMDB-Sentences
# --------------------------------------------------------------------------------------------
JH, JW = 24, 32
JVIDEOS = {  # video -> (action, frames, masks): the first video's last frame has no mask
    "jv_brush_1": ("brush_hair", 6, 5),
    "jv_wave_2": ("wave", 4, 4),
}
SENTENCES = {"jv_brush_1": "A girl  brushing her hair", "jv_wave_2": "man waving"}


def jmask(vid: str, t: int) -> np.ndarray:
    m = np.zeros((JH, JW), dtype=np.uint8)
    k = list(JVIDEOS).index(vid)
    m[2 + t : 12 + t, 3 + 10 * k : 9 + 10 * k] = 1  # (H, W) differ, moves with t
    return m


def build_jhmdb(root: Path) -> Path:
    for vid, (action, n_frames, n_masks) in JVIDEOS.items():
        d = root / "Rename_Images" / action / vid
        d.mkdir(parents=True)
        for i in range(n_frames):
            Image.fromarray(np.full((JH, JW, 3), gray(i), np.uint8)).save(d / f"{i + 1:05d}.png")
        md = root / "puppet_mask" / action / vid
        md.mkdir(parents=True)
        part = np.stack([jmask(vid, t) for t in range(n_masks)], axis=-1)  # (H, W, T)
        scipy_io.savemat(md / "puppet_mask.mat", {"part_mask": part})
    (root / "jhmdb_annotation.txt").write_text(
        "video_id,query\n" + "".join(f"{v},{s}\n" for v, s in SENTENCES.items())
    )
    meta = []
    for vid, frames in (("jv_brush_1", (1, 3, 5)), ("jv_wave_2", (2, 3, 4))):
        action, _, n_masks = JVIDEOS[vid]
        for f in frames:
            meta.append([vid, f"./jhmdb_sentences/Rename_Images/{action}/{vid}/{f:05d}.png",
                         f"./jhmdb_sentences/puppet_mask/{action}/{vid}/puppet_mask.mat", n_masks, SENTENCES[vid]])
    (root / "jhmdb_sentences_samples_metadata.json").write_text(json.dumps(meta))
    return root


jhmdb_root = built_once(build_jhmdb, "jhmdb")


def test_jhmdb_metadata_samples_and_items(jhmdb_root):
    ds = JHMDBSentences(jhmdb_root, image_size=S, clip_len=4)
    assert len(ds) == 6
    assert [ds.sample_info(i)["annotated_frame"] for i in range(6)] == [1, 3, 5, 2, 3, 4]
    item = ds[2]  # frame 5 of 5 usable (the 6th frame has no mask): window clamped to 1..5
    assert item["frame_indices"].tolist() == [2, 3, 4, 4]
    assert item["annotated"] == 2 and item["valid"].tolist() == [False, False, True, False]
    assert item["text"] == "a girl brushing her hair" and item["image_id"] == "v_jv_brush_1_f_5"
    assert (item["exp_id"], item["obj_id"], item["instance_id"]) == ("0", 1, None)
    orig = ds.original_masks(2)
    assert orig.shape == (1, JH, JW)
    np.testing.assert_array_equal(orig[0], jmask("jv_brush_1", 4).astype(bool))  # mask t-1 for frame t
    np.testing.assert_array_equal(ds.original_masks(1)[0], jmask("jv_brush_1", 2).astype(bool))  # frame 3
    np.testing.assert_array_equal(item["target"][2].numpy(), resize_mask(jmask("jv_brush_1", 4), S))
    assert item["target"].sum() == item["target"][2].sum()
    first = ds[3]  # jv_wave_2 frame 2
    assert first["frame_indices"].tolist() == [0, 0, 1, 2] and first["annotated"] == 2


def test_jhmdb_all_and_random_frames(jhmdb_root):
    all_frames = JHMDBSentences(jhmdb_root, image_size=S, clip_len=3, frames="all")
    assert len(all_frames) == 5 + 4  # usable frames = frames with a mask
    assert all_frames[4]["frame_indices"].tolist() == [3, 4, 4]
    two = JHMDBSentences(jhmdb_root, image_size=S, frames=2, seed=5)
    picks = [(two.sample_info(i)["video_id"], two.sample_info(i)["annotated_frame"]) for i in range(len(two))]
    assert len(picks) == 4 and picks == sorted(picks)
    assert all(f <= JVIDEOS[v][2] for v, f in picks)
    again = JHMDBSentences(jhmdb_root, image_size=S, frames=2, seed=5)
    assert [again.sample_info(i) for i in range(4)] == [two.sample_info(i) for i in range(4)]


def test_jhmdb_errors(jhmdb_root, tmp_path):
    root = Path(shutil.copytree(jhmdb_root, tmp_path / "j"))
    with pytest.raises(ConfigError):
        JHMDBSentences(root, mode="train")
    with pytest.raises(DatasetError) as e:
        JHMDBSentences(root, split="train")
    one_line(e, "'train'")
    with pytest.raises(DatasetError) as e:
        JHMDBSentences(root, samples_metadata=tmp_path / "none.json")
    one_line(e, tmp_path / "none.json", "frames='all'")
    ds = JHMDBSentences(root, image_size=S, clip_len=2, cache_videos=0)
    mat = root / "puppet_mask" / "wave" / "jv_wave_2" / "puppet_mask.mat"
    mat.write_bytes(b"MATLAB garbage")
    with pytest.raises(DatasetError) as e:
        ds[3]
    one_line(e, mat, "cannot read")
    mat.unlink()
    with pytest.raises(DatasetError) as e:
        ds[3]
    one_line(e, mat, "not found")
    (root / "Rename_Images" / "brush_hair" / "jv_brush_1" / "00002.png").unlink()
    with pytest.raises(DatasetError) as e:
        ds[0]
    one_line(e, "jv_brush_1", "00002")


def test_a2d_sample_dataclass_roundtrip(tmp_path):
    from lavt.data.a2d import write_a2d_samples

    s = [A2DSample("a man", "vid", 3, 2)]
    p = write_a2d_samples(s, tmp_path / "x.json")
    assert read_a2d_samples(p) == s and s[0].image_id == "v_vid_f_3_i_2"
