"""Ref-DAVIS17: DAVIS 2017 videos with the MPI referring expressions (data-and-metrics.md 3.3).

Layout (``root``, for example ``./data/ref-davis``, after unzipping the three published zips)::

    <root>/DAVIS/JPEGImages/480p/<seq>/00000.jpg ...            # every frame of the sequence
    <root>/DAVIS/Annotations_unsupervised/480p/<seq>/00000.png   # palette PNG, pixel value = object id
    <root>/DAVIS/ImageSets/2017/train.txt, val.txt               # 60 and 30 sequence names
    <root>/DAVIS/davis_semantics.json                            # optional: seq -> {obj_id: category}
    <root>/davis_text_annotations/Davis17_annot1.txt             # annotator 1, first-frame expressions
    <root>/davis_text_annotations/Davis17_annot1_full_video.txt  # annotator 1, full-video expressions
    <root>/davis_text_annotations/Davis17_annot2.txt             # annotator 2 (latin-1 text)
    <root>/davis_text_annotations/Davis17_annot2_full_video.txt

``root`` may also be the ``DAVIS`` folder itself when the expression files sit in it or in a
``davis_text_annotations`` folder next to it (``text_dir`` names them explicitly).

Expression files: one expression per line, ``<seq> <obj_id> "<expression>"``; the expression is
the rest of the line with its surrounding double quotes removed. Annotator 1's files are UTF-8;
annotator 2's are latin-1 (a file that happens to be valid UTF-8 is read as UTF-8, which is the
same text for the published files and the right text for re-encoded copies). Three sequence names
are misspelt in the files and are corrected (:data:`VIDEO_NAME_FIXES`). Lines naming sequences
outside the chosen split are ignored (those in no ``ImageSets/2017`` file are listed in
:attr:`DAVISIndex.unknown_videos`); each (sequence, object) may appear once per file.

**Expression sets.** Each object has four expressions, one per *expression set*:
``anno1_first_frame``, ``anno1_full_video``, ``anno2_first_frame``, ``anno2_full_video``
(annotator 1/2 x written from the first frame / from the whole video). A sample's ``type`` is its
set label, and its ``exp_id`` is ``"<obj_id>_<set label>"`` (for example
``"2_anno1_full_video"``), unique within the video; ``annotator`` (1/2) and ``kind``
(``first_frame``/``full_video``) are items keys too.

**Evaluation protocol** (ReferFormer, which the paper follows; data-and-metrics.md 3.3 / 4.2 /
4.4 item 9): every expression is run over the whole video (``mode="eval"``, all frames, the
object absent in some frames included); J and F are computed per object over all frames
(DAVIS *unsupervised* task: first and last frames kept), averaged over the objects of one
expression set, and the reported J, F and J&F are the **means of the four per-set results**.
:func:`lavt.evaluation.protocols.evaluate_video` groups its J&F by ``type``, so its ``groups`` hold
the four per-set results; :func:`davis_protocol_summary` turns them into the official numbers.
(When every object has one expression in each set, this equals the plain mean over all
expressions; it differs when a set lacks some objects.)

Differences from running davis2017-evaluation on merged palette PNGs (documented, not
reproduced): the official pipeline merges the objects of a set into one palette PNG per frame
(argmax over the objects' probabilities with a 0.1 background), so overlapping predictions of two
objects are resolved there and not here; it counts the GT objects of a sequence as the max id of
its *first* annotation frame, so an object without an expression in a set is scored as an empty
prediction there and skipped here (:meth:`DAVISIndex.missing_expressions` lists them); and it
matches predicted ids to GT objects with the Hungarian algorithm, which cannot change the score
when each prediction is scored against its own object, as here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InputError
from .files import SAFE_NAME, DatasetError, load_json
from .ytvos import ReferYouTubeVOS, collate_video, windows
from .ytvos_index import YTVOSExpression, YTVOSIndex, YTVOSVideo

__all__ = [
    "ANNOTATION_FOLDERS",
    "DAVISExpression",
    "DAVISIndex",
    "EXPRESSION_FILES",
    "EXPRESSION_SETS",
    "PUBLISHED_COUNTS",
    "ReferDAVIS17",
    "SPLITS",
    "VIDEO_NAME_FIXES",
    "collate_video",
    "davis_palette",
    "davis_paths",
    "davis_protocol_summary",
    "read_expression_file",
    "windows",
]

SPLITS = ("train", "val")
RESOLUTION = "480p"
ANNOTATION_FOLDERS = ("Annotations_unsupervised", "Annotations")  # the first is what the protocol uses
TEXT_DIR = "davis_text_annotations"
SEMANTICS_FILE = "davis_semantics.json"

# expression set label -> (file name, annotator, kind); the order is ReferFormer's interleaving
EXPRESSION_SETS = ("anno1_first_frame", "anno1_full_video", "anno2_first_frame", "anno2_full_video")
EXPRESSION_FILES: dict[str, str] = {
    "anno1_first_frame": "Davis17_annot1.txt",
    "anno1_full_video": "Davis17_annot1_full_video.txt",
    "anno2_first_frame": "Davis17_annot2.txt",
    "anno2_full_video": "Davis17_annot2_full_video.txt",
}
VIDEO_NAME_FIXES = {"clasic-car": "classic-car", "dog-scale": "dogs-scale", "motor-bike": "motorbike"}

# Published sizes (data-and-metrics.md 3.3); the loader does not enforce them.
PUBLISHED_COUNTS: dict[str, dict[str, int]] = {"train": {"videos": 60}, "val": {"videos": 30}}

_STATS = ("J", "F", "J&F", "J-Recall", "J-Decay", "F-Recall", "F-Decay")


def _set_parts(label: str) -> tuple[int, str]:
    """``"anno2_full_video"`` -> (2, "full_video")."""
    return int(label[4]), label[6:]


# --------------------------------------------------------------------------------------------
# Paths and expression files
# --------------------------------------------------------------------------------------------
def davis_paths(
    root: str | os.PathLike[str],
    annotation_folder: str = ANNOTATION_FOLDERS[0],
    text_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Path]:
    """Where the published files are expected: ``davis`` (the DAVIS folder), ``images``,
    ``annotations``, ``image_sets``, ``semantics``, ``text`` and one entry per expression set
    (its file). Nothing is checked except which folder is the DAVIS folder: ``<root>/DAVIS``, or
    ``root`` itself when it holds ``JPEGImages`` and no ``DAVIS`` folder."""
    root = Path(os.path.expanduser(os.fspath(root)))
    davis = root / "DAVIS"
    if not davis.is_dir() and (root / "JPEGImages").is_dir():
        davis = root
    if text_dir is not None:
        text = Path(os.path.expanduser(os.fspath(text_dir)))
    else:
        candidates = [root / TEXT_DIR, root, root.parent / TEXT_DIR] if davis == root else [root / TEXT_DIR, root]
        text = next((c for c in candidates if (c / EXPRESSION_FILES[EXPRESSION_SETS[0]]).is_file()), candidates[0])
    paths = {
        "davis": davis,
        "images": davis / "JPEGImages" / RESOLUTION,
        "annotations": davis / annotation_folder / RESOLUTION,
        "image_sets": davis / "ImageSets" / "2017",
        "semantics": davis / SEMANTICS_FILE,
        "text": text,
    }
    paths.update({label: text / name for label, name in EXPRESSION_FILES.items()})
    return paths


def _decode(raw: bytes, path: Path, annotator: int) -> str:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        if annotator == 2:  # the published annotator-2 files are latin-1
            return raw.decode("latin-1")
        line = raw[: e.start].count(b"\n") + 1
        raise DatasetError(
            f"{path} is not UTF-8 text (byte 0x{raw[e.start]:02x} on line {line}); annotator 1's expression "
            f"files are UTF-8 (only annotator 2's are latin-1)"
        ) from None


def read_expression_file(path: str | os.PathLike[str], annotator: int = 1) -> list[tuple[str, int, str, int]]:
    """Parse one expression file into ``(sequence, obj_id, expression, line number)`` tuples, in
    file order, with the sequence-name typos fixed (:data:`VIDEO_NAME_FIXES`). ``annotator`` (1 or
    2) selects the text encoding (UTF-8, or latin-1 for annotator 2). Blank lines are skipped;
    anything else that is not ``<seq> <obj_id> "<expression>"`` raises :class:`DatasetError`."""
    path = Path(path)
    if annotator not in (1, 2):
        raise ConfigError(f"annotator must be 1 or 2, got {annotator!r}")
    if not path.is_file():
        raise DatasetError(f"expression file {path} not found")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror or e}") from None
    text = _decode(raw, path, annotator)
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        parts = line.split(None, 2)
        if len(parts) < 3:
            raise DatasetError(f'{path}, line {n}: expected <sequence> <obj_id> "<expression>", got {line[:60]!r}')
        video, obj, expr = parts
        try:
            obj_id = int(obj)
        except ValueError:
            raise DatasetError(f"{path}, line {n}: object id {obj!r} is not an integer") from None
        if not 1 <= obj_id <= 254:
            raise DatasetError(f"{path}, line {n}: object id {obj_id} is not a DAVIS object id (1..254)")
        expr = expr.strip()
        if len(expr) >= 2 and expr[0] == expr[-1] == '"':
            expr = expr[1:-1].strip()
        if not expr:
            raise DatasetError(f"{path}, line {n}: empty expression")
        out.append((VIDEO_NAME_FIXES.get(video, video), obj_id, expr, n))
    return out


def _read_lines(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise DatasetError(f"{what} {path} not found")
    try:
        return [s.strip() for s in path.read_text(encoding="utf-8").splitlines() if s.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read {path}: {e}") from None


def davis_palette() -> list[int]:
    """The DAVIS / PASCAL VOC colour palette as a flat list of 768 ints (index i's colour spreads
    the bits of i over the three channels, most significant first): 0 black, 1 (128, 0, 0),
    2 (0, 128, 0), 3 (128, 128, 0), 4 (0, 0, 128)... For ``Image.putpalette``."""
    palette = []
    for i in range(256):
        rgb = [0, 0, 0]
        for bit in range(8):
            for ch in range(3):
                rgb[ch] |= ((i >> (3 * bit + ch)) & 1) << (7 - bit)
        palette += rgb
    return palette


# --------------------------------------------------------------------------------------------
# Index
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DAVISExpression(YTVOSExpression):
    """A Ref-DAVIS17 expression: ``type`` is its set label, ``exp_id`` ``"<obj_id>_<set>"``;
    ``annotator`` 1/2, ``kind`` "first_frame"/"full_video", ``line`` its line in ``file``."""

    annotator: int = 0
    kind: str = ""
    file: str = ""
    line: int = 0


class DAVISIndex(YTVOSIndex):
    """The sequences and expressions of one Ref-DAVIS17 split.

    Same interface as :class:`~lavt.data.ytvos_index.YTVOSIndex` (``videos``, ``video_ids``,
    ``expressions``, ``frame_path``, ``load_frame``, ``load_annotation``, ``object_ids``,
    ``category``...), so :class:`ReferDAVIS17` reuses the Ref-YouTube-VOS sampling. Frames are the
    sequence's JPEGs, sorted; the annotation of frame ``f`` is ``<annotations>/<seq>/f.png``.
    Expressions are ordered by sequence, then object id, then set (A1 first-frame, A1 full-video,
    A2 first-frame, A2 full-video). ``sets`` selects expression sets (default all four; only the
    selected files are read). ``annotation_folder``: ``Annotations_unsupervised`` (what the
    protocol uses) or ``Annotations`` (the semi-supervised release). With ``davis_semantics.json``
    present, every expression's object must be one of its sequence's objects there.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "val",
        sets: Sequence[str] | None = None,
        annotation_folder: str = ANNOTATION_FOLDERS[0],
        text_dir: str | os.PathLike[str] | None = None,
    ):
        self.root = Path(os.path.expanduser(os.fspath(root)))
        if not self.root.is_dir():
            raise DatasetError(f"Ref-DAVIS17 root {self.root} does not exist (or is not a directory)")
        if annotation_folder not in ANNOTATION_FOLDERS:
            raise ConfigError(f"annotation_folder {annotation_folder!r} is not one of {', '.join(ANNOTATION_FOLDERS)}")
        self.sets = tuple(EXPRESSION_SETS if sets is None else ([sets] if isinstance(sets, str) else sets))
        bad = [s for s in self.sets if s not in EXPRESSION_SETS]
        if bad or not self.sets or len(set(self.sets)) != len(self.sets):
            raise ConfigError(
                f"expression sets must be distinct names from {', '.join(EXPRESSION_SETS)}, got {list(self.sets)}"
            )
        self.paths = davis_paths(self.root, annotation_folder, text_dir)
        available = sorted(p.stem for p in self.paths["image_sets"].glob("*.txt"))
        if split not in SPLITS:
            raise DatasetError(
                f"unknown Ref-DAVIS17 split {split!r}; available: {', '.join(SPLITS)}"
                + (f" (split files in {self.paths['image_sets']}: {', '.join(available)})" if available else "")
            )
        self.split = split
        self.split_path = self.paths["image_sets"] / f"{split}.txt"
        self.image_dir = self.paths["images"]
        self.annotation_dir: Path | None = self.paths["annotations"]
        self.has_annotations = True
        self.meta_path = self.paths["text"]  # named in the shared error messages
        self.meta_json_path = self.paths["semantics"] if self.paths["semantics"].is_file() else None
        self.test_meta_path = None
        self.annotation_folder = annotation_folder
        for key, what in (("images", "frame folder"), ("annotations", "annotation folder")):
            if not self.paths[key].is_dir():
                other = [f for f in ANNOTATION_FOLDERS if f != annotation_folder and (self.paths["davis"] / f).is_dir()]
                hint = ""
                if key == "annotations" and other:
                    hint = f" ({other[0]} exists: pass annotation_folder={other[0]!r})"
                raise DatasetError(f"{what} {self.paths[key]} not found{hint}")
        sequences = _read_lines(self.split_path, "split file")
        for s in sequences:
            if not SAFE_NAME.match(s):
                raise DatasetError(f"{self.split_path}: {s!r} is not a plain sequence name")
        categories = self._read_semantics()

        listed = {v for f in self.paths["image_sets"].glob("*.txt") for v in _read_lines(f, "split file")}
        by_video: dict[str, list[DAVISExpression]] = {v: [] for v in sequences}
        self.unknown_videos: dict[str, set[str]] = {}  # set label -> sequences in no split file
        for label in self.sets:
            annotator, kind = _set_parts(label)
            path = self.paths[label]
            seen: dict[tuple[str, int], int] = {}
            for video, obj_id, text, line in read_expression_file(path, annotator):
                if video not in by_video:
                    if video not in listed:
                        self.unknown_videos.setdefault(label, set()).add(video)
                    continue
                if (video, obj_id) in seen:
                    raise DatasetError(
                        f"{path}, line {line}: sequence {video} object {obj_id} already has an expression "
                        f"(line {seen[(video, obj_id)]}); each object has one per file"
                    )
                seen[(video, obj_id)] = line
                cats = categories.get(video)
                if cats is not None and obj_id not in cats:
                    raise DatasetError(
                        f"{path}, line {line}: object {obj_id} is not an object of {video} in {self.meta_json_path} "
                        f"(objects: {', '.join(map(str, sorted(cats))) or 'none'})"
                    )
                by_video[video].append(
                    DAVISExpression(video, f"{obj_id}_{label}", text, obj_id, label, annotator, kind, path.name, line)
                )

        order = {s: i for i, s in enumerate(EXPRESSION_SETS)}
        self.videos: dict[str, YTVOSVideo] = {}
        for vid in sorted(by_video):
            exps = sorted(by_video[vid], key=lambda e: (e.obj_id, order[e.type]))
            objects = {o: {"category": c} for o, c in categories.get(vid, {}).items()}
            self.videos[vid] = YTVOSVideo(vid, tuple(self._frames(vid)), tuple(exps), objects)
        self.video_ids: list[str] = list(self.videos)
        self.expressions: list[DAVISExpression] = [e for v in self.videos.values() for e in v.expressions]
        self._ids_per_frame: dict[str, list[frozenset[int]]] = {}

    # ------------------------------------------------------------------------------------
    def _read_semantics(self) -> dict[str, dict[int, str]]:
        if self.meta_json_path is None:
            return {}
        path = self.meta_json_path
        data = load_json(path, "semantics file")
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise DatasetError(f"{path} must map each sequence to an object {{obj_id: category}}")
        out: dict[str, dict[int, str]] = {}
        for seq, objs in data.items():
            try:
                out[seq] = {int(k): str(c) for k, c in objs.items()}
            except ValueError:
                raise DatasetError(f"{path}: sequence {seq} has a non-integer object id") from None
        return out

    def _frames(self, video: str) -> list[str]:
        folder = self.image_dir / video
        if not folder.is_dir():
            raise DatasetError(f"frame folder {folder} of sequence {video} ({self.split_path.name}) not found")
        frames = sorted(p.stem for p in folder.glob("*.jpg"))
        if not frames:
            raise DatasetError(f"frame folder {folder} holds no .jpg frames")
        return frames

    def expression_counts(self) -> dict[str, int]:
        """Number of expressions per selected set."""
        counts = {s: 0 for s in self.sets}
        for e in self.expressions:
            counts[e.type] += 1
        return counts

    def missing_expressions(self) -> list[tuple[str, int, str]]:
        """``(sequence, obj_id, set)`` for the objects the official evaluator counts (ids 1..max id
        of the sequence's first annotation frame) that have no expression in a selected set;
        davis2017-evaluation would score them as empty predictions. Decodes one PNG per sequence."""
        out = []
        for vid, video in self.videos.items():
            first = self.load_annotation(vid, video.frames[0])
            n_obj = int(first[first != 255].max(initial=0))
            have = {(e.obj_id, e.type) for e in video.expressions}
            out += [(vid, o, s) for o in range(1, n_obj + 1) for s in self.sets if (o, s) not in have]
        return out


