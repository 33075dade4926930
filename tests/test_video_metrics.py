"""Video metrics: DAVIS J and F on hand-made masks, empty-mask conventions, J&F meter, A2D helper."""

import json
import math

import numpy as np
import pytest
import torch

from lavt.errors import InputError
from lavt.evaluation.metrics import RISMeter
from lavt.evaluation.video_metrics import (
    JFMeter,
    boundary_pixels,
    db_eval_boundary,
    db_eval_iou,
    db_statistics,
    dilate_disk,
    disk,
    ris_frame_key,
    seg2bmap,
    update_ris_frames,
)


def _square(shape, top, left, size, dx=0):
    m = np.zeros(shape, bool)
    m[top : top + size, left + dx : left + dx + size] = True
    return m


# ---- J ---------------------------------------------------------------------------------------
def test_j_of_shifted_squares_hand_computed():
    gt = _square((100, 100), 20, 20, 40)
    # Shift right by dx: intersection 40*(40-dx), union 40*(40+dx).
    for dx, expected in [(0, 1.0), (3, 37 / 43), (10, 30 / 50)]:
        assert db_eval_iou(gt, _square((100, 100), 20, 20, 40, dx)) == pytest.approx(expected, abs=1e-12)
    # Disjoint squares: J = 0.
    assert db_eval_iou(gt, _square((100, 100), 70, 70, 20)) == 0.0


def test_empty_mask_conventions_for_j_and_f():
    empty = np.zeros((30, 40), bool)
    obj = _square((30, 40), 5, 5, 10)
    # Both empty (object absent, nothing predicted): a perfect frame.
    assert db_eval_iou(empty, empty) == 1.0
    assert db_eval_boundary(empty, empty, return_pr=True) == (1.0, 1.0, 1.0)
    # Prediction empty, GT not: J = 0; precision 1, recall 0, F = 0.
    assert db_eval_iou(obj, empty) == 0.0
    assert db_eval_boundary(obj, empty, return_pr=True) == (0.0, 1.0, 0.0)
    # GT empty, prediction not: precision 0, recall 1, F = 0.
    assert db_eval_iou(empty, obj) == 0.0
    assert db_eval_boundary(empty, obj, return_pr=True) == (0.0, 0.0, 1.0)


# ---- boundary map, tolerance, disk -------------------------------------------------------------
def test_seg2bmap_ring_and_image_corner():
    s = np.zeros((6, 6), bool)
    s[1:4, 1:4] = True
    expected = np.zeros((6, 6), bool)
    expected[0:4, 0:4] = True
    expected[1:3, 1:3] = False  # the 12-pixel ring on rows 0-3 x cols 0-3
    assert np.array_equal(seg2bmap(s), expected)
    # Touching the bottom-right corner: no boundary along the image edges, only row 1 / col 1.
    c = np.zeros((5, 5), bool)
    c[2:, 2:] = True
    expected = np.zeros((5, 5), bool)
    expected[1, 1:] = True
    expected[1:, 1] = True
    assert np.array_equal(seg2bmap(c), expected) and seg2bmap(c).sum() == 7
    # Stacked frames are handled independently (shifts along the last two axes only).
    other = np.zeros((6, 6), bool)
    other[3:, 2:] = True
    stacked = seg2bmap(np.stack([s, other]))
    assert np.array_equal(stacked[0], seg2bmap(s)) and np.array_equal(stacked[1], seg2bmap(other))


def test_boundary_pixels_from_diagonal():
    for (h, w), r in [((480, 854), 8), ((720, 1280), 12), ((240, 320), 4), ((480, 480), 6), ((100, 100), 2)]:
        assert boundary_pixels(h, w) == r
    assert boundary_pixels(10, 10, bound_th=3) == 3  # >= 1: a radius in pixels
    for bad in (0, -0.1, 2.5, float("nan")):
        with pytest.raises(InputError, match="bound_th"):
            boundary_pixels(10, 10, bad)


def test_disk_footprint_and_dilation_match_scipy():
    d2 = disk(2)
    # dy^2 + dx^2 <= 4: rows of widths 1, 3, 5, 3, 1 -> 13 pixels; (dy, dx) = (2, 1) is excluded
    assert d2.shape == (5, 5) and d2.sum() == 13
    assert d2[0].tolist() == [False, False, True, False, False] and not d2[1, 0] and d2[1, 1]
    ndi = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(0)
    maps = rng.random((2, 23, 31)) < 0.04
    maps[0, 0, 0] = maps[1, -1, -1] = True  # pixels at the image border
    for r in (1, 2, 3, 5, 8):
        expected = np.stack([ndi.binary_dilation(m, structure=disk(r)) for m in maps])
        assert np.array_equal(dilate_disk(maps, r), expected), r


