"""The expression grammar both synthetic sets share: noun phrases, templates and their parsing, the draw.

A noun phrase (:class:`Desc`) names any of an object's shape, colour and size ("the small blue
star", "the red one", "the shape"); what it matches is all the meaning it has, so phrases are
grouped by the objects they match and each group is resolved once. Each set has its own
templates around the noun phrase ({t}); both compile them into regular expressions so that every
text parses back to exactly one structure, and both draw a referent's expressions the same way
(:func:`_draw_expressions`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Mapping, Sequence, TypeVar

import numpy as np

from .render import COLOURS, SHAPES, SIZES

__all__ = ["Desc"]

MARGIN_FRACTION = 0.06  # spatial margin = max(4 px, 6% of the shorter side)
SHAPELESS_NOUNS = ("shape", "object", "one")  # "one" only after an adjective
TYPE_REPEAT_DECAY = 0.3  # a type's weight is multiplied by this after each use for one referent

_Expr = TypeVar("_Expr", bound="_Expression")


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

    def fits(self, thing: Any) -> bool:
        """Does ``thing`` (an object or a track) have every attribute this phrase names?"""
        return (
            (self.shape is None or thing.shape == self.shape)
            and (self.colour is None or thing.colour == self.colour)
            and (self.size is None or thing.size == self.size)
        )


@dataclass(frozen=True)
class _Expression:
    """What every referring expression has: its type and the noun phrase of its referent."""

    type: str
    target: Desc

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Referents:
    """What expressions are resolved against (a scene's objects, a clip's tracks), with the memo
    tables of their meaning; a scene or clip is not modified after it is composed."""

    def _start_memo(self, width: int, height: int) -> None:
        self._match_cache: dict[tuple, list[int]] = {}
        self._resolve_cache: dict[tuple, tuple[int, ...]] = {}
        self._candidates: list[dict[str, list[Any]]] | None = None
        self._margin = max(4.0, MARGIN_FRACTION * min(width, height))

    @property
    def referents(self) -> Sequence[Any]:
        raise NotImplementedError

    @property
    def margin(self) -> float:
        """Pixels that separate a clear spatial statement from an ambiguous one."""
        return self._margin

    def match(self, desc: Desc) -> list[int]:
        """Indices of the referents whose attributes agree with every attribute ``desc`` names."""
        if desc.key not in self._match_cache:
            self._match_cache[desc.key] = [i for i, thing in enumerate(self.referents) if desc.fits(thing)]
        return self._match_cache[desc.key]


def _descs_of(thing: Any) -> list[Desc]:
    """The 8 noun phrases true of ``thing`` (each attribute named or not)."""
    out = []
    for shape in (thing.shape, None):
        for colour in (thing.colour, None):
            for size in (thing.size, None):
                out.append(Desc(shape, colour, size))
    return out


def _phrases_by_referents(where: _Referents) -> dict[tuple[int, ...], list[Desc]]:
    """The noun phrases true of some referent, grouped by the referents each matches (the meaning
    of an expression depends on nothing else, so each group is resolved once)."""
    groups: dict[tuple[int, ...], list[Desc]] = {}
    seen: set[tuple] = set()
    for thing in where.referents:
        for d in _descs_of(thing):
            if d.key not in seen:
                seen.add(d.key)
                groups.setdefault(tuple(where.match(d)), []).append(d)
    return groups


def _noun_phrase(desc: Desc) -> str:
    """[size] [colour] noun -- "small blue star", "red one", "shape"."""
    noun = desc.shape or desc.noun or "shape"
    if noun == "one" and desc.colour is None and desc.size is None:
        noun = "shape"
    return " ".join(w for w in (desc.size, desc.colour, noun) if w)


def _with_noun(desc: Desc, rng: np.random.Generator) -> Desc:
    """A shapeless phrase gets its noun: "shape" or "object", after an adjective also "one"."""
    if desc.shape is not None:
        return desc
    nouns = SHAPELESS_NOUNS if (desc.colour or desc.size) else SHAPELESS_NOUNS[:2]
    return replace(desc, noun=nouns[int(rng.integers(len(nouns)))])


def _np_regex(prefix: str) -> str:
    sizes = "|".join(SIZES)
    colours = "|".join(COLOURS)
    nouns = "|".join(SHAPES + SHAPELESS_NOUNS)
    return rf"(?:(?P<{prefix}size>{sizes}) )?(?:(?P<{prefix}colour>{colours}) )?(?P<{prefix}noun>{nouns})"


def _desc_from_match(m: re.Match[str], prefix: str) -> Desc | None:
    noun = m.group(prefix + "noun")
    size, colour = m.group(prefix + "size"), m.group(prefix + "colour")
    if noun in SHAPES:
        return Desc(shape=noun, colour=colour, size=size)
    if noun == "one" and size is None and colour is None:
        return None  # "the one" is not a phrase of this grammar
    return Desc(colour=colour, size=size, noun=noun)


_Compiled = list[tuple[re.Pattern[str], str, str | None, int]]  # (pattern, type, template key, variant)


def _compile_templates(templates: Mapping[str, Mapping[str | None, Sequence[str]]], **slots: str) -> _Compiled:
    """Every template as a regular expression: {t} matches a noun phrase, each further {slot} the
    regular expression given for it."""
    slots = {"t": _np_regex("t_"), **slots}
    compiled = []
    for etype, by_key in templates.items():
        for key, variants in by_key.items():
            for variant, template in enumerate(variants):
                pattern = re.escape(template)
                for slot, regex in slots.items():
                    pattern = pattern.replace(re.escape("{" + slot + "}"), regex)
                compiled.append((re.compile(pattern), etype, key, variant))
    return compiled


def _parse(
    text: str,
    grammar: _Compiled,
    grammar_name: str,
    build: Callable[[re.Match[str], str, str | None, Desc, int], _Expr | None],
) -> _Expr:
    """The one structure ``text`` has in ``grammar``; ``build(match, type, key, target, variant)``
    makes it from a template's match (None: not a phrase of the grammar after all)."""
    norm = " ".join(text.lower().split())
    parses = []
    for pattern, etype, key, variant in grammar:
        m = pattern.fullmatch(norm)
        if m is None:
            continue
        target = _desc_from_match(m, "t_")
        if target is None:
            continue
        expr = build(m, etype, key, target, variant)
        if expr is not None:
            parses.append(expr)
    if len(parses) != 1:
        found = "no parse" if not parses else f"{len(parses)} parses"
        raise ValueError(f"expression {text!r} has {found} in the {grammar_name} grammar")
    return parses[0]


