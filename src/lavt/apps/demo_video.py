"""``lavt demo --video``: a miniature of the paper's video tables (4, 7, 8) on this machine.

1. Generate synthetic referring videos in the Ref-YouTube-VOS layout (cached), where motion
   expressions ("the square that stops") are needed to tell look-alike objects apart.
2. Train three small models with the ordinary trainer, same recipe and data
   (``configs/demo_video.yaml``):
   * ``pwam3d``: video LAVT with the final 3D PWAM (Table 1 structure 12);
   * ``naive``: video LAVT with 2D PWAM maths on the 3D token grid (structure 1);
   * ``frames``: an image LAVT run frame by frame (the per-frame baseline of Table 8).
3. Evaluate each on every valid expression (whole video in one pass, official
   post-processing): J, F and J&F overall and per expression type (appearance / position /
   motion).
4. Write ``metrics.json``, ``curves.png``, ``frames.png`` (one motion expression: frames,
   ground truth and each model's masks) and ``index.html``.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..engine.config import RunConfig, load_run_config
from ..errors import ConfigError
from . import demo_runner as runner

RUNS = ("pwam3d", "naive", "frames")
RUN_TITLES = {
    "pwam3d": "video LAVT, 3D PWAM (structure 12)",
    "naive": "naive video LAVT (structure 1)",
    "frames": "image LAVT, frame by frame",
}
TYPES = ("appearance", "position", "motion")


def default_data_root() -> Path:
    from ..engine.config import lavt_cache_dir

    return lavt_cache_dir() / "synthetic-video-demo"


def video_run_configs(out_dir: str | Path, data_root: str | Path | None, overrides: Sequence[str] = ()) -> dict[str, RunConfig]:
    root = Path(data_root) if data_root is not None else default_data_root()
    base = load_run_config("demo_video", [f"data.root={root}", *overrides])
    if base.data.synthetic is None:
        raise ConfigError("the video demo needs data.synthetic (the generator's settings)")
    if not base.model.video:
        raise ConfigError("configs/demo_video.yaml must describe a video model (model.video: true)")
    runs = {}
    for name in RUNS:
        model = {"pwam3d": {"pwam_structure": 12}, "naive": {"pwam_structure": 1}, "frames": {"video": False}}[name]
        c = load_run_config("demo_video", [f"data.root={root}", *overrides])
        c.model = type(c.model)(**{**{f: getattr(c.model, f) for f in c.model.__dataclass_fields__}, **model})
        c.train.output_dir = str(Path(out_dir) / name)
        runs[name] = c
    return runs


def summarise(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Overall and per-type J&F, J, F of every run."""
    return runner.metric_table(results, TYPES, ("J&F", "J", "F", "n"))


