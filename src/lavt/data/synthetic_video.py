"""Synthetic referring *videos* written in the real Ref-YouTube-VOS layout.

The video counterpart of :mod:`lavt.data.synthetic`: clips of moving coloured shapes on a static
textured background, with English expressions that each pick out exactly one object track, some
of which can only be resolved by watching the motion. The shapes, colours, sizes, backgrounds,
painting and exact rasterisation are those of the image generator (imported, not copied). The
files follow ``/work/shared/reference/data-and-metrics.md`` section 2, so the Ref-YouTube-VOS
loader (:mod:`lavt.data.ytvos`) reads them unchanged::

    <root>/train/JPEGImages/<video_id>/<frame>.jpg     JPEG q95 4:4:4, every listed frame
    <root>/train/Annotations/<video_id>/<frame>.png    palette ("P") PNG, pixel value = object id
    <root>/train/meta.json                             {"videos": {vid: {"objects": {"1": {"category", "frames"}}}}}
    <root>/valid/JPEGImages/<video_id>/<frame>.jpg
    <root>/valid/Annotations/<video_id>/<frame>.png    (ours: the real valid split has no masks)
    <root>/valid/meta.json                             (ours, same format as train)
    <root>/meta_expressions/{train,valid}/meta_expressions.json
    <root>/meta_expressions/test/meta_expressions.json   {"videos": {}} (valid = valid - test)
    <root>/synthetic_videos_meta.json                  parameters, version, summary (cache key)
    <root>/.lavt_synthetic_videos                      ownership marker (see "Safety" below)

``meta_expressions.json`` is ``{"videos": {vid: {"expressions": {"0": {"exp", "obj_id", "type"},
...}, "frames": ["00000", "00005", ...]}}}``: expression ids are the strings "0", "1", ...,
``obj_id`` is a string equal to the PNG pixel value, ``frames`` is sorted and names exactly the
files in both folders. ``type`` is an extra key (one of :data:`VIDEO_EXPRESSION_TYPES`), as the
image generator adds ``type`` to its sentences; loaders that read only ``exp``/``obj_id`` ignore
it. **Valid**: because we evaluate locally, the ``valid`` split is written like ``train``
(masks, ``meta.json``, ``obj_id``); the real valid split has none of these, so a loader that
treats valid as unannotated still reads it (and ignores them), and an evaluator reads
``valid/Annotations`` directly. The empty test meta makes the reference "valid = valid meta -
test meta" rule give every valid video.

Clips
    ``frames`` frames (default 12) of ``size`` (width, height; default 128x96) pixels, named like
    the real data: 5-digit indices every 5th frame ("00000", "00005", ...), one clip in three
    starting late ("00005" or "00010"). 2-5 object tracks per clip on one static background
    (:func:`lavt.data.synthetic._background`, plus a light per-frame grain). Every track has a
    fixed shape, colour, size, rotation and shading and one motion (:data:`MOTION_KINDS`):
    ``still``; ``move`` (left/right/up/down at constant speed); ``stop`` (moves >= 2 steps, then
    still >= 2 steps); ``start`` (the reverse); ``turn`` (moves, then comes back along the same
    axis, >= 2 steps each way); ``enter`` (from a side: absent in the first frame(s), first seen
    cut off by that side, then moving inward, at least half in view by the end); ``leave`` (the
    time reverse: absent at the end).
    Speeds are 2.5-5% of the shorter side per frame, headings within 12 degrees of the axis. A new
    track is a *look-alike* (same shape and colour, usually the same size) of an earlier one with
    probability :data:`LOOKALIKE_PROBABILITY`, otherwise it shares the shape or the colour of an
    earlier track as in the image generator; either way a track gets a motion (kind and
    direction) that no earlier track of the same shape and colour has, so appearance alone is
    often ambiguous and motion tells look-alikes apart. Placement is rejected and redrawn (from
    the same random stream) unless, **in every frame**, every object keeps >= 65% of its in-image
    area visible and two objects of the same colour keep a 2-pixel gap; objects that stay in view
    keep 2 pixels from the borders.

Masks are exact
    Each track's polygon is rasterised per frame with pycocotools (clipped to the image); the
    visible mask is the silhouette minus those of later tracks (later = on top); the frame is
    painted from the visible masks; the PNG holds track ``k`` (0-based) as pixel value ``k + 1``.
    An object is *present* in a frame iff its visible mask is not empty (its ``meta.json``
    ``frames``); entering and leaving objects are absent (all-zero mask) in some listed frames.

Expressions (the grammar is :data:`VIDEO_TEMPLATES`; noun phrases are the image generator's)
    ``appearance``  "the red triangle", "big star": the noun phrase alone names one track.
    ``position``    "the blue star on the left", "the topmost circle": the noun phrase matches
                    several tracks; a side (left/right/top/bottom) over the whole clip.
    ``motion``      "the circle moving left", "the square that stops", "the star that enters
                    from the top", "the red triangle moving up", "the diamond that turns around",
                    "the shape that does not move", "the green one that leaves to the right".
    A motion (or position) expression is kept only if its noun phrase *without* the motion (or
    position) words matches two or more tracks, so ``motion`` means exactly "motion is needed to
    tell the referent apart". :func:`resolve_video` gives every track a careful viewer could take
    an expression to mean; an expression is kept only if that is exactly its track, and only if
    its text parses back (:func:`parse_video_expression`) to the same structure.

    Meaning (on the tracks' drawn centres, over the frames where they are present; ``s`` = the
    clip's shorter side): a step between consecutive present frames is *moving* if >= 1.2% s
    pixels, *still* if <= 0.3% s, otherwise unclear. Each motion phrase is true, false or unclear
    of a track; the phrase refers to the true tracks plus the unclear ones, and to nothing if no
    track is clearly true. "moving left": every step (>= 2) moving within 35 degrees of left /
    false if no step goes noticeably left; "does not move": every step still (>= 2) / false if any
    step moves; "stops": moving >= 2 steps then still >= 2 steps, in view at the end / false if it
    never moves, moves in the last step or has left; "starts moving": the reverse; "turns
    around": moving steps along an axis then >= 2 back / false if no two moving steps point more
    than 90 degrees apart; "enters from the top": absent in the first frame and first seen
    touching the top border only / false if first seen away from the top border or present and
    away from it in the first frame (present *and* touching it in the first frame is unclear);
    "leaves ..." is the same at the end. Position: track i is "clearly left of" j if they share a
    frame and in every shared frame i's centre is left of j's by >= the margin (6% of s, >= 4 px);
    "on the left" names the tracks no other is clearly left of; a single such track refers alone
    only if it is clearly left of every other candidate.

    Each track gets 1-3 expressions (motion preferred, then appearance/position); a track with no
    unique expression stays in the masks as a distractor; a clip with no expression at all is
    redrawn. The whole vocabulary is 59 words; no expression is longer than 9 words. With the
    defaults about half of the expressions are motion, a third position, a sixth appearance.

Determinism, caching, safety
    Each clip has its own random stream keyed by ``(seed, split, index)``; its ``video_id`` is a
    10-hex-digit hash of the same key, so valid clips do not change when the number of training
    clips does. The same parameters give byte-identical files for any number of ``workers``.
    Files are written under temporary names and moved into place; the meta file is removed first
    and written last, so an interrupted run never looks complete, and a later call with the same
    parameters returns the stored summary at once (``force=True`` regenerates). The generator
    refuses to write into a root that holds a ``meta_expressions`` folder it did not write (a
    real Ref-YouTube-VOS copy), and only ever deletes video folders of its own in a root it owns.
    The default 300 + 40 clips of 12 frames at 128x96 take ~8 s of CPU (one process) and ~40 MB
    (8,160 small files, ~58 MB on disk with 4 KB blocks).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from .synthetic import (
    COLOUR_OFFSET,
    COLOURS,
    MARGIN_FRACTION,
    MIN_VISIBLE_FRACTION,
    PLACEMENT_ATTEMPTS,
    ROTATION_JITTER,
    SAME_COLOUR_GAP,
    SHAPELESS_NOUNS,
    SHAPES,
    SIZE_JITTER,
    SIZES,
    Desc,
    SceneObject,
    _atomic_write_bytes,
    _auto_workers,
    _background,
    _boxes_near,
    _check_attributes,
    _desc_from_match,
    _descs_of,
    _grain,
    _make_object,
    _noun_phrase,
    _np_regex,
    _paint,
    _polygon,
    _sample_attributes,
    _save_jpeg,
)

__all__ = [
    "DEFAULT_FRAMES",
    "DEFAULT_NUM_VIDEOS",
    "DEFAULT_SIZE",
    "MOTIONS",
    "MOTION_KINDS",
    "VIDEO_EXPRESSION_TYPES",
    "VIDEO_GENERATOR_VERSION",
    "VIDEO_SPLITS",
    "VIDEO_TEMPLATES",
    "Clip",
    "Track",
    "VideoExpression",
    "build_clip",
    "candidate_video_expressions",
    "generate_synthetic_videos",
    "load_clip",
    "motion_truth",
    "parse_video_expression",
    "realise_video",
    "render_clip",
    "resolve_video",
    "sample_video_expressions",
    "verify_video_referents",
    "video_id_for",
]

VIDEO_GENERATOR_VERSION = "1.0"

# ============================================================================================
# Parameters
# ============================================================================================
VIDEO_SPLITS = ("train", "valid")
VIDEO_EXPRESSION_TYPES = ("appearance", "position", "motion")
DEFAULT_NUM_VIDEOS = {"train": 300, "valid": 40}
DEFAULT_FRAMES = 12
DEFAULT_SIZE = (128, 96)  # (width, height)
MIN_FRAMES, MAX_FRAMES = 6, 200
MIN_SIDE, MAX_SIDE = 48, 2048
MAX_VIDEOS = 1_000_000

FRAME_STEP = 5  # frame names count every 5th original frame, as in Ref-YouTube-VOS
START_OFFSETS = (0, 0, 0, 0, 1, 2)  # in frame steps: some clips start at "00005" or "00010"
OBJECTS_PER_CLIP = (2, 5)  # inclusive
LOOKALIKE_PROBABILITY = 0.45  # a new track copies the shape and colour of an earlier one
LOOKALIKE_SAME_SIZE = 0.75  # ... and its size

MOTION_KINDS = ("still", "move", "stop", "start", "turn", "enter", "leave")
KIND_WEIGHTS = {"still": 0.8, "move": 2.0, "stop": 1.0, "start": 0.7, "turn": 1.0, "enter": 1.0, "leave": 1.0}
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
SIDES = ("left", "right", "top", "bottom")
_OUTWARD = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "top": (0.0, -1.0), "bottom": (0.0, 1.0)}

SPEED_RANGE = (0.025, 0.05)  # pixels per frame, as a fraction of the shorter side
DIRECTION_JITTER = 12.0  # degrees either way from the axis
INSIDE_MARGIN = 2.0  # pixels between an object that stays in view and the border
MIN_PRESENT_FRAMES = 3
FRAME_GRAIN = 3.0  # per-frame background noise (the background is otherwise static)

# meaning of the motion words (see resolve_video)
MOVE_MIN = 0.012  # a step of >= 1.2% of the shorter side is "moving"
STILL_MAX = 0.003  # <= 0.3% is "still"; in between is unclear
MOTION_CONE = 35.0  # degrees: "moving left" needs every step within this of left
TOWARD_COS = 0.5  # a step "goes left" if within 60 degrees of left (for the false test)
BORDER_TOUCH = 1.0  # pixels: a polygon this close to (or beyond) a border touches it

EXPRESSIONS_PER_TRACK = (1, 3)  # inclusive
VIDEO_TYPE_WEIGHTS = {"appearance": 1.0, "position": 1.0, "motion": 2.2}
TYPE_REPEAT_DECAY = 0.3

META_NAME = "synthetic_videos_meta.json"
OWNER_MARKER = ".lavt_synthetic_videos"
META_EXPRESSIONS = "meta_expressions.json"
_STREAM = 0x56494430  # separates the clips' random streams from the image generator's
_VIDEO_ID = re.compile(r"[0-9a-f]{10}")

MOTIONS = (
    "moving_left", "moving_right", "moving_up", "moving_down",
    "still", "stops", "starts", "turns",
    "enters_left", "enters_right", "enters_top", "enters_bottom",
    "leaves_left", "leaves_right", "leaves_top", "leaves_bottom",
)  # fmt: skip

# The whole surface grammar. {t}: the target noun phrase (lavt.data.synthetic._noun_phrase).
VIDEO_TEMPLATES: dict[str, dict[str | None, tuple[str, ...]]] = {
    "appearance": {None: ("the {t}", "{t}")},
    "position": {
        "left": ("the {t} on the left", "the leftmost {t}"),
        "right": ("the {t} on the right", "the rightmost {t}"),
        "top": ("the {t} at the top", "the topmost {t}"),
        "bottom": ("the {t} at the bottom", "the lowest {t}"),
    },
    "motion": {
        "moving_left": ("the {t} moving left", "the {t} that moves left", "the {t} going left"),
        "moving_right": ("the {t} moving right", "the {t} that moves right", "the {t} going right"),
        "moving_up": ("the {t} moving up", "the {t} that moves up", "the {t} going up"),
        "moving_down": ("the {t} moving down", "the {t} that moves down", "the {t} going down"),
        "still": ("the {t} that does not move", "the {t} that never moves", "the {t} that stays in place"),
        "stops": ("the {t} that stops", "the {t} that stops moving", "the {t} that comes to a stop"),
        "starts": ("the {t} that starts moving", "the {t} that starts to move"),
        "turns": ("the {t} that turns around", "the {t} that turns back"),
        "enters_left": ("the {t} that enters from the left", "the {t} coming in from the left"),
        "enters_right": ("the {t} that enters from the right", "the {t} coming in from the right"),
        "enters_top": ("the {t} that enters from the top", "the {t} coming in from the top"),
        "enters_bottom": ("the {t} that enters from the bottom", "the {t} coming in from the bottom"),
        "leaves_left": ("the {t} that leaves to the left", "the {t} that exits on the left"),
        "leaves_right": ("the {t} that leaves to the right", "the {t} that exits on the right"),
        "leaves_top": ("the {t} that leaves at the top", "the {t} that exits at the top"),
        "leaves_bottom": ("the {t} that leaves at the bottom", "the {t} that exits at the bottom"),
    },
}


# ============================================================================================
# Clips
# ============================================================================================
@dataclass
class Track:
    """One object over a clip. ``masks`` are the visible masks (what the PNGs hold)."""

    obj_id: int  # PNG pixel value (index in the clip + 1)
    shape: str
    colour: str
    size: str
    extent: float
    rotation: float
    mirror: bool
    rgb: tuple[int, int, int]
    kind: str  # how it was generated (MOTION_KINDS, or "custom" for build_clip)
    direction: str | None  # left/right/up/down, or the side for enter/leave
    centers: np.ndarray  # float (T, 2): drawn centre (x, y) per frame, also where absent
    polygons: list[list[float]]  # per frame, flat [x1, y1, ...] exactly as rasterised
    full_masks: np.ndarray  # bool (T, H, W): the silhouette clipped to the image
    masks: np.ndarray  # bool (T, H, W): the visible part
    paint_seed: int = 0
    objects: list[SceneObject] = field(default_factory=list, repr=False)  # per frame (painting)

    @property
    def attributes(self) -> tuple[str, str, str]:
        return self.shape, self.colour, self.size

    @property
    def present(self) -> np.ndarray:
        """bool (T,): the object is visible in the frame."""
        return self.masks.any(axis=(1, 2))


@dataclass
class Clip:
    """A rendered clip: tracks in drawing order, frames (T, H, W, 3) uint8 and frame names."""

    width: int
    height: int
    frame_names: list[str]
    tracks: list[Track]
    images: np.ndarray
    background: str = "gradient"

    def __post_init__(self) -> None:
        self._match_cache: dict[tuple, list[int]] = {}
        self._resolve_cache: dict[tuple, tuple[int, ...]] = {}
        self._truth_cache: dict[tuple[int, str], bool | None] = {}
        self._candidates: list[dict[str, list[VideoExpression]]] | None = None
        short = min(self.width, self.height)
        self._margin = max(4.0, MARGIN_FRACTION * short)
        self._move_min = MOVE_MIN * short
        self._still_max = STILL_MAX * short

    @property
    def num_frames(self) -> int:
        return len(self.frame_names)

    @property
    def margin(self) -> float:
        return self._margin

    @property
    def id_maps(self) -> np.ndarray:
        """uint8 (T, H, W): the annotation PNGs' index arrays (0 = background, k + 1 = track k)."""
        out = np.zeros((self.num_frames, self.height, self.width), dtype=np.uint8)
        for k, tr in enumerate(self.tracks):
            out[tr.masks] = k + 1
        return out

    def match(self, desc: Desc) -> list[int]:
        """Indices of the tracks whose attributes agree with every attribute ``desc`` names."""
        key = desc.key
        if key not in self._match_cache:
            self._match_cache[key] = [
                i
                for i, o in enumerate(self.tracks)
                if (desc.shape is None or o.shape == desc.shape)
                and (desc.colour is None or o.colour == desc.colour)
                and (desc.size is None or o.size == desc.size)
            ]
        return self._match_cache[key]