def _draw_expressions(
    pools: dict[str, list[_Expr]],
    type_weights: Mapping[str, float],
    how_many: tuple[int, int],
    rng: np.random.Generator,
    dress: Callable[[_Expr, np.random.Generator], _Expr],
    realise: Callable[[_Expr], str],
    still_true: Callable[[_Expr, str], bool],
) -> list[tuple[_Expr, str]]:
    """Distinct (structure, text) pairs for one referent, as many as drawn from ``how_many``
    (inclusive) if the candidate ``pools`` (by type) allow; [] if they are empty.

    Each pick draws a type by weight (a type's weight decays with each use, so a referent gets
    varied expressions), then a structure of that type (phrases that name the shape twice as
    likely: they read more naturally), then its surface form (``dress``). ``still_true(expr,
    text)`` re-checks that the text parses back to the structure and refers to the referent alone.
    """
    if not any(pools.values()):
        return []
    want = int(rng.integers(how_many[0], how_many[1] + 1))
    weights = dict(type_weights)
    chosen: list[tuple[_Expr, str]] = []
    texts: set[str] = set()
    while len(chosen) < want:
        types = [t for t in pools if pools[t]]
        if not types:
            break
        p = np.array([weights[t] for t in types])
        etype = types[int(rng.choice(len(types), p=p / p.sum()))]
        pool = pools[etype]
        w = np.array([2.0 if e.target.shape is not None else 1.0 for e in pool])
        expr = dress(pool.pop(int(rng.choice(len(pool), p=w / w.sum()))), rng)
        weights[etype] *= TYPE_REPEAT_DECAY
        text = realise(expr)
        if text in texts:
            continue
        if not still_true(expr, text):  # pragma: no cover
            raise AssertionError(f"internal grammar error on {text!r}")
        texts.add(text)
        chosen.append((expr, text))
    return chosen
