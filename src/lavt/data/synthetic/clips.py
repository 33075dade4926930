"""Clips of the video set: tracks of moving shapes, their trajectories, rendering under per-frame occlusion.

A clip has ``frames`` frames (default 12) of ``size`` (width, height; default 128x96) pixels, named
like the real data: 5-digit indices every 5th frame ("00000", "00005", ...), one clip in three
starting late ("00005" or "00010"). 2-5 object tracks per clip on one static background
(:func:`.render._background`, plus a light per-frame grain); shapes, colours, sizes, painting and
exact rasterisation are the image set's (:mod:`.render`). Every track has a fixed shape, colour,
size, rotation and shading and one motion (:data:`MOTION_KINDS`): ``still``; ``move``
(left/right/up/down at constant speed); ``stop`` (moves >= 2 steps, then still >= 2 steps);
``start`` (the reverse); ``turn`` (moves, then comes back along the same axis, >= 2 steps each
way); ``enter`` (from a side: absent in the first frame(s), first seen cut off by that side, then
moving inward, at least half in view by the end); ``leave`` (the time reverse: absent at the end).

Speeds are 2.5-5% of the shorter side per frame, headings within 12 degrees of the axis. A new
track is a *look-alike* (same shape and colour, usually the same size) of an earlier one with
probability :data:`LOOKALIKE_PROBABILITY`, otherwise it shares the shape or the colour of an
earlier track as in the image set; either way a track gets a motion (kind and direction) that no
earlier track of the same shape and colour has, so appearance alone is often ambiguous and motion
tells look-alikes apart. Placement is rejected and redrawn (from the same random stream) unless,
**in every frame**, every object keeps >= 65% of its in-image area visible and two objects of the
same colour keep a 2-pixel gap; objects that stay in view keep 2 pixels from the borders.

Each track's polygon is rasterised per frame (clipped to the image); the visible mask is the
silhouette minus those of later tracks (later = on top); the frame is painted from the visible
masks. An object is *present* in a frame iff its visible mask is not empty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from .grammar import _Referents
from .render import (
    SceneObject,
    _background,
    _draw_count,
    _draw_extent,
    _draw_jitter,
    _grain,
    _keeps_visible,
    _make_object,
    _paint,
    _place,
    _polygon,
    _sample_attributes,
    _spec_pose,
)

__all__ = ["DEFAULT_FRAMES", "DEFAULT_SIZE", "MOTION_KINDS", "Clip", "Track", "build_clip", "render_clip"]

DEFAULT_FRAMES = 12
DEFAULT_SIZE = (128, 96)  # (width, height)
MIN_FRAMES, MAX_FRAMES = 6, 200

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

# what counts as moving, in the meaning of the motion words (see video_grammar.resolve_video)
MOVE_MIN = 0.012  # a step of >= 1.2% of the shorter side is "moving"
STILL_MAX = 0.003  # <= 0.3% is "still"; in between is unclear


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
class Clip(_Referents):
    """A rendered clip: tracks in drawing order, frames (T, H, W, 3) uint8 and frame names."""

    width: int
    height: int
    frame_names: list[str]
    tracks: list[Track]
    images: np.ndarray
    background: str = "gradient"

    def __post_init__(self) -> None:
        self._start_memo(self.width, self.height)
        self._truth_cache: dict[tuple[int, str], bool | None] = {}
        short = min(self.width, self.height)
        self._move_min = MOVE_MIN * short
        self._still_max = STILL_MAX * short

    @property
    def referents(self) -> list[Track]:
        return self.tracks

    @property
    def num_frames(self) -> int:
        return len(self.frame_names)

    @property
    def id_maps(self) -> np.ndarray:
        """uint8 (T, H, W): the annotation PNGs' index arrays (0 = background, k + 1 = track k)."""
        out = np.zeros((self.num_frames, self.height, self.width), dtype=np.uint8)
        for k, tr in enumerate(self.tracks):
            out[tr.masks] = k + 1
        return out


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
        for old in tracks:
            area = int(old.full_masks[t].sum())
            if area and not _keeps_visible(old.objects[t], old.masks[t], area, new.objects[t]):
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
    n = _draw_count(rng, num_objects)
    start = START_OFFSETS[int(rng.integers(len(START_OFFSETS)))]
    short = min(width, height)

    def candidates(placed: list[Track]) -> Iterator[Track | None]:
        attrs, _src = _sample_track_attributes(rng, placed)
        # look-alikes (same shape and colour) move differently
        avoid = {(t.kind, t.direction) for t in placed if t.attributes[:2] == attrs[:2]}
        while True:
            kind, direction = _sample_motion(rng, avoid)
            extent = _draw_extent(rng, attrs[2], short)
            rotation, mirror, offset = _draw_jitter(rng)
            lo_off, hi_off = _offsets(attrs[0], extent, rotation, mirror)
            if np.any(hi_off - lo_off + 2 * INSIDE_MARGIN >= np.array([width, height])):
                raise ValueError(f"image size {image_size} is too small for the object sizes")
            centers = _trajectory(rng, kind, direction, lo_off, hi_off, width, height, T)
            if centers is None:  # this motion does not fit: the attempt fails
                yield None
                continue
            yield _make_track(
                len(placed) + 1, attrs, extent, rotation, mirror, offset, centers, kind, direction, width, height
            )

    tracks = _place(n, candidates, _fits)
    if tracks is None:
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
        attrs, extent, rotation, mirror = _spec_pose(s, width, height)
        centers = np.asarray(s["centers"], dtype=float)
        if centers.shape != (T, 2):
            raise ValueError(f"track {k}: centers must be {T} (x, y) pairs, got shape {centers.shape}")
        tr = _make_track(k + 1, attrs, extent, rotation, mirror, (0, 0, 0), centers, "custom", None, width, height)
        tr.paint_seed = k
        tracks.append(tr)
    background, style = _background(rng, width, height)
    images = _compose_frames(width, height, tracks, background, rng)
    return Clip(width, height, _frame_names(T, start), tracks, images, style)
