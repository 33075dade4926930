"""The synthetic RefCOCO-format benchmark: layout, exact masks, unique referents, determinism, cache."""

from __future__ import annotations

import json
import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

mask_utils = pytest.importorskip("pycocotools.mask")

from lavt.data import synthetic as S  # noqa: E402
from lavt.data.synthetic import (  # noqa: E402
    COLOUR_TOLERANCE,
    COLOURS,
    EXPRESSION_TYPES,
    SHAPES,
    SPLITS,
    Desc,
    Expression,
    build_scene,
    candidate_expressions,
    generate_synthetic_refer,
    load_scene,
    parse_expression,
    realise,
    render_scene,
    resolve,
    sample_expressions,
    verify_unique_referents,
)
from lavt.data.synthetic.image_grammar import TEMPLATES, is_unique  # noqa: E402
from lavt.data.synthetic.images import (  # noqa: E402
    IMAGE_SUBDIR,
    OBJECTS_PER_SPLIT,
    _enforce_type_fraction,
)
from lavt.data.synthetic.render import MIN_VISIBLE_FRACTION  # noqa: E402
from lavt.data.synthetic.scenes import MIN_VISIBLE_PIXELS  # noqa: E402

SMALL = {"train": 20, "val": 5, "testA": 3, "testB": 3}
SIZE = (160, 128)  # width, height
REF_KEYS = {"ref_id", "ann_id", "image_id", "category_id", "split", "sent_ids", "sentences", "file_name"}
SENT_KEYS = {"tokens", "raw", "sent_id", "sent", "type"}
IMAGE_KEYS = {"id", "file_name", "height", "width", "license", "coco_url", "flickr_url", "date_captured"}
ANN_KEYS = {"id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation"}
MAX_COCO_IMAGE_ID = 581929  # the largest COCO train2014 id: synthetic ids must never collide


def decode(ann: dict, h: int, w: int) -> np.ndarray:
    """The refer-API way: polygons -> frPyObjects, else a list of RLEs; union over parts."""
    seg = ann["segmentation"]
    if isinstance(seg[0], list):
        rles = mask_utils.frPyObjects(seg, h, w)
    else:
        rles = [{"size": r["size"], "counts": r["counts"].encode("ascii")} for r in seg]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rles).any(axis=2)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("refer_data")
    summary = generate_synthetic_refer(root, seed=3, num_images=SMALL, progress=False)
    ds = root / "synthetic"
    instances = json.loads((ds / "instances.json").read_text())
    with open(ds / "refs(unc).p", "rb") as f:
        refs = pickle.load(f)
    return {"root": root, "summary": summary, "instances": instances, "refs": refs}


