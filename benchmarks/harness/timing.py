"""Timing (warm-up, repeats, round-robin turns, what else the CPUs did meanwhile) and peak RSS."""

from __future__ import annotations

import contextlib
import os
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

from .machine import CONTENDED_CORES, emit, torch_env


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


def spread(times: list[float]) -> float:
    """(max - min) / median of a configuration's timed runs: how far one run can be trusted."""
    return (max(times) - min(times)) / statistics.median(times)


class RoundRobin:
    """Configurations that take turns in one process: each one's warm-up, then ``repeats`` rounds.

    Every round times each configuration once, the order rotated by one per round (A B C, B C A,
    C A B, ...) so none always runs first; a burst of background load then hits one round of all
    of them instead of all runs of one. ``for name, run in RoundRobin(...): with run.timed(): ...``;
    ``schedules[name]`` holds a configuration's runs (its ``times[i]`` is from round i + 1).
    """

    def __init__(self, names: list[str], warmup: int, repeats: int) -> None:
        self.schedules = {name: Repeats(warmup, repeats, timed_word="round") for name in names}
        self.orders = [names[i % len(names) :] + names[: i % len(names)] for i in range(repeats)]

    def __iter__(self) -> Iterator[tuple[str, Run]]:
        runs = {name: iter(schedule) for name, schedule in self.schedules.items()}
        for name, schedule in self.schedules.items():
            for _ in range(schedule.warmup):
                yield name, next(runs[name])
        for order in self.orders:
            for name in order:
                yield name, next(runs[name])

    def rounds(self) -> list[dict[str, Any]]:
        """Per round: the order, each turn's seconds and other processes' cores, and whether it was contended."""
        out = []
        for index, order in enumerate(self.orders):
            cores = {name: self.schedules[name].other_cores[index] for name in order}
            out.append({
                "round": index + 1,
                "order": order,
                "seconds": {name: self.schedules[name].times[index] for name in order},
                "other_cpu_cores": cores,
                "contended": max(cores.values()) > CONTENDED_CORES,
            })  # fmt: skip
        return out

    def emit(self, timings: dict[str, dict[str, Any]]) -> None:
        """The group child's result: each configuration's timing keys (``timings``) and the rounds."""
        emit({"env": torch_env(), "timings": timings, "rounds": self.rounds()})


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
