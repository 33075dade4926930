"""``lavt demo``: the whole system, end to end, on the machine at hand (CPU is enough).

1. Generate the synthetic referring benchmark in the RefCOCO layout (cached: a second run
   reuses it).
2. Train a small LAVT (a small Swin from scratch + the pretrained MiniLM text encoder) with the
   ordinary trainer, and the same model on the same data with every expression blanked to
   ``[CLS][SEP]`` -- the language-blind control. With 2+ cores the two runs train side by side,
   one process each (a tiny model keeps 2 threads only ~1.7x busier than 1).
3. Evaluate both final models on every val expression (official protocol), overall and per
   expression type.
4. Write a report folder: ``metrics.json``, ``curves.png`` (train loss, val oIoU), ``overlays.png``
   (image, expression, ground truth, LAVT, control) and ``index.html`` tying them together.

The recipe is the bundled ``configs/demo.yaml``; any ``section.key=value`` override applies to
both runs (the control differs only in ``data.blank_expressions``).
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

RUNS = ("lavt", "control")
RUN_TITLES = {"lavt": "LAVT", "control": "language-blind control"}
TYPES = ("attribute", "position", "relation", "ordinal")


def default_data_root() -> Path:
    """Where the synthetic set is cached (``cache:synthetic-demo`` of configs/demo.yaml):
    ``$LAVT_CACHE`` or ``$XDG_CACHE_HOME/lavt`` or ``~/.cache/lavt``, then ``synthetic-demo``."""
    from ..engine.config import lavt_cache_dir

    return lavt_cache_dir() / "synthetic-demo"


def demo_config(out_dir: str | Path, data_root: str | Path | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    root = Path(data_root) if data_root is not None else default_data_root()
    cfg = load_run_config("demo", [f"data.root={root}", f"train.output_dir={Path(out_dir) / 'lavt'}", *overrides])
    if cfg.data.synthetic is None:
        raise ConfigError("the demo needs data.synthetic (the generator's settings)")
    return cfg


def run_configs(cfg: RunConfig, out_dir: str | Path) -> dict[str, RunConfig]:
    """The LAVT run and its control: identical but for blanked expressions and the folder."""
    out = Path(out_dir)
    runs = {}
    for name in RUNS:
        c = RunConfig(**{k: v for k, v in vars(cfg).items()})
        c.data = type(cfg.data)(**{**vars(cfg.data), "blank_expressions": name == "control"})
        c.train = type(cfg.train)(**{**vars(cfg.train), "output_dir": str(out / name)})
        runs[name] = c
    return runs


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------
def summarise(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Overall and per-type oIoU / mIoU / P@0.5 of both runs, and the LAVT - control margins."""
    table = runner.metric_table(results, TYPES, ("oIoU", "mIoU", "P@0.5", "n"))
    if "lavt" in table and "control" in table:
        table["margin"] = {
            part: {k: table["lavt"][part][k] - table["control"][part][k] for k in ("oIoU", "mIoU")}
            for part in table["lavt"]
            if part in table["control"]
        }
    return table


def pick_examples(dataset, per_type: int = 2) -> list[int]:
    """Sample indices for the overlay grid: the first ``per_type`` expressions of each type,
    each from a different image (deterministic)."""
    chosen: list[int] = []
    seen_images: set[int] = set()
    counts = dict.fromkeys(TYPES, 0)
    for i in range(len(dataset)):
        info = dataset.sample_info(i)
        t, image_id = info["type"], info["image_id"]
        if t in counts and counts[t] < per_type and image_id not in seen_images:
            chosen.append(i)
            counts[t] += 1
            seen_images.add(image_id)
        if all(c >= per_type for c in counts.values()):
            break
    return sorted(chosen, key=lambda i: TYPES.index(dataset.sample_info(i)["type"]))


@torch.inference_mode()
def predict_examples(models: dict[str, Any], dataset, indices: Sequence[int]) -> list[dict[str, Any]]:
    """Image, expression, ground truth and each model's mask (at image size) per example."""
    from ..evaluation.metrics import intersection_union

    rows = []
    for i in indices:
        item = dataset[i]
        image = np.asarray(dataset.original_image(i))
        gt = np.asarray(dataset.original_target(i), dtype=bool)
        row = {"index": i, "text": item["text"], "type": item["type"], "image": image, "gt": gt, "pred": {}, "iou": {}}
        for name, model in models.items():
            # the control model always sees a blank expression: that is what it was trained on
            logits = model(item["image"][None], item["input_ids"][None], item["attention_mask"][None])
            logits = torch.nn.functional.interpolate(logits, size=gt.shape, mode="bilinear", align_corners=True)
            pred = logits[0].argmax(0).numpy().astype(bool)
            inter, union = intersection_union(pred, gt)
            row["pred"][name] = pred
            row["iou"][name] = 100.0 * inter / union if union else 100.0
        rows.append(row)
    return rows


