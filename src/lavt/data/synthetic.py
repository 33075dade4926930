"""A procedural referring-segmentation benchmark written in the real RefCOCO (``refer``) layout.

No real dataset lives on this machine, so this module draws scenes of coloured shapes on textured
backgrounds, writes one English expression per referred object in a small grammar, and stores
everything exactly as RefCOCO is stored on disk, so the RefCOCO loader, training and evaluation
code run on it unchanged::

    <root>/images/mscoco/images/train2014/COCO_train2014_<12-digit image id>.jpg   (JPEG, quality 95)
    <root>/<dataset_name>/instances.json     info, licenses, images, annotations, categories
    <root>/<dataset_name>/refs(unc).p        pickled list of ref dicts (refer API fields)
    <root>/<dataset_name>/synthetic_meta.json  parameters, generator version, counts (cache key)

Entry points: :func:`generate_synthetic_refer` (write a dataset, cached), :func:`render_scene`
(one scene in memory: objects, image, masks), :func:`resolve` (what an expression refers to),
:func:`parse_expression` / :func:`realise` (text <-> structure), :func:`load_scene` (re-render
a written image's scene) and :func:`verify_unique_referents` (re-check a written dataset).

Scenes
    3-7 objects on one of several background styles (smooth two-colour gradient, plus stripes,
    blotches, speckle or faint tiles, plus noise; always muted, mid-grey tones, so the eight
    saturated object colours and white/black stay distinct). Every object is a polygon: 8 shapes
    (:data:`SHAPES`, circles are 24-gons, no polygon has holes), 8 named colours
    (:data:`COLOURS`), 2 sizes (:data:`SIZES`, ~13% and ~24% of the image's shorter side), with a
    small random rotation, a per-object colour offset, a linear shading and pixel noise (at most
    :data:`COLOUR_TOLERANCE` per channel from the nominal colour). Objects may overlap (later ones
    are on top) but every object keeps >= :data:`MIN_VISIBLE_FRACTION` of its area and
    >= :data:`MIN_VISIBLE_PIXELS` pixels visible, and two objects of the same colour never touch
    (they would merge into one blob). Attributes are drawn so that most scenes hold distractors:
    each new object copies the shape or the colour of an earlier one with probability
    :data:`SHARE_PROBABILITY`.

Masks are exact by construction
    Each polygon is rasterised with pycocotools (``frPyObjects`` + ``decode``), the visible mask
    of an object is its mask minus the masks of the objects drawn after it, and the image is
    painted from the visible masks. The annotation of a fully visible object is its polygon (a
    list with one flat ``[x1, y1, ...]`` float list); the annotation of a partly hidden object is
    its visible region as compressed RLE, stored as a one-element list ``[{"size": [h, w],
    "counts": "<ascii>"}]`` so that the refer API's test ``type(segmentation[0]) == list`` picks
    the RLE branch (a bare dict would break ``refer.getMask``). Decoding an annotation with
    pycocotools therefore gives exactly the pixels painted with that object's colour. JPEGs are
    written at quality 95 with 4:4:4 chroma (the default 4:2:0 smears small objects' colours).

Expressions (the grammar is in one place: :data:`TEMPLATES` and :func:`_noun_phrase`)
    ``attribute``  "the red circle", "big star", "the small blue one"
    ``position``   "the leftmost square", "the red shape at the top", "the shape in the top left corner"
    ``relation``   "the star left of the blue diamond", "the circle closest to the red square"
    ``ordinal``    "the second circle from the left", "the third shape counting from the top"
    Every expression is an :class:`Expression` structure; :func:`resolve` implements its meaning
    on a scene and returns every object a careful reader could take as its referent. Geometry
    uses the centroids of the *visible* masks with a margin of :func:`Scene.margin` pixels (6% of
    the shorter side): an object is "leftmost" only if no other candidate is within the margin of
    it, "left of" needs a gap of at least the margin (and a mostly horizontal offset, while any
    other candidate even slightly to the left makes the phrase ambiguous), "closest" needs the
    runner-up to be clearly farther, and so on. The generator keeps an expression only if
    ``resolve`` returns exactly the intended object, only if the extra words are informative
    (a position, relation or ordinal is used only when its noun phrase alone matches several
    objects) and only if the text parses back (:func:`parse_expression`) to the same structure.
    Each object gets 2-4 expressions (relations and ordinals preferred); an object with no unique
    expression gets no ref but stays in the annotations as a distractor. After generation,
    attribute/position sentences are dropped (never a ref's last one) until relations plus
    ordinals are at least a third of every split. Sentences carry the refer fields ``tokens``,
    ``raw``, ``sent_id``, ``sent`` and an extra key ``type`` (one of :data:`EXPRESSION_TYPES`).
    ``raw`` is lower case without punctuation (``sent`` is the same text); the vocabulary is ~50
    words and no expression is longer than 12 words, well inside LAVT's 20 BERT tokens.

Splits (by image, as RefCOCO unc)
    ``train`` and ``val``: 3-7 objects per scene; ``testA``: crowded scenes of 5-7 objects;
    ``testB``: sparse scenes of 3-4 objects. Like RefCOCO's testA (people) and testB (other
    objects), the two test splits are two different sub-populations of the training
    distribution. Each image's scene comes from its own random stream keyed by
    ``(seed, split, index in split)``, so the val and test scenes do not change when the number
    of training images changes.

Ids
    ``image_id`` = :func:`image_id_base` (900,000,000,000 + a per-dataset-name offset) + a running
    index, far above the real COCO ids, so a synthetic dataset can share a data root with real
    RefCOCO without ever overwriting a COCO image. ``ann_id`` counts from 1, ``ref_id`` and
    ``sent_id`` from 0; all are unique and increase along the file order (train, val, testA,
    testB). As in RefCOCO, a ref's ``file_name`` (``COCO_train2014_<image id>_<ann_id>.jpg``) is
    not a real file.

Determinism and caching
    The same parameters give byte-identical ``instances.json`` and ``refs(unc).p`` and identical
    JPEGs. Every file is written under a temporary name and moved into place with
    :func:`os.replace`; the meta file is removed first and written last, so an interrupted run
    never looks complete. A later call with the same parameters returns the stored summary
    without touching any file (``force=True`` regenerates). Images are independent, so
    ``workers`` processes render them (default: 2 for big runs); the bytes do not depend on it.
    The default 2,400 images cost ~41 s of CPU (~40 MB on disk).
"""

from __future__ import annotations

import colorsys
import json
import math
import os
import pickle
import re
import sys
import time
import warnings
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

