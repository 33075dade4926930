"""What both synthetic sets draw with: shapes, colours, sizes, textured backgrounds, painting, exact masks.

Every object is a polygon: 8 shapes (:data:`SHAPES`, circles are 24-gons, no polygon has holes),
8 named colours (:data:`COLOURS`), 2 sizes (:data:`SIZES`, ~13% and ~24% of the image's shorter
side), with a small random rotation, a per-object colour offset, a linear shading and pixel noise
(at most :data:`COLOUR_TOLERANCE` per channel from the nominal colour). Backgrounds are muted,
mid-grey tones (a smooth two-colour gradient, plus stripes, blotches, speckle or faint tiles, plus
noise), so the eight saturated object colours and white/black stay distinct. Each polygon is
rasterised with pycocotools (``frPyObjects`` + ``decode``), so a mask decoded from the written
annotation is exactly the drawn one. The placement rules both sets share: an object keeps
>= :data:`MIN_VISIBLE_FRACTION` of its area visible under the ones drawn later, and two objects of
the same colour never touch (they would merge into one blob).
"""

from __future__ import annotations

import colorsys
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

import numpy as np
from PIL import Image

__all__ = ["COLOURS", "COLOUR_TOLERANCE", "SHAPES", "SIZES", "SceneObject"]

SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross", "heart", "crescent")
COLOURS: dict[str, tuple[int, int, int]] = {  # nominal RGB; eight colours far apart in RGB
    "red": (220, 35, 35),
    "green": (35, 170, 60),
    "blue": (35, 80, 225),
    "yellow": (240, 215, 40),
    "purple": (140, 45, 190),
    "orange": (245, 135, 25),
    "white": (240, 240, 240),
    "black": (25, 25, 25),
}
SIZES = {"small": 0.13, "big": 0.24}  # object extent as a fraction of the image's shorter side
SIZE_JITTER = 0.07  # extent *= uniform(1 - j, 1 + j)
ROTATION_JITTER = 10.0  # degrees either way (kept small: a square rotated 45 degrees is a diamond)

# colour jitter: per-object offset per channel + linear shading across the object + pixel noise
COLOUR_OFFSET = 10
COLOUR_SHADE = 12
COLOUR_NOISE = 4
COLOUR_TOLERANCE = COLOUR_OFFSET + COLOUR_SHADE + COLOUR_NOISE  # max |pixel - nominal| per channel

MIN_VISIBLE_FRACTION = 0.65  # of an object's own area, after later objects are drawn on top
MIN_VISIBLE_PIXELS = 40
SAME_COLOUR_GAP = 2  # pixels between the boxes of two objects of the same colour
SHARE_PROBABILITY = 0.6  # a new object copies the shape or the colour of an earlier one
PLACEMENT_ATTEMPTS = 60
BACKGROUND_STYLES = ("gradient", "stripes", "blotches", "speckle", "tiles")

_Placed = TypeVar("_Placed")


def _mask_api() -> Any:
    try:
        from pycocotools import mask as mask_utils
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the synthetic benchmark needs pycocotools: pip install 'lavt[data]'"
        ) from e
    return mask_utils


def _decode(rles: Any) -> np.ndarray:
    with warnings.catch_warnings():  # pycocotools' numpy-2 "copy keyword" notice is not ours
        warnings.filterwarnings("ignore", message=".*copy keyword", category=DeprecationWarning)
        return _mask_api().decode(rles)


# ============================================================================================
# Shapes: polygon templates in unit coordinates (extent 2, centred on 0, y down)
# ============================================================================================
def _regular(n: int, radius: float = 1.0, start_deg: float = -90.0) -> np.ndarray:
    a = np.deg2rad(start_deg) + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(a), radius * np.sin(a)], axis=1)


def _star() -> np.ndarray:
    outer, inner = _regular(5, 1.0), _regular(5, 0.45, -90.0 + 36.0)
    return np.stack([outer, inner], axis=1).reshape(-1, 2)


def _cross(arm: float = 0.34) -> np.ndarray:
    a = arm
    return np.array(
        [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a), (-1, a), (-1, -a), (-a, -a)],
        dtype=float,
    )


