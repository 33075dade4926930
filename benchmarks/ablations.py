"""The paper's ablations in miniature: Table 5 (language pathway, PWAM) and Table 6a (the gate),
trained from scratch on the synthetic benchmark at the demo's scale, 3 seeds each.

Rows (every other setting is configs/demo.yaml, the demo's model and recipe):

    full LAVT (PWAM + language pathway + tanh gate)   = Table 5 row 4 / Table 6a "tanh"
    no language pathway (model.language_pathway=false) = Table 5 "PWAM only"
    no PWAM, sentence-pooled fusion (model.fusion=pooled) = Table 5 "LP only"
    neither (both removed)                              = Table 5 row 1
    sigmoid gate (model.gate=sigmoid), no gate (model.gate=none) = Table 6a
    FiLM conv baseline (benchmarks/film_baseline.py)    = a conventional referring model, same recipe

Each (row, seed) trains with ``train.seed`` = the seed (model initialisation and sample order; the
synthetic data is the same for all), two runs at a time on 2 cores, and is scored on every val
expression (official protocol). The table gives val oIoU mean ± std over the seeds, overall and per
expression type.

    python benchmarks/ablations.py [--seeds 0 1 2] [--rows full,no_lp,...] [--json ablations.json]
                                   [section.key=value ...]   (overrides for every row, e.g. train.epochs=1)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/ is not a package
import harness  # noqa: E402

ROWS = {
    "full": ("full LAVT (PWAM + LP + tanh gate)", []),
    "no_lp": ("no language pathway", ["model.language_pathway=false"]),
    "no_pwam": ("no PWAM (sentence-pooled fusion)", ["model.fusion=pooled"]),
    "neither": ("neither PWAM nor LP", ["model.language_pathway=false", "model.fusion=pooled"]),
    "sigmoid": ("sigmoid gate", ["model.gate=sigmoid"]),
    "no_gate": ("no gate", ["model.gate=none"]),
    "film": ("FiLM conv baseline (no Swin, no PWAM)", []),
}
TYPES = ("attribute", "position", "relation", "ordinal")


def _film_worker(args: tuple[str, list[str], str]) -> dict:
    """One FiLM run in its own process (one thread: two run side by side)."""
    import torch

    import film_baseline

    data_root, overrides, out = args
    torch.set_num_threads(1)
    r = film_baseline.train_and_evaluate(Path(data_root), overrides, None, Path(out))
    return {"oIoU": r["val"]["oIoU"], "types": r["val"]["types"], "train_seconds": r["train_seconds"]}


def run(rows: list[str], seeds: list[int], overrides: list[str], data_root: Path, work: Path) -> dict:
    from lavt.apps.demo import demo_config
    from lavt.apps.demo_runner import train_runs
    from lavt.data.synthetic import generate_synthetic_refer

    base = demo_config(work / "base", data_root, overrides)
    generate_synthetic_refer(base.data.root, dataset_name=base.data.dataset, progress=False, **base.data.synthetic)
    results: dict[str, dict[int, dict]] = {row: {} for row in rows}
    lavt_rows = [r for r in rows if r != "film"]
    runs = {
        f"{row}_s{seed}": demo_config(work / f"{row}_s{seed}", data_root,
                                      [*overrides, *ROWS[row][1], f"train.seed={seed}"])
        for row in lavt_rows for seed in seeds
    }
    for name, cfg in runs.items():  # demo_config points output_dir at <out>/lavt; keep one folder per run
        cfg.train.output_dir = str(work / name)
    if runs:
        done = train_runs(runs, parallel=True, progress=False)
        for name, r in done.items():
            row, seed = name.rsplit("_s", 1)
            val = r["val"]
            results[row][int(seed)] = {
                "oIoU": val["oIoU"], "types": {t: g["oIoU"] for t, g in val.get("groups", {}).items()},
                "train_seconds": r["train_seconds"],
            }
    if "film" in rows:
        import multiprocessing as mp

        jobs = [(str(data_root), [*overrides, f"train.seed={seed}"], str(work / f"film_s{seed}")) for seed in seeds]
        with mp.get_context("spawn").Pool(min(2, len(jobs))) as pool:
            for seed, r in zip(seeds, pool.map(_film_worker, jobs)):
                results["film"][seed] = r
    return results


def table(results: dict[str, dict[int, dict]]) -> list[list[str]]:
    def cell(values: list[float]) -> str:
        if not values:
            return "-"
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.1f} ± {sd:.1f}"

    out = []
    for row, by_seed in results.items():
        runs = list(by_seed.values())
        out.append([ROWS[row][0], cell([r["oIoU"] for r in runs])]
                   + [cell([r["types"][t] for r in runs if t in r["types"]]) for t in TYPES])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="overrides of configs/demo.yaml")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {', '.join(ROWS)}")
    p.add_argument("--data-root", type=Path, default=None, help="synthetic set (default: the demo's cache)")
    p.add_argument("--work", type=Path, default=None, help="run folders (default: a temporary folder)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        p.error(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    harness.stay_offline()
    from lavt.apps.demo import default_data_root

    print(harness.machine_line())
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        results = run(rows, args.seeds, args.overrides, args.data_root or default_data_root(), work)
    minutes = (time.perf_counter() - start) / 60
    print(f"\nval oIoU (%), mean ± std over seeds {args.seeds}, every val expression ({minutes:.0f} min)")
    harness.print_table(["row", "overall", *TYPES], "l" + "r" * (1 + len(TYPES)), table(results))
    if args.json:
        harness.write_json(args.json, {"seeds": args.seeds, "overrides": args.overrides, "minutes": minutes,
                                       "machine": harness.machine_meta(), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
