"""Reporting: tables, the bf16 verdict, the JSON file."""

from __future__ import annotations

import json
import time
from typing import Any

from .machine import fmt_secs, machine_meta
from .timing import max_rss_kib


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
