"""Ref-YouTube-VOS clips (:class:`ReferYouTubeVOS`), pseudo-videos from images, batching and the
CodaLab submission writer.

The split's videos and expressions come from :class:`lavt.data.ytvos_index.YTVOSIndex` (the
on-disk layout is described there). :class:`ReferYouTubeVOS` turns them into samples:

- ``mode="train"`` (official LAVT-RS / ReferFormer): for every expression one sample per anchor
  frame in ``range(0, len(frames), clip_len)``. Each fetch draws a clip of ``clip_len`` frames
  around the anchor (:func:`sample_clip_indices`); if the referred object is visible in none of
  them, a random sample index is drawn instead (repeatedly).
- ``mode="eval"``: one sample per expression holding all its video's frames (official
  inference runs the whole video as one clip), or, with ``eval_clip_len``, one per window of
  consecutive frames (:func:`windows`).

Frames are resized to ``image_size x image_size`` and normalised exactly as the image loader
does (:func:`lavt.data.transforms.preprocess_image`); masks are ``png == obj_id`` resized with
NEAREST. :class:`PseudoVideoDataset` turns a referring *image* dataset into clips of one image
repeated (RefCOCO pretraining of the video model). :func:`write_submission` and
:func:`zip_submission` produce what the CodaLab server takes.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import ConfigError, InputError, LAVTError
from .files import SAFE_NAME, DatasetError
from .transforms import preprocess_image, resize_mask
from .ytvos_index import YTVOSExpression, YTVOSIndex

MODES = ("train", "eval")

_MAX_REDRAWS = 100  # invisible-object redraws before a fetch gives up and returns its last clip


# --------------------------------------------------------------------------------------------
# Frame sampling, randomness and tokens (also used by the annotated-frame datasets)
# --------------------------------------------------------------------------------------------
def sample_clip_indices(
    anchor: int, num_frames: int, clip_len: int, rng: np.random.Generator, max_local_offset: int = 3
) -> list[int]:
    """The official training clip (official-lavt-facts 4.4, data-and-metrics 2.5), sorted.

    ``anchor`` plus one local frame before it (offset uniform in 1..max_local_offset, clipped at
    0) and one after it (clipped at num_frames - 1); duplicates are possible. If clip_len > 3,
    clip_len - 3 global frames are drawn without replacement from the frames outside
    [min, max] of the local ones when there are enough of them, otherwise from the whole video,
    otherwise the whole video once (shuffled) plus extras drawn with replacement.
    ``clip_len == 1`` gives the anchor alone and ``clip_len == 2`` the anchor and the "after"
    frame (both offsets are always drawn, so the random stream does not depend on clip_len).
    """
    if not 0 <= anchor < num_frames:
        raise ValueError(f"anchor {anchor} is outside a video of {num_frames} frames")
    if clip_len < 1 or max_local_offset < 1:
        raise ValueError(f"clip_len and max_local_offset must be >= 1, got {clip_len}, {max_local_offset}")
    before = int(rng.integers(1, max_local_offset + 1))
    after = int(rng.integers(1, max_local_offset + 1))
    local = [anchor, max(0, anchor - before), min(num_frames - 1, anchor + after)]
    if clip_len <= 3:
        chosen = [local[0], local[2], local[1]][:clip_len]
    else:
        g = clip_len - 3
        lo, hi = min(local), max(local)
        outside = [i for i in range(num_frames) if i < lo or i > hi]
        if len(outside) >= g:
            extra = [outside[i] for i in rng.choice(len(outside), g, replace=False)]
        elif num_frames >= g:
            extra = [int(i) for i in rng.choice(num_frames, g, replace=False)]
        else:
            extra = [int(i) for i in rng.permutation(num_frames)]
            extra += [int(i) for i in rng.choice(num_frames, g - num_frames, replace=True)]
        chosen = local + extra
    return sorted(int(i) for i in chosen)


def windows(frames: Sequence[Any] | int, clip_len: int) -> list[list[Any]]:
    """Consecutive non-overlapping windows of ``clip_len`` covering every frame once, in order
    (the last one is shorter when clip_len does not divide the length). ``frames`` is a list (of
    frame names, a :class:`~lavt.data.ytvos_index.YTVOSVideo`'s ``frames``...) or a count
    (windows of indices)."""
    if isinstance(clip_len, bool) or not isinstance(clip_len, int) or clip_len < 1:
        raise ConfigError(f"window length must be a positive integer, got {clip_len!r}")
    items = list(range(frames)) if isinstance(frames, int) else list(getattr(frames, "frames", frames))
    return [items[i : i + clip_len] for i in range(0, len(items), clip_len)]


def fetch_rng(seed: int | None, epoch: int, index: int) -> np.random.Generator:
    """The random stream of one fetch: a pure function of (seed, epoch, index) when seeded, so
    resumed runs repeat exactly; else seeded from the global torch RNG (seeded per worker)."""
    if seed is None:
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
    return np.random.default_rng([seed, epoch, index])


def tokenize_one(tokenizer: Any, text: str, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` (L,) of one expression; a tokenizer error becomes a
    :class:`DatasetError` that names the expression (``where``)."""
    try:
        ids, mask = tokenizer([text])
    except LAVTError as err:
        raise DatasetError(f"{where}: {err}") from None
    return ids[0].clone(), mask[0].clone()


# --------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------
class ReferYouTubeVOS(torch.utils.data.Dataset):
    """Ref-YouTube-VOS clips for the video LAVT (see the module docstring).

    Item dict: ``video`` float32 (T, 3, S, S) normalised; ``text``; ``input_ids`` /
    ``attention_mask`` (L,) with a ``tokenizer``; ``video_id``, ``exp_id``, ``obj_id`` (int or
    None), ``frame_names`` (list of T str), ``frame_indices`` int64 (T,) into the video's sorted
    frames, ``orig_sizes`` int64 (T, 2) original (H, W) per frame, ``orig_size`` int64 (2,) of
    the first frame, ``index`` (the index asked for), ``sample_index`` (the sample actually
    returned: differs after an invisible-object redraw); with annotations (train split, either
    mode) ``target`` int64 (T, S, S) in {0, 1} (the referred object only, 0 where absent) and
    ``valid`` bool (T,) whether the object is present in the frame. Train items also carry
    ``anchor`` (the anchor frame index).

    ``clip_len`` T (default 8; the official code's default is 1, its paper uses more);
    ``anchor_stride`` (default T) spaces the anchors; ``max_local_offset`` (3) bounds the local
    frames' distance; ``resample_invisible`` redraws a random sample when the object is absent
    from the whole clip (official). ``eval_clip_len`` None = whole video per eval item.

    Randomness (train): with ``seed`` set, every draw is a pure function of (seed, epoch, index)
    — call :meth:`set_epoch` — so resumed runs repeat exactly; without it a per-fetch seed comes
    from the global torch RNG (seeded per DataLoader worker).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        clip_len: int = 8,
        image_size: int = 480,
        mode: str = "train",
        tokenizer: Any = None,
        seed: int | None = None,
        anchor_stride: int | None = None,
        max_local_offset: int = 3,
        resample_invisible: bool = True,
        eval_clip_len: int | None = None,
    ):
        if mode not in MODES:
            raise ConfigError(f"mode {mode!r} is not one of {MODES}")
        for name, v in (("clip_len", clip_len), ("image_size", image_size), ("max_local_offset", max_local_offset)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        for name, v in (("anchor_stride", anchor_stride), ("eval_clip_len", eval_clip_len)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"{name} must be a positive integer or None, got {v!r}")
        self.index = self._open_index(root, split)
        if mode == "train" and not self.index.has_annotations:
            raise ConfigError(f"the {split} split has no annotations: use mode='eval'")
        self.split, self.mode = split, mode
        self.clip_len, self.image_size = clip_len, image_size
        self.tokenizer = tokenizer
        self.seed, self.epoch = seed, 0
        self.anchor_stride = anchor_stride or clip_len
        self.max_local_offset = max_local_offset
        self.resample_invisible = resample_invisible
        self.eval_clip_len = eval_clip_len
        # samples: (expression index, anchor frame index) in train; (expression index, window) in eval
        self.samples: list[tuple[int, int]] = []
        for k, e in enumerate(self.index.expressions):
            n = len(self.index.videos[e.video_id].frames)
            if mode == "train":
                self.samples += [(k, a) for a in range(0, n, self.anchor_stride)]
            elif eval_clip_len is None:
                self.samples.append((k, 0))
            else:
                self.samples += [(k, w) for w in range(len(windows(n, eval_clip_len)))]
        if not self.samples:
            raise DatasetError(self._no_samples_message())

    def _open_index(self, root: str | os.PathLike[str], split: str) -> YTVOSIndex:
        """The split's index (Ref-DAVIS17 reads its own files into the same interface)."""
        return YTVOSIndex(root, split)

    def _no_samples_message(self) -> str:
        return f"{self.index.meta_path} holds no expressions for the {self.split} split"

    def __len__(self) -> int:
        return len(self.samples)

    def required_files(self) -> list[Path]:
        """Every frame (and, with annotations, every mask) of the split's videos with expressions
        (checked for existence before a long run starts)."""
        files: list[Path] = []
        for video_id in dict.fromkeys(e.video_id for e in self.index.expressions):
            for frame in self.index.video(video_id).frames:
                files.append(self.index.frame_path(video_id, frame))
                if self.index.has_annotations:
                    files.append(self.index.annotation_path(video_id, frame))
        return files

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _sample(self, index: int) -> tuple[int, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} samples")
        return self.samples[index]

    def sample_info(self, index: int) -> dict[str, Any]:
        """What a sample is without loading anything: expression, video and its frames (all
        frames in train, whose clip is drawn at fetch time; the window in eval)."""
        k, j = self._sample(index)
        e = self.index.expressions[k]
        frames = list(self.index.videos[e.video_id].frames)
        if self.mode == "eval" and self.eval_clip_len is not None:
            frames = windows(frames, self.eval_clip_len)[j]
        return {"video_id": e.video_id, "exp_id": e.exp_id, "obj_id": e.obj_id, "text": e.text,
                "type": e.type, "frame_names": frames, "anchor": j if self.mode == "train" else None}

    def original_masks(self, index: int) -> np.ndarray:
        """The referred object's masks at original size, bool (N, H0, W0), for the sample's eval
        frames (all frames of the video, or the window); annotated splits only."""
        info = self.sample_info(index)
        if info["obj_id"] is None:
            raise DatasetError(f"the {self.split} split has no annotations")
        vid, obj = info["video_id"], info["obj_id"]
        return np.stack([self.index.load_annotation(vid, f) == obj for f in info["frame_names"]])

    # ------------------------------------------------------------------------------------
    def _masks(self, e: YTVOSExpression, frames: Sequence[str]) -> list[np.ndarray]:
        return [self.index.load_annotation(e.video_id, f) == e.obj_id for f in frames]

    def _draw(self, k: int, anchor: int, rng: np.random.Generator) -> tuple[list[int], list[np.ndarray]]:
        e = self.index.expressions[k]
        frames = self.index.videos[e.video_id].frames
        idx = sample_clip_indices(anchor, len(frames), self.clip_len, rng, self.max_local_offset)
        masks = self._masks(e, [frames[i] for i in idx])
        return idx, masks

    def __getitem__(self, index: int) -> dict[str, Any]:
        k, j = self._sample(index)
        sample_index = index if index >= 0 else index + len(self)
        extra: dict[str, Any] = {}
        if self.mode == "train":
            rng = fetch_rng(self.seed, self.epoch, sample_index)
            idx, masks = self._draw(k, j, rng)
            redraws = 0
            while self.resample_invisible and not any(m.any() for m in masks) and redraws < _MAX_REDRAWS:
                e = self.index.expressions[k]
                if not any(e.obj_id in ids for ids in self.index.object_ids(e.video_id)):
                    raise DatasetError(
                        f"{self.index.meta_path}: video {e.video_id}, expression {e.exp_id}: obj_id {e.obj_id} "
                        f"appears in no annotation under {self.index.annotation_dir / e.video_id}"
                    )
                sample_index = int(rng.integers(len(self)))
                k, j = self.samples[sample_index]
                idx, masks = self._draw(k, j, rng)
                redraws += 1
            extra["anchor"] = j
        else:
            e = self.index.expressions[k]
            n = len(self.index.videos[e.video_id].frames)
            idx = list(range(n)) if self.eval_clip_len is None else windows(n, self.eval_clip_len)[j]
            names = [self.index.videos[e.video_id].frames[i] for i in idx]
            masks = self._masks(e, names) if e.obj_id is not None else None

        e = self.index.expressions[k]
        names = [self.index.videos[e.video_id].frames[i] for i in idx]
        s = self.image_size
        tensors, sizes = [], []
        for t, name in enumerate(names):
            img = self.index.load_frame(e.video_id, name)
            if masks is not None and masks[t].shape != (img.height, img.width):
                raise DatasetError(
                    f"annotation {self.index.annotation_path(e.video_id, name)} is "
                    f"{masks[t].shape[1]}x{masks[t].shape[0]} but frame {self.index.frame_path(e.video_id, name)} "
                    f"is {img.width}x{img.height}"
                )
            tensors.append(preprocess_image(img, s))
            sizes.append((img.height, img.width))
        orig_sizes = torch.tensor(sizes, dtype=torch.int64)
        item: dict[str, Any] = {
            "video": torch.stack(tensors),
            "text": e.text,
            "video_id": e.video_id,
            "exp_id": e.exp_id,
            "obj_id": e.obj_id,
            "frame_names": names,
            "type": e.type,
            "frame_indices": torch.tensor(idx, dtype=torch.int64),
            "orig_sizes": orig_sizes,
            "orig_size": orig_sizes[0].clone(),
            "index": index if index >= 0 else index + len(self),
            "sample_index": sample_index,
            **extra,
        }
        if masks is not None:
            item["target"] = torch.from_numpy(np.stack([resize_mask(m, s) for m in masks]).astype(np.int64))
            item["valid"] = torch.tensor([bool(m.any()) for m in masks], dtype=torch.bool)
        if self.tokenizer is not None:
            where = f"{self.index.meta_path}: video {e.video_id}, expression {e.exp_id}"
            item["input_ids"], item["attention_mask"] = tokenize_one(self.tokenizer, e.text, where)
        return item


# --------------------------------------------------------------------------------------------
# Pseudo-videos from a referring image dataset (official-lavt-facts 4.7)
# --------------------------------------------------------------------------------------------
class PseudoVideoDataset(torch.utils.data.Dataset):
    """Clips of one image repeated ``clip_len`` times, from a referring image dataset whose items
    hold ``image`` (3, S, S) and ``target`` (S, S) (e.g. :class:`lavt.data.refer.ReferSegmentation`).

    The official RefCOCO pretraining of the video model uses one sample per *expression*: wrap
    ``ReferSegmentation(mode="eval")`` (or a ConcatDataset of them) for that; ``mode="train"``
    gives one sample per object with a random sentence. Items have the video dataset's keys:
    ``video`` (T, 3, S, S), ``target`` (T, S, S), ``valid`` (T,), ``frame_names`` (["00000"] * T),
    ``frame_indices`` zeros, ``orig_sizes``/``orig_size`` = the tensor size (S, S) (the image
    dataset does not expose original sizes), ``video_id`` (``"ref<ref_id>"`` or
    ``"image<index>"``), ``exp_id`` (the sent_id as str, or "0"), ``obj_id`` 1, plus every key of
    the image item except ``image`` (``text``, ``input_ids``, ``attention_mask``, ``ref_id``...).
    """

    def __init__(self, image_dataset: Any, clip_len: int = 1):
        if isinstance(clip_len, bool) or not isinstance(clip_len, int) or clip_len < 1:
            raise ConfigError(f"clip_len must be a positive integer, got {clip_len!r}")
        self.dataset = image_dataset
        self.clip_len = clip_len

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        """Forward to the wrapped dataset (and to each part of a ConcatDataset)."""
        for d in [self.dataset, *getattr(self.dataset, "datasets", [])]:
            if hasattr(d, "set_epoch"):
                d.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.dataset[index])
        try:
            image, target = item.pop("image"), item["target"]
        except KeyError as e:
            raise ConfigError(f"PseudoVideoDataset needs image items with 'image' and 'target', missing {e}") from None
        t = self.clip_len
        target = torch.as_tensor(target).to(torch.int64)
        h, w = image.shape[-2:]
        size = torch.tensor([h, w], dtype=torch.int64)
        item.update(
            video=image.unsqueeze(0).expand(t, *image.shape).contiguous(),
            target=target.unsqueeze(0).expand(t, *target.shape).contiguous(),
            valid=torch.full((t,), bool(target.any()), dtype=torch.bool),
            frame_names=["00000"] * t,
            frame_indices=torch.zeros(t, dtype=torch.int64),
            orig_sizes=size.expand(t, 2).clone(),
            orig_size=size,
        )
        item.setdefault("text", "")
        item.setdefault("type", "")
        item.setdefault("video_id", f"ref{item['ref_id']}" if "ref_id" in item else f"image{index}")
        item.setdefault("exp_id", str(item["sent_id"]) if "sent_id" in item else "0")
        item.setdefault("obj_id", 1)
        item.setdefault("index", index)
        return item