def _heart(n: int = 32) -> np.ndarray:
    t = 2 * np.pi * np.arange(n) / n
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    pts = np.stack([x, y], axis=1)
    pts -= (pts.max(0) + pts.min(0)) / 2
    return pts / np.abs(pts).max()


def _crescent(n: int = 14, d: float = 0.5, r: float = 0.85) -> np.ndarray:
    # the part of the unit circle outside a circle of radius r centred at (d, 0): a simple polygon
    xi = (d * d + 1 - r * r) / (2 * d)
    yi = math.sqrt(1 - xi * xi)
    a_out = math.atan2(yi, xi)
    outer = np.linspace(a_out, 2 * np.pi - a_out, n)  # through angle pi (the left side)
    a_in = math.atan2(yi, xi - d)
    inner = np.linspace(2 * np.pi - a_in, a_in, n)[1:-1]  # back along the inner circle
    pts = np.concatenate(
        [np.stack([np.cos(outer), np.sin(outer)], 1), np.stack([d + r * np.cos(inner), r * np.sin(inner)], 1)]
    )
    pts -= (pts.max(0) + pts.min(0)) / 2
    return pts / np.abs(pts).max()


SHAPE_TEMPLATES: dict[str, np.ndarray] = {
    "circle": _regular(24),
    "square": np.array([(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)]),
    "triangle": np.array([(0.0, -1.0), (1.0, 0.8), (-1.0, 0.8)]),
    "star": _star(),
    "diamond": np.array([(0.0, -1.0), (0.75, 0.0), (0.0, 1.0), (-0.75, 0.0)]),
    "cross": _cross(),
    "heart": _heart(),
    "crescent": _crescent(),
}


def _polygon(shape: str, center: tuple[float, float], extent: float, rotation: float, mirror: bool) -> list[float]:
    pts = SHAPE_TEMPLATES[shape].copy()
    if mirror:
        pts[:, 0] = -pts[:, 0]
    a = np.deg2rad(rotation)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    pts = pts @ rot.T * (extent / 2.0) + np.asarray(center, dtype=float)
    # rounded so that the JSON holds exactly the coordinates that were rasterised
    return [round(float(v), 2) for v in pts.reshape(-1)]


def _rasterise(polygon: list[float], height: int, width: int) -> np.ndarray:
    rles = _mask_api().frPyObjects([polygon], height, width)
    return _decode(rles)[:, :, 0].astype(bool)


# ============================================================================================
# Objects, backgrounds, painting
# ============================================================================================
@dataclass
class SceneObject:
    """One drawn object (of a scene, or of one frame of a clip). ``mask`` is the visible mask
    (what the annotation decodes to)."""

    shape: str
    colour: str
    size: str
    center: tuple[float, float]
    extent: float
    rotation: float
    polygon: list[float]  # flat [x1, y1, x2, y2, ...], the exact rasterised coordinates
    full_mask: np.ndarray  # bool (H, W), the whole polygon
    mask: np.ndarray  # bool (H, W), the visible part
    rgb: tuple[int, int, int]  # base colour after the per-object offset
    centroid: tuple[float, float] = (0.0, 0.0)  # of the visible mask, (x, y) in pixels
    area: int = 0  # visible pixels

    @property
    def fully_visible(self) -> bool:
        return self.area == int(self.full_mask.sum())

    @property
    def attributes(self) -> tuple[str, str, str]:
        return self.shape, self.colour, self.size


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    h, s, v = rng.uniform(0, 1), rng.uniform(0.05, 0.3), rng.uniform(0.42, 0.7)
    return np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0


def _smooth_noise(rng: np.random.Generator, width: int, height: int, cells: tuple[int, int]) -> np.ndarray:
    """Low-frequency noise in [-1, 1]-ish: a coarse random grid upsampled bicubically."""
    grid = rng.uniform(-1, 1, size=(cells[1], cells[0])).astype(np.float32)
    up = Image.fromarray(grid, mode="F").resize((width, height), Image.BICUBIC)
    return np.asarray(up, dtype=np.float32)


def _grain(rng: np.random.Generator, shape: tuple[int, ...], amplitude: float) -> np.ndarray:
    """Per-pixel noise, uniform in [-amplitude, amplitude] (uniform draws are ~4x cheaper than normal)."""
    return (rng.random(size=shape, dtype=np.float32) - 0.5) * (2.0 * amplitude)


