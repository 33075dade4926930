"""A2D-Sentences and JHMDB-Sentences: clip loaders and the annotated-frame evaluation protocol.

Both datasets score **one annotated frame per sample** (data-and-metrics.md 3.1, 3.2, 4.1;
official-lavt-facts.md 4.6). Every item is a clip around that frame with the
:class:`lavt.data.ytvos.ReferYouTubeVOS` keys, a ``target`` that is zero except at the annotated
frame, ``valid`` True only there, and ``annotated`` = the annotated frame's position in the clip.

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
* **Train clips** (``mode="train"``, official LAVT-RS): :func:`lavt.data.ytvos.sample_clip_indices`
  around frame f - 1 (one local frame 1-3 before, one 1-3 after, the rest global), sorted;
  ``annotated`` is the *first* position holding frame f - 1 (``list.index``, as the official
  code). A sample whose annotated mask is empty is replaced by a random one (official).
* **Eval clips** (``mode="eval"``): ``clip_len`` (default 16, the LAVT-RS README) consecutive
  frames ``[f-1 - T//2, f-1 + (T+1)//2)`` clamped into the video (edge frames repeat);
  ``eval_sampling="random"`` is the official ``--not_consecutive`` (training-style sampling).
  ``score_position="first"`` (default, LAVT-RS) scores the first clip position holding the
  annotated frame; ``"center"`` scores position T//2 when it holds it (MTTR's convention; the two
  differ only when the window is clamped at the video start).

JHMDB-Sentences (evaluation only; :class:`JHMDBSentences`)::

    <root>/Rename_Images/<action>/<video_id>/<%05d>.png       # 1-based frames
    <root>/puppet_mask/<action>/<video_id>/puppet_mask.mat    # part_mask (H, W, T), scipy.io.loadmat
    <root>/jhmdb_annotation.txt                               # CSV with a header: video_id, sentence
    <root>/jhmdb_sentences_samples_metadata.json              # MTTR's list of evaluated frames

Evaluated frames: MTTR's samples metadata (``frames="metadata"``, default; 3 frames per video,
entries ``[video_id, frame_path, mask_path, total_frames, sentence]``, of which only the video
id, the frame number in the frame path's file name, the total and the sentence are used), every
usable frame (``frames="all"``), or ``k`` random frames per video (``frames=k``, seeded; MTTR's
recipe with k = 3, though not its random draw). Usable frames are those with a puppet mask
(the last frames of some videos have none); the window is clamped into them.

Scoring (:func:`score_annotated_frame`, :func:`evaluate_annotated_frames`): the official LAVT
protocol takes the argmax of the annotated frame's two-class logits at the model resolution
(480x480) and compares it with the GT resized to that size with PIL NEAREST, which is exactly
the item's ``target`` at ``annotated``. I and U go into a :class:`lavt.evaluation.metrics.RISMeter` (LAVT
conventions: IoU >= K for P@K, IoU 0 when the union is empty); oIoU, mIoU and P@K x100.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import ConfigError, InputError, LAVTError
from ..evaluation.metrics import RISMeter, score_prediction
from .refer import DatasetError
from .transforms import preprocess_image, resize_mask
from .ytvos import collate_video, sample_clip_indices

__all__ = [
    "A2DSample",
    "A2DSentences",
    "JHMDBSentences",
    "a2d_image_id",
    "annotated_position",
    "build_a2d_samples",
    "clean_text",
    "collate_video",
    "consecutive_window",
    "evaluate_annotated_frames",
    "jhmdb_image_id",
    "read_a2d_masks",
    "read_a2d_samples",
    "read_jhmdb_masks",
    "score_annotated_batch",
    "score_annotated_frame",
    "write_a2d_samples",
]

log = logging.getLogger(__name__)

A2D_SPLITS = ("train", "test")
JHMDB_SPLITS = ("test",)
MODES = ("train", "eval")
FRAME_SOURCES = ("auto", "mp4", "png")
EVAL_SAMPLINGS = ("consecutive", "random")
SCORE_POSITIONS = ("first", "center")
DEFAULT_CLIP_LEN = {"train": 8, "eval": 16}
SAMPLES_JSON = "a2d_sentences_single_frame_{split}_annotations.json"
JHMDB_METADATA = "jhmdb_sentences_samples_metadata.json"
_SUBSET_CODE = {"train": "0", "test": "1"}  # last column of videoset.csv
_FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
_MAX_REDRAWS = 100
_INSTALL_H5PY = "pip install h5py (or pip install 'lavt[data]')"
_INSTALL_AV = "pip install av (or pip install 'lavt[video]')"
_SAFE_NAME = re.compile(r"^[^/\\\x00]+$")


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------
def _one_line(text: object) -> str:
    return " ".join(str(text).split()) or "unknown error"


def clean_text(text: str) -> str:
    """The official query clean-up (MTTR, LAVT-RS): lower case, whitespace runs -> one space."""
    return " ".join(str(text).lower().split())


def a2d_image_id(video_id: str, frame: int, instance_id: int) -> str:
    """A2D sample id ``v_<video>_f_<frame>_i_<instance>`` (frame 1-based), as in the COCO GT."""
    return f"v_{video_id}_f_{int(frame)}_i_{int(instance_id)}"


def jhmdb_image_id(video_id: str, frame: int) -> str:
    """JHMDB sample id ``v_<video>_f_<frame>`` (frame 1-based)."""
    return f"v_{video_id}_f_{int(frame)}"


def consecutive_window(center: int, num_frames: int, clip_len: int) -> list[int]:
    """The official eval window: indices ``center - clip_len//2 ... center + (clip_len+1)//2 - 1``
    (0-based), each clamped into ``[0, num_frames - 1]``, so edge frames repeat near the ends."""
    if num_frames < 1 or not 0 <= center < num_frames:
        raise ValueError(f"center {center} is outside a video of {num_frames} frames")
    if clip_len < 1:
        raise ValueError(f"clip_len must be >= 1, got {clip_len}")
    start = center - clip_len // 2
    return [min(max(i, 0), num_frames - 1) for i in range(start, start + clip_len)]


def annotated_position(indices: Sequence[int], center: int, rule: str = "first") -> int:
    """Position in the clip ``indices`` that is supervised / scored for frame ``center``.

    ``"first"``: the first position holding it (the official LAVT-RS ``list.index``);
    ``"center"``: position ``len//2`` when it holds the frame (MTTR), else the first one."""
    idx = [int(i) for i in indices]
    if center not in idx:
        raise ValueError(f"frame {center} is not in the clip {idx}")
    if rule == "center" and idx[len(idx) // 2] == center:
        return len(idx) // 2
    return idx.index(center)


def _check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} {value!r} is not one of: {', '.join(map(str, choices))}")


