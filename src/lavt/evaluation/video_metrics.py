"""Video referring-segmentation metrics: DAVIS region J and boundary F, J&F meters, and
frame-level oIoU/mIoU/P@K for A2D-Sentences / JHMDB-Sentences.

Written from the metric definitions (``data-and-metrics.md`` section 4.2), not from the
davis2017-evaluation code. Conventions, which the reference evaluators share:

* **J** (region similarity) per frame is ``|S & A \\ V| / |(S | A) \\ V|`` for prediction
  ``S``, ground truth ``A`` and optional void mask ``V``; **1** when that union is empty (both
  masks empty, e.g. a frame where the referred object is absent and nothing is predicted).
* **F** (boundary measure) per frame: both masks are multiplied by ``not V``; their thin
  boundary maps are taken with the seg2bmap definition (:func:`seg2bmap`); a boundary pixel
  of one map is matched if it lies within ``bound_pix`` pixels (Euclidean) of the other map,
  i.e. inside the other map dilated with the disk ``{(dy, dx): dy^2 + dx^2 <= r^2}`` (the
  skimage ``disk(r)`` footprint that davis2017-evaluation passes to ``cv2.dilate``; pixels
  outside the image never match, as with cv2's default dilation border). ``bound_pix =
  ceil(bound_th * sqrt(H^2 + W^2))`` for ``bound_th < 1``, else ``bound_th`` itself.
  Precision/recall when a boundary map is empty: prediction empty and GT not -> P=1, R=0;
  GT empty and prediction not -> P=0, R=1; both empty -> P=R=1. ``F = 2PR/(P+R)``, 0 when
  ``P+R = 0``. So both masks empty gives F=1 and exactly one empty gives F=0.
* Both J and F are symmetric in (prediction, GT), so argument order cannot change a score.
* **Statistics** over one object's / expression's frames (:func:`db_statistics`): mean,
  recall = fraction of frames with value > 0.5, decay = mean of the first quarter minus mean
  of the last quarter (DAVIS's four overlapping bins).
* **Aggregation** (:class:`JFMeter`, Ref-YouTube-VOS / Ref-DAVIS17 / MeViS style): per
  (video, expression) take the mean J and F over its frames; the dataset J and F are the means
  over expressions, ``J&F = (J + F) / 2``, all x100. For Ref-DAVIS17 (four annotator
  expression sets, each object once per set) the mean over all expressions equals the mean of
  the four per-set results; label each expression with its set as a group to see them.

Not implemented: DAVIS's unsupervised Hungarian matching of predicted palette ids to GT
objects (LAVT predicts one mask per expression, so ids are known) and mAP.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from lavt.errors import InputError
from lavt.evaluation.metrics import RISMeter

from ..io.torch_files import atomic_write_text

__all__ = [
    "JFMeter",
    "boundary_pixels",
    "db_eval_boundary",
    "db_eval_iou",
    "db_statistics",
    "disk",
    "dilate_disk",
    "ris_frame_key",
    "seg2bmap",
    "update_ris_frames",
]

DEFAULT_BOUND_TH = 0.008


# --------------------------------------------------------------------------------------------
# input checking
# --------------------------------------------------------------------------------------------
def _as_mask(x: Any, name: str) -> np.ndarray:
    """A boolean numpy array from a bool / 0-1 numpy array, torch tensor or nested list."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype.kind == "f":
        if arr.size and not bool(np.all((arr == 0) | (arr == 1))):
            raise InputError(f"{name} is a float mask with values other than 0 and 1; threshold it first")
    elif arr.dtype.kind not in "iu":
        raise InputError(f"{name} must be a boolean or 0/1 mask, got dtype {arr.dtype}")
    return arr != 0


