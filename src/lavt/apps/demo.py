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
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..engine.config import RunConfig, load_run_config
from ..errors import ConfigError
from ..runtime.machine import cpu_flags, cpu_model

RUNS = ("lavt", "control")
RUN_TITLES = {"lavt": "LAVT", "control": "language-blind control"}
TYPES = ("attribute", "position", "relation", "ordinal")
REPORT_FILES = ("metrics.json", "index.html", "overlays.png", "curves.png", "frames.png")


def default_data_root() -> Path:
    """Where the synthetic set is cached (``cache:synthetic-demo`` of configs/demo.yaml):
    ``$LAVT_CACHE`` or ``$XDG_CACHE_HOME/lavt`` or ``~/.cache/lavt``, then ``synthetic-demo``."""
    from ..engine.config import lavt_cache_dir

    return lavt_cache_dir() / "synthetic-demo"


def claim_output_dir(out: Path, run_names: Sequence[str], overwrite: bool) -> None:
    """A demo writes into ``out``: refuse to mix with an earlier report unless ``overwrite``,
    which deletes that report's files and runs first (nothing else in ``out`` is touched)."""
    import shutil

    from ..engine.trainer import existing_run_files

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    found = [out / f for f in REPORT_FILES if (out / f).exists()]
    for name in run_names:
        found += existing_run_files(out / name) + [p for p in [out / name / "val_metrics.json"] if p.exists()]
    if found and not overwrite:
        shown = ", ".join(str(p.relative_to(out)) for p in found[:3])
        raise ConfigError(
            f"{out} already holds an earlier demo ({shown}); pass --overwrite to replace it, or --out DIR"
        )
    for path in found:
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    out.mkdir(parents=True, exist_ok=True)


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
# training + evaluation of one run (in this process or in a worker)
# ----------------------------------------------------------------------------------------------
def _train_and_evaluate(name: str, cfg_dict: dict[str, Any], threads: int | None, progress: bool) -> dict[str, Any]:
    from ..engine.config import load_run_config_dict
    from ..engine.trainer import Trainer, evaluate

    if threads:
        torch.set_num_threads(threads)
    cfg = load_run_config_dict(cfg_dict)
    start = time.perf_counter()
    trainer = Trainer(cfg, desc=f"train {name}", progress=progress)
    try:
        history = trainer.fit()
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        # every val expression, final weights (no selection on val); joint runs: both val sets
        def full_eval(dataset):
            return evaluate(trainer.model, dataset, trainer.env, batch_size=cfg.eval.batch_size, progress=progress)

        if isinstance(trainer.val_set, dict):
            result = {kind: full_eval(ds) for kind, ds in trainer.val_set.items()}
        else:
            result = full_eval(trainer.val_set)
    finally:
        trainer.close()
    result = {
        "train_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - start,
        "steps": trainer.step,
        "epochs": trainer.epoch,
        "threads": torch.get_num_threads(),
        "history": history,
        "val": result,
    }
    Path(cfg.train.output_dir, "val_metrics.json").write_text(json.dumps(_finite(result["val"]), indent=2))
    return result


def _worker(name: str, cfg_dict: dict[str, Any], threads: int, progress: bool, queue) -> None:
    try:
        queue.put((name, _train_and_evaluate(name, cfg_dict, threads, progress), None))
    except BaseException as e:  # report, never hang the parent
        queue.put((name, None, f"{type(e).__name__}: {e}"))