def collate_video(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensor fields into (B, ...) tensors (``video`` -> (B, T, 3, S, S)); tensors whose
    shapes differ across the batch (eval clips of different lengths) and every other field
    become lists."""
    if not batch:
        raise ValueError("cannot collate an empty batch")
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [b[key] for b in batch]
        if isinstance(values[0], torch.Tensor) and all(
            isinstance(v, torch.Tensor) and v.shape == values[0].shape for v in values
        ):
            out[key] = torch.stack(values)
        else:
            out[key] = values
    return out


# --------------------------------------------------------------------------------------------
# Submission (data-and-metrics.md 2.6)
# --------------------------------------------------------------------------------------------
def logits_to_masks(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Official LAVT-RS post-processing: (T, 2, h, w) logits upsampled bilinearly
    (align_corners=True) to ``size`` = (H, W), then argmax -> bool (T, H, W)."""
    if logits.ndim != 4 or logits.shape[1] != 2:
        raise InputError(f"logits must be (T, 2, h, w), got shape {tuple(logits.shape)}")
    h, w = (int(v) for v in size)
    up = F.interpolate(logits.float(), size=(h, w), mode="bilinear", align_corners=True)
    return up.argmax(1).bool()


def _check_name(value: str, what: str) -> str:
    value = str(value)
    if not SAFE_NAME.match(value) or value in (".", ".."):
        raise InputError(f"{what} {value!r} is not a plain file name")
    return value


def write_submission(
    out_dir: str | os.PathLike[str],
    video_id: str,
    exp_id: str | int,
    frame_names: Sequence[str],
    masks: Any,
) -> list[Path]:
    """Write ``<out_dir>/Annotations/<video_id>/<exp_id>/<frame>.png`` for each frame: 8-bit
    grayscale ('L'), 255 = object, 0 = background, at the mask's size (which must be the original
    frame size; see :func:`logits_to_masks`). ``masks``: bool or integer (N, H, W) array/tensor,
    or a sequence of N (H, W) ones (non-zero = object). Returns the written paths."""
    vid = _check_name(video_id, "video id")
    eid = _check_name(exp_id, "expression id")
    names = [_check_name(f, "frame name") for f in frame_names]
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    seq = list(masks)
    if len(seq) != len(names):
        raise InputError(f"{len(seq)} masks for {len(names)} frame names (video {vid}, expression {eid})")
    folder = Path(out_dir) / "Annotations" / vid / eid
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, m in zip(names, seq):
        if isinstance(m, torch.Tensor):
            m = m.detach().cpu().numpy()
        m = np.asarray(m)
        if m.ndim != 2:
            raise InputError(f"mask for frame {name} of video {vid} must be 2-D (H, W), got shape {m.shape}")
        if m.dtype != bool and not np.issubdtype(m.dtype, np.integer):
            raise InputError(f"mask for frame {name} of video {vid} has dtype {m.dtype}; pass bool or integer masks")
        path = folder / f"{name}.png"
        Image.fromarray(np.where(m > 0, 255, 0).astype(np.uint8), mode="L").save(path)
        paths.append(path)
    return paths


def zip_submission(
    out_dir: str | os.PathLike[str], zip_path: str | os.PathLike[str], index: YTVOSIndex | None = None
) -> Path:
    """Zip ``<out_dir>/Annotations`` so the archive's top-level entry is ``Annotations/``
    (entries ``Annotations/<video>/<exp>/<frame>.png``, sorted, PNG files only), as
    ``zip -r submission.zip Annotations`` would. With ``index`` (the valid split), first check
    that every (video, expression, listed frame) has its PNG. Returns the zip's path."""
    ann = Path(out_dir) / "Annotations"
    if not ann.is_dir():
        raise DatasetError(f"no Annotations folder in {out_dir}: write predictions with write_submission first")
    if index is not None:
        missing = [
            f"{e.video_id}/{e.exp_id}/{f}.png"
            for e in index.expressions
            for f in index.videos[e.video_id].frames
            if not (ann / e.video_id / e.exp_id / f"{f}.png").is_file()
        ]
        if missing:
            raise DatasetError(
                f"{len(missing)} predicted masks missing under {ann} for the {index.split} split, "
                f"first: {missing[0]}"
            )
    files = sorted(p for p in ann.rglob("*.png") if p.is_file())
    if not files:
        raise DatasetError(f"{ann} holds no PNG files")
    zip_path = Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in files:
            zf.write(p, arcname=p.relative_to(ann.parent).as_posix())
    return zip_path
