"""The annotated-frame protocol shared by A2D-Sentences and JHMDB-Sentences: clips around one
annotated frame per sample, the frame-folder / mp4 readers behind them, and the official scoring.

Both datasets score **one annotated frame per sample** (data-and-metrics.md 3.1, 3.2, 4.1;
official-lavt-facts.md 4.6). Every item is a clip around that frame with the
:class:`lavt.data.ytvos.ReferYouTubeVOS` keys, a ``target`` that is zero except at the annotated
frame, ``valid`` True only there, and ``annotated`` = the annotated frame's position in the clip.
:class:`AnnotatedFrameDataset` builds those items; :mod:`lavt.data.a2d` and :mod:`lavt.data.jhmdb`
supply each dataset's sample list, masks and frame source.

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
* **Frames** come from a folder of 1-based numbered files (:class:`FolderVideo`) or a decoded
  mp4 (:class:`Mp4Video`); a small per-process LRU (:class:`VideoCache`) keeps the last videos.

Scoring (:func:`score_annotated_frame`, :func:`evaluate_annotated_frames`): the official LAVT
protocol takes the argmax of the annotated frame's two-class logits at the model resolution
(480x480) and compares it with the GT resized to that size with PIL NEAREST, which is exactly
the item's ``target`` at ``annotated``. I and U go into a :class:`lavt.evaluation.metrics.RISMeter` (LAVT
conventions: IoU >= K for P@K, IoU 0 when the union is empty); oIoU, mIoU and P@K x100.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import ConfigError, InputError
from ..evaluation.metrics import RISMeter, score_prediction
from .files import DatasetError, load_rgb_frame, one_line
from .transforms import preprocess_image, resize_mask
from .ytvos import fetch_rng, sample_clip_indices, tokenize_one

__all__ = [
    "AnnotatedFrameDataset",
    "FolderVideo",
    "Mp4Video",
    "VideoCache",
    "annotated_position",
    "clean_text",
    "consecutive_window",
    "evaluate_annotated_frames",
    "frame_files",
    "score_annotated_batch",
    "score_annotated_frame",
]

MODES = ("train", "eval")
EVAL_SAMPLINGS = ("consecutive", "random")
SCORE_POSITIONS = ("first", "center")
DEFAULT_CLIP_LEN = {"train": 8, "eval": 16}
_FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
_MAX_REDRAWS = 100
_INSTALL_AV = "pip install av (or pip install 'lavt[video]')"


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------
def clean_text(text: str) -> str:
    """The official query clean-up (MTTR, LAVT-RS): lower case, whitespace runs -> one space."""
    return " ".join(str(text).lower().split())


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


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} {value!r} is not one of: {', '.join(map(str, choices))}")


def check_positive(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer{' or None' if allow_none else ''}, got {value!r}")


# --------------------------------------------------------------------------------------------
# Video sources (a frames folder, or an mp4 decoded once) with a small LRU cache
# --------------------------------------------------------------------------------------------
def frame_files(folder: Path) -> list[Path]:
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


def _each_once(indices: Sequence[int], read: Callable[[int], Image.Image]) -> list[Image.Image]:
    """The frames at ``indices``; a frame a clamped window repeats is read once."""
    read_frames = {i: read(i) for i in dict.fromkeys(indices)}
    return [read_frames[i] for i in indices]


class FolderVideo:
    """The numbered frame files of a folder, read on demand."""

    def __init__(self, folder: Path):
        self.source = folder
        self.files = frame_files(folder)

    def __len__(self) -> int:
        return len(self.files)

    def frames(self, indices: Sequence[int]) -> list[Image.Image]:
        return _each_once(indices, lambda i: load_rgb_frame(self.files[i]))


class Mp4Video:
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
            raise DatasetError(f"cannot read video {path} (corrupt or truncated?): {one_line(e)}") from None
        if not self._frames:
            raise DatasetError(f"no frames could be decoded from video {path}")

    def __len__(self) -> int:
        return len(self._frames)

    def frames(self, indices: Sequence[int]) -> list[Image.Image]:
        return _each_once(indices, lambda i: Image.fromarray(self._frames[i], mode="RGB"))


class VideoCache:
    """The last ``size`` videos opened (0: none kept), least recently used dropped first."""

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
# Shared dataset machinery
# --------------------------------------------------------------------------------------------
class AnnotatedFrameDataset(torch.utils.data.Dataset):
    """Clips around one annotated frame per sample; subclasses supply the index and files."""

    scores_annotated_frames = True  # the engine scores the annotated frame, not J&F over the clip
    name = "dataset"

    def __init__(self, clip_len, image_size, mode, tokenizer, seed, max_local_offset, eval_sampling,
                 score_position, cache_videos):
        check_choice("mode", mode, MODES)
        check_choice("eval_sampling", eval_sampling, EVAL_SAMPLINGS)
        check_choice("score_position", score_position, SCORE_POSITIONS)
        check_positive("clip_len", clip_len, allow_none=True)
        check_positive("image_size", image_size)
        check_positive("max_local_offset", max_local_offset)
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
        self._cache = VideoCache(cache_videos)

    # ---- to implement ---------------------------------------------------------------------
    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _annotated_mask(self, index: int) -> np.ndarray:  # (H0, W0) bool
        raise NotImplementedError

    def _video(self, index: int) -> Any:  # a FolderVideo / Mp4Video (__len__, frames(indices), source)
        raise NotImplementedError

    def _num_frames(self, index: int, video: Any) -> int:
        return len(video)

    def _fields(self, index: int) -> dict[str, Any]:  # text, ids... of a sample
        raise NotImplementedError

    # ---- common ---------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = VideoCache(self._cache.size)  # decoded videos are not sent to workers
        return state

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _check_index(self, index: int) -> int:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} samples")
        return index + n if index < 0 else index

    def _rng(self, index: int) -> np.random.Generator:
        return fetch_rng(self.seed, self.epoch, index)

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
            item["input_ids"], item["attention_mask"] = tokenize_one(self.tokenizer, fields["text"], where)
        return item


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
