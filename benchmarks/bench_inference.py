#!/usr/bin/env python
"""CPU inference latency and peak memory of an image LAVT model (image encoder + decoder).

Measures, for every (implementation, batch size, precision):

* latency: ``time.perf_counter`` around one full ``model(image, text_features=..., text_mask=...)``
  call (language-aware Swin + PWAMs + gates + decoder + final upsampling), eval mode, under
  ``torch.inference_mode``; fp32 or ``torch.autocast("cpu", dtype=torch.bfloat16)``. The text
  encoder is NOT timed: the model gets random word features (B, L, lang_dim) and a word mask.
  s/image = median batch time over the repeats / batch size. All configurations of one batch
  size (implementations x precisions, one model switched between them) are timed in one child
  process, taking turns (round-robin, the order rotated every round), so background load hits
  all of them alike and each ratio is also taken round by round; ``--separate`` times each
  alone instead.
* memory: a separate pass runs every configuration alone in a fresh subprocess (this script
  re-invoked with the hidden ``--child`` flag) for warm-up + 1 forward (with ``--separate``,
  that child is the timing one too); the reported figure is the increase of the peak RSS
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
* ``onnxruntime``: the same model (same seed) exported by ``lavt export`` (``lavt.export.onnx``,
  exact fp32 graph; ``int8``: its ONNX Runtime dynamic quantisation, int8 MatMul weights) and run by
  ONNX Runtime's CPU provider with ``--threads`` intra-op threads; inputs as numpy arrays. The export
  is made once per run, in a child process, into ``--onnx-dir`` (default: a temporary folder).
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
import inspect
import os
import sys
import time
from typing import TYPE_CHECKING, Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/ is not a package
import harness  # noqa: E402  (torch-free: the parent must not import torch, see harness.py)

harness.stay_offline()

if TYPE_CHECKING:
    from torch import Tensor

# torch / lavt are imported only in the child processes (see ``_import_torch``): the parent is a
# lean orchestrator, because a child inherits the parent's RSS high-water mark (harness.py).
torch = F = swin_mod = LAVTConfig = LAVT = PWAM = TokenNorm = autocast = None  # set by _import_torch()
_ORIG: dict[str, Any] = {}
CPU = None  # torch.device("cpu"), set by _import_torch()


def _import_torch() -> None:
    global torch, F, swin_mod, LAVTConfig, LAVT, PWAM, TokenNorm, autocast, CPU
    if torch is not None:
        return
    import torch as _torch
    import torch.nn.functional as _F

    import lavt.models.swin as _swin
    from lavt.config import LAVTConfig as _Cfg
    from lavt.models.lavt import LAVT as _LAVT
    from lavt.models.pwam import PWAM as _PWAM
    from lavt.models.pwam import TokenNorm as _TokenNorm
    from lavt.runtime.precision import (
        autocast as _autocast,  # what the trainer and Predictor use
    )

    torch, F, swin_mod, LAVTConfig, LAVT, PWAM, TokenNorm = _torch, _F, _swin, _Cfg, _LAVT, _PWAM, _TokenNorm
    autocast, CPU = _autocast, _torch.device("cpu")
    _ORIG.update(
        window_attention=swin_mod.window_attention,
        pwam_attend=PWAM.attend,
        token_norm_forward=TokenNorm.forward,
    )
    library_params = list(inspect.signature(swin_mod.window_attention).parameters)
    if list(inspect.signature(eager_window_attention).parameters) != library_params:
        raise RuntimeError(f"eager_window_attention no longer takes the library's parameters {library_params}")


CHECK_TOL = 1e-4
IMPLS = ("ours", "winograd", "eager", "onnxruntime")
TORCH_PRECISIONS = ("fp32", "bf16")  # autocast; int8 is an ONNX Runtime graph only


# =========================================================================================
# "eager" baseline: the official computational structure, monkeypatched in this script only.
# It deliberately does NOT reuse lavt.models.swin (partition helpers, cached masks, SDPA): it is
# frozen to the official code so that optimisations of the library never leak into the baseline
# they are measured against. Only the interface is shared, because it is patched in its place.
# =========================================================================================
EAGER_CALLS = {"window_attention": 0, "shift_masks_built": 0, "pwam_attend": 0, "instance_norm": 0}


def _eager_window_partition(x: Tensor, window: tuple[int, int, int]) -> Tensor:
    """(B, D, H, W, C) -> (B * nW, wd*wh*ww, C), the official ``window_partition`` (contiguous copy)."""
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


def eager_window_attention(  # the parameters of swin.window_attention (checked in _import_torch)
    x: Tensor, qkv: Any, proj: Any, position_bias: Tensor, window: tuple[int, int, int], shift: tuple[int, int, int],
    num_heads: int, attention_dropout: float = 0.0, dropout: float = 0.0, training: bool = False,
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
# the model and its inputs
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


# =========================================================================================
# child processes
# =========================================================================================
def config_name(impl: str, batch: int, precision: str) -> str:
    return f"{impl} batch={batch} {precision}"


def runs_in(impl: str, precision: str) -> bool:
    """Whether ``impl`` has a ``precision``: Winograd is an fp32 kernel (bf16 autocast never takes it);
    ONNX Runtime runs the fp32 and int8 graphs, PyTorch fp32 and bf16 autocast."""
    if impl == "winograd":
        return precision == "fp32"
    if impl == "onnxruntime":
        return precision in ("fp32", "int8")
    return precision in TORCH_PRECISIONS


def configurations(args: argparse.Namespace) -> list[tuple[str, int, str]]:
    """(impl, batch, precision) to run (the combinations ``runs_in`` allows)."""
    impls = list(IMPLS) if args.impl == "all" else [args.impl]
    return [(impl, b, p) for b in args.batch_sizes for p in args.precisions for impl in impls
            if runs_in(impl, p)]  # fmt: skip


def build_for(impls: Any, args: argparse.Namespace) -> Any:
    """The model for ``impls``: one serves them all (``implementation`` and ``use_winograd`` switch per forward);
    with ``onnxruntime``, its sessions are attached as ``model.ort_sessions`` {precision: session}."""
    model = build_model(args.preset, args.window)
    if "winograd" in impls and not model.use_winograd(True):
        raise RuntimeError("this PyTorch build / CPU has no NNPACK: the winograd implementation cannot run")
    if "onnxruntime" in impls:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.log_severity_level = 3
        graphs = {"fp32": "lavt.onnx", "int8": "lavt.int8.onnx"}
        model.ort_sessions = {
            p: ort.InferenceSession(os.path.join(args.onnx_dir, graphs[p]), options, providers=["CPUExecutionProvider"])
            for p in args.precisions if p in graphs
        }
    return model


def export_child(args: argparse.Namespace) -> None:
    """Export the benchmark model (same seed as build_model) to ``--onnx-dir``, fp32 + int8 graphs."""
    _import_torch()
    harness.set_threads(args.threads)
    from lavt.export.onnx import export_onnx

    started = time.perf_counter()
    model = build_model(args.preset, args.window)
    result = export_onnx(model, args.onnx_dir, image_size=args.size, int8=True, overwrite=True)
    harness.emit({"export": result.summary(), "max_abs_diff": result.max_abs_diff,
                  "seconds": time.perf_counter() - started})


def timed_forward(model: Any, inputs: tuple[Tensor, ...], impl: str, precision: str, run: harness.Run) -> None:
    """One (warm-up or timed) forward as ``impl`` in ``precision``, logged."""
    image, words, mask = inputs
    batch = image.shape[0]
    if impl == "onnxruntime":
        feeds = {"pixel_values": image.numpy(), "text_features": words.numpy(), "text_mask": mask.numpy()}
        with run.timed():
            out = model.ort_sessions[precision].run(None, feeds)[0]
        del out
        harness.log(f"    [{config_name(impl, batch, precision)}] {run.label}: {run.seconds:.2f} s ({run.seconds / batch:.2f} "
                    f"s/image; other processes: {run.other_cores:.2f} cores)")
        return
    model.use_winograd(impl == "winograd")
    with implementation(impl), torch.inference_mode():
        with run.timed(), autocast(precision, CPU):
            out = model(image, text_features=words, text_mask=mask)
        del out  # freed outside the timed block, as before
    harness.log(
        f"    [{config_name(impl, batch, precision)}] {run.label}: {run.seconds:.2f} s ({run.seconds / batch:.2f} "
        f"s/image; other processes: {run.other_cores:.2f} cores)"
    )


def timing(runs: harness.Repeats, batch: int) -> dict[str, Any]:
    """The report's timing keys from one configuration's timed runs."""
    return {
        "times_s": runs.times,
        "other_cpu_cores_per_repeat": runs.other_cores,
        "min_batch_s": min(runs.times),
        "median_batch_s": runs.median,
        "spread": harness.spread(runs.times),
        "s_per_image": runs.median / batch,
        "images_per_s": batch / runs.median,
    }


def check_eager_patch(impls: Any) -> None:
    if "eager" in impls and EAGER_CALLS["window_attention"] == 0:
        raise RuntimeError("eager patch did not take effect")


def run_child(args: argparse.Namespace) -> None:
    """One (impl, batch, precision) alone: build, warm up, time, measure peak RSS."""
    _import_torch()
    harness.set_threads(args.threads)
    impl, batch, precision = args.impl, args.batch_sizes[0], args.precisions[0]
    memory = harness.PeakRSS()
    model = build_for([impl], args)
    memory.built()
    n_params = sum(p.numel() for p in model.parameters())

    inputs = make_inputs(batch, args.size, args.size, model.config.lang_dim, args.text_len, args.real_words)
    runs = harness.Repeats(args.warmup, args.repeats)
    for run in runs:
        timed_forward(model, inputs, impl, precision, run)
    peak_over_model = memory.over_build_mib()
    peak_rss = harness.max_rss_kib() / 1024  # since the reset after the build
    check_eager_patch([impl])
    build = memory.build_report()
    build["model_build_rss_mib"] = build.pop("build_rss_mib")
    harness.emit(
        {
            "config": config_name(impl, batch, precision),
            "impl": impl,
            "batch": batch,
            "precision": precision,
            "size": args.size,
            "preset": args.preset,
            "window": args.window,
            "threads": torch.get_num_threads(),
            **timing(runs, batch),
            "peak_over_model_mib": peak_over_model,
            "peak_rss_mib": peak_rss,
            **build,
            "params_m": n_params / 1e6,
            "eager_calls": dict(EAGER_CALLS) if impl == "eager" else None,
        }
    )


def run_group_child(args: argparse.Namespace) -> None:
    """The configurations of ``--child-group`` (one batch size) taking turns in this one process, on one model."""
    _import_torch()
    harness.set_threads(args.threads)
    planned = {config_name(impl, b, p): (impl, p) for impl, b, p in configurations(args)}
    chosen = {name: planned[name] for name in args.child_group}
    impls = {impl for impl, _ in chosen.values()}
    model = build_for(impls, args)
    batch = args.batch_sizes[0]
    inputs = make_inputs(batch, args.size, args.size, model.config.lang_dim, args.text_len, args.real_words)
    turns = harness.RoundRobin(list(chosen), args.warmup, args.repeats)
    for name, run in turns:
        timed_forward(model, inputs, *chosen[name], run)
    check_eager_patch(impls)
    turns.emit({name: timing(turns.schedules[name], batch) for name in chosen})


def run_check_child(args: argparse.Namespace) -> None:
    _import_torch()
    harness.set_threads(args.threads)
    harness.emit({"env": harness.torch_env(), "check": equivalence_check(args)})


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
                with implementation(impl), autocast(precision, CPU):
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
# parent (no torch import: see harness.py)
# =========================================================================================
SETTINGS = "preset window size warmup repeats text_len real_words"  # in the report
COMMON_OPTIONS = f"{SETTINGS} threads"  # passed on to every child
CONTENTION = harness.Contention("other_cpu_cores_per_repeat", "the timed forwards", what="latencies")


def progress(r: dict[str, Any]) -> str:
    """One configuration's outcome, on the progress stream."""
    per_image, rate, peak = r["s_per_image"], r["images_per_s"], r["peak_over_model_mib"]
    return f"{per_image:.3f} s/image, {rate:.3f} images/s, peak +{peak:.0f} MiB over model"