def _check_positive(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer{' or None' if allow_none else ''}, got {value!r}")


def _load_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise DatasetError(f"{what} {path} not found")
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror or e}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path} is not valid JSON (corrupt or truncated?): {_one_line(e)}") from None


def _read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise DatasetError(f"{what} {path} not found")
    try:
        return path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        return path.read_text(encoding="latin-1")


def _first_existing(candidates: Sequence[Path], is_dir: bool = False) -> Path | None:
    for p in candidates:
        if (p.is_dir() if is_dir else p.is_file()):
            return p
    return None


def _load_image(path: Path) -> Image.Image:
    if not path.is_file():
        hint = "" if path.parent.is_dir() else f" (the folder {path.parent} does not exist)"
        raise DatasetError(f"frame file {path} not found{hint}")
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB") if im.mode != "RGB" else im.copy()
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError) as e:
        raise DatasetError(f"cannot read frame {path}: {_one_line(e)}") from None


def _frame_files(folder: Path) -> list[Path]:
    """The frames ``00001...`` of a folder in order; they must be numbered 1..n without gaps."""
    try:
        files = [p for p in folder.iterdir() if p.suffix.lower() in _FRAME_SUFFIXES and p.is_file()]
    except OSError as e:
        raise DatasetError(f"cannot list frames folder {folder}: {e.strerror or e}") from None
    if not files:
        raise DatasetError(f"frames folder {folder} holds no .png/.jpg frames")
    numbered: dict[int, Path] = {}
    for p in files:
        if not p.stem.isdigit():
            raise DatasetError(f"frame file {p} is not named by its 1-based frame number (e.g. 00001.png)")
        n = int(p.stem)
        if n in numbered:
            raise DatasetError(f"frames folder {folder} has two files for frame {n}: {numbered[n].name}, {p.name}")
        numbered[n] = p
    missing = [i for i in range(1, len(numbered) + 1) if i not in numbered]
    if missing:
        raise DatasetError(
            f"frames in {folder} are not numbered 00001..{len(numbered):05d} (first missing: {missing[0]:05d})"
        )
    return [numbered[i] for i in range(1, len(numbered) + 1)]


