"""Procedural referring-segmentation benchmarks: images in the RefCOCO layout, videos in Ref-YouTube-VOS's.

No real dataset lives on this machine, so both sets are drawn: coloured shapes on textured
backgrounds (:mod:`.render`), referred to by English expressions in a small grammar whose noun
phrases both share (:mod:`.grammar`).

    :mod:`.scenes`, :mod:`.image_grammar`, :mod:`.images`   the image set (``generate_synthetic_refer``)
    :mod:`.clips`, :mod:`.video_grammar`, :mod:`.videos`    the video set (``generate_synthetic_videos``)
    :mod:`.writing`                                         atomic files, JPEGs, worker processes

Each image (clip) is drawn from its own random stream, so the same parameters give the same
bytes.
"""

from __future__ import annotations

from .clips import (
    DEFAULT_FRAMES,
    DEFAULT_SIZE,
    MOTION_KINDS,
    Clip,
    Track,
    build_clip,
    render_clip,
)
from .grammar import Desc
from .image_grammar import (
    EXPRESSION_TYPES,
    Expression,
    candidate_expressions,
    parse_expression,
    realise,
    resolve,
    sample_expressions,
)
from .images import (
    GENERATOR_VERSION,
    SPLITS,
    generate_synthetic_refer,
    image_id_base,
    load_scene,
    verify_unique_referents,
)
from .render import COLOUR_TOLERANCE, COLOURS, SHAPES, SIZES, SceneObject
from .scenes import Scene, build_scene, render_scene
from .video_grammar import (
    MOTIONS,
    VIDEO_EXPRESSION_TYPES,
    VIDEO_TEMPLATES,
    VideoExpression,
    candidate_video_expressions,
    motion_truth,
    parse_video_expression,
    realise_video,
    resolve_video,
    sample_video_expressions,
)
from .videos import (
    DEFAULT_NUM_VIDEOS,
    VIDEO_GENERATOR_VERSION,
    VIDEO_SPLITS,
    generate_synthetic_videos,
    load_clip,
    verify_video_referents,
    video_id_for,
)

__all__ = [
    "COLOURS",
    "COLOUR_TOLERANCE",
    "DEFAULT_FRAMES",
    "DEFAULT_NUM_VIDEOS",
    "DEFAULT_SIZE",
    "EXPRESSION_TYPES",
    "GENERATOR_VERSION",
    "MOTIONS",
    "MOTION_KINDS",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "VIDEO_EXPRESSION_TYPES",
    "VIDEO_GENERATOR_VERSION",
    "VIDEO_SPLITS",
    "VIDEO_TEMPLATES",
    "Clip",
    "Desc",
    "Expression",
    "Scene",
    "SceneObject",
    "Track",
    "VideoExpression",
    "build_clip",
    "build_scene",
    "candidate_expressions",
    "candidate_video_expressions",
    "generate_synthetic_refer",
    "generate_synthetic_videos",
    "image_id_base",
    "load_clip",
    "load_scene",
    "motion_truth",
    "parse_expression",
    "parse_video_expression",
    "realise",
    "realise_video",
    "render_clip",
    "render_scene",
    "resolve",
    "resolve_video",
    "sample_expressions",
    "sample_video_expressions",
    "verify_unique_referents",
    "verify_video_referents",
    "video_id_for",
]
