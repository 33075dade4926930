#!/usr/bin/env python
"""CPU time and peak memory of ONE LAVT training step (Swin-B, 480x480, batch 8 by default).

Measures, for every configuration {fp32, bf16 autocast} x {activation checkpointing off, on}:

* time of one optimizer step, exactly what ``lavt.engine.trainer.Trainer.train_step`` does with
  ``grad_accum=1``: ``model.train()``; token padding cut to the longest expression
  (``trim_padding``); forward ``model(image, input_ids, attention_mask)`` ->
  logits (B, 2, H, W) under the trainer's ``autocast(precision)`` (the text encoder runs and is
  timed: it is part of the model); ``loss = build_loss("ce")(logits.float(), target)``;
  ``loss.backward()``; ``AdamW.step()`` over ``param_groups(model, weight_decay)`` after
  ``freeze_untrained(model, cfg)`` (text-encoder embeddings frozen, BERT layers 0..9 trained,
  the dead stage-4 gate frozen); ``zero_grad(set_to_none=True)``; LR scheduler step.
  ``time.perf_counter`` around the whole step (forward+loss / backward / optimizer+zero_grad are
  reported separately too). s/step = median over the timed steps; s/image = s/step / batch.
* activation checkpointing: ``stage.activation_checkpointing = True`` for every backbone stage
  (``torch.utils.checkpoint`` around each Swin block, recomputed in backward), as the trainer
  does for ``train.activation_checkpointing=true``.
* memory: every configuration runs in a fresh subprocess (this script re-invoked with the hidden
  ``--child`` flag). The child records its RSS right after building model + optimizer, resets
  the kernel's RSS high-water mark, runs the warm-up and timed steps and reports the peak
  (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, KiB on Linux) minus that post-build RSS
  (= gradients + AdamW moments + saved activations + autocast weight copies + allocator slack)
  and the absolute peak RSS of the process. The high-water mark is also reset at every phase
  boundary, so the peak of each phase (forward+loss, backward, optimizer step) is known; and the
  bytes of the tensors autograd saves for backward in the forward are summed with
  ``torch.autograd.graph.saved_tensors_hooks`` (distinct storages, parameters excluded): an
  allocator-independent measure of the activation memory that checkpointing reduces.

Text encoder: the paper's BERT-base (``--text-encoder bert-base``, default) cannot be downloaded
offline, so it is built from ``transformers.BertConfig()`` (BERT-base sizes: 12 layers, width
768, vocab 30522) with random weights; ``minilm`` uses the bundled MiniLM-L6-H384 architecture
(random weights too). All weights are random (seeded): speed does not depend on their values.
Run ``python benchmarks/bench_train.py --help`` for the options; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Shared helpers of the inference benchmark (benchmarks/ is not a package). Importing it is cheap
# and does not import torch: like there, the parent process never imports torch, because a
# child started by fork/vfork + exec inherits the parent's RSS high-water mark in ru_maxrss.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_inference import (  # noqa: E402
    RESULT_PREFIX,
    children_cpu_seconds,
    cpu_busy_jiffies,
    cpu_flags,
    cpu_model,
    current_rss_kib,
    emit,
    fmt_secs,
    log,
    max_rss_kib,
    reset_peak_rss,
    self_cpu_seconds,
)

CONFIGS = {  # name -> (precision, activation checkpointing)
    "fp32": ("fp32", False),
    "fp32+ckpt": ("fp32", True),
    "bf16": ("bf16", False),
    "bf16+ckpt": ("bf16", True),
}
TEXT_ENCODERS = {  # --text-encoder -> (TextEncoderConfig.name_or_path, lang_dim)
    "bert-base": ("bert-base-uncased", 768),
    "minilm": ("minilm", 384),
}


# =========================================================================================
# child process: one configuration
# =========================================================================================
def run_config_overrides(args: argparse.Namespace, precision: str, ckpt: bool) -> list[str]:
    """The ``section.key=value`` overrides of the RunConfig this configuration trains with."""
    name, lang_dim = TEXT_ENCODERS[args.text_encoder]
    return [
        f"model.preset={args.preset}",
        f"model.window_size={args.window}",
        f"model.lang_dim={lang_dim}",
        f"model.text_encoder.name_or_path={name}",
        f"model.text_encoder.max_tokens={args.text_len}",
        f"train.batch_size={args.batch}",
        f"train.precision={precision}",
        f"train.activation_checkpointing={str(ckpt).lower()}",
        f"train.seed={args.seed}",
        "train.device=cpu",
    ]


def build_model(cfg: Any, text_encoder: str) -> Any:
    """LAVT with a randomly initialised text encoder (no download)."""
    from lavt.models.lavt import LAVT

    if text_encoder == "bert-base":
        # build_text_encoder("bert-base-uncased", pretrained=False) needs the hub config, which
        # is not available offline; BertConfig() has exactly BERT-base's sizes. Without the
        # pooler, as build_text_encoder builds it (LAVT never reads the pooler).
        import transformers

        encoder = transformers.BertModel(transformers.BertConfig(), add_pooling_layer=False).float()
        return LAVT(cfg.model, encoder)
    return LAVT.from_config(cfg.model, pretrained_text_encoder=False)


def run_child(args: argparse.Namespace) -> None:
    """One configuration: build model + optimizer, warm up, time the steps, measure peak RSS."""
    import numpy as np
    import torch

    import lavt.models.encoder as encoder_mod
    from lavt.engine.config import load_run_config
    from lavt.engine.trainer import autocast, freeze_untrained, param_groups, poly_schedule
    from lavt.engine.losses import build_loss
    from lavt.models.text import trim_padding

    if args.threads:
        torch.set_num_threads(args.threads)
    name = args.configs[0]
    precision, ckpt = CONFIGS[name]
    tag = f"[{name} b={args.batch}]"
    cfg = load_run_config(None, run_config_overrides(args, precision, ckpt))
    t = cfg.train
    device = torch.device("cpu")
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    # Count the checkpointed block calls, to prove the option took effect (benchmark-side wrapper).
    ckpt_calls = [0]
    orig_checkpoint = encoder_mod.checkpoint

    def counting_checkpoint(*a: Any, **kw: Any) -> Any:
        ckpt_calls[0] += 1
        return orig_checkpoint(*a, **kw)

    encoder_mod.checkpoint = counting_checkpoint

    rss_before = current_rss_kib()
    t0 = time.perf_counter()
    model = build_model(cfg, args.text_encoder).to(device)
    freeze_untrained(model, cfg)  # as Trainer.__init__
    for stage in model.backbone.stages:
        stage.activation_checkpointing = t.activation_checkpointing
    optimizer = torch.optim.AdamW(param_groups(model, t.weight_decay), lr=t.lr, betas=(0.9, 0.999), eps=1e-8)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_schedule(1000, t.lr_power))
    loss_fn = build_loss(t.loss)
    model.train()
    build_s = time.perf_counter() - t0
    rss_built = current_rss_kib()
    maxrss_build = max_rss_kib()
    # Start the peak from here: a transient during import/build above the post-build RSS must not
    # hide part of the training peak.
    was_reset = reset_peak_rss()
    maxrss_built = max_rss_kib()
    # Baseline of every peak: RSS right after the build. With the reset, ru_maxrss only knows peaks
    # from after that point (and is reset again at every phase boundary below, so the peak of each
    # phase is known too); without it, fall back to the (conservative) ru_maxrss delta.
    baseline = rss_built if was_reset else maxrss_built

    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_text = sum(p.numel() for p in model.text_encoder.parameters())
    n_text_trainable = sum(p.numel() for p in model.text_encoder.parameters() if p.requires_grad)
    log(
        f"    {tag} built in {build_s:.1f} s: {n_params / 1e6:.1f} M parameters ({n_trainable / 1e6:.1f} M trained; "
        f"text encoder {n_text / 1e6:.1f} M, {n_text_trainable / 1e6:.1f} M trained), RSS {rss_built / 1024:.0f} MiB"
    )

    g = torch.Generator().manual_seed(args.seed + 1)
    b, s = args.batch, args.size
    image = torch.randn(b, 3, s, s, generator=g)
    input_ids = torch.randint(1000, 2000, (b, args.text_len), generator=g)
    attention_mask = torch.zeros(b, args.text_len, dtype=torch.long)
    attention_mask[:, : args.real_words] = 1
    input_ids[:, args.real_words :] = 0  # [PAD], as the tokenizer pads
    input_ids, attention_mask = trim_padding(input_ids, attention_mask)  # as train_step does
    target = torch.randint(0, 2, (b, s, s), generator=g)

    def phase_peak() -> float:
        """Peak RSS (MiB over the post-build RSS) since the last call; restarts the high-water mark."""
        peak = max(0, max_rss_kib() - baseline) / 1024
        if was_reset:
            reset_peak_rss()
        return peak

    # Allocator-independent measure of the activation memory: the bytes of the distinct tensor
    # storages autograd saves for backward during the forward (parameters excluded; autocast's bf16
    # weight copies included). Under checkpointing, a checkpointed block saves only its input here
    # (its internals are saved by the checkpoint's own inner hooks and dropped). The hook returns
    # the tensor itself: no copy, negligible cost (one Python call per saved tensor).
    param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(x: Any) -> Any:
        storage = x.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in param_storages and ptr not in saved:
            saved[ptr] = storage.nbytes()
        return x

    def train_step(n: int) -> tuple[float, dict[str, float], dict[str, float]]:
        """Trainer.train_step on the first ``n`` samples: (loss, seconds per phase, peak MiB per phase)."""
        phase_peak()
        saved.clear()
        t_a = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            with autocast(t.precision, device):
                logits = model(image[:n], input_ids[:n], attention_mask[:n])
            loss = loss_fn(logits.float(), target[:n])
        t_b = time.perf_counter()
        peak_fwd = phase_peak()
        loss.backward()
        t_c = time.perf_counter()
        peak_bwd = phase_peak()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        t_d = time.perf_counter()
        peak_opt = phase_peak()
        secs = {"forward_loss_s": t_b - t_a, "backward_s": t_c - t_b, "optimizer_s": t_d - t_c}
        peaks = {"forward_loss": peak_fwd, "backward": peak_bwd, "optimizer": peak_opt}
        peaks["saved_for_backward"] = sum(saved.values()) / 2**20
        saved.clear()
        return loss.item(), secs, peaks

    peak_by_phase_keys = ("forward_loss", "backward", "optimizer")
    hz = os.sysconf("SC_CLK_TCK")
    times: list[float] = []
    phases: list[dict[str, float]] = []
    step_peaks: list[dict[str, float]] = []  # peak MiB over build per phase, timed steps
    warmup_peaks: list[dict[str, float]] = []
    other_cores: list[float] = []  # CPU time other processes took during each timed step
    losses: list[float] = []
    warmup_times: list[float] = []
    rss_after_warmup = None
    ckpt_calls_per_step: list[int] = []
    for i in range(args.warmup + args.repeats):
        warm = i < args.warmup
        n = args.warmup_batch if warm else b
        busy0, _ = cpu_busy_jiffies()
        own0 = self_cpu_seconds()
        calls0 = ckpt_calls[0]
        t_step = time.perf_counter()
        loss, secs, peaks = train_step(n)
        dt = time.perf_counter() - t_step
        fwd, bwd, opt = secs["forward_loss_s"], secs["backward_s"], secs["optimizer_s"]
        busy1, _ = cpu_busy_jiffies()
        other = max(0.0, (busy1 - busy0) / hz - (self_cpu_seconds() - own0)) / dt
        kind = f"warmup {i + 1}/{args.warmup} (batch {n})" if warm else f"step {i - args.warmup + 1}/{args.repeats}"
        log(
            f"    {tag} {kind}: {dt:.1f} s (forward+loss {fwd:.1f}, backward {bwd:.1f}, optimizer {opt:.2f}; "
            f"{dt / n:.2f} s/image; loss {loss:.4f}; peak +{max(peaks[k] for k in peak_by_phase_keys):.0f} MiB, "
            f"saved for backward {peaks['saved_for_backward']:.0f} MiB; other processes: {other:.2f} cores)"
        )
        if warm:
            warmup_times.append(dt)
            warmup_peaks.append(peaks)
            if i == args.warmup - 1:
                rss_after_warmup = current_rss_kib()
            continue
        times.append(dt)
        phases.append(secs)
        step_peaks.append(peaks)
        other_cores.append(other)
        losses.append(loss)
        ckpt_calls_per_step.append(ckpt_calls[0] - calls0)
    encoder_mod.checkpoint = orig_checkpoint
    peak_by_phase = {k: max(p[k] for p in warmup_peaks + step_peaks) for k in peak_by_phase_keys}
    peak_over_build = max(peak_by_phase.values())
    saved_mib = statistics.median(p["saved_for_backward"] for p in step_peaks)
    median = statistics.median(times)
    emit(
        {
            "config": name,
            "precision": precision,
            "activation_checkpointing": ckpt,
            "batch": b,
            "size": s,
            "preset": args.preset,
            "window": args.window,
            "text_encoder": args.text_encoder,
            "text_encoder_attention": getattr(model.text_encoder.config, "_attn_implementation", None),
            "env": {
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "capability": torch.backends.cpu.get_cpu_capability(),
            },
            "times_s": times,
            "phases_s": phases,
            "median_step_s": median,
            "min_step_s": min(times),
            "s_per_image": median / b,
            "median_forward_loss_s": statistics.median(p["forward_loss_s"] for p in phases),
            "median_backward_s": statistics.median(p["backward_s"] for p in phases),
            "median_optimizer_s": statistics.median(p["optimizer_s"] for p in phases),
            "warmup_times_s": warmup_times,
            "warmup_batch": args.warmup_batch,
            "losses": losses,
            "other_cpu_cores_per_step": other_cores,
            "checkpointed_block_calls_per_step": ckpt_calls_per_step,
            "peak_over_build_mib": peak_over_build,
            "peak_over_build_by_phase_mib": peak_by_phase,
            "saved_for_backward_mib": saved_mib,
            "peak_over_build_per_timed_step_mib": step_peaks,
            "peak_over_build_per_warmup_step_mib": warmup_peaks,
            "peak_rss_mib": max(maxrss_build, baseline + peak_over_build * 1024) / 1024,  # incl. the build
            "peak_rss_reset_after_build": was_reset,
            "rss_before_build_mib": rss_before / 1024,
            "rss_after_build_mib": rss_built / 1024,
            "build_rss_mib": (rss_built - rss_before) / 1024,
            "maxrss_at_end_of_build_mib": maxrss_build / 1024,
            "rss_after_warmup_mib": None if rss_after_warmup is None else rss_after_warmup / 1024,
            "build_s": build_s,
            "params_m": n_params / 1e6,
            "trainable_params_m": n_trainable / 1e6,
            "text_encoder_params_m": n_text / 1e6,
            "text_encoder_trainable_params_m": n_text_trainable / 1e6,
            "run_config_overrides": run_config_overrides(args, precision, ckpt),
        }
    )


# =========================================================================================
# parent (no torch import: see the note at the bench_inference import)
# =========================================================================================
def child_flags(args: argparse.Namespace, config: str) -> list[str]:
    flags = [
        "--child", "--configs", config,
        "--batch", str(args.batch), "--size", str(args.size), "--preset", args.preset, "--window", str(args.window),
        "--text-encoder", args.text_encoder, "--warmup", str(args.warmup), "--warmup-batch", str(args.warmup_batch),
        "--repeats", str(args.repeats), "--text-len", str(args.text_len), "--real-words", str(args.real_words),
        "--seed", str(args.seed),
    ]  # fmt: skip
    if args.threads:
        flags += ["--threads", str(args.threads)]
    return flags


def spawn(flags: list[str]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Run this script as a child; returns its result and what else the CPUs did meanwhile."""
    busy0, _ = cpu_busy_jiffies()
    child0 = children_cpu_seconds()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), *flags], stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    busy1, _ = cpu_busy_jiffies()
    child_cpu = children_cpu_seconds() - child0
    other = max(0.0, (busy1 - busy0) / os.sysconf("SC_CLK_TCK") - child_cpu) / wall if wall > 0 else 0.0
    diag: dict[str, Any] = {"wall_s": wall, "child_cpu_s": child_cpu, "other_cpu_cores": other, "exit": proc.returncode}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        why = f"exit {proc.returncode}"
        if proc.returncode < 0:
            why = f"killed by signal {-proc.returncode}" + (" (out of memory?)" if proc.returncode == -9 else "")
        log(f"ERROR: child {' '.join(flags)} failed ({why})")
        if proc.stdout.strip():
            log(proc.stdout)
        diag["error"] = why
        return None, diag
    return json.loads(lines[-1][len(RESULT_PREFIX) :]), diag


