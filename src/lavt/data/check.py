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

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from . import davis as davis_mod
from . import refer as refer_mod
from . import ytvos_index as ytvos_mod
from .check_a2d_jhmdb import PUBLISHED_A2D, PUBLISHED_JHMDB, check_a2d, check_jhmdb
from .check_report import CheckContext, CheckReport, Problem
from .files import DatasetError

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


def _missing_in_folder(folder: Path, names: Iterable[str]) -> list[Path]:
    try:
        present = set(os.listdir(folder))
    except OSError:
        return [folder / n for n in names]
    return [folder / n for n in names if n not in present]


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
    ctx = CheckContext(report, path, full, samples)
    checks: dict[str, Callable[[CheckContext], None]] = {
        "ytvos": _check_ytvos, "a2d": check_a2d, "jhmdb": check_jhmdb, "davis": _check_davis,
    }
    if key in REFER_PARTITIONS:
        _check_refer(ctx, key)
    else:
        checks[key](ctx)
    return report


# --------------------------------------------------------------------------------------------
# RefCOCO / RefCOCO+ / RefCOCOg
# --------------------------------------------------------------------------------------------
def _check_refer(ctx: CheckContext, dataset: str) -> None:
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
def _check_ytvos(ctx: CheckContext) -> None:
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
                if split == "train" and ok_folders.get("annotation") and im is not None:
                    _check_annotation(ctx, index, vid, f, im)
            if split == "train" and ctx.full and ok_folders.get("annotation"):
                _objects_present(ctx, index, vid)



def _check_annotation(ctx: CheckContext, index: Any, vid: str, frame: str, im: Any) -> None:
    """Decode a frame's annotation, when present (counted), and compare its size with the frame's."""
    path = index.annotation_path(vid, frame)
    if not path.is_file():
        return
    try:
        ann = index.load_annotation(vid, frame)
        ctx.report.decode_count("annotations")
    except DatasetError as e:
        ctx.dataset_error(e, path)
        return
    if ann.shape != (im.height, im.width):
        ctx.report.add("content", f"annotation {ctx.rel(path)} is {ann.shape[1]}x{ann.shape[0]} but its frame is "
                       f"{im.width}x{im.height}", [path])


def _objects_present(ctx: CheckContext, index: Any, vid: str) -> None:
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
# Ref-DAVIS17
# --------------------------------------------------------------------------------------------
def _check_davis(ctx: CheckContext) -> None:
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
                if im is not None:
                    _check_annotation(ctx, index, vid, f, im)
            if ctx.full:
                _objects_present(ctx, index, vid)
