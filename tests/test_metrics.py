"""Metrics: hand-computed oIoU/mIoU/P@K, empty-mask conventions, merging, resize protocols."""

import json

import numpy as np
import pytest
import torch

from lavt.evaluation.metrics import (
    RISMeter,
    batch_intersection_union,
    intersection_union,
    official_gt_resize,
    resize_mask_nearest,
    score_prediction,
)

PK = ("P@0.5", "P@0.6", "P@0.7", "P@0.8", "P@0.9")


def _three_samples():
    """Masks of three different sizes with (I, U) = (90, 100), (1, 10), (0, 5)."""
    gt_a = np.ones((10, 10), bool)
    pred_a = np.zeros((10, 10), bool)
    pred_a[:9] = True  # I = 90, U = 100
    gt_b = np.zeros((4, 5), np.uint8)
    gt_b[:2] = 1  # 10 pixels
    pred_b = np.zeros((4, 5), np.uint8)
    pred_b[0, 0] = 1  # I = 1, U = 10
    gt_c = torch.zeros(3, 3, dtype=torch.long)
    gt_c[0] = 1
    gt_c[1, :2] = 1  # 5 pixels
    pred_c = torch.zeros(3, 3, dtype=torch.long)  # I = 0, U = 5
    return [(pred_a, gt_a), (pred_b, gt_b), (pred_c, gt_c)]


def test_intersection_union_numpy_torch_and_batched():
    samples = _three_samples()
    assert [intersection_union(p, g) for p, g in samples] == [(90, 100), (1, 10), (0, 5)]
    preds = torch.tensor([[[1, 1], [0, 0]], [[0, 0], [0, 0]], [[1, 0], [0, 1]]])
    gts = np.array([[[1, 0], [1, 0]], [[0, 0], [0, 0]], [[1, 0], [0, 1]]], dtype=bool)
    inter, union = batch_intersection_union(preds, gts)
    assert inter.dtype == torch.int64 and union.dtype == torch.int64
    assert inter.tolist() == [1, 0, 2] and union.tolist() == [3, 0, 2]
    inter_np, union_np = batch_intersection_union(preds.numpy(), gts)
    assert inter_np.dtype == np.int64 and inter_np.tolist() == [1, 0, 2] and union_np.tolist() == [3, 0, 2]
    with pytest.raises(ValueError, match="same shape"):
        intersection_union(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="threshold it first"):
        intersection_union(np.full((2, 2), 0.7), np.zeros((2, 2)))


def test_oiou_and_miou_differ_hand_computed():
    meter = RISMeter()
    ious = [meter.update(p, g) for p, g in _three_samples()]
    assert ious == [0.9, 0.1, 0.0]
    res = meter.compute()
    assert res["n"] == 3
    assert res["oIoU"] == pytest.approx(100 * 91 / 115)  # 79.13: dominated by the big object
    assert res["mIoU"] == pytest.approx(100 * 1.0 / 3)  # 33.33
    assert abs(res["oIoU"] - res["mIoU"]) > 40
    assert res["P@0.5"] == pytest.approx(100 / 3) and res["P@0.9"] == pytest.approx(100 / 3)
    assert res["P@0.6"] == res["P@0.7"] == res["P@0.8"] == pytest.approx(100 / 3)
    assert "groups" not in res


def test_precision_at_k_exactly_at_threshold():
    counts = [(1, 2), (3, 5), (7, 10), (4, 5), (9, 10)]  # IoU exactly 0.5 ... 0.9
    ge, gt = RISMeter(), RISMeter(strict=True)
    for i, u in counts:
        ge.update_counts(i, u)
        gt.update_counts(i, u)
    r_ge, r_gt = ge.compute(), gt.compute()
    assert [r_ge[k] for k in PK] == pytest.approx([100, 80, 60, 40, 20])
    assert [r_gt[k] for k in PK] == pytest.approx([80, 60, 40, 20, 0])
    assert r_ge["mIoU"] == r_gt["mIoU"] == pytest.approx(70.0)


def test_threshold_comparison_is_exact_not_float():
    # I/U is rationally just above 0.5 but rounds to exactly 0.5 as a float64
    u = 2**60
    i = 2**59 + 1
    assert i / u == 0.5
    strict = RISMeter(strict=True)
    strict.update_counts(i, u)
    assert strict.compute()["P@0.5"] == 100.0
    strict.update_counts(2**59, u)  # exactly 0.5: does not pass ">"
    assert strict.compute()["P@0.5"] == 50.0