# ------------------------------------------------------------------------------------------
# layout and schema
# ------------------------------------------------------------------------------------------
def test_layout_and_schema(dataset):
    root, inst, refs = dataset["root"], dataset["instances"], dataset["refs"]
    ds = root / "synthetic"
    for name in ("instances.json", "refs(unc).p", "synthetic_meta.json"):
        assert (ds / name).is_file(), name
    assert not list(ds.glob(".*tmp*")) and not list((root / IMAGE_SUBDIR).glob(".*tmp*"))
    assert set(inst) == {"info", "licenses", "images", "annotations", "categories"}

    cats = inst["categories"]
    assert [c["name"] for c in cats] == list(SHAPES) and len(cats) >= 6
    assert all(c["supercategory"] == "shape" and isinstance(c["id"], int) for c in cats)
    cat_ids = {c["id"] for c in cats}

    images = {img["id"]: img for img in inst["images"]}
    assert len(images) == len(inst["images"]) == sum(SMALL.values())
    image_dir = root / "images" / "mscoco" / "images" / "train2014"
    for img in inst["images"]:
        assert set(img) == IMAGE_KEYS
        assert img["id"] > MAX_COCO_IMAGE_ID
        assert img["file_name"] == f"COCO_train2014_{img['id']:012d}.jpg"
        assert (img["width"], img["height"]) == SIZE
        assert isinstance(img["license"], int) and 1 <= img["license"] <= 8
        with Image.open(image_dir / img["file_name"]) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            assert im.size == (img["width"], img["height"])

    anns = {a["id"]: a for a in inst["annotations"]}
    assert len(anns) == len(inst["annotations"])
    assert [a["id"] for a in inst["annotations"]] == sorted(anns)
    n_poly = n_rle = 0
    for a in inst["annotations"]:
        assert set(a) == ANN_KEYS
        assert a["image_id"] in images and a["category_id"] in cat_ids and a["iscrowd"] == 0
        assert len(a["bbox"]) == 4 and all(isinstance(v, float) for v in a["bbox"])
        assert isinstance(a["area"], float) and a["area"] > 0
        seg = a["segmentation"]
        assert isinstance(seg, list) and len(seg) >= 1
        if isinstance(seg[0], list):
            n_poly += 1
            assert all(len(p) >= 6 and len(p) % 2 == 0 and all(isinstance(v, float) for v in p) for p in seg)
        else:
            n_rle += 1
            assert len(seg) == 1 and seg[0]["size"] == [SIZE[1], SIZE[0]] and isinstance(seg[0]["counts"], str)
        m = decode(a, SIZE[1], SIZE[0])
        assert m.sum() == a["area"]
        ys, xs = np.nonzero(m)
        assert a["bbox"] == pytest.approx([xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1])
    assert n_poly > 0 and n_rle > 0  # whole objects are polygons, partly hidden ones RLE

    assert isinstance(refs, list) and refs
    assert [r["ref_id"] for r in refs] == list(range(len(refs)))
    ann_ids = [r["ann_id"] for r in refs]
    assert ann_ids == sorted(set(ann_ids))  # unique, increasing
    sent_ids = [s["sent_id"] for r in refs for s in r["sentences"]]
    assert sent_ids == list(range(len(sent_ids)))
    for r in refs:
        assert set(r) == REF_KEYS
        assert all(isinstance(r[k], int) for k in ("ref_id", "ann_id", "image_id", "category_id"))
        ann = anns[r["ann_id"]]
        assert ann["image_id"] == r["image_id"] and ann["category_id"] == r["category_id"]
        assert r["split"] in SPLITS
        assert r["file_name"] == f"COCO_train2014_{r['image_id']:012d}_{r['ann_id']}.jpg"
        assert not (image_dir / r["file_name"]).exists()  # as in RefCOCO, not a real file
        assert r["sent_ids"] == [s["sent_id"] for s in r["sentences"]] and 1 <= len(r["sentences"]) <= 4
        for s in r["sentences"]:
            assert set(s) == SENT_KEYS
            assert isinstance(s["raw"], str) and s["raw"].strip()
            assert s["tokens"] == s["raw"].lower().split() and s["sent"] == " ".join(s["tokens"])
            assert s["type"] in EXPRESSION_TYPES
    assert {r["split"] for r in refs} == set(SPLITS)
    # splits are by image (RefCOCO unc): no image carries refs of two splits
    split_of_image: dict[int, str] = {}
    for r in refs:
        assert split_of_image.setdefault(r["image_id"], r["split"]) == r["split"]


def test_split_populations(dataset):
    """testA: crowded scenes (5-7 objects), testB: sparse (3-4), train/val: 3-7."""
    inst, meta_base = dataset["instances"], dataset["summary"]["image_id_base"]
    per_image: dict[int, int] = {}
    for a in inst["annotations"]:
        per_image[a["image_id"]] = per_image.get(a["image_id"], 0) + 1
    k = 0
    for split in SPLITS:
        lo, hi = OBJECTS_PER_SPLIT[split]
        for _ in range(SMALL[split]):
            assert lo <= per_image[meta_base + k] <= hi, split
            k += 1
    assert OBJECTS_PER_SPLIT["testA"][0] > OBJECTS_PER_SPLIT["testB"][1]


def test_project_loader_reads_it(dataset):
    refer = pytest.importorskip("lavt.data.refer")
    index = refer.ReferIndex(dataset["root"], "synthetic", "unc")
    anns = {a["id"]: a for a in dataset["instances"]["annotations"]}
    for r in dataset["refs"][::7]:
        np.testing.assert_array_equal(index.mask(r["ref_id"]), decode(anns[r["ann_id"]], SIZE[1], SIZE[0]))


