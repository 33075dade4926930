"""The image set on disk: :func:`generate_synthetic_refer` writes it in the real RefCOCO (``refer``) layout.

No real dataset lives on this machine, so this package draws scenes of coloured shapes on textured
backgrounds (:mod:`.scenes`), writes one English expression per referred object in a small grammar
(:mod:`.image_grammar`), and stores everything exactly as RefCOCO is stored on disk, so the RefCOCO
loader, training and evaluation code run on it unchanged::

    <root>/images/mscoco/images/train2014/COCO_train2014_<12-digit image id>.jpg   (JPEG, quality 95)
    <root>/<dataset_name>/instances.json     info, licenses, images, annotations, categories
    <root>/<dataset_name>/refs(unc).p        pickled list of ref dicts (refer API fields)
    <root>/<dataset_name>/synthetic_meta.json  parameters, generator version, counts (cache key)

Entry points: :func:`generate_synthetic_refer` (write a dataset, cached), :func:`load_scene`
(re-render a written image's scene) and :func:`verify_unique_referents` (re-check a written
dataset); in memory: :func:`.scenes.render_scene` (one scene: objects, image, masks),
:func:`.image_grammar.resolve` (what an expression refers to) and
:func:`.image_grammar.parse_expression` / :func:`.image_grammar.realise` (text <-> structure).

Masks are exact by construction
    The annotation of a fully visible object is its polygon (a list with one flat ``[x1, y1, ...]``
    float list); the annotation of a partly hidden object is its visible region as compressed RLE,
    stored as a one-element list ``[{"size": [h, w], "counts": "<ascii>"}]`` so that the refer
    API's test ``type(segmentation[0]) == list`` picks the RLE branch (a bare dict would break
    ``refer.getMask``). Decoding an annotation with pycocotools therefore gives exactly the pixels
    painted with that object's colour. JPEGs are written at quality 95 with 4:4:4 chroma (the
    default 4:2:0 smears small objects' colours).

Sentences
    Each object gets 2-4 expressions (relations and ordinals preferred); an object with no unique
    expression gets no ref but stays in the annotations as a distractor. After generation,
    attribute/position sentences are dropped (never a ref's last one) until relations plus
    ordinals are at least a third of every split. Sentences carry the refer fields ``tokens``,
    ``raw``, ``sent_id``, ``sent`` and an extra key ``type`` (one of :data:`EXPRESSION_TYPES`).
    ``raw`` is lower case without punctuation (``sent`` is the same text).

Splits (by image, as RefCOCO unc)
    ``train`` and ``val``: 3-7 objects per scene; ``testA``: crowded scenes of 5-7 objects;
    ``testB``: sparse scenes of 3-4 objects. Like RefCOCO's testA (people) and testB (other
    objects), the two test splits are two different sub-populations of the training
    distribution. Each image's scene comes from its own random stream keyed by
    ``(seed, split, index in split)``, so the val and test scenes do not change when the number
    of training images changes.

Ids
    ``image_id`` = :func:`image_id_base` (900,000,000,000 + a per-dataset-name offset) + a running
    index, far above the real COCO ids, so a synthetic dataset can share a data root with real
    RefCOCO without ever overwriting a COCO image. ``ann_id`` counts from 1, ``ref_id`` and
    ``sent_id`` from 0; all are unique and increase along the file order (train, val, testA,
    testB). As in RefCOCO, a ref's ``file_name`` (``COCO_train2014_<image id>_<ann_id>.jpg``) is
    not a real file.

Determinism and caching
    The same parameters give byte-identical ``instances.json`` and ``refs(unc).p`` and identical
    JPEGs. Every file is written under a temporary name and moved into place with
    :func:`os.replace`; the meta file is removed first and written last, so an interrupted run
    never looks complete. A later call with the same parameters returns the stored summary
    without touching any file (``force=True`` regenerates). Images are independent, so
    ``workers`` processes render them (default: 2 for big runs); the bytes do not depend on it.
    The default 2,400 images cost ~41 s of CPU (~40 MB on disk).
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..files import load_plain_pickle
from .image_grammar import (
    EXPRESSION_TYPES,
    parse_expression,
    resolve,
    sample_expressions,
)
from .render import SHAPES, SceneObject, _decode, _mask_api
from .scenes import Scene, render_scene
from .writing import _atomic_write_bytes, _auto_workers, _results_in_order, _save_jpeg

__all__ = [
    "GENERATOR_VERSION",
    "SPLITS",
    "generate_synthetic_refer",
    "image_id_base",
    "load_scene",
    "verify_unique_referents",
]

GENERATOR_VERSION = "1.0"

SPLITS = ("train", "val", "testA", "testB")
DEFAULT_NUM_IMAGES = {"train": 2000, "val": 200, "testA": 100, "testB": 100}
OBJECTS_PER_SPLIT = {"train": (3, 7), "val": (3, 7), "testA": (5, 7), "testB": (3, 4)}  # inclusive
MIN_RELATION_ORDINAL_FRACTION = 1.0 / 3.0

IMAGE_SUBDIR = Path("images") / "mscoco" / "images" / "train2014"
META_NAME = "synthetic_meta.json"
REFS_NAME = "refs(unc).p"
INSTANCES_NAME = "instances.json"
_IMAGE_ID_FLOOR = 900_000_000_000
_IMAGE_ID_STRIDE = 1_000_000  # at most this many images per dataset


# ============================================================================================
# The dataset writer
# ============================================================================================
def image_id_base(dataset_name: str) -> int:
    """First image id of a synthetic dataset: far above COCO's ids, distinct per dataset name."""
    return _IMAGE_ID_FLOOR + (zlib.crc32(dataset_name.encode("utf-8")) % 99_999) * _IMAGE_ID_STRIDE


