"""Ref-DAVIS17 the way the field reports it: the davis2017-evaluation toolkit's *unsupervised*
protocol on merged predictions (ReferFormer's recipe, which the paper follows).

Per expression set (annotator 1 / 2, first-frame / full-video expressions) and video:

1. every object's expression is run over the whole video; its object probabilities below 0.5 are
   zeroed and the objects are merged into one index map per frame: the argmax over
   ``[0.1 background, p_1, p_2, ...]`` (objects in expression order, ties to the earlier), so a
   pixel holds the index of the object predicted there;
2. the toolkit takes the ground-truth objects as ids 1..max of the *first* annotation frame, every
   predicted index 1..20 as a proposal (padded with empty ones), scores every (ground truth,
   proposal) pair by J and F over all frames (void pixels, 255, ignored), and matches them with
   the Hungarian algorithm on mean-over-frames (J + F) / 2;
3. J, F of each ground-truth object are those of its matched proposal; J-Mean, F-Mean are means
   over the objects of all videos, J&F their mean; the reported number is the mean over the four
   sets.

So two objects whose predictions are swapped score perfectly here (the matching undoes the swap)
and zero when each expression is scored against its own object (``eval.davis_protocol:
per_object``, lavt's stricter alternative).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .video_metrics import db_eval_boundary, db_eval_iou, db_statistics

BACKGROUND_SCORE = 0.1  # ReferFormer's constant background "probability" in the argmax
MIN_OBJECT_PROB = 0.5  # object probabilities below it are zeroed before the argmax
MAX_PROPOSALS = 20  # the toolkit scores at most this many predicted ids per video
VOID = 255


class MergedPrediction:
    """One video's merged index maps, built object by object without keeping every object's
    probabilities: the running maximum and its index replace the argmax over the stack."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        self.best = np.full(shape, BACKGROUND_SCORE, dtype=np.float32)
        self.index = np.zeros(shape, dtype=np.uint8)
        self.objects = 0

    def add(self, probs: np.ndarray) -> None:
        """The next object's probabilities (T, H, W), in expression order."""
        if probs.shape != self.best.shape:
            raise ValueError(f"object probabilities {probs.shape} do not fit the video {self.best.shape}")
        self.objects += 1
        p = np.where(probs >= MIN_OBJECT_PROB, probs, 0.0).astype(np.float32)
        wins = p > self.best  # strictly greater: on ties the earlier entry (background first) keeps it
        self.best[wins] = p[wins]
        self.index[wins] = self.objects


def score_sequence(gt_index: np.ndarray, pred_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The toolkit's unsupervised scoring of one video: per ground-truth object (ids 1..max of the
    first GT frame), the per-frame J and F (T,) of the proposal the Hungarian matching gives it.
    Returns (J, F), each (n_objects, T)."""
    from scipy.optimize import linear_sum_assignment

    if gt_index.shape != pred_index.shape:
        raise ValueError(f"prediction {pred_index.shape} and ground truth {gt_index.shape} differ in shape")
    void = gt_index == VOID
    first = gt_index[0][gt_index[0] != VOID]
    n_gt = int(first.max()) if first.size else 0
    n_pred = min(max(int(pred_index.max()), n_gt), MAX_PROPOSALS)
    frames = gt_index.shape[0]
    j = np.zeros((n_gt, n_pred, frames))
    f = np.zeros((n_gt, n_pred, frames))
    for g in range(n_gt):
        gt = (gt_index == g + 1) & ~void
        for p in range(n_pred):
            pred = pred_index == p + 1
            j[g, p] = db_eval_iou(gt, pred, void)
            f[g, p] = db_eval_boundary(gt, pred, void)
    if n_gt == 0:
        return j[:, 0], f[:, 0]
    rows, cols = linear_sum_assignment(-(j.mean(axis=2) + f.mean(axis=2)) / 2)
    order = np.argsort(rows)
    return j[rows[order], cols[order]], f[rows[order], cols[order]]


def summarise(per_object: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """J, F, J&F (x100) and the toolkit's recall / decay over the objects of one expression set."""
    if not per_object:
        return {"J": float("nan"), "F": float("nan"), "J&F": float("nan"), "n": 0}
    stats = np.array([[*db_statistics(jj), *db_statistics(ff)] for jj, ff in per_object])  # (n, 6)
    j_mean, j_recall, j_decay, f_mean, f_recall, f_decay = (100.0 * stats.mean(axis=0)).tolist()
    return {
        "J": j_mean, "F": f_mean, "J&F": (j_mean + f_mean) / 2, "n": len(per_object),
        "J-recall": j_recall, "J-decay": j_decay, "F-recall": f_recall, "F-decay": f_decay,
    }


__all__ = ["MergedPrediction", "score_sequence", "summarise"]
