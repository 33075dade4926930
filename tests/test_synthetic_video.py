"""Synthetic referring videos in the Ref-YouTube-VOS layout: format, exact masks, unique
referents, motion-only expressions, absent objects, determinism, cache, argument errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pycocotools.mask")

from lavt.data import synthetic as V  # noqa: E402
from lavt.data.synthetic import (  # noqa: E402  # noqa: E402
    COLOUR_TOLERANCE,
    COLOURS,
    MOTIONS,
    SHAPES,
    VIDEO_EXPRESSION_TYPES,
    VIDEO_TEMPLATES,
    Desc,
    VideoExpression,
    build_clip,
    generate_synthetic_videos,
    load_clip,
    motion_truth,
    parse_video_expression,
    realise_video,
    resolve_video,
    verify_video_referents,
)
from lavt.data.synthetic.video_grammar import DIRECTIONS  # noqa: E402
from lavt.data.synthetic.videos import _save_png  # noqa: E402

SMALL = {"train": 8, "valid": 3}
FRAMES = 8
SIZE = (128, 96)
SPLITS = ("train", "valid")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def png_ids(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "P", f"{path} is mode {im.mode}"
        return np.array(im)


def all_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ytvos_synth")
    summary = generate_synthetic_videos(root, seed=5, num_videos=SMALL, frames=FRAMES, size=SIZE, progress=False)
    meta = {s: read_json(root / "meta_expressions" / s / "meta_expressions.json")["videos"] for s in SPLITS}
    objects = {s: read_json(root / s / "meta.json")["videos"] for s in SPLITS}
    return {"root": root, "summary": summary, "meta": meta, "objects": objects}


def expressions(data):
    for split in SPLITS:
        for vid, entry in sorted(data["meta"][split].items()):
            for exp_id, e in entry["expressions"].items():
                yield split, vid, exp_id, e


# ------------------------------------------------------------------------------------------
# layout and format
# ------------------------------------------------------------------------------------------
def test_layout_and_format(data):
    root, meta, objects = data["root"], data["meta"], data["objects"]
    assert read_json(root / "meta_expressions" / "test" / "meta_expressions.json") == {"videos": {}}
    assert not [p for p in root.rglob(".*tmp*")], "temporary files left behind"
    for split in SPLITS:
        assert len(meta[split]) == SMALL[split] and set(objects[split]) == set(meta[split])
        for vid, entry in meta[split].items():
            assert re.fullmatch(r"[0-9a-f]{10}", vid)
            assert set(entry) == {"expressions", "frames"}
            frames = entry["frames"]
            assert len(frames) == FRAMES and frames == sorted(frames)
            assert all(re.fullmatch(r"\d{5}", f) and int(f) % 5 == 0 for f in frames)
            assert [int(f) for f in frames] == list(range(int(frames[0]), int(frames[0]) + 5 * FRAMES, 5))
            for sub, ext in (("JPEGImages", ".jpg"), ("Annotations", ".png")):
                names = sorted(p.name for p in (root / split / sub / vid).iterdir())
                assert names == [f + ext for f in frames], (split, vid, sub)
            exps = entry["expressions"]
            assert exps and list(exps) == [str(i) for i in range(len(exps))]
            objs = objects[split][vid]["objects"]
            assert list(objs) == [str(i) for i in range(1, len(objs) + 1)]
            for e in exps.values():
                assert set(e) == {"exp", "obj_id", "type"}
                assert isinstance(e["obj_id"], str) and e["obj_id"] in objs
                assert e["type"] in VIDEO_EXPRESSION_TYPES and e["exp"] == e["exp"].lower().strip()
            for o in objs.values():
                assert set(o) == {"category", "frames"} and o["category"] in SHAPES
                assert o["frames"] and o["frames"] == sorted(o["frames"]) and set(o["frames"]) <= set(frames)
            with Image.open(root / split / "JPEGImages" / vid / f"{frames[0]}.jpg") as im:
                assert (im.format, im.mode, im.size) == ("JPEG", "RGB", SIZE)
            ids = png_ids(root / split / "Annotations" / vid / f"{frames[0]}.png")
            assert ids.shape == (SIZE[1], SIZE[0]) and ids.dtype == np.uint8
            assert set(np.unique(ids)) <= {0, *range(1, len(objs) + 1)}
    s = data["summary"]
    assert s["cached"] is False and s["videos"] == sum(SMALL.values())
    for split in SPLITS:
        n = sum(len(v["expressions"]) for v in meta[split].values())
        assert s["splits"][split]["expressions"] == n
        for t in VIDEO_EXPRESSION_TYPES:
            assert s["splits"][split]["types"][t] == sum(
                e["type"] == t for v in meta[split].values() for e in v["expressions"].values()
            )


def test_project_loader_reads_it(data):
    ytvos = pytest.importorskip("lavt.data.ytvos")
    if not hasattr(ytvos, "YTVOSIndex"):
        pytest.skip("lavt.data.ytvos has no YTVOSIndex")
    train = ytvos.YTVOSIndex(data["root"], "train")
    valid = ytvos.YTVOSIndex(data["root"], "valid")  # valid = valid meta - (empty) test meta
    assert len(train) == SMALL["train"] and len(valid) == SMALL["valid"]
    n = sum(len(v["expressions"]) for v in data["meta"]["train"].values())
    assert len(train.expressions) == n
    vid = train.video_ids[0]
    frame = train.video(vid).frames[-1]
    png = data["root"] / "train" / "Annotations" / vid / f"{frame}.png"
    assert np.array_equal(train.load_annotation(vid, frame), png_ids(png))


# ------------------------------------------------------------------------------------------
# masks
# ------------------------------------------------------------------------------------------
def test_pngs_are_the_drawn_masks(data):
    root = data["root"]
    for split in SPLITS:
        for vid, entry in data["meta"][split].items():
            clip = load_clip(root, vid)
            assert clip.frame_names == entry["frames"]
            objs = data["objects"][split][vid]["objects"]
            assert len(objs) == len(clip.tracks)
            for t, name in enumerate(entry["frames"]):
                ids = png_ids(root / split / "Annotations" / vid / f"{name}.png")
                with Image.open(root / split / "JPEGImages" / vid / f"{name}.jpg") as im:
                    jpg = np.asarray(im.convert("RGB"), dtype=np.int16)
                drawn = clip.images[t].astype(np.int16)
                errs = [np.abs(jpg - other.astype(np.int16)).mean() for other in clip.images]
                assert errs[t] < 6.0 and int(np.argmin(errs)) == t  # the JPEG is this drawn frame
                for k, tr in enumerate(clip.tracks):
                    mask = ids == k + 1
                    assert np.array_equal(mask, tr.masks[t])
                    if mask.any():  # exactly the pixels painted in the object's colour
                        diff = np.abs(drawn[mask] - np.asarray(COLOURS[tr.colour]))
                        assert diff.max() <= COLOUR_TOLERANCE
                    if mask.sum() >= 30:
                        assert np.abs(jpg[mask].mean(0) - COLOURS[tr.colour]).max() < 20
                    assert (name in objs[str(k + 1)]["frames"]) == bool(mask.any())


def test_masks_equal_what_is_drawn_in_a_hand_made_clip():
    # a red square slides under a blue circle (drawn later = on top) and out of the image
    T = 8
    clip = build_clip(
        [
            {"shape": "square", "colour": "red", "size": "big", "centers": [(60 + 16 * t, 40) for t in range(T)]},
            {"shape": "circle", "colour": "blue", "size": "big", "centers": [(70, 40)] * T},
        ],
        image_size=SIZE,
    )
    red, blue = clip.tracks
    ids = clip.id_maps
    img = clip.images.astype(np.int16)
    for t in range(T):
        painted_red = np.all(np.abs(img[t] - np.asarray(COLOURS["red"])) <= COLOUR_TOLERANCE, axis=-1)
        painted_blue = np.all(np.abs(img[t] - np.asarray(COLOURS["blue"])) <= COLOUR_TOLERANCE, axis=-1)
        assert np.array_equal(painted_red, ids[t] == 1) and np.array_equal(painted_blue, ids[t] == 2)
        assert np.array_equal(blue.masks[t], blue.full_masks[t])  # on top: never hidden
        assert not (red.masks[t] & blue.full_masks[t]).any()  # occluded part is not in the mask
    assert (red.full_masks[0] & blue.full_masks[0]).any() and red.masks[0].sum() < red.full_masks[0].sum()
    assert red.present.tolist() == [True] * 5 + [False] * 3  # it left the image: empty masks
    assert not ids[-1].__eq__(1).any()


# ------------------------------------------------------------------------------------------
# expressions
# ------------------------------------------------------------------------------------------
def test_verify_video_referents(data):
    report = verify_video_referents(data["root"])
    assert report["errors"] == []
    assert report["videos"] == sum(SMALL.values())
    assert report["expressions"] == sum(1 for _ in expressions(data))
    assert report["types"] == data["summary"]["types"]


def test_verify_catches_corruption(data, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(data["root"], root)
    vid, entry = sorted(data["meta"]["train"].items())[0]
    png = root / "train" / "Annotations" / vid / f"{entry['frames'][0]}.png"
    ids = png_ids(png)
    ids[ids == ids.max()] = 0  # erase an object from one frame
    _save_png(png, ids)
    meta_path = root / "meta_expressions" / "train" / "meta_expressions.json"
    meta = read_json(meta_path)
    e = meta["videos"][vid]["expressions"]["0"]
    n_obj = len(data["objects"]["train"][vid]["objects"])
    e["obj_id"] = str(int(e["obj_id"]) % n_obj + 1)  # a different object
    meta_path.write_text(json.dumps(meta))
    errors = verify_video_referents(root)["errors"]
    assert any("object ids differ" in x for x in errors)
    assert any("expression 0" in x and "refers to tracks" in x for x in errors)


def test_every_expression_has_exactly_one_referent(data):
    counts = {t: 0 for t in VIDEO_EXPRESSION_TYPES}
    clips = {}
    for split, vid, exp_id, e in expressions(data):
        clip = clips.setdefault(vid, load_clip(data["root"], vid))
        expr = parse_video_expression(e["exp"])
        assert expr.type == e["type"] and realise_video(expr) == e["exp"]
        assert resolve_video(expr, clip) == [int(e["obj_id"]) - 1], (vid, exp_id, e)
        counts[expr.type] += 1
    assert all(counts[t] > 0 for t in VIDEO_EXPRESSION_TYPES), counts


def test_motion_expressions_need_motion(data):
    """Without its motion words a motion expression is ambiguous; with them it is not."""
    n = 0
    for split, vid, exp_id, e in expressions(data):
        clip = load_clip(data["root"], vid)
        expr = parse_video_expression(e["exp"])
        without = resolve_video(expr.appearance, clip)
        if e["type"] == "appearance":
            assert without == [int(e["obj_id"]) - 1]
            continue
        assert len(without) >= 2, (e, without)  # the noun phrase alone matches several tracks
        if e["type"] == "motion":
            n += 1
            target = int(e["obj_id"]) - 1
            assert motion_truth(clip, target, expr.motion) is True
            assert all(motion_truth(clip, i, expr.motion) is False for i in without if i != target)
    assert n >= 5


def _centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def test_motion_expressions_by_an_independent_reading(data):
    """Check each motion claim on the written PNGs alone (no resolver, no re-rendering)."""
    root, checked = data["root"], set()
    step = 0.02 * min(SIZE)  # a clear displacement (the slowest motion covers 2.5% per frame)
    for split, vid, exp_id, e in expressions(data):
        if e["type"] != "motion":
            continue
        frames = data["meta"][split][vid]["frames"]
        oid = int(e["obj_id"])
        masks = np.stack([png_ids(root / split / "Annotations" / vid / f"{f}.png") == oid for f in frames])
        present = masks.any(axis=(1, 2))
        idx = np.nonzero(present)[0]
        first, last = _centroid(masks[idx[0]]), _centroid(masks[idx[-1]])
        largest = masks.sum(axis=(1, 2)).max()
        motion = parse_video_expression(e["exp"]).motion
        checked.add(motion.split("_")[0])
        if motion.startswith("moving_"):
            u = np.asarray(DIRECTIONS[motion.split("_")[1]])
            assert (last - first) @ u > step, e
        elif motion == "still":
            assert present.all() and masks.any(axis=0).sum() <= largest / 0.65 + 1, e
        elif motion in ("stops", "starts"):
            part = masks[-3:] if motion == "stops" else masks[:3]
            assert part.any(axis=0).sum() <= part.sum(axis=(1, 2)).max() / 0.65 + 1, e  # still there
            assert masks.any(axis=0).sum() > 1.3 * largest, e  # but it moved
        elif motion == "turns":
            cs = np.stack([_centroid(masks[t]) for t in idx])
            ahead = np.minimum(cs - cs[0], cs - cs[-1]).max(axis=0)  # an inner extremum on some axis:
            behind = np.minimum(cs[0] - cs, cs[-1] - cs).max(axis=0)  # it went one way, then back
            assert max(ahead.max(), behind.max()) > 1.5 * step, e
        else:
            verb, side = motion.split("_")
            edge = {"left": np.s_[:, 0], "right": np.s_[:, -1], "top": np.s_[0, :], "bottom": np.s_[-1, :]}[side]
            t = idx[0] if verb == "enters" else idx[-1]
            assert not present[0 if verb == "enters" else -1], e  # absent at the start (end)
            assert masks[t][edge].any(), e  # first (last) seen at that border
    assert {"moving", "enters"} <= checked or len(checked) >= 3, checked


def test_objects_absent_from_some_frames(data):
    root, absent, referred = data["root"], 0, 0
    for split in SPLITS:
        for vid, entry in data["meta"][split].items():
            frames = entry["frames"]
            objs = data["objects"][split][vid]["objects"]
            refs = {e["obj_id"] for e in entry["expressions"].values()}
            for oid, o in objs.items():
                if o["frames"] == frames:
                    continue
                absent += 1
                referred += oid in refs
                missing = [f for f in frames if f not in o["frames"]]
                for f in missing:  # listed frame, no pixel of the object: an all-zero mask
                    assert not (png_ids(root / split / "Annotations" / vid / f"{f}.png") == int(oid)).any()
    assert absent >= 2 and referred >= 1
    assert absent == sum(data["summary"]["splits"][s]["objects_absent_in_some_frames"] for s in SPLITS)


def test_lookalikes_with_different_motions(data):
    n = 0
    clips = [load_clip(data["root"], vid) for split in SPLITS for vid in data["meta"][split]]
    clips += [V.render_clip(np.random.default_rng(i), SIZE, 6, (4, 5)) for i in range(30)]  # crowded clips
    for clip in clips:
        seen: dict[tuple[str, str], list[tuple[str, str | None]]] = {}
        for tr in clip.tracks:
            motions = seen.setdefault((tr.shape, tr.colour), [])
            n += bool(motions)
            assert (tr.kind, tr.direction) not in motions
            if tr.kind == "still":
                assert all(k != "still" for k, _ in motions)
            motions.append((tr.kind, tr.direction))
    assert n >= 30


# ------------------------------------------------------------------------------------------
# meaning, on hand-made clips
# ------------------------------------------------------------------------------------------
T = 8


def track(shape, colour, xs, ys, size="small"):
    xs = xs if isinstance(xs, list) else [xs] * T
    ys = ys if isinstance(ys, list) else [ys] * T
    return {"shape": shape, "colour": colour, "size": size, "centers": list(zip(xs, ys))}


def refs(text, clip):
    return resolve_video(parse_video_expression(text), clip)


def test_motion_semantics():
    ts = range(T)
    clip = build_clip([
        track("circle", "red", [100 - 4 * t for t in ts], 25),
        track("circle", "red", [20 + 4 * t for t in ts], 70),
    ])
    assert refs("the red circle", clip) == [0, 1]
    assert refs("the circle moving left", clip) == [0] and refs("the red circle going right", clip) == [1]
    assert refs("the circle that does not move", clip) == [] and refs("the circle moving up", clip) == []

    clip = build_clip([
        track("square", "blue", [30 + 4 * min(t, 4) for t in ts], 20),
        track("square", "blue", [30 + 4 * t for t in ts], 75),
        track("square", "blue", 100, 45),
    ])
    assert refs("the square that stops", clip) == [0]
    assert refs("the square that does not move", clip) == [2]
    assert refs("the square moving right", clip) == [0, 1]  # the one that stops also moved right
    assert motion_truth(clip, 0, "moving_right") is None and motion_truth(clip, 1, "moving_right") is True

    clip = build_clip([
        track("star", "yellow", 64, [-30 + 7 * t for t in ts]),
        track("star", "yellow", 110, 50),
    ])
    assert not clip.tracks[0].present[0] and clip.tracks[0].present[-1]
    assert refs("the star that enters from the top", clip) == [0]
    assert refs("the star that enters from the left", clip) == []
    assert refs("the star moving down", clip) == [0] and refs("the star that never moves", clip) == [1]

    clip = build_clip([
        track("diamond", "green", [40 + 5 * (t if t <= 4 else 8 - t) for t in ts], 30),
        track("diamond", "green", [40 + 5 * t for t in ts], 75),
        track("triangle", "purple", [20 + 3 * max(0, t - 3) for t in ts], 50),
        track("triangle", "purple", [60 - 12 * t for t in ts], 80),
    ])
    assert refs("the diamond that turns around", clip) == [0]
    assert refs("the diamond going right", clip) == [0, 1]  # the one turning around also goes right
    assert refs("the triangle that starts moving", clip) == [2]
    assert refs("the triangle that leaves to the left", clip) == [3] and not clip.tracks[3].present[-1]


def test_position_semantics():
    ts = range(T)
    apart = build_clip([track("heart", "white", 30, 40), track("heart", "white", 95, 40)])
    assert refs("the white heart on the left", apart) == [0] and refs("the rightmost heart", apart) == [1]
    assert refs("the heart at the top", apart) == [0, 1]  # same height: no answer
    crossing = build_clip([
        track("heart", "white", [20 + 12 * t for t in ts], 25),
        track("heart", "white", [108 - 12 * t for t in ts], 70),
    ])
    assert refs("the heart on the left", crossing) == [0, 1]  # they swap sides during the clip
    assert refs("the heart at the top", crossing) == [0]


def test_grammar_round_trip_and_rejects():
    nps = [Desc("circle"), Desc("star", "red", "big"), Desc(colour="blue", noun="one"), Desc(noun="object")]
    n = 0
    for etype, by_key in VIDEO_TEMPLATES.items():
        for key, templates in by_key.items():
            for variant in range(len(templates)):
                for d in nps:
                    fields = {"position": {"where": key}, "motion": {"motion": key}}.get(etype, {})
                    expr = VideoExpression(etype, d, variant=variant, **fields)
                    text = realise_video(expr)
                    assert parse_video_expression(text) == expr, text
                    assert len(text.split()) <= 9
                    n += 1
    assert n > 100 and set(VIDEO_TEMPLATES["motion"]) == set(MOTIONS)
    for bad in ("the circle moving sideways", "the one that stops", "the red circle that stops twice", ""):
        with pytest.raises(ValueError, match="no parse"):
            parse_video_expression(bad)


# ------------------------------------------------------------------------------------------
# determinism and caching
# ------------------------------------------------------------------------------------------
def test_deterministic_by_seed(tmp_path):
    kw = dict(num_videos={"train": 2, "valid": 1}, frames=6, progress=False)
    generate_synthetic_videos(tmp_path / "a", seed=1, workers=1, **kw)
    generate_synthetic_videos(tmp_path / "b", seed=1, workers=2, **kw)
    generate_synthetic_videos(tmp_path / "c", seed=2, workers=1, **kw)
    a, b, c = (all_bytes(tmp_path / x) for x in "abc")
    assert a == b  # same seed: the same bytes, whatever the number of workers
    assert a["meta_expressions/train/meta_expressions.json"] != c["meta_expressions/train/meta_expressions.json"]
    # valid clips do not depend on how many training clips there are
    generate_synthetic_videos(tmp_path / "d", seed=1, num_videos={"train": 4, "valid": 1}, frames=6, progress=False)
    d = all_bytes(tmp_path / "d")
    def valid(files):
        return {k: v for k, v in files.items() if k.startswith("valid/")}

    assert valid(a) == valid(d) and len(valid(a)) == 2 * 6 + 1


def test_cache_and_force(tmp_path):
    kw = dict(seed=0, num_videos={"train": 3, "valid": 1}, frames=6, progress=False)
    first = generate_synthetic_videos(tmp_path, **kw)
    assert first["cached"] is False
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    again = generate_synthetic_videos(tmp_path, **kw)
    assert again["cached"] is True and again["seconds"] == 0.0
    assert {k: again[k] for k in ("splits", "types", "videos")} == {k: first[k] for k in ("splits", "types", "videos")}
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == stamps  # nothing touched
    assert generate_synthetic_videos(tmp_path, force=True, **kw)["cached"] is False
    # a missing frame is noticed and rewritten
    victim = next((tmp_path / "train" / "Annotations").glob("*/*.png"))
    victim.unlink()
    assert generate_synthetic_videos(tmp_path, **kw)["cached"] is False and victim.is_file()
    # fewer videos: the clips of the larger generation go
    old = {p.name for p in (tmp_path / "train" / "JPEGImages").iterdir()}
    small = generate_synthetic_videos(tmp_path, seed=0, num_videos={"train": 1, "valid": 1}, frames=6, progress=False)
    assert small["cached"] is False
    now = {p.name for p in (tmp_path / "train" / "JPEGImages").iterdir()}
    assert len(old) == 3 and now < old and len(now) == 1
    assert verify_video_referents(tmp_path)["errors"] == []


def test_refuses_a_foreign_dataset(tmp_path):
    meta = tmp_path / "meta_expressions" / "train" / "meta_expressions.json"
    meta.parent.mkdir(parents=True)
    meta.write_text('{"videos": {"003234408d": {"expressions": {}, "frames": ["00000"]}}}')
    with pytest.raises(ValueError, match="did not write"):
        generate_synthetic_videos(tmp_path, num_videos={"train": 1}, frames=6, progress=False)
    assert "003234408d" in meta.read_text()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_videos": {"test": 3}}, "unknown split"),
        ({"num_videos": {"train": -1}}, "non-negative"),
        ({"num_videos": {"train": 0, "valid": 0}}, "at least one"),
        ({"num_videos": {"train": 1.5}}, "non-negative integers"),
        ({"num_videos": 5}, "mapping"),
        ({"frames": 3}, "frames"),
        ({"frames": 12.0}, "frames"),
        ({"size": (32, 96)}, "size"),
        ({"size": 128}, "size"),
        ({"seed": -1}, "seed"),
        ({"workers": 0}, "workers"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    args = {"num_videos": {"train": 1}, "progress": False, **kwargs}
    with pytest.raises(ValueError, match=match) as info:
        generate_synthetic_videos(tmp_path, **args)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "meta_expressions").exists()  # nothing written


def test_verify_needs_a_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="generate_synthetic_videos"):
        verify_video_referents(tmp_path)