# --------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------
class ReferDAVIS17(ReferYouTubeVOS):
    """Ref-DAVIS17 clips with the Ref-YouTube-VOS item format (:class:`ReferYouTubeVOS`).

    Default ``mode="eval"`` on ``split="val"``: one sample per expression holding every frame of
    its sequence (the official protocol), or one per window with ``eval_clip_len``
    (:func:`windows`). ``mode="train"`` draws clips exactly as for Ref-YouTube-VOS.

    Item keys: ``video`` (T, 3, S, S) normalised (:func:`lavt.data.transforms.preprocess_image`),
    ``target`` int64 (T, S, S), ``valid`` bool (T,), ``input_ids``/``attention_mask`` with a
    ``tokenizer``, ``text``, ``video_id`` (the sequence), ``exp_id`` (``"<obj_id>_<set>"``),
    ``obj_id``, ``type`` (the set label, the J&F group), ``annotator``, ``kind``,
    ``frame_names``, ``frame_indices``, ``orig_sizes``, ``orig_size``, ``index``,
    ``sample_index`` (+ ``anchor`` in train). :meth:`original_masks` gives the GT at the
    original size. Pass :func:`lavt.evaluation.protocols.evaluate_video`'s result to
    :func:`davis_protocol_summary` for the official numbers.
    """

    def __init__(  # ReferYouTubeVOS' parameters (other defaults), then DAVISIndex's
        self, root: str | os.PathLike[str], split: str = "val", clip_len: int = 8, image_size: int = 480,
        mode: str = "eval", tokenizer: Any = None, seed: int | None = None, anchor_stride: int | None = None,
        max_local_offset: int = 3, resample_invisible: bool = True, eval_clip_len: int | None = None,
        sets: Sequence[str] | None = None, annotation_folder: str = ANNOTATION_FOLDERS[0],
        text_dir: str | os.PathLike[str] | None = None,
    ):
        self._index_options = {"sets": sets, "annotation_folder": annotation_folder, "text_dir": text_dir}
        super().__init__(root, split, clip_len, image_size, mode, tokenizer, seed, anchor_stride, max_local_offset,
                         resample_invisible, eval_clip_len)

    def _open_index(self, root: str | os.PathLike[str], split: str) -> DAVISIndex:
        return DAVISIndex(root, split, **self._index_options)

    def _no_samples_message(self) -> str:
        files = ", ".join(str(self.index.paths[s]) for s in self.index.sets)
        return f"no expressions for the {self.split} sequences of {self.index.split_path} in {files}"

    def sample_info(self, index: int) -> dict[str, Any]:
        info = super().sample_info(index)
        e = self.index.expressions[self._sample(index)[0]]
        info.update(annotator=e.annotator, kind=e.kind)
        return info

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = super().__getitem__(index)
        e = self.index.expressions[self.samples[item["sample_index"]][0]]
        item["annotator"], item["kind"] = e.annotator, e.kind
        return item


