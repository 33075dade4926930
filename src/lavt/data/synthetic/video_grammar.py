"""The video set's expressions: appearance, position and motion phrases and their meaning on a clip.

The grammar is :data:`VIDEO_TEMPLATES` around the shared noun phrases of :mod:`.grammar`.

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
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from .clips import DIRECTIONS, SIDES, Clip, Track
from .grammar import (
    Desc,
    _compile_templates,
    _draw_expressions,
    _Expression,
    _noun_phrase,
    _parse,
    _phrases_by_referents,
    _with_noun,
)

__all__ = [
    "MOTIONS",
    "VIDEO_EXPRESSION_TYPES",
    "VIDEO_TEMPLATES",
    "VideoExpression",
    "candidate_video_expressions",
    "motion_truth",
    "parse_video_expression",
    "realise_video",
    "resolve_video",
    "sample_video_expressions",
]

VIDEO_EXPRESSION_TYPES = ("appearance", "position", "motion")

# meaning of the motion words (see resolve_video; moving and still are clips.MOVE_MIN, STILL_MAX)
MOTION_CONE = 35.0  # degrees: "moving left" needs every step within this of left
TOWARD_COS = 0.5  # a step "goes left" if within 60 degrees of left (for the false test)
BORDER_TOUCH = 1.0  # pixels: a polygon this close to (or beyond) a border touches it

EXPRESSIONS_PER_TRACK = (1, 3)  # inclusive
VIDEO_TYPE_WEIGHTS = {"appearance": 1.0, "position": 1.0, "motion": 2.2}

MOTIONS = (
    "moving_left", "moving_right", "moving_up", "moving_down",
    "still", "stops", "starts", "turns",
    "enters_left", "enters_right", "enters_top", "enters_bottom",
    "leaves_left", "leaves_right", "leaves_top", "leaves_bottom",
)  # fmt: skip

# The whole surface grammar. {t}: the target noun phrase (grammar._noun_phrase).
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


@dataclass(frozen=True)
class VideoExpression(_Expression):
    """One referring expression about a clip.

    ``type`` is one of :data:`VIDEO_EXPRESSION_TYPES`; ``target`` the noun phrase; ``where`` a
    side for position expressions; ``motion`` one of :data:`MOTIONS` for motion expressions;
    ``variant`` picks the surface template (it does not change the meaning).
    """

    where: str | None = None
    motion: str | None = None
    variant: int = 0

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


_GRAMMAR = _compile_templates(VIDEO_TEMPLATES)


def parse_video_expression(text: str) -> VideoExpression:
    """Invert :func:`realise_video`. Raises ValueError unless the text has exactly one parse."""
    return _parse(text, _GRAMMAR, "video", _expression_from_match)


def _expression_from_match(
    m: re.Match[str], etype: str, key: str | None, target: Desc, variant: int
) -> VideoExpression:
    fields: dict[str, Any] = {"type": etype, "target": target, "variant": variant}
    if etype == "position":
        fields["where"] = key
    elif etype == "motion":
        fields["motion"] = key
    return VideoExpression(**fields)


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
    elif motion in ("stops", "starts"):  # "starts" is "stops" with time running backwards
        seq, in_view_at_end = (labels, pres[-1]) if motion == "stops" else (labels[::-1], pres[0])
        if "M" not in seq or seq.endswith("M") or not in_view_at_end:
            out = False
        elif contiguous and re.fullmatch(r"M{2,}S{2,}", seq):
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
    for cand, ds in _phrases_by_referents(clip).items():
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
    target = _with_noun(expr.target, rng)
    n_variants = len(VIDEO_TEMPLATES[expr.type][_template_key(expr)])
    return replace(expr, target=target, variant=int(rng.integers(n_variants)))


def sample_video_expressions(clip: Clip, target: int, rng: np.random.Generator) -> list[tuple[VideoExpression, str]]:
    """1-3 distinct (structure, text) pairs for track ``target``, motion preferred; [] if none."""

    def still_true(expr: VideoExpression, text: str) -> bool:
        return parse_video_expression(text) == expr and resolve_video(expr, clip) == [target]

    pools = candidate_video_expressions(clip, target)
    return _draw_expressions(pools, VIDEO_TYPE_WEIGHTS, EXPRESSIONS_PER_TRACK, rng, _dress, realise_video, still_true)