def _offsets(shape: str, extent: float, rotation: float, mirror: bool) -> tuple[np.ndarray, np.ndarray]:
    """(min, max) of the polygon's (x, y) relative to its centre."""
    pts = np.asarray(_polygon(shape, (0.0, 0.0), extent, rotation, mirror)).reshape(-1, 2)
    return pts.min(0), pts.max(0)


def _heading(axis: tuple[float, float], jitter_deg: float) -> np.ndarray:
    a = math.atan2(axis[1], axis[0]) + math.radians(jitter_deg)
    return np.array([math.cos(a), math.sin(a)])


def _trajectory(
    rng: np.random.Generator,
    kind: str,
    direction: str,
    lo_off: np.ndarray,
    hi_off: np.ndarray,
    width: int,
    height: int,
    frames: int,
) -> np.ndarray | None:
    """Centres (T, 2) for one motion kind, or None if it does not fit this object and image."""
    T = frames
    short = min(width, height)
    v = rng.uniform(*SPEED_RANGE) * short
    jitter = rng.uniform(-DIRECTION_JITTER, DIRECTION_JITTER)
    dims = np.array([width, height], dtype=float)
    lo = INSIDE_MARGIN - lo_off  # allowed centre range for an object fully in view
    hi = dims - INSIDE_MARGIN - hi_off
    t = np.arange(T, dtype=float)
    if kind in ("enter", "leave"):
        side = direction
        out = np.asarray(_OUTWARD[side])
        u = _heading(tuple(-out), jitter)  # inward heading
        step_in = v * float(u @ -out)
        phi_lo, phi_hi = 1.5 / step_in, 1.0 - 0.5 / step_in  # visible at f, fully out at f - 1
        if phi_lo > phi_hi:
            return None
        depth = rng.uniform(phi_lo, phi_hi) * step_in  # of the leading edge in the first present frame
        axis = 0 if side in ("left", "right") else 1
        # first present frame f in [1, T - 3], early enough that at least half of the object is in
        # view at the end (a sliver at the border would not show where it goes)
        need = (0.5 * (hi_off[axis] - lo_off[axis]) - depth) / step_in
        f_max = min(T - 3, int(math.floor(T - 1 - max(need, 0.0))))
        if f_max < 1:
            return None
        f = int(rng.integers(1, f_max + 1))
        perp = 1 - axis
        c_f = np.zeros(2)
        if side == "left":
            c_f[0] = depth - hi_off[0]
        elif side == "right":
            c_f[0] = width - depth - lo_off[0]
        elif side == "top":
            c_f[1] = depth - hi_off[1]
        else:
            c_f[1] = height - depth - lo_off[1]
        later = (t[f:] - f) * v * u[perp]
        p_lo, p_hi = lo[perp] - later.min(), hi[perp] - later.max()
        if p_lo > p_hi:
            return None
        c_f[perp] = rng.uniform(p_lo, p_hi)
        centers = c_f[None, :] + (t - f)[:, None] * v * u[None, :]
        # at the end it may still be cut off by the entry side, but it must not reach the far side
        end = centers[-1, axis]
        if (end > hi[axis]) if side in ("left", "top") else (end < lo[axis]):
            return None
        if kind == "leave":
            centers = centers[::-1].copy()
        return centers
    u = _heading(DIRECTIONS[direction], jitter)
    if kind == "still":
        s = np.zeros(T)
    elif kind == "move":
        s = t
    else:
        k = int(rng.integers(2, T - 2))  # in [2, T - 3]: >= 2 steps on both sides of the change
        if kind == "stop":
            s = np.minimum(t, k)
        elif kind == "start":
            s = np.maximum(t - k, 0.0)
        elif kind == "turn":
            s = np.where(t <= k, t, 2 * k - t)
        else:
            raise ValueError(f"unknown motion kind {kind!r}; kinds: {', '.join(MOTION_KINDS)}")
    path = s[:, None] * v * u[None, :]
    c_lo, c_hi = lo - path.min(0), hi - path.max(0)
    if np.any(c_lo > c_hi):
        return None
    c0 = np.array([rng.uniform(c_lo[0], c_hi[0]), rng.uniform(c_lo[1], c_hi[1])])
    return c0[None, :] + path