# --------------------------------------------------------------------------------------------
# The official number
# --------------------------------------------------------------------------------------------
def _number(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def davis_protocol_summary(metrics: Mapping[str, Any], sets: Iterable[str] | None = None) -> dict[str, Any]:
    """The official Ref-DAVIS17 J, F and J&F from per-set results: the mean over the expression
    sets (default all four) of each set's J, F and J&F (x100, as given).

    ``metrics``: the dict of :func:`lavt.evaluation.protocols.evaluate_video` or
    :meth:`lavt.evaluation.video_metrics.JFMeter.compute` on :class:`ReferDAVIS17` (its ``groups`` are keyed
    by set label), or a JSON file's ``{"metrics": {...}}`` written from one. Also averaged when
    every set has them: J/F recall and decay. Returns ``{"J", "F", "J&F", ..., "sets": {label:
    {"J", "F", "J&F", "n"}}, "n_sets", "protocol"}``. A missing set raises
    :class:`~lavt.errors.InputError` (evaluate all four, or name the sets you evaluated).
    """
    if not isinstance(metrics, Mapping):
        raise InputError(f"expected a metrics dict, got {type(metrics).__name__}")
    m = metrics if "groups" in metrics or "metrics" not in metrics else metrics["metrics"]
    groups = m.get("groups") if isinstance(m, Mapping) else None
    if not isinstance(groups, Mapping):
        raise InputError(
            "the metrics hold no per-group results ('groups'); evaluate a ReferDAVIS17 dataset, whose "
            "samples carry their expression set as 'type'"
        )
    wanted = list(EXPRESSION_SETS if sets is None else ([sets] if isinstance(sets, str) else sets))
    if not wanted:
        raise InputError("no expression sets to average")
    missing = [s for s in wanted if not isinstance(groups.get(s), Mapping) or math.isnan(_number(groups[s].get("J&F")))]
    if missing:
        raise InputError(
            f"no J&F for expression set(s) {', '.join(missing)}; "
            f"groups present: {', '.join(sorted(map(str, groups))) or 'none'}"
        )
    per = {s: {k: _number(groups[s].get(k)) for k in ("J", "F", "J&F")} | {"n": groups[s].get("n")} for s in wanted}
    out: dict[str, Any] = {}
    for k in _STATS:
        vals = [_number(groups[s].get(k)) for s in wanted]
        if k in ("J", "F", "J&F") or not any(math.isnan(v) for v in vals):
            out[k] = math.fsum(vals) / len(vals)
    out.update(
        sets=per,
        n_sets=len(wanted),
        protocol="Ref-DAVIS17: J, F, J&F per expression set (per object over all frames, mean over objects), "
        "then the mean over the sets",
    )
    return out
