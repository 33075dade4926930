"""JHMDB-Sentences (evaluation only): the puppet masks, the evaluated frames and the clip dataset.

Items follow the annotated-frame protocol of :mod:`lavt.data.annotated_frame`, with
:class:`lavt.data.a2d.A2DSentences`' item contract. Layout (``root``)::

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
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .annotated_frame import AnnotatedFrameDataset, FolderVideo, clean_text, frame_files
from .files import DatasetError, csv_body, int_value, load_json, one_line, require_file

__all__ = ["JHMDBSentences", "jhmdb_image_id", "read_jhmdb_masks"]

log = logging.getLogger(__name__)

JHMDB_SPLITS = ("test",)
JHMDB_METADATA = "jhmdb_sentences_samples_metadata.json"


def jhmdb_image_id(video_id: str, frame: int) -> str:
    """JHMDB sample id ``v_<video>_f_<frame>`` (frame 1-based)."""
    return f"v_{video_id}_f_{int(frame)}"


def read_jhmdb_masks(path: str | os.PathLike[str]) -> np.ndarray:
    """The puppet masks of a video: ``part_mask`` (H, W, T) of ``puppet_mask.mat`` as bool
    (T, H, W); mask t - 1 belongs to frame t."""
    p = require_file(Path(path), "JHMDB puppet mask file")
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DatasetError(f"reading {p} needs scipy: pip install scipy (or pip install 'lavt[data]')") from None
    try:
        data = loadmat(str(p))
    except NotImplementedError as e:  # MATLAB v7.3 files
        raise DatasetError(f"cannot read JHMDB puppet mask file {p}: {one_line(e)}") from None
    except Exception as e:  # scipy raises ValueError, TypeError, OSError, MatReadError... on bad files
        raise DatasetError(
            f"cannot read JHMDB puppet mask file {p} (corrupt?): {type(e).__name__}: {one_line(e)}"
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


class JHMDBSentences(AnnotatedFrameDataset):
    """JHMDB-Sentences, evaluation only, with :class:`~lavt.data.a2d.A2DSentences`' item contract (``exp_id``
    "0", ``obj_id`` 1 and ``instance_id`` None: one actor, one sentence per video; ``image_id``
    ``v_<vid>_f_<frame>``).

    ``frames``: ``"metadata"`` (default: MTTR's ``jhmdb_sentences_samples_metadata.json``, found
    at ``samples_metadata`` or ``<root>/jhmdb_sentences_samples_metadata.json``), ``"all"`` (every
    frame with a puppet mask) or a positive int k (k random usable frames per video, sorted,
    seeded by ``seed``, default 0). ``clip_len`` default 16.
    """

    name = "JHMDB-Sentences"

    def __init__(  # A2DSentences' leading parameters, then JHMDB's own
        self, root: str | os.PathLike[str], split: str = "test", clip_len: int | None = None, image_size: int = 480,
        mode: str = "eval", tokenizer: Any = None, seed: int | None = None,
        samples_metadata: str | os.PathLike[str] | None = None, frames: str | int = "metadata",
        score_position: str = "first", cache_videos: int = 1,
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
        data = load_json(path, "JHMDB-Sentences samples metadata")
        if not isinstance(data, list):
            raise DatasetError(
                f"{path} must hold a JSON list of [video_id, frame_path, mask_path, total_frames, sentence]"
            )
        out = []
        for k, e in enumerate(data):
            ok = isinstance(e, (list, tuple)) and len(e) == 5 and all(isinstance(e[i], str) for i in (0, 1, 4))
            stem = Path(str(e[1])).stem if ok else ""
            total = int_value(e[3]) if ok else None
            if not ok or not stem.isdigit() or total is None or not 1 <= int(stem) <= total:
                raise DatasetError(
                    f"{path}: entry {k} is not [video_id, .../<%05d>.png, mask_path, total_frames, sentence] "
                    f"with the frame within 1..total_frames: {one_line(e)[:120]}"
                )
            out.append(_JHMDBSample(e[4], e[0], self._action(e[0], str(path)), int(stem), total))
        return out

    def _from_annotation(self, frames: str | int, seed: int) -> list[_JHMDBSample]:
        path = self.root / "jhmdb_annotation.txt"
        rows = csv_body(path, "JHMDB-Sentences annotations", ("video_id", "sentence"))
        rng = np.random.default_rng(seed)
        out = []
        for k, row in rows:
            if len(row) < 2:
                raise DatasetError(f"{path}: line {k} has {len(row)} column, expected video_id, sentence")
            vid, text = row[0].strip(), ",".join(row[1:])
            action = self._action(vid, str(path))
            n_frames = len(frame_files(self.image_dir / action / vid))
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
        return self._cache.get(self.image_dir / s.action / s.video_id, FolderVideo)

    def _num_frames(self, index: int, video: Any) -> int:
        total = self.samples[index].total_frames
        if total > len(video):
            raise DatasetError(f"JHMDB video {video.source} has {len(video)} frames, fewer than the {total} listed")
        return total

