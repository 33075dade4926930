"""The video set on disk: :func:`generate_synthetic_videos` writes it in the real Ref-YouTube-VOS layout.

The video counterpart of :mod:`.images`: clips of moving coloured shapes on a static textured
background (:mod:`.clips`), with English expressions that each pick out exactly one object track,
some of which can only be resolved by watching the motion (:mod:`.video_grammar`). The
files follow ``/work/shared/reference/data-and-metrics.md`` section 2, so the Ref-YouTube-VOS
loader (:mod:`lavt.data.ytvos`) reads them unchanged::

    <root>/train/JPEGImages/<video_id>/<frame>.jpg     JPEG q95 4:4:4, every listed frame
    <root>/train/Annotations/<video_id>/<frame>.png    palette ("P") PNG, pixel value = object id
    <root>/train/meta.json                             {"videos": {vid: {"objects": {"1": {"category", "frames"}}}}}
    <root>/valid/JPEGImages/<video_id>/<frame>.jpg
    <root>/valid/Annotations/<video_id>/<frame>.png    (ours: the real valid split has no masks)
    <root>/valid/meta.json                             (ours, same format as train)
    <root>/meta_expressions/{train,valid}/meta_expressions.json
    <root>/meta_expressions/test/meta_expressions.json   {"videos": {}} (valid = valid - test)
    <root>/synthetic_videos_meta.json                  parameters, version, summary (cache key)
    <root>/.lavt_synthetic_videos                      ownership marker (see "Safety" below)

``meta_expressions.json`` is ``{"videos": {vid: {"expressions": {"0": {"exp", "obj_id", "type"},
...}, "frames": ["00000", "00005", ...]}}}``: expression ids are the strings "0", "1", ...,
``obj_id`` is a string equal to the PNG pixel value, ``frames`` is sorted and names exactly the
files in both folders. ``type`` is an extra key (one of :data:`VIDEO_EXPRESSION_TYPES`), as the
image generator adds ``type`` to its sentences; loaders that read only ``exp``/``obj_id`` ignore
it. **Valid**: because we evaluate locally, the ``valid`` split is written like ``train``
(masks, ``meta.json``, ``obj_id``); the real valid split has none of these, so a loader that
treats valid as unannotated still reads it (and ignores them), and an evaluator reads
``valid/Annotations`` directly. The empty test meta makes the reference "valid = valid meta -
test meta" rule give every valid video.

Masks are exact
    Each track's polygon is rasterised per frame with pycocotools (clipped to the image); the
    PNG holds track ``k`` (0-based) as pixel value ``k + 1``, so it decodes to exactly the drawn
    visible masks. An object is *present* in a frame iff its visible mask is not empty (its
    ``meta.json`` ``frames``); entering and leaving objects are absent (all-zero mask) in some
    listed frames.

Determinism, caching, safety
    Each clip has its own random stream keyed by ``(seed, split, index)``; its ``video_id`` is a
    10-hex-digit hash of the same key, so valid clips do not change when the number of training
    clips does. The same parameters give byte-identical files for any number of ``workers``.
    Files are written under temporary names and moved into place; the meta file is removed first
    and written last, so an interrupted run never looks complete, and a later call with the same
    parameters returns the stored summary at once (``force=True`` regenerates). The generator
    refuses to write into a root that holds a ``meta_expressions`` folder it did not write (a
    real Ref-YouTube-VOS copy), and only ever deletes video folders of its own in a root it owns.
    The default 300 + 40 clips of 12 frames at 128x96 take ~8 s of CPU (one process) and ~40 MB
    (8,160 small files, ~58 MB on disk with 4 KB blocks).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from .clips import (
    DEFAULT_FRAMES,
    DEFAULT_SIZE,
    MAX_FRAMES,
    MIN_FRAMES,
    OBJECTS_PER_CLIP,
    Clip,
    render_clip,
)
from .video_grammar import (
    VIDEO_EXPRESSION_TYPES,
    candidate_video_expressions,
    parse_video_expression,
    resolve_video,
    sample_video_expressions,
)
from .writing import _atomic_write_bytes, _auto_workers, _results_in_order, _save_jpeg

__all__ = [
    "DEFAULT_NUM_VIDEOS",
    "VIDEO_GENERATOR_VERSION",
    "VIDEO_SPLITS",
    "generate_synthetic_videos",
    "load_clip",
    "verify_video_referents",
    "video_id_for",
]

VIDEO_GENERATOR_VERSION = "1.0"

VIDEO_SPLITS = ("train", "valid")
DEFAULT_NUM_VIDEOS = {"train": 300, "valid": 40}
MIN_SIDE, MAX_SIDE = 48, 2048
MAX_VIDEOS = 1_000_000

META_NAME = "synthetic_videos_meta.json"
OWNER_MARKER = ".lavt_synthetic_videos"
META_EXPRESSIONS = "meta_expressions.json"
_STREAM = 0x56494430  # separates the clips' random streams from the image set's
_VIDEO_ID = re.compile(r"[0-9a-f]{10}")


# ============================================================================================
# The dataset writer
# ============================================================================================
def video_id_for(seed: int, split: str, index: int) -> str:
    """The 10-hex-digit video id of clip ``index`` of ``split`` (like ``003234408d``)."""
    return hashlib.sha1(f"lavt-synthetic-video/{int(seed)}/{split}/{int(index)}".encode()).hexdigest()[:10]


def _clip_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), _STREAM, VIDEO_SPLITS.index(split), int(index)]))


def _clip_for(seed: int, split: str, index: int, size: Sequence[int], frames: int) -> tuple[Clip, np.random.Generator]:
    """The clip of (seed, split, index) and its stream, positioned for expression sampling."""
    rng = _clip_rng(seed, split, index)
    for _ in range(100):
        clip = render_clip(rng, (int(size[0]), int(size[1])), frames, OBJECTS_PER_CLIP)
        if any(any(candidate_video_expressions(clip, k).values()) for k in range(len(clip.tracks))):
            return clip, rng
    raise RuntimeError(f"no clip with a referable object for ({seed}, {split}, {index})")  # pragma: no cover


# VOC/DAVIS-style palette: index i -> the colour from the bits of i (0 black, 1 dark red, ...)
def _make_palette() -> list[int]:
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


PALETTE = _make_palette()


def _save_png(path: Path, ids: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    im = Image.frombytes("P", (ids.shape[1], ids.shape[0]), np.ascontiguousarray(ids, dtype=np.uint8).tobytes())
    im.putpalette(PALETTE)
    im.save(tmp, format="PNG")
    os.replace(tmp, path)


def _clear_extras(folder: Path, keep: set[str]) -> None:
    for p in folder.iterdir():
        if p.name not in keep and p.is_file():
            p.unlink(missing_ok=True)


def _generate_video(job: tuple) -> dict[str, Any]:
    """Render one clip, write its frames and annotations, and return its meta entries.
    Top-level so that a process pool can run it."""
    seed, split, index, width, height, frames, video_id, root = job
    clip, rng = _clip_for(seed, split, index, (width, height), frames)
    expressions: dict[str, dict[str, str]] = {}
    for k in range(len(clip.tracks)):
        for expr, text in sample_video_expressions(clip, k, rng):
            expressions[str(len(expressions))] = {"exp": text, "obj_id": str(k + 1), "type": expr.type}
    img_dir = Path(root) / split / "JPEGImages" / video_id
    ann_dir = Path(root) / split / "Annotations" / video_id
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    ids = clip.id_maps
    for t, name in enumerate(clip.frame_names):
        _save_jpeg(img_dir / f"{name}.jpg", clip.images[t])
        _save_png(ann_dir / f"{name}.png", ids[t])
    _clear_extras(img_dir, {f"{n}.jpg" for n in clip.frame_names})
    _clear_extras(ann_dir, {f"{n}.png" for n in clip.frame_names})
    objects = {
        str(k + 1): {"category": tr.shape, "frames": [n for n, p in zip(clip.frame_names, tr.present) if p]}
        for k, tr in enumerate(clip.tracks)
    }
    attrs = [tr.attributes[:2] for tr in clip.tracks]
    return {
        "video_id": video_id,
        "split": split,
        "meta": {"expressions": expressions, "frames": list(clip.frame_names)},
        "objects": objects,
        "absent_objects": sum(1 for tr in clip.tracks if not tr.present.all()),
        "lookalike": len(set(attrs)) < len(attrs),
    }


def _params(seed: int, num_videos: Mapping[str, int], frames: int, size: Sequence[int]) -> dict[str, Any]:
    return {
        "seed": int(seed),
        "num_videos": {s: int(num_videos.get(s, 0)) for s in VIDEO_SPLITS},
        "frames": int(frames),
        "size": [int(size[0]), int(size[1])],
        "generator_version": VIDEO_GENERATOR_VERSION,
    }


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _validate(seed: Any, num_videos: Any, frames: Any, size: Any, workers: Any) -> None:
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(num_videos, Mapping):
        raise ValueError(f"num_videos must be a mapping such as {{'train': 100, 'valid': 20}}, got {num_videos!r}")
    unknown = [s for s in num_videos if s not in VIDEO_SPLITS]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown} in num_videos; splits: {', '.join(VIDEO_SPLITS)}")
    if not all(_is_int(v) and v >= 0 for v in num_videos.values()) or sum(num_videos.values()) < 1:
        raise ValueError(
            f"num_videos must hold non-negative integers and ask for at least one video, got {dict(num_videos)}"
        )
    if sum(num_videos.values()) > MAX_VIDEOS:
        raise ValueError(f"at most {MAX_VIDEOS} synthetic videos, got {sum(num_videos.values())}")
    if not _is_int(frames) or not MIN_FRAMES <= frames <= MAX_FRAMES:
        raise ValueError(f"frames must be an integer in [{MIN_FRAMES}, {MAX_FRAMES}], got {frames!r}")
    if (
        not isinstance(size, Sequence) or isinstance(size, str) or len(size) != 2
        or not all(_is_int(v) and MIN_SIDE <= v <= MAX_SIDE for v in size)
    ):
        raise ValueError(f"size must be (width, height) with integers in [{MIN_SIDE}, {MAX_SIDE}], got {size!r}")
    if workers is not None and (not _is_int(workers) or workers < 1):
        raise ValueError(f"workers must be None or an integer >= 1, got {workers!r}")


def _expected_files_exist(root: Path, meta: dict) -> bool:
    params = meta["params"]
    for split in VIDEO_SPLITS + ("test",):
        if not (root / "meta_expressions" / split / META_EXPRESSIONS).is_file():
            return False
    for split in VIDEO_SPLITS:
        if not (root / split / "meta.json").is_file():
            return False
        for vid, names in meta.get("frames", {}).get(split, {}).items():
            for name in names:
                if not (root / split / "JPEGImages" / vid / f"{name}.jpg").is_file():
                    return False
                if not (root / split / "Annotations" / vid / f"{name}.png").is_file():
                    return False
        if len(meta.get("frames", {}).get(split, {})) != params["num_videos"][split]:
            return False
    return True


def _read_meta(root: Path) -> dict | None:
    try:
        return json.loads((root / META_NAME).read_text())
    except (OSError, ValueError):
        return None


def generate_synthetic_videos(
    root: str | os.PathLike[str],
    seed: int = 0,
    num_videos: Mapping[str, int] | None = None,
    frames: int = DEFAULT_FRAMES,
    size: tuple[int, int] = DEFAULT_SIZE,
    force: bool = False,
    progress: bool = True,
    workers: int | None = None,
) -> dict[str, Any]:
    """Write synthetic referring videos under ``root`` in the Ref-YouTube-VOS layout; return a summary.

    ``num_videos``: clips per split (default train 300, valid 40; a missing split means 0).
    ``frames``: frames per clip (6-200). ``size``: (width, height). Same parameters -> same
    bytes. If ``<root>/synthetic_videos_meta.json`` records the same parameters (and the files
    exist) nothing is written and the stored summary is returned with ``cached=True``;
    ``force=True`` regenerates. ``workers``: processes that render clips (default up to 2 for
    big runs; the output does not depend on it). ``progress`` shows a tqdm bar.
    The summary holds per split the counts of videos, objects, objects absent from some
    frames, clips with look-alikes, expressions and expressions per type.
    """
    num_videos = DEFAULT_NUM_VIDEOS if num_videos is None else num_videos
    _validate(seed, num_videos, frames, size, workers)
    num_videos = dict(num_videos)
    root = Path(os.path.expanduser(os.fspath(root)))
    params = _params(seed, num_videos, frames, size)
    old_meta = _read_meta(root)
    if not force and old_meta and old_meta.get("params") == params and _expected_files_exist(root, old_meta):
        return {**old_meta["summary"], "root": str(root), "cached": True, "seconds": 0.0}
    marker = root / OWNER_MARKER
    if (root / "meta_expressions").exists() and not marker.is_file():
        raise ValueError(
            f"{root} holds a Ref-YouTube-VOS dataset that this generator did not write; refusing to overwrite it"
        )

    from ...runtime.progress import progress_bar

    start = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    # the old module name stays in the text: the marker is part of the bytes a given run writes
    marker.write_text("written by lavt.data.synthetic_video; its video folders may be replaced\n")
    (root / META_NAME).unlink(missing_ok=True)  # from here on the dataset is not complete
    width, height = int(size[0]), int(size[1])
    jobs = []
    ids_seen: set[str] = set()
    for split in VIDEO_SPLITS:
        for index in range(params["num_videos"][split]):
            vid = video_id_for(seed, split, index)
            if vid in ids_seen:  # pragma: no cover - a 40-bit hash collision
                raise RuntimeError(f"video id collision on {vid}")
            ids_seen.add(vid)
            jobs.append((int(seed), split, index, width, height, int(frames), vid, str(root)))

    results_by_split: dict[str, list[dict]] = {s: [] for s in VIDEO_SPLITS}
    bar = progress_bar(None, progress, total=len(jobs), desc="synthetic videos", unit="clip")
    workers = _auto_workers(len(jobs) * int(frames)) if workers is None else int(workers)
    with _results_in_order(_generate_video, jobs, workers, 4, bar) as results:
        for res in results:
            results_by_split[res["split"]].append(res)

    for split in VIDEO_SPLITS:
        res = results_by_split[split]
        meta_exp = {"videos": {r["video_id"]: r["meta"] for r in res}}
        (root / "meta_expressions" / split).mkdir(parents=True, exist_ok=True)
        _atomic_write_bytes(root / "meta_expressions" / split / META_EXPRESSIONS, json.dumps(meta_exp).encode())
        (root / split).mkdir(parents=True, exist_ok=True)
        objects = {"videos": {r["video_id"]: {"objects": r["objects"]} for r in res}}
        _atomic_write_bytes(root / split / "meta.json", json.dumps(objects).encode())
        keep = {r["video_id"] for r in res}
        for sub in ("JPEGImages", "Annotations"):  # clips of an earlier, larger generation
            folder = root / split / sub
            if folder.is_dir():
                for p in folder.iterdir():
                    if p.is_dir() and _VIDEO_ID.fullmatch(p.name) and p.name not in keep:
                        shutil.rmtree(p)
    (root / "meta_expressions" / "test").mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(root / "meta_expressions" / "test" / META_EXPRESSIONS, json.dumps({"videos": {}}).encode())

    summary = _summary(params, results_by_split)
    meta = {
        "params": params,
        "summary": summary,
        "frames": {s: {r["video_id"]: r["meta"]["frames"] for r in results_by_split[s]} for s in VIDEO_SPLITS},
    }
    _atomic_write_bytes(root / META_NAME, json.dumps(meta, indent=1).encode())
    return {**summary, "root": str(root), "cached": False, "seconds": round(time.perf_counter() - start, 2)}


def _summary(params: dict, results_by_split: Mapping[str, list[dict]]) -> dict[str, Any]:
    splits: dict[str, dict] = {}
    total_types = {t: 0 for t in VIDEO_EXPRESSION_TYPES}
    for split in VIDEO_SPLITS:
        res = results_by_split[split]
        types = {t: 0 for t in VIDEO_EXPRESSION_TYPES}
        for r in res:
            for e in r["meta"]["expressions"].values():
                types[e["type"]] += 1
        n = sum(types.values())
        for t in types:
            total_types[t] += types[t]
        splits[split] = {
            "videos": len(res),
            "objects": sum(len(r["objects"]) for r in res),
            "objects_absent_in_some_frames": sum(r["absent_objects"] for r in res),
            "lookalike_videos": sum(1 for r in res if r["lookalike"]),
            "expressions": n,
            "types": types,
            "type_fractions": {t: round(c / n, 4) if n else 0.0 for t, c in types.items()},
        }
    return {
        "generator_version": VIDEO_GENERATOR_VERSION,
        "seed": params["seed"],
        "frames": params["frames"],
        "size": params["size"],
        "splits": splits,
        "videos": sum(v["videos"] for v in splits.values()),
        "expressions": sum(v["expressions"] for v in splits.values()),
        "types": total_types,
    }


# ============================================================================================
# Re-checking a written dataset
# ============================================================================================
def _meta_or_raise(root: Path) -> dict:
    meta = _read_meta(root)
    if meta is None:
        raise FileNotFoundError(
            f"{root / META_NAME} not found: not a (complete) synthetic video dataset; run generate_synthetic_videos"
        )
    return meta


def load_clip(root: str | os.PathLike[str], video_id: str) -> Clip:
    """Re-render the in-memory :class:`Clip` (tracks, exact frames, masks) of a written video."""
    root = Path(os.path.expanduser(os.fspath(root)))
    params = _meta_or_raise(root)["params"]
    for split in VIDEO_SPLITS:
        for index in range(params["num_videos"][split]):
            if video_id_for(params["seed"], split, index) == video_id:
                return _clip_for(params["seed"], split, index, params["size"], params["frames"])[0]
    raise KeyError(f"video {video_id!r} is not a video of the synthetic dataset at {root}")


def _read_png(path: Path) -> tuple[str, np.ndarray]:
    with Image.open(path) as im:
        im.load()
        return im.mode, np.array(im)


def verify_video_referents(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Re-render every clip from the stored parameters and re-check the written dataset.

    Per video: the frame list is sorted and names exactly the JPEG and PNG files; every PNG is
    a palette image whose index array equals the re-rendered visible masks (pixel = obj_id);
    ``meta.json`` lists each object with its category and exactly the frames it appears in.
    Per expression: ids "0".."n-1"; the text parses (exactly one parse) to its stored type; it
    resolves to its ``obj_id``'s track alone; an appearance phrase matches one track, and the
    noun phrase of a position or motion expression matches several. Returns counts and
    ``errors`` (empty = good).
    """
    root = Path(os.path.expanduser(os.fspath(root)))
    params = _meta_or_raise(root)["params"]
    seed, frames, size = params["seed"], params["frames"], params["size"]
    errors: list[str] = []
    n_videos = n_expr = 0
    types = {t: 0 for t in VIDEO_EXPRESSION_TYPES}
    for split in VIDEO_SPLITS:
        meta_exp = json.loads((root / "meta_expressions" / split / META_EXPRESSIONS).read_text())["videos"]
        objects = json.loads((root / split / "meta.json").read_text())["videos"]
        expected = [video_id_for(seed, split, i) for i in range(params["num_videos"][split])]
        if sorted(meta_exp) != sorted(expected):
            errors.append(f"{split}: meta_expressions lists {len(meta_exp)} videos, expected {len(expected)}")
        if sorted(objects) != sorted(expected):
            errors.append(f"{split}: meta.json lists {len(objects)} videos, expected {len(expected)}")
        for index, vid in enumerate(expected):
            n_videos += 1
            where = f"{split}/{vid}"
            entry = meta_exp.get(vid)
            if entry is None:
                continue
            clip = _clip_for(seed, split, index, size, frames)[0]
            names = entry["frames"]
            if names != sorted(names) or names != clip.frame_names:
                errors.append(f"{where}: frames {names} are not the clip's sorted frames")
            for sub, ext in (("JPEGImages", ".jpg"), ("Annotations", ".png")):
                on_disk = sorted(p.name for p in (root / split / sub / vid).glob("*") if not p.name.startswith("."))
                if on_disk != [n + ext for n in names]:
                    errors.append(f"{where}: {sub} holds {on_disk}, expected the listed frames")
            ids = clip.id_maps
            present = {str(k + 1): [] for k in range(len(clip.tracks))}
            for t, name in enumerate(clip.frame_names):
                try:
                    mode, arr = _read_png(root / split / "Annotations" / vid / f"{name}.png")
                except OSError as e:
                    errors.append(f"{where}/{name}.png: {e}")
                    continue
                if mode != "P":
                    errors.append(f"{where}/{name}.png: mode {mode}, expected a palette (P) PNG")
                if not np.array_equal(arr, ids[t]):
                    errors.append(f"{where}/{name}.png: object ids differ from the drawn masks")
                for v in np.unique(arr):
                    if str(int(v)) in present:
                        present[str(int(v))].append(name)
                try:
                    with Image.open(root / split / "JPEGImages" / vid / f"{name}.jpg") as im:
                        if im.size != (clip.width, clip.height) or im.mode != "RGB":
                            want = f"RGB {clip.width}x{clip.height}"
                            errors.append(f"{where}/{name}.jpg: {im.mode} {im.size}, expected {want}")
                except OSError as e:
                    errors.append(f"{where}/{name}.jpg: {e}")
            objs = objects.get(vid, {}).get("objects", {})
            if set(objs) != set(present):
                errors.append(f"{where}: meta.json objects {sorted(objs)}, expected {sorted(present)}")
            for oid, o in objs.items():
                k = int(oid) - 1
                if oid in present and (o.get("category") != clip.tracks[k].shape or o.get("frames") != present[oid]):
                    errors.append(f"{where}: meta.json object {oid} has the wrong category or frames")
            exps = entry["expressions"]
            if sorted(exps, key=int) != [str(i) for i in range(len(exps))]:
                errors.append(f"{where}: expression ids {sorted(exps)} are not '0'..'{len(exps) - 1}'")
            for exp_id, e in exps.items():
                n_expr += 1
                tag = f"{where} expression {exp_id} {e.get('exp')!r}"
                try:
                    expr = parse_video_expression(e["exp"])
                except (ValueError, KeyError, AttributeError) as err:
                    errors.append(f"{tag}: {err}")
                    continue
                if expr.type != e.get("type"):
                    errors.append(f"{tag}: type {e.get('type')!r}, parses as {expr.type!r}")
                types[expr.type] = types.get(expr.type, 0) + 1
                target = int(e["obj_id"]) - 1 if str(e.get("obj_id", "")).isdigit() else -1
                got = resolve_video(expr, clip)
                if got != [target]:
                    errors.append(f"{tag}: refers to tracks {got}, not obj_id {e.get('obj_id')!r}")
                np_only = len(clip.match(expr.target))
                if (expr.type == "appearance") != (np_only == 1):
                    errors.append(f"{tag}: its noun phrase alone matches {np_only} tracks (type {expr.type})")
    return {"videos": n_videos, "expressions": n_expr, "types": types, "errors": errors}
