"""`lavt data check`: layout, split sizes and decoding checks on tiny fixtures in the published
layouts (data-and-metrics.md 1.1, 1.5, 2.1, 3.1-3.3)."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from dataset_fixtures import built_once, fresh_copy
from PIL import Image
from test_refer import build_fixture  # test_refer skips without pycocotools

import lavt.data.davis as davis_mod
import lavt.data.refer as refer_mod
import lavt.data.ytvos_index as ytvos_mod
from lavt.apps.cli import main
from lavt.data.check import PUBLISHED_A2D, PUBLISHED_JHMDB, check_dataset
from lavt.data.refer import DatasetError
from lavt.errors import ConfigError


# The sizes of test_refer's fixture, counted by hand from its REFCOCO_REFS / REFCOCOG_* tables
# (refs, sentences, distinct images per split).
def sizes(**splits: tuple[int, int, int]) -> dict:
    return {s: {"refs": r, "sentences": n, "images": i} for s, (r, n, i) in splits.items()}


FIXTURE_SIZES = {
    ("refcoco", "unc"): sizes(train=(2, 4, 2), val=(1, 2, 1), testA=(2, 3, 2), testB=(2, 3, 2)),
    ("refcocog", "umd"): sizes(train=(2, 2, 2), val=(1, 2, 1), test=(1, 1, 1)),
    ("refcocog", "google"): sizes(train=(2, 3, 1), val=(2, 2, 1)),
}
IMG2 = "images/mscoco/images/train2014/COCO_train2014_000000000002.jpg"


refer_root = built_once(build_fixture, "refer_data")
fresh_refer = fresh_copy("refer_root", "refer")


@pytest.fixture
def published_fixture(monkeypatch):
    """Pretend the fixture's sizes are the published ones."""
    for key, table in FIXTURE_SIZES.items():
        monkeypatch.setitem(refer_mod.PUBLISHED_SPLIT_SIZES, key, table)


def messages(report) -> list[str]:
    return [p.message for p in report.problems]


# --------------------------------------------------------------------------------------------
# RefCOCO family
# --------------------------------------------------------------------------------------------
def test_correct_refer_fixture_passes(refer_root, published_fixture):
    report = check_dataset("refcoco", refer_root)
    assert report.ok, messages(report)
    assert report.counts["refcoco/unc"]["val"] == {"refs": 1, "sentences": 2, "images": 1}
    assert report.decoded == {"images": 1, "masks": 3}  # refs 0, 3 and 6 of 7: all on image 1
    assert any("refcoco/google" in n for n in report.notes)  # optional partition absent: a note only
    assert report.summary().startswith(f"refcoco at {refer_root}: OK (refcoco/unc: train 2 refs, 4 sentences")
    g = check_dataset("RefCOCOg", refer_root, full=True)
    assert g.ok, messages(g)
    assert set(g.counts) == {"refcocog/umd", "refcocog/google"} and g.decoded["masks"] == 8


def test_split_sizes_compared_with_the_published_table(refer_root):
    report = check_dataset("refcoco", refer_root)  # real published sizes: every count differs
    assert not report.ok and {p.kind for p in report.problems} == {"size"}
    msgs = messages(report)
    assert "refcoco/unc split val: 1 refs, published 3811" in msgs
    assert "refcoco/unc split val: 2 sentences, published 10834" in msgs
    assert "refcoco/unc split testB: 2 images, published 750" in msgs
    assert len(msgs) == 12  # 4 splits x (refs, sentences, images)


def test_one_wrong_split_size(refer_root, published_fixture, monkeypatch):
    table = {s: dict(v) for s, v in FIXTURE_SIZES[("refcocog", "umd")].items()}
    table["test"]["sentences"] = 9602
    monkeypatch.setitem(refer_mod.PUBLISHED_SPLIT_SIZES, ("refcocog", "umd"), table)
    report = check_dataset("refcocog", refer_root)
    assert messages(report) == ["refcocog/umd split test: 1 sentences, published 9602"]