# ------------------------------------------------------------------------------------------
# the masks are exactly what was drawn
# ------------------------------------------------------------------------------------------
def test_annotations_decode_to_drawn_masks(dataset):
    root, inst = dataset["root"], dataset["instances"]
    anns_by_image: dict[int, list[dict]] = {}
    for a in inst["annotations"]:
        anns_by_image.setdefault(a["image_id"], []).append(a)
    image_dir = root / "images" / "mscoco" / "images" / "train2014"
    for img in inst["images"]:
        scene = load_scene(root, img["id"])
        anns = anns_by_image[img["id"]]
        assert len(anns) == len(scene.objects)
        for a, obj in zip(anns, scene.objects):
            assert a["category_id"] == SHAPES.index(obj.shape) + 1
            np.testing.assert_array_equal(decode(a, img["height"], img["width"]), obj.mask)
            assert isinstance(a["segmentation"][0], list) == obj.fully_visible
        # the JPEG is the rendered image up to JPEG loss (4:4:4 chroma keeps object colours)
        jpeg = np.asarray(Image.open(image_dir / img["file_name"]).convert("RGB"), dtype=np.float64)
        assert np.abs(jpeg - scene.image).mean() < 4.0
        for obj in scene.objects:
            assert np.abs(jpeg[obj.mask].mean(0) - scene.image[obj.mask].mean(0)).max() < 3.0


@pytest.mark.parametrize("seed", range(8))
def test_render_scene_invariants(seed):
    rng = np.random.default_rng(seed)
    scene = render_scene(rng, SIZE, (3, 7))
    h, w = SIZE[1], SIZE[0]
    assert scene.image.shape == (h, w, 3) and scene.image.dtype == np.uint8
    assert 3 <= len(scene.objects) <= 7
    masks = scene.masks
    assert masks.shape == (len(scene.objects), h, w) and masks.dtype == bool
    assert masks.sum(0).max() <= 1  # visible masks are disjoint
    covered = np.zeros((h, w), bool)
    for obj in reversed(scene.objects):
        assert len(obj.polygon) >= 6 and len(obj.polygon) % 2 == 0
        full = decode({"segmentation": [obj.polygon]}, h, w)
        np.testing.assert_array_equal(full, obj.full_mask)  # the polygon is what was rasterised
        np.testing.assert_array_equal(obj.mask, full & ~covered)  # minus everything drawn later
        covered |= full
        assert obj.area == obj.mask.sum() >= MIN_VISIBLE_PIXELS
        assert obj.area >= MIN_VISIBLE_FRACTION * full.sum()
        # painted pixels: the object's nominal colour within the jitter range
        px = scene.image[obj.mask].astype(int)
        assert np.abs(px - np.array(COLOURS[obj.colour])).max() <= COLOUR_TOLERANCE
        ys, xs = np.nonzero(obj.mask)
        assert obj.centroid == pytest.approx((xs.mean(), ys.mean()))
    bg = scene.image[~covered]
    assert bg.min() >= 65 and bg.max() <= 200  # muted background, never white/black
    for i, a in enumerate(scene.objects):  # same colour never touches (it would look like one blob)
        for b in scene.objects[i + 1 :]:
            if a.colour == b.colour:
                grown = np.zeros_like(a.full_mask)
                ys, xs = np.nonzero(a.full_mask)
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        grown[np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)] = True
                assert not (grown & b.full_mask).any()


def test_colours_are_distinct_beyond_the_jitter():
    names = list(COLOURS)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            gap = np.abs(np.array(COLOURS[a]) - np.array(COLOURS[b])).max()
            assert gap > 2 * COLOUR_TOLERANCE, (a, b)


# ------------------------------------------------------------------------------------------
# every expression refers to exactly one object
# ------------------------------------------------------------------------------------------
def test_verify_unique_referents(dataset):
    report = verify_unique_referents(dataset["root"])
    assert report["errors"] == []
    assert report["images"] == sum(SMALL.values())
    assert report["sentences"] == sum(len(r["sentences"]) for r in dataset["refs"]) > 0


