"""A2D-Sentences: the sample list, the h5 masks and the clip dataset (:class:`A2DSentences`).

Items follow the annotated-frame protocol of :mod:`lavt.data.annotated_frame` (one scored frame
per sample, official LAVT-RS clips and scoring).

A2D-Sentences layout (``root``; both published arrangements are found automatically)::

    <root>/Release/clips320H/<video_id>.mp4              # decoded with PyAV (the ``video`` extra)
    <root>/Release/pngs320H/<video_id>/<%05d>.png         # or pre-extracted frames (.png or .jpg),
                                                         # 1-based: 00001 = first frame of the mp4
    <root>/Release/videoset.csv                          # only to build the sample list from text
    <root>/{text_annotations,Release}/a2d_annotation_with_instances/<video_id>/<%05d>.h5
    <root>/{text_annotations,Release}/a2d_annotation.txt, a2d_missed_videos.txt  # only to build
    <root>/{.,Release,text_annotations}/a2d_sentences_single_frame_{train,test}_annotations.json

MTTR's layout keeps the text annotations and h5 masks under ``text_annotations/`` and the two
JSON sample lists next to it; LAVT-RS keeps all of them under ``Release/``. Every path can be
overridden (``annotations=``, ``mask_dir=``, ``videos_dir=``, ``frames_dir=``).

* **Samples** come from the JSON sample list (MTTR format: a list of ``[sentence, video_id,
  frame (1-based), instance_id]``), one sample per entry = (sentence, annotated frame, instance).
  Without the JSON, the list is built from ``a2d_annotation.txt`` + ``videoset.csv`` + the h5
  files exactly as MTTR builds it (:func:`build_a2d_samples`): for every sentence row of a video
  of the split that is not in ``a2d_missed_videos.txt``, every annotated frame (h5 file, sorted)
  whose ``instance`` list holds the row's instance; frames without the instance are skipped, not
  scored; instance ids that do not parse as integers (the ``"1 (copy)"`` row) are dropped.
* **Masks**: the h5 file of the annotated frame (MATLAB v7.3 = HDF5, read with ``h5py``, an
  optional dependency, in the ``data`` extra). ``reMask`` is column-major: (N, W, H), or (W, H)
  when N == 1; it is transposed to (N, H, W). The referred mask is the one at the instance's position in the
  ``instance`` list (ids cast to int).
* **Frames**: the decoded mp4 (frame f, 1-based, is decoded frame f - 1) or, when
  ``Release/pngs320H/<video_id>/`` exists (``frames="auto"``), those files (which must be
  numbered 00001..n). ``frames="mp4"`` / ``frames="png"`` force one source.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .annotated_frame import (
    AnnotatedFrameDataset,
    FolderVideo,
    Mp4Video,
    check_choice,
    clean_text,
)
from .files import (
    SAFE_NAME,
    DatasetError,
    csv_body,
    int_value,
    load_json,
    one_line,
    read_text,
    require_file,
)

__all__ = [
    "A2DSample",
    "A2DSentences",
    "a2d_image_id",
    "build_a2d_samples",
    "read_a2d_masks",
    "read_a2d_samples",
    "write_a2d_samples",
]

log = logging.getLogger(__name__)

A2D_SPLITS = ("train", "test")
FRAME_SOURCES = ("auto", "mp4", "png")
SAMPLES_JSON = "a2d_sentences_single_frame_{split}_annotations.json"
_SUBSET_CODE = {"train": "0", "test": "1"}  # last column of videoset.csv
_INSTALL_H5PY = "pip install h5py (or pip install 'lavt[data]')"


def a2d_image_id(video_id: str, frame: int, instance_id: int) -> str:
    """A2D sample id ``v_<video>_f_<frame>_i_<instance>`` (frame 1-based), as in the COCO GT."""
    return f"v_{video_id}_f_{int(frame)}_i_{int(instance_id)}"


def _first_existing(candidates: Sequence[Path], is_dir: bool = False) -> Path | None:
    for p in candidates:
        if (p.is_dir() if is_dir else p.is_file()):
            return p
    return None


# --------------------------------------------------------------------------------------------
# A2D files
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class A2DSample:
    """One A2D-Sentences sample: a sentence (as stored), its video, annotated frame (1-based)
    and A2D instance id."""

    text: str
    video_id: str
    frame: int
    instance_id: int

    @property
    def image_id(self) -> str:
        return a2d_image_id(self.video_id, self.frame, self.instance_id)

    def to_list(self) -> list[Any]:
        return [self.text, self.video_id, self.frame, self.instance_id]


def read_a2d_samples(path: str | os.PathLike[str]) -> list[A2DSample]:
    """The MTTR-format JSON sample list: ``[[sentence, video_id, frame (1-based), instance_id], ...]``."""
    p = Path(path)
    data = load_json(p, "A2D-Sentences sample list")
    if not isinstance(data, list):
        raise DatasetError(f"{p} must hold a JSON list of [sentence, video_id, frame, instance_id] entries")
    out = []
    for k, e in enumerate(data):
        ok = isinstance(e, (list, tuple)) and len(e) == 4 and isinstance(e[0], str) and isinstance(e[1], str)
        frame = int_value(e[2]) if ok else None
        inst = int_value(e[3]) if ok else None
        if not ok or frame is None or inst is None or frame < 1 or not SAFE_NAME.match(e[1]):
            raise DatasetError(
                f"{p}: entry {k} is not [sentence, video_id, frame (1-based int), instance_id (int)]: "
                f"{one_line(e)[:120]}"
            )
        out.append(A2DSample(e[0], e[1], frame, inst))
    return out


def write_a2d_samples(samples: Sequence[A2DSample], path: str | os.PathLike[str]) -> Path:
    """Write a sample list in the MTTR JSON format (what :func:`read_a2d_samples` reads)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps([s.to_list() for s in samples]), encoding="utf-8")
    return p


