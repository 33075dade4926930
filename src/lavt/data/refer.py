"""RefCOCO, RefCOCO+ and RefCOCOg read from the ``refer`` on-disk layout.

Layout (``data_root`` is what LAVT calls ``--refer_data_root``)::

    <data_root>/images/mscoco/images/train2014/COCO_train2014_<12-digit id>.jpg
    <data_root>/<dataset>/instances.json          # COCO style: images, annotations, categories
    <data_root>/<dataset>/refs(<split_by>).p      # pickled list of ref dicts

:class:`ReferIndex` reads those files and answers the questions the REFER API answers (split
filtering, masks, sentences). :class:`ReferSegmentation` turns it into the samples LAVT trains
and evaluates on:

- ``mode="train"``: one item per ref (referred object); every fetch draws one of the ref's
  sentences uniformly at random, so an epoch visits each object once.
- ``mode="eval"``: one item per (ref, sentence); every sentence is a sample, in the refs' order
  and then each ref's sentence order (what the official ``test.py`` scores).

Image and target are resized to exactly ``image_size x image_size`` (bilinear / NEAREST), the
image normalised with the ImageNet mean/std, the target an int64 {0, 1} map.

The refs file is a pickle. It is read with an unpickler that constructs nothing but Python's
plain types (lists, dicts, strings, numbers), so a booby-trapped refs file cannot run code: it is
refused with one :class:`DatasetError` line naming what it wanted to build.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import ConfigError, LAVTError, LAVTWarning
from .files import DatasetError, load_json, load_plain_pickle
from .transforms import (
    preprocess_image,
    resize_image,
    resize_mask,
    to_normalized_tensor,
)

IMAGE_SUBDIR = os.path.join("images", "mscoco", "images", "train2014")
MASK_MODES = ("union", "legacy")
MODES = ("train", "eval")
# Split names the REFER API knows (see ReferIndex.ref_ids for what each one selects).
EXACT_SPLITS = ("train", "val", "testAB", "testBC", "testAC")
LETTER_SPLITS = ("testA", "testB", "testC")
SPLIT_NAMES = ("train", "val", "test", *LETTER_SPLITS, "testAB", "testBC", "testAC")

_REF_KEYS = ("ref_id", "ann_id", "image_id", "split", "sentences")


# --------------------------------------------------------------------------------------------
# File reading
# --------------------------------------------------------------------------------------------
def _pycocotools_mask() -> Any:
    try:
        from pycocotools import mask as mask_utils
    except ImportError:
        raise DatasetError(
            "decoding RefCOCO masks needs pycocotools: run `pip install pycocotools` "
            "(or `pip install lavt[data]`)"
        ) from None
    return mask_utils


# --------------------------------------------------------------------------------------------
# The REFER index
# --------------------------------------------------------------------------------------------
class ReferIndex:
    """The refs of one ``(dataset, split_by)`` joined to their COCO annotations and images.

    Maps (all dicts, as in the REFER API): ``refs`` ref_id->ref, ``anns`` ann_id->ann,
    ``imgs`` image_id->image, ``cats`` cat_id->name, ``sents`` sent_id->sentence,
    ``img_to_refs``, ``img_to_anns``, ``ref_to_ann``, ``ann_to_ref``, ``cat_to_refs``,
    ``sent_to_ref``, ``sent_to_tokens``. ``ref_list`` keeps the pickle's order.

    Any ``(dataset, split_by)`` pair is accepted as long as the files exist (real ones:
    refcoco/unc, refcoco/google, refcoco+/unc, refcocog/umd, refcocog/google).
    """

    def __init__(self, data_root: str | os.PathLike[str], dataset: str = "refcoco", split_by: str = "unc"):
        self.data_root = Path(os.path.expanduser(os.fspath(data_root)))
        self.dataset = dataset
        self.split_by = split_by
        if not self.data_root.is_dir():
            raise DatasetError(f"refer data root {self.data_root} does not exist (or is not a directory)")
        ds_dir = self.data_root / dataset
        if not ds_dir.is_dir():
            found = sorted(p.name for p in self.data_root.iterdir() if p.is_dir() and p.name != "images")
            raise DatasetError(
                f"dataset folder {ds_dir} does not exist; dataset folders in {self.data_root}: "
                f"{', '.join(found) if found else 'none'}"
            )
        self.refs_path = ds_dir / f"refs({split_by}).p"
        self.instances_path = ds_dir / "instances.json"
        self.image_dir = self.data_root / IMAGE_SUBDIR
        if not self.refs_path.is_file():
            found = sorted(p.name for p in ds_dir.glob("refs(*).p"))
            raise DatasetError(
                f"refs file {self.refs_path} not found (split_by={split_by!r}); refs files in {ds_dir}: "
                f"{', '.join(found) if found else 'none'}"
            )
        if not self.instances_path.is_file():
            raise DatasetError(f"instances file {self.instances_path} not found")

        refs = load_plain_pickle(self.refs_path)
        instances = load_json(self.instances_path, "instances file")
        self._build(refs, instances)

    # ------------------------------------------------------------------------------------
    def _build(self, refs: Any, instances: Any) -> None:
        rp, ip = self.refs_path, self.instances_path
        if not isinstance(refs, list):
            raise DatasetError(f"{rp} holds a {type(refs).__name__}, expected a list of ref dicts")
        if not isinstance(instances, dict) or not all(
            isinstance(instances.get(k), list) for k in ("images", "annotations")
        ):
            raise DatasetError(f"{ip} must be a COCO-style object with 'images' and 'annotations' lists")
        try:
            self.imgs: dict[int, dict] = {img["id"]: img for img in instances["images"]}
            self.anns: dict[int, dict] = {ann["id"]: ann for ann in instances["annotations"]}
            self.cats: dict[int, str] = {c["id"]: c["name"] for c in instances.get("categories") or []}
            self.img_to_anns: dict[int, list[dict]] = {}
            for ann in instances["annotations"]:
                self.img_to_anns.setdefault(ann["image_id"], []).append(ann)
        except (KeyError, TypeError) as e:
            raise DatasetError(f"{ip}: an image, annotation or category entry lacks the field {e}") from None

        self.ref_list: list[dict] = refs
        self.refs: dict[int, dict] = {}
        self.img_to_refs: dict[int, list[dict]] = {}
        self.ref_to_ann: dict[int, dict] = {}
        self.ann_to_ref: dict[int, dict] = {}
        self.cat_to_refs: dict[Any, list[dict]] = {}
        self.sents: dict[int, dict] = {}
        self.sent_to_ref: dict[int, dict] = {}
        self.sent_to_tokens: dict[int, list[str]] = {}
        for i, ref in enumerate(refs):
            if not isinstance(ref, dict) or any(k not in ref for k in _REF_KEYS):
                missing = [k for k in _REF_KEYS if not isinstance(ref, dict) or k not in ref]
                raise DatasetError(f"{rp}: ref #{i} is not a ref dict (missing {', '.join(missing)})")
            ref_id, ann_id, image_id = ref["ref_id"], ref["ann_id"], ref["image_id"]
            if ann_id not in self.anns:
                raise DatasetError(f"{rp}: ref {ref_id} points to annotation {ann_id}, which {ip} does not hold")
            if image_id not in self.imgs:
                raise DatasetError(f"{rp}: ref {ref_id} points to image {image_id}, which {ip} does not hold")
            sentences = ref["sentences"]
            if not isinstance(sentences, list) or not sentences:
                raise DatasetError(f"{rp}: ref {ref_id} has no sentences")
            for s in sentences:
                if not isinstance(s, dict) or "sent_id" not in s or not ("raw" in s or "sent" in s):
                    raise DatasetError(f"{rp}: ref {ref_id} has a sentence without 'sent_id' and 'raw'/'sent'")
                self.sents[s["sent_id"]] = s
                self.sent_to_ref[s["sent_id"]] = ref
                self.sent_to_tokens[s["sent_id"]] = s.get("tokens", [])
            self.refs[ref_id] = ref
            self.img_to_refs.setdefault(image_id, []).append(ref)
            self.ref_to_ann[ref_id] = self.anns[ann_id]
            self.ann_to_ref[ann_id] = ref
            self.cat_to_refs.setdefault(ref.get("category_id"), []).append(ref)

    # ------------------------------------------------------------------------------------
    def splits(self) -> list[str]:
        """The split names the refs carry, in order of first appearance in the refs file."""
        return list(dict.fromkeys(ref["split"] for ref in self.ref_list))

    def ref_ids(self, split: str | None = None) -> list[int]:
        """Ref ids of a split, in the refs file's order (REFER ``getRefIds`` semantics).

        ``train``/``val``/``testAB``/``testBC``/``testAC``: exact match. ``test``: every split
        containing "test" (testA and testB too). ``testA``/``testB``/``testC``: every split
        containing that last letter (so testA also takes refclef's testAB). ``None``: all refs.
        Any other name raises :class:`DatasetError` listing the splits present. A known name
        that selects nothing gives an empty list.
        """
        if split is None:
            return [ref["ref_id"] for ref in self.ref_list]
        if split in EXACT_SPLITS:
            keep: Callable[[str], bool] = lambda s: s == split  # noqa: E731
        elif split == "test":
            keep = lambda s: "test" in s  # noqa: E731
        elif split in LETTER_SPLITS:
            keep = lambda s: split[-1] in s  # noqa: E731
        else:
            raise DatasetError(
                f"unknown split {split!r} for {self.dataset}/{self.split_by}; splits in {self.refs_path.name}: "
                f"{', '.join(self.splits())} (also accepted: {', '.join(SPLIT_NAMES)})"
            )
        return [ref["ref_id"] for ref in self.ref_list if keep(str(ref["split"]))]

    def _ref(self, ref_id: int) -> dict:
        try:
            return self.refs[ref_id]
        except KeyError:
            raise DatasetError(f"ref id {ref_id!r} is not in {self.refs_path}") from None

    def sentences(self, ref_id: int) -> list[dict]:
        """The ref's sentence dicts (``raw``, ``sent``, ``tokens``, ``sent_id``) in file order."""
        return self._ref(ref_id)["sentences"]

    def image_info(self, image_id: int) -> dict:
        try:
            return self.imgs[image_id]
        except KeyError:
            raise DatasetError(f"image id {image_id!r} is not in {self.instances_path}") from None

    def image_path(self, image_id: int) -> Path:
        """``<data_root>/images/mscoco/images/train2014/<images[].file_name>`` (refs' file_name is ignored)."""
        return self.image_dir / self.image_info(image_id)["file_name"]

    def mask(self, ref_id: int, mode: str = "union") -> np.ndarray:
        """The referred object's mask, bool (H, W) at the image's size from instances.json.

        ``mode="union"``: a pixel is foreground if any polygon (or RLE) covers it.
        ``mode="legacy"``: official LAVT, foreground where exactly one polygon covers it, so the
        overlap of two polygons of one object becomes background.
        """
        if mode not in MASK_MODES:
            raise ConfigError(f"mask mode {mode!r} is not one of {MASK_MODES}")
        ann = self.ref_to_ann[self._ref(ref_id)["ref_id"]]
        img = self.image_info(ann["image_id"])
        h, w = int(img["height"]), int(img["width"])
        rles = self._rles(ann, h, w)
        with warnings.catch_warnings():  # pycocotools' numpy-2 "copy keyword" notice is not ours
            warnings.filterwarnings("ignore", message=".*copy keyword", category=DeprecationWarning)
            m = _pycocotools_mask().decode(rles)  # (H, W, N) uint8
        if m.shape[:2] != (h, w):
            raise DatasetError(
                f"{self.instances_path}: annotation {ann['id']} decodes to {m.shape[1]}x{m.shape[0]} "
                f"but image {img['id']} is {w}x{h}"
            )
        if mode == "union":
            return m.any(axis=2)
        return m.sum(axis=2) == 1

    def _rles(self, ann: dict, h: int, w: int) -> list[dict]:
        """The annotation's segmentation as a list of RLEs (one per polygon / part)."""
        mu = _pycocotools_mask()
        where = f"{self.instances_path}: annotation {ann.get('id')}"
        seg = ann.get("segmentation")
        parts = seg if isinstance(seg, list) else [seg]
        if not parts:
            raise DatasetError(f"{where} has an empty segmentation")
        if all(isinstance(p, (list, tuple)) for p in parts):  # polygons
            polys = []
            for p in parts:
                if len(p) < 6 or len(p) % 2:
                    raise DatasetError(
                        f"{where} has a polygon with {len(p)} numbers; a polygon needs an even number, "
                        f"at least 6 (3 points x, y)"
                    )
                try:
                    polys.append([float(v) for v in p])
                except (TypeError, ValueError):
                    raise DatasetError(f"{where} has a polygon with a non-numeric coordinate") from None
            return mu.frPyObjects(polys, h, w)
        if all(isinstance(p, dict) and "counts" in p and "size" in p for p in parts):  # RLE
            rles = []
            for p in parts:
                if [int(v) for v in p["size"]] != [h, w]:
                    raise DatasetError(f"{where}: RLE size {list(p['size'])} differs from the image's [{h}, {w}]")
                if isinstance(p["counts"], list):  # uncompressed RLE
                    rles.append(mu.frPyObjects(p, h, w))
                else:
                    counts = p["counts"].encode("ascii") if isinstance(p["counts"], str) else p["counts"]
                    rles.append({"size": [h, w], "counts": counts})
            return rles
        raise DatasetError(f"{where}: segmentation is neither a list of polygons nor RLE")


# --------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------
class ReferSegmentation(torch.utils.data.Dataset):
    """RefCOCO-family referring segmentation samples (see the module docstring).

    Item dict: ``image`` float32 (3, S, S) normalised; ``target`` int64 (S, S) in {0, 1};
    ``input_ids``/``attention_mask`` int64 (max_tokens,) when a ``tokenizer`` is given;
    ``text`` (the sentence's ``raw`` text, which LAVT tokenises; '' when blanked); ``type``
    (the sentence's ``type`` or ''); ``ref_id``, ``sent_id``, ``index``.

    Randomness (train mode): the sentence is drawn with ``torch.randint`` from the global torch
    RNG. With ``num_workers=0`` that is the main process's RNG (``torch.manual_seed`` makes runs
    repeat); with workers, the DataLoader seeds each worker's torch RNG from a base seed drawn
    from the main RNG at every epoch, so draws differ per epoch and worker yet repeat run to run.

    With ``seed`` set, the draw is instead a pure function of (seed, epoch, index) — call
    :meth:`set_epoch` before each epoch — so a training run resumed mid-epoch sees exactly the
    samples of an uninterrupted one, whatever the number of workers.

    ``blank_expressions=True`` gives every sample the empty expression ([CLS] [SEP] only), the
    language-blind control. ``mask_mode``: "union" (default) or "legacy" (official LAVT's
    overlap quirk, see :meth:`ReferIndex.mask`). ``check_image_size``: a JPEG whose size differs
    from instances.json is an error. ``cache_masks`` (default on) keeps each ref's resized
    target (bit-packed, S*S/8 bytes per ref) after its first decode; ``cache_images`` keeps each
    image resized (uint8, 3*S*S bytes per image). Caches live per process (each DataLoader
    worker fills its own).
    """

    def __init__(
        self,
        data_root: str | os.PathLike[str],
        dataset: str = "refcoco",
        split_by: str = "unc",
        split: str = "train",
        image_size: int = 480,
        mode: str = "train",
        tokenizer: Any = None,
        mask_mode: str = "union",
        blank_expressions: bool = False,
        check_image_size: bool = True,
        cache_images: bool = False,
        cache_masks: bool = True,
        seed: int | None = None,
    ):
        if mode not in MODES:
            raise ConfigError(f"mode {mode!r} is not one of {MODES}")
        if mask_mode not in MASK_MODES:
            raise ConfigError(f"mask_mode {mask_mode!r} is not one of {MASK_MODES}")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ConfigError(f"image_size must be a positive integer, got {image_size!r}")
        self.index = ReferIndex(data_root, dataset, split_by)
        self.split = split
        self.image_size = image_size
        self.mode = mode
        self.tokenizer = tokenizer
        self.mask_mode = mask_mode
        self.blank_expressions = blank_expressions
        self.check_image_size = check_image_size
        self.cache_images = cache_images
        self.seed, self.epoch = seed, 0
        self.cache_masks = cache_masks

        if split not in SPLIT_NAMES:
            raise DatasetError(
                f"unknown split {split!r} for {dataset}/{split_by}; available splits: "
                f"{', '.join(self.index.splits())}"
            )
        self.ref_ids: list[int] = self.index.ref_ids(split)
        if not self.ref_ids:
            raise DatasetError(
                f"split {split!r} of {dataset}/{split_by} has no refs; available splits: "
                f"{', '.join(self.index.splits())}"
            )
        # eval: one sample per (ref, sentence position); train: one per ref (sentence drawn later)
        if mode == "eval":
            self.samples: list[tuple[int, int]] = [
                (r, j) for r in self.ref_ids for j in range(len(self.index.refs[r]["sentences"]))
            ]
        else:
            self.samples = [(r, -1) for r in self.ref_ids]
        self._target_cache: dict[int, np.ndarray] = {}
        self._image_cache: dict[int, np.ndarray] = {}
        self._blank: tuple[torch.Tensor, torch.Tensor] | None = None
        # the official pipeline encodes an empty expression as [CLS] [SEP] and scores it like any
        # other; say once how many this split has (RefCOCO+/G-Ref releases contain a few)
        empty = sum(
            1 for r in self.ref_ids for sent in self.index.refs[r]["sentences"]
            if not (sent.get("raw") or sent.get("sent", "")).strip()
        )
        if empty and not blank_expressions:
            warnings.warn(
                f"{dataset}/{split_by} {split}: {empty} expression(s) are empty; they are encoded as [CLS] [SEP] "
                f"and scored like the others (as the official evaluation does)",
                LAVTWarning,
                stacklevel=2,
            )
        self._last_original: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_sentences(self) -> int:
        return sum(len(self.index.refs[r]["sentences"]) for r in self.ref_ids)

    def required_files(self) -> list[Path]:
        """Every image file this split reads (checked for existence before a long run starts)."""
        image_ids = dict.fromkeys(self.index.refs[r]["image_id"] for r in self.ref_ids)
        return [self.index.image_path(i) for i in image_ids]

    # ------------------------------------------------------------------------------------
    def _sample(self, index: int) -> tuple[int, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} samples")
        return self.samples[index]

    def load_image(self, image_id: int) -> Image.Image:
        """The image as RGB PIL, checked against instances.json's height/width."""
        path = self.index.image_path(image_id)
        if not path.is_file():
            hint = "" if self.index.image_dir.is_dir() else f" (the image folder {self.index.image_dir} does not exist)"
            raise DatasetError(f"image file {path} not found{hint}")
        try:
            with Image.open(path) as im:
                im.load()
                img = im.convert("RGB") if im.mode != "RGB" else im.copy()
        except (OSError, UnidentifiedImageError) as e:
            raise DatasetError(f"cannot read image {path}: {e}") from None
        if self.check_image_size:
            info = self.index.image_info(image_id)
            if img.size != (int(info["width"]), int(info["height"])):
                raise DatasetError(
                    f"image {path} is {img.width}x{img.height} but {self.index.instances_path.name} says "
                    f"{info['width']}x{info['height']} (width x height)"
                )
        return img

    def _image_tensor(self, image_id: int) -> torch.Tensor:
        if not self.cache_images:
            return preprocess_image(self.load_image(image_id), self.image_size)
        arr = self._image_cache.get(image_id)
        if arr is None:
            arr = np.asarray(resize_image(self.load_image(image_id), self.image_size))
            self._image_cache[image_id] = arr
        return to_normalized_tensor(Image.fromarray(arr))

    def _target(self, ref_id: int) -> np.ndarray:
        s = self.image_size
        packed = self._target_cache.get(ref_id)
        if packed is not None:
            return np.unpackbits(packed, count=s * s).reshape(s, s)
        target = resize_mask(self.index.mask(ref_id, self.mask_mode), s)
        if self.cache_masks:
            self._target_cache[ref_id] = np.packbits(target.astype(bool), axis=None)
        return target

    def sample_info(self, index: int) -> dict[str, Any]:
        """What an eval sample is, without loading anything: ref id, image id, sentence and type
        (train samples have no fixed sentence: ``sentence`` is None)."""
        ref_id, j = self._sample(index)
        ref = self.index.refs[ref_id]
        sentence = ref["sentences"][j] if j >= 0 else None
        return {
            "ref_id": ref_id,
            "image_id": ref["image_id"],
            "sentence": sentence,
            "type": (sentence or {}).get("type", ""),
        }

    def original_image(self, index: int) -> Image.Image:
        """The sample's image at its original size (RGB)."""
        return self.load_image(self.index.refs[self._sample(index)[0]]["image_id"])

    def original_target(self, index: int) -> np.ndarray:
        """The sample's mask at the original image size, bool (H0, W0)."""
        ref_id, _ = self._sample(index)
        if self._last_original is None or self._last_original[0] != ref_id:
            # eval samples come grouped by ref, so one remembered mask avoids re-decoding
            self._last_original = (ref_id, self.index.mask(ref_id, self.mask_mode))
        return self._last_original[1].copy()

    def _tokens(self, text: str, ref_id: int, sent_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.blank_expressions:
            if self._blank is None:
                self._blank = self.tokenizer.blank(1)
            ids, mask = self._blank
        elif not text.strip():  # official: an empty expression is [CLS] [SEP]
            ids, mask = self.tokenizer.blank(1)
        else:
            try:
                ids, mask = self.tokenizer([text])
            except LAVTError as e:
                raise DatasetError(f"{self.index.refs_path}: ref {ref_id}, sentence {sent_id}: {e}") from None
        return ids[0].clone(), mask[0].clone()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, Any]:
        ref_id, j = self._sample(index)
        ref = self.index.refs[ref_id]
        sentences = ref["sentences"]
        if j < 0:  # train mode: one sentence uniformly at random
            if self.seed is None:  # from the global torch RNG
                j = int(torch.randint(len(sentences), (1,)).item())
            else:  # a pure function of (seed, epoch, index): exact resume, any number of workers
                j = int(np.random.default_rng([self.seed, self.epoch, index]).integers(len(sentences)))
        sentence = sentences[j]
        text = "" if self.blank_expressions else sentence.get("raw") or sentence.get("sent", "")
        item: dict[str, Any] = {
            "image": self._image_tensor(ref["image_id"]),
            "target": torch.from_numpy(self._target(ref_id).astype(np.int64)),
            "text": text,
            "type": sentence.get("type", ""),
            "ref_id": ref_id,
            "sent_id": sentence["sent_id"],
            "index": index if index >= 0 else index + len(self),
        }
        if self.tokenizer is not None:
            item["input_ids"], item["attention_mask"] = self._tokens(text, ref_id, sentence["sent_id"])
        return item


def collate_refer(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensor fields into (B, ...) tensors; every other field becomes a list."""
    if not batch:
        raise ValueError("cannot collate an empty batch")
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [b[key] for b in batch]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return out


# --------------------------------------------------------------------------------------------
# Published split sizes (data-and-metrics.md, table 1.5)
# --------------------------------------------------------------------------------------------
def _row(refs: int, sentences: int | None, images: int) -> dict[str, int | None]:
    return {"refs": refs, "sentences": sentences, "images": images}


# Per split: refs (objects), sentences (= test samples) and images. None = not published.
# refcocog/google's "val" is the split often written "val*". Totals are the column sums.
PUBLISHED_SPLIT_SIZES: dict[tuple[str, str], dict[str, dict[str, int | None]]] = {
    ("refcoco", "unc"): {
        "train": _row(42404, 120624, 16994),
        "val": _row(3811, 10834, 1500),
        "testA": _row(1975, 5657, 750),
        "testB": _row(1810, 5095, 750),
    },
    ("refcoco", "google"): {
        "train": _row(40000, None, 19213),
        "val": _row(5000, None, 4559),
        "test": _row(5000, None, 4527),
    },
    ("refcoco+", "unc"): {
        "train": _row(42278, 120191, 16992),
        "val": _row(3805, 10758, 1500),
        "testA": _row(1975, 5726, 750),
        "testB": _row(1798, 4889, 750),
    },
    ("refcocog", "umd"): {
        "train": _row(42226, 80512, 21899),
        "val": _row(2573, 4896, 1300),
        "test": _row(5023, 9602, 2600),
    },
    ("refcocog", "google"): {
        "train": _row(44822, 85474, 24698),
        "val": _row(5000, 9536, 4650),
    },
}


def expected_split_sizes(dataset: str, split_by: str) -> dict[str, dict[str, int | None]]:
    """The published per-split counts ``{split: {"refs", "sentences", "images"}}`` (a copy).

    Raises DatasetError for a (dataset, split_by) pair without published counts.
    """
    try:
        return copy.deepcopy(PUBLISHED_SPLIT_SIZES[(dataset, split_by)])
    except KeyError:
        known = ", ".join(f"{d}/{s}" for d, s in PUBLISHED_SPLIT_SIZES)
        raise DatasetError(f"no published split sizes for {dataset}/{split_by}; known: {known}") from None
