"""Ref-YouTube-VOS on disk (the 2021 CodaLab "full-video" release): the meta files read into
videos and expressions (:class:`YTVOSIndex`), and the frame and annotation readers.

Layout (``root``, for example ``./data/ref-youtube-vos``)::

    <root>/train/JPEGImages/<video_id>/<frame>.jpg
    <root>/train/Annotations/<video_id>/<frame>.png     # palette PNG, pixel value = object id
    <root>/train/meta.json                             # optional (object categories)
    <root>/valid/JPEGImages/<video_id>/<frame>.jpg     # no annotations
    <root>/test/JPEGImages/<video_id>/<frame>.jpg      # no annotations
    <root>/meta_expressions/{train,valid,test}/meta_expressions.json

``valid``'s meta file also lists the test videos: the valid split is the set difference
keys(valid meta) - keys(test meta), sorted (202 videos in the real release).

The clip dataset built on this index is :class:`lavt.data.ytvos.ReferYouTubeVOS`;
:class:`lavt.data.davis.DAVISIndex` gives Ref-DAVIS17 the same interface.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .files import (
    IMAGE_ERRORS,
    SAFE_NAME,
    DatasetError,
    load_json,
    load_rgb_frame,
    require_file,
)

SPLITS = ("train", "valid", "test")
ANNOTATED_SPLITS = ("train",)
META_EXPRESSIONS = "meta_expressions.json"

# Published sizes (data-and-metrics.md 2.2); the loader does not enforce them.
PUBLISHED_COUNTS: dict[str, dict[str, int]] = {
    "train": {"videos": 3471, "expressions": 12913, "objects": 6388},
    "valid": {"videos": 202, "expressions": 834},
    "test": {"videos": 305},
}


@dataclass(frozen=True)
class YTVOSExpression:
    """One referring expression: ``obj_id`` is the PNG pixel value (None where the meta has none)."""

    video_id: str
    exp_id: str
    text: str
    obj_id: int | None
    type: str = ""  # optional extra key (the synthetic set's expression type), "" otherwise


@dataclass(frozen=True)
class YTVOSVideo:
    """A video: its listed frames (sorted), expressions (by numeric exp id) and meta.json objects
    (``{obj_id: {"category": ..., "frames": [...]}}``, empty without meta.json)."""

    video_id: str
    frames: tuple[str, ...]
    expressions: tuple[YTVOSExpression, ...]
    objects: dict[int, dict[str, Any]] = field(default_factory=dict)


def _exp_sort_key(exp_id: str) -> tuple[int, int, str]:
    return (0, int(exp_id), exp_id) if exp_id.isdigit() else (1, 0, exp_id)


def _obj_id(value: Any, where: str) -> int:
    try:
        obj = int(str(value).strip())
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: obj_id {value!r} is not an integer") from None
    if not 1 <= obj <= 255:
        raise DatasetError(f"{where}: obj_id {value!r} is not a palette object id (1..255)")
    return obj


class YTVOSIndex:
    """The videos and expressions of one split, read from ``meta_expressions.json``.

    ``videos`` maps video id -> :class:`YTVOSVideo` (sorted by id); ``expressions`` lists every
    :class:`YTVOSExpression` in (video id, numeric exp id) order. Frames are sorted (every
    reference loader sorts). For ``valid`` the test videos are removed (set difference with
    ``meta_expressions/test``). The optional ``<root>/<split>/meta.json`` supplies object
    categories; when it lists a video, each expression's obj_id must be one of its objects.
    ``obj_id`` is required in train and ignored elsewhere.
    """

    def __init__(self, root: str | os.PathLike[str], split: str = "train"):
        self.root = Path(os.path.expanduser(os.fspath(root)))
        if split not in SPLITS:
            raise DatasetError(f"unknown Ref-YouTube-VOS split {split!r}; available: {', '.join(SPLITS)}")
        self.split = split
        if not self.root.is_dir():
            raise DatasetError(f"Ref-YouTube-VOS root {self.root} does not exist (or is not a directory)")
        self.meta_path = self.root / "meta_expressions" / split / META_EXPRESSIONS
        self.image_dir = self.root / split / "JPEGImages"
        # train always; another split when its Annotations/ folder exists (a locally annotated
        # valid set, e.g. the synthetic videos or a held-out part of train)
        self.has_annotations = split in ANNOTATED_SPLITS or (self.root / split / "Annotations").is_dir()
        self.annotation_dir: Path | None = self.root / split / "Annotations" if self.has_annotations else None
        meta_json = self.root / split / "meta.json"
        self.meta_json_path: Path | None = meta_json if meta_json.is_file() else None

        videos = self._read_meta(self.meta_path)
        test_meta = self.root / "meta_expressions" / "test" / META_EXPRESSIONS
        # the real valid meta also lists the test videos; an annotated local valid set (no
        # test meta) is taken whole
        if split == "valid" and (test_meta.is_file() or not self.has_annotations):
            self.test_meta_path: Path | None = test_meta
            test_videos = self._read_meta(test_meta, needed_for=" (needed to split valid from test)")
            videos = {v: d for v, d in videos.items() if v not in test_videos}
        else:
            self.test_meta_path = None
        objects = self._read_objects(self.meta_json_path) if self.meta_json_path else {}

        self.videos: dict[str, YTVOSVideo] = {}
        for vid in sorted(videos):
            self.videos[vid] = self._video(vid, videos[vid], objects.get(vid))
        self.video_ids: list[str] = list(self.videos)
        self.expressions: list[YTVOSExpression] = [e for v in self.videos.values() for e in v.expressions]
        self._ids_per_frame: dict[str, list[frozenset[int]]] = {}

    # ------------------------------------------------------------------------------------
    def _read_meta(self, path: Path, needed_for: str = "") -> dict[str, Any]:
        data = load_json(path, f"meta file{needed_for}")
        if not isinstance(data, dict) or not isinstance(data.get("videos"), dict):
            raise DatasetError(f"{path} must be an object with a 'videos' object")
        return data["videos"]

    def _read_objects(self, path: Path) -> dict[str, dict[int, dict[str, Any]]]:
        out: dict[str, dict[int, dict[str, Any]]] = {}
        for vid, v in self._read_meta(path).items():
            objs = v.get("objects") if isinstance(v, dict) else None
            if not isinstance(objs, dict):
                raise DatasetError(f"{path}: video {vid} has no 'objects' object")
            out[vid] = {
                _obj_id(k, f"{path}: video {vid}"): (o if isinstance(o, dict) else {}) for k, o in objs.items()
            }
        return out

    def _video(self, vid: str, d: Any, objects: dict[int, dict[str, Any]] | None) -> YTVOSVideo:
        where = f"{self.meta_path}: video {vid}"
        if not SAFE_NAME.match(vid):
            raise DatasetError(f"{self.meta_path}: video id {vid!r} is not a plain folder name")
        if not (isinstance(d, dict) and isinstance(d.get("frames"), list) and isinstance(d.get("expressions"), dict)):
            raise DatasetError(f"{where} lacks a 'frames' list or an 'expressions' object")
        frames = d["frames"]
        if not frames:
            raise DatasetError(f"{where} lists no frames")
        if not all(isinstance(f, str) and SAFE_NAME.match(f) for f in frames):
            raise DatasetError(f"{where}: frame names must be strings such as '00005'")
        exps = []
        for exp_id in sorted((str(k) for k in d["expressions"]), key=_exp_sort_key):
            e = d["expressions"][exp_id]
            if not isinstance(e, dict) or not isinstance(e.get("exp"), str):
                raise DatasetError(f"{where}: expression {exp_id} has no 'exp' text")
            obj = None
            if self.has_annotations:
                if "obj_id" not in e:
                    raise DatasetError(f"{where}: expression {exp_id} has no 'obj_id'")
                obj = _obj_id(e["obj_id"], f"{where}, expression {exp_id}")
                if objects is not None and obj not in objects:
                    raise DatasetError(
                        f"{where}, expression {exp_id}: obj_id {obj} is not an object of that video in "
                        f"{self.meta_json_path} (objects: {', '.join(map(str, sorted(objects))) or 'none'})"
                    )
            exps.append(YTVOSExpression(vid, exp_id, e["exp"], obj, str(e.get("type", ""))))
        return YTVOSVideo(vid, tuple(sorted(frames)), tuple(exps), dict(objects or {}))

    # ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.videos)

    def video(self, video_id: str) -> YTVOSVideo:
        try:
            return self.videos[video_id]
        except KeyError:
            raise DatasetError(f"video {video_id!r} is not in the {self.split} split ({self.meta_path})") from None

    def category(self, video_id: str, obj_id: int) -> str | None:
        """The object's category from meta.json (None without meta.json or category)."""
        return self.video(video_id).objects.get(int(obj_id), {}).get("category")

    def frame_path(self, video_id: str, frame: str) -> Path:
        return self.image_dir / video_id / f"{frame}.jpg"

    def annotation_path(self, video_id: str, frame: str) -> Path:
        if self.annotation_dir is None:
            raise DatasetError(f"the {self.split} split has no annotations")
        return self.annotation_dir / video_id / f"{frame}.png"

    def load_frame(self, video_id: str, frame: str) -> Image.Image:
        """The frame as RGB PIL at its original size."""
        return load_rgb_frame(self.frame_path(video_id, frame), "video folder")

    def load_annotation(self, video_id: str, frame: str) -> np.ndarray:
        """The annotation's palette index array, uint8 (H, W): pixel value = object id."""
        path = require_file(self.annotation_path(video_id, frame), "annotation file", "annotation folder")
        try:
            with Image.open(path) as im:
                im.load()
                if im.mode not in ("P", "L"):
                    raise DatasetError(f"annotation {path} is a mode {im.mode} image, expected a palette (P) PNG")
                return np.array(im, dtype=np.uint8)  # the index array, never the RGB colours
        except IMAGE_ERRORS as e:
            raise DatasetError(f"cannot read annotation {path}: {e}") from None

    def object_ids(self, video_id: str) -> list[frozenset[int]]:
        """Per listed frame, the object ids present in its annotation (decodes every PNG once)."""
        ids = self._ids_per_frame.get(video_id)
        if ids is None:
            ids = [
                frozenset(int(v) for v in np.unique(self.load_annotation(video_id, f)) if v)
                for f in self.video(video_id).frames
            ]
            self._ids_per_frame[video_id] = ids
        return ids