def _image_file_name(image_id: int) -> str:
    return f"COCO_train2014_{image_id:012d}.jpg"


def _scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS.index(split), int(index)]))


def _segmentation(obj: SceneObject, height: int, width: int) -> tuple[list, float, list[float]]:
    """(segmentation, area, bbox) of the visible region: polygon if whole, else RLE."""
    mu = _mask_api()
    if obj.fully_visible:
        seg: list = [list(obj.polygon)]
        rle = mu.frPyObjects(seg, height, width)[0]
    else:
        rle = mu.encode(np.asfortranarray(obj.mask.astype(np.uint8)))
        seg = [{"size": [int(height), int(width)], "counts": rle["counts"].decode("ascii")}]
    area = float(mu.area(rle))
    bbox = [round(float(v), 2) for v in mu.toBbox(rle)]
    return seg, area, bbox


def _tokens(text: str) -> list[str]:
    return text.lower().split()


def _params(seed: int, num_images: Mapping[str, int], image_size: tuple[int, int], dataset_name: str) -> dict:
    return {
        "seed": int(seed),
        "num_images": {s: int(num_images.get(s, 0)) for s in SPLITS},
        "image_size": [int(image_size[0]), int(image_size[1])],
        "dataset_name": dataset_name,
        "generator_version": GENERATOR_VERSION,
    }


def _validate(num_images: Mapping[str, int], image_size: Sequence[int], dataset_name: str) -> None:
    unknown = [s for s in num_images if s not in SPLITS]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown} in num_images; splits: {', '.join(SPLITS)}")
    if any(int(v) < 0 for v in num_images.values()) or sum(int(v) for v in num_images.values()) < 1:
        raise ValueError(f"num_images must be non-negative and ask for at least one image, got {dict(num_images)}")
    if sum(int(v) for v in num_images.values()) >= _IMAGE_ID_STRIDE:
        raise ValueError(f"at most {_IMAGE_ID_STRIDE - 1} images per synthetic dataset")
    if len(image_size) != 2 or min(int(v) for v in image_size) < 48:
        raise ValueError(f"image_size must be (width, height) with both >= 48, got {image_size!r}")
    if not dataset_name or dataset_name in ("images", ".", "..") or "/" in dataset_name or os.sep in dataset_name:
        raise ValueError(f"bad dataset_name {dataset_name!r}")