# --------------------------------------------------------------------------------------------
# Video sources (an mp4 decoded once, or a frames folder) with a small LRU cache
# --------------------------------------------------------------------------------------------
class _FolderVideo:
    def __init__(self, folder: Path):
        self.source = folder
        self.files = _frame_files(folder)

    def __len__(self) -> int:
        return len(self.files)

    def frames(self, indices: Sequence[int]) -> list[Image.Image]:
        cache: dict[int, Image.Image] = {}
        for i in indices:
            if i not in cache:
                cache[i] = _load_image(self.files[i])
        return [cache[i] for i in indices]


class _Mp4Video:
    """All frames of an mp4, decoded and converted to RGB arrays at once. No PyAV object outlives
    the decoding: FFmpeg frames inherited through fork (a DataLoader worker started after the main
    process read an item) hang when used or freed in the child."""

    def __init__(self, path: Path):
        self.source = path
        try:
            import av
        except ImportError:
            raise DatasetError(f"decoding the A2D video {path} needs PyAV: {_INSTALL_AV}") from None
        self._frames: list[Any] = []
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise DatasetError(f"cannot read video {path}: it has no video stream")
                for frame in container.decode(container.streams.video[0]):
                    self._frames.append(frame.to_ndarray(format="rgb24"))
        except DatasetError:
            raise
        except (av.error.FFmpegError, OSError, ValueError, EOFError) as e:
            raise DatasetError(f"cannot read video {path} (corrupt or truncated?): {_one_line(e)}") from None
        if not self._frames:
            raise DatasetError(f"no frames could be decoded from video {path}")

    def __len__(self) -> int:
        return len(self._frames)

    def frames(self, indices: Sequence[int]) -> list[Image.Image]:
        cache: dict[int, Image.Image] = {}
        for i in indices:
            if i not in cache:
                cache[i] = Image.fromarray(self._frames[i], mode="RGB")
        return [cache[i] for i in indices]


class _VideoCache:
    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[Path, Any] = OrderedDict()

    def get(self, path: Path, make: Callable[[Path], Any]) -> Any:
        if path in self._items:
            self._items.move_to_end(path)
            return self._items[path]
        video = make(path)
        if self.size > 0:
            self._items[path] = video
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return video

    def clear(self) -> None:
        self._items.clear()


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


