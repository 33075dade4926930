"""Which reduced precisions make sense on the device at hand."""

from __future__ import annotations

import contextlib
import functools
import warnings

import torch


class SlowPrecisionWarning(UserWarning):
    """The requested precision works on this device but is much slower than fp32."""


@functools.lru_cache(maxsize=None)
def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN has bfloat16 kernels for this CPU (AVX512 and newer).

    Without them (AVX2-only CPUs) bf16 autocast sends every matmul and the decoder's
    convolutions to PyTorch's generic fallbacks: a Swin-T LAVT training step at 224 px measured
    17x slower than fp32 (benchmarks/README.md).
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # private probe gone: assume a capable CPU, stay quiet
        return True


@functools.lru_cache(maxsize=None)
def cpu_has_fast_fp16() -> bool:
    """Whether oneDNN has float16 kernels for this CPU (AVX512-FP16 / AMX-FP16: Sapphire Rapids and
    newer). Elsewhere fp16 autocast on the CPU works but is emulated."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):
        return True


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX-BF16 in /proc/cpuinfo).

    Where it does, bf16 autocast runs a Swin-B LAVT forward in under half the fp32 time
    (README, inference table) and is the CPU default of :class:`lavt.predict.Predictor`. AVX512
    CPUs without these instructions (oneDNN still reports bf16 "supported" there, by conversion)
    and other machines keep fp32."""
    from .machine import cpu_flags

    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_flags().split()))


def default_inference_precision(device: torch.device | str, exact: bool = False) -> str:
    """The precision :class:`~lavt.predict.Predictor` runs with when none is asked for: bf16 on a
    CPU with native bf16 (masks agree with fp32 on >= 99.9% of pixels, see README), fp32 on other
    CPUs, on GPUs (not measured here) and whenever ``exact`` (the official computation) is asked."""
    if exact or torch.device(device).type != "cpu":
        return "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def warn_if_slow(precision: str, device: torch.device | str) -> bool:
    """Warn (once per call site) when ``precision`` will be emulated slowly on ``device``; True if so."""
    if torch.device(device).type != "cpu":
        return False
    if precision == "bf16" and not cpu_has_fast_bf16():
        message = (
            f"bf16 on this CPU ({torch.backends.cpu.get_cpu_capability()}, no AVX512) has no fast kernels: "
            "expect it to be many times slower than fp32 (17x for a LAVT training step); use fp32"
        )
    elif precision == "fp16" and not cpu_has_fast_fp16():
        message = (
            "fp16 on this CPU has no fast kernels (they need AVX512-FP16 / AMX-FP16): it runs, with a "
            "GradScaler, but emulated and slower than fp32; use fp32 (or bf16 where the CPU has it)"
        )
    else:
        return False
    warnings.warn(message, SlowPrecisionWarning, stacklevel=3)
    return True


def autocast(precision: str, device: torch.device):
    """The autocast context of a precision name: none for "fp32", bf16 / fp16 autocast otherwise."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device.type, dtype=dtype)
