"""What every ``lavt demo`` shares: claiming the report folder, training its runs side by side (one
worker process per run, the cores split between them), the training curves, the JSON report and
the HTML page around each demo's own tables and figures."""

from __future__ import annotations

import contextlib
import html
import json
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from ..engine.config import RunConfig
from ..errors import ConfigError, LAVTError

REPORT_FILES = ("metrics.json", "index.html", "overlays.png", "curves.png", "frames.png")
RUN_SUMMARY_KEYS = ("train_seconds", "eval_seconds", "steps", "epochs", "threads")


def claim_output_dir(out: Path, run_names: Sequence[str], overwrite: bool) -> None:
    """A demo writes into ``out``: refuse to mix with an earlier report unless ``overwrite``,
    which deletes that report's files and runs first (nothing else in ``out`` is touched)."""
    from ..engine.checkpoint import existing_run_files

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    found = [out / f for f in REPORT_FILES if (out / f).exists()]
    for name in run_names:
        found += existing_run_files(out / name) + [p for p in [out / name / "val_metrics.json"] if p.exists()]
    if found and not overwrite:
        shown = ", ".join(str(p.relative_to(out)) for p in found[:3])
        raise ConfigError(f"{out} already holds an earlier demo ({shown}); pass --overwrite to replace it, or --out DIR")
    for path in found:
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def drop_weights(run_dir: Path) -> None:
    """Delete a finished run's model directory and checkpoints (keep metrics, curves, logs)."""
    for name in ("final_model", "best_model"):
        shutil.rmtree(run_dir / name, ignore_errors=True)
    for name in ("last.pt", "best.pt"):
        (run_dir / name).unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# training the runs
# ----------------------------------------------------------------------------------------------
def _train_and_evaluate(name: str, cfg_dict: dict[str, Any], threads: int | None, progress: bool) -> dict[str, Any]:
    from ..engine.config import load_run_config_dict
    from ..engine.trainer import Trainer
    from ..evaluation.protocols import evaluate

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
    Path(cfg.train.output_dir, "val_metrics.json").write_text(json.dumps(finite(result["val"]), indent=2))
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
        raise LAVTError("demo training failed: " + "; ".join(errors))
    return {name: results[name] for name in runs}


class Timings(dict):
    """Wall-clock seconds of a demo's phases ("data", "train+eval", "report") and its "total"."""

    def __init__(self) -> None:
        super().__init__()
        self._start = time.perf_counter()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self[name] = time.perf_counter() - start

    def finish(self) -> None:
        self["total"] = time.perf_counter() - self._start


def timed_runs(
    runs: dict[str, RunConfig], parallel: bool | None, progress: bool, seconds: Timings
) -> tuple[dict[str, dict[str, Any]], bool]:
    """:func:`train_runs` with the demos' default (side by side on 2+ cores), its wall-clock time
    recorded in ``seconds["train+eval"]``; returns the results and whether they ran in parallel."""
    if parallel is None:
        parallel = (os.cpu_count() or 1) >= 2
    with seconds.phase("train+eval"):
        results = train_runs(runs, parallel=parallel, progress=progress)
    return results, parallel


# ----------------------------------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------------------------------
def finite(obj: Any) -> Any:
    """``obj`` with NaN floats as None, so metrics.json is valid JSON."""
    if isinstance(obj, float):
        return None if obj != obj else obj
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def metric_table(results: dict[str, dict[str, Any]], types: Sequence[str], keys: Sequence[str]) -> dict[str, Any]:
    """Per run: the ``keys`` of its final validation overall and per expression type."""
    table: dict[str, Any] = {}
    for name, r in results.items():
        val = r["val"]
        row = {"overall": {k: val[k] for k in keys if k in val}}
        for t in types:
            group = val.get("groups", {}).get(t)
            if group:
                row[t] = {k: group[k] for k in keys if k in group}
        table[name] = row
    return table


def run_summaries(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per run: its timings, steps, epochs, threads and final validation metrics."""
    return {name: {k: r[k] for k in RUN_SUMMARY_KEYS} | {"val": r["val"]} for name, r in results.items()}


def machine_info(parallel: bool) -> dict[str, Any]:
    """The machine the demo ran on: timings and bf16 speed depend on the CPU kind."""
    from ..runtime.machine import cpu_flags, cpu_model

    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return {
        "platform": platform.platform(),
        "processor": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # AVX2 / AVX512: bf16 speed differs ~30x
        "cpu_count": os.cpu_count(),
        "cpu_count_str": f"{os.cpu_count()} CPU core(s){gpu}",
        "torch": torch.__version__,
        "parallel_runs": parallel,
    }


def plot_curves(
    results: dict[str, dict[str, Any]], path: Path, titles: dict[str, str], metric: str, what: str
) -> None:
    """Training loss and the validation ``metric`` after each epoch, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, r in results.items():
        train = r["history"]["train"]
        ax_loss.plot([p["step"] for p in train], [p["loss"] for p in train], label=titles[name])
        val = [p for p in r["history"]["val"] if metric in p]
        ax_val.plot([p["step"] for p in val], [p[metric] for p in val], marker="o", label=titles[name])
    ax_loss.set(xlabel="optimizer step", ylabel="training loss", title="training loss")
    ax_val.set(xlabel="optimizer step", ylabel=f"{metric} (%)", title=f"{what} during training (val subset)")
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def html_table(header: Sequence[str], rows: Sequence[tuple[str, Sequence[float | str | None]]]) -> str:
    """A table: one header row, then (title, cells) rows; numbers shown with one decimal."""

    def cell(v: float | str | None) -> str:
        return "-" if v is None else html.escape(v) if isinstance(v, str) else f"{v:.1f}"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        f"<tr><th>{html.escape(title)}</th>" + "".join(f"<td>{cell(v)}</td>" for v in cells) + "</tr>"
        for title, cells in rows
    )
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def write_page(path: Path, title: str, body: str) -> None:
    """``index.html`` with the demos' common style around ``body``."""
    path.write_text(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #bbb;padding:4px 10px;text-align:right}}
th:first-child{{text-align:left}}img{{max-width:100%}}</style></head><body>
<h1>{html.escape(title)}</h1>
{body}
</body></html>
""")


def write_report(
    out: Path, report: dict[str, Any], page: Callable[[dict[str, Any], Path], None], parallel: bool
) -> dict[str, Any]:
    """Add the machine to ``report``, write ``metrics.json`` (NaN as null) and the page
    ``page(report, out / "index.html")`` renders; returns the report."""
    report["machine"] = machine_info(parallel)
    (out / "metrics.json").write_text(json.dumps(finite(report), indent=2))
    page(report, out / "index.html")
    return report


def timings(seconds: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
