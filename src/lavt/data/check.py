"""Check a dataset on disk against its published layout (``lavt data check NAME ROOT``).

:func:`check_dataset` verifies that the files of the published layout are present
(data-and-metrics.md sections 1.1, 2.1, 3.1-3.3), counts each split and compares the counts with
the published ones (a count that differs is a problem naming both numbers), and decodes a few
images / annotations spread over the dataset (all of them with ``full=True``). It never raises
for a problem in the data: every problem becomes one :class:`Problem` of the returned
:class:`CheckReport`. It raises (:class:`~lavt.errors.ConfigError` /
:class:`~lavt.data.refer.DatasetError`) only for unusable arguments: an unknown dataset name or a
root that is not a directory.

Names and roots:

- ``refcoco``, ``refcoco+``, ``refcocog``: the ``refer`` data root (``<root>/images/mscoco/images/
  train2014``, ``<root>/<dataset>/instances.json``, ``refs(<split_by>).p``). Partitions checked:
  refcoco/unc, refcoco+/unc, refcocog/umd and refcocog/google (what LAVT evaluates); refcoco/google
  too when its refs file is present.
- ``ytvos`` (Ref-YouTube-VOS 2021): ``<root>/{train,valid,test}/JPEGImages``,
  ``train/Annotations``, ``meta_expressions/{train,valid,test}/meta_expressions.json``.
- ``a2d`` (A2D-Sentences): ``<root>/Release/videoset.csv``, ``Release/clips320H`` or
  ``Release/pngs320H``, and ``a2d_annotation.txt``, ``a2d_missed_videos.txt``,
  ``a2d_annotation_with_instances/`` in ``text_annotations/`` (or in ``Release/``, LAVT-RS).
- ``jhmdb`` (JHMDB-Sentences): ``<root>/Rename_Images/<action>/<video>/``,
  ``puppet_mask/<action>/<video>/puppet_mask.mat``, ``jhmdb_annotation.txt``.
- ``davis`` (Ref-DAVIS17): ``<root>/DAVIS/...`` and ``<root>/davis_text_annotations/`` (see
  :mod:`lavt.data.davis`).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import ConfigError
from . import davis as davis_mod
from . import refer as refer_mod
from . import ytvos as ytvos_mod
from .refer import DatasetError

__all__ = ["DATASETS", "CheckReport", "Problem", "check_dataset", "PUBLISHED_A2D", "PUBLISHED_JHMDB"]

DATASETS = ("refcoco", "refcoco+", "refcocog", "ytvos", "a2d", "jhmdb", "davis")
_ALIASES = {
    "refcocoplus": "refcoco+", "refcoco_plus": "refcoco+", "gref": "refcocog", "g-ref": "refcocog",
    "ref-youtube-vos": "ytvos", "refytvos": "ytvos", "ref-ytvos": "ytvos", "youtube-vos": "ytvos",
    "a2d-sentences": "a2d", "a2d_sentences": "a2d", "jhmdb-sentences": "jhmdb", "jhmdb_sentences": "jhmdb",
    "ref-davis": "davis", "ref-davis17": "davis", "refdavis": "davis", "davis17": "davis",
}
# (dataset) -> [(split_by, required)]: LAVT evaluates refcoco/unc, refcoco+/unc, refcocog/umd+google
REFER_PARTITIONS: dict[str, list[tuple[str, bool]]] = {
    "refcoco": [("unc", True), ("google", False)],
    "refcoco+": [("unc", True)],
    "refcocog": [("umd", True), ("google", True)],
}
# Published sizes (data-and-metrics.md 3.1 and 3.2)
PUBLISHED_A2D: dict[str, int] = {
    "videos": 3782, "train videos": 3036, "test videos": 746,
    "train videos (without missed)": 3017, "test videos (without missed)": 737, "sentences": 6655,
}
PUBLISHED_JHMDB: dict[str, int] = {"videos": 928, "sentences": 928, "actions": 21, "evaluated frames": 2784}

_MAX_LISTED = 5  # paths named in one problem line (the JSON report keeps up to _MAX_PATHS)
_MAX_PATHS = 1000
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------
@dataclass
class Problem:
    """One thing wrong with the data: ``kind`` is ``missing``, ``unreadable``, ``size`` (a count
    differs from the published one) or ``content``; ``paths`` names the files concerned."""

    kind: str
    message: str
    paths: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        paths = self.paths[:_MAX_PATHS]
        return {"kind": self.kind, "message": self.message, "paths": paths, "n_paths": len(self.paths)}


@dataclass
class CheckReport:
    """What :func:`check_dataset` found. ``counts``/``published``: ``{part: {split: {what: n}}}``
    (part is e.g. ``refcoco/unc`` or ``ytvos``); ``decoded``: files decoded per kind; ``notes``:
    facts that are not problems (optional files absent, sampling limits)."""

    dataset: str
    root: str
    full: bool = False
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    published: dict[str, Any] = field(default_factory=dict)
    decoded: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, kind: str, message: str, paths: Iterable[Any] = ()) -> None:
        self.problems.append(Problem(kind, " ".join(message.split()), [str(p) for p in paths]))

    def decode_count(self, kind: str, n: int = 1) -> None:
        self.decoded[kind] = self.decoded.get(kind, 0) + n

    def summary(self) -> str:
        """One line: ``<dataset>: OK (...)`` or ``<dataset>: N problems (...)``."""
        parts = []
        for part, splits in self.counts.items():
            desc = "; ".join(
                (f"{split} " if split else "") + ", ".join(f"{n} {what}" for what, n in c.items() if isinstance(n, int))
                for split, c in splits.items()
            )
            parts.append(f"{part}: {desc}" if desc else part)
        if self.decoded:
            parts.append("decoded " + ", ".join(f"{n} {k}" for k, n in self.decoded.items()))
        state = "OK" if self.ok else f"{len(self.problems)} problem{'s' * (len(self.problems) != 1)}"
        return f"{self.dataset} at {self.root}: {state}" + (f" ({' | '.join(parts)})" if parts else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "root": self.root,
            "ok": self.ok,
            "full": self.full,
            "problems": [p.to_dict() for p in self.problems],
            "notes": list(self.notes),
            "counts": self.counts,
            "published": self.published,
            "decoded": dict(self.decoded),
        }


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
class _Ctx:
    def __init__(self, report: CheckReport, root: Path, full: bool, samples: int):
        self.report, self.root, self.full, self.samples = report, root, full, samples

    def rel(self, path: Path | str) -> str:
        path = Path(path)
        try:
            return path.relative_to(self.root).as_posix() or "."
        except ValueError:
            return str(path)

    def missing(self, paths: Sequence[Path], what: str, total: int | None = None) -> None:
        """One problem for a list of missing paths (named up to _MAX_LISTED)."""
        if not paths:
            return
        shown = ", ".join(self.rel(p) for p in paths[:_MAX_LISTED]) + (", ..." if len(paths) > _MAX_LISTED else "")
        of = f" of {total}" if total is not None else ""
        if len(paths) == 1 and total is None:
            self.report.add("missing", f"{what} missing: {shown}", paths)
        else:
            self.report.add("missing", f"{len(paths)}{of} {what} missing: {shown}", paths)

    def need(self, path: Path, what: str, is_dir: bool = False) -> bool:
        ok = path.is_dir() if is_dir else path.is_file()
        if not ok:
            self.missing([path], what)
        return ok

    def compare(self, part: str, split: str, got: dict[str, int], published: dict[str, int | None]) -> None:
        self.report.counts.setdefault(part, {})[split] = dict(got)
        self.report.published.setdefault(part, {})[split] = dict(published)
        for what, want in published.items():
            if want is not None and what in got and got[what] != want:
                where = f"{part} split {split}" if split else part
                self.report.add("size", f"{where}: {got[what]} {what}, published {want}")

    def pick(self, items: Sequence[Any]) -> list[Any]:
        """All items with full=True, else up to ``samples`` spread evenly (first and last included)."""
        items = list(items)
        if self.full or len(items) <= self.samples:
            return items
        if self.samples <= 0:
            return []
        idx = sorted({int(round(i)) for i in np.linspace(0, len(items) - 1, self.samples)})
        return [items[i] for i in idx]

    def image(self, path: Path, what: str = "image") -> Image.Image | None:
        """Decode an image (counted); a problem and None when it cannot be read."""
        try:
            with Image.open(path) as im:
                im.load()
                self.report.decode_count(what + "s")
                return im.copy()
        except FileNotFoundError:
            self.missing([path], what)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError) as e:
            self.report.add("unreadable", f"{what} {self.rel(path)} cannot be decoded: {e}", [path])
        return None

    def dataset_error(self, err: DatasetError, path: Path) -> None:
        msg = str(err).replace(str(self.root) + os.sep, "")
        kind = "missing" if "not found" in msg else "unreadable"
        self.report.add(kind, msg, [path])


def _missing_in_folder(folder: Path, names: Iterable[str]) -> list[Path]:
    try:
        present = set(os.listdir(folder))
    except OSError:
        return [folder / n for n in names]
    return [folder / n for n in names if n not in present]


def _read_text(ctx: _Ctx, path: Path, what: str, encoding: str = "utf-8") -> str | None:
    if not ctx.need(path, what):
        return None
    try:
        return path.read_bytes().decode(encoding)
    except (OSError, UnicodeDecodeError) as e:
        ctx.report.add("unreadable", f"{what} {ctx.rel(path)} cannot be read: {e}", [path])
        return None


def _canonical(name: str) -> str:
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return key


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------
def check_dataset(name: str, root: str | os.PathLike[str], full: bool = False, samples: int = 3) -> CheckReport:
    """Check the dataset ``name`` (one of :data:`DATASETS`, case-insensitive; aliases such as
    ``ref-youtube-vos`` or ``ref-davis17`` accepted) at ``root``; see the module docstring.

    ``samples``: how many images / annotations (per part) to decode; ``full=True`` decodes all of
    them and checks every referred object's presence. Returns a :class:`CheckReport`
    (``report.ok`` when no problem was found)."""
    key = _canonical(name)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
        raise ConfigError(f"samples must be a non-negative integer, got {samples!r}")
    path = Path(os.path.expanduser(os.fspath(root)))
    if not path.is_dir():
        raise DatasetError(f"dataset root {path} does not exist (or is not a directory)")
    report = CheckReport(key, str(path), full=full)
    ctx = _Ctx(report, path, full, samples)
    checks: dict[str, Callable[[_Ctx], None]] = {
        "ytvos": _check_ytvos, "a2d": _check_a2d, "jhmdb": _check_jhmdb, "davis": _check_davis,
    }
    if key in REFER_PARTITIONS:
        _check_refer(ctx, key)
    else:
        checks[key](ctx)
    return report


# --------------------------------------------------------------------------------------------
# RefCOCO / RefCOCO+ / RefCOCOg
# --------------------------------------------------------------------------------------------
def _check_refer(ctx: _Ctx, dataset: str) -> None:
    root, report = ctx.root, ctx.report
    img_dir = root / refer_mod.IMAGE_SUBDIR
    has_images = ctx.need(img_dir, "COCO train2014 image folder", is_dir=True)
    ds_dir = root / dataset
    if not ctx.need(ds_dir, f"{dataset} folder", is_dir=True):
        return
    instances = ds_dir / "instances.json"
    has_instances = ctx.need(instances, f"{dataset} instances file")
    try:
        import pycocotools  # noqa: F401

        can_mask = True
    except ImportError:
        can_mask = False
        report.notes.append("pycocotools is not installed: masks were not decoded (pip install pycocotools)")
    checked_images: set[Path] = set()
    for split_by, required in REFER_PARTITIONS[dataset]:
        part = f"{dataset}/{split_by}"
        refs_path = ds_dir / f"refs({split_by}).p"
        if not refs_path.is_file():
            if required:
                ctx.missing([refs_path], f"{part} refs file")
            else:
                report.notes.append(f"{part}: {ctx.rel(refs_path)} not present (LAVT does not use it)")
            continue
        if not has_instances:
            continue
        try:
            index = refer_mod.ReferIndex(root, dataset, split_by)
        except DatasetError as e:
            ctx.dataset_error(e, refs_path)
            continue
        published = refer_mod.expected_split_sizes(dataset, split_by)
        for s in index.splits():
            if s not in published:
                n = sum(1 for r in index.ref_list if r["split"] == s)
                report.add(
                    "content",
                    f"{part}: {n} refs carry the split {s!r}, which the published {part} splits "
                    f"({', '.join(published)}) do not have",
                    [refs_path],
                )
        for split, want in published.items():
            ids = index.ref_ids(split)
            got = {
                "refs": len(ids),
                "sentences": sum(len(index.refs[r]["sentences"]) for r in ids),
                "images": len({index.refs[r]["image_id"] for r in ids}),
            }
            ctx.compare(part, split, got, want)
        if not has_images:
            continue
        image_ids = list(dict.fromkeys(ref["image_id"] for ref in index.ref_list))
        paths = [index.image_path(i) for i in image_ids]
        missing = [p for p in paths if p not in checked_images and not p.is_file()]
        ctx.missing(missing, f"images referenced by {part}", total=len(paths))
        missing_set = set(missing)
        for ref in ctx.pick(index.ref_list):
            path = index.image_path(ref["image_id"])
            if path not in checked_images and path not in missing_set:
                checked_images.add(path)
                im = ctx.image(path)
                info = index.image_info(ref["image_id"])
                if im is not None and im.size != (int(info["width"]), int(info["height"])):
                    report.add(
                        "content",
                        f"image {ctx.rel(path)} is {im.width}x{im.height} but {ctx.rel(instances)} says "
                        f"{info['width']}x{info['height']}",
                        [path],
                    )
            if can_mask:
                try:
                    index.mask(ref["ref_id"])
                    report.decode_count("masks")
                except DatasetError as e:
                    ctx.dataset_error(e, instances)
        checked_images.update(p for p in paths if p not in missing_set)


# --------------------------------------------------------------------------------------------
# Ref-YouTube-VOS
# --------------------------------------------------------------------------------------------
def _check_ytvos(ctx: _Ctx) -> None:
    root, report = ctx.root, ctx.report
    metas = {s: root / "meta_expressions" / s / ytvos_mod.META_EXPRESSIONS for s in ytvos_mod.SPLITS}
    present = {s: ctx.need(p, f"{s} expressions file") for s, p in metas.items()}
    if not (root / "train" / "meta.json").is_file():
        report.notes.append("train/meta.json not present (optional: object categories only)")
    for split in ytvos_mod.SPLITS:
        if not present[split] or (split == "valid" and not present["test"]):
            continue  # valid = valid meta - test meta: needs both
        try:
            index = ytvos_mod.YTVOSIndex(root, split)
        except DatasetError as e:
            ctx.dataset_error(e, metas[split])
            continue
        got = {"videos": len(index), "expressions": len(index.expressions)}
        if split == "train":
            got["objects"] = len({(e.video_id, e.obj_id) for e in index.expressions})
        ctx.compare("ytvos", split, got, ytvos_mod.PUBLISHED_COUNTS.get(split, {}))
        folders = [(index.image_dir, ".jpg", "frame")]
        if split == "train":
            folders.append((root / "train" / "Annotations", ".png", "annotation"))
        ok_folders: dict[str, bool] = {}
        for base, ext, what in folders:
            if not ctx.need(base, f"{split} {what} folder", is_dir=True):
                ok_folders[what] = False
                continue
            ok_folders[what] = True
            no_dir = [base / v for v in index.video_ids if not (base / v).is_dir()]
            ctx.missing(no_dir, f"{split} video {what} folders", total=len(index))
            lost = [p for v in index.video_ids if (base / v).is_dir()
                    for p in _missing_in_folder(base / v, [f + ext for f in index.videos[v].frames])]
            ctx.missing(lost, f"{split} listed {what}s")
        if not ok_folders.get("frame"):
            continue
        for vid in ctx.pick(index.video_ids):
            frames = index.videos[vid].frames
            for f in (frames if ctx.full else [frames[0]]):
                if not index.frame_path(vid, f).is_file():
                    continue
                im = ctx.image(index.frame_path(vid, f), "frame")
                if split != "train" or not ok_folders.get("annotation") or im is None:
                    continue
                if not index.annotation_path(vid, f).is_file():
                    continue
                try:
                    ann = index.load_annotation(vid, f)
                    report.decode_count("annotations")
                except DatasetError as e:
                    ctx.dataset_error(e, index.annotation_path(vid, f))
                    continue
                if ann.shape != (im.height, im.width):
                    report.add("content", f"annotation {ctx.rel(index.annotation_path(vid, f))} is "
                               f"{ann.shape[1]}x{ann.shape[0]} but its frame is {im.width}x{im.height}",
                               [index.annotation_path(vid, f)])
            if split == "train" and ctx.full and ok_folders.get("annotation"):
                _objects_present(ctx, index, vid)


def _objects_present(ctx: _Ctx, index: Any, vid: str) -> None:
    """Every expression's object appears in at least one annotation of its video."""
    try:
        ids = set().union(*index.object_ids(vid))
    except DatasetError:
        return  # the unreadable annotation is reported already
    for e in index.videos[vid].expressions:
        if e.obj_id is not None and e.obj_id not in ids:
            ctx.report.add("content", f"video {vid} expression {e.exp_id}: object {e.obj_id} appears in none of "
                           f"its annotations under {ctx.rel(index.annotation_dir / vid)}",
                           [index.annotation_dir / vid])


