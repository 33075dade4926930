"""The image set's expressions: attribute, position, relation and ordinal phrases and their meaning.

The grammar is in one place: :data:`TEMPLATES` around the shared noun phrases of :mod:`.grammar`.

    ``attribute``  "the red circle", "big star", "the small blue one"
    ``position``   "the leftmost square", "the red shape at the top", "the shape in the top left corner"
    ``relation``   "the star left of the blue diamond", "the circle closest to the red square"
    ``ordinal``    "the second circle from the left", "the third shape counting from the top"

Every expression is an :class:`Expression` structure; :func:`resolve` implements its meaning on a
scene and returns every object a careful reader could take as its referent. Geometry uses the
centroids of the *visible* masks with a margin of :attr:`Scene.margin` pixels (6% of the shorter
side): an object is "leftmost" only if no other candidate is within the margin of it, "left of"
needs a gap of at least the margin (and a mostly horizontal offset, while any other candidate even
slightly to the left makes the phrase ambiguous), "closest" needs the runner-up to be clearly
farther, and so on. The generator keeps an expression only if ``resolve`` returns exactly the
intended object, only if the extra words are informative (a position, relation or ordinal is used
only when its noun phrase alone matches several objects) and only if the text parses back
(:func:`parse_expression`) to the same structure. Each object gets 2-4 expressions (relations and
ordinals preferred). The vocabulary is ~50 words and no expression is longer than 12 words, well
inside LAVT's 20 BERT tokens.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .grammar import (
    Desc,
    _compile_templates,
    _desc_from_match,
    _descs_of,
    _draw_expressions,
    _Expression,
    _noun_phrase,
    _np_regex,
    _parse,
    _phrases_by_referents,
    _with_noun,
)
from .render import SceneObject
from .scenes import Scene

__all__ = [
    "EXPRESSION_TYPES",
    "TEMPLATES",
    "Expression",
    "candidate_expressions",
    "is_unique",
    "parse_expression",
    "realise",
    "resolve",
    "sample_expressions",
]

EXPRESSION_TYPES = ("attribute", "position", "relation", "ordinal")

# geometry of the expressions (see resolve(); the margin is grammar.MARGIN_FRACTION)
CORNER_FRACTION = 0.35  # a corner region spans 35% of the width and of the height
DIRECTION_CONE = 1.0  # "left of": |dy| <= dx (mostly sideways)
CLOSEST_RATIO = 0.25  # runner-up must be >= max(margin, 25%) farther
FARTHEST_RATIO = 0.15

SENTENCES_PER_OBJECT = (2, 4)  # inclusive
TYPE_WEIGHTS = {"attribute": 1.0, "position": 1.0, "relation": 1.6, "ordinal": 1.6}


@dataclass(frozen=True)
class Expression(_Expression):
    """One referring expression as a structure.

    ``type`` is one of :data:`EXPRESSION_TYPES`. ``target`` is the head noun phrase.
    position: ``where`` in left/right/top/bottom or a corner ("top left", ...);
    relation: ``relation`` (left_of, right_of, above, below, closest_to, farthest_from) and
    ``anchor``; ordinal: ``k`` (2 or 3) and ``where`` (left/right/top/bottom: counted from).
    ``variant`` picks the surface template (it does not change the meaning).
    """

    where: str | None = None
    relation: str | None = None
    anchor: Desc | None = None
    k: int | None = None
    variant: int = 0


SIDES = ("left", "right", "top", "bottom")
CORNERS = ("top left", "top right", "bottom left", "bottom right")
RELATIONS = ("left_of", "right_of", "above", "below", "closest_to", "farthest_from")
ORDINAL_WORDS = {2: "second", 3: "third"}

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


_GRAMMAR = _compile_templates(TEMPLATES, a=_np_regex("a_"), k="(?P<k>" + "|".join(ORDINAL_WORDS.values()) + ")")
_ORDINAL_NUMBERS = {w: k for k, w in ORDINAL_WORDS.items()}


def parse_expression(text: str) -> Expression:
    """Invert :func:`realise`. Raises ValueError unless the text has exactly one parse."""
    return _parse(text, _GRAMMAR, "synthetic", _expression_from_match)


def _expression_from_match(
    m: re.Match[str], etype: str, key: str | None, target: Desc, variant: int
) -> Expression | None:
    """The structure a template's match stands for (None: an anchor phrase that is not one)."""
    fields: dict[str, Any] = {"type": etype, "target": target, "variant": variant}
    if etype == "relation":
        anchor = _desc_from_match(m, "a_")
        if anchor is None:
            return None
        fields.update(relation=key, anchor=anchor)
    else:
        fields["where"] = key
    if etype == "ordinal":
        fields["k"] = _ORDINAL_NUMBERS[m.group("k")]
    return Expression(**fields)


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
    groups = _phrases_by_referents(scene)

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
    n_variants = len(TEMPLATES[expr.type][_template_key(expr)])
    return replace(
        expr,
        target=_with_noun(expr.target, rng),
        anchor=_with_noun(expr.anchor, rng) if expr.anchor is not None else None,
        variant=int(rng.integers(n_variants)),
    )


def sample_expressions(scene: Scene, target: int, rng: np.random.Generator) -> list[tuple[Expression, str]]:
    """2-4 distinct (structure, text) pairs for ``target``, relations and ordinals preferred.

    Returns [] if ``target`` has no unique expression. Every returned text parses back to its
    structure and the structure resolves to ``target`` alone.
    """

    def still_true(expr: Expression, text: str) -> bool:
        return parse_expression(text) == expr and is_unique(expr, scene, target)

    pools = candidate_expressions(scene, target)
    return _draw_expressions(pools, TYPE_WEIGHTS, SENTENCES_PER_OBJECT, rng, _dress, realise, still_true)