def test_empty_mask_conventions():
    empty = np.zeros((4, 6), bool)
    gt = np.zeros((4, 6), bool)
    gt[1, 1] = True
    lavt, mttr = RISMeter(), RISMeter(empty_iou=1.0, strict=True)
    for m in (lavt, mttr):
        m.update(empty, empty)
    r0, r1 = lavt.compute(), mttr.compute()
    assert r0["mIoU"] == 0.0 and all(r0[k] == 0.0 for k in PK)
    assert r1["mIoU"] == 100.0 and all(r1[k] == 100.0 for k in PK)  # 1 > 0.9 even strictly
    assert r0["oIoU"] == 0.0 and r1["oIoU"] == 100.0  # total union 0 -> the empty convention
    # prediction empty, GT not: 0 under both conventions
    for m in (lavt, mttr):
        assert m.update(empty, gt) == 0.0
    assert lavt.compute()["mIoU"] == 0.0
    assert mttr.compute()["mIoU"] == pytest.approx(50.0)
    assert lavt.compute()["oIoU"] == 0.0 and mttr.compute()["oIoU"] == 0.0  # 0 / 1
    assert np.isnan(RISMeter().compute()["oIoU"]) and RISMeter().compute()["n"] == 0


def test_groups():
    meter = RISMeter()
    meter.update_counts(9, 10, group="short")
    meter.update_counts(1, 2, group="short")
    meter.update_counts([3, 0], [4, 6], group=["long", "long"])
    meter.update_counts(5, 5)  # no group: only in the overall numbers
    res = meter.compute()
    assert res["n"] == 5
    assert set(res["groups"]) == {"short", "long"}
    short, long_ = res["groups"]["short"], res["groups"]["long"]
    assert short["n"] == 2 and short["oIoU"] == pytest.approx(100 * 10 / 12)
    assert short["mIoU"] == pytest.approx(70.0) and short["P@0.9"] == pytest.approx(50.0)
    assert long_["n"] == 2 and long_["oIoU"] == pytest.approx(30.0) and long_["mIoU"] == pytest.approx(37.5)
    assert res["oIoU"] == pytest.approx(100 * 18 / 27)


def _fill(meter, rows):
    for i, u, g, k in rows:
        meter.update_counts(i, u, group=g, key=k)
    return meter


ROWS = [(9, 10, "a", "r1"), (0, 0, None, "r2"), (3, 7, "b", "r3"), (5, 5, "a", "r4"), (2, 9, None, "r5")]


def test_merge_state_dict_tensors_and_gather_equal_one_meter():
    whole = _fill(RISMeter(), ROWS).compute()
    left, right = _fill(RISMeter(), ROWS[:2]), _fill(RISMeter(), ROWS[2:])
    assert left.merge(right).compute() == whole
    # state_dict round trip (picklable / JSON-able)
    state = json.loads(json.dumps(left.state_dict()))
    restored = RISMeter()
    restored.load_state_dict(state)
    assert restored.compute() == whole
    # fixed-size tensors with padding, as for torch.distributed.all_gather
    names = ["a", "b"]
    t1 = _fill(RISMeter(), ROWS[:2]).to_tensors(names, pad_to=4)
    t2 = _fill(RISMeter(), ROWS[2:]).to_tensors(names, pad_to=4)
    assert t1.shape == (4, 3) and t1.dtype == torch.int64
    assert RISMeter.from_tensors([t1, t2], group_names=names).compute() == whole
    # a fake all_gather_object over two "ranks", with a padded duplicate sample
    ranks = [_fill(RISMeter(), ROWS[:3]).state_dict(), _fill(RISMeter(), ROWS[3:] + ROWS[:1]).state_dict()]

    def fake_all_gather_object(out, obj):
        out[:] = ranks

    gathered = RISMeter().gathered(fake_all_gather_object, world_size=2)
    assert len(gathered) == 6 and gathered.compute() != whole
    assert gathered.drop_duplicates() == 1
    assert gathered.compute() == whole
    # conventions must agree
    with pytest.raises(ValueError, match="empty_iou"):
        RISMeter().merge(RISMeter(empty_iou=1.0))