def _check_masks(
    annotation: Any, segmentation: Any, void: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, bool]:
    """Boolean (T, H, W) annotation, segmentation and void; True when the input was one frame."""
    a = _as_mask(annotation, "annotation")
    s = _as_mask(segmentation, "segmentation")
    if a.shape != s.shape:
        raise InputError(f"annotation and segmentation shapes differ: {a.shape} vs {s.shape}")
    if a.ndim not in (2, 3):
        raise InputError(f"masks must have shape (H, W) or (T, H, W), got {a.shape}")
    v = None
    if void is not None:
        v = _as_mask(void, "void")
        if v.shape != a.shape:
            raise InputError(f"void mask shape {v.shape} differs from the mask shape {a.shape}")
    single = a.ndim == 2
    if single:
        a, s = a[None], s[None]
        v = None if v is None else v[None]
    if a.shape[0] == 0:
        raise InputError("empty sequence: masks have no frames (T = 0)")
    if a.shape[1] == 0 or a.shape[2] == 0:
        raise InputError(f"masks have an empty frame size {a.shape[1:]}")
    return a, s, v, single


# --------------------------------------------------------------------------------------------
# J: region similarity
# --------------------------------------------------------------------------------------------
def db_eval_iou(annotation: Any, segmentation: Any, void: Any = None) -> float | np.ndarray:
    """DAVIS region similarity J of every frame.

    ``annotation`` (GT), ``segmentation`` (prediction) and optional ``void`` are boolean or
    0/1 masks of shape ``(H, W)`` or ``(T, H, W)``. Void pixels are ignored. Returns a float
    for one frame and a float64 array of shape ``(T,)`` otherwise; J = 1 when both masks are
    empty outside the void area, 0 when exactly one is.
    """
    a, s, v, single = _check_masks(annotation, segmentation, void)
    if v is not None:
        keep = ~v
        a, s = a & keep, s & keep
    inter = np.count_nonzero(a & s, axis=(1, 2))
    union = np.count_nonzero(a | s, axis=(1, 2))
    # DAVIS: an empty union (nothing to find, nothing predicted) is a perfect frame.
    j = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
    return float(j[0]) if single else j.astype(np.float64)


# --------------------------------------------------------------------------------------------
# F: boundary measure
# --------------------------------------------------------------------------------------------
def seg2bmap(mask: Any) -> np.ndarray:
    """Thin (1-pixel) boundary map of a boolean mask ``(H, W)`` or stack ``(..., H, W)``.

    A pixel is on the boundary when it differs from its right, lower or lower-right neighbour
    (zeros beyond the right/bottom edges); on the last row only the right neighbour counts, on
    the last column only the lower one, and the bottom-right pixel is never a boundary. The
    boundary therefore sits half a pixel towards the origin: outside the object on its top and
    left sides, inside on its bottom and right sides, and absent along the bottom/right image
    edges.
    """
    s = _as_mask(mask, "mask")
    if s.ndim < 2:
        raise InputError(f"mask must have at least 2 dimensions (H, W), got shape {s.shape}")
    east = np.zeros_like(s)
    east[..., :, :-1] = s[..., :, 1:]
    south = np.zeros_like(s)
    south[..., :-1, :] = s[..., 1:, :]
    south_east = np.zeros_like(s)
    south_east[..., :-1, :-1] = s[..., 1:, 1:]
    b = (s ^ east) | (s ^ south) | (s ^ south_east)
    b[..., -1, :] = (s ^ east)[..., -1, :]
    b[..., :, -1] = (s ^ south)[..., :, -1]
    b[..., -1, -1] = False
    return b


def boundary_pixels(height: int, width: int, bound_th: float = DEFAULT_BOUND_TH) -> int:
    """Matching tolerance in pixels: ``ceil(bound_th * diagonal)`` for ``bound_th < 1``, else
    ``bound_th`` (which must then be a whole number)."""
    bt = float(bound_th)
    if not bt > 0 or not math.isfinite(bt):
        raise InputError(f"bound_th must be a positive number, got {bound_th!r}")
    if bt >= 1:
        if bt != int(bt):
            raise InputError(f"bound_th >= 1 is a pixel radius and must be a whole number, got {bound_th!r}")
        return int(bt)
    # Same float expression as the reference (0.008 * norm of the frame shape), then ceil.
    return int(math.ceil(bt * float(np.linalg.norm([height, width]))))