__all__ = [
    "COLOURS",
    "COLOUR_TOLERANCE",
    "EXPRESSION_TYPES",
    "GENERATOR_VERSION",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "Desc",
    "Expression",
    "Scene",
    "SceneObject",
    "build_scene",
    "candidate_expressions",
    "generate_synthetic_refer",
    "image_id_base",
    "load_scene",
    "parse_expression",
    "realise",
    "render_scene",
    "resolve",
    "sample_expressions",
    "verify_unique_referents",
]

GENERATOR_VERSION = "1.0"

# ============================================================================================
# Vocabulary and scene parameters
# ============================================================================================
EXPRESSION_TYPES = ("attribute", "position", "relation", "ordinal")
SPLITS = ("train", "val", "testA", "testB")
DEFAULT_NUM_IMAGES = {"train": 2000, "val": 200, "testA": 100, "testB": 100}
OBJECTS_PER_SPLIT = {"train": (3, 7), "val": (3, 7), "testA": (5, 7), "testB": (3, 4)}  # inclusive

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

# geometry of the expressions (see resolve())
MARGIN_FRACTION = 0.06  # margin = max(4 px, 6% of the shorter side)
CORNER_FRACTION = 0.35  # a corner region spans 35% of the width and of the height
DIRECTION_CONE = 1.0  # "left of": |dy| <= dx (mostly sideways)
CLOSEST_RATIO = 0.25  # runner-up must be >= max(margin, 25%) farther
FARTHEST_RATIO = 0.15

SENTENCES_PER_OBJECT = (2, 4)  # inclusive
TYPE_WEIGHTS = {"attribute": 1.0, "position": 1.0, "relation": 1.6, "ordinal": 1.6}
TYPE_REPEAT_DECAY = 0.3  # a type's weight is multiplied by this after each use for one object
MIN_RELATION_ORDINAL_FRACTION = 1.0 / 3.0

IMAGE_SUBDIR = Path("images") / "mscoco" / "images" / "train2014"
META_NAME = "synthetic_meta.json"
REFS_NAME = "refs(unc).p"
INSTANCES_NAME = "instances.json"
JPEG_QUALITY = 95
_IMAGE_ID_FLOOR = 900_000_000_000
_IMAGE_ID_STRIDE = 1_000_000  # at most this many images per dataset


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
# Scenes
# ============================================================================================
@dataclass
class SceneObject:
    """One drawn object. ``mask`` is the visible mask (what the annotation decodes to)."""

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


@dataclass
class Scene:
    """A rendered scene: objects in drawing order, the RGB image and background style."""

    width: int
    height: int
    objects: list[SceneObject]
    image: np.ndarray  # uint8 (H, W, 3)
    background: str = "gradient"

    def __post_init__(self) -> None:
        # memo tables; a scene is not modified after it is composed
        self._match_cache: dict[tuple, list[int]] = {}
        self._resolve_cache: dict[tuple, tuple[int, ...]] = {}
        self._anchor_cache: dict[int, Desc | None] = {}
        self._candidates: list[dict[str, list[Expression]]] | None = None
        self._margin = max(4.0, MARGIN_FRACTION * min(self.width, self.height))

    @property
    def masks(self) -> np.ndarray:
        """Visible masks, bool (N, H, W)."""
        if not self.objects:
            return np.zeros((0, self.height, self.width), dtype=bool)
        return np.stack([o.mask for o in self.objects])

    @property
    def margin(self) -> float:
        """Pixels that separate a clear spatial statement from an ambiguous one."""
        return self._margin

    def match(self, desc: "Desc") -> list[int]:
        """Indices of the objects whose attributes agree with every attribute ``desc`` names."""
        key = desc.key
        if key not in self._match_cache:
            self._match_cache[key] = [
                i
                for i, o in enumerate(self.objects)
                if (desc.shape is None or o.shape == desc.shape)
                and (desc.colour is None or o.colour == desc.colour)
                and (desc.size is None or o.size == desc.size)
            ]
        return self._match_cache[key]


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


def _compose(
    width: int,
    height: int,
    objects: list[SceneObject],
    background: np.ndarray,
    style: str,
    rng: np.random.Generator,
) -> Scene:
    """Visible masks (full mask minus everything drawn later), centroids, the painted image."""
    covered = np.zeros((height, width), dtype=bool)
    for obj in reversed(objects):
        obj.mask = obj.full_mask & ~covered
        covered |= obj.full_mask
        obj.area = int(obj.mask.sum())
        ys, xs = np.nonzero(obj.mask)
        obj.centroid = (float(xs.mean()), float(ys.mean())) if xs.size else obj.center
    image = np.clip(np.rint(background), 0, 255).astype(np.uint8)
    for obj in objects:
        _paint(image, obj, rng)
    return Scene(width=width, height=height, objects=objects, image=image, background=style)


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


