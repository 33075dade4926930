"""Measuring in child processes: spawning them, collecting results, contention, interleaved groups
and ratios from the same rounds."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from .machine import CONTENDED_CORES, RESULT_PREFIX, fmt_secs, log, torch_line
from .report import finish
from .timing import Stopwatch, _children_cpu_seconds


# one child process per configuration
# =========================================================================================
def spawn(script: str, flags: list[str]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Run ``script`` as a child; returns its result (None if it failed) and what else the CPUs did meanwhile."""
    load0 = os.getloadavg()[0]
    with Stopwatch(own_cpu=_children_cpu_seconds) as watch:
        command = [sys.executable, os.path.abspath(script), *flags]
        proc = subprocess.run(command, check=False, stdout=subprocess.PIPE, text=True)
    diag: dict[str, Any] = {
        "wall_s": watch.seconds,
        "child_cpu_s": watch.own_cpu_s,
        "other_cpu_cores": watch.other_cores,
        "loadavg1_before": load0,
        "exit": proc.returncode,
    }
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1][len(RESULT_PREFIX) :]), diag
    why = f"exit {proc.returncode}"
    if proc.returncode < 0:
        why = f"killed by signal {-proc.returncode}" + (" (out of memory?)" if proc.returncode == -9 else "")
    log(f"ERROR: child {' '.join(flags)} failed ({why})")
    if proc.stdout.strip():
        log(proc.stdout)
    diag["error"] = why
    return None, diag


class Contention:
    """Where a script's results keep other processes' CPU use per timed run (cores), and how to speak of it.

    Contended results are flagged, never dropped: the table shows the worst run, a warning says
    when it exceeds ``CONTENDED_CORES``.
    """

    def __init__(self, key: str, during: str, what: str = "times") -> None:
        self.key, self.during, self.what = key, during, what

    def most(self, result: dict[str, Any]) -> float:
        return max(result[self.key])

    def summary(self, result: dict[str, Any]) -> str:
        return f"other processes used up to {self.most(result):.2f} cores during {self.during}"

    def warn(self, results: list[dict[str, Any]]) -> None:
        busy = max(self.most(r) for r in results)
        if busy > CONTENDED_CORES:
            print(
                f"WARNING: other processes used up to {busy:.2f} CPU cores during {self.during} (last column): "
                f"those {self.what} are inflated; rerun on an idle machine for clean numbers."
            )