def disk(radius: int) -> np.ndarray:
    """Boolean disk footprint ``{(dy, dx): dy^2 + dx^2 <= radius^2}`` of size ``2r+1``
    (the same set as skimage ``morphology.disk(radius)``)."""
    r = int(radius)
    if r < 0:
        raise InputError(f"disk radius must be >= 0, got {radius!r}")
    dy, dx = np.ogrid[-r : r + 1, -r : r + 1]
    return dy * dy + dx * dx <= r * r


def dilate_disk(bmap: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of ``(..., H, W)`` boolean maps by :func:`disk` (radius) per 2-D frame.

    Pixels outside the image count as background. Computed exactly as a union of shifted rows
    of the disk: row ``dy`` of the disk is the segment ``|dx| <= isqrt(r^2 - dy^2)``, so we grow
    a horizontal dilation one column at a time and OR it in, shifted by each ``dy`` whose
    half-width it equals. About ``4r`` array ORs, no scipy needed.
    """
    b = np.asarray(bmap, dtype=bool)
    r = int(radius)
    half_width: dict[int, list[int]] = {}
    for dy in range(-r, r + 1):
        half_width.setdefault(math.isqrt(r * r - dy * dy), []).append(dy)
    out = np.zeros_like(b)
    horiz = b.copy()  # b dilated by the horizontal segment [-w, w]
    for w in range(r + 1):
        if w > 0:
            horiz[..., :, w:] |= b[..., :, :-w]
            horiz[..., :, :-w] |= b[..., :, w:]
        for dy in half_width.get(w, ()):
            if dy == 0:
                out |= horiz
            elif dy > 0:
                out[..., dy:, :] |= horiz[..., :-dy, :]
            else:
                out[..., :dy, :] |= horiz[..., -dy:, :]
    return out


def _boundary_scores(
    annotation: np.ndarray, segmentation: np.ndarray, void: np.ndarray | None, bound_th: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame (F, precision, recall) of boolean (T, H, W) stacks."""
    if void is not None:
        keep = ~void
        annotation, segmentation = annotation & keep, segmentation & keep
    r = boundary_pixels(annotation.shape[1], annotation.shape[2], bound_th)
    fg_b = seg2bmap(segmentation)
    gt_b = seg2bmap(annotation)
    n_fg = np.count_nonzero(fg_b, axis=(1, 2))
    n_gt = np.count_nonzero(gt_b, axis=(1, 2))
    fg_match = np.count_nonzero(fg_b & dilate_disk(gt_b, r), axis=(1, 2))
    gt_match = np.count_nonzero(gt_b & dilate_disk(fg_b, r), axis=(1, 2))
    precision = fg_match / np.maximum(n_fg, 1)
    recall = gt_match / np.maximum(n_gt, 1)
    # DAVIS empty-boundary conventions: an empty predicted boundary has perfect precision but
    # zero recall, an empty GT boundary the reverse, and both empty is a perfect frame.
    only_gt = (n_fg == 0) & (n_gt > 0)
    only_fg = (n_fg > 0) & (n_gt == 0)
    neither = (n_fg == 0) & (n_gt == 0)
    precision = np.select([only_gt, only_fg, neither], [1.0, 0.0, 1.0], precision)
    recall = np.select([only_gt, only_fg, neither], [0.0, 1.0, 1.0], recall)
    denom = precision + recall
    f = np.where(denom == 0, 0.0, 2 * precision * recall / np.where(denom == 0, 1.0, denom))
    return f.astype(np.float64), precision.astype(np.float64), recall.astype(np.float64)


def db_eval_boundary(
    annotation: Any,
    segmentation: Any,
    void: Any = None,
    bound_th: float = DEFAULT_BOUND_TH,
    return_pr: bool = False,
) -> Any:
    """DAVIS boundary measure F of every frame.

    Inputs as for :func:`db_eval_iou`. ``bound_th``: tolerance as a fraction of the frame
    diagonal (``< 1``, default 0.008) or in pixels (``>= 1``). Returns a float for one frame,
    a float64 ``(T,)`` array otherwise; with ``return_pr=True`` a tuple ``(F, precision,
    recall)`` of such values (precision is measured on the segmentation's boundary).
    """
    a, s, v, single = _check_masks(annotation, segmentation, void)
    f, p, r = _boundary_scores(a, s, v, bound_th)
    if single:
        f, p, r = float(f[0]), float(p[0]), float(r[0])
    return (f, p, r) if return_pr else f


def db_statistics(per_frame: Any, legacy_uint8_bins: bool = False) -> tuple[float, float, float]:
    """``(mean, recall, decay)`` of one object's per-frame J or F values, as fractions.

    * mean: NaN-ignoring mean;
    * recall: fraction of frames with value > 0.5;
    * decay: mean of the first minus mean of the last of four bins whose edges are
      ``round(linspace(1, T, 5)) - 1``; bin k spans edges k..k+1 inclusive, so neighbouring
      bins share a frame. ``legacy_uint8_bins=True`` reproduces davis2017-evaluation's uint8
      cast of the edges, which wraps for sequences longer than 256 frames.
    """
    x = np.asarray(per_frame, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise InputError("empty sequence: no per-frame values to summarise")
    mean = float(np.nanmean(x)) if not np.all(np.isnan(x)) else math.nan
    recall = float(np.mean(x > 0.5))
    # + 1e-10 decides exact .5 ties upwards before numpy's round-half-to-even.
    edges = np.round(np.linspace(1, x.size, 5) + 1e-10) - 1
    edges = edges.astype(np.uint8 if legacy_uint8_bins else np.int64)
    bins = [x[int(edges[k]) : int(edges[k + 1]) + 1] for k in range(4)]
    first, last = bins[0], bins[-1]
    if first.size == 0 or last.size == 0 or np.all(np.isnan(first)) or np.all(np.isnan(last)):
        decay = math.nan
    else:
        decay = float(np.nanmean(first) - np.nanmean(last))
    return mean, recall, decay


# --------------------------------------------------------------------------------------------
# J&F meter (per expression, then over expressions)
# --------------------------------------------------------------------------------------------
_STAT_NAMES = ("J", "F", "J&F", "J-Recall", "J-Decay", "F-Recall", "F-Decay")


def _groups_of(group: str | Sequence[str] | None) -> list[str]:
    if group is None:
        return []
    if isinstance(group, str):
        return [group]
    return [str(g) for g in group]


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


class JFMeter:
    """Accumulates per-frame J and F of (video, expression) pairs; reports DAVIS-style J&F.

    Each (video, expression) is scored once (a second update of the same pair raises
    :class:`~lavt.errors.InputError`, which catches duplicated samples, e.g. from a padded
    distributed sampler; combine ranks with :meth:`merge`).

    :meth:`compute` returns, x100 and unrounded: ``J`` and ``F`` (means over expressions of the
    per-expression frame means), ``J&F = (J + F) / 2``, ``J-Recall``/``F-Recall`` and
    ``J-Decay``/``F-Decay`` (means over expressions of :func:`db_statistics`), ``n``
    (expressions) and ``n_frames``; plus ``groups: {label: {...}}`` when expressions carry group
    labels (an expression may have several labels, e.g. its category and its annotator set).
    """

    def __init__(self, bound_th: float = DEFAULT_BOUND_TH, legacy_uint8_bins: bool = False) -> None:
        boundary_pixels(1, 1, bound_th)  # validates bound_th early, with a clear message
        self.bound_th = float(bound_th)
        self.legacy_uint8_bins = bool(legacy_uint8_bins)
        self.reset()

    def reset(self) -> None:
        self._records: dict[tuple[str, str], dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self._records)

    # ---- accumulation --------------------------------------------------------------------
    def update(
        self,
        video: Any,
        expression: Any,
        pred: Any,
        gt: Any,
        void: Any = None,
        group: str | Sequence[str] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Score one expression over its frames: ``pred``, ``gt`` (and optional ``void``) are
        boolean/0-1 masks ``(T, H, W)`` (or one ``(H, W)`` frame), all frames of the
        expression that the benchmark lists, including frames where the object is absent.
        Returns the per-frame ``(J, F)`` arrays."""
        a, s, v, _ = _check_masks(gt, pred, void)
        j = db_eval_iou(a, s, v)
        f, _, _ = _boundary_scores(a, s, v, self.bound_th)
        self.update_scores(video, expression, j, f, group=group)
        return j, f

    def update_scores(
        self,
        video: Any,
        expression: Any,
        j: Any,
        f: Any,
        group: str | Sequence[str] | None = None,
    ) -> None:
        """Add precomputed per-frame J and F values (fractions in [0, 1]) of one expression."""
        key = (str(video), str(expression))
        if key in self._records:
            raise InputError(f"video {key[0]!r} expression {key[1]!r} was already scored")
        jj = np.asarray(j, dtype=np.float64).reshape(-1)
        ff = np.asarray(f, dtype=np.float64).reshape(-1)
        if jj.size == 0:
            raise InputError(f"empty sequence: video {key[0]!r} expression {key[1]!r} has no frames")
        if jj.size != ff.size:
            raise InputError(f"got {jj.size} J values but {ff.size} F values for video {key[0]!r}")
        for name, vals in (("J", jj), ("F", ff)):
            if not np.all((vals >= 0) & (vals <= 1)):
                raise InputError(f"{name} values must be in [0, 1] for video {key[0]!r}")
        self._records[key] = {"J": jj.tolist(), "F": ff.tolist(), "groups": _groups_of(group)}

    # ---- metrics -------------------------------------------------------------------------
    def _expression_stats(self, rec: dict[str, Any]) -> dict[str, float]:
        jm, jr, jd = db_statistics(rec["J"], self.legacy_uint8_bins)
        fm, fr, fd = db_statistics(rec["F"], self.legacy_uint8_bins)
        return {"J": jm, "F": fm, "J&F": (jm + fm) / 2, "J-Recall": jr, "J-Decay": jd, "F-Recall": fr, "F-Decay": fd}

    def _aggregate(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        stats = [self._expression_stats(r) for r in records]
        out: dict[str, Any] = {}
        for name in ("J", "F", "J-Recall", "J-Decay", "F-Recall", "F-Decay"):
            vals = [s[name] for s in stats if not math.isnan(s[name])]
            out[name] = 100.0 * math.fsum(vals) / len(vals) if vals else math.nan
        out["J&F"] = (out["J"] + out["F"]) / 2
        out["n"] = len(stats)
        out["n_frames"] = sum(len(r["J"]) for r in records)
        return {k: out[k] for k in (*_STAT_NAMES, "n", "n_frames")}

    def compute(self) -> dict[str, Any]:
        """Dataset metrics (x100, NaN when nothing was added) and per-group metrics."""
        recs = list(self._records.values())
        result = self._aggregate(recs)
        labels = sorted({g for r in recs for g in r["groups"]})
        if labels:
            result["groups"] = {g: self._aggregate([r for r in recs if g in r["groups"]]) for g in labels}
        return result

    def per_expression(self) -> list[dict[str, Any]]:
        """One row per scored (video, expression): its statistics x100, frame count and groups."""
        rows = []
        for (video, expression), rec in self._records.items():
            st = {k: 100.0 * v for k, v in self._expression_stats(rec).items()}
            rows.append({"video": video, "expression": expression, "groups": list(rec["groups"]), **st,
                         "n_frames": len(rec["J"])})
        return rows

    def conventions(self) -> dict[str, Any]:
        return {
            "bound_th": self.bound_th,
            "boundary": "seg2bmap thin boundary; match within disk dy^2+dx^2<=r^2, r=ceil(bound_th*diagonal)",
            "empty_masks": "J=1 and F=1 when both empty; J=0 and F=0 when exactly one is empty",
            "aggregation": "mean over frames per expression, then mean over expressions; J&F=(J+F)/2",
            "decay_bins": "legacy uint8" if self.legacy_uint8_bins else "int",
        }

    def write_json(
        self,
        path: str | os.PathLike,
        extra: dict[str, Any] | None = None,
        per_expression: bool = True,
    ) -> dict[str, Any]:
        """Write ``{"metrics", "conventions", "per_expression"?, **extra}`` (NaN as null) to
        ``path`` and return the written dict."""
        payload: dict[str, Any] = {"metrics": self.compute(), "conventions": self.conventions()}
        if per_expression:
            payload["per_expression"] = self.per_expression()
        if extra:
            payload.update(extra)
        payload = _nan_to_none(payload)
        atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
        return payload

    # ---- state and merging ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-able / picklable state (per-frame values, groups, conventions)."""
        return {
            "records": [
                {"video": v, "expression": e, "J": list(r["J"]), "F": list(r["F"]), "groups": list(r["groups"])}
                for (v, e), r in self._records.items()
            ],
            "bound_th": self.bound_th,
            "legacy_uint8_bins": self.legacy_uint8_bins,
        }

    def merge(self, other: JFMeter | dict[str, Any]) -> JFMeter:
        """Add the expressions of ``other`` (a meter or its :meth:`state_dict`); returns self.
        Both must use the same ``bound_th``; an expression present in both is an error."""
        state = other.state_dict() if isinstance(other, JFMeter) else other
        if float(state["bound_th"]) != self.bound_th:
            raise InputError(f"cannot merge J&F meters with bound_th {state['bound_th']} and {self.bound_th}")
        for rec in state["records"]:
            self.update_scores(rec["video"], rec["expression"], rec["J"], rec["F"], group=rec["groups"])
        return self

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> JFMeter:
        meter = cls(bound_th=state["bound_th"], legacy_uint8_bins=state.get("legacy_uint8_bins", False))
        return meter.merge(state)


# --------------------------------------------------------------------------------------------
# A2D-Sentences / JHMDB-Sentences: frame-level oIoU, mIoU, P@K through RISMeter
# --------------------------------------------------------------------------------------------
def ris_frame_key(video: Any, frame: Any, expression: Any) -> str:
    """Sample key of one (video, frame, expression), like A2D's ``v_<vid>_f_<frame>_i_<inst>``
    image ids; used by :meth:`RISMeter.drop_duplicates`."""
    return f"v_{video}_f_{frame}_e_{expression}"


def update_ris_frames(
    meter: RISMeter,
    video: Any,
    expression: Any,
    pred: Any,
    gt: Any,
    frames: Sequence[Any] | None = None,
    group: str | None = None,
    skip_empty_gt: bool = True,
) -> np.ndarray:
    """Add every annotated frame of one expression to ``meter`` as one oIoU/mIoU/P@K sample.

    ``pred`` and ``gt``: boolean/0-1 masks ``(T, H, W)`` (or one ``(H, W)`` frame) of the
    evaluated frames; ``frames``: their ids (default ``0..T-1``), used in the sample keys.
    With ``skip_empty_gt`` (default, the A2D-Sentences convention) frames whose GT is empty are
    skipped, not scored. Returns the per-frame IoU, NaN for skipped frames. The meter's own
    conventions (empty IoU, ``>=`` vs ``>``) apply; its defaults are LAVT's.
    """
    a, s, _, _ = _check_masks(gt, pred, None)
    t = a.shape[0]
    ids = list(range(t)) if frames is None else list(frames)
    if len(ids) != t:
        raise InputError(f"got {len(ids)} frame ids for {t} frames")
    ious = np.full(t, np.nan)
    for i in range(t):
        if skip_empty_gt and not a[i].any():
            continue
        ious[i] = meter.update(s[i], a[i], group=group, key=ris_frame_key(video, ids[i], expression))
    return ious