def build_scene(
    specs: Sequence[Mapping[str, Any]],
    image_size: tuple[int, int] = (160, 128),
    rng: np.random.Generator | None = None,
) -> Scene:
    """A scene from explicit object specs, for tests and hand-made examples.

    Each spec: ``shape``, ``colour``, ``size`` and ``center`` (x, y); optional ``extent``
    (pixels, default from the size), ``rotation`` (degrees, default 0). No placement rules are
    checked, so overlapping or out-of-image objects are the caller's business.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    width, height = image_size
    objects = []
    for s in specs:
        _check_attributes(s["shape"], s["colour"], s["size"])
        extent = float(s.get("extent", SIZES[s["size"]] * min(width, height)))
        objects.append(
            _make_object(
                s["shape"], s["colour"], s["size"], tuple(s["center"]), extent, float(s.get("rotation", 0.0)),
                bool(s.get("mirror", False)), (0, 0, 0), width, height,
            )
        )
    background, style = _background(rng, width, height)
    return _compose(width, height, objects, background, style, rng)


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


def _boxes_near(a: SceneObject, b: SceneObject, gap: float) -> bool:
    pa, pb = np.asarray(a.polygon).reshape(-1, 2), np.asarray(b.polygon).reshape(-1, 2)
    return not (
        pa[:, 0].max() + gap < pb[:, 0].min()
        or pb[:, 0].max() + gap < pa[:, 0].min()
        or pa[:, 1].max() + gap < pb[:, 1].min()
        or pb[:, 1].max() + gap < pa[:, 1].min()
    )


def render_scene(
    rng: np.random.Generator,
    image_size: tuple[int, int] = (160, 128),
    num_objects: int | tuple[int, int] = (3, 7),
) -> Scene:
    """Draw one random scene: objects (drawing order), image (H, W, 3) uint8 and visible masks.

    ``image_size`` is (width, height). ``num_objects`` is a count or an inclusive range. If the
    requested number of objects cannot be placed under the occlusion rules, the scene is drawn
    again from the same stream (deterministic), so the count is always honoured.
    """
    width, height = int(image_size[0]), int(image_size[1])
    lo, hi = (num_objects, num_objects) if isinstance(num_objects, int) else num_objects
    if not 1 <= lo <= hi:
        raise ValueError(f"num_objects must be a count >= 1 or a range lo <= hi, got {num_objects!r}")
    n = int(rng.integers(lo, hi + 1))
    short = min(width, height)
    for _scene_attempt in range(100):
        objects: list[SceneObject] = []
        for _ in range(n):
            attrs = _sample_attributes(rng, [o.attributes for o in objects])
            placed = None
            for _attempt in range(PLACEMENT_ATTEMPTS):
                extent = SIZES[attrs[2]] * short * rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER)
                half = extent / 2 + 1.5
                if 2 * half >= min(width, height):
                    raise ValueError(f"image size {image_size} is too small for the object sizes")
                center = (rng.uniform(half, width - half), rng.uniform(half, height - half))
                rotation = rng.uniform(-ROTATION_JITTER, ROTATION_JITTER)
                mirror = bool(rng.random() < 0.5)
                offset = rng.integers(-COLOUR_OFFSET, COLOUR_OFFSET + 1, size=3)
                cand = _make_object(*attrs, center, extent, rotation, mirror, offset, width, height)
                if _placement_ok(objects, cand):
                    placed = cand
                    break
            if placed is None:
                break
            objects.append(placed)
        if len(objects) == n:
            break
    else:
        raise ValueError(f"cannot place {n} objects in a {width}x{height} image under the occlusion rules")
    background, style = _background(rng, width, height)
    return _compose(width, height, objects, background, style, rng)


def _placement_ok(objects: list[SceneObject], new: SceneObject) -> bool:
    """Would every earlier object stay visible enough with ``new`` drawn on top?"""
    if int(new.full_mask.sum()) < MIN_VISIBLE_PIXELS:
        return False
    for obj in objects:
        if obj.colour == new.colour and _boxes_near(obj, new, SAME_COLOUR_GAP):
            return False
        if not _boxes_near(obj, new, 0):
            continue
        visible = int(np.count_nonzero(obj.mask & ~new.full_mask))
        if visible < MIN_VISIBLE_PIXELS or visible < MIN_VISIBLE_FRACTION * obj.full_mask.sum():
            return False
    for obj in objects:  # accepted: update the running visible masks
        obj.mask = obj.mask & ~new.full_mask
    return True


# ============================================================================================
# Expressions: structures, grammar, meaning
# ============================================================================================
@dataclass(frozen=True)
class Desc:
    """A noun phrase: the attributes it names (None = not named) and, without a shape, its noun."""

    shape: str | None = None
    colour: str | None = None
    size: str | None = None
    noun: str | None = None  # "shape", "object" or "one" when shape is None; ignored otherwise

    @property
    def key(self) -> tuple[str | None, str | None, str | None]:
        return self.shape, self.colour, self.size

    @property
    def n_attributes(self) -> int:
        return sum(v is not None for v in self.key)


@dataclass(frozen=True)
class Expression:
    """One referring expression as a structure.

    ``type`` is one of :data:`EXPRESSION_TYPES`. ``target`` is the head noun phrase.
    position: ``where`` in left/right/top/bottom or a corner ("top left", ...);
    relation: ``relation`` (left_of, right_of, above, below, closest_to, farthest_from) and
    ``anchor``; ordinal: ``k`` (2 or 3) and ``where`` (left/right/top/bottom: counted from).
    ``variant`` picks the surface template (it does not change the meaning).
    """

    type: str
    target: Desc
    where: str | None = None
    relation: str | None = None
    anchor: Desc | None = None
    k: int | None = None
    variant: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SIDES = ("left", "right", "top", "bottom")
CORNERS = ("top left", "top right", "bottom left", "bottom right")
RELATIONS = ("left_of", "right_of", "above", "below", "closest_to", "farthest_from")
ORDINAL_WORDS = {2: "second", 3: "third"}
SHAPELESS_NOUNS = ("shape", "object", "one")  # "one" only after an adjective

# The whole surface grammar. {t}: target noun phrase, {a}: anchor noun phrase, {k}: ordinal word.
TEMPLATES: dict[str, dict[str | None, tuple[str, ...]]] = {
    "attribute": {None: ("the {t}", "{t}")},
    "position": {
        "left": ("the leftmost {t}", "the {t} on the far left", "the {t} furthest to the left"),
        "right": ("the rightmost {t}", "the {t} on the far right", "the {t} furthest to the right"),
        "top": ("the topmost {t}", "the highest {t}", "the {t} at the top"),
        "bottom": ("the lowest {t}", "the bottommost {t}", "the {t} at the bottom"),
        "top left": ("the {t} in the top left corner", "the top left {t}"),
        "top right": ("the {t} in the top right corner", "the top right {t}"),
        "bottom left": ("the {t} in the bottom left corner", "the bottom left {t}"),
        "bottom right": ("the {t} in the bottom right corner", "the bottom right {t}"),
    },
    "relation": {
        "left_of": ("the {t} left of the {a}", "the {t} to the left of the {a}"),
        "right_of": ("the {t} right of the {a}", "the {t} to the right of the {a}"),
        "above": ("the {t} above the {a}", "the {t} higher than the {a}"),
        "below": ("the {t} below the {a}", "the {t} lower than the {a}"),  # not "under" (= hidden by)
        "closest_to": ("the {t} closest to the {a}", "the {t} nearest to the {a}", "the {t} nearest the {a}"),
        "farthest_from": ("the {t} farthest from the {a}", "the {t} furthest from the {a}"),
    },
    "ordinal": {
        "left": ("the {k} {t} from the left", "the {k} {t} counting from the left"),
        "right": ("the {k} {t} from the right", "the {k} {t} counting from the right"),
        "top": ("the {k} {t} from the top", "the {k} {t} counting from the top"),
        "bottom": ("the {k} {t} from the bottom", "the {k} {t} counting from the bottom"),
    },
}


def _template_key(expr: Expression) -> str | None:
    return expr.relation if expr.type == "relation" else expr.where


def _noun_phrase(desc: Desc) -> str:
    """[size] [colour] noun -- "small blue star", "red one", "shape"."""
    noun = desc.shape or desc.noun or "shape"
    if noun == "one" and desc.colour is None and desc.size is None:
        noun = "shape"
    return " ".join(w for w in (desc.size, desc.colour, noun) if w)


def realise(expr: Expression) -> str:
    """The English text of an expression structure (lower case, single spaces)."""
    if expr.type not in TEMPLATES:
        raise ValueError(f"unknown expression type {expr.type!r}; types: {', '.join(EXPRESSION_TYPES)}")
    templates = TEMPLATES[expr.type][_template_key(expr)]
    text = templates[expr.variant % len(templates)]
    fields = {"t": _noun_phrase(expr.target)}
    if expr.anchor is not None:
        fields["a"] = _noun_phrase(expr.anchor)
    if expr.k is not None:
        fields["k"] = ORDINAL_WORDS[expr.k]
    return text.format(**fields)


def _np_regex(prefix: str) -> str:
    sizes = "|".join(SIZES)
    colours = "|".join(COLOURS)
    nouns = "|".join(SHAPES + SHAPELESS_NOUNS)
    return rf"(?:(?P<{prefix}size>{sizes}) )?(?:(?P<{prefix}colour>{colours}) )?(?P<{prefix}noun>{nouns})"


def _compile_grammar() -> list[tuple[re.Pattern[str], str, str | None, int]]:
    compiled = []
    for etype, by_key in TEMPLATES.items():
        for key, templates in by_key.items():
            for variant, template in enumerate(templates):
                pattern = re.escape(template)
                pattern = pattern.replace(re.escape("{t}"), _np_regex("t_"))
                pattern = pattern.replace(re.escape("{a}"), _np_regex("a_"))
                pattern = pattern.replace(re.escape("{k}"), "(?P<k>" + "|".join(ORDINAL_WORDS.values()) + ")")
                compiled.append((re.compile(pattern), etype, key, variant))
    return compiled


_GRAMMAR = _compile_grammar()
_ORDINAL_NUMBERS = {w: k for k, w in ORDINAL_WORDS.items()}


def _desc_from_match(m: re.Match[str], prefix: str) -> Desc | None:
    noun = m.group(prefix + "noun")
    size, colour = m.group(prefix + "size"), m.group(prefix + "colour")
    if noun in SHAPES:
        return Desc(shape=noun, colour=colour, size=size)
    if noun == "one" and size is None and colour is None:
        return None  # "the one" is not a phrase of this grammar
    return Desc(colour=colour, size=size, noun=noun)


def parse_expression(text: str) -> Expression:
    """Invert :func:`realise`. Raises ValueError unless the text has exactly one parse."""
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
        if etype == "relation":
            anchor = _desc_from_match(m, "a_")
            if anchor is None:
                continue
            fields.update(relation=key, anchor=anchor)
        else:
            fields["where"] = key
        if etype == "ordinal":
            fields["k"] = _ORDINAL_NUMBERS[m.group("k")]
        parses.append(Expression(**fields))
    if len(parses) != 1:
        raise ValueError(
            f"expression {text!r} has {'no parse' if not parses else f'{len(parses)} parses'} in the synthetic grammar"
        )
    return parses[0]


def _coordinate(obj: SceneObject, side: str) -> float:
    """Position along the axis counted from ``side`` (smaller = nearer that side)."""
    x, y = obj.centroid
    return {"left": x, "right": -x, "top": y, "bottom": -y}[side]


def _ranked(scene: Scene, cand: list[int], side: str, k: int) -> list[int]:
    """Objects that could be the k-th of ``cand`` counted from ``side``, given the margin.

    An object is a possible k-th if the number of candidates *clearly* before it (by more than
    the margin) is <= k-1 and the number *possibly* before it (within the margin) is >= k-1.
    """
    if len(cand) < k:
        return []
    m = scene.margin
    v = {i: _coordinate(scene.objects[i], side) for i in cand}
    out = []
    for i in cand:
        clearly = sum(1 for j in cand if j != i and v[j] < v[i] - m)
        possibly = sum(1 for j in cand if j != i and v[j] < v[i] + m)
        if clearly <= k - 1 <= possibly:
            out.append(i)
    return out


def _corner(scene: Scene, cand: list[int], corner: str) -> list[int]:
    """Candidates in the corner region widened by the margin, if any is inside the strict one."""
    vert, horiz = corner.split()
    m, w, h = scene.margin, scene.width, scene.height

    def inside(i: int, slack: float) -> bool:
        x, y = scene.objects[i].centroid
        ok_x = x <= CORNER_FRACTION * w + slack if horiz == "left" else x >= (1 - CORNER_FRACTION) * w - slack
        ok_y = y <= CORNER_FRACTION * h + slack if vert == "top" else y >= (1 - CORNER_FRACTION) * h - slack
        return ok_x and ok_y

    if not any(inside(i, 0.0) for i in cand):
        return []
    return [i for i in cand if inside(i, m)]


_DIRECTIONS = {"left_of": (-1, 0), "right_of": (1, 0), "above": (0, -1), "below": (0, 1)}


def _relation(scene: Scene, cand: list[int], anchor: int, relation: str) -> list[int]:
    cand = [i for i in cand if i != anchor]
    if not cand:
        return []
    ax, ay = scene.objects[anchor].centroid
    m = scene.margin
    if relation in _DIRECTIONS:
        ux, uy = _DIRECTIONS[relation]
        possible, clear = [], False
        for i in cand:
            x, y = scene.objects[i].centroid
            along = (x - ax) * ux + (y - ay) * uy  # > 0: on the named side of the anchor
            across = abs((x - ax) * uy - (y - ay) * ux)
            if along > 0:
                possible.append(i)
                clear = clear or (along >= m and across <= DIRECTION_CONE * along)
        return possible if clear else []
    dist = {i: math.dist(scene.objects[i].centroid, (ax, ay)) for i in cand}
    if relation == "closest_to":
        best = min(dist.values())
        return [i for i in cand if dist[i] < best + max(m, CLOSEST_RATIO * best)]
    if relation == "farthest_from":
        best = max(dist.values())
        return [i for i in cand if dist[i] > best - max(m, FARTHEST_RATIO * best)]
    raise ValueError(f"unknown relation {relation!r}; relations: {', '.join(RELATIONS)}")


def resolve(expr: Expression, scene: Scene) -> list[int]:
    """Indices (sorted) of every object a careful reader could take ``expr`` to refer to.

    An expression is usable iff this returns exactly one index. A relation whose anchor phrase
    does not pick out exactly one object refers to nothing (``[]``).
    """
    if expr.type not in EXPRESSION_TYPES:
        raise ValueError(f"unknown expression type {expr.type!r}; types: {', '.join(EXPRESSION_TYPES)}")
    if expr.type == "relation" and expr.anchor is None:
        raise ValueError("a relation needs an anchor")
    cand = tuple(scene.match(expr.target))
    anchors = tuple(scene.match(expr.anchor)) if expr.anchor is not None else ()
    return list(_resolve_sets(scene, expr.type, cand, anchors, expr.where, expr.relation, expr.k))


def _resolve_sets(
    scene: Scene,
    etype: str,
    cand: tuple[int, ...],
    anchors: tuple[int, ...],
    where: str | None,
    relation: str | None,
    k: int | None,
) -> tuple[int, ...]:
    """:func:`resolve` on the sets the noun phrases match (the meaning depends on nothing else);
    memoised per scene, so phrases and targets that share candidate sets cost one evaluation."""
    if etype == "attribute":
        return cand
    key = (etype, cand, anchors, where, relation, k)
    hit = scene._resolve_cache.get(key)
    if hit is not None:
        return hit
    if etype == "position":
        if where in SIDES:
            out = _ranked(scene, list(cand), where, 1)
        elif where in CORNERS:
            out = _corner(scene, list(cand), where)
        else:
            raise ValueError(f"unknown position {where!r}")
    elif etype == "ordinal":
        if where not in SIDES or k not in ORDINAL_WORDS:
            raise ValueError(f"bad ordinal (k={k!r}, from {where!r})")
        out = _ranked(scene, list(cand), where, k)
    else:  # relation: an anchor phrase that does not name exactly one object refers to nothing
        out = _relation(scene, list(cand), anchors[0], relation or "") if len(anchors) == 1 else []
    hit = scene._resolve_cache[key] = tuple(sorted(out))
    return hit


def is_unique(expr: Expression, scene: Scene, target: int) -> bool:
    """The generator's acceptance test: ``expr`` refers to ``target`` and nothing else."""
    return resolve(expr, scene) == [target]


