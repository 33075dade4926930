"""``lavt data check`` for A2D-Sentences and JHMDB-Sentences: their published layouts, sizes
and a sample of decoded frames and masks (data-and-metrics.md 3.1, 3.2)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from .check_report import CheckContext

# Published sizes (data-and-metrics.md 3.1 and 3.2)
PUBLISHED_A2D: dict[str, int] = {
    "videos": 3782, "train videos": 3036, "test videos": 746,
    "train videos (without missed)": 3017, "test videos (without missed)": 737, "sentences": 6655,
}
PUBLISHED_JHMDB: dict[str, int] = {"videos": 928, "sentences": 928, "actions": 21, "evaluated frames": 2784}

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


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


def check_a2d(ctx: CheckContext) -> None:
    root, report = ctx.root, ctx.report
    release = root / "Release"
    text_dir = next((d for d in (root / "text_annotations", release) if (d / "a2d_annotation.txt").is_file()), None)
    if text_dir is None:
        ctx.missing([root / "text_annotations" / "a2d_annotation.txt"], "sentence file (also looked in Release/)")
        text_dir = root / "text_annotations"
    videoset_text = ctx.read_text(release / "videoset.csv", "video list")
    videos: dict[str, str] = {}  # video id -> subset "0" (train) / "1" (test)
    if videoset_text is not None:
        for n, row in enumerate(_csv_rows(videoset_text), start=1):
            if len(row) != 9 or row[-1].strip() not in ("0", "1"):
                report.add("content", f"Release/videoset.csv line {n}: expected 9 columns ending in subset 0/1, "
                           f"got {len(row)} columns", [release / "videoset.csv"])
                break
            videos[row[0].strip()] = row[-1].strip()
    missed_text = ctx.read_text(text_dir / "a2d_missed_videos.txt", "missed-videos list")
    missed = {s.strip() for s in (missed_text or "").splitlines() if s.strip()}
    sentence_text = ctx.read_text(text_dir / "a2d_annotation.txt", "sentence file") if text_dir.is_dir() else None
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
def check_jhmdb(ctx: CheckContext) -> None:
    root, report = ctx.root, ctx.report
    frames_dir, masks_dir = root / "Rename_Images", root / "puppet_mask"
    has_frames = ctx.need(frames_dir, "frame folder", is_dir=True)
    has_masks = ctx.need(masks_dir, "puppet mask folder", is_dir=True)
    text = ctx.read_text(root / "jhmdb_annotation.txt", "sentence file")
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

