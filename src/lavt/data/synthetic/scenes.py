"""Scenes of the image set: objects drawn at random under the occlusion rules, or placed by hand.

A scene holds 3-7 objects on one background, drawn with :mod:`.render`. Objects may overlap (later
ones are on top) but every object keeps >= 65% of its area and >= :data:`.render.MIN_VISIBLE_PIXELS`
pixels visible, and two objects of the same colour never touch. Attributes are drawn so that most
scenes hold distractors: each new object copies the shape or the colour of an earlier one with
probability :data:`.render.SHARE_PROBABILITY`. The visible mask of an object is its mask minus
the masks of the objects drawn after it, and the image is painted from the visible masks, so the
annotations are exact by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from .grammar import Desc, _Referents
from .render import (
    MIN_VISIBLE_PIXELS,
    SceneObject,
    _background,
    _draw_count,
    _draw_extent,
    _draw_jitter,
    _keeps_visible,
    _make_object,
    _paint,
    _place,
    _sample_attributes,
    _spec_pose,
)

__all__ = ["Scene", "build_scene", "render_scene"]


@dataclass
class Scene(_Referents):
    """A rendered scene: objects in drawing order, the RGB image and background style."""

    width: int
    height: int
    objects: list[SceneObject]
    image: np.ndarray  # uint8 (H, W, 3)
    background: str = "gradient"

    def __post_init__(self) -> None:
        self._start_memo(self.width, self.height)
        self._anchor_cache: dict[int, Desc | None] = {}

    @property
    def referents(self) -> list[SceneObject]:
        return self.objects

    @property
    def masks(self) -> np.ndarray:
        """Visible masks, bool (N, H, W)."""
        if not self.objects:
            return np.zeros((0, self.height, self.width), dtype=bool)
        return np.stack([o.mask for o in self.objects])


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
        attrs, extent, rotation, mirror = _spec_pose(s, width, height)
        objects.append(_make_object(*attrs, tuple(s["center"]), extent, rotation, mirror, (0, 0, 0), width, height))
    background, style = _background(rng, width, height)
    return _compose(width, height, objects, background, style, rng)


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
    n = _draw_count(rng, num_objects)
    short = min(width, height)

    def candidates(placed: list[SceneObject]) -> Iterator[SceneObject]:
        attrs = _sample_attributes(rng, [o.attributes for o in placed])
        while True:
            extent = _draw_extent(rng, attrs[2], short)
            half = extent / 2 + 1.5
            if 2 * half >= min(width, height):
                raise ValueError(f"image size {image_size} is too small for the object sizes")
            center = (rng.uniform(half, width - half), rng.uniform(half, height - half))
            rotation, mirror, offset = _draw_jitter(rng)
            yield _make_object(*attrs, center, extent, rotation, mirror, offset, width, height)

    objects = _place(n, candidates, _placement_ok)
    if objects is None:
        raise ValueError(f"cannot place {n} objects in a {width}x{height} image under the occlusion rules")
    background, style = _background(rng, width, height)
    return _compose(width, height, objects, background, style, rng)


def _placement_ok(objects: list[SceneObject], new: SceneObject) -> bool:
    """Would every earlier object stay visible enough with ``new`` drawn on top?"""
    if int(new.full_mask.sum()) < MIN_VISIBLE_PIXELS:
        return False
    for obj in objects:
        if not _keeps_visible(obj, obj.mask, obj.full_mask.sum(), new, MIN_VISIBLE_PIXELS):
            return False
    for obj in objects:  # accepted: update the running visible masks
        obj.mask = obj.mask & ~new.full_mask
    return True