def test_missing_files_are_named(fresh_refer, published_fixture):
    (fresh_refer / IMG2).unlink()
    (fresh_refer / "refcocog" / "refs(google).p").unlink()
    report = check_dataset("refcoco", fresh_refer)
    assert messages(report) == [f"1 of 2 images referenced by refcoco/unc missing: {IMG2}"]
    assert report.problems[0].paths == [str(fresh_refer / IMG2)]
    g = check_dataset("refcocog", fresh_refer)
    assert "refcocog/google refs file missing: refcocog/refs(google).p" in messages(g)
    (fresh_refer / "refcoco" / "instances.json").unlink()
    assert messages(check_dataset("refcoco", fresh_refer)) == ["refcoco instances file missing: refcoco/instances.json"]
    shutil.rmtree(fresh_refer / "images")
    assert "COCO train2014 image folder missing: images/mscoco/images/train2014" in messages(
        check_dataset("refcocog", fresh_refer))


def test_corrupt_and_unexpected_content(fresh_refer, published_fixture):
    (fresh_refer / IMG2).write_bytes(b"\xff\xd8 not a jpeg")
    report = check_dataset("refcoco", fresh_refer, full=True)
    assert [p.kind for p in report.problems] == ["unreadable"]
    assert IMG2 in report.problems[0].message
    refs_path = fresh_refer / "refcocog" / "refs(umd).p"
    refs = pickle.loads(refs_path.read_bytes())
    refs[0]["split"] = "testC"
    refs_path.write_bytes(pickle.dumps(refs, protocol=2))
    msgs = messages(check_dataset("refcocog", fresh_refer))
    assert any("'testC'" in m and "train, val, test" in m for m in msgs)
    assert "refcocog/umd split train: 1 refs, published 2" in msgs
    refs_path.write_bytes(b"\x80\x02 truncated")
    msgs = messages(check_dataset("refcocog", fresh_refer))
    assert any("refs(umd).p" in m and "corrupt" in m for m in msgs)