_NP = re.compile(
    r"(?:(?P<size>small|big) )?(?:(?P<colour>" + "|".join(COLOURS) + r") )?(?P<noun>\w+)$"
)


def _independent_matches(np_text: str, scene) -> list[int]:
    """Objects a noun phrase describes, parsed here without the module's grammar."""
    m = _NP.match(np_text)
    assert m, np_text
    noun = m["noun"]
    return [
        i
        for i, o in enumerate(scene.objects)
        if (noun not in SHAPES or o.shape == noun)
        and (m["colour"] is None or o.colour == m["colour"])
        and (m["size"] is None or o.size == m["size"])
    ]


def test_referents_by_an_independent_reading(dataset):
    """Re-check the simplest templates without the module's resolver: attribute phrases name
    one object; "the leftmost/rightmost X" is extreme by a clear margin; "the second X from
    the left" has exactly one X clearly to its left and the rest clearly to its right."""
    root, inst = dataset["root"], dataset["instances"]
    anns_by_image: dict[int, list[int]] = {}
    for a in inst["annotations"]:
        anns_by_image.setdefault(a["image_id"], []).append(a["id"])
    checked = 0
    for r in dataset["refs"]:
        scene = load_scene(root, r["image_id"])
        target = anns_by_image[r["image_id"]].index(r["ann_id"])
        xs = [o.centroid[0] for o in scene.objects]
        margin = scene.margin
        for s in r["sentences"]:
            text = s["sent"]
            if s["type"] == "attribute":
                np_text = text[4:] if text.startswith("the ") else text
                assert _independent_matches(np_text, scene) == [target], text
                checked += 1
            m = re.fullmatch(r"the (leftmost|rightmost) (.+)", text)
            if m:
                cand = _independent_matches(m[2], scene)
                sign = 1 if m[1] == "leftmost" else -1
                assert target in cand and len(cand) >= 2
                assert all(sign * (xs[j] - xs[target]) >= margin for j in cand if j != target), text
                checked += 1
            m = re.fullmatch(r"the second (.+?)(?: counting)? from the left", text)
            if m:
                cand = [j for j in _independent_matches(m[1], scene) if j != target]
                left = [j for j in cand if xs[j] <= xs[target] - margin]
                right = [j for j in cand if xs[j] >= xs[target] + margin]
                assert len(left) == 1 and len(left) + len(right) == len(cand), text
                checked += 1
    assert checked > 20


def _two_red_circles(dx: float) -> "S.Scene":
    return build_scene(
        [
            {"shape": "circle", "colour": "red", "size": "small", "center": (40, 60)},
            {"shape": "circle", "colour": "red", "size": "small", "center": (40 + dx, 95)},
            {"shape": "square", "colour": "blue", "size": "big", "center": (120, 40)},
        ],
        SIZE,
    )


def test_ambiguous_expressions_are_rejected():
    scene = _two_red_circles(dx=3)  # two red circles, nearly the same x
    ambiguous = Expression("attribute", Desc(shape="circle", colour="red"))
    assert resolve(ambiguous, scene) == [0, 1]
    assert not is_unique(ambiguous, scene, 0) and not is_unique(ambiguous, scene, 1)
    leftmost = Expression("position", Desc(shape="circle", colour="red"), where="left")
    assert resolve(leftmost, scene) == [0, 1]  # 3 px apart: within the margin, ambiguous
    rng = np.random.default_rng(0)
    for target in (0, 1):
        pools = candidate_expressions(scene, target)
        produced = [e for v in pools.values() for e in v]
        assert ambiguous not in produced and leftmost not in produced
        for _ in range(5):
            texts = [t for _, t in sample_expressions(scene, target, rng)]
            assert "the red circle" not in texts and "red circle" not in texts
            assert not any(t.startswith("the leftmost") or "far left" in t for t in texts)
    # but "the blue square" is fine, and so is "the upper red circle" (35 px apart vertically)
    assert Expression("attribute", Desc(shape="square", colour="blue")) in candidate_expressions(scene, 2)["attribute"]
    assert resolve(Expression("position", Desc(shape="circle"), where="top"), scene) == [0]
    # with a clear horizontal gap "the leftmost red circle" becomes usable
    far = _two_red_circles(dx=40)
    assert resolve(leftmost, far) == [0]
    assert leftmost in candidate_expressions(far, 0)["position"]