def _cached_summary(root: Path, ds_dir: Path, params: dict) -> dict | None:
    meta_path = ds_dir / META_NAME
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if meta.get("params") != params:
        return None
    if not (ds_dir / INSTANCES_NAME).is_file() or not (ds_dir / REFS_NAME).is_file():
        return None
    image_dir = root / IMAGE_SUBDIR
    base, total = meta.get("image_id_base"), sum(params["num_images"].values())
    if not isinstance(base, int) or not all((image_dir / _image_file_name(base + k)).is_file() for k in range(total)):
        return None
    return meta


def _generate_image(job: tuple) -> tuple[dict, list[dict]]:
    """Render one image, write its JPEG, and return its images[] entry and, per object, the
    annotation (without ids) and sentences. Top-level so that a process pool can run it."""
    seed, split, index, width, height, image_id, image_dir = job
    rng = _scene_rng(seed, split, index)
    scene = render_scene(rng, (width, height), OBJECTS_PER_SPLIT[split])
    file_name = _image_file_name(image_id)
    _save_jpeg(Path(image_dir) / file_name, scene.image)
    image = {
        "id": image_id, "file_name": file_name, "height": height, "width": width, "license": 7,
        "coco_url": "", "flickr_url": "", "date_captured": "",
    }
    objects = []
    for i, obj in enumerate(scene.objects):
        seg, area, bbox = _segmentation(obj, height, width)
        chosen = sample_expressions(scene, i, rng)
        objects.append(
            {
                "annotation": {
                    "category_id": SHAPES.index(obj.shape) + 1, "bbox": bbox, "area": area, "iscrowd": 0,
                    "segmentation": seg,
                },
                "sentences": [{"raw": text, "type": expr.type} for expr, text in chosen],
                "has_distractor": any(
                    o.shape == obj.shape or o.colour == obj.colour for j, o in enumerate(scene.objects) if j != i
                ),
            }
        )
    return image, objects