def _import_h5py(path: Path) -> Any:
    try:
        import h5py
    except ImportError:
        raise DatasetError(f"reading the A2D mask file {path} needs h5py: {_INSTALL_H5PY}") from None
    return h5py


def read_a2d_masks(path: str | os.PathLike[str]) -> tuple[list[int], np.ndarray]:
    """``(instance ids, masks)`` of one annotated frame's h5 file: the ids of the ``instance``
    list (cast to int) and bool masks (N, H, W), ``reMask`` transposed from its column-major
    (N, W, H) / (W, H) storage."""
    p = require_file(Path(path), "A2D mask file")
    h5py = _import_h5py(p)
    try:
        with h5py.File(p, "r") as f:
            for key in ("instance", "reMask"):
                if key not in f:
                    keys = ", ".join(sorted(f.keys()))
                    raise DatasetError(f"A2D mask file {p} has no '{key}' dataset (keys: {keys})")
            inst = np.asarray(f["instance"][()]).reshape(-1)
            masks = np.asarray(f["reMask"][()])
    except DatasetError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"cannot read A2D mask file {p} (corrupt or not HDF5?): {one_line(e)}") from None
    if inst.dtype.kind not in "iuf" or not np.all(np.isfinite(inst)) or not np.all(inst == np.round(inst)):
        raise DatasetError(f"A2D mask file {p}: 'instance' holds non-integer ids {inst.tolist()}")
    ids = [int(v) for v in np.round(inst)]
    n = len(ids)
    if masks.ndim == 2 and n == 1:
        masks = masks[None]
    if masks.ndim != 3 or masks.shape[0] != n:
        raise DatasetError(
            f"A2D mask file {p}: 'reMask' has shape {masks.shape} for {n} instance(s) "
            f"(expected (N, W, H), or (W, H) for one instance)"
        )
    if masks.dtype.kind not in "biuf":
        raise DatasetError(f"A2D mask file {p}: 'reMask' has dtype {masks.dtype}, expected numbers")
    return ids, np.ascontiguousarray(masks.transpose(0, 2, 1) != 0)


def _a2d_text_dirs(root: Path) -> list[Path]:
    return [root / "text_annotations", root / "Release", root]


def _find_mask_dir(root: Path) -> Path | None:
    return _first_existing([d / "a2d_annotation_with_instances" for d in _a2d_text_dirs(root)], is_dir=True)