def run_parent(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    impls = list(IMPLS) if args.impl == "all" else [args.impl]
    common = harness.child_flags(args, COMMON_OPTIONS)

    harness.log("checking (in a child process) that the eager baseline computes the same function as ours ...")
    out, _ = harness.spawn(__file__, ["--child-check", *harness.child_flags(args, "precisions"), *common])
    if out is None:
        return 1
    env, check = out["env"], out["check"]
    header = [
        f"# LAVT inference benchmark: Swin-{args.preset} window {args.window}, {args.size}x{args.size}, CPU, eval, "
        f"torch.inference_mode, random weights",
        harness.machine_line(),
        harness.torch_line(env),
        f"Timed: image encoder (language-aware Swin + PWAM + gates) + decoder + final upsampling, one forward per "
        f"measurement. NOT timed: the text encoder (the model gets random word features (B, {args.text_len}, "
        f"lang_dim), {args.real_words} real words per expression).",
        f"warmup {args.warmup}, repeats {args.repeats}; s/image = median batch time / batch; peak MiB over model = "
        f"peak RSS (ru_maxrss, high-water mark reset after the build) minus RSS right after model construction; "
        + harness.method_sentence(not args.separate, "one batch size (one model serves them all)"),
    ]
    print("\n".join(header), flush=True)
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

    planned = configurations(args)
    if any(impl == "onnxruntime" for impl, _, _ in planned):
        temporary = None
        if args.onnx_dir is None:
            import tempfile

            temporary = tempfile.mkdtemp(prefix="lavt-bench-onnx-")
            args.onnx_dir = temporary
        harness.log(f"exporting the model to ONNX (in a child process) into {args.onnx_dir} ...")
        out, _ = harness.spawn(__file__, ["--child-export", *common, "--onnx-dir", args.onnx_dir])
        if out is None:
            return 1
        print(f"ONNX export ({out['seconds']:.0f} s): {out['export']}", flush=True)
        common = [*common, "--onnx-dir", args.onnx_dir]
        if temporary is not None:
            import atexit
            import shutil

            atexit.register(shutil.rmtree, temporary, True)
    jobs = {
        config_name(impl, b, p): ["--child", "--impl", impl, "--batch-sizes", str(b), "--precisions", p, *common]
        for impl, b, p in planned
    }  # fmt: skip
    groups = {  # everything compared at one batch size takes turns in one process
        f"batch={b}": ([config_name(*config) for config in planned if config[1] == b],
                       ["--impl", args.impl, "--batch-sizes", str(b), "--precisions", *args.precisions, *common])
        for b in args.batch_sizes
    }  # fmt: skip
    results, failed, timed = harness.run_measurement(
        __file__, jobs, None if args.separate else groups, started, progress, CONTENTION, stop_at_failure=True
    )
    if failed:
        return 1

    print()
    harness.print_table(
        ["impl", "batch", "precision", "s/image", "spread (max-min)/median", "images/s", "peak MiB over model",
         "other procs' CPU, cores (max over repeats)"],
        "lrlrrrrr",
        [
            [r["impl"], r["batch"], r["precision"], f"{r['s_per_image']:.3f}", f"{100 * r['spread']:.1f} %",
             f"{r['images_per_s']:.3f}", f"{r['peak_over_model_mib']:.0f}", f"{CONTENTION.most(r):.2f}"]
            for r in results
        ],
    )  # fmt: skip
    builds = [r["model_build_rss_mib"] for r in results]
    print(
        f"\nModel build RSS: {min(builds):.0f}-{max(builds):.0f} MiB (RSS after - before constructing the model; "
        f"{results[0]['params_m']:.1f} M parameters = {results[0]['params_m'] * 4 / 1.048576:.0f} MiB fp32); RSS after "
        f"build {results[0]['rss_after_build_mib']:.0f} MiB incl. the Python/torch runtime "
        f"({results[0]['rss_before_build_mib']:.0f} MiB before)."
    )
    by_key = {(r["impl"], r["batch"], r["precision"]): r for r in results}
    over_eager, bf16_over_fp32 = [], []
    if "eager" in impls and len(impls) > 1:
        print()
        for o in results:
            impl, batch, precision = o["impl"], o["batch"], o["precision"]
            if impl == "eager" and precision == "fp32":
                continue
            e = by_key.get(("eager", batch, "fp32"))
            if e is None:
                continue
            ratio = harness.time_ratio(o, e, "median_batch_s", CONTENTION)  # same batch: = the s/image ratio
            over_eager.append({"impl": impl, "batch": batch, "precision": precision,
                               **harness.ratio_record(ratio, "over_eager")})  # fmt: skip
            headline = harness.headline(ratio)
            print(
                f"{impl} {precision} / eager fp32 latency ratio, batch {batch}: {harness.ratio_text(ratio)} "
                f"({'faster' if headline < 1 else 'NOT faster'}; speedup {1 / headline:.2f}x); "
                f"peak MiB over model: {impl} {o['peak_over_model_mib']:.0f}, eager {e['peak_over_model_mib']:.0f}"
            )
    if "fp32" in args.precisions and "bf16" in args.precisions:
        print()
        for bf in results:
            impl, batch = bf["impl"], bf["batch"]
            if bf["precision"] != "bf16" or (impl, batch, "fp32") not in by_key:
                continue
            ratio = harness.time_ratio(bf, by_key[(impl, batch, "fp32")], "median_batch_s", CONTENTION)
            bf16_over_fp32.append({"impl": impl, "batch": batch, **harness.ratio_record(ratio, "bf16_over_fp32")})
            verdict = harness.bf16_verdict(harness.headline(ratio))
            print(f"bf16/fp32 latency ratio, {impl}, batch {batch}: {harness.ratio_text(ratio)} ({verdict})")
    print()
    harness.print_rounds(timed)
    CONTENTION.warn(results)

    meta = {
        **harness.settings(args, SETTINGS),
        "timed": "image encoder + decoder (text encoder excluded)",
        **harness.method_notes(not args.separate),
    }
    sections = {"latency_over_eager_fp32": over_eager, "latency_bf16_over_fp32": bf16_over_fp32}
    if not args.separate:
        sections["interleaved_groups"] = timed
    harness.finish(started, args.json, env, meta, check=check, results=results, **sections)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = harness.make_parser(__doc__)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument(
        "--precisions", nargs="+", choices=["fp32", "bf16", "int8"], default=None,
        help="default: fp32 bf16 int8 (--quick: fp32); int8 = the onnxruntime int8 graph",
    )
    ap.add_argument("--onnx-dir", default=None, help="where the onnxruntime rows' export goes (default: a temporary folder)")
    harness.add_run_options(ap, runs="forward", repeats=3, repeats_help="default 3", seed=False)
    harness.add_interleave_options(ap)
    ap.add_argument("--size", type=int, default=480, help="square image side (default 480)")
    ap.add_argument("--preset", default="base", choices=["tiny", "small", "base", "large"])
    ap.add_argument("--window", type=int, default=12)
    ap.add_argument(
        "--impl", choices=[*IMPLS, "all"], default="all",
        help="ours (exact; in bf16 the CPU default of `lavt predict` where the CPU has native bf16), winograd (ours + "
        "Winograd decoder convolutions: the fp32 default), eager (the official computational structure), onnxruntime "
        "(the `lavt export` graph), or all (default)",
    )  # fmt: skip
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: preset tiny, size 224, batch 1 and 2, 1 repeat, fp32 unless --precisions is given",
    )
    ap.add_argument("--child-check", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-export", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.preset, args.size, args.batch_sizes, args.repeats = "tiny", 224, [1, 2], 1
    harness.fill_defaults(args, {"precisions": ["fp32"] if args.quick else ["fp32", "bf16", "int8"]})
    harness.check_options(ap, args, positive="batch_sizes size")
    if args.child and (args.impl == "all" or len(args.batch_sizes) != 1 or len(args.precisions) != 1):
        ap.error("--child runs exactly one (impl, batch, precision)")
    if args.impl != "all" and not any(runs_in(args.impl, p) for p in args.precisions):
        ap.error(f"--impl {args.impl} has none of the precisions {' '.join(args.precisions)}")
    return args


def main(argv: list[str] | None = None) -> int:
    return harness.dispatch(
        parse_args(argv), run_parent, child_check=run_check_child, child_export=export_child, child_group=run_group_child,
        child=run_child,
    )


if __name__ == "__main__":
    sys.exit(main())