def _canonical(obj: Any) -> Any:
    """A copy with every string interned. Pickle memoises objects by identity, so without this
    the bytes would depend on which equal strings happen to be one object (e.g. whether a
    sentence came back from a worker process)."""
    if isinstance(obj, str):
        return sys.intern(obj)
    if isinstance(obj, dict):
        return {_canonical(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_canonical(v) for v in obj]
    return obj


def _enforce_type_fraction(split_refs: list[dict], rng: np.random.Generator) -> None:
    """Drop attribute/position sentences (never a ref's last) until relations + ordinals >= 1/3."""
    def counts() -> tuple[int, int]:
        total = sum(len(r["sentences"]) for r in split_refs)
        ro = sum(1 for r in split_refs for s in r["sentences"] if s["type"] in ("relation", "ordinal"))
        return total, ro

    total, ro = counts()
    if total == 0 or ro >= MIN_RELATION_ORDINAL_FRACTION * total:
        return
    order = [int(i) for i in rng.permutation(len(split_refs))]
    order.sort(key=lambda i: -len(split_refs[i]["sentences"]))  # stable: fullest refs first
    while ro < MIN_RELATION_ORDINAL_FRACTION * total:
        progress = False
        for i in order:
            sents = split_refs[i]["sentences"]
            drop = [k for k, s in enumerate(sents) if s["type"] in ("attribute", "position")]
            if len(sents) >= 2 and drop:
                del sents[drop[-1]]
                total -= 1
                progress = True
                if ro >= MIN_RELATION_ORDINAL_FRACTION * total:
                    return
        if not progress:
            return  # cannot do better without deleting refs; reported in the summary


def generate_synthetic_refer(
    root: str | os.PathLike[str],
    seed: int = 0,
    num_images: Mapping[str, int] | None = None,
    image_size: tuple[int, int] = (160, 128),
    dataset_name: str = "synthetic",
    force: bool = False,
    progress: bool = True,
    workers: int | None = None,
) -> dict[str, Any]:
    """Write the synthetic benchmark under ``root`` in the refer layout; return a summary.

    ``num_images``: images per split (default train 2000, val 200, testA 100, testB 100).
    ``image_size``: (width, height). Same parameters -> same bytes. If ``<root>/<dataset_name>/
    synthetic_meta.json`` records the same parameters (and the files exist) nothing is written
    and the stored summary is returned with ``cached=True``; ``force=True`` regenerates.
    ``workers``: processes that render images (the output is the same bytes for any number);
    default: up to 2 for 200+ images where ``fork`` is available, else 1.
    ``progress`` shows a tqdm bar.
    """
    num_images = dict(DEFAULT_NUM_IMAGES if num_images is None else num_images)
    _validate(num_images, image_size, dataset_name)
    root = Path(os.path.expanduser(os.fspath(root)))
    ds_dir = root / dataset_name
    image_dir = root / IMAGE_SUBDIR
    params = _params(seed, num_images, tuple(image_size), dataset_name)  # type: ignore[arg-type]
    if not force:
        meta = _cached_summary(root, ds_dir, params)
        if meta is not None:
            return {**meta["summary"], "root": str(root), "cached": True, "seconds": 0.0}

    from ...runtime.progress import progress_bar

    start = time.perf_counter()
    ds_dir.mkdir(parents=True, exist_ok=True)
    image_dir.mkdir(parents=True, exist_ok=True)
    (ds_dir / META_NAME).unlink(missing_ok=True)  # from here on the dataset is not complete
    width, height = int(image_size[0]), int(image_size[1])
    base = image_id_base(dataset_name)

    jobs = []  # (seed, split, index, width, height, image_id, image_dir)
    for split in SPLITS:
        for index in range(params["num_images"][split]):
            jobs.append((int(seed), split, index, width, height, base + len(jobs), str(image_dir)))
    images: list[dict] = []
    annotations: list[dict] = []
    refs_by_split: dict[str, list[dict]] = {s: [] for s in SPLITS}
    objects_per_split = {s: 0 for s in SPLITS}
    distractor_refs = 0
    ann_id = 0
    bar = progress_bar(None, progress, total=len(jobs), desc=f"synthetic {dataset_name}", unit="img")
    workers = _auto_workers(len(jobs)) if workers is None else max(1, int(workers))
    with _results_in_order(_generate_image, jobs, workers, 16, bar) as results:
        for job, (image, objects) in zip(jobs, results):
            split, image_id = job[1], job[5]
            images.append(image)
            objects_per_split[split] += len(objects)
            for obj in objects:
                ann_id += 1
                annotations.append({"id": ann_id, "image_id": image_id, **obj["annotation"]})
                if not obj["sentences"]:
                    continue
                distractor_refs += obj["has_distractor"]
                refs_by_split[split].append(
                    {
                        "ann_id": ann_id, "image_id": image_id, "category_id": obj["annotation"]["category_id"],
                        "split": split, "file_name": f"COCO_train2014_{image_id:012d}_{ann_id}.jpg",
                        "sentences": obj["sentences"],
                    }
                )

    # relations + ordinals >= 1/3 of every split (seeded, deterministic)
    for split in SPLITS:
        split_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 99, SPLITS.index(split)]))
        _enforce_type_fraction(refs_by_split[split], split_rng)

    refs: list[dict] = []
    sent_id = 0
    for split in SPLITS:
        for ref in refs_by_split[split]:
            sentences = []
            for s in ref["sentences"]:
                tokens = _tokens(s["raw"])
                sentences.append(
                    {"tokens": tokens, "raw": s["raw"], "sent_id": sent_id, "sent": " ".join(tokens), "type": s["type"]}
                )
                sent_id += 1
            refs.append(
                {
                    "ref_id": len(refs), "ann_id": ref["ann_id"], "image_id": ref["image_id"],
                    "category_id": ref["category_id"], "split": ref["split"],
                    "sent_ids": [s["sent_id"] for s in sentences], "sentences": sentences,
                    "file_name": ref["file_name"],
                }
            )

    instances = {
        "info": {
            "description": f"lavt synthetic referring-shapes benchmark ({dataset_name})",
            "version": GENERATOR_VERSION,
            "year": 2025,
            "contributor": "lavt (procedurally generated)",
            "date_created": "",
            "url": "",
        },
        "licenses": [{"id": 7, "name": "No known copyright restrictions", "url": ""}],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": s, "supercategory": "shape"} for i, s in enumerate(SHAPES)],
    }
    _atomic_write_bytes(ds_dir / INSTANCES_NAME, json.dumps(instances).encode("utf-8"))
    _atomic_write_bytes(ds_dir / REFS_NAME, pickle.dumps(_canonical(refs), protocol=2))

    # images of an earlier, larger generation of this dataset (same id range) are stale
    keep = {img["file_name"] for img in images}
    for p in image_dir.glob("COCO_train2014_*.jpg"):
        try:
            pid = int(p.stem.rsplit("_", 1)[1])
        except ValueError:
            continue
        if base <= pid < base + _IMAGE_ID_STRIDE and p.name not in keep:
            p.unlink(missing_ok=True)

    summary = _summary(params, refs, objects_per_split, distractor_refs, base)
    meta = {"params": params, "image_id_base": base, "summary": summary}
    _atomic_write_bytes(ds_dir / META_NAME, json.dumps(meta, indent=2).encode("utf-8"))
    return {**summary, "root": str(root), "cached": False, "seconds": round(time.perf_counter() - start, 2)}