def _descs_of(obj: SceneObject) -> list[Desc]:
    """The 8 noun phrases true of ``obj`` (each attribute named or not)."""
    out = []
    for shape in (obj.shape, None):
        for colour in (obj.colour, None):
            for size in (obj.size, None):
                out.append(Desc(shape, colour, size))
    return out


def _anchor_desc(scene: Scene, j: int) -> Desc | None:
    """The shortest noun phrase that names object ``j`` alone; with its shape if possible, then
    with its colour rather than its size ("the blue diamond" before "the big diamond")."""
    if j not in scene._anchor_cache:
        unique = [d for d in _descs_of(scene.objects[j]) if d.n_attributes and scene.match(d) == [j]]
        unique.sort(key=lambda d: (d.shape is None, d.n_attributes, d.colour is None))
        scene._anchor_cache[j] = unique[0] if unique else None
    return scene._anchor_cache[j]


def candidate_expressions(scene: Scene, target: int) -> dict[str, list[Expression]]:
    """Every expression (of the generator's policy) that refers to ``target`` alone, by type.

    Policy beyond uniqueness: position and relation phrases are used only when their noun
    phrase alone matches >= 2 objects (so the extra words matter), ordinals only when it
    matches >= k + 1 objects. Anchors are named by a short unique attribute phrase
    (:func:`_anchor_desc`). Structures come with ``variant=0`` and no noun choice.
    """
    if scene._candidates is None:
        scene._candidates = _all_candidates(scene)
    return {t: list(v) for t, v in scene._candidates[target].items()}