# ---- F -----------------------------------------------------------------------------------------
def test_f_of_shifted_squares_hand_computed():
    # 100x100 frame -> tolerance ceil(0.008 * 141.42) = 2 px. Both boundary maps are the
    # 160-pixel ring of a 41x41 square (rows 19-59, cols 19-59 for the GT, cols shifted by dx).
    gt = _square((100, 100), 20, 20, 40)
    for dx in (1, 2):  # every boundary pixel within 2 px of the other ring
        assert db_eval_boundary(gt, _square((100, 100), 20, 20, 40, dx)) == 1.0
    for dx in (3, 5, 10):
        # Beyond the tolerance, matched pixels of the shifted ring: on each of its top and
        # bottom rows the cols up to 59 + 2 (that is 43 - dx pixels), plus rows 20, 21, 57, 58
        # of its left column (within 2 px of the GT's top/bottom rows); its right column none.
        # By symmetry recall = precision, so F = precision.
        expected = (2 * (43 - dx) + 4) / 160
        f, p, r = db_eval_boundary(gt, _square((100, 100), 20, 20, 40, dx), return_pr=True)
        assert (p, r) == (pytest.approx(expected), pytest.approx(expected))
        assert f == pytest.approx(expected)
    # The spec's verified numbers: dx = 3 -> 0.525, 5 -> 0.5, 10 -> 0.4375.
    assert db_eval_boundary(gt, _square((100, 100), 20, 20, 40, 3)) == pytest.approx(0.525)


def test_f_uses_a_disk_not_a_square():
    # Single pixels at (5, 5) and (7, 7): boundary maps are the 2x2 blocks rows/cols 4-5 and
    # 6-7. With radius 2 only (6, 6) -> (5, 5) (distance sqrt 2) matches; (6, 7) and (7, 6) are
    # sqrt 5 away and (7, 7) sqrt 8. A 5x5 square footprint would match all four (F = 1).
    gt = np.zeros((12, 12), bool)
    gt[5, 5] = True
    pred = np.zeros((12, 12), bool)
    pred[7, 7] = True
    f, p, r = db_eval_boundary(gt, pred, bound_th=2, return_pr=True)
    assert (p, r, f) == (0.25, 0.25, 0.25)
    assert db_eval_boundary(gt, pred, bound_th=3) == 1.0  # sqrt 8 <= 3


def test_void_pixels_are_ignored():
    # GT rows 100-149, prediction rows 50-149 (same cols); rows 50-99 are void.
    gt = np.zeros((2, 200, 200), bool)
    gt[:, 100:150, 100:150] = True
    pred = np.zeros_like(gt)
    pred[:, 50:150, 100:150] = True
    void = np.zeros_like(gt)
    void[:, 50:100, 100:150] = True
    assert db_eval_iou(gt, pred, void).tolist() == [1.0, 1.0]
    assert db_eval_boundary(gt, pred, void).tolist() == [1.0, 1.0]
    assert db_eval_iou(gt, pred).tolist() == [0.5, 0.5]  # without the void mask
    assert np.all(db_eval_boundary(gt, pred) < 1)


def test_vectorised_equals_per_frame_loop_and_accepts_torch_and_ints():
    rng = np.random.default_rng(1)
    gt = np.zeros((5, 37, 53), bool)
    pred = np.zeros_like(gt)
    for t in range(5):
        y, x, s = rng.integers(0, 25), rng.integers(0, 40), rng.integers(4, 14)
        gt[t, y : y + s, x : x + s] = True
        pred[t, y + rng.integers(-3, 4) : y + s, x : x + s + rng.integers(-3, 4)] = True
    gt[3] = False  # one absent-object frame
    pred[4] = False  # one missed frame
    void = rng.random(gt.shape) < 0.05
    j, f = db_eval_iou(gt, pred, void), db_eval_boundary(gt, pred, void)
    assert j.shape == f.shape == (5,)
    assert j.tolist() == [db_eval_iou(gt[t], pred[t], void[t]) for t in range(5)]
    assert f.tolist() == [db_eval_boundary(gt[t], pred[t], void[t]) for t in range(5)]
    assert j[4] == 0.0 and f[4] == 0.0
    assert len(set(j.tolist())) > 2  # the frames really differ
    assert np.array_equal(db_eval_iou(torch.from_numpy(gt), torch.from_numpy(pred).long()), db_eval_iou(gt, pred))
    assert np.array_equal(db_eval_boundary(gt.astype(np.uint8), pred.astype(float)), db_eval_boundary(gt, pred))


