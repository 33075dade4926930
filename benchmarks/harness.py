"""Shared benchmark scaffolding: machine header, timed repeats, peak RSS, child processes, tables, JSON report.

Every script in benchmarks/ uses it: the scripts keep their models, data and comparisons, this
module holds how they measure and report, so that all benchmarks measure the same way.

Why a benchmark's parent process never imports torch (and why this module does not either, except
lazily in ``torch_env`` / ``set_threads``, which only the children call): a child started by
fork/vfork + exec inherits the parent's RSS high-water mark in ``ru_maxrss`` (at exec the kernel
folds the old address space's mark into the process's maxrss), so a parent holding torch + a model
(~950 MiB) would hide every child's own peak. Every configuration therefore runs in a fresh child
(the script re-invoked with a hidden ``--child`` flag) and the parent only orchestrates.

Why the configurations are not interleaved round-robin: in one process they would share one
``ru_maxrss``, so their peaks could not be told apart; and keeping a child per configuration alive
to take turns would hold all their memory at once (the training configurations do not fit side by
side). They run one after the other instead, and every timed run records how many CPU cores
*other* processes used meanwhile (``Stopwatch``): a contended result is flagged, never silently
dropped (``Contention``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from lavt.runtime.machine import cpu_flags, cpu_model  # torch-free, see above

RESULT_PREFIX = "@@BENCH_RESULT@@ "  # marks the child's one result line on its stdout
CONTENDED_CORES = 0.2  # other processes' CPU use (cores) above which timings are flagged


def stay_offline() -> None:
    """Benchmarks build random-weight models: nothing may be looked up on the hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def log(msg: str) -> None:
    """Progress goes to stderr, so stdout holds only the report (and the child's result line)."""
    print(msg, file=sys.stderr, flush=True)


def fmt_secs(s: float) -> str:
    return f"{int(s // 60)}m{s % 60:04.1f}s"


# =========================================================================================
# machine / environment header
# =========================================================================================
def machine_line() -> str:
    """CPU facts that decide the speed (SIMD flags: AVX2/FMA for fp32, AVX512-BF16/AMX for bf16)."""
    return (
        f"CPU: {cpu_model()} ({os.cpu_count()} logical cores; flags: {cpu_flags()}) | python "
        f"{platform.python_version()} | {platform.platform()}"
    )


def machine_meta() -> dict[str, Any]:
    """The machine facts of ``machine_line`` for the JSON report, with the command line."""
    return {"cpu": cpu_model(), "cpu_flags": cpu_flags(), "logical_cores": os.cpu_count(), "argv": sys.argv[1:]}


def torch_env() -> dict[str, Any]:
    """torch's side of the header; called in a child (the parent must not import torch)."""
    import torch

    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "capability": torch.backends.cpu.get_cpu_capability(),
    }


def torch_line(env: dict[str, Any]) -> str:
    return f"torch {env['torch']} | threads {env['threads']} | ATen capability {env['capability']}"


def set_threads(threads: int | None) -> None:
    """``--threads N``: torch.set_num_threads(N); None or 0 keeps torch's default."""
    if threads:
        import torch

        torch.set_num_threads(threads)


