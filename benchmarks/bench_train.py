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
  Unlike the latency scripts, the configurations are NOT timed interleaved in one process: they
  do not fit in memory side by side, so each is timed in its own child, one after the other
  (judge their ratios by the contention column).

Text encoder: the paper's BERT-base (``--text-encoder bert-base``, default) cannot be downloaded
offline, so it is built from ``transformers.BertConfig()`` (BERT-base sizes: 12 layers, width
768, vocab 30522) with random weights; ``minilm`` uses the bundled MiniLM-L6-H384 architecture
(random weights too). All weights are random (seeded): speed does not depend on their values.
Run ``python benchmarks/bench_train.py --help`` for the options; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/ is not a package
import harness  # noqa: E402  (torch-free: the parent must not import torch, see harness.py)

harness.stay_offline()

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
    from lavt.engine.build import freeze_untrained, param_groups, poly_schedule
    from lavt.engine.config import load_run_config
    from lavt.engine.losses import build_loss
    from lavt.models.text import trim_padding
    from lavt.runtime.precision import autocast

    harness.set_threads(args.threads)
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

    memory = harness.PeakRSS()
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
    # Every peak below is over the RSS right after this build; the high-water mark is restarted at
    # every phase boundary too, so the peak of each phase is known.
    memory.built()

    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_text = sum(p.numel() for p in model.text_encoder.parameters())
    n_text_trainable = sum(p.numel() for p in model.text_encoder.parameters() if p.requires_grad)
    harness.log(
        f"    {tag} built in {build_s:.1f} s: {n_params / 1e6:.1f} M parameters ({n_trainable / 1e6:.1f} M trained; "
        f"text encoder {n_text / 1e6:.1f} M, {n_text_trainable / 1e6:.1f} M trained), "
        f"RSS {memory.after_build_kib / 1024:.0f} MiB"
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
        memory.phase_peak_mib()
        saved.clear()
        t_a = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            with autocast(t.precision, device):
                logits = model(image[:n], input_ids[:n], attention_mask[:n])
            loss = loss_fn(logits.float(), target[:n])
        t_b = time.perf_counter()
        peak_fwd = memory.phase_peak_mib()
        loss.backward()
        t_c = time.perf_counter()
        peak_bwd = memory.phase_peak_mib()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        t_d = time.perf_counter()
        peak_opt = memory.phase_peak_mib()
        secs = {"forward_loss_s": t_b - t_a, "backward_s": t_c - t_b, "optimizer_s": t_d - t_c}
        peaks = {"forward_loss": peak_fwd, "backward": peak_bwd, "optimizer": peak_opt}
        peaks["saved_for_backward"] = sum(saved.values()) / 2**20
        saved.clear()
        return loss.item(), secs, peaks

    peak_by_phase_keys = ("forward_loss", "backward", "optimizer")
    runs = harness.Repeats(args.warmup, args.repeats, timed_word="step")
    phases: list[dict[str, float]] = []
    step_peaks: list[dict[str, float]] = []  # peak MiB over build per phase, timed steps
    warmup_peaks: list[dict[str, float]] = []
    losses: list[float] = []
    rss_after_warmup = None
    ckpt_calls_per_step: list[int] = []
    for run in runs:
        n = args.warmup_batch if run.warmup else b
        calls0 = ckpt_calls[0]
        with run.timed():
            loss, secs, peaks = train_step(n)
        dt = run.seconds
        fwd, bwd, opt = secs["forward_loss_s"], secs["backward_s"], secs["optimizer_s"]
        harness.log(
            f"    {tag} {run.label}{f' (batch {n})' if run.warmup else ''}: {dt:.1f} s (forward+loss {fwd:.1f}, "
            f"backward {bwd:.1f}, optimizer {opt:.2f}; {dt / n:.2f} s/image; loss {loss:.4f}; peak "
            f"+{max(peaks[k] for k in peak_by_phase_keys):.0f} MiB, saved for backward "
            f"{peaks['saved_for_backward']:.0f} MiB; other processes: {run.other_cores:.2f} cores)"
        )
        if run.warmup:
            warmup_peaks.append(peaks)
            rss_after_warmup = harness.current_rss_kib()  # the last warm-up step's is kept
            continue
        phases.append(secs)
        step_peaks.append(peaks)
        losses.append(loss)
        ckpt_calls_per_step.append(ckpt_calls[0] - calls0)
    encoder_mod.checkpoint = orig_checkpoint
    peak_by_phase = {k: max(p[k] for p in warmup_peaks + step_peaks) for k in peak_by_phase_keys}
    peak_over_build = max(peak_by_phase.values())
    saved_mib = statistics.median(p["saved_for_backward"] for p in step_peaks)
    median = runs.median
    harness.emit(
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
            "env": harness.torch_env(),
            "times_s": runs.times,
            "phases_s": phases,
            "median_step_s": median,
            "min_step_s": min(runs.times),
            "s_per_image": median / b,
            "median_forward_loss_s": statistics.median(p["forward_loss_s"] for p in phases),
            "median_backward_s": statistics.median(p["backward_s"] for p in phases),
            "median_optimizer_s": statistics.median(p["optimizer_s"] for p in phases),
            "warmup_times_s": runs.warmup_times,
            "warmup_batch": args.warmup_batch,
            "losses": losses,
            "other_cpu_cores_per_step": runs.other_cores,
            "checkpointed_block_calls_per_step": ckpt_calls_per_step,
            "peak_over_build_mib": peak_over_build,
            "peak_over_build_by_phase_mib": peak_by_phase,
            "saved_for_backward_mib": saved_mib,
            "peak_over_build_per_timed_step_mib": step_peaks,
            "peak_over_build_per_warmup_step_mib": warmup_peaks,
            "peak_rss_mib": memory.peak_rss_mib(peak_over_build),  # incl. the build
            **memory.build_report(),
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
# parent (no torch import: see harness.py)
# =========================================================================================
SETTINGS = "preset window size batch text_encoder warmup warmup_batch repeats text_len real_words seed"  # in the report
CHILD_OPTIONS = f"{SETTINGS} threads"  # passed on to every child
TIMED = "one optimizer step: forward (text encoder + image LAVT) + CE loss + backward + AdamW + zero_grad"
CONTENTION = harness.Contention("other_cpu_cores_per_step", "the timed steps")


def run_parent(args: argparse.Namespace) -> int:
    name, lang_dim = TEXT_ENCODERS[args.text_encoder]
    header = [
        f"# LAVT training-step benchmark: Swin-{args.preset} window {args.window}, {args.size}x{args.size}, "
        f"batch {args.batch}, CPU, random weights",
        harness.machine_line(),
        f"Text encoder: {args.text_encoder} ({name} architecture, width {lang_dim}, random init), "
        f"{args.text_len} tokens per expression ({args.real_words} real); text-encoder layers 0-9 trained (official "
        f"recipe; MiniLM has 6), embeddings frozen.",
        f"One step = forward (text encoder + language-aware Swin + decoder) + CE loss + backward + AdamW step + "
        f"zero_grad, as Trainer.train_step. Warm-up {args.warmup} untimed step(s) at batch {args.warmup_batch}, "
        f"then {args.repeats} timed step(s) at batch {args.batch}; s/step = median.",
        "Peak MiB over build = peak RSS (ru_maxrss, high-water mark reset after building model + optimizer and at "
        "every phase boundary) minus the RSS right after that build; every configuration runs in a fresh process.",
    ]
    meta = {**harness.settings(args, SETTINGS), "timed": TIMED}
    return harness.run_configs_parent(
        __file__, args, header, meta, CHILD_OPTIONS, CONTENTION, progress, report, detail=f"batch={args.batch}"
    )


def progress(r: dict[str, Any]) -> str:
    """One configuration's outcome, on the progress stream."""
    return (
        f"{r['median_step_s']:.1f} s/step, {r['s_per_image']:.2f} s/image, peak +{r['peak_over_build_mib']:.0f} "
        f"MiB over build ({r['peak_rss_mib']:.0f} MiB RSS)"
    )


def report(results: list[dict[str, Any]], failed: list[dict[str, Any]]) -> dict[str, Any]:
    """The time and memory tables, parameter counts, and what checkpointing and bf16 change."""
    print(f"text encoder attention: {results[0]['text_encoder_attention']}")
    print()
    harness.print_table(
        ["config", "s/step (median)", "s/image", "forward+loss s", "backward s", "optimizer s", "peak MiB over build",
         "peak RSS MiB", "other procs' CPU, cores (max)"],
        "lrrrrrrrr",
        [
            [r["config"], f"{r['median_step_s']:.2f}", f"{r['s_per_image']:.3f}", f"{r['median_forward_loss_s']:.2f}",
             f"{r['median_backward_s']:.2f}", f"{r['median_optimizer_s']:.2f}", f"{r['peak_over_build_mib']:.0f}",
             f"{r['peak_rss_mib']:.0f}", f"{CONTENTION.most(r):.2f}"]
            for r in results
        ]
        + [[f["config"], f"FAILED: {f['diagnostics']['error']}", *[""] * 7] for f in failed],
    )  # fmt: skip
    print(
        "\nMemory detail, MiB: peak RSS over build in each phase (max over all steps; the overall peak is the "
        "largest), RSS over build after the warm-up step(s), and the tensors autograd saved for backward in a "
        "timed forward (storage bytes, parameters excluded; allocator-independent):\n"
    )
    harness.print_table(
        ["config", "peak in forward+loss", "peak in backward", "peak in optimizer step", "RSS after warm-up",
         "saved for backward"],
        "lrrrrr",
        [
            [r["config"], *(f"{r['peak_over_build_by_phase_mib'][k]:.0f}" for k in ("forward_loss", "backward", "optimizer")),
             "-" if r["rss_after_warmup_mib"] is None else f"{r['rss_after_warmup_mib'] - r['rss_after_build_mib']:.0f}",
             f"{r['saved_for_backward_mib']:.0f}"]
            for r in results
        ],
    )  # fmt: skip
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
                f"({harness.bf16_verdict(ratio)}); peak over build "
                f"{f32['peak_over_build_mib']:.0f} (fp32) vs {bf['peak_over_build_mib']:.0f} MiB (bf16)"
            )
    return {}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = harness.make_parser(
        __doc__, configs_help=f"comma-separated subset of {','.join(CONFIGS)} (default: all four; --quick: fp32,fp32+ckpt)"
    )
    ap.add_argument("--batch", type=int, default=None, help="batch size of the timed steps (default 8; --quick 2)")
    ap.add_argument("--size", type=int, default=None, help="square image side (default 480; --quick 224)")
    ap.add_argument("--preset", default=None, choices=["tiny", "small", "base", "large"], help="default base (--quick tiny)")
    ap.add_argument("--window", type=int, default=None, help="default 12 (--quick 7)")
    ap.add_argument(
        "--text-encoder", default=None, choices=list(TEXT_ENCODERS), help="default bert-base (--quick minilm)"
    )
    harness.add_run_options(ap, runs="step", repeats=1, repeats_help="default 1")
    ap.add_argument(
        "--warmup-batch", type=int, default=1, help="batch of the warm-up steps (default 1: pays one-time costs cheaply)"
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: preset tiny, window 7, 224x224, batch 2, MiniLM, fp32 and fp32+ckpt unless --configs is given",
    )
    args = ap.parse_args(argv)
    harness.fill_defaults(
        args,
        dict(preset="tiny", window=7, size=224, batch=2, text_encoder="minilm", configs="fp32,fp32+ckpt")
        if args.quick
        else dict(preset="base", window=12, size=480, batch=8, text_encoder="bert-base", configs=",".join(CONFIGS)),
    )
    harness.check_options(ap, args, positive="batch size", configs=CONFIGS)
    if not 1 <= args.warmup_batch <= args.batch:
        ap.error("--warmup-batch must be between 1 and --batch")
    return args


def main(argv: list[str] | None = None) -> int:
    return harness.dispatch(parse_args(argv), run_parent, child=run_child)


if __name__ == "__main__":
    sys.exit(main())