def test_bad_arguments(refer_root, tmp_path):
    with pytest.raises(ConfigError, match="unknown dataset 'cocoref'"):
        check_dataset("cocoref", refer_root)
    with pytest.raises(DatasetError, match="does not exist"):
        check_dataset("refcoco", tmp_path / "nowhere")


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def test_cli_exit_codes(refer_root, tmp_path, capsys, monkeypatch):
    assert main(["data", "check", "refcoco", str(refer_root), "--json", str(tmp_path / "r" / "report.json")]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 12 and "refcoco/unc split val: 1 refs, published 3811" in lines
    assert "lavt: refcoco at" in err and "12 problems" in err
    saved = json.loads((tmp_path / "r" / "report.json").read_text())
    assert saved["ok"] is False and len(saved["problems"]) == 12
    assert saved["published"]["refcoco/unc"]["val"]["refs"] == 3811

    for key, table in FIXTURE_SIZES.items():
        monkeypatch.setitem(refer_mod.PUBLISHED_SPLIT_SIZES, key, table)
    assert main(["data", "check", "refcoco", str(refer_root)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("refcoco at ") and ": OK (" in out and len(out.splitlines()) == 1
    assert "lavt: note:" in err

    assert main(["data", "check", "cocoref", str(refer_root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lavt: error: unknown dataset 'cocoref'") and len(err.splitlines()) == 1
    assert main(["data", "check", "refcoco", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lavt: error: dataset root") and "nowhere" in err
    with pytest.raises(SystemExit) as e:  # no action
        main(["data"])
    assert e.value.code == 2


# --------------------------------------------------------------------------------------------
# Ref-YouTube-VOS and Ref-DAVIS17 (fixtures of their loader tests)
# --------------------------------------------------------------------------------------------
def test_ytvos(tmp_path, monkeypatch):
    from test_ytvos import build

    root = build(tmp_path / "ytvos")
    monkeypatch.setattr(ytvos_mod, "PUBLISHED_COUNTS", {
        "train": {"videos": 3, "expressions": 5, "objects": 4}, "valid": {"videos": 2, "expressions": 4},
        "test": {"videos": 1},
    })
    report = check_dataset("ref-youtube-vos", root, full=True)
    assert report.ok, messages(report)
    assert report.decoded["annotations"] == 18 and report.decoded["frames"] == 18 + 8 + 2
    (root / "train" / "Annotations" / "a1b2c3d4e5" / "00005.png").unlink()
    (root / "valid" / "JPEGImages" / "e5f6a7b8c9" / "00020.jpg").unlink()
    shutil.rmtree(root / "test" / "JPEGImages" / "f6a7b8c9d0")
    msgs = messages(check_dataset("ytvos", root))
    assert msgs == [
        "train listed annotations missing: train/Annotations/a1b2c3d4e5/00005.png",
        "valid listed frames missing: valid/JPEGImages/e5f6a7b8c9/00020.jpg",
        "1 of 1 test video frame folders missing: test/JPEGImages/f6a7b8c9d0",
    ]
    monkeypatch.setattr(ytvos_mod, "PUBLISHED_COUNTS", dict(ytvos_mod.PUBLISHED_COUNTS, test={"videos": 305}))
    (root / "meta_expressions" / "valid" / "meta_expressions.json").unlink()
    msgs = messages(check_dataset("ytvos", root))
    assert "valid expressions file missing: meta_expressions/valid/meta_expressions.json" in msgs
    assert "ytvos split test: 1 videos, published 305" in msgs


def test_davis(tmp_path, monkeypatch):
    from test_davis import build

    root = build(tmp_path / "ref-davis")
    monkeypatch.setattr(davis_mod, "PUBLISHED_COUNTS", {"train": {"videos": 1}, "val": {"videos": 2}})
    report = check_dataset("ref-davis17", root, full=True)
    assert report.ok, messages(report)
    assert report.counts["davis"] == {"train": {"videos": 1, "expressions": 4}, "val": {"videos": 2, "expressions": 11}}
    unknown = [n for n in report.notes if "unknown-seq" in n]
    assert unknown == ["Davis17_annot1.txt names sequences in no split file: unknown-seq"]
    (root / "DAVIS" / "Annotations_unsupervised" / "480p" / "swan" / "00001.png").unlink()
    p = root / "davis_text_annotations" / "Davis17_annot2_full_video.txt"
    p.write_text(p.read_text(encoding="latin-1").replace("swan 1", "swan-x 1"), encoding="latin-1")
    msgs = messages(check_dataset("davis", root))
    assert msgs == [
        "val annotations of listed frames missing: DAVIS/Annotations_unsupervised/480p/swan/00001.png",
        "val sequence swan has no expression in Davis17_annot2_full_video.txt",
    ]
    monkeypatch.setattr(davis_mod, "PUBLISHED_COUNTS", {"train": {"videos": 60}, "val": {"videos": 30}})
    (root / "davis_text_annotations" / "Davis17_annot1.txt").unlink()
    assert messages(check_dataset("davis", root)) == [
        "expression file (anno1_first_frame) missing: davis_text_annotations/Davis17_annot1.txt"]


# --------------------------------------------------------------------------------------------
# A2D-Sentences and JHMDB-Sentences (layout only)
# --------------------------------------------------------------------------------------------
def png(path: Path, hw=(24, 32)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*hw, 3), 90, dtype=np.uint8)).save(path)


def write_h5(path: Path) -> None:
    """A MATLAB v7.3-like file: HDF5 after a 512-byte user block (real HDF5 when h5py is installed)."""
    try:
        import h5py
    except ImportError:
        path.write_bytes(b"\x00" * 512 + b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
        return
    with h5py.File(path, "w", userblock_size=512) as f:
        f["instance"] = np.array([1.0])
        f["reMask"] = np.zeros((32, 24), dtype=np.uint8)


def build_a2d(root: Path) -> Path:
    rel = root / "Release"
    rel.mkdir(parents=True)
    rows = ["vidA,11,0,1,320,480,40,3,0", "vidB,21,0,1,320,480,40,3,1", "vidC,11,0,1,320,480,40,3,0"]
    (rel / "videoset.csv").write_text("\n".join(rows) + "\n")
    text = root / "text_annotations"
    text.mkdir()
    (text / "a2d_annotation.txt").write_text(
        "video_id,instance_id,query\nvidA,1,a man running\nvidB,0,a bird flying\nvidB,1 (copy),a bird\n")
    (text / "a2d_missed_videos.txt").write_text("vidC\n")
    for v in ("vidA", "vidB"):
        h5 = text / "a2d_annotation_with_instances" / v / "00005.h5"
        h5.parent.mkdir(parents=True)
        write_h5(h5)
        png(rel / "pngs320H" / v / "00001.png")
    return root


def test_a2d_layout(tmp_path, monkeypatch):
    root = build_a2d(tmp_path / "a2d")
    monkeypatch.setitem(PUBLISHED_A2D, "sentences", 3)
    for key, n in (("videos", 3), ("train videos", 2), ("test videos", 1),
                   ("train videos (without missed)", 1), ("test videos (without missed)", 1)):
        monkeypatch.setitem(PUBLISHED_A2D, key, n)
    report = check_dataset("a2d", root, full=True)
    assert report.ok, messages(report)
    assert report.decoded == {"frames": 2, "h5 annotations": 2}
    assert any("1 (copy)" in n for n in report.notes)
    (root / "text_annotations" / "a2d_annotation_with_instances" / "vidB" / "00005.h5").write_bytes(b"junk" * 200)
    shutil.rmtree(root / "Release" / "pngs320H" / "vidA")
    monkeypatch.setitem(PUBLISHED_A2D, "sentences", 6655)
    msgs = messages(check_dataset("a2d", root))
    assert msgs == [
        "a2d: 3 sentences, published 6655",
        "1 of 2 videos' frames (mp4 in Release/clips320H or folder in Release/pngs320H) missing: "
        "Release/clips320H/vidA.mp4",
        "annotation text_annotations/a2d_annotation_with_instances/vidB/00005.h5 is not an HDF5 (MATLAB v7.3) file",
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    msgs = messages(check_dataset("a2d", empty))
    assert "sentence file (also looked in Release/) missing: text_annotations/a2d_annotation.txt" in msgs
    assert "video list missing: Release/videoset.csv" in msgs
    assert "per-frame annotation folder missing: text_annotations/a2d_annotation_with_instances" in msgs


def test_jhmdb_layout(tmp_path, monkeypatch):
    scipy_io = pytest.importorskip("scipy.io")
    root = tmp_path / "jhmdb"
    for action, vid in (("run", "v_run_1"), ("jump", "v_jump_1")):
        for t in (1, 2, 3):
            png(root / "Rename_Images" / action / vid / f"{t:05d}.png")
        m = root / "puppet_mask" / action / vid / "puppet_mask.mat"
        m.parent.mkdir(parents=True)
        scipy_io.savemat(m, {"part_mask": np.zeros((24, 32, 2), dtype=np.uint8)})
    (root / "jhmdb_annotation.txt").write_text("video_id,query\nv_run_1,a man running\nv_jump_1,a girl jumping\n")
    for key in ("videos", "sentences", "actions"):
        monkeypatch.setitem(PUBLISHED_JHMDB, key, 2)
    report = check_dataset("jhmdb", root, full=True)
    assert report.ok, messages(report)
    assert report.decoded == {"frames": 2, "puppet masks": 2}
    scipy_io.savemat(root / "puppet_mask" / "run" / "v_run_1" / "puppet_mask.mat",
                     {"part_mask": np.zeros((24, 30, 5), dtype=np.uint8)})
    (root / "puppet_mask" / "jump" / "v_jump_1" / "puppet_mask.mat").unlink()
    msgs = messages(check_dataset("jhmdb", root))
    assert msgs == [
        "1 of 2 puppet masks missing: puppet_mask/jump/v_jump_1/puppet_mask.mat",
        "puppet mask puppet_mask/run/v_run_1/puppet_mask.mat is 30x24 but the frames are 32x24",
        "puppet mask puppet_mask/run/v_run_1/puppet_mask.mat has 5 masks for 3 frames",
    ]