def _all_candidates(scene: Scene) -> list[dict[str, list[Expression]]]:
    """:func:`candidate_expressions` for every object of the scene at once.

    The meaning of an expression depends only on the set of objects its noun phrase matches
    (and on the anchor), so the noun phrases true of some object are grouped by that set, each
    (set, spatial term) is evaluated once, and a unique answer files the expression under the
    object it picks out (every phrase of the group is true of that object).
    """
    out: list[dict[str, list[Expression]]] = [{t: [] for t in EXPRESSION_TYPES} for _ in scene.objects]
    groups: dict[tuple[int, ...], list[Desc]] = {}
    seen: set[tuple] = set()
    for obj in scene.objects:
        for d in _descs_of(obj):
            if d.key not in seen:
                seen.add(d.key)
                groups.setdefault(tuple(scene.match(d)), []).append(d)

    def add(etype: str, cand: tuple[int, ...], ds: list[Desc], anchor_index: int = -1, **fields: Any) -> None:
        anchors = (anchor_index,) if anchor_index >= 0 else ()
        got = _resolve_sets(scene, etype, cand, anchors, fields.get("where"), fields.get("relation"), fields.get("k"))
        if len(got) == 1:
            out[got[0]][etype].extend(Expression(etype, d, **fields) for d in ds)

    anchors = [_anchor_desc(scene, j) for j in range(len(scene.objects))]
    for cand, ds in groups.items():
        named = [d for d in ds if d.n_attributes]
        if named:
            add("attribute", cand, named)
        if len(cand) >= 2:
            for where in SIDES + CORNERS:
                add("position", cand, ds, where=where)
        for k in ORDINAL_WORDS:
            if len(cand) >= k + 1:
                for where in SIDES:
                    add("ordinal", cand, ds, where=where, k=k)
        for j, anchor in enumerate(anchors):
            if anchor is None or sum(1 for i in cand if i != j) < 2:
                continue
            for relation in RELATIONS:
                add("relation", cand, ds, j, relation=relation, anchor=anchor)
    return out


def _dress(expr: Expression, rng: np.random.Generator) -> Expression:
    """Pick the surface form: a template variant and, for shapeless phrases, a noun."""

    def noun_for(d: Desc) -> Desc:
        if d.shape is not None:
            return d
        nouns = SHAPELESS_NOUNS if (d.colour or d.size) else SHAPELESS_NOUNS[:2]
        return replace(d, noun=nouns[int(rng.integers(len(nouns)))])

    n_variants = len(TEMPLATES[expr.type][_template_key(expr)])
    return replace(
        expr,
        target=noun_for(expr.target),
        anchor=noun_for(expr.anchor) if expr.anchor is not None else None,
        variant=int(rng.integers(n_variants)),
    )