# --------------------------------------------------------------------------------------------
# A2D-Sentences
# --------------------------------------------------------------------------------------------
def _csv_rows(text: str) -> list[list[str]]:
    return [row for row in csv.reader(io.StringIO(text)) if any(c.strip() for c in row)]


def _hdf5_ok(path: Path) -> bool:
    """An HDF5 signature at offset 0, 512, 1024, ... (MATLAB v7.3 files start after 512 bytes)."""
    try:
        with open(path, "rb") as f:
            for offset in (0, 512, 1024, 2048, 4096):
                f.seek(offset)
                if f.read(8) == _HDF5_MAGIC:
                    return True
    except OSError:
        pass
    return False


def _check_a2d(ctx: _Ctx) -> None:
    root, report = ctx.root, ctx.report
    release = root / "Release"
    text_dir = next((d for d in (root / "text_annotations", release) if (d / "a2d_annotation.txt").is_file()), None)
    if text_dir is None:
        ctx.missing([root / "text_annotations" / "a2d_annotation.txt"], "sentence file (also looked in Release/)")
        text_dir = root / "text_annotations"
    videoset_text = _read_text(ctx, release / "videoset.csv", "video list")
    videos: dict[str, str] = {}  # video id -> subset "0" (train) / "1" (test)
    if videoset_text is not None:
        for n, row in enumerate(_csv_rows(videoset_text), start=1):
            if len(row) != 9 or row[-1].strip() not in ("0", "1"):
                report.add("content", f"Release/videoset.csv line {n}: expected 9 columns ending in subset 0/1, "
                           f"got {len(row)} columns", [release / "videoset.csv"])
                break
            videos[row[0].strip()] = row[-1].strip()
    missed_text = _read_text(ctx, text_dir / "a2d_missed_videos.txt", "missed-videos list")
    missed = {s.strip() for s in (missed_text or "").splitlines() if s.strip()}
    sentence_text = _read_text(ctx, text_dir / "a2d_annotation.txt", "sentence file") if text_dir.is_dir() else None
    sentence_videos: list[str] = []
    if sentence_text is not None:
        rows = _csv_rows(sentence_text)
        body = rows[1:] if rows else []
        bad_ids = sum(1 for r in body if len(r) >= 2 and not r[1].strip().isdigit())
        if bad_ids:
            report.notes.append(f"a2d_annotation.txt: {bad_ids} row(s) with a non-integer instance id "
                                f"(e.g. the known '1 (copy)' row), dropped by loaders")
        sentence_videos = list(dict.fromkeys(r[0].strip() for r in body if r))
        ctx.compare("a2d", "", {"sentences": len(body)}, {"sentences": PUBLISHED_A2D["sentences"]})
    if videos:
        train = [v for v, s in videos.items() if s == "0"]
        test = [v for v, s in videos.items() if s == "1"]
        got = {"videos": len(videos), "train videos": len(train), "test videos": len(test)}
        if missed_text is not None:
            got["train videos (without missed)"] = sum(1 for v in train if v not in missed)
            got["test videos (without missed)"] = sum(1 for v in test if v not in missed)
        ctx.compare("a2d", "videos", got, {k: v for k, v in PUBLISHED_A2D.items() if k != "sentences"})
    used = [v for v in videos if v not in missed]
    clips, pngs = release / "clips320H", release / "pngs320H"
    if used and release.is_dir():
        if not clips.is_dir() and not pngs.is_dir():
            ctx.missing([clips], "frame source (Release/clips320H/*.mp4 or Release/pngs320H/<video>/)")
        else:
            no_frames = [clips / f"{v}.mp4" for v in used
                         if not (clips / f"{v}.mp4").is_file() and not (pngs / v).is_dir()]
            ctx.missing(no_frames, "videos' frames (mp4 in Release/clips320H or folder in Release/pngs320H)",
                        total=len(used))
            if pngs.is_dir():
                for v in ctx.pick([v for v in used if (pngs / v).is_dir()]):
                    first = sorted((pngs / v).glob("*.png"))[:1]
                    for p in first:
                        ctx.image(p, "frame")
            elif used:
                report.notes.append("frames come from mp4 clips, which the check does not decode")
    inst_dir = text_dir / "a2d_annotation_with_instances"
    if ctx.need(inst_dir, "per-frame annotation folder", is_dir=True):
        want = [v for v in sentence_videos if v not in missed]
        no_ann = [inst_dir / v for v in want if not (inst_dir / v).is_dir() or not any((inst_dir / v).glob("*.h5"))]
        ctx.missing(no_ann, "annotated videos' .h5 folders", total=len(want))
        try:
            import h5py  # type: ignore
        except ImportError:
            h5py = None
        for v in ctx.pick([v for v in want if (inst_dir / v).is_dir()]):
            for p in sorted((inst_dir / v).glob("*.h5"))[: None if ctx.full else 1]:
                if not _hdf5_ok(p):
                    report.add("unreadable", f"annotation {ctx.rel(p)} is not an HDF5 (MATLAB v7.3) file", [p])
                    continue
                if h5py is not None:
                    try:
                        with h5py.File(p, "r") as f:
                            lacking = [k for k in ("instance", "reMask") if k not in f]
                    except Exception as e:  # noqa: BLE001 - any h5py failure means an unreadable file
                        report.add("unreadable", f"annotation {ctx.rel(p)} cannot be read: {e}", [p])
                        continue
                    if lacking:
                        report.add("content", f"annotation {ctx.rel(p)} lacks {', '.join(lacking)}", [p])
                        continue
                report.decode_count("h5 annotations")
        if h5py is None:
            report.notes.append("h5py is not installed: .h5 annotations were checked for the HDF5 signature only")
    for name in ("a2d_sentences_single_frame_train_annotations.json",
                 "a2d_sentences_single_frame_test_annotations.json",
                 "a2d_sentences_test_annotations_in_coco_format.json"):
        if not (root / name).is_file():
            report.notes.append(f"{name} not present (optional, MTTR-derived)")