def build_a2d_samples(
    root: str | os.PathLike[str], split: str, mask_dir: str | os.PathLike[str] | None = None
) -> list[A2DSample]:
    """Build the sample list of a split from the A2D-Sentences text release, as MTTR does.

    Reads ``Release/videoset.csv`` (no header; column 0 = video id, last column = 0 train /
    1 test), ``a2d_missed_videos.txt`` (excluded) and ``a2d_annotation.txt`` (CSV with a header;
    video_id, instance_id, sentence) from ``text_annotations/`` or ``Release/``, and every h5 of
    the split's videos. Order: sentence rows in file order, then h5 files sorted by name. The
    sentence is lower-cased (nothing else; :func:`clean_text` runs at fetch time).
    """
    root = Path(os.path.expanduser(os.fspath(root)))
    if split not in A2D_SPLITS:
        raise DatasetError(f"unknown A2D-Sentences split {split!r}; available: {', '.join(A2D_SPLITS)}")
    videoset = root / "Release" / "videoset.csv"
    ann = _first_existing([d / "a2d_annotation.txt" for d in _a2d_text_dirs(root)])
    missed_path = _first_existing([d / "a2d_missed_videos.txt" for d in _a2d_text_dirs(root)])
    if ann is None:
        raise DatasetError(
            f"A2D-Sentences text annotations a2d_annotation.txt not found in {root}/text_annotations "
            f"or {root}/Release"
        )
    masks = Path(mask_dir) if mask_dir is not None else _find_mask_dir(root)
    if masks is None or not masks.is_dir():
        where = masks if masks is not None else f"{root}/text_annotations or {root}/Release"
        raise DatasetError(f"A2D-Sentences mask folder a2d_annotation_with_instances not found ({where})")

    subset: dict[str, str] = {}
    for k, row in enumerate(csv.reader(io.StringIO(read_text(videoset, "A2D video list")))):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            raise DatasetError(f"{videoset}: row {k + 1} has {len(row)} column(s), expected 9 (video id ... subset)")
        subset[row[0].strip()] = row[-1].strip()
    missed = set()
    if missed_path is not None:
        missed = {line.strip() for line in read_text(missed_path, "missed-video list").splitlines() if line.strip()}
    used = {v for v, s in subset.items() if s == _SUBSET_CODE[split] and v not in missed}

    per_video: dict[str, list[tuple[int, list[int]]]] = {}
    samples = []
    for k, row in csv_body(ann, "A2D-Sentences text annotations", ("video_id", "instance_id", "sentence")):
        if len(row) < 3:
            raise DatasetError(f"{ann}: line {k} has {len(row)} column(s), expected video_id, instance_id, sentence")
        vid, inst_text, text = row[0].strip(), row[1].strip(), ",".join(row[2:])
        if vid not in used:
            continue
        if not inst_text.isdigit():  # the known "1 (copy)" row in T6bNPuKV-wY
            log.info("A2D-Sentences: dropping %s line %d (instance id %r is not an integer)", ann, k, inst_text)
            continue
        inst = int(inst_text)
        if vid not in per_video:
            folder = masks / vid
            if not folder.is_dir():
                raise DatasetError(f"A2D mask folder {folder} not found (video {vid} of the {split} split)")
            h5s = sorted(p for p in folder.glob("*.h5") if p.stem.isdigit())
            per_video[vid] = [(int(p.stem), read_a2d_masks(p)[0]) for p in h5s]
        for frame, ids in per_video[vid]:
            if inst in ids:
                samples.append(A2DSample(text.lower(), vid, frame, inst))
    return samples