def _make_track(
    obj_id: int,
    attrs: tuple[str, str, str],
    extent: float,
    rotation: float,
    mirror: bool,
    offset: Sequence[int],
    centers: np.ndarray,
    kind: str,
    direction: str | None,
    width: int,
    height: int,
) -> Track:
    objects = [
        _make_object(*attrs, (float(c[0]), float(c[1])), extent, rotation, mirror, offset, width, height)
        for c in centers
    ]
    full = np.stack([o.full_mask for o in objects])
    return Track(
        obj_id=obj_id, shape=attrs[0], colour=attrs[1], size=attrs[2], extent=float(extent),
        rotation=float(rotation), mirror=bool(mirror), rgb=objects[0].rgb, kind=kind, direction=direction,
        centers=np.asarray(centers, dtype=float), polygons=[o.polygon for o in objects], full_masks=full,
        masks=full.copy(), objects=objects,
    )


def _fits(tracks: list[Track], new: Track) -> bool:
    """Would every earlier track stay visible enough, in every frame, with ``new`` on top?"""
    new_in = new.full_masks.any(axis=(1, 2))
    if int(new_in.sum()) < MIN_PRESENT_FRAMES:
        return False
    for t in np.nonzero(new_in)[0]:
        nf = new.full_masks[t]
        for old in tracks:
            area = int(old.full_masks[t].sum())
            if area == 0:
                continue
            a, b = old.objects[t], new.objects[t]
            if old.colour == new.colour and _boxes_near(a, b, SAME_COLOUR_GAP):
                return False
            if not _boxes_near(a, b, 0):
                continue
            if int(np.count_nonzero(old.masks[t] & ~nf)) < MIN_VISIBLE_FRACTION * area:
                return False
    for old in tracks:  # accepted: update the running visible masks
        old.masks &= ~new.full_masks
    return True