def _tint(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """The mask tinted in ``colour`` on a dimmed image, so the selection stands out even where
    the object has the tint's own colour."""
    out = image.astype(np.float32) * 0.4
    out[mask] = 0.3 * image[mask] + 0.7 * np.asarray(colour, np.float32)
    return out.clip(0, 255).astype(np.uint8)


def plot_overlays(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [("image", None), ("ground truth", (255, 255, 0)), ("LAVT", (0, 230, 0)), ("control", (255, 60, 60))]
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.3 * len(cols) + 2.6, 1.95 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c, (title, colour) in enumerate(cols):
            ax = axes[r][c]
            if title == "image":
                shown = row["image"]
            elif title == "ground truth":
                shown = _tint(row["image"], row["gt"], colour)
            else:
                name = "lavt" if title == "LAVT" else "control"
                shown = _tint(row["image"], row["pred"][name], colour)
                ax.set_xlabel(f"IoU {row['iou'][name]:.0f}", fontsize=8, labelpad=1)
            ax.imshow(shown)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=10)
        axes[r][0].set_ylabel(f"[{row['type']}]", fontsize=8)
        axes[r][-1].text(1.06, 0.5, f'"{row["text"]}"', transform=axes[r][-1].transAxes, fontsize=8.5, va="center", wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def write_html(report: dict[str, Any], path: Path) -> None:
    s = report["summary"]
    parts = ["overall", *[t for t in TYPES if t in s["lavt"]]]
    rows = [
        ("LAVT - control" if name == "margin" else RUN_TITLES[name], [s[name].get(p, {}).get("oIoU") for p in parts])
        for name in (*RUNS, "margin")
        if name in s
    ]
    rows.append(("expressions", [str(s["lavt"][p].get("n", "-")) for p in parts]))
    machine = report["machine"]
    runner.write_page(path, "lavt demo", f"""<p>Synthetic referring benchmark in the RefCOCO layout ({report['data']['train_sentences']}
training expressions on {report['data']['train_images']} images), a small LAVT trained from scratch with the
pretrained MiniLM text encoder, and the same model trained with every expression blanked
(language-blind control). Val oIoU (%) over all {s['lavt']['overall'].get('n', '')} val expressions, final weights,
official protocol:</p>
{runner.html_table(parts, rows)}
<p>Time: {html.escape(runner.timings(report['seconds']))} on {html.escape(machine['cpu_count_str'])}
({html.escape(machine['processor'])}; flags {html.escape(machine['cpu_flags'])}).</p>
<h2>Examples (val)</h2><img src="overlays.png" alt="overlay grid">
<h2>Training curves</h2><img src="curves.png" alt="loss and val oIoU curves">
<h2>Files</h2><ul><li><a href="metrics.json">metrics.json</a></li>
<li>lavt/final_model: the trained model, a directory for <code>lavt predict --model</code></li>
<li>lavt/last.pt: its training checkpoint (continue with <code>lavt train</code> ... <code>--resume</code>)</li>
<li>lavt/tensorboard, control/tensorboard: TensorBoard logs (the control's weights are not kept)</li></ul>""")


# ----------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------
def example_rows(out: Path, runs: dict[str, RunConfig], cfg: RunConfig) -> list[dict[str, Any]]:
    """The overlay grid's rows: a few val expressions of every type, with both final models' masks
    (the control always sees the blank expression it was trained on)."""
    from ..data.refer import ReferSegmentation
    from ..models.lavt import LAVT
    from ..models.text import Tokenizer

    rows: list[dict[str, Any]] = []
    for name, c in runs.items():
        dataset = ReferSegmentation(
            c.data.root, c.data.dataset, c.data.split_by, split=c.data.val_split, image_size=c.data.image_size,
            mode="eval", tokenizer=Tokenizer.from_config(cfg.model.text_encoder),
            blank_expressions=c.data.blank_expressions,
        )
        model = LAVT.from_pretrained(out / name / "final_model").eval()
        if not rows:
            rows = predict_examples({name: model}, dataset, pick_examples(dataset))
            continue
        for row, other in zip(rows, predict_examples({name: model}, dataset, [r["index"] for r in rows])):
            row["pred"][name], row["iou"][name] = other["pred"][name], other["iou"][name]
    return rows


def run_demo(out_dir: str | Path = "lavt-demo", data_root: str | Path | None = None, overrides: Sequence[str] = (),
             parallel: bool | None = None, progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    from ..data.synthetic import generate_synthetic_refer

    seconds = runner.Timings()
    out = Path(out_dir)
    cfg = demo_config(out, data_root, overrides)  # config errors first, before touching out
    runner.claim_output_dir(out, RUNS, overwrite)
    with seconds.phase("data"):
        data = generate_synthetic_refer(
            cfg.data.root, dataset_name=cfg.data.dataset, progress=progress, **cfg.data.synthetic
        )

    runs = run_configs(cfg, out)
    results, parallel = runner.timed_runs(runs, parallel, progress, seconds)

    with seconds.phase("report"):
        summary = summarise(results)
        rows = example_rows(out, runs, cfg)
        plot_overlays(rows, out / "overlays.png")
        runner.plot_curves(results, out / "curves.png", RUN_TITLES, "oIoU", "val oIoU")
        runner.drop_weights(out / "control")  # the control is there to be compared with, not used
    seconds.finish()

    report = {
        "summary": summary,
        "seconds": seconds,
        "runs": runner.run_summaries(results),
        "data": {
            "root": str(cfg.data.root),
            "cached": bool(data.get("cached")),
            "train_images": data["splits"]["train"]["images"],
            "train_sentences": data["splits"]["train"]["sentences"],
            "val_sentences": data["splits"]["val"]["sentences"],
            "val_type_fractions": data["splits"]["val"]["type_fractions"],
        },
        "examples": [{"index": r["index"], "type": r["type"], "text": r["text"], "iou": r["iou"]} for r in rows],
        "config": cfg.to_dict(),
    }
    return runner.write_report(out, report, write_html, parallel)


def format_summary(report: dict[str, Any]) -> str:
    s = report["summary"]
    parts = ["overall", *[t for t in TYPES if t in s["lavt"]]]
    lines = ["val oIoU (%)        " + "".join(f"{p:>11}" for p in parts)]
    for name in (*RUNS, "margin"):
        if name in s:
            title = "LAVT - control" if name == "margin" else RUN_TITLES[name]
            vals = "".join(f"{s[name].get(p, {}).get('oIoU', float('nan')):>11.1f}" for p in parts)
            lines.append(f"{title:<20}{vals}")
    return "\n".join(lines)