def sample_expressions(scene: Scene, target: int, rng: np.random.Generator) -> list[tuple[Expression, str]]:
    """2-4 distinct (structure, text) pairs for ``target``, relations and ordinals preferred.

    Returns [] if ``target`` has no unique expression. Every returned text parses back to its
    structure and the structure resolves to ``target`` alone.
    """
    pools = candidate_expressions(scene, target)
    available = [t for t in EXPRESSION_TYPES if pools[t]]
    if not available:
        return []
    want = int(rng.integers(SENTENCES_PER_OBJECT[0], SENTENCES_PER_OBJECT[1] + 1))
    weights = dict(TYPE_WEIGHTS)
    chosen: list[tuple[Expression, str]] = []
    texts: set[str] = set()
    while len(chosen) < want:
        types = [t for t in EXPRESSION_TYPES if pools[t]]
        if not types:
            break
        p = np.array([weights[t] for t in types])
        etype = types[int(rng.choice(len(types), p=p / p.sum()))]
        pool = pools[etype]
        # naturalness: prefer phrases that name the shape
        w = np.array([2.0 if e.target.shape is not None else 1.0 for e in pool])
        expr = pool.pop(int(rng.choice(len(pool), p=w / w.sum())))
        weights[etype] *= TYPE_REPEAT_DECAY
        expr = _dress(expr, rng)
        text = realise(expr)
        if text in texts:
            continue
        if parse_expression(text) != expr or not is_unique(expr, scene, target):  # pragma: no cover
            raise AssertionError(f"internal grammar error on {text!r}")
        texts.add(text)
        chosen.append((expr, text))
    return chosen


# ============================================================================================
# The dataset writer
# ============================================================================================
def image_id_base(dataset_name: str) -> int:
    """First image id of a synthetic dataset: far above COCO's ids, distinct per dataset name."""
    return _IMAGE_ID_FLOOR + (zlib.crc32(dataset_name.encode("utf-8")) % 99_999) * _IMAGE_ID_STRIDE


def _image_file_name(image_id: int) -> str:
    return f"COCO_train2014_{image_id:012d}.jpg"