def _int_value(value: Any) -> int | None:
    """An integer from an int, an integral float or a digit string; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return int(value) if float(value).is_integer() else None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def read_a2d_samples(path: str | os.PathLike[str]) -> list[A2DSample]:
    """The MTTR-format JSON sample list: ``[[sentence, video_id, frame (1-based), instance_id], ...]``."""
    p = Path(path)
    data = _load_json(p, "A2D-Sentences sample list")
    if not isinstance(data, list):
        raise DatasetError(f"{p} must hold a JSON list of [sentence, video_id, frame, instance_id] entries")
    out = []
    for k, e in enumerate(data):
        ok = isinstance(e, (list, tuple)) and len(e) == 4 and isinstance(e[0], str) and isinstance(e[1], str)
        frame = _int_value(e[2]) if ok else None
        inst = _int_value(e[3]) if ok else None
        if not ok or frame is None or inst is None or frame < 1 or not _SAFE_NAME.match(e[1]):
            raise DatasetError(
                f"{p}: entry {k} is not [sentence, video_id, frame (1-based int), instance_id (int)]: "
                f"{_one_line(e)[:120]}"
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
    p = Path(path)
    if not p.is_file():
        hint = "" if p.parent.is_dir() else f" (the folder {p.parent} does not exist)"
        raise DatasetError(f"A2D mask file {p} not found{hint}")
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
        raise DatasetError(f"cannot read A2D mask file {p} (corrupt or not HDF5?): {_one_line(e)}") from None
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
    for k, row in enumerate(csv.reader(io.StringIO(_read_text(videoset, "A2D video list")))):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            raise DatasetError(f"{videoset}: row {k + 1} has {len(row)} column(s), expected 9 (video id ... subset)")
        subset[row[0].strip()] = row[-1].strip()
    missed = set()
    if missed_path is not None:
        missed = {line.strip() for line in _read_text(missed_path, "missed-video list").splitlines() if line.strip()}
    used = {v for v, s in subset.items() if s == _SUBSET_CODE[split] and v not in missed}

    rows = list(csv.reader(io.StringIO(_read_text(ann, "A2D-Sentences text annotations"))))
    if not rows or len(rows[0]) < 3:
        raise DatasetError(f"{ann} must be a CSV with a header row: video_id, instance_id, sentence")
    per_video: dict[str, list[tuple[int, list[int]]]] = {}
    samples = []
    for k, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
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
# Shared dataset machinery
# --------------------------------------------------------------------------------------------
class _AnnotatedFrameDataset(torch.utils.data.Dataset):
    """Clips around one annotated frame per sample; subclasses supply the index and files."""

    name = "dataset"

    def __init__(self, clip_len, image_size, mode, tokenizer, seed, max_local_offset, eval_sampling,
                 score_position, cache_videos):
        _check_choice("mode", mode, MODES)
        _check_choice("eval_sampling", eval_sampling, EVAL_SAMPLINGS)
        _check_choice("score_position", score_position, SCORE_POSITIONS)
        _check_positive("clip_len", clip_len, allow_none=True)
        _check_positive("image_size", image_size)
        _check_positive("max_local_offset", max_local_offset)
        if isinstance(cache_videos, bool) or not isinstance(cache_videos, int) or cache_videos < 0:
            raise ConfigError(f"cache_videos must be an integer >= 0, got {cache_videos!r}")
        self.mode = mode
        self.clip_len = clip_len if clip_len is not None else DEFAULT_CLIP_LEN[mode]
        self.image_size = image_size
        self.tokenizer = tokenizer
        self.seed, self.epoch = seed, 0
        self.max_local_offset = max_local_offset
        self.eval_sampling = eval_sampling
        self.score_position = score_position
        self._cache = _VideoCache(cache_videos)

    # ---- to implement ---------------------------------------------------------------------
    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _annotated_mask(self, index: int) -> np.ndarray:  # (H0, W0) bool
        raise NotImplementedError

    def _video(self, index: int) -> Any:  # object with __len__, frames(indices), source
        raise NotImplementedError

    def _num_frames(self, index: int, video: Any) -> int:
        return len(video)

    def _fields(self, index: int) -> dict[str, Any]:  # text, ids... of a sample
        raise NotImplementedError

    # ---- common ---------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = _VideoCache(self._cache.size)  # decoded videos are not sent to workers
        return state

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _check_index(self, index: int) -> int:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} samples")
        return index + n if index < 0 else index

    def _rng(self, index: int) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        return np.random.default_rng([self.seed, self.epoch, index])

    def original_masks(self, index: int) -> np.ndarray:
        """The referred mask of the sample's annotated frame at its original size, bool (1, H0, W0)."""
        return self._annotated_mask(self._check_index(index))[None]

    def clip_indices(self, index: int, num_frames: int, rng: np.random.Generator | None = None) -> list[int]:
        """0-based frame indices of the sample's clip in a video of ``num_frames`` frames."""
        center = self._fields(index)["annotated_frame"] - 1
        if not 0 <= center < num_frames:
            raise DatasetError(
                f"{self.name}: annotated frame {center + 1} of video {self._fields(index)['video_id']} is beyond "
                f"its {num_frames} frames"
            )
        if self.mode == "train" or self.eval_sampling == "random":
            rng = rng if rng is not None else self._rng(index)
            return sample_clip_indices(center, num_frames, self.clip_len, rng, self.max_local_offset)
        return consecutive_window(center, num_frames, self.clip_len)

    def _tokens(self, text: str, where: str) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            ids, mask = self.tokenizer([text])
        except LAVTError as err:
            raise DatasetError(f"{where}: {err}") from None
        return ids[0].clone(), mask[0].clone()

    def __getitem__(self, index: int) -> dict[str, Any]:
        asked = self._check_index(index)
        sample_index = asked
        rng = self._rng(asked) if (self.mode == "train" or self.eval_sampling == "random") else None
        mask = self._annotated_mask(sample_index)
        redraws = 0
        while self.mode == "train" and not mask.any() and redraws < _MAX_REDRAWS:
            sample_index = int(rng.integers(len(self)))  # official: replace an empty target by a random sample
            mask = self._annotated_mask(sample_index)
            redraws += 1
        fields = self._fields(sample_index)
        video = self._video(sample_index)
        n = self._num_frames(sample_index, video)
        idx = self.clip_indices(sample_index, n, rng)
        center = fields["annotated_frame"] - 1
        pos = annotated_position(idx, center, self.score_position)
        images = video.frames(idx)
        h0, w0 = mask.shape
        for i, img in zip(idx, images):
            if (img.height, img.width) != (h0, w0):
                raise DatasetError(
                    f"{self.name}: the mask of {fields['image_id']} ({fields['mask_source']}) is {w0}x{h0} but frame "
                    f"{i + 1} of {video.source} is {img.width}x{img.height} (W x H)"
                )
        s, t = self.image_size, len(idx)
        target = torch.zeros((t, s, s), dtype=torch.int64)
        target[pos] = torch.from_numpy(resize_mask(mask, s).astype(np.int64))
        valid = torch.zeros(t, dtype=torch.bool)
        valid[pos] = bool(mask.any())
        sizes = torch.tensor([[h0, w0]] * t, dtype=torch.int64)
        frames: dict[int, torch.Tensor] = {}  # clamped windows repeat edge frames: preprocess each once
        for i, img in zip(idx, images):
            if i not in frames:
                frames[i] = preprocess_image(img, s)
        item: dict[str, Any] = {
            "video": torch.stack([frames[i] for i in idx]),
            "target": target,
            "valid": valid,
            "annotated": pos,
            "annotated_frame": fields["annotated_frame"],
            "text": fields["text"],
            "video_id": fields["video_id"],
            "exp_id": fields["exp_id"],
            "obj_id": fields["obj_id"],
            "instance_id": fields["instance_id"],
            "image_id": fields["image_id"],
            "frame_names": [f"{i + 1:05d}" for i in idx],
            "frame_indices": torch.tensor(idx, dtype=torch.int64),
            "orig_sizes": sizes,
            "orig_size": sizes[0].clone(),
            "index": asked,
            "sample_index": sample_index,
            "type": "",
        }
        if self.tokenizer is not None:
            where = f"{self.name} {fields['image_id']}"
            item["input_ids"], item["attention_mask"] = self._tokens(fields["text"], where)
        return item


