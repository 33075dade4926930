#!/usr/bin/env python
"""CPU inference latency and peak memory of an image LAVT model (image encoder + decoder).

Measures, for every (implementation, batch size, precision):

* latency: ``time.perf_counter`` around one full ``model(image, text_features=..., text_mask=...)``
  call (language-aware Swin + PWAMs + gates + decoder + final upsampling), eval mode, under
  ``torch.inference_mode``; fp32 or ``torch.autocast("cpu", dtype=torch.bfloat16)``. The text
  encoder is NOT timed: the model gets random word features (B, L, lang_dim) and a word mask.
  s/image = median batch time over the repeats / batch size.
* memory: every configuration runs in a fresh subprocess (this script re-invoked with the
  hidden ``--child`` flag); the reported figure is the increase of the peak RSS
  (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, KiB on Linux) over the peak RSS right after
  the model was built. Model build RSS (RSS after build - RSS before build) is reported too.

Implementations:

* ``ours``: the library as is (window attention and PWAM attention through
  ``scaled_dot_product_attention``, shift mask built once per feature-map size and cached,
  instance norm as ``var_mean`` on (B, N, C) tokens).
* ``winograd``: ``ours`` after ``model.use_winograd(True)`` -- the decoder's 3x3 convolutions
  through NNPACK's Winograd kernel, which is how ``lavt predict`` / ``Predictor`` run on CPU
  unless asked for ``exact`` (logits within ~1e-5 relative of the direct convolution; the
  start-up check prints the difference).
* ``eager``: the same model with the computational structure of the official code, patched in
  *this script only* (no library edit): window attention as ``q * scale @ k^T + relative bias
  (+ shift mask) -> softmax -> @ v`` with the shift mask rebuilt on every forward (region ids on
  the padded canvas, -100 between different regions); PWAM attention as explicit
  matmul / softmax with the ``1e4 * mask - 1e4`` additive mask; InstanceNorm as
  ``F.instance_norm`` on the (B, C, N) transpose, as an ``InstanceNorm1d`` after a ``Conv1d``
  would. It computes the same function (checked at start-up, fp32, max |diff| < 1e-4); it only
  exists to show what SDPA + mask caching buy.

Weights are random (seeded); speed does not depend on their values.
Run ``python benchmarks/bench_inference.py --help`` for the options; see benchmarks/README.md.
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
from typing import TYPE_CHECKING, Any

from lavt.runtime.machine import cpu_flags, cpu_model  # torch-free: the parent must not import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

if TYPE_CHECKING:
    from torch import Tensor

# torch / lavt are imported only in the child processes (see ``_import_torch``): the parent is a
# lean orchestrator. This matters for the memory numbers: a child started by fork/vfork + exec
# inherits the parent's RSS high-water mark in ``ru_maxrss`` (at exec the kernel folds the old
# address space's high-water mark into the process's maxrss), so a parent holding torch + a
# model (~950 MiB) would hide every child's own peak.
torch = F = swin_mod = LAVTConfig = LAVT = PWAM = TokenNorm = None  # set by _import_torch()
_ORIG: dict[str, Any] = {}


def _import_torch() -> None:
    global torch, F, swin_mod, LAVTConfig, LAVT, PWAM, TokenNorm
    if torch is not None:
        return
    import torch as _torch
    import torch.nn.functional as _F

    import lavt.models.swin as _swin
    from lavt.config import LAVTConfig as _Cfg
    from lavt.models.lavt import LAVT as _LAVT
    from lavt.models.pwam import PWAM as _PWAM
    from lavt.models.pwam import TokenNorm as _TokenNorm

    torch, F, swin_mod, LAVTConfig, LAVT, PWAM, TokenNorm = _torch, _F, _swin, _Cfg, _LAVT, _PWAM, _TokenNorm
    _ORIG.update(
        window_attention=swin_mod.window_attention,
        pwam_attend=PWAM.attend,
        token_norm_forward=TokenNorm.forward,
    )


CHECK_TOL = 1e-4
IMPLS = ("ours", "winograd", "eager")
RESULT_PREFIX = "@@BENCH_RESULT@@ "


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# =========================================================================================
# "eager" baseline: the official computational structure, monkeypatched in this script only
# =========================================================================================
EAGER_CALLS = {"window_attention": 0, "shift_masks_built": 0, "pwam_attend": 0, "instance_norm": 0}


def _eager_window_partition(x: Tensor, window: tuple[int, int, int]) -> Tensor:
    """(B, D, H, W, C) -> (B * nW, wd*wh*ww, C)."""
    b, d, h, w, c = x.shape
    wd, wh, ww = window
    x = x.view(b, d // wd, wd, h // wh, wh, w // ww, ww, c)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).contiguous().view(-1, wd * wh * ww, c)


def _eager_window_reverse(x: Tensor, window: tuple[int, int, int], b: int, d: int, h: int, w: int) -> Tensor:
    wd, wh, ww = window
    x = x.view(b, d // wd, h // wh, w // ww, wd, wh, ww, -1)
    return x.permute(0, 1, 4, 2, 5, 3, 6, 7).contiguous().view(b, d, h, w, -1)


def _eager_shift_mask(
    padded: tuple[int, int, int], window: tuple[int, int, int], shift: tuple[int, int, int], device: torch.device
) -> Tensor:
    """Built from scratch on every call (official): label the regions of the padded canvas that
    the cyclic shift glues together, partition into windows, -100 where region ids differ."""
    EAGER_CALLS["shift_masks_built"] += 1
    img_mask = torch.zeros((1, *padded, 1), device=device)
    slices = []
    for w, s in zip(window, shift):
        slices.append((slice(0, -w), slice(-w, -s), slice(-s, None)) if s > 0 else (slice(None),))
    cnt = 0
    for sd in slices[0]:
        for sh in slices[1]:
            for sw in slices[2]:
                img_mask[:, sd, sh, sw, :] = cnt
                cnt += 1
    mask_windows = _eager_window_partition(img_mask, window).squeeze(-1)  # (nW, N)
    attn_mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
    return attn_mask.masked_fill(attn_mask != 0, float(-100.0)).masked_fill(attn_mask == 0, float(0.0))


def eager_window_attention(
    x: Tensor,
    qkv: Any,  # nn.Linear
    proj: Any,
    position_bias: Tensor,
    window: tuple[int, int, int],
    shift: tuple[int, int, int],
    num_heads: int,
    attention_dropout: float = 0.0,
    dropout: float = 0.0,
    training: bool = False,
) -> Tensor:
    """Drop-in for ``lavt.models.swin.window_attention`` with explicit attention maths."""
    EAGER_CALLS["window_attention"] += 1
    b, d, h, w, c = x.shape
    pads = [(-size) % win for size, win in zip((d, h, w), window)]
    if any(pads):
        x = F.pad(x, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))
    dp, hp, wp = d + pads[0], h + pads[1], w + pads[2]
    shifted = any(s > 0 for s in shift)
    if shifted:
        x = torch.roll(x, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
        attn_mask = _eager_shift_mask((dp, hp, wp), window, shift, x.device)  # rebuilt every forward
    else:
        attn_mask = None

    windows = _eager_window_partition(x, window)  # (B_, N, C)
    b_, n, _ = windows.shape
    head_dim = c // num_heads
    qkv_out = qkv(windows).reshape(b_, n, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv_out[0], qkv_out[1], qkv_out[2]  # (B_, heads, N, hd)
    q = q * head_dim**-0.5
    attn = q @ k.transpose(-2, -1)
    attn = attn + position_bias.unsqueeze(0)
    if attn_mask is not None:
        n_w = attn_mask.shape[0]
        attn = attn.view(b_ // n_w, n_w, num_heads, n, n) + attn_mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, num_heads, n, n)
    attn = F.softmax(attn, dim=-1)
    attn = F.dropout(attn, p=attention_dropout, training=training)
    out = (attn @ v).transpose(1, 2).reshape(b_, n, c)
    out = F.dropout(proj(out), p=dropout, training=training)

    out = _eager_window_reverse(out, window, b, dp, hp, wp)
    if shifted:
        out = torch.roll(out, shifts=tuple(shift), dims=(1, 2, 3))
    return out[:, :d, :h, :w].contiguous()


def eager_pwam_attend(self: Any, x: Tensor, words: Tensor, word_mask: Tensor) -> Tensor:
    """Drop-in for ``PWAM.attend``: explicit matmul / softmax with the official -1e4 mask."""
    EAGER_CALLS["pwam_attend"] += 1
    b, n, c = x.shape
    h = self.num_heads
    n_words = words.shape[1]
    mask = word_mask.to(x.dtype)  # (B, L)
    query = self.query_norm(self.query(x))  # (B, N, C)
    key = self.key(words) * mask[..., None]  # (B, L, C)
    value = self.value(words) * mask[..., None]
    query = query.reshape(b, n, h, c // h).permute(0, 2, 1, 3)  # (B, h, N, c/h)
    key = key.reshape(b, n_words, h, c // h).permute(0, 2, 3, 1)  # (B, h, c/h, L)
    value = value.reshape(b, n_words, h, c // h).permute(0, 2, 1, 3)  # (B, h, L, c/h)
    sim = torch.matmul(query, key) * (c**-0.5)  # (B, h, N, L)
    sim = sim + (1e4 * mask[:, None, None, :] - 1e4)
    sim = F.softmax(sim, dim=-1)
    out = torch.matmul(sim, value)  # (B, h, N, c/h)
    out = out.permute(0, 2, 1, 3).reshape(b, n, c)
    return self.out_norm(self.out(out))


def eager_token_norm_forward(self: Any, x: Tensor) -> Tensor:
    if self.kind == "instance":  # InstanceNorm1d on the (B, C, N) layout a Conv1d produces
        EAGER_CALLS["instance_norm"] += 1
        return F.instance_norm(x.transpose(1, 2), eps=self.eps).transpose(1, 2)
    return _ORIG["token_norm_forward"](self, x)


@contextlib.contextmanager
def implementation(impl: str):
    """Within the block, the model runs as ``impl`` ("ours" = library code, "eager" = patched)."""
    if impl in ("ours", "winograd"):  # winograd = ours + model.use_winograd(True), set on the model
        yield
        return
    if impl != "eager":
        raise ValueError(impl)
    swin_mod.window_attention = eager_window_attention  # looked up as a global by WindowAttention2d/3d
    PWAM.attend = eager_pwam_attend
    TokenNorm.forward = eager_token_norm_forward
    try:
        yield
    finally:
        swin_mod.window_attention = _ORIG["window_attention"]
        PWAM.attend = _ORIG["pwam_attend"]
        TokenNorm.forward = _ORIG["token_norm_forward"]


# =========================================================================================
# shared helpers
# =========================================================================================
def build_model(preset: str, window: int, seed: int = 0) -> Any:
    torch.manual_seed(seed)
    return LAVT(LAVTConfig.from_preset(preset, window)).eval()


def make_inputs(batch: int, height: int, width: int, lang_dim: int, text_len: int, real_words: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 3, height, width, generator=g)
    words = torch.randn(batch, text_len, lang_dim, generator=g)
    mask = torch.zeros(batch, text_len, dtype=torch.long)
    mask[:, :real_words] = 1
    return image, words, mask


def autocast_ctx(precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    raise ValueError(precision)


def current_rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def max_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cpu_busy_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    total = sum(vals[:8])  # guest time is already counted in user
    return total - idle, total


def self_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def children_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def torch_env() -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "capability": torch.backends.cpu.get_cpu_capability(),
    }


def emit(result: dict[str, Any]) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# =========================================================================================
# child processes
# =========================================================================================
def run_child(args: argparse.Namespace) -> None:
    """One (impl, batch, precision): build, warm up, time, measure peak RSS."""
    _import_torch()
    if args.threads:
        torch.set_num_threads(args.threads)
    impl, batch, precision = args.impl, args.batch_sizes[0], args.precisions[0]
    tag = f"[{impl} b={batch} {precision}]"
    rss_before = current_rss_kib()
    model = build_model(args.preset, args.window)
    if impl == "winograd" and not model.use_winograd(True):
        raise RuntimeError("this PyTorch build / CPU has no NNPACK: the winograd implementation cannot run")
    rss_model = current_rss_kib()
    maxrss_build = max_rss_kib()
    # Start the peak from here: otherwise a transient during import/build that exceeds the
    # post-build RSS would hide part of the inference peak.
    was_reset = reset_peak_rss()
    maxrss_model = max_rss_kib()
    n_params = sum(p.numel() for p in model.parameters())

    image, words, mask = make_inputs(
        batch, args.size, args.size, model.config.lang_dim, args.text_len, args.real_words
    )
    times: list[float] = []
    other_cores: list[float] = []  # CPU time other processes took during each timed forward
    hz = os.sysconf("SC_CLK_TCK")
    with implementation(impl), torch.inference_mode():
        for i in range(args.warmup + args.repeats):
            busy0, _ = cpu_busy_jiffies()
            own0 = self_cpu_seconds()
            t0 = time.perf_counter()
            with autocast_ctx(precision):
                out = model(image, text_features=words, text_mask=mask)
            dt = time.perf_counter() - t0
            busy1, _ = cpu_busy_jiffies()
            other = max(0.0, (busy1 - busy0) / hz - (self_cpu_seconds() - own0)) / dt
            kind = f"warmup {i + 1}/{args.warmup}" if i < args.warmup else f"repeat {i - args.warmup + 1}/{args.repeats}"
            log(f"    {tag} {kind}: {dt:.2f} s ({dt / batch:.2f} s/image; other processes: {other:.2f} cores)")
            if i >= args.warmup:
                times.append(dt)
                other_cores.append(other)
            del out
    maxrss_end = max_rss_kib()
    if impl == "eager" and EAGER_CALLS["window_attention"] == 0:
        raise RuntimeError("eager patch did not take effect")
    # Baseline: RSS right after model construction. With the reset, ru_maxrss now only knows
    # peaks from after that point; without it, fall back to the (conservative) ru_maxrss delta.
    baseline = rss_model if was_reset else maxrss_model
    median = statistics.median(times)
    emit(
        {
            "impl": impl,
            "batch": batch,
            "precision": precision,
            "size": args.size,
            "preset": args.preset,
            "window": args.window,
            "threads": torch.get_num_threads(),
            "times_s": times,
            "other_cpu_cores_per_repeat": other_cores,
            "min_batch_s": min(times),
            "median_batch_s": median,
            "s_per_image": median / batch,
            "images_per_s": batch / median,
            "peak_over_model_mib": max(0, maxrss_end - baseline) / 1024,
            "peak_rss_mib": maxrss_end / 1024,
            "peak_rss_reset_after_build": was_reset,
            "model_build_rss_mib": (rss_model - rss_before) / 1024,
            "rss_before_build_mib": rss_before / 1024,
            "rss_after_build_mib": rss_model / 1024,
            "maxrss_at_end_of_build_mib": maxrss_build / 1024,
            "params_m": n_params / 1e6,
            "eager_calls": dict(EAGER_CALLS) if impl == "eager" else None,
        }
    )


def run_check_child(args: argparse.Namespace) -> None:
    _import_torch()
    if args.threads:
        torch.set_num_threads(args.threads)
    emit({"env": torch_env(), "check": equivalence_check(args)})


def equivalence_check(args: argparse.Namespace) -> dict[str, Any]:
    """ours vs eager on a small input (padding at every stage, shifted windows, masked words)."""
    p, w = LAVTConfig.from_preset(args.preset, args.window).patch_size, args.window
    h_img, w_img = p * (2 * w + 2), p * (3 * w - 2)  # not multiples of the window at any stage
    model = build_model(args.preset, args.window)
    image, words, mask = make_inputs(2, h_img, w_img, model.config.lang_dim, args.text_len, args.real_words)
    short = max(1, args.real_words // 2)
    mask[1, :] = 0
    mask[1, :short] = 1  # a second, shorter expression
    outs: dict[tuple[str, str], tuple[list[Tensor], Tensor]] = {}
    for k in EAGER_CALLS:
        EAGER_CALLS[k] = 0
    captured: list[list[Tensor]] = []
    hook = model.decoder.register_forward_hook(lambda mod, inputs, output: captured.append(list(inputs[0])))
    precisions = ("fp32", "bf16") if "bf16" in args.precisions else ("fp32",)
    with torch.inference_mode():
        for precision in precisions:
            for impl in ("ours", "eager", "winograd"):
                model.use_winograd(impl == "winograd")
                with implementation(impl), autocast_ctx(precision):
                    logits = model(image, text_features=words, text_mask=mask)
                outs[impl, precision] = ([f.float() for f in captured.pop()], logits.float())
    model.use_winograd(False)
    hook.remove()
    calls = dict(EAGER_CALLS)

    def diff(a, b) -> tuple[float, float]:
        (fa, la), (fb, lb) = a, b
        return max((x - y).abs().max().item() for x, y in zip(fa, fb)), (la - lb).abs().max().item()

    f32_feat, f32_logit = diff(outs["ours", "fp32"], outs["eager", "fp32"])
    _, winograd_logit = diff(outs["winograd", "fp32"], outs["eager", "fp32"])
    nan = float("nan")
    bf_feat, bf_logit = diff(outs["ours", "bf16"], outs["eager", "bf16"]) if "bf16" in precisions else (nan, nan)
    _, prec_logit = diff(outs["ours", "fp32"], outs["ours", "bf16"]) if "bf16" in precisions else (nan, nan)
    ok = (
        max(f32_feat, f32_logit, winograd_logit) < CHECK_TOL
        and calls["window_attention"] > 0
        and calls["pwam_attend"] > 0
    )
    return {
        "input": f"batch 2, image {h_img}x{w_img}, {args.text_len} words ({args.real_words} and {short} real)",
        "fp32_max_abs_diff_stage_features": f32_feat,
        "fp32_max_abs_diff_logits": f32_logit,
        "fp32_max_abs_diff_logits_winograd_vs_eager": winograd_logit,
        "max_abs_logit": outs["ours", "fp32"][1].abs().max().item(),
        "max_abs_stage_feature": max(f.abs().max().item() for f in outs["ours", "fp32"][0]),
        "bf16_max_abs_diff_logits_ours_vs_eager": bf_logit,
        "bf16_max_abs_diff_features_ours_vs_eager": bf_feat,
        "fp32_vs_bf16_max_abs_diff_logits_ours": prec_logit,
        "eager_calls": calls,
        "tolerance": CHECK_TOL,
        "passed": ok,
    }


# =========================================================================================
# parent (no torch import: see the note at _import_torch)
# =========================================================================================
def common_flags(args: argparse.Namespace) -> list[str]:
    flags = [
        "--warmup", str(args.warmup), "--repeats", str(args.repeats),
        "--size", str(args.size), "--preset", args.preset, "--window", str(args.window),
        "--text-len", str(args.text_len), "--real-words", str(args.real_words),
    ]  # fmt: skip
    if args.threads:
        flags += ["--threads", str(args.threads)]
    return flags


def spawn(cmd_flags: list[str]) -> tuple[dict[str, Any] | None, dict[str, float]]:
    """Run this script as a child; returns its result and what else the CPUs did meanwhile."""
    busy0, total0 = cpu_busy_jiffies()
    child0 = children_cpu_seconds()
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), *cmd_flags], stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    busy1, total1 = cpu_busy_jiffies()
    child_cpu = children_cpu_seconds() - child0
    hz = os.sysconf("SC_CLK_TCK")
    other = max(0.0, (busy1 - busy0) / hz - child_cpu) / wall if wall > 0 else 0.0
    diag = {"wall_s": wall, "child_cpu_s": child_cpu, "other_cpu_cores": other, "loadavg1_before": load0}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        print(f"ERROR: child {' '.join(cmd_flags)} failed (exit {proc.returncode})", file=sys.stderr)
        print(proc.stdout, file=sys.stderr)
        return None, diag
    return json.loads(lines[-1][len(RESULT_PREFIX) :]), diag


def fmt_secs(s: float) -> str:
    return f"{int(s // 60)}m{s % 60:04.1f}s"


def run_parent(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    impls = list(IMPLS) if args.impl == "all" else [args.impl]

    log("checking (in a child process) that the eager baseline computes the same function as ours ...")
    out, _ = spawn(["--child-check", "--precisions", *args.precisions, *common_flags(args)])
    if out is None:
        return 1
    env, check = out["env"], out["check"]
    header = [
        f"# LAVT inference benchmark: Swin-{args.preset} window {args.window}, {args.size}x{args.size}, CPU, eval, "
        f"torch.inference_mode, random weights",
        f"torch {env['torch']} | threads {env['threads']} | CPU: {cpu_model()} "
        f"({os.cpu_count()} logical cores; flags: {cpu_flags()}; ATen capability {env['capability']})",
        f"python {platform.python_version()} | {platform.platform()}",
        f"Timed: image encoder (language-aware Swin + PWAM + gates) + decoder + final upsampling, one forward per "
        f"measurement. NOT timed: the text encoder (the model gets random word features (B, {args.text_len}, "
        f"lang_dim), {args.real_words} real words per expression).",
        f"warmup {args.warmup}, repeats {args.repeats}; s/image = median batch time / batch; peak MiB over model = "
        f"peak RSS (ru_maxrss, high-water mark reset after the build) minus RSS right after model construction; "
        f"every configuration runs in a fresh process.",
    ]
    for line in header:
        print(line, flush=True)
    print(
        f"\nEquivalence check (fp32, {check['input']}): max |ours - eager| = "
        f"{check['fp32_max_abs_diff_stage_features']:.2e} on stage features (max |feature| "
        f"{check['max_abs_stage_feature']:.2f}), {check['fp32_max_abs_diff_logits']:.2e} on logits (max |logit| "
        f"{check['max_abs_logit']:.2f}); winograd vs eager {check['fp32_max_abs_diff_logits_winograd_vs_eager']:.2e} "
        f"on logits; tolerance {CHECK_TOL:.0e} -> {'PASSED' if check['passed'] else 'FAILED'}"
    )
    bf16_info = (
        f"bf16 autocast: ours vs eager logits {check['bf16_max_abs_diff_logits_ours_vs_eager']:.2e}; "
        f"ours fp32 vs bf16 logits {check['fp32_vs_bf16_max_abs_diff_logits_ours']:.2e}; "
        if "bf16" in args.precisions
        else ""
    )
    print(f"  (info, {bf16_info}eager patch hits: {check['eager_calls']})", flush=True)
    if not check["passed"]:
        print("ERROR: eager baseline does not match ours; refusing to time it.", file=sys.stderr)
        return 1

    # bf16 autocast never takes the Winograd path (it is an fp32 kernel): no winograd/bf16 runs
    configs = [
        (impl, b, p) for b in args.batch_sizes for p in args.precisions for impl in impls
        if not (impl == "winograd" and p != "fp32")
    ]
    results: list[dict[str, Any]] = []
    for idx, (impl, batch, precision) in enumerate(configs, 1):
        log(f"[{idx}/{len(configs)}] {impl} batch={batch} {precision} (elapsed {fmt_secs(time.perf_counter() - t_start)})")
        flags = ["--child", "--impl", impl, "--batch-sizes", str(batch), "--precisions", precision, *common_flags(args)]
        res, diag = spawn(flags)
        if res is None:
            return 1
        res["diagnostics"] = diag
        results.append(res)
        log(
            f"    -> {res['s_per_image']:.3f} s/image, {res['images_per_s']:.3f} images/s, "
            f"peak +{res['peak_over_model_mib']:.0f} MiB over model; other processes used up to "
            f"{max(res['other_cpu_cores_per_repeat']):.2f} cores during the timed forwards"
        )

    print("\n| impl | batch | precision | s/image | images/s | peak MiB over model | other procs' CPU, cores (max over repeats) |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['impl']} | {r['batch']} | {r['precision']} | {r['s_per_image']:.3f} | {r['images_per_s']:.3f} "
            f"| {r['peak_over_model_mib']:.0f} | {max(r['other_cpu_cores_per_repeat']):.2f} |"
        )
    builds = [r["model_build_rss_mib"] for r in results]
    print(
        f"\nModel build RSS: {min(builds):.0f}-{max(builds):.0f} MiB (RSS after - before constructing the model; "
        f"{results[0]['params_m']:.1f} M parameters = {results[0]['params_m'] * 4 / 1.048576:.0f} MiB fp32); RSS after "
        f"build {results[0]['rss_after_build_mib']:.0f} MiB incl. the Python/torch runtime "
        f"({results[0]['rss_before_build_mib']:.0f} MiB before)."
    )
    busy = max(max(r["other_cpu_cores_per_repeat"]) for r in results)
    if busy > 0.2:
        print(
            f"WARNING: other processes used up to {busy:.2f} CPU cores during the measurements "
            f"(last column): those latencies are inflated; rerun on an idle machine for clean numbers."
        )
    by_key = {(r["impl"], r["batch"], r["precision"]): r for r in results}
    ratios = []
    if "eager" in impls and len(impls) > 1:
        print()
        for impl in (i for i in impls if i != "eager"):
            for batch in args.batch_sizes:
                for precision in args.precisions:
                    if (impl, batch, precision) not in by_key:
                        continue  # not run (winograd is fp32 only)
                    o, e = by_key[(impl, batch, precision)], by_key[("eager", batch, precision)]
                    ratio = o["s_per_image"] / e["s_per_image"]
                    ratios.append({"impl": impl, "batch": batch, "precision": precision, "over_eager": ratio})
                    print(
                        f"{impl}/eager latency ratio, batch {batch}, {precision}: {ratio:.3f} "
                        f"({impl + ' faster' if ratio < 1 else impl + ' NOT faster'}; speedup {1 / ratio:.2f}x); "
                        f"peak MiB over model: {impl} {o['peak_over_model_mib']:.0f}, eager {e['peak_over_model_mib']:.0f}"
                    )
    if "fp32" in args.precisions and "bf16" in args.precisions:
        print()
        for impl in impls:
            for batch in args.batch_sizes:
                if (impl, batch, "bf16") not in by_key:
                    continue  # not run (winograd is fp32 only)
                f32, bf = by_key[(impl, batch, "fp32")], by_key[(impl, batch, "bf16")]
                ratio = bf["s_per_image"] / f32["s_per_image"]
                print(
                    f"bf16/fp32 latency ratio, {impl}, batch {batch}: {ratio:.3f} "
                    f"({'bf16 SLOWER than fp32' if ratio > 1 else 'bf16 faster'})"
                )
    total = time.perf_counter() - t_start
    print(f"\nTotal wall time {fmt_secs(total)} (parent peak RSS {max_rss_kib() / 1024:.0f} MiB).", flush=True)

    if args.json:
        payload = {
            "meta": {
                **env,
                "cpu": cpu_model(),
                "cpu_flags": cpu_flags(),
                "logical_cores": os.cpu_count(),
                "argv": sys.argv[1:],
                "preset": args.preset,
                "window": args.window,
                "size": args.size,
                "warmup": args.warmup,
                "repeats": args.repeats,
                "text_len": args.text_len,
                "real_words": args.real_words,
                "timed": "image encoder + decoder (text encoder excluded)",
                "total_wall_s": total,
            },
            "check": check,
            "results": results,
            "latency_over_eager": ratios,
        }
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=2)
        print(f"wrote {args.json}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument(
        "--precisions", nargs="+", choices=["fp32", "bf16"], default=None, help="default: fp32 bf16 (--quick: fp32)"
    )
    ap.add_argument("--warmup", type=int, default=1, help="untimed forwards before timing (default 1)")
    ap.add_argument("--repeats", type=int, default=3, help="timed forwards; the median is reported (default 3)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    ap.add_argument("--size", type=int, default=480, help="square image side (default 480)")
    ap.add_argument("--preset", default="base", choices=["tiny", "small", "base", "large"])
    ap.add_argument("--window", type=int, default=12)
    ap.add_argument("--text-len", type=int, default=20, help="words per expression (default 20)")
    ap.add_argument("--real-words", type=int, default=12, help="unmasked words per expression (default 12)")
    ap.add_argument("--json", default=None, help="also write all numbers to this JSON file")
    ap.add_argument(
        "--impl", choices=[*IMPLS, "all"], default="all",
        help="ours (exact, the model's default), winograd (ours + Winograd decoder convolutions, as `lavt predict`), "
        "eager (the official computational structure), or all (default)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: preset tiny, size 224, batch 1 and 2, 1 repeat, fp32 unless --precisions is given",
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-check", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.preset, args.size, args.batch_sizes, args.repeats = "tiny", 224, [1, 2], 1
    if args.precisions is None:
        args.precisions = ["fp32"] if args.quick else ["fp32", "bf16"]
    if args.repeats < 1 or args.warmup < 0 or min(args.batch_sizes) < 1:
        ap.error("need --repeats >= 1, --warmup >= 0 and positive batch sizes")
    if not 1 <= args.real_words <= args.text_len:
        ap.error("--real-words must be between 1 and --text-len")
    if args.child and (args.impl == "all" or len(args.batch_sizes) != 1 or len(args.precisions) != 1):
        ap.error("--child runs exactly one (impl, batch, precision)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child_check:
        run_check_child(args)
        return 0
    if args.child:
        run_child(args)
        return 0
    return run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