def _scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS.index(split), int(index)]))


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _save_jpeg(path: Path, image: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    # 4:4:4 chroma: the default 4:2:0 would smear the colour of small objects across their edges
    Image.fromarray(image, mode="RGB").save(tmp, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    os.replace(tmp, path)


def _segmentation(obj: SceneObject, height: int, width: int) -> tuple[list, float, list[float]]:
    """(segmentation, area, bbox) of the visible region: polygon if whole, else RLE."""
    mu = _mask_api()
    if obj.fully_visible:
        seg: list = [list(obj.polygon)]
        rle = mu.frPyObjects(seg, height, width)[0]
    else:
        rle = mu.encode(np.asfortranarray(obj.mask.astype(np.uint8)))
        seg = [{"size": [int(height), int(width)], "counts": rle["counts"].decode("ascii")}]
    area = float(mu.area(rle))
    bbox = [round(float(v), 2) for v in mu.toBbox(rle)]
    return seg, area, bbox


def _tokens(text: str) -> list[str]:
    return text.lower().split()


def _params(seed: int, num_images: Mapping[str, int], image_size: tuple[int, int], dataset_name: str) -> dict:
    return {
        "seed": int(seed),
        "num_images": {s: int(num_images.get(s, 0)) for s in SPLITS},
        "image_size": [int(image_size[0]), int(image_size[1])],
        "dataset_name": dataset_name,
        "generator_version": GENERATOR_VERSION,
    }


def _validate(num_images: Mapping[str, int], image_size: Sequence[int], dataset_name: str) -> None:
    unknown = [s for s in num_images if s not in SPLITS]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown} in num_images; splits: {', '.join(SPLITS)}")
    if any(int(v) < 0 for v in num_images.values()) or sum(int(v) for v in num_images.values()) < 1:
        raise ValueError(f"num_images must be non-negative and ask for at least one image, got {dict(num_images)}")
    if sum(int(v) for v in num_images.values()) >= _IMAGE_ID_STRIDE:
        raise ValueError(f"at most {_IMAGE_ID_STRIDE - 1} images per synthetic dataset")
    if len(image_size) != 2 or min(int(v) for v in image_size) < 48:
        raise ValueError(f"image_size must be (width, height) with both >= 48, got {image_size!r}")
    if not dataset_name or dataset_name in ("images", ".", "..") or "/" in dataset_name or os.sep in dataset_name:
        raise ValueError(f"bad dataset_name {dataset_name!r}")


def _cached_summary(root: Path, ds_dir: Path, params: dict) -> dict | None:
    meta_path = ds_dir / META_NAME
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if meta.get("params") != params:
        return None
    if not (ds_dir / INSTANCES_NAME).is_file() or not (ds_dir / REFS_NAME).is_file():
        return None
    image_dir = root / IMAGE_SUBDIR
    base, total = meta.get("image_id_base"), sum(params["num_images"].values())
    if not isinstance(base, int) or not all((image_dir / _image_file_name(base + k)).is_file() for k in range(total)):
        return None
    return meta


def _auto_workers(n_images: int) -> int:
    """Two processes for big runs, where fork exists (no re-import of the caller's script)."""
    import multiprocessing

    if n_images < 200 or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    if multiprocessing.current_process().daemon:  # daemonic processes cannot have children
        return 1
    return max(1, min(2, os.cpu_count() or 1))


def _generate_image(job: tuple) -> tuple[dict, list[dict]]:
    """Render one image, write its JPEG, and return its images[] entry and, per object, the
    annotation (without ids) and sentences. Top-level so that a process pool can run it."""
    seed, split, index, width, height, image_id, image_dir = job
    rng = _scene_rng(seed, split, index)
    scene = render_scene(rng, (width, height), OBJECTS_PER_SPLIT[split])
    file_name = _image_file_name(image_id)
    _save_jpeg(Path(image_dir) / file_name, scene.image)
    image = {
        "id": image_id, "file_name": file_name, "height": height, "width": width, "license": 7,
        "coco_url": "", "flickr_url": "", "date_captured": "",
    }
    objects = []
    for i, obj in enumerate(scene.objects):
        seg, area, bbox = _segmentation(obj, height, width)
        chosen = sample_expressions(scene, i, rng)
        objects.append(
            {
                "annotation": {
                    "category_id": SHAPES.index(obj.shape) + 1, "bbox": bbox, "area": area, "iscrowd": 0,
                    "segmentation": seg,
                },
                "sentences": [{"raw": text, "type": expr.type} for expr, text in chosen],
                "has_distractor": any(
                    o.shape == obj.shape or o.colour == obj.colour for j, o in enumerate(scene.objects) if j != i
                ),
            }
        )
    return image, objects


def _canonical(obj: Any) -> Any:
    """A copy with every string interned. Pickle memoises objects by identity, so without this
    the bytes would depend on which equal strings happen to be one object (e.g. whether a
    sentence came back from a worker process)."""
    if isinstance(obj, str):
        return sys.intern(obj)
    if isinstance(obj, dict):
        return {_canonical(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_canonical(v) for v in obj]
    return obj


def _enforce_type_fraction(split_refs: list[dict], rng: np.random.Generator) -> None:
    """Drop attribute/position sentences (never a ref's last) until relations + ordinals >= 1/3."""
    def counts() -> tuple[int, int]:
        total = sum(len(r["sentences"]) for r in split_refs)
        ro = sum(1 for r in split_refs for s in r["sentences"] if s["type"] in ("relation", "ordinal"))
        return total, ro

    total, ro = counts()
    if total == 0 or ro >= MIN_RELATION_ORDINAL_FRACTION * total:
        return
    order = [int(i) for i in rng.permutation(len(split_refs))]
    order.sort(key=lambda i: -len(split_refs[i]["sentences"]))  # stable: fullest refs first
    while ro < MIN_RELATION_ORDINAL_FRACTION * total:
        progress = False
        for i in order:
            sents = split_refs[i]["sentences"]
            drop = [k for k, s in enumerate(sents) if s["type"] in ("attribute", "position")]
            if len(sents) >= 2 and drop:
                del sents[drop[-1]]
                total -= 1
                progress = True
                if ro >= MIN_RELATION_ORDINAL_FRACTION * total:
                    return
        if not progress:
            return  # cannot do better without deleting refs; reported in the summary


def generate_synthetic_refer(
    root: str | os.PathLike[str],
    seed: int = 0,
    num_images: Mapping[str, int] | None = None,
    image_size: tuple[int, int] = (160, 128),
    dataset_name: str = "synthetic",
    force: bool = False,
    progress: bool = True,
    workers: int | None = None,
) -> dict[str, Any]:
    """Write the synthetic benchmark under ``root`` in the refer layout; return a summary.

    ``num_images``: images per split (default train 2000, val 200, testA 100, testB 100).
    ``image_size``: (width, height). Same parameters -> same bytes. If ``<root>/<dataset_name>/
    synthetic_meta.json`` records the same parameters (and the files exist) nothing is written
    and the stored summary is returned with ``cached=True``; ``force=True`` regenerates.
    ``workers``: processes that render images (the output is the same bytes for any number);
    default: up to 2 for 200+ images where ``fork`` is available, else 1.
    ``progress`` shows a tqdm bar.
    """
    num_images = dict(DEFAULT_NUM_IMAGES if num_images is None else num_images)
    _validate(num_images, image_size, dataset_name)
    root = Path(os.path.expanduser(os.fspath(root)))
    ds_dir = root / dataset_name
    image_dir = root / IMAGE_SUBDIR
    params = _params(seed, num_images, tuple(image_size), dataset_name)  # type: ignore[arg-type]
    if not force:
        meta = _cached_summary(root, ds_dir, params)
        if meta is not None:
            return {**meta["summary"], "root": str(root), "cached": True, "seconds": 0.0}

    from ..runtime.progress import progress_bar

    start = time.perf_counter()
    ds_dir.mkdir(parents=True, exist_ok=True)
    image_dir.mkdir(parents=True, exist_ok=True)
    (ds_dir / META_NAME).unlink(missing_ok=True)  # from here on the dataset is not complete
    width, height = int(image_size[0]), int(image_size[1])
    base = image_id_base(dataset_name)

    jobs = []  # (seed, split, index, width, height, image_id, image_dir)
    for split in SPLITS:
        for index in range(params["num_images"][split]):
            jobs.append((int(seed), split, index, width, height, base + len(jobs), str(image_dir)))
    images: list[dict] = []
    annotations: list[dict] = []
    refs_by_split: dict[str, list[dict]] = {s: [] for s in SPLITS}
    objects_per_split = {s: 0 for s in SPLITS}
    distractor_refs = 0
    ann_id = 0
    bar = progress_bar(None, progress, total=len(jobs), desc=f"synthetic {dataset_name}", unit="img")
    workers = _auto_workers(len(jobs)) if workers is None else max(1, int(workers))
    if workers == 1:
        results = map(_generate_image, jobs)
        pool = None
    else:  # every image has its own random stream, so the result does not depend on `workers`
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # fork (Linux) needs no re-import of the caller's __main__; the workers use only numpy,
        # PIL and pycocotools. Elsewhere spawn (the caller then needs the usual __main__ guard).
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))
        results = pool.map(_generate_image, jobs, chunksize=16)
    try:
        for job, (image, objects) in zip(jobs, results):
            split, image_id = job[1], job[5]
            images.append(image)
            objects_per_split[split] += len(objects)
            for obj in objects:
                ann_id += 1
                annotations.append({"id": ann_id, "image_id": image_id, **obj["annotation"]})
                if not obj["sentences"]:
                    continue
                distractor_refs += obj["has_distractor"]
                refs_by_split[split].append(
                    {
                        "ann_id": ann_id, "image_id": image_id, "category_id": obj["annotation"]["category_id"],
                        "split": split, "file_name": f"COCO_train2014_{image_id:012d}_{ann_id}.jpg",
                        "sentences": obj["sentences"],
                    }
                )
            bar.update(1)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)

    # relations + ordinals >= 1/3 of every split (seeded, deterministic)
    for split in SPLITS:
        split_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 99, SPLITS.index(split)]))
        _enforce_type_fraction(refs_by_split[split], split_rng)

    refs: list[dict] = []
    sent_id = 0
    for split in SPLITS:
        for ref in refs_by_split[split]:
            sentences = []
            for s in ref["sentences"]:
                tokens = _tokens(s["raw"])
                sentences.append(
                    {"tokens": tokens, "raw": s["raw"], "sent_id": sent_id, "sent": " ".join(tokens), "type": s["type"]}
                )
                sent_id += 1
            refs.append(
                {
                    "ref_id": len(refs), "ann_id": ref["ann_id"], "image_id": ref["image_id"],
                    "category_id": ref["category_id"], "split": ref["split"],
                    "sent_ids": [s["sent_id"] for s in sentences], "sentences": sentences,
                    "file_name": ref["file_name"],
                }
            )

    instances = {
        "info": {
            "description": f"lavt synthetic referring-shapes benchmark ({dataset_name})",
            "version": GENERATOR_VERSION,
            "year": 2025,
            "contributor": "lavt (procedurally generated)",
            "date_created": "",
            "url": "",
        },
        "licenses": [{"id": 7, "name": "No known copyright restrictions", "url": ""}],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": s, "supercategory": "shape"} for i, s in enumerate(SHAPES)],
    }
    _atomic_write_bytes(ds_dir / INSTANCES_NAME, json.dumps(instances).encode("utf-8"))
    _atomic_write_bytes(ds_dir / REFS_NAME, pickle.dumps(_canonical(refs), protocol=2))

    # images of an earlier, larger generation of this dataset (same id range) are stale
    keep = {img["file_name"] for img in images}
    for p in image_dir.glob("COCO_train2014_*.jpg"):
        try:
            pid = int(p.stem.rsplit("_", 1)[1])
        except ValueError:
            continue
        if base <= pid < base + _IMAGE_ID_STRIDE and p.name not in keep:
            p.unlink(missing_ok=True)

    summary = _summary(params, refs, objects_per_split, distractor_refs, base)
    meta = {"params": params, "image_id_base": base, "summary": summary}
    _atomic_write_bytes(ds_dir / META_NAME, json.dumps(meta, indent=2).encode("utf-8"))
    return {**summary, "root": str(root), "cached": False, "seconds": round(time.perf_counter() - start, 2)}