# --------------------------------------------------------------------------------------------
# A2D-Sentences
# --------------------------------------------------------------------------------------------
class A2DSentences(_AnnotatedFrameDataset):
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

    scores_annotated_frames = True  # the engine scores the annotated frame, not J&F over the clip

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
        _check_choice("frames", frames, FRAME_SOURCES)
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
        return self._cache.get(src, _FolderVideo if src.suffix.lower() != ".mp4" else _Mp4Video)


# --------------------------------------------------------------------------------------------
# JHMDB-Sentences
# --------------------------------------------------------------------------------------------
def read_jhmdb_masks(path: str | os.PathLike[str]) -> np.ndarray:
    """The puppet masks of a video: ``part_mask`` (H, W, T) of ``puppet_mask.mat`` as bool
    (T, H, W); mask t - 1 belongs to frame t."""
    p = Path(path)
    if not p.is_file():
        hint = "" if p.parent.is_dir() else f" (the folder {p.parent} does not exist)"
        raise DatasetError(f"JHMDB puppet mask file {p} not found{hint}")
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DatasetError(f"reading {p} needs scipy: pip install scipy (or pip install 'lavt[data]')") from None
    try:
        data = loadmat(str(p))
    except NotImplementedError as e:  # MATLAB v7.3 files
        raise DatasetError(f"cannot read JHMDB puppet mask file {p}: {_one_line(e)}") from None
    except Exception as e:  # scipy raises ValueError, TypeError, OSError, MatReadError... on bad files
        raise DatasetError(
            f"cannot read JHMDB puppet mask file {p} (corrupt?): {type(e).__name__}: {_one_line(e)}"
        ) from None
    if "part_mask" not in data:
        keys = ", ".join(k for k in data if not k.startswith("__"))
        raise DatasetError(f"JHMDB puppet mask file {p} has no 'part_mask' variable (variables: {keys or 'none'})")
    m = np.asarray(data["part_mask"])
    if m.ndim == 2:
        m = m[:, :, None]
    if m.ndim != 3 or m.dtype.kind not in "biuf":
        raise DatasetError(
            f"JHMDB puppet mask file {p}: 'part_mask' has shape {m.shape} / dtype {m.dtype}, expected (H, W, T) numbers"
        )
    return np.ascontiguousarray(m.transpose(2, 0, 1) != 0)