def _sample_track_attributes(rng: np.random.Generator, tracks: list[Track]) -> tuple[tuple[str, str, str], int | None]:
    """(shape, colour, size) and the index of the track it is a look-alike of (or None)."""
    if tracks and rng.random() < LOOKALIKE_PROBABILITY:
        src = int(rng.integers(len(tracks)))
        s = tracks[src]
        size = s.size if rng.random() < LOOKALIKE_SAME_SIZE else ("big" if s.size == "small" else "small")
        return (s.shape, s.colour, size), src
    return _sample_attributes(rng, [t.attributes for t in tracks]), None


def _sample_motion(rng: np.random.Generator, avoid: set[tuple[str, str | None]]) -> tuple[str, str]:
    """A motion kind and direction (or side), other than those in ``avoid`` (any "still" counts
    as the same motion) if that is possible in 20 draws."""
    kinds = list(MOTION_KINDS)
    p = np.array([KIND_WEIGHTS[k] for k in kinds])
    p = p / p.sum()
    for _ in range(20):
        kind = kinds[int(rng.choice(len(kinds), p=p))]
        names = SIDES if kind in ("enter", "leave") else tuple(DIRECTIONS)
        direction = names[int(rng.integers(len(names)))]
        if (kind, direction) not in avoid and not (kind == "still" and any(k == "still" for k, _ in avoid)):
            return kind, direction
    return kind, direction