def _background(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, str]:
    """A muted (H, W, 3) float32 background: two-colour gradient + a style + fine grain."""
    style = BACKGROUND_STYLES[int(rng.integers(len(BACKGROUND_STYLES)))]
    xs = np.arange(width, dtype=np.float32)[None, :]
    ys = np.arange(height, dtype=np.float32)[:, None]
    c0, c1 = _muted_colour(rng).astype(np.float32), _muted_colour(rng).astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    half_diag = 0.5 * math.hypot(width, height)
    t = ((xs - width / 2) * math.cos(ang) + (ys - height / 2) * math.sin(ang)) / half_diag  # in [-1, 1]
    t = ((t + 1) / 2)[..., None]
    img = c0 + (c1 - c0) * t  # (H, W, 3)
    if style == "stripes":
        period, a2, amp = rng.uniform(5, 16), rng.uniform(0, np.pi), rng.uniform(5, 12)
        img = img + (amp * np.sin((2 * np.pi / period) * (xs * math.cos(a2) + ys * math.sin(a2))))[..., None]
    elif style == "blotches":
        cells = (int(rng.integers(4, 9)), int(rng.integers(3, 7)))
        amp = rng.uniform(12, 22)
        img = img + amp * np.stack([_smooth_noise(rng, width, height, cells) for _ in range(3)], axis=-1)
    elif style == "speckle":
        img = img + _grain(rng, img.shape, 15.0)
        img += 10 * _smooth_noise(rng, width, height, (3, 3))[..., None]
    elif style == "tiles":
        tile, amp = int(rng.integers(8, 20)), rng.uniform(4, 9)
        checker = (((xs // tile) + (ys // tile)) % 2) * 2 - 1
        img = img + (amp * checker)[..., None]
    img = img + _grain(rng, img.shape, 5.0)  # fine grain everywhere
    return np.clip(img, 65, 200), style


def _paint(image: np.ndarray, obj: SceneObject, rng: np.random.Generator) -> None:
    """Paint the visible pixels of ``obj``: base colour + linear shading + noise (bounded)."""
    ys, xs = np.nonzero(obj.mask)
    if ys.size == 0:
        return
    phi = rng.uniform(0, 2 * np.pi)
    amp = rng.uniform(0.3, 1.0) * COLOUR_SHADE
    u = ((xs - obj.center[0]) * np.cos(phi) + (ys - obj.center[1]) * np.sin(phi)) / max(obj.extent / 2, 1.0)
    shade = np.clip(u, -1, 1) * amp
    noise = rng.integers(-COLOUR_NOISE, COLOUR_NOISE + 1, size=(ys.size, 3))
    px = np.asarray(obj.rgb, dtype=np.float64)[None, :] + shade[:, None] + noise
    image[ys, xs] = np.clip(np.rint(px), 0, 255).astype(np.uint8)


def _make_object(
    shape: str,
    colour: str,
    size: str,
    center: tuple[float, float],
    extent: float,
    rotation: float,
    mirror: bool,
    offset: Sequence[int],
    width: int,
    height: int,
) -> SceneObject:
    polygon = _polygon(shape, center, extent, rotation, mirror)
    full = _rasterise(polygon, height, width)
    rgb = tuple(int(np.clip(c + o, 0, 255)) for c, o in zip(COLOURS[colour], offset))
    return SceneObject(
        shape=shape, colour=colour, size=size, center=(float(center[0]), float(center[1])), extent=float(extent),
        rotation=float(rotation), polygon=polygon, full_mask=full, mask=full.copy(), rgb=rgb,  # type: ignore[arg-type]
    )


def _draw_extent(rng: np.random.Generator, size: str, short_side: int) -> float:
    """An object's extent in pixels: its size's fraction of the shorter side, jittered."""
    return SIZES[size] * short_side * rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER)


def _draw_jitter(rng: np.random.Generator) -> tuple[float, bool, np.ndarray]:
    """What keeps two objects of the same attributes from looking identical: a small rotation,
    a mirror image or not, and a per-channel colour offset."""
    rotation = rng.uniform(-ROTATION_JITTER, ROTATION_JITTER)
    mirror = bool(rng.random() < 0.5)
    offset = rng.integers(-COLOUR_OFFSET, COLOUR_OFFSET + 1, size=3)
    return rotation, mirror, offset


def _spec_pose(spec: Mapping[str, Any], width: int, height: int) -> tuple[tuple[str, str, str], float, float, bool]:
    """A hand-made object's (shape, colour, size), checked, and its extent, rotation and mirror
    flag: as the spec gives them, else the size's nominal extent, upright, not mirrored."""
    _check_attributes(spec["shape"], spec["colour"], spec["size"])
    extent = float(spec.get("extent", SIZES[spec["size"]] * min(width, height)))
    attrs = (spec["shape"], spec["colour"], spec["size"])
    return attrs, extent, float(spec.get("rotation", 0.0)), bool(spec.get("mirror", False))


def _check_attributes(shape: str, colour: str, size: str) -> None:
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; shapes: {', '.join(SHAPES)}")
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; colours: {', '.join(COLOURS)}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; sizes: {', '.join(SIZES)}")


def _sample_attributes(rng: np.random.Generator, earlier: list[tuple[str, str, str]]) -> tuple[str, str, str]:
    """Shape, colour, size; often sharing the shape or the colour of an earlier object."""
    colours = tuple(COLOURS)
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    colour = colours[int(rng.integers(len(colours)))]
    size = ("small", "big")[int(rng.integers(2))]
    if earlier and rng.random() < SHARE_PROBABILITY:
        src = earlier[int(rng.integers(len(earlier)))]
        if rng.random() < 0.5:
            shape = src[0]
        else:
            colour = src[1]
    return shape, colour, size


# ============================================================================================
# Placement under the occlusion rules
# ============================================================================================
def _boxes_near(a: SceneObject, b: SceneObject, gap: float) -> bool:
    pa, pb = np.asarray(a.polygon).reshape(-1, 2), np.asarray(b.polygon).reshape(-1, 2)
    return not (
        pa[:, 0].max() + gap < pb[:, 0].min()
        or pb[:, 0].max() + gap < pa[:, 0].min()
        or pa[:, 1].max() + gap < pb[:, 1].min()
        or pb[:, 1].max() + gap < pa[:, 1].min()
    )


def _keeps_visible(obj: SceneObject, visible: np.ndarray, area: float, new: SceneObject, min_pixels: int = 0) -> bool:
    """Would ``obj`` (``visible``: its part visible so far, ``area``: its whole area) keep enough
    of itself in view, and keep apart from ``new`` if that has its colour, with ``new`` on top?"""
    if obj.colour == new.colour and _boxes_near(obj, new, SAME_COLOUR_GAP):
        return False
    if not _boxes_near(obj, new, 0):
        return True
    still_visible = int(np.count_nonzero(visible & ~new.full_mask))
    return still_visible >= min_pixels and still_visible >= MIN_VISIBLE_FRACTION * area


def _draw_count(rng: np.random.Generator, num_objects: int | tuple[int, int]) -> int:
    """How many objects to place: ``num_objects`` itself, or drawn from that inclusive range."""
    lo, hi = (num_objects, num_objects) if isinstance(num_objects, int) else num_objects
    if not 1 <= lo <= hi:
        raise ValueError(f"num_objects must be a count >= 1 or a range lo <= hi, got {num_objects!r}")
    return int(rng.integers(lo, hi + 1))


def _place(
    n: int,
    candidates: Callable[[list[_Placed]], Iterator[_Placed | None]],
    fits: Callable[[list[_Placed], _Placed], bool],
) -> list[_Placed] | None:
    """``n`` objects placed one after another, or None if that keeps failing.

    ``candidates(placed)`` draws the next object's attributes and then yields one candidate per
    attempt (None: this attempt fails); the first that ``fits`` among those placed is taken. An
    object with no fit in :data:`PLACEMENT_ATTEMPTS` attempts restarts the whole set from the same
    random stream, so the count is honoured and the result stays deterministic.
    """
    for _set_attempt in range(100):
        placed: list[_Placed] = []
        for _ in range(n):
            draws = candidates(placed)
            for _attempt in range(PLACEMENT_ATTEMPTS):
                cand = next(draws)
                if cand is not None and fits(placed, cand):
                    placed.append(cand)
                    break
            else:
                break
        if len(placed) == n:
            return placed
    return None