def train_runs(runs: dict[str, RunConfig], parallel: bool, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Train + evaluate every run; in parallel: one process per run, at most one per CPU core,
    the cores split evenly between the processes running at once."""
    if not parallel:
        return {name: _train_and_evaluate(name, cfg.to_dict(), None, progress) for name, cfg in runs.items()}
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    cores = os.cpu_count() or 2
    slots = max(1, min(len(runs), cores))
    threads = max(1, cores // slots)
    first = next(iter(runs))
    pending = list(runs.items())
    running: dict[str, Any] = {}
    results, errors = {}, []

    def start() -> None:
        name, cfg = pending.pop(0)
        # only the first run draws progress bars: bars from several processes garble a terminal
        proc = ctx.Process(target=_worker, args=(name, cfg.to_dict(), threads, progress and name == first, queue))
        proc.start()
        running[name] = proc

    while pending and len(running) < slots:
        start()
    while running:
        name, result, error = queue.get()
        running.pop(name).join()
        if error:
            errors.append(f"{name}: {error}")
        else:
            results[name] = result
        if pending and not errors:
            start()
    if errors:
        from ..errors import LAVTError

        raise LAVTError("demo training failed: " + "; ".join(errors))
    return {name: results[name] for name in runs}


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------
def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if obj != obj else obj
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def summarise(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Overall and per-type oIoU / mIoU / P@0.5 of both runs, and the LAVT - control margins."""
    table: dict[str, Any] = {}
    for name, r in results.items():
        val = r["val"]
        row = {"overall": {k: val[k] for k in ("oIoU", "mIoU", "P@0.5", "n") if k in val}}
        for t in TYPES:
            g = val.get("groups", {}).get(t)
            if g:
                row[t] = {k: g[k] for k in ("oIoU", "mIoU", "P@0.5", "n") if k in g}
        table[name] = row
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


def plot_curves(results: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, r in results.items():
        train = r["history"]["train"]
        ax_loss.plot([p["step"] for p in train], [p["loss"] for p in train], label=RUN_TITLES[name])
        val = r["history"]["val"]
        ax_val.plot([p["step"] for p in val], [p["oIoU"] for p in val], marker="o", label=RUN_TITLES[name])
    ax_loss.set_xlabel("optimizer step")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_title("training loss")
    ax_val.set_xlabel("optimizer step")
    ax_val.set_ylabel("oIoU (%)")
    ax_val.set_title("val oIoU during training (val subset)")
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_html(report: dict[str, Any], path: Path) -> None:
    s = report["summary"]
    parts = ["overall", *[t for t in TYPES if t in s["lavt"]]]

    def cell(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    header = "".join(f"<th>{html.escape(p)}</th>" for p in parts)
    lines = []
    for name in (*RUNS, "margin"):
        if name not in s:
            continue
        title = "LAVT - control" if name == "margin" else RUN_TITLES[name]
        lines.append(
            f"<tr><th>{html.escape(title)}</th>"
            + "".join(f"<td>{cell(s[name].get(p, {}).get('oIoU'))}</td>" for p in parts)
            + "</tr>"
        )
    counts = "".join(f"<td>{s['lavt'][p].get('n', '-')}</td>" for p in parts)
    timings = ", ".join(f"{k} {v:.0f} s" for k, v in report["seconds"].items())
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>lavt demo report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #bbb;padding:4px 10px;text-align:right}}
th:first-child{{text-align:left}}img{{max-width:100%}}</style></head><body>
<h1>lavt demo</h1>
<p>Synthetic referring benchmark in the RefCOCO layout ({report['data']['train_sentences']} training
expressions on {report['data']['train_images']} images), a small LAVT trained from scratch with the
pretrained MiniLM text encoder, and the same model trained with every expression blanked
(language-blind control). Val oIoU (%) over all {s['lavt']['overall'].get('n', '')} val expressions, final weights,
official protocol:</p>
<table><tr><th></th>{header}</tr>{''.join(lines)}<tr><th>expressions</th>{counts}</tr></table>
<p>Time: {html.escape(timings)} on {html.escape(report['machine']['cpu_count_str'])} ({html.escape(report['machine']['processor'])}; flags {html.escape(report['machine']['cpu_flags'])}).</p>
<h2>Examples (val)</h2><img src="overlays.png" alt="overlay grid">
<h2>Training curves</h2><img src="curves.png" alt="loss and val oIoU curves">
<h2>Files</h2><ul><li><a href="metrics.json">metrics.json</a></li>
<li>lavt/final_model: the trained model, a directory for <code>lavt predict --model</code></li>
<li>lavt/last.pt: its training checkpoint (continue with <code>lavt train</code> ... <code>--resume</code>)</li>
<li>lavt/tensorboard, control/tensorboard: TensorBoard logs (the control's weights are not kept)</li></ul>
</body></html>
"""
    path.write_text(page)


# ----------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------
def run_demo(
    out_dir: str | Path = "lavt-demo",
    data_root: str | Path | None = None,
    overrides: Sequence[str] = (),
    parallel: bool | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    from ..data.refer import ReferSegmentation
    from ..data.synthetic import generate_synthetic_refer
    from ..models.lavt import LAVT

    start = time.perf_counter()
    out = Path(out_dir)
    cfg = demo_config(out, data_root, overrides)  # config errors first, before touching out
    claim_output_dir(out, RUNS, overwrite)
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    data = generate_synthetic_refer(cfg.data.root, dataset_name=cfg.data.dataset, progress=progress, **cfg.data.synthetic)
    seconds["data"] = time.perf_counter() - t

    runs = run_configs(cfg, out)
    if parallel is None:
        parallel = (os.cpu_count() or 1) >= 2
    t = time.perf_counter()
    results = train_runs(runs, parallel=parallel, progress=progress)
    seconds["train+eval"] = time.perf_counter() - t

    t = time.perf_counter()
    summary = summarise(results)
    models = {name: LAVT.from_pretrained(out / name / "final_model").eval() for name in RUNS}
    from ..models.text import Tokenizer

    datasets = {}
    for name, c in runs.items():
        datasets[name] = ReferSegmentation(
            c.data.root, c.data.dataset, c.data.split_by, split=c.data.val_split, image_size=c.data.image_size,
            mode="eval", tokenizer=Tokenizer.from_config(cfg.model.text_encoder),
            blank_expressions=c.data.blank_expressions,
        )
    indices = pick_examples(datasets["lavt"])
    rows = predict_examples({"lavt": models["lavt"]}, datasets["lavt"], indices)
    control_rows = predict_examples({"control": models["control"]}, datasets["control"], indices)
    for row, crow in zip(rows, control_rows):
        row["pred"]["control"], row["iou"]["control"] = crow["pred"]["control"], crow["iou"]["control"]
    plot_overlays(rows, out / "overlays.png")
    plot_curves(results, out / "curves.png")
    del models
    drop_weights(out / "control")  # the control is there to be compared with, not used
    seconds["report"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - start

    report = {
        "summary": summary,
        "seconds": seconds,
        "runs": {
            name: {k: r[k] for k in ("train_seconds", "eval_seconds", "steps", "epochs", "threads")} | {"val": r["val"]}
            for name, r in results.items()
        },
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
        "machine": {
            "platform": platform.platform(),
            "processor": cpu_model(),
            "cpu_flags": cpu_flags(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # AVX2 / AVX512: bf16 speed differs ~30x
            "cpu_count": os.cpu_count(),
            "cpu_count_str": f"{os.cpu_count()} CPU core(s)"
            + (f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"),
            "torch": torch.__version__,
            "parallel_runs": parallel,
        },
    }
    (out / "metrics.json").write_text(json.dumps(_finite(report), indent=2))
    write_html(report, out / "index.html")
    return report


def drop_weights(run_dir: Path) -> None:
    """Delete a finished run's model directory and checkpoints (keep metrics, curves, logs)."""
    import shutil

    for name in ("final_model", "best_model"):
        shutil.rmtree(run_dir / name, ignore_errors=True)
    for name in ("last.pt", "best.pt"):
        (run_dir / name).unlink(missing_ok=True)


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
