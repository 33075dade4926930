"""Referring-segmentation metrics: oIoU, mIoU and precision@K.

For sample ``i`` (one expression paired with one image or annotated frame) with predicted
binary mask ``P_i`` and ground truth ``G_i``: ``I_i = |P_i & G_i|``, ``U_i = |P_i | G_i|``.

* ``oIoU = sum_i I_i / sum_i U_i`` (cumulative; favours large objects),
* ``mIoU = mean_i IoU_i``,
* ``P@K = fraction of samples with IoU_i >= K`` for K in 0.5 ... 0.9,

all reported x100 (unrounded floats). :class:`RISMeter` accumulates exact integer counts and
compares IoU with thresholds exactly (rational arithmetic, no float rounding).

Conventions (recorded in :meth:`RISMeter.write_json`):

* ``empty_iou``: IoU of a sample with ``U_i = 0`` (empty prediction and empty GT). LAVT's
  ``test.py`` uses 0 (default); MTTR/ReferFormer's epsilon formula gives 1 (``empty_iou=1.0``).
* ``threshold``: ``">="`` (LAVT, default) or ``">"`` (MTTR, ``strict=True``).
* ``resolution``: where masks were compared. The official LAVT protocol compares the argmax at
  the model resolution (480x480) with the GT resized to 480x480 with PIL NEAREST
  (:func:`score_prediction` ``protocol="official"``); ``protocol="original"`` upsamples the
  logits to the original image size instead.

Distributed evaluation: each rank accumulates its own meter; then either
``meter = meter.gathered()`` (uses ``torch.distributed.all_gather_object`` on the picklable
:meth:`RISMeter.state_dict`), or gather :meth:`RISMeter.to_tensors` (padded to a common length)
yourself and rebuild with :meth:`RISMeter.from_tensors`. ``DistributedSampler`` pads the
dataset with repeated samples; pass ``key=`` to ``update`` and call
:meth:`RISMeter.drop_duplicates` after gathering to score each sample once.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..io.torch_files import atomic_write_text

__all__ = [
    "DEFAULT_THRESHOLDS",
    "RISMeter",
    "batch_intersection_union",
    "intersection_union",
    "official_gt_resize",
    "resize_mask_nearest",
    "score_prediction",
]

DEFAULT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
PROTOCOLS = ("official", "original")
_PAD = -1  # padding rows of to_tensors()


# --------------------------------------------------------------------------------------------
# intersection / union
# --------------------------------------------------------------------------------------------
def _as_bool(mask: Any, name: str) -> np.ndarray | torch.Tensor:
    """A 0/1 or boolean mask (numpy, torch, or array-like) as a boolean array/tensor."""
    if isinstance(mask, torch.Tensor):
        if mask.dtype == torch.bool:
            return mask
        if mask.is_floating_point():
            if mask.numel() and not bool(((mask == 0) | (mask == 1)).all()):
                raise ValueError(f"{name} is a float mask with values other than 0 and 1; threshold it first")
        return mask != 0
    arr = np.asarray(mask)
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype.kind == "f":
        if arr.size and not bool(((arr == 0) | (arr == 1)).all()):
            raise ValueError(f"{name} is a float mask with values other than 0 and 1; threshold it first")
    elif arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must be a boolean or 0/1 mask, got dtype {arr.dtype}")
    return arr != 0


def _pair(pred: Any, gt: Any) -> tuple[Any, Any, bool]:
    """Both masks as booleans of one library; True when the result should be torch."""
    use_torch = isinstance(pred, torch.Tensor) or isinstance(gt, torch.Tensor)
    p, g = _as_bool(pred, "pred"), _as_bool(gt, "gt")
    if use_torch:
        device = pred.device if isinstance(pred, torch.Tensor) else gt.device
        p = torch.as_tensor(p, device=device)
        g = torch.as_tensor(g, device=device)
    if tuple(p.shape) != tuple(g.shape):
        raise ValueError(f"pred and gt masks must have the same shape, got {tuple(p.shape)} and {tuple(g.shape)}")
    return p, g, use_torch


def intersection_union(pred: Any, gt: Any) -> tuple[int, int]:
    """``(|pred & gt|, |pred | gt|)`` as Python ints for boolean or 0/1 masks of any shape.

    Any nonzero integer counts as foreground; float masks must contain only 0 and 1.
    """
    p, g, use_torch = _pair(pred, gt)
    if use_torch:
        return int((p & g).sum()), int((p | g).sum())
    return int(np.count_nonzero(p & g)), int(np.count_nonzero(p | g))


def batch_intersection_union(preds: Any, gts: Any) -> tuple[Any, Any]:
    """Per-sample ``(I, U)`` for masks of shape ``(N, ...)``; int64 arrays of shape ``(N,)``.

    Returns torch tensors (on the predictions' device) if either input is a tensor, otherwise
    numpy arrays.
    """
    p, g, use_torch = _pair(preds, gts)
    if p.ndim < 1:
        raise ValueError("batched masks need a leading batch dimension (N, ...)")
    n = p.shape[0]
    if use_torch:
        inter = (p & g).reshape(n, -1).sum(dim=1, dtype=torch.int64)
        union = (p | g).reshape(n, -1).sum(dim=1, dtype=torch.int64)
        return inter, union
    inter = np.count_nonzero((p & g).reshape(n, -1), axis=1).astype(np.int64)
    union = np.count_nonzero((p | g).reshape(n, -1), axis=1).astype(np.int64)
    return inter, union


# --------------------------------------------------------------------------------------------
# meter
# --------------------------------------------------------------------------------------------
def _to_int_list(x: Any, name: str) -> list[int]:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} counts must be integers, got {arr!r}")
    elif arr.dtype.kind not in "iub":
        raise ValueError(f"{name} counts must be integers, got dtype {arr.dtype}")
    return [int(v) for v in arr.reshape(-1).tolist()]


class RISMeter:
    """Accumulates per-sample intersection/union counts and computes oIoU, mIoU and P@K.

    Parameters
    ----------
    empty_iou:
        IoU of a sample whose union is empty (both masks empty): 0.0 (LAVT, default) or 1.0
        (MTTR/ReferFormer). Also used for oIoU when the total union is 0.
    strict:
        ``False`` (default): a sample passes P@K when ``IoU >= K`` (LAVT); ``True``: ``IoU > K``
        (MTTR).
    thresholds:
        The K values of P@K (default 0.5, 0.6, 0.7, 0.8, 0.9); compared exactly as decimals.
    resolution:
        Free-form description of where masks were compared (e.g. ``"model 480x480, GT PIL
        NEAREST"``); only recorded in :meth:`conventions` / :meth:`write_json`.

    ``compute()`` returns ``{"oIoU", "mIoU", "P@0.5", ..., "n"}`` (percentages, unrounded) plus
    ``"groups": {label: {...same keys...}}`` when samples were given a group label (samples
    without a label count only in the overall numbers).
    """

    def __init__(
        self,
        empty_iou: float = 0.0,
        strict: bool = False,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        resolution: str | None = None,
    ) -> None:
        if not 0.0 <= float(empty_iou) <= 1.0:
            raise ValueError(f"empty_iou must be in [0, 1], got {empty_iou}")
        self.empty_iou = float(empty_iou)
        self.strict = bool(strict)
        self.thresholds = tuple(float(t) for t in thresholds)
        for t in self.thresholds:
            if not 0.0 <= t <= 1.0:
                raise ValueError(f"thresholds must be in [0, 1], got {t}")
        self.resolution = resolution
        self.reset()

    # ---- accumulation --------------------------------------------------------------------
    def reset(self) -> None:
        self._inter: list[int] = []
        self._union: list[int] = []
        self._groups: list[str | None] = []
        self._keys: list[str | None] = []

    def __len__(self) -> int:
        return len(self._inter)

    def update(self, pred: Any, gt: Any, group: str | None = None, key: Any = None) -> float:
        """Add one sample from its predicted and GT masks (boolean/0-1, same shape).

        Returns the sample's IoU (a fraction, with this meter's empty convention).
        """
        inter, union = intersection_union(pred, gt)
        self.update_counts(inter, union, group=group, key=key)
        return self._iou(inter, union)

    def update_counts(
        self,
        inter: Any,
        union: Any,
        group: str | None | Sequence[str | None] = None,
        key: Any = None,
    ) -> None:
        """Add one sample (scalar counts) or a batch (1-D counts, e.g. from
        :func:`batch_intersection_union`). ``group``/``key`` is either one value for all
        samples of the call (a tuple key such as ``(ref_id, sent_id)`` counts as one value) or
        a list / array with one value per sample. Labels and keys are stored as strings."""
        ii, uu = _to_int_list(inter, "intersection"), _to_int_list(union, "union")
        if len(ii) != len(uu):
            raise ValueError(f"got {len(ii)} intersections but {len(uu)} unions")
        for a, b in zip(ii, uu):
            if a < 0 or b < a:
                raise ValueError(f"invalid counts I={a}, U={b}: need 0 <= I <= U")
        groups = self._per_sample(group, len(ii), "group")
        keys = self._per_sample(key, len(ii), "key")
        self._inter.extend(ii)
        self._union.extend(uu)
        self._groups.extend(None if g is None else str(g) for g in groups)
        self._keys.extend(None if k is None else str(k) for k in keys)

    @staticmethod
    def _per_sample(value: Any, n: int, name: str) -> list[Any]:
        if not isinstance(value, (list, np.ndarray, torch.Tensor)):
            return [value] * n  # one label/key (str, int, tuple, ...) for every sample
        values = value.tolist() if not isinstance(value, list) else value
        if len(values) != n:
            raise ValueError(f"got {len(values)} {name} values for {n} samples")
        return values

    # ---- metrics -------------------------------------------------------------------------
    def _iou(self, inter: int, union: int) -> float:
        return self.empty_iou if union == 0 else inter / union

    def ious(self) -> np.ndarray:
        """Per-sample IoU (fractions, float64) in insertion order."""
        return np.array([self._iou(a, b) for a, b in zip(self._inter, self._union)], dtype=np.float64)

    def _passes(self, inter: int, union: int, t: Fraction) -> bool:
        if union == 0:
            value = Fraction(self.empty_iou)
            return value > t if self.strict else value >= t
        lhs, rhs = inter * t.denominator, t.numerator * union  # exact: I/U vs p/q
        return lhs > rhs if self.strict else lhs >= rhs

    def _metrics(self, idx: Sequence[int]) -> dict[str, float | int]:
        n = len(idx)
        out: dict[str, float | int] = {}
        if n == 0:
            out.update(oIoU=math.nan, mIoU=math.nan)
            out.update({_pk_name(t): math.nan for t in self.thresholds})
            out["n"] = 0
            return out
        inter = [self._inter[i] for i in idx]
        union = [self._union[i] for i in idx]
        sum_i, sum_u = sum(inter), sum(union)
        out["oIoU"] = 100.0 * (sum_i / sum_u if sum_u else self.empty_iou)
        out["mIoU"] = 100.0 * math.fsum(self._iou(a, b) for a, b in zip(inter, union)) / n
        for t in self.thresholds:
            frac = Fraction(str(t))
            hits = sum(self._passes(a, b, frac) for a, b in zip(inter, union))
            out[_pk_name(t)] = 100.0 * hits / n
        out["n"] = n
        return out

    def compute(self) -> dict[str, Any]:
        """Overall metrics (x100, unrounded; NaN when empty) and per-group metrics."""
        result: dict[str, Any] = self._metrics(range(len(self)))
        labels = sorted({g for g in self._groups if g is not None})
        if labels:
            result["groups"] = {
                g: self._metrics([i for i, x in enumerate(self._groups) if x == g]) for g in labels
            }
        return result

    def conventions(self) -> dict[str, Any]:
        return {
            "empty_iou": self.empty_iou,
            "threshold": ">" if self.strict else ">=",
            "thresholds": list(self.thresholds),
            "resolution": self.resolution,
        }

    def write_json(self, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write ``{"metrics": compute(), "conventions": {...}, **extra}`` to ``path`` (NaN is
        written as ``null``) and return the written dict."""
        payload: dict[str, Any] = {"metrics": _nan_to_none(self.compute()), "conventions": self.conventions()}
        if extra:
            payload.update(extra)
        atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
        return payload

    # ---- state, merging, distributed -----------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Picklable/JSON-able state: counts, labels, keys and conventions."""
        return {
            "inter": list(self._inter),
            "union": list(self._union),
            "groups": list(self._groups),
            "keys": list(self._keys),
            "conventions": self.conventions(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace this meter's samples with ``state`` (conventions must match)."""
        self._check_conventions(state.get("conventions"))
        n = len(state["inter"])
        if not (len(state["union"]) == len(state["groups"]) == len(state["keys"]) == n):
            raise ValueError("inconsistent RISMeter state: inter/union/groups/keys lengths differ")
        self.reset()
        self._inter = [int(v) for v in state["inter"]]
        self._union = [int(v) for v in state["union"]]
        self._groups = list(state["groups"])
        self._keys = list(state["keys"])

    def _check_conventions(self, conv: dict[str, Any] | None) -> None:
        if conv is None:
            return
        mine = self.conventions()
        for name in ("empty_iou", "threshold", "thresholds"):
            if name in conv and (list(conv[name]) if name == "thresholds" else conv[name]) != mine[name]:
                raise ValueError(f"cannot combine RISMeters with different {name}: {conv[name]!r} vs {mine[name]!r}")

    def merge(self, other: RISMeter | dict[str, Any]) -> RISMeter:
        """Append the samples of ``other`` (a meter or a :meth:`state_dict`); returns self."""
        state = other.state_dict() if isinstance(other, RISMeter) else other
        self._check_conventions(state.get("conventions"))
        mine = self.state_dict()
        for name in ("inter", "union", "groups", "keys"):
            mine[name] = mine[name] + list(state[name])
        self.load_state_dict(mine)
        return self

    def drop_duplicates(self) -> int:
        """Keep the first sample of every non-None key (e.g. after gathering from ranks of a
        padded ``DistributedSampler``); returns the number of samples removed."""
        seen: set[str] = set()
        keep: list[int] = []
        for i, k in enumerate(self._keys):
            if k is not None:
                if k in seen:
                    continue
                seen.add(k)
            keep.append(i)
        removed = len(self) - len(keep)
        self._inter = [self._inter[i] for i in keep]
        self._union = [self._union[i] for i in keep]
        self._groups = [self._groups[i] for i in keep]
        self._keys = [self._keys[i] for i in keep]
        return removed

    def gathered(
        self,
        all_gather_object: Callable[[list, Any], None] | None = None,
        world_size: int | None = None,
    ) -> RISMeter:
        """A new meter holding the samples of all ranks (in rank order).

        By default uses ``torch.distributed.all_gather_object`` when a process group is
        initialised (without one, or with one rank, this returns a copy of this meter). A
        custom ``all_gather_object(output_list, obj)`` needs ``world_size``.
        """
        if all_gather_object is None:
            import torch.distributed as dist

            if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
                return copy.deepcopy(self)
            all_gather_object, world_size = dist.all_gather_object, dist.get_world_size()
        elif world_size is None or world_size < 1:
            raise ValueError("a custom all_gather_object needs world_size >= 1")
        states: list[Any] = [None] * world_size
        all_gather_object(states, self.state_dict())
        out = RISMeter(self.empty_iou, self.strict, self.thresholds, self.resolution)
        for state in states:
            out.merge(state)
        return out

    def to_tensors(self, group_names: Sequence[str] | None = None, pad_to: int | None = None) -> torch.Tensor:
        """Counts as an int64 tensor of shape ``(n, 3)``: columns I, U and the index of the
        sample's group in ``group_names`` (-1 for no group).

        For ``torch.distributed.all_gather`` all ranks need the same ``group_names`` (pass a
        fixed list; the default is this meter's sorted labels) and the same length: pad with
        ``pad_to`` (rows of -1, dropped by :meth:`from_tensors`). Sample keys are not encoded.
        """
        names = list(group_names) if group_names is not None else sorted({g for g in self._groups if g is not None})
        index = {g: i for i, g in enumerate(names)}
        missing = sorted({g for g in self._groups if g is not None and g not in index})
        if missing:
            raise ValueError(f"group label(s) {missing} are not in group_names {names}")
        rows = [[a, b, -1 if g is None else index[g]] for a, b, g in zip(self._inter, self._union, self._groups)]
        if pad_to is not None:
            if pad_to < len(rows):
                raise ValueError(f"pad_to={pad_to} is smaller than the number of samples {len(rows)}")
            rows += [[_PAD, _PAD, _PAD]] * (pad_to - len(rows))
        return torch.tensor(rows, dtype=torch.int64).reshape(-1, 3)

    @classmethod
    def from_tensors(
        cls,
        tensors: torch.Tensor | Iterable[torch.Tensor],
        group_names: Sequence[str] | None = None,
        **conventions: Any,
    ) -> RISMeter:
        """Rebuild a meter from one ``(n, 3)`` tensor of :meth:`to_tensors` or a list of them
        (e.g. the output of ``all_gather``); padding rows are dropped. ``conventions`` are the
        constructor arguments (``empty_iou``, ``strict``, ...)."""
        if isinstance(tensors, torch.Tensor):
            tensors = [tensors]
        names = list(group_names or [])
        meter = cls(**conventions)
        for t in tensors:
            t = torch.as_tensor(t).detach().cpu().reshape(-1, 3).tolist()
            for a, b, g in t:
                if a == _PAD and b == _PAD:
                    continue
                if g >= len(names):
                    raise ValueError(f"group index {g} out of range for group_names {names}")
                meter.update_counts(a, b, group=None if g < 0 else names[g])
        return meter


def _pk_name(t: float) -> str:
    return f"P@{t:g}"


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


# --------------------------------------------------------------------------------------------
# resizing and scoring protocols
# --------------------------------------------------------------------------------------------
def _check_size(size: Sequence[int]) -> tuple[int, int]:
    if len(size) != 2 or any(int(s) < 1 for s in size):
        raise ValueError(f"size must be (height, width) with positive entries, got {tuple(size)}")
    return int(size[0]), int(size[1])


def resize_mask_nearest(mask: Any, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resize of a ``(H, W)`` mask to ``size = (h, w)`` with torch.

    Uses ``F.interpolate(mode="nearest-exact")`` (source index ``floor((i + 0.5) * H / h)``),
    which equals PIL ``NEAREST`` whenever the scale factors are integers (up- or downscale).
    Note that torch's plain ``mode="nearest"`` (``floor(i * H / h)``) does *not*: for a 2x
    downscale it samples rows 0, 2, ... where PIL samples 1, 3, .... For non-integer factors the
    two libraries can still pick a neighbouring row/column because of float rounding; use
    :func:`official_gt_resize` for the exact official protocol. Returns the input dtype.
    """
    h, w = _check_size(size)
    t = torch.as_tensor(mask)
    if t.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {tuple(t.shape)}")
    dtype = t.dtype
    src = t.to(torch.float64 if dtype in (torch.int64, torch.float64) else torch.float32)
    out = F.interpolate(src[None, None], size=(h, w), mode="nearest-exact")[0, 0]
    return out.to(dtype)


def official_gt_resize(mask: Any, size: Sequence[int]) -> np.ndarray:
    """Resize a ``(H, W)`` GT mask to ``size = (h, w)`` with ``PIL.Image.resize(NEAREST)``,
    exactly like the official evaluation (GT to 480x480). Label values are kept; returns a
    numpy array of the input dtype (``size`` is (height, width), not PIL's (width, height))."""
    h, w = _check_size(size)
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {arr.shape}")
    dtype = arr.dtype
    if dtype == np.bool_ or (arr.dtype.kind in "iu" and (arr.size == 0 or (arr.min() >= 0 and arr.max() <= 255))):
        img = Image.fromarray(arr.astype(np.uint8), mode="L")
    elif arr.dtype.kind in "iu" and arr.min() >= -(2**31) and arr.max() < 2**31:
        img = Image.fromarray(arr.astype(np.int32), mode="I")
    elif arr.dtype.kind == "f":
        img = Image.fromarray(arr.astype(np.float32), mode="F")
    else:
        raise ValueError(f"cannot resize a mask of dtype {dtype} with values outside int32")
    out = np.asarray(img.resize((w, h), resample=Image.NEAREST))
    return out.astype(dtype)


def score_prediction(logits: Any, gt_original: Any, protocol: str = "official") -> tuple[int, int]:
    """``(I, U)`` of one prediction under an evaluation protocol.

    ``logits``: ``(2, h, w)`` two-class logits at the model resolution (e.g. 480x480);
    ``gt_original``: the ``(H0, W0)`` binary GT at the original image size.

    * ``"official"`` (LAVT ``test.py``, the paper's numbers): ``argmax`` at ``(h, w)`` vs the GT
      resized to ``(h, w)`` with PIL NEAREST.
    * ``"original"``: logits upsampled to ``(H0, W0)`` (bilinear, ``align_corners=True``, as
      :mod:`lavt.predict` does), ``argmax``, vs the original GT.

    ``argmax`` ties go to the background (channel 0), as in torch.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}")
    lg = torch.as_tensor(logits).detach()
    if lg.ndim != 3 or lg.shape[0] != 2:
        raise ValueError(f"logits must have shape (2, h, w), got {tuple(lg.shape)}")
    gt = gt_original.detach().cpu().numpy() if isinstance(gt_original, torch.Tensor) else np.asarray(gt_original)
    if gt.ndim != 2:
        raise ValueError(f"gt_original must have shape (H0, W0), got {gt.shape}")
    gt = _as_bool(gt, "gt_original")
    if protocol == "official":
        pred = lg.float().argmax(dim=0).cpu().numpy().astype(bool)
        gt_small = official_gt_resize(gt, pred.shape)
        return intersection_union(pred, gt_small)
    up = F.interpolate(lg.float()[None], size=gt.shape, mode="bilinear", align_corners=True)[0]
    pred = up.argmax(dim=0).cpu().numpy().astype(bool)
    return intersection_union(pred, gt)