def _summary(params: dict, refs: list[dict], objects_per_split: dict, distractor_refs: int, base: int) -> dict:
    splits: dict[str, dict] = {}
    for split in SPLITS:
        rs = [r for r in refs if r["split"] == split]
        types = {t: 0 for t in EXPRESSION_TYPES}
        for r in rs:
            for s in r["sentences"]:
                types[s["type"]] += 1
        n = sum(types.values())
        splits[split] = {
            "images": params["num_images"][split],
            "objects": objects_per_split[split],
            "refs": len(rs),
            "sentences": n,
            "types": types,
            "type_fractions": {t: round(c / n, 4) if n else 0.0 for t, c in types.items()},
            "relation_ordinal_fraction": round((types["relation"] + types["ordinal"]) / n, 4) if n else 0.0,
        }
    return {
        "dataset_name": params["dataset_name"],
        "generator_version": GENERATOR_VERSION,
        "seed": params["seed"],
        "image_size": params["image_size"],
        "image_id_base": base,
        "splits": splits,
        "refs": len(refs),
        "sentences": sum(v["sentences"] for v in splits.values()),
        "distractor_fraction": round(distractor_refs / len(refs), 4) if refs else 0.0,
    }


# ============================================================================================
# Re-checking a written dataset
# ============================================================================================
def _read_meta(root: Path, dataset_name: str) -> dict:
    path = root / dataset_name / META_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a (complete) synthetic dataset; run generate_synthetic_refer")
    return json.loads(path.read_text())


def _split_and_index(meta: dict, image_id: int) -> tuple[str, int]:
    k = image_id - meta["image_id_base"]
    if k >= 0:
        for split in SPLITS:
            n = meta["params"]["num_images"][split]
            if k < n:
                return split, k
            k -= n
    raise KeyError(f"image {image_id} is not an image of this synthetic dataset")