def _compose_frames(
    width: int, height: int, tracks: list[Track], background: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Visible masks (later tracks on top) and the painted frames (T, H, W, 3) uint8."""
    T = tracks[0].full_masks.shape[0] if tracks else 0
    covered = np.zeros((T, height, width), dtype=bool)
    for tr in reversed(tracks):
        tr.masks = tr.full_masks & ~covered
        covered |= tr.full_masks
    images = np.empty((T, height, width, 3), dtype=np.uint8)
    for t in range(T):
        frame = background + _grain(rng, background.shape, FRAME_GRAIN)
        img = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
        for tr in tracks:
            obj = tr.objects[t]
            obj.mask = tr.masks[t]
            # the same stream every frame: the shading (direction, strength) stays with the object
            _paint(img, obj, np.random.default_rng(tr.paint_seed))
        images[t] = img
    return images


def _frame_names(frames: int, start: int) -> list[str]:
    return [f"{FRAME_STEP * (start + t):05d}" for t in range(frames)]


def render_clip(
    rng: np.random.Generator,
    image_size: tuple[int, int] = DEFAULT_SIZE,
    frames: int = DEFAULT_FRAMES,
    num_objects: int | tuple[int, int] = OBJECTS_PER_CLIP,
) -> Clip:
    """Draw one random clip (tracks in drawing order, frames, visible masks, frame names).

    ``image_size`` is (width, height). If the tracks cannot be placed under the occlusion rules
    in every frame, the clip is drawn again from the same stream (deterministic).
    """
    width, height = int(image_size[0]), int(image_size[1])
    T = int(frames)
    if T < MIN_FRAMES:
        raise ValueError(f"frames must be >= {MIN_FRAMES}, got {frames!r}")
    lo, hi = (num_objects, num_objects) if isinstance(num_objects, int) else num_objects
    if not 1 <= lo <= hi:
        raise ValueError(f"num_objects must be a count >= 1 or a range lo <= hi, got {num_objects!r}")
    n = int(rng.integers(lo, hi + 1))
    start = START_OFFSETS[int(rng.integers(len(START_OFFSETS)))]
    short = min(width, height)
    for _clip_attempt in range(100):
        tracks: list[Track] = []
        for _ in range(n):
            attrs, _src = _sample_track_attributes(rng, tracks)
            # look-alikes (same shape and colour) move differently
            avoid = {(t.kind, t.direction) for t in tracks if t.attributes[:2] == attrs[:2]}
            placed = None
            for _attempt in range(PLACEMENT_ATTEMPTS):
                kind, direction = _sample_motion(rng, avoid)
                extent = SIZES[attrs[2]] * short * rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER)
                rotation = rng.uniform(-ROTATION_JITTER, ROTATION_JITTER)
                mirror = bool(rng.random() < 0.5)
                offset = rng.integers(-COLOUR_OFFSET, COLOUR_OFFSET + 1, size=3)
                lo_off, hi_off = _offsets(attrs[0], extent, rotation, mirror)
                if np.any(hi_off - lo_off + 2 * INSIDE_MARGIN >= np.array([width, height])):
                    raise ValueError(f"image size {image_size} is too small for the object sizes")
                centers = _trajectory(rng, kind, direction, lo_off, hi_off, width, height, T)
                if centers is None:
                    continue
                cand = _make_track(
                    len(tracks) + 1, attrs, extent, rotation, mirror, offset, centers, kind, direction, width, height
                )
                if _fits(tracks, cand):
                    placed = cand
                    break
            if placed is None:
                break
            tracks.append(placed)
        if len(tracks) == n:
            break
    else:
        raise ValueError(f"cannot place {n} moving objects in a {width}x{height} clip under the occlusion rules")
    for tr in tracks:
        tr.paint_seed = int(rng.integers(2**63))
    background, style = _background(rng, width, height)
    images = _compose_frames(width, height, tracks, background, rng)
    return Clip(width, height, _frame_names(T, start), tracks, images, style)


def build_clip(
    specs: Sequence[Mapping[str, Any]],
    image_size: tuple[int, int] = DEFAULT_SIZE,
    rng: np.random.Generator | None = None,
    start: int = 0,
) -> Clip:
    """A clip from explicit track specs, for tests and hand-made examples.

    Each spec: ``shape``, ``colour``, ``size`` and ``centers`` (one (x, y) per frame; every
    spec the same length); optional ``extent`` (pixels), ``rotation`` (degrees). No placement
    rules are checked: overlap and leaving the image are the caller's business.
    """
    if not specs:
        raise ValueError("build_clip needs at least one track spec")
    rng = rng if rng is not None else np.random.default_rng(0)
    width, height = int(image_size[0]), int(image_size[1])
    T = len(specs[0]["centers"])
    tracks = []
    for k, s in enumerate(specs):
        _check_attributes(s["shape"], s["colour"], s["size"])
        centers = np.asarray(s["centers"], dtype=float)
        if centers.shape != (T, 2):
            raise ValueError(f"track {k}: centers must be {T} (x, y) pairs, got shape {centers.shape}")
        extent = float(s.get("extent", SIZES[s["size"]] * min(width, height)))
        tr = _make_track(
            k + 1, (s["shape"], s["colour"], s["size"]), extent, float(s.get("rotation", 0.0)),
            bool(s.get("mirror", False)), (0, 0, 0), centers, "custom", None, width, height,
        )
        tr.paint_seed = k
        tracks.append(tr)
    background, style = _background(rng, width, height)
    images = _compose_frames(width, height, tracks, background, rng)
    return Clip(width, height, _frame_names(T, start), tracks, images, style)


# ============================================================================================
# Expressions: structures, grammar, meaning
# ============================================================================================
@dataclass(frozen=True)
class VideoExpression:
    """One referring expression about a clip.

    ``type`` is one of :data:`VIDEO_EXPRESSION_TYPES`; ``target`` the noun phrase; ``where`` a
    side for position expressions; ``motion`` one of :data:`MOTIONS` for motion expressions;
    ``variant`` picks the surface template (it does not change the meaning).
    """

    type: str
    target: Desc
    where: str | None = None
    motion: str | None = None
    variant: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def appearance(self) -> "VideoExpression":
        """The same noun phrase without its position or motion words."""
        return VideoExpression("appearance", self.target)


def _template_key(expr: VideoExpression) -> str | None:
    return {"appearance": None, "position": expr.where, "motion": expr.motion}[expr.type]


def realise_video(expr: VideoExpression) -> str:
    """The English text of an expression structure (lower case, single spaces)."""
    if expr.type not in VIDEO_TEMPLATES:
        raise ValueError(f"unknown expression type {expr.type!r}; types: {', '.join(VIDEO_EXPRESSION_TYPES)}")
    key = _template_key(expr)
    if key not in VIDEO_TEMPLATES[expr.type]:
        raise ValueError(f"unknown {expr.type} term {key!r}")
    templates = VIDEO_TEMPLATES[expr.type][key]
    return templates[expr.variant % len(templates)].format(t=_noun_phrase(expr.target))


def _compile_grammar() -> list[tuple[re.Pattern[str], str, str | None, int]]:
    compiled = []
    for etype, by_key in VIDEO_TEMPLATES.items():
        for key, templates in by_key.items():
            for variant, template in enumerate(templates):
                pattern = re.escape(template).replace(re.escape("{t}"), _np_regex("t_"))
                compiled.append((re.compile(pattern), etype, key, variant))
    return compiled


_GRAMMAR = _compile_grammar()


def parse_video_expression(text: str) -> VideoExpression:
    """Invert :func:`realise_video`. Raises ValueError unless the text has exactly one parse."""
    norm = " ".join(text.lower().split())
    parses = []
    for pattern, etype, key, variant in _GRAMMAR:
        m = pattern.fullmatch(norm)
        if m is None:
            continue
        target = _desc_from_match(m, "t_")
        if target is None:
            continue
        fields: dict[str, Any] = {"type": etype, "target": target, "variant": variant}
        if etype == "position":
            fields["where"] = key
        elif etype == "motion":
            fields["motion"] = key
        parses.append(VideoExpression(**fields))
    if len(parses) != 1:
        raise ValueError(
            f"expression {text!r} has {'no parse' if not parses else f'{len(parses)} parses'} in the video grammar"
        )
    return parses[0]


def _steps(clip: Clip, tr: Track) -> list[tuple[np.ndarray, float, str]]:
    """(displacement, length, label) for each pair of consecutive frames where ``tr`` is present;
    label "M" moving, "S" still, "?" unclear."""
    pres = tr.present
    out = []
    for t in range(clip.num_frames - 1):
        if pres[t] and pres[t + 1]:
            d = tr.centers[t + 1] - tr.centers[t]
            n = float(np.hypot(d[0], d[1]))
            label = "M" if n >= clip._move_min else ("S" if n <= clip._still_max else "?")
            out.append((d, n, label))
    return out


def _cos(d: np.ndarray, n: float, u: Sequence[float]) -> float:
    return float(d[0] * u[0] + d[1] * u[1]) / n if n > 0 else 0.0


def _touched(clip: Clip, tr: Track, t: int) -> set[str]:
    """Borders the object's polygon reaches (or crosses) in frame ``t``."""
    pts = np.asarray(tr.polygons[t]).reshape(-1, 2)
    (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
    out = set()
    if x0 < BORDER_TOUCH:
        out.add("left")
    if x1 > clip.width - BORDER_TOUCH:
        out.add("right")
    if y0 < BORDER_TOUCH:
        out.add("top")
    if y1 > clip.height - BORDER_TOUCH:
        out.add("bottom")
    return out


def _one_way(steps: Sequence[tuple[np.ndarray, float, str]], u: Sequence[float], cos_limit: float) -> bool:
    return all(label == "M" and _cos(d, n, u) >= cos_limit for d, n, label in steps)


def motion_truth(clip: Clip, index: int, motion: str) -> bool | None:
    """Is motion phrase ``motion`` true (True), false (False) or unclear (None) of track ``index``?"""
    key = (index, motion)
    if key in clip._truth_cache:
        return clip._truth_cache[key]
    tr = clip.tracks[index]
    steps = _steps(clip, tr)
    labels = "".join(s[2] for s in steps)
    pres = tr.present
    contiguous = len(steps) == int(pres.sum()) - 1
    cone = math.cos(math.radians(MOTION_CONE))
    out: bool | None
    if motion.startswith("moving_"):
        u = DIRECTIONS[motion.split("_", 1)[1]]
        if len(steps) >= 2 and _one_way(steps, u, cone):
            out = True
        elif not any(n > clip._still_max and _cos(d, n, u) >= TOWARD_COS for d, n, _ in steps):
            out = False
        else:
            out = None
    elif motion == "still":
        out = False if "M" in labels else (True if len(steps) >= 2 and set(labels) == {"S"} else None)
    elif motion == "stops":
        if "M" not in labels or labels.endswith("M") or not pres[-1]:
            out = False
        elif contiguous and re.fullmatch(r"M{2,}S{2,}", labels):
            out = True
        else:
            out = None
    elif motion == "starts":
        if "M" not in labels or labels.startswith("M") or not pres[0]:
            out = False
        elif contiguous and re.fullmatch(r"S{2,}M{2,}", labels):
            out = True
        else:
            out = None
    elif motion == "turns":
        out = _turns(steps, cone, clip._still_max)
    elif motion.startswith(("enters_", "leaves_")):
        verb, side = motion.split("_", 1)
        if not pres.any():
            out = False
        else:
            frames = np.nonzero(pres)[0]
            t = int(frames[0] if verb == "enters" else frames[-1])
            edge = 0 if verb == "enters" else clip.num_frames - 1
            touched = _touched(clip, tr, t)
            if t == edge:  # in view at the start (end): it did not enter (leave) unless cut off there
                out = None if side in touched else False
            else:
                out = False if side not in touched else (True if touched == {side} else None)
    else:
        raise ValueError(f"unknown motion {motion!r}; motions: {', '.join(MOTIONS)}")
    clip._truth_cache[key] = out
    return out


def _turns(steps: list[tuple[np.ndarray, float, str]], cone: float, still_max: float) -> bool | None:
    n = len(steps)
    for u in DIRECTIONS.values():
        back = (-u[0], -u[1])
        for k in range(2, n - 1):
            if _one_way(steps[:k], u, cone):
                # the reversal may take one odd step (a turn between two frames)
                if _one_way(steps[k:], back, cone) and n - k >= 2:
                    return True
                if n - k - 1 >= 2 and _one_way(steps[k + 1 :], back, cone):
                    return True
    moving = [(d, m) for d, m, _ in steps if m > still_max]
    for a in range(len(moving)):
        for b in range(a + 1, len(moving)):
            if float(moving[a][0] @ moving[b][0]) < 0:
                return None
    return False


def _coordinate(tr: Track, side: str) -> np.ndarray:
    """Per-frame position along the axis counted from ``side`` (smaller = nearer that side)."""
    x, y = tr.centers[:, 0], tr.centers[:, 1]
    return {"left": x, "right": -x, "top": y, "bottom": -y}[side]


def _position(clip: Clip, cand: tuple[int, ...], side: str) -> tuple[int, ...]:
    if side not in SIDES:
        raise ValueError(f"unknown position {side!r}; positions: {', '.join(SIDES)}")
    key = ("position", cand, side)
    hit = clip._resolve_cache.get(key)
    if hit is not None:
        return hit
    m = clip.margin
    v = {i: _coordinate(clip.tracks[i], side) for i in cand}
    pres = {i: clip.tracks[i].present for i in cand}

    def before(i: int, j: int) -> bool:
        both = pres[i] & pres[j]
        return bool(both.any()) and bool(np.all(v[i][both] < v[j][both] - m))

    first = [i for i in cand if not any(before(j, i) for j in cand if j != i)]
    if len(first) == 1:
        i = first[0]
        out = sorted([i] + [j for j in cand if j != i and not before(i, j)])
    elif not first:  # a cycle through frames the tracks do not share: nothing is clear
        out = list(cand)
    else:
        out = first
    hit = clip._resolve_cache[key] = tuple(out)
    return hit


def _motion(clip: Clip, cand: tuple[int, ...], motion: str) -> tuple[int, ...]:
    truths = {i: motion_truth(clip, i, motion) for i in cand}
    if not any(t is True for t in truths.values()):
        return ()
    return tuple(i for i in cand if truths[i] is not False)


def resolve_video(expr: VideoExpression, clip: Clip) -> list[int]:
    """Indices (sorted, 0-based: obj_id - 1) of every track a careful viewer could take ``expr``
    to refer to. An expression is usable iff this returns exactly one index."""
    if expr.type not in VIDEO_EXPRESSION_TYPES:
        raise ValueError(f"unknown expression type {expr.type!r}; types: {', '.join(VIDEO_EXPRESSION_TYPES)}")
    cand = tuple(clip.match(expr.target))
    if expr.type == "appearance":
        return list(cand)
    if expr.type == "position":
        return list(_position(clip, cand, expr.where or ""))
    if expr.motion not in MOTIONS:
        raise ValueError(f"unknown motion {expr.motion!r}; motions: {', '.join(MOTIONS)}")
    return list(_motion(clip, cand, expr.motion))


def candidate_video_expressions(clip: Clip, target: int) -> dict[str, list[VideoExpression]]:
    """Every expression (of the generator's policy) that refers to track ``target`` alone, by type.

    Appearance: a noun phrase with >= 1 attribute that matches the track alone. Position and
    motion: only on noun phrases that match >= 2 tracks (the extra words are needed).
    Structures come with ``variant=0`` and no noun choice.
    """
    if clip._candidates is None:
        clip._candidates = _all_candidates(clip)
    return {t: list(v) for t, v in clip._candidates[target].items()}


def _all_candidates(clip: Clip) -> list[dict[str, list[VideoExpression]]]:
    out: list[dict[str, list[VideoExpression]]] = [{t: [] for t in VIDEO_EXPRESSION_TYPES} for _ in clip.tracks]
    groups: dict[tuple[int, ...], list[Desc]] = {}
    seen: set[tuple] = set()
    for tr in clip.tracks:
        for d in _descs_of(tr):  # type: ignore[arg-type]  (needs only shape/colour/size)
            if d.key not in seen:
                seen.add(d.key)
                groups.setdefault(tuple(clip.match(d)), []).append(d)
    for cand, ds in groups.items():
        if len(cand) == 1:
            out[cand[0]]["appearance"].extend(VideoExpression("appearance", d) for d in ds if d.n_attributes)
            continue
        for side in SIDES:
            got = _position(clip, cand, side)
            if len(got) == 1:
                out[got[0]]["position"].extend(VideoExpression("position", d, where=side) for d in ds)
        for motion in MOTIONS:
            got = _motion(clip, cand, motion)
            if len(got) == 1:
                out[got[0]]["motion"].extend(VideoExpression("motion", d, motion=motion) for d in ds)
    return out


def _dress(expr: VideoExpression, rng: np.random.Generator) -> VideoExpression:
    """Pick the surface form: a template variant and, for a shapeless phrase, a noun."""
    d = expr.target
    if d.shape is None:
        nouns = SHAPELESS_NOUNS if (d.colour or d.size) else SHAPELESS_NOUNS[:2]
        d = replace(d, noun=nouns[int(rng.integers(len(nouns)))])
    n_variants = len(VIDEO_TEMPLATES[expr.type][_template_key(expr)])
    return replace(expr, target=d, variant=int(rng.integers(n_variants)))


def sample_video_expressions(clip: Clip, target: int, rng: np.random.Generator) -> list[tuple[VideoExpression, str]]:
    """1-3 distinct (structure, text) pairs for track ``target``, motion preferred; [] if none."""
    pools = candidate_video_expressions(clip, target)
    if not any(pools.values()):
        return []
    want = int(rng.integers(EXPRESSIONS_PER_TRACK[0], EXPRESSIONS_PER_TRACK[1] + 1))
    weights = dict(VIDEO_TYPE_WEIGHTS)
    chosen: list[tuple[VideoExpression, str]] = []
    texts: set[str] = set()
    while len(chosen) < want:
        types = [t for t in VIDEO_EXPRESSION_TYPES if pools[t]]
        if not types:
            break
        p = np.array([weights[t] for t in types])
        etype = types[int(rng.choice(len(types), p=p / p.sum()))]
        pool = pools[etype]
        w = np.array([2.0 if e.target.shape is not None else 1.0 for e in pool])  # prefer naming the shape
        expr = _dress(pool.pop(int(rng.choice(len(pool), p=w / w.sum()))), rng)
        weights[etype] *= TYPE_REPEAT_DECAY
        text = realise_video(expr)
        if text in texts:
            continue
        if parse_video_expression(text) != expr or resolve_video(expr, clip) != [target]:  # pragma: no cover
            raise AssertionError(f"internal grammar error on {text!r}")
        texts.add(text)
        chosen.append((expr, text))
    return chosen


# ============================================================================================
# The dataset writer
# ============================================================================================
def video_id_for(seed: int, split: str, index: int) -> str:
    """The 10-hex-digit video id of clip ``index`` of ``split`` (like ``003234408d``)."""
    return hashlib.sha1(f"lavt-synthetic-video/{int(seed)}/{split}/{int(index)}".encode()).hexdigest()[:10]


def _clip_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), _STREAM, VIDEO_SPLITS.index(split), int(index)]))