def test_errors_are_one_line_input_errors():
    a = np.zeros((2, 4, 5), bool)
    cases = [
        (lambda: db_eval_iou(a, np.zeros((2, 5, 4), bool)), "shapes differ"),
        (lambda: db_eval_boundary(a, a, void=np.zeros((4, 5), bool)), "void mask shape"),
        (lambda: db_eval_iou(np.zeros((0, 4, 5), bool), np.zeros((0, 4, 5), bool)), "empty sequence"),
        (lambda: db_eval_iou(np.zeros(5, bool), np.zeros(5, bool)), r"\(H, W\) or \(T, H, W\)"),
        (lambda: db_eval_iou(a, np.full(a.shape, 0.3)), "threshold it first"),
        (lambda: db_eval_boundary(a, a, bound_th=0), "bound_th"),
        (lambda: JFMeter().update("v", "0", np.zeros((3, 4, 4)), np.zeros((2, 4, 4))), "shapes differ"),
        (lambda: JFMeter().update_scores("v", "0", [], []), "empty sequence"),
        (lambda: JFMeter().update_scores("v", "0", [0.5, 1.0], [0.5]), "2 J values but 1 F"),
        (lambda: JFMeter().update_scores("v", "0", [1.5], [0.5]), r"\[0, 1\]"),
    ]
    for call, pattern in cases:
        with pytest.raises(InputError, match=pattern) as info:
            call()
        assert "\n" not in str(info.value)


# ---- statistics and meter ----------------------------------------------------------------------
def test_db_statistics_mean_recall_decay():
    x = [1.0, 0.8, 0.6, 0.5, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]
    mean, recall, decay = db_statistics(x)
    assert mean == pytest.approx(4.4 / 10)
    assert recall == pytest.approx(3 / 10)  # strictly above 0.5: the two 0.5 frames do not count
    # T = 10: bin edges round(linspace(1, 10, 5)) - 1 = 0, 2, 5, 7, 9; first bin x[0:3], last x[7:10].
    assert decay == pytest.approx((1.0 + 0.8 + 0.6) / 3 - (0.2 + 0.1 + 0.0) / 3)
    assert db_statistics([0.7]) == (0.7, 1.0, 0.0)
    # Legacy uint8 edges wrap past 255: for T = 300 the last bin becomes empty.
    long = np.zeros(300)
    long[224:] = 1.0
    assert db_statistics(long)[2] == pytest.approx(-1.0)
    assert math.isnan(db_statistics(long, legacy_uint8_bins=True)[2])
    with pytest.raises(InputError, match="empty sequence"):
        db_statistics([])


def test_meter_means_over_expressions_not_frames_with_groups():
    m = JFMeter()
    m.update_scores("vid1", "0", j=[1.0, 1.0, 1.0, 0.0], f=[1.0, 1.0, 1.0, 1.0], group="motion")
    m.update_scores("vid1", "1", j=[0.0], f=[0.5], group=["motion", "anno_1"])
    m.update_scores("vid2", "0", j=[0.6, 0.4], f=[0.2, 0.2], group="anno_1")
    res = m.compute()
    # Per expression: J = 0.75, 0.0, 0.5; F = 1.0, 0.5, 0.2. (Over frames J would be 4/7.)
    assert res["J"] == pytest.approx(100 * 1.25 / 3)
    assert res["F"] == pytest.approx(100 * 1.7 / 3)
    assert res["J&F"] == pytest.approx(100 * (1.25 + 1.7) / 6)
    assert res["J-Recall"] == pytest.approx(100 * (0.75 + 0.0 + 0.5) / 3)  # 0.6 > 0.5, 0.4 not
    assert res["F-Recall"] == pytest.approx(100 * (1.0 + 0.0 + 0.0) / 3)
    assert res["n"] == 3 and res["n_frames"] == 7
    motion, anno = res["groups"]["motion"], res["groups"]["anno_1"]
    assert motion["n"] == 2 and motion["J"] == pytest.approx(100 * 0.75 / 2) and motion["F"] == pytest.approx(75.0)
    assert anno["n"] == 2 and anno["J&F"] == pytest.approx(100 * (0.5 + 0.7) / 4) and anno["n_frames"] == 3
    assert set(res["groups"]) == {"motion", "anno_1"}
    empty = JFMeter().compute()
    assert empty["n"] == 0 and math.isnan(empty["J&F"]) and "groups" not in empty