def test_resolver_semantics():
    scene = build_scene(
        [
            {"shape": "circle", "colour": "red", "size": "small", "center": (20, 64)},
            {"shape": "circle", "colour": "green", "size": "small", "center": (60, 64)},
            {"shape": "circle", "colour": "blue", "size": "small", "center": (100, 64)},
            {"shape": "star", "colour": "yellow", "size": "big", "center": (140, 64)},
            {"shape": "square", "colour": "red", "size": "small", "center": (20, 110)},
        ],
        SIZE,
    )
    circle = Desc(shape="circle")
    star = Desc(shape="star", colour="yellow")

    def ref(**kw):
        return resolve(Expression(target=kw.pop("target", circle), **kw), scene)

    assert ref(type="ordinal", where="left", k=2) == [1]
    assert ref(type="ordinal", where="right", k=3) == [0]
    assert ref(type="ordinal", where="left", k=3) == [2]
    assert ref(type="position", where="right") == [2]
    assert ref(type="position", where="top") == [0, 1, 2]  # same height: ambiguous
    assert ref(type="relation", relation="closest_to", anchor=star) == [2]
    assert ref(type="relation", relation="farthest_from", anchor=star) == [0]
    assert ref(type="relation", relation="left_of", anchor=Desc(colour="green")) == [0]
    assert ref(type="relation", relation="right_of", anchor=Desc(colour="green")) == [2]
    # every circle is higher than the square: "the circle above the square" is ambiguous
    assert ref(type="relation", relation="above", anchor=Desc(shape="square")) == [0, 1, 2]
    assert ref(type="relation", relation="below", anchor=Desc(colour="green"), target=Desc(colour="red")) == [4]
    assert ref(type="relation", relation="left_of", anchor=Desc(colour="green"), target=Desc()) == [0, 4]
    # an anchor phrase that names two objects refers to nothing
    assert ref(type="relation", relation="left_of", anchor=Desc(colour="red")) == []
    assert ref(type="position", where="bottom left", target=Desc(colour="red")) == [4]
    assert ref(type="position", where="top right", target=Desc(colour="red")) == []
    assert ref(type="attribute", target=Desc(size="big")) == [3]
    with pytest.raises(ValueError):
        resolve(Expression("colourful", circle), scene)


def test_grammar_round_trip_and_rejects():
    rng = np.random.default_rng(1)
    seen_types = set()
    for k in range(15):
        scene = render_scene(np.random.default_rng(100 + k), SIZE, (4, 7))
        for i in range(len(scene.objects)):
            for expr, text in sample_expressions(scene, i, rng):
                assert parse_expression(text) == expr and realise(expr) == text
                assert resolve(expr, scene) == [i]
                seen_types.add(expr.type)
    assert seen_types == set(EXPRESSION_TYPES)
    # exhaustively over the templates: every surface form parses back to its structure alone
    descs = [
        Desc(shape="star"), Desc(colour="red", noun="one"), Desc("heart", "white", "big"),
        Desc(noun="shape"), Desc(size="small", noun="object"),
    ]
    n = 0
    for etype, by_key in TEMPLATES.items():
        for key, templates in by_key.items():
            for variant in range(len(templates)):
                for d in descs:
                    if etype == "attribute":
                        exprs = [Expression(etype, d, variant=variant)]
                    elif etype == "relation":
                        exprs = [Expression(etype, d, relation=key, anchor=a, variant=variant) for a in descs]
                    elif etype == "ordinal":
                        exprs = [Expression(etype, d, where=key, k=k, variant=variant) for k in (2, 3)]
                    else:
                        exprs = [Expression(etype, d, where=key, variant=variant)]
                    for e in exprs:
                        assert parse_expression(realise(e)) == e, realise(e)
                        n += 1
    assert n > 300
    for bad in ("", "the", "the one", "the red", "the leftmost", "the circle left of the", "a red circle"):
        with pytest.raises(ValueError):
            parse_expression(bad)