def run_parent(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    name, lang_dim = TEXT_ENCODERS[args.text_encoder]
    header = [
        f"# LAVT training-step benchmark: Swin-{args.preset} window {args.window}, {args.size}x{args.size}, "
        f"batch {args.batch}, CPU, random weights",
        f"CPU: {cpu_model()} ({os.cpu_count()} logical cores; flags: {cpu_flags()}) | python "
        f"{platform.python_version()} | {platform.platform()}",
        f"Text encoder: {args.text_encoder} ({name} architecture, width {lang_dim}, random init), "
        f"{args.text_len} tokens per expression ({args.real_words} real); text-encoder layers 0-9 trained (official "
        f"recipe; MiniLM has 6), embeddings frozen.",
        f"One step = forward (text encoder + language-aware Swin + decoder) + CE loss + backward + AdamW step + "
        f"zero_grad, as Trainer.train_step. Warm-up {args.warmup} untimed step(s) at batch {args.warmup_batch}, "
        f"then {args.repeats} timed step(s) at batch {args.batch}; s/step = median.",
        "Peak MiB over build = peak RSS (ru_maxrss, high-water mark reset after building model + optimizer and at "
        "every phase boundary) minus the RSS right after that build; every configuration runs in a fresh process.",
    ]
    for line in header:
        print(line, flush=True)

    results: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for idx, config in enumerate(args.configs, 1):
        log(f"[{idx}/{len(args.configs)}] {config} batch={args.batch} (elapsed {fmt_secs(time.perf_counter() - t_start)})")
        res, diag = spawn(child_flags(args, config))
        if res is None:
            failed.append({"config": config, "diagnostics": diag})
            continue
        res["diagnostics"] = diag
        results.append(res)
        log(
            f"    -> {res['median_step_s']:.1f} s/step, {res['s_per_image']:.2f} s/image, peak "
            f"+{res['peak_over_build_mib']:.0f} MiB over build ({res['peak_rss_mib']:.0f} MiB RSS); other processes "
            f"used up to {max(res['other_cpu_cores_per_step']):.2f} cores during the timed steps"
        )
    if not results:
        print("ERROR: every configuration failed.", file=sys.stderr)
        return 1

    env = results[0]["env"]
    print(
        f"torch {env['torch']} | threads {env['threads']} | ATen capability {env['capability']} | text encoder "
        f"attention: {results[0]['text_encoder_attention']}"
    )
    print(
        "\n| config | s/step (median) | s/image | forward+loss s | backward s | optimizer s | peak MiB over build "
        "| peak RSS MiB | other procs' CPU, cores (max) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['config']} | {r['median_step_s']:.2f} | {r['s_per_image']:.3f} | {r['median_forward_loss_s']:.2f} "
            f"| {r['median_backward_s']:.2f} | {r['median_optimizer_s']:.2f} | {r['peak_over_build_mib']:.0f} "
            f"| {r['peak_rss_mib']:.0f} | {max(r['other_cpu_cores_per_step']):.2f} |"
        )
    for f in failed:
        print(f"| {f['config']} | FAILED: {f['diagnostics']['error']} | | | | | | | |")
    print(
        "\nMemory detail, MiB: peak RSS over build in each phase (max over all steps; the overall peak is the "
        "largest), RSS over build after the warm-up step(s), and the tensors autograd saved for backward in a "
        "timed forward (storage bytes, parameters excluded; allocator-independent):\n"
    )
    print("| config | peak in forward+loss | peak in backward | peak in optimizer step | RSS after warm-up | saved for backward |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        ph, warm = r["peak_over_build_by_phase_mib"], r["rss_after_warmup_mib"]
        warm_txt = "-" if warm is None else f"{warm - r['rss_after_build_mib']:.0f}"
        print(
            f"| {r['config']} | {ph['forward_loss']:.0f} | {ph['backward']:.0f} | {ph['optimizer']:.0f} | {warm_txt} "
            f"| {r['saved_for_backward_mib']:.0f} |"
        )
    r0 = results[0]
    print(
        f"\nModel: {r0['params_m']:.1f} M parameters, {r0['trainable_params_m']:.1f} M trained (text encoder "
        f"{r0['text_encoder_params_m']:.1f} M, {r0['text_encoder_trainable_params_m']:.1f} M trained). RSS after building "
        f"model + optimizer {r0['rss_after_build_mib']:.0f} MiB incl. the Python/torch runtime "
        f"({r0['rss_before_build_mib']:.0f} MiB before). Gradients + AdamW moments of the trained parameters: "
        f"{r0['trainable_params_m'] * 12 / 1.048576:.0f} MiB fp32 (part of 'peak over build')."
    )
    for r in results:
        calls = r["checkpointed_block_calls_per_step"]
        if r["activation_checkpointing"] and not all(calls):
            print(f"WARNING: {r['config']}: activation checkpointing was requested but no block was checkpointed.")
    busy = max(max(r["other_cpu_cores_per_step"]) for r in results)
    if busy > 0.2:
        print(
            f"WARNING: other processes used up to {busy:.2f} CPU cores during the timed steps (last column): "
            f"those times are inflated; rerun on an idle machine for clean numbers."
        )

    by_name = {r["config"]: r for r in results}
    print()
    for precision in ("fp32", "bf16"):
        off, on = by_name.get(precision), by_name.get(f"{precision}+ckpt")
        if off and on:
            print(
                f"activation checkpointing, {precision}: peak over build {off['peak_over_build_mib']:.0f} -> "
                f"{on['peak_over_build_mib']:.0f} MiB ({on['peak_over_build_mib'] / max(off['peak_over_build_mib'], 1e-9):.2f}x), "
                f"saved for backward {off['saved_for_backward_mib']:.0f} -> {on['saved_for_backward_mib']:.0f} MiB, "
                f"step time {off['median_step_s']:.2f} -> {on['median_step_s']:.2f} s "
                f"({on['median_step_s'] / off['median_step_s']:.2f}x; {on['checkpointed_block_calls_per_step'][0]} "
                f"checkpointed block calls per step)"
            )
    for suffix in ("", "+ckpt"):
        f32, bf = by_name.get(f"fp32{suffix}"), by_name.get(f"bf16{suffix}")
        if f32 and bf:
            ratio = bf["median_step_s"] / f32["median_step_s"]
            print(
                f"bf16/fp32 step-time ratio{' with checkpointing' if suffix else ''}: {ratio:.2f} "
                f"({'bf16 SLOWER than fp32' if ratio > 1 else 'bf16 faster'}); peak over build "
                f"{f32['peak_over_build_mib']:.0f} (fp32) vs {bf['peak_over_build_mib']:.0f} MiB (bf16)"
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
                "batch": args.batch,
                "text_encoder": args.text_encoder,
                "warmup": args.warmup,
                "warmup_batch": args.warmup_batch,
                "repeats": args.repeats,
                "text_len": args.text_len,
                "real_words": args.real_words,
                "seed": args.seed,
                "timed": "one optimizer step: forward (text encoder + image LAVT) + CE loss + backward + AdamW + zero_grad",
                "total_wall_s": total,
            },
            "results": results,
            "failed": failed,
        }
        with open(args.json, "w") as fh:
            json.dump(payload, fh, indent=2)
        print(f"wrote {args.json}")
    return 1 if failed else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--configs",
        default=None,
        help=f"comma-separated subset of {','.join(CONFIGS)} (default: all four; --quick: fp32,fp32+ckpt)",
    )
    ap.add_argument("--batch", type=int, default=None, help="batch size of the timed steps (default 8; --quick 2)")
    ap.add_argument("--size", type=int, default=None, help="square image side (default 480; --quick 224)")
    ap.add_argument("--preset", default=None, choices=["tiny", "small", "base", "large"], help="default base (--quick tiny)")
    ap.add_argument("--window", type=int, default=None, help="default 12 (--quick 7)")
    ap.add_argument(
        "--text-encoder", default=None, choices=list(TEXT_ENCODERS), help="default bert-base (--quick minilm)"
    )
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps before timing (default 1)")
    ap.add_argument(
        "--warmup-batch", type=int, default=1, help="batch of the warm-up steps (default 1: pays one-time costs cheaply)"
    )
    ap.add_argument("--repeats", type=int, default=1, help="timed steps; the median is reported (default 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    ap.add_argument("--text-len", type=int, default=20, help="tokens per expression (default 20)")
    ap.add_argument("--real-words", type=int, default=12, help="unmasked tokens per expression (default 12)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write all numbers to this JSON file")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: preset tiny, window 7, 224x224, batch 2, MiniLM, fp32 and fp32+ckpt unless --configs is given",
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    defaults = (
        dict(preset="tiny", window=7, size=224, batch=2, text_encoder="minilm", configs="fp32,fp32+ckpt")
        if args.quick
        else dict(preset="base", window=12, size=480, batch=8, text_encoder="bert-base", configs=",".join(CONFIGS))
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown or not args.configs:
        ap.error(f"--configs: unknown {unknown or 'empty list'}; choose from {','.join(CONFIGS)}")
    if args.repeats < 1 or args.warmup < 0 or args.batch < 1 or args.size < 1:
        ap.error("need --repeats >= 1, --warmup >= 0 and a positive --batch and --size")
    if not 1 <= args.warmup_batch <= args.batch:
        ap.error("--warmup-batch must be between 1 and --batch")
    if not 1 <= args.real_words <= args.text_len:
        ap.error("--real-words must be between 1 and --text-len")
    if args.child and len(args.configs) != 1:
        ap.error("--child runs exactly one configuration")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        run_child(args)
        return 0
    return run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