# --------------------------------------------------------------------------------------------
# JHMDB-Sentences
# --------------------------------------------------------------------------------------------
def _check_jhmdb(ctx: _Ctx) -> None:
    root, report = ctx.root, ctx.report
    frames_dir, masks_dir = root / "Rename_Images", root / "puppet_mask"
    has_frames = ctx.need(frames_dir, "frame folder", is_dir=True)
    has_masks = ctx.need(masks_dir, "puppet mask folder", is_dir=True)
    text = _read_text(ctx, root / "jhmdb_annotation.txt", "sentence file")
    videos: list[str] = []
    if text is not None:
        rows = _csv_rows(text)[1:]
        videos = list(dict.fromkeys(r[0].strip() for r in rows if r))
        ctx.compare("jhmdb", "", {"sentences": len(rows), "videos": len(videos)},
                    {"sentences": PUBLISHED_JHMDB["sentences"], "videos": PUBLISHED_JHMDB["videos"]})
    if not has_frames:
        return
    action_of: dict[str, str] = {}
    actions = sorted(d.name for d in frames_dir.iterdir() if d.is_dir())
    for a in actions:
        for v in (frames_dir / a).iterdir():
            if v.is_dir():
                action_of.setdefault(v.name, a)
    ctx.compare("jhmdb", "actions", {"actions": len(actions)}, {"actions": PUBLISHED_JHMDB["actions"]})
    no_frames = [frames_dir / "<action>" / v for v in videos if v not in action_of]
    ctx.missing(no_frames, "annotated videos' frame folders (Rename_Images/<action>/<video>)", total=len(videos))
    found = [v for v in videos if v in action_of]
    if has_masks:
        no_mask = [masks_dir / action_of[v] / v / "puppet_mask.mat" for v in found
                   if not (masks_dir / action_of[v] / v / "puppet_mask.mat").is_file()]
        ctx.missing(no_mask, "puppet masks", total=len(found))
    try:
        from scipy.io import loadmat
    except ImportError:
        loadmat = None
        report.notes.append("scipy is not installed: puppet masks were not decoded")
    for v in ctx.pick(found):
        pngs = sorted((frames_dir / action_of[v] / v).glob("*.png"))
        if not pngs:
            report.add("missing", f"frame folder {ctx.rel(frames_dir / action_of[v] / v)} holds no .png frames",
                       [frames_dir / action_of[v] / v])
            continue
        im = ctx.image(pngs[0], "frame")
        mat = masks_dir / action_of[v] / v / "puppet_mask.mat"
        if loadmat is None or not has_masks or not mat.is_file():
            continue
        try:
            part = loadmat(str(mat)).get("part_mask")
        except Exception as e:  # noqa: BLE001 - scipy raises many types for a bad file
            report.add("unreadable", f"puppet mask {ctx.rel(mat)} cannot be read: {e}", [mat])
            continue
        if part is None or np.ndim(part) != 3:
            report.add("content", f"puppet mask {ctx.rel(mat)} has no (H, W, T) 'part_mask' array", [mat])
            continue
        report.decode_count("puppet masks")
        h, w, t = part.shape
        if im is not None and (h, w) != (im.height, im.width):
            report.add("content", f"puppet mask {ctx.rel(mat)} is {w}x{h} but the frames are {im.width}x{im.height}",
                       [mat])
        if t > len(pngs):
            report.add("content", f"puppet mask {ctx.rel(mat)} has {t} masks for {len(pngs)} frames", [mat])
    meta = root / "jhmdb_sentences_samples_metadata.json"
    if not meta.is_file():
        report.notes.append(f"{meta.name} not present (optional: MTTR's list of evaluated frames)")
    else:
        try:
            entries = json.loads(meta.read_bytes())
            ctx.compare("jhmdb", "evaluated frames", {"evaluated frames": len(entries)},
                        {"evaluated frames": PUBLISHED_JHMDB["evaluated frames"]})
        except (OSError, ValueError, TypeError) as e:
            report.add("unreadable", f"{meta.name} cannot be read: {e}", [meta])