@torch.inference_mode()
def example_rows(out: Path, runs: dict[str, RunConfig], max_frames: int = 6) -> dict[str, Any]:
    """The first motion expression of the valid split: frames, ground truth, each model's masks."""
    from ..data.ytvos import ReferYouTubeVOS, logits_to_masks
    from ..evaluation.protocols import forward_visual
    from ..models.lavt import LAVT
    from ..models.text import Tokenizer

    cfg = runs["pwam3d"]
    d = cfg.data
    assert cfg.model.text_encoder is not None
    dataset = ReferYouTubeVOS(
        d.root, split=d.val_split, clip_len=d.clip_len, image_size=d.image_size, mode="eval",
        tokenizer=Tokenizer.from_config(cfg.model.text_encoder),
    )
    index = next((i for i in range(len(dataset)) if dataset.sample_info(i)["type"] == "motion"), 0)
    item = dataset[index]
    gt = dataset.original_masks(index)
    frames = [np.asarray(dataset.index.load_frame(item["video_id"], f)) for f in item["frame_names"]]
    preds = {}
    for name in runs:
        model = LAVT.from_pretrained(out / name / "final_model").eval()
        logits = forward_visual(model, item["video"][None], item["input_ids"][None], item["attention_mask"][None])[0]
        preds[name] = logits_to_masks(logits.float(), gt.shape[-2:]).numpy()
    step = max(1, len(frames) // max_frames)
    picks = list(range(0, len(frames), step))[:max_frames]
    return {"text": item["text"], "type": item["type"], "frames": [frames[i] for i in picks],
            "gt": gt[picks], "preds": {k: v[picks] for k, v in preds.items()}, "frame_names": [item["frame_names"][i] for i in picks]}


def plot_frames(example: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .demo import _tint

    rows = [("frames", None, None), ("ground truth", "gt", (255, 255, 0))]
    rows += [(RUN_TITLES[name], name, (0, 230, 0)) for name in example["preds"]]
    n = len(example["frames"])
    fig, axes = plt.subplots(len(rows), n, figsize=(1.9 * n + 0.4, 1.6 * len(rows) + 0.5), squeeze=False)
    for r, (title, key, colour) in enumerate(rows):
        for c in range(n):
            frame = example["frames"][c]
            if key is None:
                shown = frame
            else:
                mask = example["gt"][c] if key == "gt" else example["preds"][key][c]
                shown = _tint(frame, mask, colour)
            ax = axes[r][c]
            ax.imshow(shown)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"frame {example['frame_names'][c]}", fontsize=8)
        axes[r][0].set_ylabel(title, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(f'"{example["text"]}" [{example["type"]}]', fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def write_html(report: dict[str, Any], path: Path) -> None:
    s = report["summary"]
    parts = ["overall", *TYPES]
    rows = [(RUN_TITLES[name], [s[name].get(p, {}).get("J&F") for p in parts]) for name in s]
    runner.write_page(path, "lavt video demo", f"""<p>Synthetic referring videos in the Ref-YouTube-VOS layout; three small models trained from
scratch with the pretrained MiniLM text encoder, same data and recipe. Valid J&amp;F (%) over every
expression (whole video per pass, official post-processing):</p>
{runner.html_table(parts, rows)}
<p>Time: {html.escape(runner.timings(report['seconds']))}.</p>
<h2>Example (valid)</h2><img src="frames.png" alt="frames, ground truth and masks">
<h2>Training curves</h2><img src="curves.png" alt="loss and J&amp;F curves">""")


def run_video_demo(out_dir: str | Path = "lavt-video-demo", data_root: str | Path | None = None,
                   overrides: Sequence[str] = (), parallel: bool | None = None, progress: bool = True,
                   overwrite: bool = False) -> dict[str, Any]:
    from ..data.synthetic import generate_synthetic_videos

    seconds = runner.Timings()
    out = Path(out_dir)
    runs = video_run_configs(out, data_root, overrides)
    runner.claim_output_dir(out, list(runs), overwrite)
    first = runs["pwam3d"]
    assert first.data.synthetic is not None
    with seconds.phase("data"):
        data = generate_synthetic_videos(first.data.root, progress=progress, **first.data.synthetic)
    results, parallel = runner.timed_runs(runs, parallel, progress, seconds)
    with seconds.phase("report"):
        summary = summarise(results)
        example = example_rows(out, runs)
        plot_frames(example, out / "frames.png")
        runner.plot_curves(results, out / "curves.png", RUN_TITLES, "J&F", "valid J&F")
    seconds.finish()
    report = {
        "summary": summary,
        "seconds": seconds,
        "runs": runner.run_summaries(results),
        "data": {k: data[k] for k in ("root", "cached") if k in data} | {"splits": data.get("splits")},
        "example": {"text": example["text"], "type": example["type"]},
        "config": first.to_dict(),
    }
    return runner.write_report(out, report, write_html, parallel)


def format_summary(report: dict[str, Any]) -> str:
    s = report["summary"]
    parts = ["overall", *TYPES]
    lines = ["valid J&F (%)                          " + "".join(f"{p:>11}" for p in parts)]
    for name, row in s.items():
        vals = "".join(f"{row.get(p, {}).get('J&F', float('nan')):>11.1f}" for p in parts)
        lines.append(f"{RUN_TITLES[name]:<39}{vals}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# lavt demo --unified (issue: unified LAVT + joint training + bi-3D-PWAM)
# ----------------------------------------------------------------------------------------------
UNIFIED_RUNS = ("unified", "unified_single", "unified_bi", "image", "video")
UNIFIED_TITLES = {
    "unified": "unified LAVT, joint images + videos",
    # the paper trains both paths on every input but infers single-stream; this row trains each
    # input on the path it is inferred with (unified_train_stream: single), see docs/unified-lavt.md
    "unified_single": "unified LAVT, single-stream training",
    "unified_bi": "unified LAVT + bi-3D-PWAM, joint",
    "image": "image LAVT, images only",
    "video": "video LAVT (3D PWAM), videos only",
}


def unified_run_configs(out_dir: str | Path, data_root: str | Path | None, overrides: Sequence[str] = ()) -> dict[str, RunConfig]:
    import dataclasses

    base_root = Path(data_root) if data_root is not None else default_data_root().parent
    roots = [f"data.joint.image.root={base_root / 'synthetic-unified-images'}",
             f"data.joint.video.root={base_root / 'synthetic-video-demo'}"]
    runs: dict[str, RunConfig] = {}
    for name in UNIFIED_RUNS:
        c = load_run_config("demo_unified", [*roots, *overrides])
        if c.data.name != "joint" or not c.data.joint:
            raise ConfigError("configs/demo_unified.yaml must describe joint data (data.name: joint)")
        model = {f: getattr(c.model, f) for f in c.model.__dataclass_fields__}
        if name == "unified_bi":
            model["bidirectional"] = True
        elif name == "unified_single":
            model["unified_train_stream"] = "single"
        elif name in ("image", "video"):
            model.update(unified=False, video=name == "video")
            part = c.data.joint[name]
            c.data = dataclasses.replace(c.data, **part, name="refer" if name == "image" else "ytvos", joint=None)
        c.model = type(c.model)(**model)
        c.train.output_dir = str(Path(out_dir) / name)
        runs[name] = c
    return runs


def unified_summary(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    table = {}
    for name, r in results.items():
        val = r["val"]
        image = val.get("image") if "image" in val else (val if "oIoU" in val and "J&F" not in val else None)
        video = val.get("video") if "video" in val else (val if "J&F" in val else None)
        row: dict[str, Any] = {}
        if image:
            row["image_oIoU"] = image["oIoU"]
        if video:
            row["video_J&F"] = video["J&F"]
            motion = video.get("groups", {}).get("motion")
            if motion:
                row["video_J&F_motion"] = motion["J&F"]
        table[name] = row
    return table


def run_unified_demo(out_dir: str | Path = "lavt-unified-demo", data_root: str | Path | None = None,
                     overrides: Sequence[str] = (), parallel: bool | None = None, progress: bool = True,
                     overwrite: bool = False) -> dict[str, Any]:
    from ..data.synthetic import generate_synthetic_refer, generate_synthetic_videos

    seconds = runner.Timings()
    out = Path(out_dir)
    runs = unified_run_configs(out, data_root, overrides)
    runner.claim_output_dir(out, list(runs), overwrite)
    joint = runs["unified"].data.joint
    assert joint is not None
    image_part, video_part = joint["image"], joint["video"]
    with seconds.phase("data"):
        generate_synthetic_refer(image_part["root"], dataset_name=image_part.get("dataset", "synthetic"),
                                 progress=progress, **(image_part.get("synthetic") or {}))
        generate_synthetic_videos(video_part["root"], progress=progress, **(video_part.get("synthetic") or {}))
    results, parallel = runner.timed_runs(runs, parallel, progress, seconds)
    seconds.finish()
    report = {
        "summary": unified_summary(results),
        "seconds": seconds,
        "runs": runner.run_summaries(results),
        "config": runs["unified"].to_dict(),
    }
    return runner.write_report(out, report, write_unified_html, parallel)


UNIFIED_CELLS = {"image_oIoU": "image oIoU", "video_J&F": "video J&F", "video_J&F_motion": "J&F motion"}


def write_unified_html(report: dict[str, Any], path: Path) -> None:
    s = report["summary"]
    rows = [(UNIFIED_TITLES[n], [s[n].get(c) for c in UNIFIED_CELLS]) for n in s]
    runner.write_page(path, "lavt unified demo", f"""<p>Image val oIoU and video valid J&amp;F (%), final weights.</p>
{runner.html_table(list(UNIFIED_CELLS.values()), rows)}
<p>Time: {html.escape(runner.timings(report['seconds']))}.</p>""")


def format_unified(report: dict[str, Any]) -> str:
    lines = [f"{'':<40}{'image oIoU':>12}{'video J&F':>12}{'J&F motion':>12}"]
    for name, row in report["summary"].items():
        vals = "".join(f"{row[c]:>12.1f}" if c in row else f"{'-':>12}" for c in ("image_oIoU", "video_J&F", "video_J&F_motion"))
        lines.append(f"{UNIFIED_TITLES[name]:<40}{vals}")
    return "\n".join(lines)
