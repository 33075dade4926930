"""Ref-DAVIS17 scored as the field reports it: merged objects, the davis2017 toolkit's
unsupervised protocol (Hungarian matching), against lavt's per-object alternative."""

from __future__ import annotations

import numpy as np
import pytest

from lavt.evaluation.davis_toolkit import MergedPrediction, score_sequence, summarise
from lavt.evaluation.video_metrics import db_eval_boundary, db_eval_iou


def square(t: int, top: int, left: int, size: int = 10, hw: tuple[int, int] = (40, 60)) -> np.ndarray:
    m = np.zeros((t, *hw), dtype=bool)
    m[:, top : top + size, left : left + size] = True
    return m


def test_swapped_objects_score_perfectly_with_matching_and_zero_per_object():
    t = 3
    a, b = square(t, 5, 5), square(t, 20, 35)
    gt = np.zeros(a.shape, dtype=np.uint8)
    gt[a], gt[b] = 1, 2
    # the expression of object 1 finds object 2 and the other way round
    merged = MergedPrediction(gt.shape)
    merged.add(b.astype(np.float32) * 0.9)  # expression for object 1
    merged.add(a.astype(np.float32) * 0.9)  # expression for object 2
    j, f = score_sequence(gt, merged.index)
    assert j.shape == f.shape == (2, t)
    assert np.all(j == 1.0) and np.all(f == 1.0)  # the toolkit's matching undoes the swap: 100
    assert summarise(list(zip(j, f)))["J&F"] == pytest.approx(100.0)
    # scored against its own object (eval.davis_protocol: per_object), each expression gets 0
    per_object = [db_eval_iou(gt == k + 1, merged.index == k + 1) for k in range(2)]
    assert all(np.all(x == 0.0) for x in per_object)
    assert np.all(db_eval_boundary(gt == 1, merged.index == 1) == 0.0)


def test_merging_is_the_argmax_over_background_and_thresholded_objects():
    rng = np.random.default_rng(0)
    probs = [rng.random((2, 8, 9)).astype(np.float32) for _ in range(3)]
    probs[2][0, 0, :3] = probs[1][0, 0, :3]  # exact ties: the earlier object keeps the pixel
    merged = MergedPrediction(probs[0].shape)
    for p in probs:
        merged.add(p)
    stack = np.stack([np.full(probs[0].shape, 0.1, np.float32)] + [np.where(p >= 0.5, p, 0) for p in probs])
    assert np.array_equal(merged.index, np.argmax(stack, axis=0))  # numpy's argmax: first of equal maxima
    assert set(np.unique(merged.index)) <= {0, 1, 2, 3} and (merged.index == 0).any()


def test_objects_come_from_the_first_frame_and_missing_proposals_score_zero():
    t = 2
    gt = np.zeros((t, 40, 60), dtype=np.uint8)
    gt[:, 5:15, 5:15] = 1
    gt[1, 25:35, 40:50] = 2  # appears after the first frame: not a ground-truth object
    pred = np.zeros_like(gt)
    j, f = score_sequence(gt, pred)  # no proposals: padded with empty ones
    assert j.shape == (1, t) and np.all(j == 0.0) and np.all(f == 0.0)
    pred[:, 5:15, 5:15] = 3  # the right region under another id still matches
    j, _ = score_sequence(gt, pred)
    assert np.all(j == 1.0)


def test_void_pixels_are_ignored():
    """The toolkit's own void case: a prediction that spills only into void scores 1."""
    gt = np.zeros((2, 200, 200), dtype=np.uint8)
    gt[:, 100:150, 100:150] = 1
    gt[:, 50:100, 100:150] = 255
    pred = np.zeros_like(gt)
    pred[:, 50:150, 100:150] = 1
    j, f = score_sequence(gt, pred)
    assert np.all(j == 1.0) and np.all(f == 1.0)


def test_lavt_eval_on_ref_davis_uses_the_toolkit_by_default(tmp_path, monkeypatch):
    """Both protocols run through `lavt eval`'s code path on the Ref-DAVIS17 fixture; the toolkit
    result equals the toolkit applied by hand to the merged (here: empty) predictions."""
    from test_davis import EXPRESSION_SETS, BackgroundModel, FakeTokenizer, S, build

    from lavt.data.davis import ReferDAVIS17, davis_protocol_summary
    from lavt.evaluation.protocols import evaluate_davis_toolkit, evaluate_video

    root = build(tmp_path / "davis")
    ds = ReferDAVIS17(root, image_size=S, tokenizer=FakeTokenizer())
    toolkit = evaluate_davis_toolkit(BackgroundModel(), ds, progress=False)
    assert sorted(toolkit["groups"]) == sorted(EXPRESSION_SETS) and "Hungarian" in toolkit["protocol"]
    assert toolkit["J&F"] == pytest.approx(np.mean([g["J&F"] for g in toolkit["groups"].values()]))
    # by hand: every set of a video merges to an all-background prediction
    expected: dict[str, list] = {}
    for video in dict.fromkeys(ds.sample_info(i)["video_id"] for i in range(len(ds))):
        frames = list(ds.index.videos[video].frames)
        gt = np.stack([ds.index.load_annotation(video, f) for f in frames])
        sets = {ds.sample_info(i)["type"] for i in range(len(ds)) if ds.sample_info(i)["video_id"] == video}
        for label in sets:
            j, f = score_sequence(gt, np.zeros_like(gt))
            expected.setdefault(label, []).extend(zip(j, f))
    for label, objects in expected.items():
        assert toolkit["groups"][label]["J"] == pytest.approx(summarise(objects)["J"])
    per_object = davis_protocol_summary(evaluate_video(BackgroundModel(), ds, progress=False))
    assert per_object["n_sets"] == 4
    # the toolkit counts every object of the first frame, also those a set has no expression for
    assert toolkit["J&F"] != pytest.approx(per_object["J&F"])