# --------------------------------------------------------------------------------------------
# Ref-DAVIS17
# --------------------------------------------------------------------------------------------
def _check_davis(ctx: _Ctx) -> None:
    root, report = ctx.root, ctx.report
    paths = davis_mod.davis_paths(root)
    usable = ctx.need(paths["davis"], "DAVIS folder", is_dir=True)
    if usable:
        usable &= ctx.need(paths["images"], "frame folder", is_dir=True)
        usable &= ctx.need(paths["annotations"], "annotation folder", is_dir=True)
        for split in davis_mod.SPLITS:
            usable &= ctx.need(paths["image_sets"] / f"{split}.txt", f"{split} split file")
    for label in davis_mod.EXPRESSION_SETS:
        usable &= ctx.need(paths[label], f"expression file ({label})")
    if not paths["semantics"].is_file():
        report.notes.append(f"{ctx.rel(paths['semantics'])} not present (optional: object categories)")
    if not usable:
        return
    for split in davis_mod.SPLITS:
        seqs = [s.strip() for s in (paths["image_sets"] / f"{split}.txt").read_text(errors="replace").splitlines()
                if s.strip()]
        lost = False
        for key, what in (("images", "frame"), ("annotations", "annotation")):
            gone = [paths[key] / s for s in seqs if not (paths[key] / s).is_dir()]
            ctx.missing(gone, f"{split} sequence {what} folders", total=len(seqs))
            lost |= bool(gone)
        if lost:
            continue
        try:
            index = davis_mod.DAVISIndex(root, split)
        except DatasetError as e:
            ctx.dataset_error(e, paths["text"])
            continue
        got = {"videos": len(index), "expressions": len(index.expressions)}
        ctx.compare("davis", split, got, davis_mod.PUBLISHED_COUNTS[split])
        no_png = [p for v in index.video_ids
                  for p in _missing_in_folder(index.annotation_dir / v, [f + ".png" for f in index.videos[v].frames])]
        ctx.missing(no_png, f"{split} annotations of listed frames")
        for vid, video in index.videos.items():
            have = {e.type for e in video.expressions}
            for label in index.sets:
                if label not in have:
                    report.add("content", f"{split} sequence {vid} has no expression in {paths[label].name}",
                               [paths[label]])
        for label, vids in sorted(index.unknown_videos.items()):
            note = f"{paths[label].name} names sequences in no split file: {', '.join(sorted(vids))}"
            if note not in report.notes:  # the same for both splits
                report.notes.append(note)
        for vid in ctx.pick(index.video_ids):
            frames = index.videos[vid].frames
            for f in (frames if ctx.full else [frames[0]]):
                im = ctx.image(index.frame_path(vid, f), "frame")
                if im is None or not index.annotation_path(vid, f).is_file():
                    continue
                try:
                    ann = index.load_annotation(vid, f)
                    report.decode_count("annotations")
                except DatasetError as e:
                    ctx.dataset_error(e, index.annotation_path(vid, f))
                    continue
                if ann.shape != (im.height, im.width):
                    report.add("content", f"annotation {ctx.rel(index.annotation_path(vid, f))} is "
                               f"{ann.shape[1]}x{ann.shape[0]} but its frame is {im.width}x{im.height}",
                               [index.annotation_path(vid, f)])
            if ctx.full:
                _objects_present(ctx, index, vid)