@dataclass(frozen=True)
class _JHMDBSample:
    text: str
    video_id: str
    action: str
    frame: int  # 1-based
    total_frames: int  # usable frames (the window is clamped into 1..total_frames)


class JHMDBSentences(_AnnotatedFrameDataset):
    """JHMDB-Sentences, evaluation only, with :class:`A2DSentences`' item contract (``exp_id``
    "0", ``obj_id`` 1 and ``instance_id`` None: one actor, one sentence per video; ``image_id``
    ``v_<vid>_f_<frame>``).

    ``frames``: ``"metadata"`` (default: MTTR's ``jhmdb_sentences_samples_metadata.json``, found
    at ``samples_metadata`` or ``<root>/jhmdb_sentences_samples_metadata.json``), ``"all"`` (every
    frame with a puppet mask) or a positive int k (k random usable frames per video, sorted,
    seeded by ``seed``, default 0). ``clip_len`` default 16.
    """

    scores_annotated_frames = True  # the engine scores the annotated frame, not J&F over the clip

    name = "JHMDB-Sentences"

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "test",
        clip_len: int | None = None,
        image_size: int = 480,
        mode: str = "eval",
        tokenizer: Any = None,
        seed: int | None = None,
        samples_metadata: str | os.PathLike[str] | None = None,
        frames: str | int = "metadata",
        score_position: str = "first",
        cache_videos: int = 1,
    ):
        if mode != "eval":
            raise ConfigError("JHMDB-Sentences is for evaluation only: use mode='eval'")
        super().__init__(clip_len, image_size, mode, tokenizer, seed, 3, "consecutive", score_position, cache_videos)
        if split not in JHMDB_SPLITS:
            raise DatasetError(f"unknown JHMDB-Sentences split {split!r}; available: {', '.join(JHMDB_SPLITS)}")
        named = isinstance(frames, str) and frames in ("metadata", "all")
        if not named and (isinstance(frames, bool) or not isinstance(frames, int) or frames < 1):
            raise ConfigError(f"frames must be 'metadata', 'all' or a positive integer, got {frames!r}")
        self.root = Path(os.path.expanduser(os.fspath(root)))
        if not self.root.is_dir():
            raise DatasetError(f"JHMDB-Sentences root {self.root} does not exist (or is not a directory)")
        self.split = split
        self.image_dir = self.root / "Rename_Images"
        self.mask_root = self.root / "puppet_mask"
        if not self.image_dir.is_dir():
            raise DatasetError(f"JHMDB-Sentences frames folder {self.image_dir} not found")
        self.actions: dict[str, str] = {}  # video id -> action folder
        for action in sorted(p for p in self.image_dir.iterdir() if p.is_dir()):
            for video in sorted(p for p in action.iterdir() if p.is_dir()):
                self.actions.setdefault(video.name, action.name)
        self._usable: dict[str, int] = {}
        self.metadata_path: Path | None = None
        if frames == "metadata":
            self.metadata_path = Path(samples_metadata) if samples_metadata is not None else self.root / JHMDB_METADATA
            if not self.metadata_path.is_file():
                raise DatasetError(
                    f"JHMDB-Sentences samples metadata {self.metadata_path} not found (MTTR's "
                    f"datasets/jhmdb_sentences/{JHMDB_METADATA}); pass samples_metadata=..., or frames='all' / frames=3"
                )
            self.samples = self._read_metadata(self.metadata_path)
        else:
            self.samples = self._from_annotation(frames, 0 if seed is None else seed)
        if not self.samples:
            raise DatasetError(f"JHMDB-Sentences under {self.root} yields no samples")
        log.info("JHMDB-Sentences: %d samples, %d videos", len(self.samples), len({s.video_id for s in self.samples}))
        self._mask_cache: tuple[Path, np.ndarray] | None = None

    def _action(self, video_id: str, where: str) -> str:
        try:
            return self.actions[video_id]
        except KeyError:
            folder = f"{self.image_dir}/<action>/{video_id}"
            raise DatasetError(f"{where}: video {video_id} has no frames folder {folder}") from None

    def _read_metadata(self, path: Path) -> list[_JHMDBSample]:
        data = _load_json(path, "JHMDB-Sentences samples metadata")
        if not isinstance(data, list):
            raise DatasetError(
                f"{path} must hold a JSON list of [video_id, frame_path, mask_path, total_frames, sentence]"
            )
        out = []
        for k, e in enumerate(data):
            ok = isinstance(e, (list, tuple)) and len(e) == 5 and all(isinstance(e[i], str) for i in (0, 1, 4))
            stem = Path(str(e[1])).stem if ok else ""
            total = _int_value(e[3]) if ok else None
            if not ok or not stem.isdigit() or total is None or not 1 <= int(stem) <= total:
                raise DatasetError(
                    f"{path}: entry {k} is not [video_id, .../<%05d>.png, mask_path, total_frames, sentence] "
                    f"with the frame within 1..total_frames: {_one_line(e)[:120]}"
                )
            out.append(_JHMDBSample(e[4], e[0], self._action(e[0], str(path)), int(stem), total))
        return out

    def _from_annotation(self, frames: str | int, seed: int) -> list[_JHMDBSample]:
        path = self.root / "jhmdb_annotation.txt"
        rows = list(csv.reader(io.StringIO(_read_text(path, "JHMDB-Sentences annotations"))))
        if not rows or len(rows[0]) < 2:
            raise DatasetError(f"{path} must be a CSV with a header row: video_id, sentence")
        rng = np.random.default_rng(seed)
        out = []
        for k, row in enumerate(rows[1:], start=2):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2:
                raise DatasetError(f"{path}: line {k} has {len(row)} column, expected video_id, sentence")
            vid, text = row[0].strip(), ",".join(row[1:])
            action = self._action(vid, str(path))
            n_frames = len(_frame_files(self.image_dir / action / vid))
            n_masks = len(read_jhmdb_masks(self.mask_root / action / vid / "puppet_mask.mat"))
            usable = min(n_frames, n_masks)
            if frames == "all":
                chosen = list(range(1, usable + 1))
            else:
                chosen = sorted(int(i) + 1 for i in rng.choice(usable, min(int(frames), usable), replace=False))
            out += [_JHMDBSample(text, vid, action, f, usable) for f in chosen]
        return out

    def __len__(self) -> int:
        return len(self.samples)

    def mask_path(self, index: int) -> Path:
        s = self.samples[self._check_index(index)]
        return self.mask_root / s.action / s.video_id / "puppet_mask.mat"

    def sample_info(self, index: int) -> dict[str, Any]:
        s = self.samples[self._check_index(index)]
        return {"video_id": s.video_id, "annotated_frame": s.frame, "instance_id": None, "action": s.action,
                "text": clean_text(s.text), "image_id": jhmdb_image_id(s.video_id, s.frame),
                "total_frames": s.total_frames}

    def _fields(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        return {"text": clean_text(s.text), "video_id": s.video_id, "exp_id": "0", "obj_id": 1, "instance_id": None,
                "image_id": jhmdb_image_id(s.video_id, s.frame), "annotated_frame": s.frame,
                "mask_source": self.mask_path(index)}

    def _annotated_mask(self, index: int) -> np.ndarray:
        s, path = self.samples[index], self.mask_path(index)
        if self._mask_cache is not None and self._mask_cache[0] == path:
            masks = self._mask_cache[1]
        else:
            masks = read_jhmdb_masks(path)
            self._mask_cache = (path, masks)
        if s.frame > len(masks):
            raise DatasetError(f"JHMDB puppet mask file {path} has {len(masks)} masks, none for frame {s.frame}")
        return masks[s.frame - 1].copy()

    def _video(self, index: int) -> Any:
        s = self.samples[index]
        return self._cache.get(self.image_dir / s.action / s.video_id, _FolderVideo)

    def _num_frames(self, index: int, video: Any) -> int:
        total = self.samples[index].total_frames
        if total > len(video):
            raise DatasetError(f"JHMDB video {video.source} has {len(video)} frames, fewer than the {total} listed")
        return total


# --------------------------------------------------------------------------------------------
# Scoring (official LAVT A2D protocol)
# --------------------------------------------------------------------------------------------
def _annotated_logits(logits: Any, annotated: int) -> torch.Tensor:
    lg = torch.as_tensor(logits).detach()
    if lg.ndim == 4:
        if not 0 <= annotated < lg.shape[0]:
            raise InputError(f"annotated position {annotated} is outside logits of {lg.shape[0]} frames")
        lg = lg[annotated]
    if lg.ndim != 3 or lg.shape[0] != 2:
        raise InputError(f"logits must be (T, 2, h, w) or the annotated frame's (2, h, w), got {tuple(lg.shape)}")
    return lg


def score_annotated_frame(
    logits: Any, item: dict[str, Any], protocol: str = "official", gt_original: Any = None
) -> tuple[int, int]:
    """``(I, U)`` of one sample: the annotated frame of ``logits`` (T, 2, h, w) (row
    ``item["annotated"]``; or that frame's (2, h, w) directly) against its GT.

    ``protocol="official"`` (LAVT-RS ``evaluate_a2d``): argmax at the model resolution vs the GT
    resized with PIL NEAREST to it; this is ``item["target"][annotated]`` when the logits are
    S x S (the dataset's ``image_size``). With ``gt_original`` (the (H0, W0) mask, e.g.
    ``dataset.original_masks(index)[0]``) the GT is resized from it instead, so any logit size
    works, and ``protocol="original"`` (logits upsampled bilinearly, align_corners=True, to the
    original size) becomes available. Feed the result to ``RISMeter.update_counts``."""
    a = int(item["annotated"])
    lg = _annotated_logits(logits, a)
    if gt_original is not None:
        gt = gt_original.detach().cpu().numpy() if isinstance(gt_original, torch.Tensor) else np.asarray(gt_original)
        if gt.ndim == 3 and gt.shape[0] == 1:
            gt = gt[0]
        try:
            return score_prediction(lg, gt, protocol=protocol)
        except ValueError as e:
            raise InputError(str(e)) from None
    if protocol != "official":
        raise InputError(
            f"protocol {protocol!r} needs gt_original (the original-size mask); only 'official' works from the item"
        )
    target = torch.as_tensor(item["target"])
    if target.ndim == 3:
        target = target[a]
    if tuple(target.shape) != tuple(lg.shape[-2:]):
        raise InputError(
            f"logits are {lg.shape[-2]}x{lg.shape[-1]} but the target is {target.shape[0]}x{target.shape[1]}; "
            "pass gt_original to resize the original mask to the logits' size"
        )
    pred = lg.float().argmax(0).bool().cpu()
    gt = target.cpu() != 0
    return int((pred & gt).sum()), int((pred | gt).sum())


def score_annotated_batch(logits: Any, batch: dict[str, Any]) -> list[tuple[int, int]]:
    """Official ``(I, U)`` of every sample of a :func:`collate_video` batch. ``logits``: (B, T,
    2, S, S), or the video model's batch-major (B*T, 2, S, S) (row b*T + t)."""
    target = torch.as_tensor(batch["target"]) if not isinstance(batch["target"], list) else None
    annotated = [int(a) for a in torch.as_tensor(batch["annotated"]).reshape(-1)]
    b = len(annotated)
    lg = torch.as_tensor(logits).detach()
    if lg.ndim == 4:
        if lg.shape[0] % b:
            raise InputError(f"{lg.shape[0]} logit rows cannot be split into {b} clips")
        lg = lg.reshape(b, lg.shape[0] // b, *lg.shape[1:])
    if lg.ndim != 5 or lg.shape[0] != b:
        raise InputError(f"logits must be (B, T, 2, h, w) or (B*T, 2, h, w) for B={b}, got {tuple(lg.shape)}")
    targets = target if target is not None else batch["target"]
    return [score_annotated_frame(lg[k], {"annotated": annotated[k], "target": targets[k]}) for k in range(b)]


def evaluate_annotated_frames(
    predict: Callable[[dict[str, Any]], Any],
    dataset: Any,
    meter: RISMeter | None = None,
    indices: Sequence[int] | None = None,
    protocol: str = "official",
) -> RISMeter:
    """Score ``dataset`` (an :class:`A2DSentences` / :class:`JHMDBSentences` in eval mode) with
    ``predict(item) -> logits (T, 2, h, w)`` (any model; e.g. a closure that batches the item and
    runs the network). One sample per item, keyed ``<image_id>#<index>``; returns the meter
    (``meter.compute()`` -> oIoU, mIoU, P@K x100). ``protocol="original"`` scores at the original
    frame size instead of the paper's 480x480."""
    if meter is None:
        res = "model resolution, GT PIL NEAREST" if protocol == "official" else "original frame size"
        meter = RISMeter(resolution=res)
    for i in range(len(dataset)) if indices is None else indices:
        item = dataset[i]
        gt = dataset.original_masks(i) if protocol != "official" else None
        inter, union = score_annotated_frame(predict(item), item, protocol=protocol, gt_original=gt)
        meter.update_counts(inter, union, key=f"{item['image_id']}#{item['index']}")
    return meter