# ------------------------------------------------------------------------------------------
# distractors and the mix of expression types
# ------------------------------------------------------------------------------------------
def test_distractors_share_attributes(dataset):
    root = dataset["root"]
    anns_by_image: dict[int, list[int]] = {}
    for a in dataset["instances"]["annotations"]:
        anns_by_image.setdefault(a["image_id"], []).append(a["id"])
    with_distractor = 0
    for r in dataset["refs"]:
        scene = load_scene(root, r["image_id"])
        t = anns_by_image[r["image_id"]].index(r["ann_id"])
        target = scene.objects[t]
        others = [o for j, o in enumerate(scene.objects) if j != t]
        with_distractor += any(o.shape == target.shape or o.colour == target.colour for o in others)
    fraction = with_distractor / len(dataset["refs"])
    assert fraction >= 0.7
    assert fraction == pytest.approx(dataset["summary"]["distractor_fraction"], abs=1e-3)
    # a shape-only guess is wrong for many refs: the target's category is not unique in its image
    cats_by_image: dict[int, list[int]] = {}
    for a in dataset["instances"]["annotations"]:
        cats_by_image.setdefault(a["image_id"], []).append(a["category_id"])
    shared = sum(cats_by_image[r["image_id"]].count(r["category_id"]) > 1 for r in dataset["refs"])
    assert shared / len(dataset["refs"]) >= 0.3


def test_relation_and_ordinal_fraction(dataset):
    summary = dataset["summary"]
    for split in SPLITS:
        sents = [s for r in dataset["refs"] if r["split"] == split for s in r["sentences"]]
        counts = {t: sum(s["type"] == t for s in sents) for t in EXPRESSION_TYPES}
        frac = (counts["relation"] + counts["ordinal"]) / len(sents)
        assert frac >= 1 / 3, (split, counts)
        assert summary["splits"][split]["types"] == counts
        assert summary["splits"][split]["relation_ordinal_fraction"] == pytest.approx(frac, abs=1e-4)
    train_types = {s["type"] for r in dataset["refs"] if r["split"] == "train" for s in r["sentences"]}
    assert train_types == set(EXPRESSION_TYPES)


def test_type_fraction_is_enforced():
    refs = [
        {"sentences": [{"type": "attribute"}, {"type": "position"}, {"type": "attribute"}]} for _ in range(6)
    ] + [{"sentences": [{"type": "relation"}]}, {"sentences": [{"type": "attribute"}]}]
    _enforce_type_fraction(refs, np.random.default_rng(0))
    types = [s["type"] for r in refs for s in r["sentences"]]
    assert sum(t in ("relation", "ordinal") for t in types) / len(types) < 1 / 3  # cannot reach: keeps 1 per ref
    assert all(len(r["sentences"]) >= 1 for r in refs)
    refs = [{"sentences": [{"type": t} for t in ("attribute", "ordinal", "position", "attribute")]} for _ in range(5)]
    _enforce_type_fraction(refs, np.random.default_rng(0))
    types = [s["type"] for r in refs for s in r["sentences"]]
    assert sum(t == "ordinal" for t in types) == 5 and 5 / len(types) >= 1 / 3
    assert all(any(s["type"] == "ordinal" for s in r["sentences"]) for r in refs)


# ------------------------------------------------------------------------------------------
# determinism and the cache
# ------------------------------------------------------------------------------------------
TINY = {"train": 6, "val": 2, "testA": 2, "testB": 2}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_by_seed(tmp_path):
    a = generate_synthetic_refer(tmp_path / "a", seed=11, num_images=TINY, progress=False)
    b = generate_synthetic_refer(tmp_path / "b", seed=11, num_images=TINY, progress=False, workers=2)
    c = generate_synthetic_refer(tmp_path / "c", seed=12, num_images=TINY, progress=False)
    fa, fb, fc = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert fa.keys() == fb.keys()
    for name in fa:  # refs pickle, instances.json, meta, every JPEG: byte-identical
        assert fa[name] == fb[name], name
    assert a["splits"] == b["splits"]
    assert fa["synthetic/refs(unc).p"] != fc["synthetic/refs(unc).p"]
    assert fa["synthetic/instances.json"] != fc["synthetic/instances.json"]
    assert c["seed"] == 12