def _clip_for(seed: int, split: str, index: int, size: Sequence[int], frames: int) -> tuple[Clip, np.random.Generator]:
    """The clip of (seed, split, index) and its stream, positioned for expression sampling."""
    rng = _clip_rng(seed, split, index)
    for _ in range(100):
        clip = render_clip(rng, (int(size[0]), int(size[1])), frames, OBJECTS_PER_CLIP)
        if any(any(candidate_video_expressions(clip, k).values()) for k in range(len(clip.tracks))):
            return clip, rng
    raise RuntimeError(f"no clip with a referable object for ({seed}, {split}, {index})")  # pragma: no cover


# VOC/DAVIS-style palette: index i -> the colour from the bits of i (0 black, 1 dark red, ...)
def _make_palette() -> list[int]:
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


PALETTE = _make_palette()


def _save_png(path: Path, ids: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    im = Image.frombytes("P", (ids.shape[1], ids.shape[0]), np.ascontiguousarray(ids, dtype=np.uint8).tobytes())
    im.putpalette(PALETTE)
    im.save(tmp, format="PNG")
    os.replace(tmp, path)


def _clear_extras(folder: Path, keep: set[str]) -> None:
    for p in folder.iterdir():
        if p.name not in keep and p.is_file():
            p.unlink(missing_ok=True)


def _generate_video(job: tuple) -> dict[str, Any]:
    """Render one clip, write its frames and annotations, and return its meta entries.
    Top-level so that a process pool can run it."""
    seed, split, index, width, height, frames, video_id, root = job
    clip, rng = _clip_for(seed, split, index, (width, height), frames)
    expressions: dict[str, dict[str, str]] = {}
    for k in range(len(clip.tracks)):
        for expr, text in sample_video_expressions(clip, k, rng):
            expressions[str(len(expressions))] = {"exp": text, "obj_id": str(k + 1), "type": expr.type}
    img_dir = Path(root) / split / "JPEGImages" / video_id
    ann_dir = Path(root) / split / "Annotations" / video_id
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    ids = clip.id_maps
    for t, name in enumerate(clip.frame_names):
        _save_jpeg(img_dir / f"{name}.jpg", clip.images[t])
        _save_png(ann_dir / f"{name}.png", ids[t])
    _clear_extras(img_dir, {f"{n}.jpg" for n in clip.frame_names})
    _clear_extras(ann_dir, {f"{n}.png" for n in clip.frame_names})
    objects = {
        str(k + 1): {"category": tr.shape, "frames": [n for n, p in zip(clip.frame_names, tr.present) if p]}
        for k, tr in enumerate(clip.tracks)
    }
    attrs = [tr.attributes[:2] for tr in clip.tracks]
    return {
        "video_id": video_id,
        "split": split,
        "meta": {"expressions": expressions, "frames": list(clip.frame_names)},
        "objects": objects,
        "absent_objects": sum(1 for tr in clip.tracks if not tr.present.all()),
        "lookalike": len(set(attrs)) < len(attrs),
    }


def _params(seed: int, num_videos: Mapping[str, int], frames: int, size: Sequence[int]) -> dict[str, Any]:
    return {
        "seed": int(seed),
        "num_videos": {s: int(num_videos.get(s, 0)) for s in VIDEO_SPLITS},
        "frames": int(frames),
        "size": [int(size[0]), int(size[1])],
        "generator_version": VIDEO_GENERATOR_VERSION,
    }


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _validate(seed: Any, num_videos: Any, frames: Any, size: Any, workers: Any) -> None:
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(num_videos, Mapping):
        raise ValueError(f"num_videos must be a mapping such as {{'train': 100, 'valid': 20}}, got {num_videos!r}")
    unknown = [s for s in num_videos if s not in VIDEO_SPLITS]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown} in num_videos; splits: {', '.join(VIDEO_SPLITS)}")
    if not all(_is_int(v) and v >= 0 for v in num_videos.values()) or sum(num_videos.values()) < 1:
        raise ValueError(
            f"num_videos must hold non-negative integers and ask for at least one video, got {dict(num_videos)}"
        )
    if sum(num_videos.values()) > MAX_VIDEOS:
        raise ValueError(f"at most {MAX_VIDEOS} synthetic videos, got {sum(num_videos.values())}")
    if not _is_int(frames) or not MIN_FRAMES <= frames <= MAX_FRAMES:
        raise ValueError(f"frames must be an integer in [{MIN_FRAMES}, {MAX_FRAMES}], got {frames!r}")
    if (
        not isinstance(size, Sequence) or isinstance(size, str) or len(size) != 2
        or not all(_is_int(v) and MIN_SIDE <= v <= MAX_SIDE for v in size)
    ):
        raise ValueError(f"size must be (width, height) with integers in [{MIN_SIDE}, {MAX_SIDE}], got {size!r}")
    if workers is not None and (not _is_int(workers) or workers < 1):
        raise ValueError(f"workers must be None or an integer >= 1, got {workers!r}")


