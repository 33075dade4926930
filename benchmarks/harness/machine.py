"""The machine and environment a benchmark reports, offline mode, log lines."""

from __future__ import annotations

import json
import os
import platform
import sys
from typing import Any

from lavt.runtime.machine import (  # torch-free: parents never import torch
    cpu_flags,
    cpu_model,
)

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


def emit(result: dict[str, Any]) -> None:
    """The child's result: one marked JSON line on stdout (anything else there is ignored)."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)