def test_write_json_records_conventions(tmp_path):
    meter = RISMeter(resolution="model 480x480, GT PIL NEAREST")
    _fill(meter, ROWS)
    path = tmp_path / "out" / "metrics.json"
    meter.write_json(path, extra={"split": "val"})
    data = json.loads(path.read_text())
    assert data["conventions"] == {
        "empty_iou": 0.0,
        "threshold": ">=",
        "thresholds": [0.5, 0.6, 0.7, 0.8, 0.9],
        "resolution": "model 480x480, GT PIL NEAREST",
    }
    assert data["split"] == "val"
    assert data["metrics"]["oIoU"] == pytest.approx(100 * 19 / 31)
    assert data["metrics"]["n"] == 5 and set(data["metrics"]["groups"]) == {"a", "b"}
    strict = RISMeter(strict=True, empty_iou=1.0)
    strict.write_json(tmp_path / "empty.json")
    data = json.loads((tmp_path / "empty.json").read_text())
    assert data["conventions"]["threshold"] == ">" and data["conventions"]["empty_iou"] == 1.0
    assert data["metrics"]["oIoU"] is None  # NaN -> null for an empty meter


def test_official_gt_resize_pil_nearest():
    mask = np.array(
        [
            [0, 0, 0, 0],
            [0, 1, 0, 1],
            [0, 0, 0, 0],
            [1, 1, 0, 1],
        ],
        dtype=np.uint8,
    )
    # PIL NEAREST samples floor((i + 0.5) * 4 / 2) = rows/cols 1 and 3 (not 0 and 2)
    out = official_gt_resize(mask, (2, 2))
    assert out.dtype == np.uint8 and out.tolist() == [[1, 1], [1, 1]]
    # non-square, non-integer: 5 -> 3 rows samples 0, 2, 4; 4 -> 2 cols samples 1, 3
    labels = np.arange(20, dtype=np.int64).reshape(5, 4)
    assert official_gt_resize(labels, (3, 2)).tolist() == [[1, 3], [9, 11], [17, 19]]
    # (h, w) order, upsampling duplicates; bool in, bool out
    up = official_gt_resize(np.array([[True, False, True]]), (2, 6))
    assert up.dtype == np.bool_ and up.tolist() == [[True, True, False, False, True, True]] * 2
    # the torch helper agrees with PIL for integer factors (plain "nearest" would not)
    assert resize_mask_nearest(torch.from_numpy(mask), (2, 2)).tolist() == [[1, 1], [1, 1]]
    big = np.random.default_rng(0).integers(0, 2, size=(12, 18)).astype(np.uint8)
    for size in [(6, 9), (4, 6), (3, 2), (24, 36), (12, 54)]:
        assert np.array_equal(resize_mask_nearest(big, size).numpy(), official_gt_resize(big, size))


def test_score_prediction_protocols_non_square():
    # model resolution 2x3; object-minus-background logit difference d, background logit 0
    d = torch.tensor([[-2.0, -2.0, 2.0], [-2.0, 2.0, 2.0]])
    logits = torch.stack([torch.zeros_like(d), d])
    gt = np.array(
        [
            [0, 0, 0, 1, 1, 1],
            [0, 0, 0, 1, 1, 1],
            [0, 0, 0, 1, 1, 1],
            [0, 1, 1, 1, 1, 1],
        ],
        dtype=np.uint8,
    )
    # official: pred = [[0,0,1],[0,1,1]]; GT 4x6 -> 2x3 with NEAREST takes rows 1,3 and cols 1,3,5
    # = [[0,1,1],[1,1,1]] -> I = 3, U = 5
    assert score_prediction(logits, gt, protocol="official") == (3, 5)
    # original: bilinear align_corners=True to 4x6 samples rows at 0, 1/3, 2/3, 1 and cols at
    # 0, .4, .8, 1.2, 1.6, 2. Row 0 of d gives -2,-2,-2,-1.2,.4,2; row 1 gives -2,-.4,1.2,2,2,2;
    # blends (2/3, 1/3) and (1/3, 2/3) give signs - - - - + + and - - + + + +, so
    # pred = [[0,0,0,0,1,1]]*2 + [[0,0,1,1,1,1]]*2; vs GT: I = 2+2+3+4 = 11, U = 3+3+4+5 = 15
    assert score_prediction(logits, gt, protocol="original") == (11, 15)
    assert score_prediction(logits.numpy(), torch.from_numpy(gt), protocol="original") == (11, 15)
    with pytest.raises(ValueError, match="protocol"):
        score_prediction(logits, gt, protocol="480")
    with pytest.raises(ValueError, match=r"\(2, h, w\)"):
        score_prediction(logits[None], gt)