def _summary(params: dict, refs: list[dict], objects_per_split: dict, distractor_refs: int, base: int) -> dict:
    splits: dict[str, dict] = {}
    for split in SPLITS:
        rs = [r for r in refs if r["split"] == split]
        types = {t: 0 for t in EXPRESSION_TYPES}
        for r in rs:
            for s in r["sentences"]:
                types[s["type"]] += 1
        n = sum(types.values())
        splits[split] = {
            "images": params["num_images"][split],
            "objects": objects_per_split[split],
            "refs": len(rs),
            "sentences": n,
            "types": types,
            "type_fractions": {t: round(c / n, 4) if n else 0.0 for t, c in types.items()},
            "relation_ordinal_fraction": round((types["relation"] + types["ordinal"]) / n, 4) if n else 0.0,
        }
    return {
        "dataset_name": params["dataset_name"],
        "generator_version": GENERATOR_VERSION,
        "seed": params["seed"],
        "image_size": params["image_size"],
        "image_id_base": base,
        "splits": splits,
        "refs": len(refs),
        "sentences": sum(v["sentences"] for v in splits.values()),
        "distractor_fraction": round(distractor_refs / len(refs), 4) if refs else 0.0,
    }


# ============================================================================================
# Re-checking a written dataset
# ============================================================================================
def _read_meta(root: Path, dataset_name: str) -> dict:
    path = root / dataset_name / META_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a (complete) synthetic dataset; run generate_synthetic_refer")
    return json.loads(path.read_text())


def _split_and_index(meta: dict, image_id: int) -> tuple[str, int]:
    k = image_id - meta["image_id_base"]
    if k >= 0:
        for split in SPLITS:
            n = meta["params"]["num_images"][split]
            if k < n:
                return split, k
            k -= n
    raise KeyError(f"image {image_id} is not an image of this synthetic dataset")


def load_scene(root: str | os.PathLike[str], image_id: int, dataset_name: str = "synthetic") -> Scene:
    """Re-render the in-memory :class:`Scene` (objects, exact image, masks) of a written image."""
    root = Path(os.path.expanduser(os.fspath(root)))
    meta = _read_meta(root, dataset_name)
    split, index = _split_and_index(meta, int(image_id))
    width, height = meta["params"]["image_size"]
    rng = _scene_rng(meta["params"]["seed"], split, index)
    return render_scene(rng, (width, height), OBJECTS_PER_SPLIT[split])


def verify_unique_referents(root: str | os.PathLike[str], dataset_name: str = "synthetic") -> dict[str, Any]:
    """Re-render every scene from the stored parameters and re-check the written dataset.

    For every image: the annotations decode (pycocotools) to the re-rendered visible masks, in
    drawing order. For every sentence: the text parses (exactly one parse) and its structure
    resolves to the ref's object alone. Returns counts and a list of ``errors`` (empty = good).
    """
    root = Path(os.path.expanduser(os.fspath(root)))
    ds_dir = root / dataset_name
    meta = _read_meta(root, dataset_name)
    params, base = meta["params"], meta["image_id_base"]
    instances = json.loads((ds_dir / INSTANCES_NAME).read_text())
    with open(ds_dir / REFS_NAME, "rb") as f:
        refs = pickle.load(f)
    width, height = params["image_size"]
    anns_by_image: dict[int, list[dict]] = {}
    for ann in instances["annotations"]:
        anns_by_image.setdefault(ann["image_id"], []).append(ann)
    refs_by_image: dict[int, list[dict]] = {}
    for ref in refs:
        refs_by_image.setdefault(ref["image_id"], []).append(ref)

    errors: list[str] = []
    n_images = n_sentences = 0
    k = 0
    for split in SPLITS:
        for index in range(params["num_images"][split]):
            image_id = base + k
            k += 1
            n_images += 1
            scene = load_scene(root, image_id, dataset_name)
            anns = sorted(anns_by_image.get(image_id, []), key=lambda a: a["id"])
            if len(anns) != len(scene.objects):
                errors.append(f"image {image_id}: {len(anns)} annotations for {len(scene.objects)} objects")
                continue
            index_of = {a["id"]: i for i, a in enumerate(anns)}
            for i, ann in enumerate(anns):
                seg = ann["segmentation"]
                if isinstance(seg[0], list):
                    rles = _mask_api().frPyObjects(seg, height, width)
                else:
                    rles = [{"size": r["size"], "counts": r["counts"].encode("ascii")} for r in seg]
                decoded = _decode(rles).any(axis=2)
                if not np.array_equal(decoded, scene.objects[i].mask):
                    errors.append(f"annotation {ann['id']}: decoded mask differs from the drawn object")
            for ref in refs_by_image.get(image_id, []):
                if ref["split"] != split:
                    errors.append(f"ref {ref['ref_id']}: split {ref['split']!r}, image is in {split!r}")
                target = index_of.get(ref["ann_id"])
                if target is None:
                    errors.append(f"ref {ref['ref_id']}: annotation {ref['ann_id']} is not in image {image_id}")
                    continue
                for s in ref["sentences"]:
                    n_sentences += 1
                    try:
                        expr = parse_expression(s["raw"])
                    except ValueError as e:
                        errors.append(f"sentence {s['sent_id']}: {e}")
                        continue
                    if expr.type != s.get("type"):
                        errors.append(f"sentence {s['sent_id']}: type {s.get('type')!r}, parses as {expr.type!r}")
                    got = resolve(expr, scene)
                    if got != [target]:
                        errors.append(f"sentence {s['sent_id']} {s['raw']!r}: refers to objects {got}, not [{target}]")
    return {"images": n_images, "refs": len(refs), "sentences": n_sentences, "errors": errors}
