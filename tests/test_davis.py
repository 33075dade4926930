"""Ref-DAVIS17 loader and the four-set J&F protocol on a tiny fixture in the published layout
(data-and-metrics.md 3.3, 4.2, 4.4)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import dataset_fixtures
import numpy as np
import pytest
import torch
from dataset_fixtures import built_once, fresh_copy, one_line
from PIL import Image

from lavt.data.davis import (
    EXPRESSION_SETS,
    DAVISIndex,
    ReferDAVIS17,
    collate_video,
    davis_palette,
    davis_paths,
    davis_protocol_summary,
    read_expression_file,
)
from lavt.data.refer import DatasetError
from lavt.data.transforms import preprocess_image, resize_mask
from lavt.errors import ConfigError, InputError
from lavt.evaluation.video_metrics import JFMeter

S = 16
H, W = 24, 32
# sequence -> (split, number of frames, {obj_id: frames where it is absent})
SEQS = {
    "classic-car": ("val", 3, {2: {1}}),  # object 2 leaves in frame 00001
    "swan": ("val", 2, {}),
    "dogs-scale": ("train", 2, {}),
}
# object rectangles (rows r0:r1, cols c0:c1), even heights so "top half" has J = 0.5 exactly
RECTS = {1: (2, 10, 3, 13), 2: (12, 22, 18, 28)}

A1_FIRST = (
    'clasic-car 1 "a red car"\n'  # the published typo, fixed to classic-car
    'classic-car 2 "a man walking next to it"\n'
    "\n"
    'swan 1 "a black swan on the water"\n'
    'dog-scale 1 "a small dog"\n'  # typo -> dogs-scale (train)
    'unknown-seq 1 "in no split"\n'
)
A1_FULL = (
    'classic-car 2 "a person who walks out of view"\r\n'  # CRLF, object order differs from A1_FIRST
    'classic-car 1 "the car driving to the left"\r\n'
    'swan 1 "the swan swimming  slowly"\r\n'
    'dogs-scale 1 "dog on the scale"\r\n'
)
A2_FIRST = 'classic-car 1 "the red caf\xe9 car"\nclassic-car 2 "man"\nswan 1 "a swan"\ndogs-scale 1 "dog"\n'
A2_FULL = 'classic-car 1 "car \xe0 gauche"\nswan 1 "na\xefve swan"\ndogs-scale 1 "a dog"\n'  # no object 2


def rect_mask(obj: int, t: int) -> np.ndarray:
    r0, r1, c0, c1 = RECTS[obj]
    m = np.zeros((H, W), dtype=bool)
    m[r0:r1, c0 + t : c1 + t] = True
    return m


def gt_mask(seq: str, obj: int, t: int) -> np.ndarray:
    _, _, absent = SEQS[seq]
    n_obj = 2 if seq == "classic-car" else 1
    if obj > n_obj or t in absent.get(obj, set()):
        return np.zeros((H, W), dtype=bool)
    return rect_mask(obj, t)


def annotation(seq: str, t: int, swap: bool = False) -> np.ndarray:
    ann = np.zeros((H, W), dtype=np.uint8)
    for obj in (1, 2):
        ann[gt_mask(seq, obj, t)] = (3 - obj) if swap else obj
    if seq == "classic-car" and t == 0:
        ann[0, 0:4] = 255  # void pixels
    return ann


def save_palette_png(arr: np.ndarray, path: Path) -> None:
    im = Image.fromarray(arr)
    im.putpalette(davis_palette())
    assert im.mode == "P"
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def frame_colour(seq: str, t: int) -> tuple[int, int, int]:
    return (30 + 60 * sorted(SEQS).index(seq), 40 + 50 * t, 90)


def build(root: Path) -> Path:
    davis = root / "DAVIS"
    for seq, (_, n, _) in SEQS.items():
        for t in range(n):
            img = np.zeros((H, W, 3), dtype=np.uint8)
            img[:] = frame_colour(seq, t)
            d = davis / "JPEGImages" / "480p" / seq
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{t:05d}.jpg", quality=95)
            save_palette_png(annotation(seq, t), davis / "Annotations_unsupervised" / "480p" / seq / f"{t:05d}.png")
            save_palette_png(annotation(seq, t, swap=True), davis / "Annotations" / "480p" / seq / f"{t:05d}.png")
    sets = davis / "ImageSets" / "2017"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("dogs-scale\n")
    (sets / "val.txt").write_text("classic-car\nswan\n")
    sem = {"classic-car": {"1": "car", "2": "person"}, "swan": {"1": "swan"}, "dogs-scale": {"1": "dog"}}
    (davis / "davis_semantics.json").write_text(json.dumps(sem))
    text = root / "davis_text_annotations"
    text.mkdir()
    (text / "Davis17_annot1.txt").write_bytes(A1_FIRST.encode("utf-8"))
    (text / "Davis17_annot1_full_video.txt").write_bytes(A1_FULL.encode("utf-8"))
    (text / "Davis17_annot2.txt").write_bytes(A2_FIRST.encode("latin-1"))
    (text / "Davis17_annot2_full_video.txt").write_bytes(A2_FULL.encode("latin-1"))
    return root


root = built_once(build, "ref-davis")
fresh_root = fresh_copy("root", "copy")


class FakeTokenizer(dataset_fixtures.FakeTokenizer):
    length = 6  # 101, up to 4 words, 102


# --------------------------------------------------------------------------------------------
# Index and expressions
# --------------------------------------------------------------------------------------------
def test_sample_counts(root):
    val = ReferDAVIS17(root, "val", image_size=S)
    assert len(val) == 11  # classic-car: 4 + 3 (A2 full-video lacks object 2); swan: 4
    assert val.index.expression_counts() == {
        "anno1_first_frame": 3, "anno1_full_video": 3, "anno2_first_frame": 3, "anno2_full_video": 2,
    }
    assert len(ReferDAVIS17(root, "train", image_size=S)) == 4
    assert len(ReferDAVIS17(root, image_size=S, sets=["anno1_full_video", "anno2_full_video"])) == 5
    assert len(ReferDAVIS17(root, image_size=S, eval_clip_len=2)) == 7 * 2 + 4 * 1  # windows per expression
    assert len(ReferDAVIS17(root, image_size=S, mode="train", clip_len=2)) == 7 * 2 + 4 * 1  # anchors 0, 2


def test_expressions_parsed_in_protocol_order(root):
    index = DAVISIndex(root, "val")
    car = index.video("classic-car")
    assert car.frames == ("00000", "00001", "00002")
    got = [(e.exp_id, e.obj_id, e.type, e.annotator, e.kind, e.text) for e in car.expressions]
    assert got == [
        ("1_anno1_first_frame", 1, "anno1_first_frame", 1, "first_frame", "a red car"),  # typo fixed
        ("1_anno1_full_video", 1, "anno1_full_video", 1, "full_video", "the car driving to the left"),
        ("1_anno2_first_frame", 1, "anno2_first_frame", 2, "first_frame", "the red café car"),  # latin-1
        ("1_anno2_full_video", 1, "anno2_full_video", 2, "full_video", "car à gauche"),
        ("2_anno1_first_frame", 2, "anno1_first_frame", 1, "first_frame", "a man walking next to it"),
        ("2_anno1_full_video", 2, "anno1_full_video", 1, "full_video", "a person who walks out of view"),
        ("2_anno2_first_frame", 2, "anno2_first_frame", 2, "first_frame", "man"),
    ]
    swan = [e.text for e in index.video("swan").expressions]
    assert swan == ["a black swan on the water", "the swan swimming  slowly", "a swan", "naïve swan"]
    assert index.unknown_videos == {"anno1_first_frame": {"unknown-seq"}}
    assert index.category("classic-car", 2) == "person"
    assert DAVISIndex(root, "train").video("dogs-scale").expressions[0].text == "a small dog"
    assert index.missing_expressions() == [("classic-car", 2, "anno2_full_video")]


def test_read_expression_file_encodings(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes('v 3 "caf\xe9"\n'.encode("latin-1"))
    assert read_expression_file(p, annotator=2) == [("v", 3, "café", 1)]
    with pytest.raises(DatasetError) as err:  # annotator 1 is UTF-8: the latin-1 byte is an error
        read_expression_file(p, annotator=1)
    one_line(err, p, "UTF-8", "0xe9", "line 1")
    p.write_bytes('\ufeffv 3 "caf\xe9"\n'.encode("utf-8"))  # a re-encoded annotator-2 copy (with BOM)
    assert read_expression_file(p, annotator=2) == [("v", 3, "café", 1)]
    assert read_expression_file(p, annotator=1) == [("v", 3, "café", 1)]


@pytest.mark.parametrize(
    "line, message",
    [
        ("swan 1\n", "expected <sequence> <obj_id>"),
        ('swan one "x"\n', "'one' is not an integer"),
        ('swan 0 "x"\n', "not a DAVIS object id"),
        ('swan 1 ""\n', "empty expression"),
        ('swan 1 "a"\nswan 1 "b"\n', "already has an expression (line 1)"),
        ('swan 5 "a"\n', "object 5 is not an object of swan"),
    ],
)
def test_bad_expression_lines(fresh_root, line, message):
    p = fresh_root / "davis_text_annotations" / "Davis17_annot1_full_video.txt"
    p.write_text(line)
    with pytest.raises(DatasetError) as err:
        DAVISIndex(fresh_root, "val")
    one_line(err, p, message)


# --------------------------------------------------------------------------------------------
# Items and masks
# --------------------------------------------------------------------------------------------
def test_masks_of_the_referred_object(root):
    ds = ReferDAVIS17(root, image_size=S, tokenizer=FakeTokenizer())
    k = next(i for i in range(len(ds)) if ds.sample_info(i)["exp_id"] == "2_anno1_full_video")
    info = ds.sample_info(k)
    assert (info["video_id"], info["obj_id"], info["type"], info["annotator"], info["kind"]) == (
        "classic-car", 2, "anno1_full_video", 1, "full_video")
    gt = ds.original_masks(k)
    assert gt.dtype == bool and gt.shape == (3, H, W)
    for t in range(3):
        np.testing.assert_array_equal(gt[t], gt_mask("classic-car", 2, t))
    assert not gt[1].any()  # the object is absent from frame 00001
    item = ds[k]
    assert item["valid"].tolist() == [True, False, True]
    expected = np.stack([resize_mask(gt_mask("classic-car", 2, t), S) for t in range(3)])
    np.testing.assert_array_equal(item["target"].numpy(), expected)
    # object 1's mask excludes the void (255) pixels of frame 0
    k1 = next(i for i in range(len(ds)) if ds.sample_info(i)["exp_id"] == "1_anno2_first_frame")
    np.testing.assert_array_equal(ds.original_masks(k1)[0], gt_mask("classic-car", 1, 0))
    # the semi-supervised folder (ids swapped in this fixture) is a switch away
    semi = ReferDAVIS17(root, image_size=S, annotation_folder="Annotations")
    np.testing.assert_array_equal(semi.original_masks(k)[0], gt_mask("classic-car", 1, 0))


def test_item_format(root):
    ds = ReferDAVIS17(root, image_size=S, tokenizer=FakeTokenizer())
    item = ds[0]
    for key in ("video", "target", "valid", "input_ids", "attention_mask", "text", "video_id", "exp_id",
                "frame_names", "frame_indices", "orig_sizes", "index", "type", "annotator", "kind"):
        assert key in item, key
    assert item["video"].shape == (3, 3, S, S)
    assert item["frame_names"] == ["00000", "00001", "00002"]
    assert item["frame_indices"].tolist() == [0, 1, 2]
    assert item["orig_sizes"].tolist() == [[H, W]] * 3
    assert (item["video_id"], item["exp_id"], item["type"]) == (
        "classic-car", "1_anno1_first_frame", "anno1_first_frame")
    frame = Image.open(root / "DAVIS" / "JPEGImages" / "480p" / "classic-car" / "00001.jpg").convert("RGB")
    torch.testing.assert_close(item["video"][1], preprocess_image(frame, S))
    assert item["input_ids"].tolist()[:5] == [101, 1001, 1003, 1003, 102]  # "a red car"
    batch = collate_video([ds[0], ds[-1]])  # 3 and 2 frames: videos stay a list
    assert isinstance(batch["video"], list) and batch["input_ids"].shape == (2, 6)
    assert ds[-1]["video_id"] == "swan" and ds[-1]["text"] == "naïve swan"


def test_windows_and_train_mode(root):
    ds = ReferDAVIS17(root, image_size=S, eval_clip_len=2)
    assert [ds.sample_info(i)["frame_names"] for i in range(2)] == [["00000", "00001"], ["00002"]]
    np.testing.assert_array_equal(ds.original_masks(1)[0], gt_mask("classic-car", 1, 2))
    tr = ReferDAVIS17(root, image_size=S, mode="train", clip_len=2, seed=3)
    tr.set_epoch(1)
    a = tr[2]
    tr.set_epoch(1)
    b = tr[2]
    assert a["frame_indices"].tolist() == b["frame_indices"].tolist()
    assert a["anchor"] in (0, 2) and a["video"].shape == (2, 3, S, S) and a["target"].shape == (2, S, S)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------
def test_errors(root, fresh_root, tmp_path):
    with pytest.raises(DatasetError) as err:
        DAVISIndex(tmp_path / "nowhere")
    one_line(err, "nowhere", "does not exist")
    with pytest.raises(DatasetError) as err:
        DAVISIndex(root, "test-dev")
    one_line(err, "unknown Ref-DAVIS17 split 'test-dev'", "train, val")
    with pytest.raises(ConfigError):
        DAVISIndex(root, sets=["anno3_first_frame"])
    with pytest.raises(ConfigError):
        ReferDAVIS17(root, eval_clip_len=0)

    (fresh_root / "davis_text_annotations" / "Davis17_annot2.txt").unlink()
    with pytest.raises(DatasetError) as err:
        DAVISIndex(fresh_root)
    one_line(err, "expression file", "Davis17_annot2.txt", "not found")
    assert len(DAVISIndex(fresh_root, sets=["anno1_first_frame"]).expressions) == 3  # other sets still load

    shutil.rmtree(fresh_root / "DAVIS" / "Annotations_unsupervised")
    with pytest.raises(DatasetError) as err:
        DAVISIndex(fresh_root, sets=["anno1_first_frame"])
    one_line(err, "Annotations_unsupervised", "not found", "annotation_folder='Annotations'")

    shutil.rmtree(fresh_root / "DAVIS" / "JPEGImages" / "480p" / "swan")
    with pytest.raises(DatasetError) as err:
        DAVISIndex(fresh_root, sets=["anno1_first_frame"], annotation_folder="Annotations")
    one_line(err, "swan", "not found", "val.txt")

    (fresh_root / "DAVIS" / "ImageSets" / "2017" / "val.txt").unlink()
    with pytest.raises(DatasetError) as err:
        DAVISIndex(fresh_root, annotation_folder="Annotations")
    one_line(err, "split file", "val.txt", "not found")


def test_corrupt_files(fresh_root):
    (fresh_root / "DAVIS" / "davis_semantics.json").write_text("{not json")
    with pytest.raises(DatasetError) as err:
        DAVISIndex(fresh_root)
    one_line(err, "davis_semantics.json", "not valid JSON")
    (fresh_root / "DAVIS" / "davis_semantics.json").unlink()  # optional
    ds = ReferDAVIS17(fresh_root, image_size=S)
    (fresh_root / "DAVIS" / "Annotations_unsupervised" / "480p" / "swan" / "00001.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DatasetError) as err:
        ds.original_masks(len(ds) - 1)
    one_line(err, "swan", "00001.png")


def test_paths_accept_the_davis_folder_as_root(root):
    p = davis_paths(root / "DAVIS")
    assert p["images"] == root / "DAVIS" / "JPEGImages" / "480p"
    assert p["anno2_full_video"] == root / "davis_text_annotations" / "Davis17_annot2_full_video.txt"
    assert len(DAVISIndex(root / "DAVIS").expressions) == 11


def test_palette():
    pal = davis_palette()
    assert len(pal) == 768
    assert pal[0:3] == [0, 0, 0] and pal[3:6] == [128, 0, 0] and pal[6:9] == [0, 128, 0]
    assert pal[9:12] == [128, 128, 0] and pal[12:15] == [0, 0, 128] and pal[8 * 3 : 8 * 3 + 3] == [64, 0, 0]


# --------------------------------------------------------------------------------------------
# The protocol: J&F per expression set, then the mean of the sets
# --------------------------------------------------------------------------------------------
def top_half(m: np.ndarray) -> np.ndarray:
    out = np.zeros_like(m)
    rows = np.flatnonzero(m.any(1))
    out[rows[: len(rows) // 2]] = m[rows[: len(rows) // 2]]
    return out


def test_protocol_by_hand(root):
    ds = ReferDAVIS17(root, image_size=S)
    meter = JFMeter()
    for i in range(len(ds)):
        info = ds.sample_info(i)
        gt = ds.original_masks(i)
        pred = {
            "anno1_first_frame": gt,  # perfect: J = F = 1
            "anno1_full_video": np.zeros_like(gt),  # empty: 1 on absent frames, 0 elsewhere
            "anno2_first_frame": np.stack([top_half(m) for m in gt]),  # J = 0.5 where present
            "anno2_full_video": np.zeros_like(gt),
        }[info["type"]]
        meter.update(info["video_id"], info["exp_id"], pred, gt, group=info["type"])
    result = meter.compute()
    g = result["groups"]
    # per set, per object (expression) over all frames, then over objects:
    # A1-first 1; A1-full: car1 0, car2 1/3 (absent in 1 of 3 frames), swan 0;
    # A2-first J: car1 0.5, car2 (0.5 + 1 + 0.5) / 3, swan 0.5; A2-full: car1 0, swan 0 (car2 has none)
    assert g["anno1_first_frame"]["J"] == pytest.approx(100) and g["anno1_first_frame"]["F"] == pytest.approx(100)
    assert g["anno1_full_video"]["J"] == pytest.approx(100 / 9) and g["anno1_full_video"]["F"] == pytest.approx(100 / 9)
    assert g["anno2_first_frame"]["J"] == pytest.approx(100 * 5 / 9)
    assert g["anno2_full_video"]["J"] == pytest.approx(0) and g["anno2_full_video"]["n"] == 2
    summary = davis_protocol_summary(result)
    assert summary["J"] == pytest.approx((100 + 100 / 9 + 500 / 9 + 0) / 4)  # 41.67
    f3 = g["anno2_first_frame"]["F"]
    assert summary["F"] == pytest.approx((100 + 100 / 9 + f3 + 0) / 4)
    assert summary["J&F"] == pytest.approx((summary["J"] + summary["F"]) / 2)
    assert summary["n_sets"] == 4 and summary["sets"]["anno2_full_video"]["n"] == 2
    # not the plain mean over the 11 expressions (the sets have different sizes)
    assert result["J"] == pytest.approx(100 * (3 + 1 / 3 + (0.5 + 2 / 3 + 0.5)) / 11)
    assert abs(result["J"] - summary["J"]) > 1
    # a JSON report's {"metrics": ...} works too, and a subset of sets can be named
    assert davis_protocol_summary({"metrics": json.loads(json.dumps(result))})["J"] == pytest.approx(summary["J"])
    assert davis_protocol_summary(result, sets=["anno1_first_frame"])["J&F"] == pytest.approx(100)


def test_protocol_summary_errors():
    with pytest.raises(InputError) as err:
        davis_protocol_summary({"J": 1.0, "F": 1.0})
    one_line(err, "groups")
    groups = {s: {"J": 50.0, "F": 70.0, "J&F": 60.0, "n": 1} for s in EXPRESSION_SETS[:3]}
    with pytest.raises(InputError) as err:
        davis_protocol_summary({"groups": groups})
    one_line(err, "anno2_full_video")
    assert davis_protocol_summary({"groups": groups}, sets=EXPRESSION_SETS[:3])["J&F"] == 60.0


class BackgroundModel(torch.nn.Module):
    """A video model that predicts background everywhere."""

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
        self.config = SimpleNamespace(video=True)

    def forward(self, video, input_ids, attention_mask):
        b, t, _, h, w = video.shape
        return self.bias.view(1, 1, 2, 1, 1).expand(b, t, 2, h, w)


def test_engine_video_evaluation_runs_unchanged(root):
    from lavt.evaluation.protocols import evaluate_video

    ds = ReferDAVIS17(root, image_size=S, tokenizer=FakeTokenizer())
    result = evaluate_video(BackgroundModel(), ds, progress=False)
    g = result["groups"]
    assert sorted(g) == sorted(EXPRESSION_SETS)
    # empty predictions: an expression scores the fraction of frames its object is absent from
    for s in EXPRESSION_SETS[:3]:
        assert g[s]["J"] == pytest.approx(100 / 9) and g[s]["F"] == pytest.approx(100 / 9), s
    assert g["anno2_full_video"]["J"] == pytest.approx(0)
    assert result["n"] == 11
    summary = davis_protocol_summary(result)
    assert summary["J&F"] == pytest.approx(3 * (100 / 9) / 4)
    assert not math.isclose(summary["J&F"], result["J&F"])
