"""What CPU this is, for reports and benchmark headers (no torch import: the benchmark parents
must stay torch-free, see benchmarks/README.md)."""

from __future__ import annotations

import platform

# SIMD features that decide LAVT's CPU speed: AVX2/FMA for fp32, AVX512-BF16/AMX for bf16
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni")


def _cpuinfo_field(name: str) -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo; ``platform.processor()`` is empty there)."""
    return _cpuinfo_field("model name") or platform.processor() or "unknown"


def cpu_flags() -> str:
    """The speed-relevant SIMD flags this CPU has, space-separated."""
    flags = _cpuinfo_field("flags")
    if flags is None:
        return "unknown"
    present = set(flags.split())
    return " ".join(w for w in SPEED_FLAGS if w in present) or "none of avx2/avx512/amx"