# =========================================================================================
# timing: warm-up, repeats, and what else the CPUs did meanwhile
# =========================================================================================
def _cpu_busy_jiffies() -> int:
    """Busy jiffies over all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    return sum(vals[:8]) - idle  # guest time is already counted in user


def _self_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _children_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Stopwatch:
    """Wall time of a block and the CPU cores *other* processes kept busy meanwhile.

    The machine may be shared: with 2 cores and 2 threads even one busy core elsewhere makes a
    forward several times slower, so every measurement carries ``other_cores`` to be judged by.
    ``own_cpu`` says whose CPU time is ours (this process, or the children it waits for).
    """

    def __init__(self, own_cpu: Callable[[], float] = _self_cpu_seconds) -> None:
        self._own_cpu = own_cpu
        self.seconds = self.own_cpu_s = self.other_cores = 0.0

    def __enter__(self) -> Stopwatch:
        self._busy0, self._own0 = _cpu_busy_jiffies(), self._own_cpu()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0
        busy = (_cpu_busy_jiffies() - self._busy0) / os.sysconf("SC_CLK_TCK")
        self.own_cpu_s = self._own_cpu() - self._own0
        self.other_cores = max(0.0, busy - self.own_cpu_s) / self.seconds if self.seconds > 0 else 0.0


class Run:
    """One warm-up or timed run of a ``Repeats`` schedule."""

    def __init__(self, schedule: Repeats, index: int) -> None:
        self._schedule = schedule
        self.warmup = index < schedule.warmup
        if self.warmup:
            self.label = f"warmup {index + 1}/{schedule.warmup}"
        else:
            self.label = f"{schedule.timed_word} {index - schedule.warmup + 1}/{schedule.repeats}"
        self.seconds = self.other_cores = 0.0

    @contextlib.contextmanager
    def timed(self) -> Iterator[Stopwatch]:
        """Time the block and file the result under warm-up or timed runs."""
        with Stopwatch() as watch:
            yield watch
        self.seconds, self.other_cores = watch.seconds, watch.other_cores
        self._schedule.record(self)


class Repeats:
    """``warmup`` untimed runs (they pay one-time costs: allocation, caches) then ``repeats`` timed ones.

    ``for run in Repeats(...): with run.timed(): ...``; the median of the timed runs is what the
    scripts report, each run's contention (``other_cores``) is kept beside it.
    """

    def __init__(self, warmup: int, repeats: int, timed_word: str = "repeat") -> None:
        self.warmup, self.repeats, self.timed_word = warmup, repeats, timed_word
        self.times: list[float] = []
        self.other_cores: list[float] = []
        self.warmup_times: list[float] = []

    def __iter__(self) -> Iterator[Run]:
        return (Run(self, i) for i in range(self.warmup + self.repeats))

    def record(self, run: Run) -> None:
        if run.warmup:
            self.warmup_times.append(run.seconds)
        else:
            self.times.append(run.seconds)
            self.other_cores.append(run.other_cores)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


# =========================================================================================
# peak memory (RSS; KiB from the kernel, MiB in the reports)
# =========================================================================================
def current_rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def max_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def _reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakRSS:
    """Peak RSS of this process over what it held right after building the model.

    Create it before the build, call ``built()`` right after. The kernel's high-water mark is then
    reset (``/proc/self/clear_refs`` <- 5), so a transient during import/build above the post-build
    RSS cannot hide part of the measured peak; where the reset is refused, the baseline falls back
    to the (conservative) ``ru_maxrss`` delta.
    """

    def __init__(self) -> None:
        self.before_kib = current_rss_kib()

    def built(self) -> None:
        self.after_build_kib = current_rss_kib()
        self.maxrss_build_kib = max_rss_kib()
        self.was_reset = _reset_peak_rss()
        self.baseline_kib = self.after_build_kib if self.was_reset else max_rss_kib()

    def over_build_mib(self) -> float:
        """Peak since ``built()`` (or the last ``phase_peak_mib``) minus the post-build RSS."""
        return max(0, max_rss_kib() - self.baseline_kib) / 1024

    def phase_peak_mib(self) -> float:
        """``over_build_mib`` of the phase that just ended; restarts the high-water mark for the next one."""
        peak = self.over_build_mib()
        if self.was_reset:
            _reset_peak_rss()
        return peak

    def peak_rss_mib(self, over_build_mib: float) -> float:
        """Absolute peak of the process, the build's own peak included."""
        return max(self.maxrss_build_kib, self.baseline_kib + over_build_mib * 1024) / 1024

    def build_report(self) -> dict[str, Any]:
        return {
            "peak_rss_reset_after_build": self.was_reset,
            "rss_before_build_mib": self.before_kib / 1024,
            "rss_after_build_mib": self.after_build_kib / 1024,
            "build_rss_mib": (self.after_build_kib - self.before_kib) / 1024,
            "maxrss_at_end_of_build_mib": self.maxrss_build_kib / 1024,
        }


# =========================================================================================
# one child process per configuration
# =========================================================================================
def emit(result: dict[str, Any]) -> None:
    """The child's result: one marked JSON line on stdout (anything else there is ignored)."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


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
) -> int:
    """The whole parent of a script with ``--configs``: ``header``, one child per configuration (given the
    parent's ``options``; ``progress`` says how each went), torch's facts, the script's ``report`` (its
    tables; returns its extra JSON sections), the contention warning and the JSON report with ``meta``.
    Exit code 1 if any configuration failed.
    """
    started = time.perf_counter()
    print("\n".join(header), flush=True)
    flags = child_flags(args, options)
    jobs = {config: ["--child", "--configs", config, *flags] for config in args.configs}
    results, failed = run_children(script, jobs, started, progress, contention, detail)
    if not results:
        print("ERROR: every configuration failed.", file=sys.stderr)
        return 1
    env = results[0]["env"]
    print(torch_line(env))
    sections = report(results, failed)
    contention.warn(results)
    finish(started, args.json, env, meta, results=results, failed=failed, **sections)
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
# command line
# =========================================================================================
def make_parser(doc: str, configs_help: str | None = None) -> argparse.ArgumentParser:
    """The script's parser, described by its docstring's first paragraph; with ``configs_help``, ``--configs``."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    if configs_help:
        ap.add_argument("--configs", default=None, help=configs_help)
    return ap