def _expected_files_exist(root: Path, meta: dict) -> bool:
    params = meta["params"]
    for split in VIDEO_SPLITS + ("test",):
        if not (root / "meta_expressions" / split / META_EXPRESSIONS).is_file():
            return False
    for split in VIDEO_SPLITS:
        if not (root / split / "meta.json").is_file():
            return False
        for vid, names in meta.get("frames", {}).get(split, {}).items():
            for name in names:
                if not (root / split / "JPEGImages" / vid / f"{name}.jpg").is_file():
                    return False
                if not (root / split / "Annotations" / vid / f"{name}.png").is_file():
                    return False
        if len(meta.get("frames", {}).get(split, {})) != params["num_videos"][split]:
            return False
    return True


def _read_meta(root: Path) -> dict | None:
    try:
        return json.loads((root / META_NAME).read_text())
    except (OSError, ValueError):
        return None


def generate_synthetic_videos(
    root: str | os.PathLike[str],
    seed: int = 0,
    num_videos: Mapping[str, int] | None = None,
    frames: int = DEFAULT_FRAMES,
    size: tuple[int, int] = DEFAULT_SIZE,
    force: bool = False,
    progress: bool = True,
    workers: int | None = None,
) -> dict[str, Any]:
    """Write synthetic referring videos under ``root`` in the Ref-YouTube-VOS layout; return a summary.

    ``num_videos``: clips per split (default train 300, valid 40; a missing split means 0).
    ``frames``: frames per clip (6-200). ``size``: (width, height). Same parameters -> same
    bytes. If ``<root>/synthetic_videos_meta.json`` records the same parameters (and the files
    exist) nothing is written and the stored summary is returned with ``cached=True``;
    ``force=True`` regenerates. ``workers``: processes that render clips (default up to 2 for
    big runs; the output does not depend on it). ``progress`` shows a tqdm bar.
    The summary holds per split the counts of videos, objects, objects absent from some
    frames, clips with look-alikes, expressions and expressions per type.
    """
    num_videos = DEFAULT_NUM_VIDEOS if num_videos is None else num_videos
    _validate(seed, num_videos, frames, size, workers)
    num_videos = dict(num_videos)
    root = Path(os.path.expanduser(os.fspath(root)))
    params = _params(seed, num_videos, frames, size)
    old_meta = _read_meta(root)
    if not force and old_meta and old_meta.get("params") == params and _expected_files_exist(root, old_meta):
        return {**old_meta["summary"], "root": str(root), "cached": True, "seconds": 0.0}
    marker = root / OWNER_MARKER
    if (root / "meta_expressions").exists() and not marker.is_file():
        raise ValueError(
            f"{root} holds a Ref-YouTube-VOS dataset that this generator did not write; refusing to overwrite it"
        )

    from ..runtime.progress import progress_bar

    start = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    marker.write_text("written by lavt.data.synthetic_video; its video folders may be replaced\n")
    (root / META_NAME).unlink(missing_ok=True)  # from here on the dataset is not complete
    width, height = int(size[0]), int(size[1])
    jobs = []
    ids_seen: set[str] = set()
    for split in VIDEO_SPLITS:
        for index in range(params["num_videos"][split]):
            vid = video_id_for(seed, split, index)
            if vid in ids_seen:  # pragma: no cover - a 40-bit hash collision
                raise RuntimeError(f"video id collision on {vid}")
            ids_seen.add(vid)
            jobs.append((int(seed), split, index, width, height, int(frames), vid, str(root)))

    results_by_split: dict[str, list[dict]] = {s: [] for s in VIDEO_SPLITS}
    bar = progress_bar(None, progress, total=len(jobs), desc="synthetic videos", unit="clip")
    workers = _auto_workers(len(jobs) * int(frames)) if workers is None else int(workers)
    pool = None
    if workers == 1:
        results = map(_generate_video, jobs)
    else:  # every clip has its own random stream, so the result does not depend on `workers`
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))
        results = pool.map(_generate_video, jobs, chunksize=4)
    try:
        for res in results:
            results_by_split[res["split"]].append(res)
            bar.update(1)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)

    for split in VIDEO_SPLITS:
        res = results_by_split[split]
        meta_exp = {"videos": {r["video_id"]: r["meta"] for r in res}}
        (root / "meta_expressions" / split).mkdir(parents=True, exist_ok=True)
        _atomic_write_bytes(root / "meta_expressions" / split / META_EXPRESSIONS, json.dumps(meta_exp).encode())
        (root / split).mkdir(parents=True, exist_ok=True)
        objects = {"videos": {r["video_id"]: {"objects": r["objects"]} for r in res}}
        _atomic_write_bytes(root / split / "meta.json", json.dumps(objects).encode())
        keep = {r["video_id"] for r in res}
        for sub in ("JPEGImages", "Annotations"):  # clips of an earlier, larger generation
            folder = root / split / sub
            if folder.is_dir():
                for p in folder.iterdir():
                    if p.is_dir() and _VIDEO_ID.fullmatch(p.name) and p.name not in keep:
                        shutil.rmtree(p)
    (root / "meta_expressions" / "test").mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(root / "meta_expressions" / "test" / META_EXPRESSIONS, json.dumps({"videos": {}}).encode())

    summary = _summary(params, results_by_split)
    meta = {
        "params": params,
        "summary": summary,
        "frames": {s: {r["video_id"]: r["meta"]["frames"] for r in results_by_split[s]} for s in VIDEO_SPLITS},
    }
    _atomic_write_bytes(root / META_NAME, json.dumps(meta, indent=1).encode())
    return {**summary, "root": str(root), "cached": False, "seconds": round(time.perf_counter() - start, 2)}