def test_val_and_test_scenes_do_not_depend_on_train_size(tmp_path):
    generate_synthetic_refer(tmp_path / "a", num_images={"train": 2, "val": 2}, progress=False)
    generate_synthetic_refer(tmp_path / "b", num_images={"train": 5, "val": 2}, progress=False)
    ia = json.loads((tmp_path / "a/synthetic/instances.json").read_text())
    ib = json.loads((tmp_path / "b/synthetic/instances.json").read_text())

    def val_segmentations(inst: dict, first_val: int) -> list:
        start = inst["images"][first_val]["id"]
        return [a["segmentation"] for a in inst["annotations"] if a["image_id"] >= start]

    assert val_segmentations(ia, 2) == val_segmentations(ib, 5)  # the same val objects


def test_cache_and_force(tmp_path):
    root = tmp_path / "data"
    first = generate_synthetic_refer(root, seed=5, num_images=TINY, progress=False)
    assert first["cached"] is False
    ds = root / "synthetic"
    watched = [ds / "instances.json", ds / "refs(unc).p", ds / "synthetic_meta.json"]
    watched.append(next((root / IMAGE_SUBDIR).glob("*.jpg")))
    before = [(p.stat().st_mtime_ns, p.stat().st_ino) for p in watched]

    again = generate_synthetic_refer(root, seed=5, num_images=TINY, progress=False)
    assert again["cached"] is True
    assert [(p.stat().st_mtime_ns, p.stat().st_ino) for p in watched] == before
    assert again["splits"] == first["splits"]

    forced = generate_synthetic_refer(root, seed=5, num_images=TINY, progress=False, force=True)
    assert forced["cached"] is False
    after = [(p.stat().st_mtime_ns, p.stat().st_ino) for p in watched]
    assert all(x != y for x, y in zip(after, before))  # every file was replaced

    # other parameters -> regenerated; the images an earlier, larger run left behind are removed
    smaller = {"train": 2, "val": 1}
    other = generate_synthetic_refer(root, seed=5, num_images=smaller, progress=False)
    assert other["cached"] is False
    assert len(list((root / IMAGE_SUBDIR).glob("*.jpg"))) == 3

    # an interrupted run (no meta file, the last thing written) is never taken as complete
    (ds / "synthetic_meta.json").unlink()
    assert generate_synthetic_refer(root, seed=5, num_images=smaller, progress=False)["cached"] is False
    # and a missing image invalidates the cache too
    next((root / IMAGE_SUBDIR).glob("*.jpg")).unlink()
    assert generate_synthetic_refer(root, seed=5, num_images=smaller, progress=False)["cached"] is False


def test_foreign_images_are_left_alone(tmp_path):
    image_dir = tmp_path / IMAGE_SUBDIR
    image_dir.mkdir(parents=True)
    coco = image_dir / "COCO_train2014_000000581857.jpg"
    coco.write_bytes(b"not ours")
    generate_synthetic_refer(tmp_path, num_images={"train": 2}, progress=False)
    generate_synthetic_refer(tmp_path, num_images={"train": 1}, progress=False, dataset_name="other")
    assert coco.read_bytes() == b"not ours"
    assert S.image_id_base("synthetic") != S.image_id_base("other")
    assert len(list(image_dir.glob("*.jpg"))) == 1 + 2 + 1


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown split"):
        generate_synthetic_refer(tmp_path, num_images={"test": 3}, progress=False)
    with pytest.raises(ValueError, match="image_size"):
        generate_synthetic_refer(tmp_path, num_images={"train": 1}, image_size=(20, 20), progress=False)
    with pytest.raises(ValueError, match="dataset_name"):
        generate_synthetic_refer(tmp_path, num_images={"train": 1}, dataset_name="images", progress=False)
    with pytest.raises(FileNotFoundError, match="synthetic_meta.json"):
        verify_unique_referents(tmp_path)