def add_run_options(
    ap: argparse.ArgumentParser, *, runs: str, repeats: int | None, repeats_help: str, seed: bool = True
) -> None:
    """The options every timing script has; ``runs`` names what one run is ("forward", "step")."""
    ap.add_argument("--warmup", type=int, default=1, help=f"untimed {runs}s before timing (default 1)")
    ap.add_argument("--repeats", type=int, default=repeats, help=f"timed {runs}s; the median is reported ({repeats_help})")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    ap.add_argument("--text-len", type=int, default=20, help="words (tokens) per expression (default 20)")
    ap.add_argument("--real-words", type=int, default=12, help="unmasked words (tokens) per expression (default 12)")
    if seed:
        ap.add_argument("--seed", type=int, default=0, help="seed of weights, inputs and dropout (default 0)")
    ap.add_argument("--json", default=None, help="also write all numbers to this JSON file")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)


def fill_defaults(args: argparse.Namespace, defaults: dict[str, Any]) -> None:
    """Options left unset take ``defaults`` (which differ with --quick)."""
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def check_options(ap: argparse.ArgumentParser, args: argparse.Namespace, positive: str, configs: Any = None) -> None:
    """The checks every timing script needs; ``positive`` names options (dests) that must be >= 1.

    With ``configs`` (the known names), ``--configs a,b`` becomes the list ``args.configs``, and a
    child must run exactly one of them.
    """
    if configs is not None:
        args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
        unknown = [c for c in args.configs if c not in configs]
        if unknown or not args.configs:
            ap.error(f"--configs: unknown {unknown or 'empty list'}; choose from {','.join(configs)}")
        if args.child and len(args.configs) != 1:
            ap.error("--child runs exactly one configuration")
    if args.repeats < 1 or args.warmup < 0:
        ap.error("need --repeats >= 1 and --warmup >= 0")
    if not 1 <= args.real_words <= args.text_len:
        ap.error("--real-words must be between 1 and --text-len")
    for name in positive.split():
        value = getattr(args, name)
        if min(value if isinstance(value, list) else [value]) < 1:
            ap.error(f"--{name.replace('_', '-')} must be positive")


def dispatch(args: argparse.Namespace, run_parent: Callable[[argparse.Namespace], int], **children: Any) -> int:
    """Run the child a hidden flag asks for (``child=run_child``: ``--child``), else the parent; the exit code."""
    for flag, run_child in children.items():
        if getattr(args, flag):
            run_child(args)
            return 0
    return run_parent(args)


# =========================================================================================
# report: tables and the JSON file
# =========================================================================================
def print_table(titles: list[str], align: str, rows: list[list[Any]]) -> None:
    """A markdown table; ``align`` has one letter per column, ``l`` or ``r``."""
    print("| " + " | ".join(titles) + " |")
    print("|" + "|".join("---:" if a == "r" else "---" for a in align) + "|")
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")


def bf16_verdict(ratio: float) -> str:
    """bf16/fp32 time ratio in words: without native bf16 (AVX2-only CPUs) autocast is slower."""
    return "bf16 SLOWER than fp32" if ratio > 1 else "bf16 faster"


def write_json(path: Any, payload: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
    print(f"wrote {path}")


def finish(started: float, json_path: Any, env: dict[str, Any], meta: dict[str, Any], **sections: Any) -> None:
    """Total wall time and the parent's own peak (it must stay small), then the JSON report.

    ``meta`` holds the script's settings; torch's and the machine's facts and the total time are
    added in front and behind, the ``sections`` (results, failures, ratios...) follow it.
    """
    total = time.perf_counter() - started
    print(f"\nTotal wall time {fmt_secs(total)} (parent peak RSS {max_rss_kib() / 1024:.0f} MiB).", flush=True)
    if json_path:
        write_json(json_path, {"meta": {**env, **machine_meta(), **meta, "total_wall_s": total}, **sections})