def _summary(params: dict, results_by_split: Mapping[str, list[dict]]) -> dict[str, Any]:
    splits: dict[str, dict] = {}
    total_types = {t: 0 for t in VIDEO_EXPRESSION_TYPES}
    for split in VIDEO_SPLITS:
        res = results_by_split[split]
        types = {t: 0 for t in VIDEO_EXPRESSION_TYPES}
        for r in res:
            for e in r["meta"]["expressions"].values():
                types[e["type"]] += 1
        n = sum(types.values())
        for t in types:
            total_types[t] += types[t]
        splits[split] = {
            "videos": len(res),
            "objects": sum(len(r["objects"]) for r in res),
            "objects_absent_in_some_frames": sum(r["absent_objects"] for r in res),
            "lookalike_videos": sum(1 for r in res if r["lookalike"]),
            "expressions": n,
            "types": types,
            "type_fractions": {t: round(c / n, 4) if n else 0.0 for t, c in types.items()},
        }
    return {
        "generator_version": VIDEO_GENERATOR_VERSION,
        "seed": params["seed"],
        "frames": params["frames"],
        "size": params["size"],
        "splits": splits,
        "videos": sum(v["videos"] for v in splits.values()),
        "expressions": sum(v["expressions"] for v in splits.values()),
        "types": total_types,
    }


# ============================================================================================
# Re-checking a written dataset
# ============================================================================================
def _meta_or_raise(root: Path) -> dict:
    meta = _read_meta(root)
    if meta is None:
        raise FileNotFoundError(
            f"{root / META_NAME} not found: not a (complete) synthetic video dataset; run generate_synthetic_videos"
        )
    return meta


def load_clip(root: str | os.PathLike[str], video_id: str) -> Clip:
    """Re-render the in-memory :class:`Clip` (tracks, exact frames, masks) of a written video."""
    root = Path(os.path.expanduser(os.fspath(root)))
    params = _meta_or_raise(root)["params"]
    for split in VIDEO_SPLITS:
        for index in range(params["num_videos"][split]):
            if video_id_for(params["seed"], split, index) == video_id:
                return _clip_for(params["seed"], split, index, params["size"], params["frames"])[0]
    raise KeyError(f"video {video_id!r} is not a video of the synthetic dataset at {root}")


def _read_png(path: Path) -> tuple[str, np.ndarray]:
    with Image.open(path) as im:
        im.load()
        return im.mode, np.array(im)


def verify_video_referents(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Re-render every clip from the stored parameters and re-check the written dataset.

    Per video: the frame list is sorted and names exactly the JPEG and PNG files; every PNG is
    a palette image whose index array equals the re-rendered visible masks (pixel = obj_id);
    ``meta.json`` lists each object with its category and exactly the frames it appears in.
    Per expression: ids "0".."n-1"; the text parses (exactly one parse) to its stored type; it
    resolves to its ``obj_id``'s track alone; an appearance phrase matches one track, and the
    noun phrase of a position or motion expression matches several. Returns counts and
    ``errors`` (empty = good).
    """
    root = Path(os.path.expanduser(os.fspath(root)))
    params = _meta_or_raise(root)["params"]
    seed, frames, size = params["seed"], params["frames"], params["size"]
    errors: list[str] = []
    n_videos = n_expr = 0
    types = {t: 0 for t in VIDEO_EXPRESSION_TYPES}
    for split in VIDEO_SPLITS:
        meta_exp = json.loads((root / "meta_expressions" / split / META_EXPRESSIONS).read_text())["videos"]
        objects = json.loads((root / split / "meta.json").read_text())["videos"]
        expected = [video_id_for(seed, split, i) for i in range(params["num_videos"][split])]
        if sorted(meta_exp) != sorted(expected):
            errors.append(f"{split}: meta_expressions lists {len(meta_exp)} videos, expected {len(expected)}")
        if sorted(objects) != sorted(expected):
            errors.append(f"{split}: meta.json lists {len(objects)} videos, expected {len(expected)}")
        for index, vid in enumerate(expected):
            n_videos += 1
            where = f"{split}/{vid}"
            entry = meta_exp.get(vid)
            if entry is None:
                continue
            clip = _clip_for(seed, split, index, size, frames)[0]
            names = entry["frames"]
            if names != sorted(names) or names != clip.frame_names:
                errors.append(f"{where}: frames {names} are not the clip's sorted frames")
            for sub, ext in (("JPEGImages", ".jpg"), ("Annotations", ".png")):
                on_disk = sorted(p.name for p in (root / split / sub / vid).glob("*") if not p.name.startswith("."))
                if on_disk != [n + ext for n in names]:
                    errors.append(f"{where}: {sub} holds {on_disk}, expected the listed frames")
            ids = clip.id_maps
            present = {str(k + 1): [] for k in range(len(clip.tracks))}
            for t, name in enumerate(clip.frame_names):
                try:
                    mode, arr = _read_png(root / split / "Annotations" / vid / f"{name}.png")
                except OSError as e:
                    errors.append(f"{where}/{name}.png: {e}")
                    continue
                if mode != "P":
                    errors.append(f"{where}/{name}.png: mode {mode}, expected a palette (P) PNG")
                if not np.array_equal(arr, ids[t]):
                    errors.append(f"{where}/{name}.png: object ids differ from the drawn masks")
                for v in np.unique(arr):
                    if str(int(v)) in present:
                        present[str(int(v))].append(name)
                try:
                    with Image.open(root / split / "JPEGImages" / vid / f"{name}.jpg") as im:
                        if im.size != (clip.width, clip.height) or im.mode != "RGB":
                            want = f"RGB {clip.width}x{clip.height}"
                            errors.append(f"{where}/{name}.jpg: {im.mode} {im.size}, expected {want}")
                except OSError as e:
                    errors.append(f"{where}/{name}.jpg: {e}")
            objs = objects.get(vid, {}).get("objects", {})
            if set(objs) != set(present):
                errors.append(f"{where}: meta.json objects {sorted(objs)}, expected {sorted(present)}")
            for oid, o in objs.items():
                k = int(oid) - 1
                if oid in present and (o.get("category") != clip.tracks[k].shape or o.get("frames") != present[oid]):
                    errors.append(f"{where}: meta.json object {oid} has the wrong category or frames")
            exps = entry["expressions"]
            if sorted(exps, key=int) != [str(i) for i in range(len(exps))]:
                errors.append(f"{where}: expression ids {sorted(exps)} are not '0'..'{len(exps) - 1}'")
            for exp_id, e in exps.items():
                n_expr += 1
                tag = f"{where} expression {exp_id} {e.get('exp')!r}"
                try:
                    expr = parse_video_expression(e["exp"])
                except (ValueError, KeyError, AttributeError) as err:
                    errors.append(f"{tag}: {err}")
                    continue
                if expr.type != e.get("type"):
                    errors.append(f"{tag}: type {e.get('type')!r}, parses as {expr.type!r}")
                types[expr.type] = types.get(expr.type, 0) + 1
                target = int(e["obj_id"]) - 1 if str(e.get("obj_id", "")).isdigit() else -1
                got = resolve_video(expr, clip)
                if got != [target]:
                    errors.append(f"{tag}: refers to tracks {got}, not obj_id {e.get('obj_id')!r}")
                np_only = len(clip.match(expr.target))
                if (expr.type == "appearance") != (np_only == 1):
                    errors.append(f"{tag}: its noun phrase alone matches {np_only} tracks (type {expr.type})")
    return {"videos": n_videos, "expressions": n_expr, "types": types, "errors": errors}