def test_meter_update_from_masks_duplicates_and_merge():
    gt = np.stack([_square((100, 100), 20, 20, 40), np.zeros((100, 100), bool)])
    pred = np.stack([_square((100, 100), 20, 20, 40, 3), np.zeros((100, 100), bool)])
    m = JFMeter()
    j, f = m.update("vid", 7, pred, gt)
    assert j.tolist() == pytest.approx([37 / 43, 1.0]) and f.tolist() == pytest.approx([0.525, 1.0])
    res = m.compute()
    assert res["J"] == pytest.approx(100 * (37 / 43 + 1) / 2) and res["F"] == pytest.approx(100 * 1.525 / 2)
    with pytest.raises(InputError, match="'vid' expression '7' was already scored"):
        m.update("vid", "7", pred, gt)
    other = JFMeter()
    other.update_scores("vid", "8", [0.0], [0.0])
    merged = JFMeter.from_state_dict(m.state_dict()).merge(other)
    assert len(merged) == 2 and merged.compute()["J"] == pytest.approx(res["J"] / 2)
    with pytest.raises(InputError, match="already scored"):
        merged.merge(m)
    with pytest.raises(InputError, match="bound_th"):
        JFMeter(bound_th=3).merge(m)
    # A larger tolerance makes the 3-px shift a perfect boundary match.
    wide = JFMeter(bound_th=3)
    assert wide.update("vid", "7", pred, gt)[1].tolist() == [1.0, 1.0]


def test_meter_write_json(tmp_path):
    m = JFMeter()
    m.update_scores("vidA", "0", [0.5, 1.0], [1.0, 0.0], group="anno_0")
    path = tmp_path / "out" / "jf.json"
    written = m.write_json(path, extra={"split": "valid"})
    loaded = json.loads(path.read_text())
    assert loaded == written
    assert loaded["split"] == "valid"
    assert loaded["metrics"]["J"] == pytest.approx(75.0) and loaded["metrics"]["F"] == pytest.approx(50.0)
    assert loaded["metrics"]["J&F"] == pytest.approx(62.5)
    assert loaded["metrics"]["groups"]["anno_0"]["n"] == 1
    assert loaded["conventions"]["bound_th"] == 0.008
    row = loaded["per_expression"][0]
    assert (row["video"], row["expression"], row["n_frames"]) == ("vidA", "0", 2)
    assert row["J-Decay"] == pytest.approx(-50.0)  # T = 2: first bin x[0:1], last x[1:2]
    empty = JFMeter().write_json(tmp_path / "empty.json", per_expression=False)
    assert empty["metrics"]["J"] is None and "per_expression" not in empty
    assert json.loads((tmp_path / "empty.json").read_text())["metrics"]["J&F"] is None


# ---- A2D / JHMDB frame-level helper ------------------------------------------------------------
def test_update_ris_frames_skips_absent_frames_and_keys_samples():
    gt = np.zeros((3, 10, 10), bool)
    pred = np.zeros_like(gt)
    gt[0, :5] = True  # 50 px
    pred[0, :4] = True  # I = 40, U = 50
    pred[1, :2] = True  # frame 1: instance absent -> skipped, not scored
    gt[2, :, :2] = True  # 20 px
    pred[2, :, :1] = True
    pred[2, 9, 9] = True  # I = 10, U = 21
    meter = RISMeter()
    ious = update_ris_frames(meter, "vidX", 3, pred, gt, frames=[35, 40, 45], group="test")
    assert ious[0] == pytest.approx(0.8) and math.isnan(ious[1]) and ious[2] == pytest.approx(10 / 21)
    res = meter.compute()
    assert res["n"] == 2
    assert res["oIoU"] == pytest.approx(100 * 50 / 71)
    assert res["mIoU"] == pytest.approx(100 * (0.8 + 10 / 21) / 2)
    assert res["P@0.8"] == pytest.approx(50.0)  # 0.8 >= 0.8 (LAVT convention)
    assert res["groups"]["test"]["n"] == 2
    assert meter.state_dict()["keys"] == [ris_frame_key("vidX", 35, 3), ris_frame_key("vidX", 45, 3)]
    assert ris_frame_key("vidX", 35, 3) == "v_vidX_f_35_e_3"
    # The same frames again (e.g. distributed padding) are dropped by key.
    update_ris_frames(meter, "vidX", 3, pred, gt, frames=[35, 40, 45])
    assert meter.drop_duplicates() == 2 and len(meter) == 2
    # Scoring empty-GT frames too (skip_empty_gt=False): frame 1 has U = 20, I = 0.
    all_frames = RISMeter()
    assert update_ris_frames(all_frames, "v", 0, pred, gt, skip_empty_gt=False)[1] == 0.0
    assert len(all_frames) == 3
    with pytest.raises(InputError, match="2 frame ids for 3 frames"):
        update_ris_frames(RISMeter(), "v", 0, pred, gt, frames=[1, 2])