def run_children(
    script: str,
    jobs: dict[str, list[str]],
    started: float,
    progress: Callable[[dict[str, Any]], str],
    contention: Contention,
    detail: str = "",
    stop_at_failure: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each configuration (name -> child flags) in a fresh child, one after the other.

    Returns the results (each with its ``diagnostics``) and the failures (``config`` and
    ``diagnostics``: e.g. an OOM-killed child), so one failure does not lose the others.
    """
    results: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for idx, (name, flags) in enumerate(jobs.items(), 1):
        label = f"{name} {detail}" if detail else name
        log(f"[{idx}/{len(jobs)}] {label} (elapsed {fmt_secs(time.perf_counter() - started)})")
        res, diag = spawn(script, flags)
        if res is None:
            failed.append({"config": name, "diagnostics": diag})
            if stop_at_failure:
                break
            continue
        res["diagnostics"] = diag
        results.append(res)
        log(f"    -> {progress(res)}; {contention.summary(res)} (child wall {fmt_secs(diag['wall_s'])})")
    return results, failed


TIMING_INTERLEAVED = "interleaved: the configurations of one group take turns in one process, order rotated every round"
TIMING_SEPARATE = "separate process per configuration, one after the other"
MEMORY_APART = "separate process per configuration, warm-up + 1 forward (its own times are under memory_pass)"
MEMORY_WITH_TIMING = "the timing process (one per configuration)"


def method_notes(interleaved: bool) -> dict[str, str]:
    """The report's note of where the times and where the peaks come from."""
    if interleaved:
        return {"timing": TIMING_INTERLEAVED, "memory": MEMORY_APART}
    return {"timing": TIMING_SEPARATE, "memory": MEMORY_WITH_TIMING}


def method_sentence(interleaved: bool, group: str) -> str:
    """The header's account of the method; ``group`` says what is compared in one process."""
    if not interleaved:
        return "every configuration runs in a fresh process, one after the other (--separate)."
    return (
        f"timing interleaved: the configurations of {group} take turns in one process (order rotated every round; "
        f"ratios from the same rounds); peak memory from a separate pass, every configuration alone in a fresh "
        f"process (warm-up + 1 forward)."
    )


def run_measurement(
    script: str,
    jobs: dict[str, list[str]],
    groups: dict[str, tuple[list[str], list[str]]] | None,
    started: float,
    progress: Callable[[dict[str, Any]], str],
    contention: Contention,
    detail: str = "",
    stop_at_failure: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Time and measure the configurations (name -> child flags; each result names its ``config``).

    ``groups`` None: each configuration times and measures alone in its own child (``run_children``).
    Else ``groups`` (label -> configuration names, child flags) are timed interleaved, one child a
    group (``--child-group``), after a memory pass that runs each configuration alone for its
    peak; a result's timing keys are then the interleaved ones (its own pass's are kept under
    ``memory_pass``) and ``timing_group`` names its group. Returns results, failures and, per
    group, its configurations, rounds and child diagnostics.
    """
    if groups is None:
        results, failed = run_children(script, jobs, started, progress, contention, detail, stop_at_failure)
        return results, failed, {}
    log("memory pass: every configuration alone in a fresh process, warm-up + 1 forward")
    memory_jobs = {name: [*flags, "--repeats", "1"] for name, flags in jobs.items()}  # argparse: the last one wins
    results, failed = run_children(script, memory_jobs, started, progress, contention, detail, stop_at_failure)
    by_name = {r["config"]: r for r in results}
    timed: dict[str, Any] = {}
    for idx, (label, (names, flags)) in enumerate(groups.items(), 1):
        names = [name for name in names if name in by_name]
        if not names or (failed and stop_at_failure):
            continue
        log(f"[group {idx}/{len(groups)}] {label}: {', '.join(names)} interleaved "
            f"(elapsed {fmt_secs(time.perf_counter() - started)})")  # fmt: skip
        out, diag = spawn(script, ["--child-group", ",".join(names), *flags])
        if out is None:
            log("    (if the group does not fit in memory together, --separate times each configuration alone)")
            failed += [{"config": name, "diagnostics": diag} for name in names]
            for name in names:
                del by_name[name]
            continue
        timed[label] = {"configs": names, "rounds": out["rounds"], "diagnostics": diag}
        for name in names:
            result, timing = by_name[name], out["timings"][name]
            result["memory_pass"] = {key: result[key] for key in timing if key in result}
            result.update(timing, timing_group=label)
            log(f"    -> {name}: {progress(result)}; {contention.summary(result)}")
    return [r for r in results if r["config"] in by_name], failed, timed


def time_ratio(a: dict[str, Any], b: dict[str, Any], median_key: str, contention: Contention) -> dict[str, Any]:
    """Result ``a``'s time over ``b``'s: the ratio of their medians, and where both were timed in the
    same rounds, the median of the per-round ratios and the rounds in which either turn was contended."""
    ratio: dict[str, Any] = {"median_of_medians": a[median_key] / b[median_key]}
    if a.get("timing_group") is not None and a.get("timing_group") == b.get("timing_group"):
        per_round = [x / y for x, y in zip(a["times_s"], b["times_s"])]
        busy = zip(a[contention.key], b[contention.key])
        ratio["median_of_rounds"] = statistics.median(per_round)
        ratio["per_round"] = per_round
        ratio["contended_rounds"] = [i for i, cores in enumerate(busy, 1) if max(cores) > CONTENDED_CORES]
    return ratio


def ratio_record(ratio: dict[str, Any], name: str) -> dict[str, Any]:
    """A ``time_ratio`` for the JSON report: the ratio of medians under ``name``, the key it always had there."""
    return {name: ratio["median_of_medians"], **{key: v for key, v in ratio.items() if key != "median_of_medians"}}


def headline(ratio: dict[str, Any]) -> float:
    """The ratio to speak of: from the same rounds where there are any, else the medians'."""
    return ratio.get("median_of_rounds", ratio["median_of_medians"])


def ratio_text(ratio: dict[str, Any]) -> str:
    """A ``time_ratio`` in words: which number it is and how much the rounds disagree."""
    if "per_round" not in ratio:
        return f"{ratio['median_of_medians']:.3f} (ratio of medians, separate processes)"
    per_round, contended = ratio["per_round"], ratio["contended_rounds"]
    flag = f"; contended rounds {', '.join(map(str, contended))}" if contended else ""
    return (
        f"{ratio['median_of_rounds']:.3f} (median of {len(per_round)} per-round ratios, {min(per_round):.3f}-"
        f"{max(per_round):.3f}; ratio of medians {ratio['median_of_medians']:.3f}{flag})"
    )


def print_rounds(timed: dict[str, Any]) -> None:
    """Per interleaved group, other processes' CPU use in each round (max over its turns), contended ones flagged."""
    for label, group in timed.items():
        busy = [
            f"{max(r['other_cpu_cores'].values()):.2f}" + (" CONTENDED" if r["contended"] else "")
            for r in group["rounds"]
        ]
        per_round = ", ".join(busy)
        print(f"Interleaved rounds, {label}: other processes' CPU per round (cores, max over its turns): {per_round}")


def run_configs_parent(
    script: str,
    args: argparse.Namespace,
    header: list[str],
    meta: dict[str, Any],
    options: str,
    contention: Contention,
    progress: Callable[[dict[str, Any]], str],
    report: Callable[[list[dict[str, Any]], list[dict[str, Any]]], dict[str, Any]],
    detail: str = "",
    interleaved: bool = False,
) -> int:
    """The whole parent of a script with ``--configs``: ``header``, the configurations measured (given the
    parent's ``options``; ``progress`` says how each went): each alone in its own child, or, ``interleaved``,
    timed together in one child after a memory pass (``run_measurement``); torch's facts, the script's
    ``report`` (its tables; returns its extra JSON sections), the contention warning and the JSON report
    with ``meta``. Exit code 1 if any configuration failed.
    """
    started = time.perf_counter()
    print("\n".join(header), flush=True)
    flags = child_flags(args, options)
    jobs = {config: ["--child", "--configs", config, *flags] for config in args.configs}
    groups = {"all configurations": (args.configs, flags)} if interleaved else None
    results, failed, timed = run_measurement(script, jobs, groups, started, progress, contention, detail)
    if not results:
        print("ERROR: every configuration failed.", file=sys.stderr)
        return 1
    env = results[0]["env"]
    print(torch_line(env))
    sections = report(results, failed)
    print_rounds(timed)
    contention.warn(results)
    if interleaved:
        sections["interleaved_groups"] = timed
    finish(started, args.json, env, {**meta, **method_notes(interleaved)}, results=results, failed=failed, **sections)
    return 1 if failed else 0


def settings(args: argparse.Namespace, names: str) -> dict[str, Any]:
    """The options ``names`` (dests, space-separated) as the report's record of the settings."""
    return {name: getattr(args, name) for name in names.split()}


def child_flags(args: argparse.Namespace, names: str) -> list[str]:
    """The parent's options ``names`` (dests, space-separated) as the child's command line; unset ones are left out."""
    flags: list[str] = []
    for name in names.split():
        value = getattr(args, name)
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        flags += [f"--{name.replace('_', '-')}", *map(str, values)]
    return flags


# =========================================================================================