# --------------------------------------------------------------------------------------------
# A2D-Sentences
# --------------------------------------------------------------------------------------------
class A2DSentences(AnnotatedFrameDataset):
    """A2D-Sentences clips (see the module docstring for layouts and rules).

    Item dict (the :class:`lavt.data.ytvos.ReferYouTubeVOS` contract): ``video`` float32
    (T, 3, S, S) normalised; ``target`` int64 (T, S, S), the referred mask (PIL NEAREST to S x S)
    at position ``annotated`` and zeros elsewhere; ``valid`` bool (T,), True only at
    ``annotated`` (False there too if that mask is empty, which the official code never scores);
    ``annotated`` (int, clip position); ``annotated_frame`` (int, 1-based frame number);
    ``text`` (cleaned: lower case, single spaces); ``input_ids`` / ``attention_mask`` with a
    ``tokenizer``; ``video_id``; ``exp_id`` (str instance id); ``obj_id`` = ``instance_id``
    (int); ``image_id`` (``v_<vid>_f_<frame>_i_<inst>``); ``frame_names`` (1-based ``%05d``);
    ``frame_indices`` int64 (T,) 0-based decoded-frame indices; ``orig_sizes`` (T, 2) and
    ``orig_size`` (2,) (H0, W0); ``index``; ``sample_index`` (differs after a train redraw);
    ``type`` "".

    ``clip_len`` None = 8 in train, 16 in eval. Randomness (train, and eval with
    ``eval_sampling="random"``): a pure function of (seed, epoch, index) with ``seed`` set (call
    :meth:`set_epoch`), else drawn from the global torch RNG. ``cache_videos`` decoded videos are
    kept (per process; consecutive samples often share a video).
    """

    name = "A2D-Sentences"

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        clip_len: int | None = None,
        image_size: int = 480,
        mode: str = "train",
        tokenizer: Any = None,
        seed: int | None = None,
        annotations: str | os.PathLike[str] | None = None,
        mask_dir: str | os.PathLike[str] | None = None,
        videos_dir: str | os.PathLike[str] | None = None,
        frames_dir: str | os.PathLike[str] | None = None,
        frames: str = "auto",
        max_local_offset: int = 3,
        eval_sampling: str = "consecutive",
        score_position: str = "first",
        cache_videos: int = 1,
    ):
        super().__init__(clip_len, image_size, mode, tokenizer, seed, max_local_offset, eval_sampling,
                         score_position, cache_videos)
        if split not in A2D_SPLITS:
            raise DatasetError(
                f"unknown A2D-Sentences split {split!r}; available: {', '.join(A2D_SPLITS)} "
                "(the official code's 'val' is the test split)"
            )
        check_choice("frames", frames, FRAME_SOURCES)
        self.root = Path(os.path.expanduser(os.fspath(root)))
        if not self.root.is_dir():
            raise DatasetError(f"A2D-Sentences root {self.root} does not exist (or is not a directory)")
        self.split = split
        self.frames = frames
        self.videos_dir = Path(videos_dir) if videos_dir is not None else self.root / "Release" / "clips320H"
        self.frames_dir = Path(frames_dir) if frames_dir is not None else self.root / "Release" / "pngs320H"
        found = Path(mask_dir) if mask_dir is not None else _find_mask_dir(self.root)
        self.mask_dir = found if found is not None else self.root / "text_annotations" / "a2d_annotation_with_instances"

        name = SAMPLES_JSON.format(split=split)
        if annotations is not None:
            self.annotations_path: Path | None = Path(annotations)
            self.samples = read_a2d_samples(self.annotations_path)
        else:
            candidates = [self.root / name, self.root / "Release" / name, self.root / "text_annotations" / name]
            self.annotations_path = _first_existing(candidates)
            if self.annotations_path is not None:
                self.samples = read_a2d_samples(self.annotations_path)
            elif _first_existing([d / "a2d_annotation.txt" for d in _a2d_text_dirs(self.root)]) is not None:
                log.info("A2D-Sentences: %s not found, building the %s samples from the text annotations", name, split)
                self.samples = build_a2d_samples(self.root, split, mask_dir=found)
            else:
                raise DatasetError(
                    f"A2D-Sentences sample list {name} not found in {self.root}, {self.root}/Release or "
                    f"{self.root}/text_annotations, and no a2d_annotation.txt to build it from"
                )
        if not self.samples:
            source = self.annotations_path or "built from text"
            raise DatasetError(f"A2D-Sentences {split} split has no samples ({source})")
        log.info("A2D-Sentences %s: %d samples, %d videos", split, len(self.samples),
                 len({s.video_id for s in self.samples}))
        self._masks_cache: tuple[Path, tuple[list[int], np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def mask_path(self, video_id: str, frame: int) -> Path:
        return self.mask_dir / video_id / f"{int(frame):05d}.h5"

    def video_source(self, video_id: str) -> Path:
        """The frames folder or mp4 the video's frames are read from (per ``frames``)."""
        folder, mp4 = self.frames_dir / video_id, self.videos_dir / f"{video_id}.mp4"
        if self.frames == "png" or (self.frames == "auto" and folder.is_dir()):
            if not folder.is_dir():
                raise DatasetError(f"A2D frames folder {folder} not found")
            return folder
        if not mp4.is_file():
            also = f" (nor a frames folder {folder})" if self.frames == "auto" else ""
            raise DatasetError(f"A2D video {mp4} not found{also}")
        return mp4

    def sample_info(self, index: int) -> dict[str, Any]:
        """What a sample is, without reading any file."""
        s = self.samples[self._check_index(index)]
        return {"video_id": s.video_id, "annotated_frame": s.frame, "instance_id": s.instance_id,
                "text": clean_text(s.text), "image_id": s.image_id}

    def _fields(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        return {"text": clean_text(s.text), "video_id": s.video_id, "exp_id": str(s.instance_id),
                "obj_id": s.instance_id, "instance_id": s.instance_id, "image_id": s.image_id,
                "annotated_frame": s.frame, "mask_source": self.mask_path(s.video_id, s.frame)}

    def _annotated_mask(self, index: int) -> np.ndarray:
        s = self.samples[index]
        path = self.mask_path(s.video_id, s.frame)
        if self._masks_cache is not None and self._masks_cache[0] == path:
            ids, masks = self._masks_cache[1]
        else:
            ids, masks = read_a2d_masks(path)
            self._masks_cache = (path, (ids, masks))
        if s.instance_id not in ids:
            raise DatasetError(
                f"A2D mask file {path} has no instance {s.instance_id} (its instances: {ids}); the sample list "
                "should only pair a sentence with frames that show its instance"
            )
        return masks[ids.index(s.instance_id)].copy()

    def _video(self, index: int) -> Any:
        src = self.video_source(self.samples[index].video_id)
        return self._cache.get(src, FolderVideo if src.suffix.lower() != ".mp4" else Mp4Video)