def load_scene(root: str | os.PathLike[str], image_id: int, dataset_name: str = "synthetic") -> Scene:
    """Re-render the in-memory :class:`Scene` (objects, exact image, masks) of a written image."""
    root = Path(os.path.expanduser(os.fspath(root)))
    meta = _read_meta(root, dataset_name)
    split, index = _split_and_index(meta, int(image_id))
    width, height = meta["params"]["image_size"]
    rng = _scene_rng(meta["params"]["seed"], split, index)
    return render_scene(rng, (width, height), OBJECTS_PER_SPLIT[split])


def verify_unique_referents(root: str | os.PathLike[str], dataset_name: str = "synthetic") -> dict[str, Any]:
    """Re-render every scene from the stored parameters and re-check the written dataset.

    For every image: the annotations decode (pycocotools) to the re-rendered visible masks, in
    drawing order. For every sentence: the text parses (exactly one parse) and its structure
    resolves to the ref's object alone. Returns counts and a list of ``errors`` (empty = good).
    """
    root = Path(os.path.expanduser(os.fspath(root)))
    ds_dir = root / dataset_name
    meta = _read_meta(root, dataset_name)
    params, base = meta["params"], meta["image_id_base"]
    instances = json.loads((ds_dir / INSTANCES_NAME).read_text())
    refs = load_plain_pickle(ds_dir / REFS_NAME)
    width, height = params["image_size"]
    anns_by_image: dict[int, list[dict]] = {}
    for ann in instances["annotations"]:
        anns_by_image.setdefault(ann["image_id"], []).append(ann)
    refs_by_image: dict[int, list[dict]] = {}
    for ref in refs:
        refs_by_image.setdefault(ref["image_id"], []).append(ref)

    errors: list[str] = []
    n_images = n_sentences = 0
    k = 0
    for split in SPLITS:
        for index in range(params["num_images"][split]):
            image_id = base + k
            k += 1
            n_images += 1
            scene = load_scene(root, image_id, dataset_name)
            anns = sorted(anns_by_image.get(image_id, []), key=lambda a: a["id"])
            if len(anns) != len(scene.objects):
                errors.append(f"image {image_id}: {len(anns)} annotations for {len(scene.objects)} objects")
                continue
            index_of = {a["id"]: i for i, a in enumerate(anns)}
            for i, ann in enumerate(anns):
                seg = ann["segmentation"]
                if isinstance(seg[0], list):
                    rles = _mask_api().frPyObjects(seg, height, width)
                else:
                    rles = [{"size": r["size"], "counts": r["counts"].encode("ascii")} for r in seg]
                decoded = _decode(rles).any(axis=2)
                if not np.array_equal(decoded, scene.objects[i].mask):
                    errors.append(f"annotation {ann['id']}: decoded mask differs from the drawn object")
            for ref in refs_by_image.get(image_id, []):
                if ref["split"] != split:
                    errors.append(f"ref {ref['ref_id']}: split {ref['split']!r}, image is in {split!r}")
                target = index_of.get(ref["ann_id"])
                if target is None:
                    errors.append(f"ref {ref['ref_id']}: annotation {ref['ann_id']} is not in image {image_id}")
                    continue
                for s in ref["sentences"]:
                    n_sentences += 1
                    try:
                        expr = parse_expression(s["raw"])
                    except ValueError as e:
                        errors.append(f"sentence {s['sent_id']}: {e}")
                        continue
                    if expr.type != s.get("type"):
                        errors.append(f"sentence {s['sent_id']}: type {s.get('type')!r}, parses as {expr.type!r}")
                    got = resolve(expr, scene)
                    if got != [target]:
                        errors.append(f"sentence {s['sent_id']} {s['raw']!r}: refers to objects {got}, not [{target}]")
    return {"images": n_images, "refs": len(refs), "sentences": n_sentences, "errors": errors}
