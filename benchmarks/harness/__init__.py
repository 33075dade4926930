"""Shared benchmark scaffolding: machine header, timed repeats (alone or round-robin), peak RSS, child processes,
tables, JSON report.

Every script in benchmarks/ uses it: the scripts keep their models, data and comparisons, this
module holds how they measure and report, so that all benchmarks measure the same way.

Why a benchmark's parent process never imports torch (and why this module does not either, except
lazily in ``torch_env`` / ``set_threads``, which only the children call): a child started by
fork/vfork + exec inherits the parent's RSS high-water mark in ``ru_maxrss`` (at exec the kernel
folds the old address space's mark into the process's maxrss), so a parent holding torch + a model
(~950 MiB) would hide every child's own peak. All measuring is therefore done in fresh children
(the script re-invoked with a hidden ``--child`` or ``--child-group`` flag) and the parent only orchestrates.

Why latency is timed interleaved, and memory apart: a burst of background load during one
configuration's turn would bias its ratio to the others, so the latency scripts build every
configuration of a group in ONE child and time them round-robin (``RoundRobin``: each one's
warm-up, then rounds in which each takes one turn, the order rotated every round) and take each
ratio from the same rounds (``time_ratio``). Peaks cannot be told apart in one shared
``ru_maxrss``, so a separate memory pass still runs each configuration alone in its own child
(``run_measurement``). The training script keeps one child per configuration for both: its
configurations do not fit in memory side by side. Every timed run records how many CPU cores
*other* processes used meanwhile (``Stopwatch``): a contended result is flagged, never silently
dropped (``Contention``).
"""

from .cli import (
    add_interleave_options,
    add_run_options,
    check_options,
    dispatch,
    fill_defaults,
    make_parser,
)
from .machine import (
    emit,
    log,
    machine_line,
    machine_meta,
    set_threads,
    stay_offline,
    torch_env,
    torch_line,
)
from .processes import (
    Contention,
    child_flags,
    headline,
    method_notes,
    method_sentence,
    print_rounds,
    ratio_record,
    ratio_text,
    run_configs_parent,
    run_measurement,
    settings,
    spawn,
    time_ratio,
)
from .report import bf16_verdict, finish, print_table, write_json
from .timing import (
    PeakRSS,
    Repeats,
    RoundRobin,
    Run,
    current_rss_kib,
    max_rss_kib,
    spread,
)

__all__ = [
    "Contention",
    "PeakRSS",
    "Repeats",
    "RoundRobin",
    "Run",
    "add_interleave_options",
    "add_run_options",
    "bf16_verdict",
    "check_options",
    "child_flags",
    "current_rss_kib",
    "dispatch",
    "emit",
    "fill_defaults",
    "finish",
    "headline",
    "log",
    "machine_line",
    "machine_meta",
    "make_parser",
    "max_rss_kib",
    "method_notes",
    "method_sentence",
    "print_rounds",
    "print_table",
    "ratio_record",
    "ratio_text",
    "run_configs_parent",
    "run_measurement",
    "set_threads",
    "settings",
    "spawn",
    "spread",
    "stay_offline",
    "time_ratio",
    "torch_env",
    "torch_line",
    "write_json",
]
