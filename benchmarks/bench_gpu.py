#!/usr/bin/env python
"""GPU check and speed of LAVT on CUDA: fp32 and bf16 forwards, a bf16 training step.

The CPU-only CI never runs a CUDA kernel (tests/test_gpu_paths.py covers the GPU code paths on
the ``meta`` device and with mocks); this script is the real check on a machine with a GPU, and
the GPU speed reference. With no CUDA device it prints one line and exits 0.

For each model (random weights, seeded):

* ``image``: image LAVT, Swin-B window 12 (``LAVTConfig.from_preset("base", 12)``), on
  ``--batch`` images of ``--size`` px (default 480, the official input);
* ``video``: a small video LAVT, Video Swin-T window (8, 7, 7) with the final 3D PWAM
  (``from_preset("tiny", 7, video=True)``), on one clip of ``--frames`` frames of ``--video-size`` px.

it runs, each ``--warmup`` times untimed and ``--repeats`` times timed:

* ``fp32``: an inference forward (eval mode, ``torch.inference_mode``);
* ``bf16``: the same under ``torch.autocast("cuda", dtype=torch.bfloat16)``;
* ``train-bf16``: one training step: bf16 autocast forward, the training loss (``ce``) in fp32,
  backward, AdamW step (train mode: dropout and drop-path on).

Checks (a failure prints FAIL and the script exits 1): output shapes, finite logits / loss /
gradients, and bf16 against fp32 on the same inputs: max |bf16 - fp32| relative to max |fp32
logit| at most ``--max-rel-diff`` and the argmax masks agreeing on at least
``--min-mask-agreement`` of the pixels. The text encoder is not run: the models get random word
features (L = ``--text-len``, ``--real-words`` of them unmasked).

Timing: ``torch.cuda.synchronize()`` before and inside each timed block, wall time by
``time.perf_counter`` (harness ``Repeats``: median of the repeats, each with the CPU cores other
processes used meanwhile); peak GPU memory per run kind by ``torch.cuda.max_memory_allocated``.
TF32 and cuDNN settings are left as users get them and recorded in the JSON.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/ is not a package
import harness  # noqa: E402

harness.stay_offline()

LANG_DIM = 768
RUNS = ("fp32", "bf16", "train-bf16")
NO_CUDA = "bench_gpu: no CUDA device: nothing to check or time here (the GPU paths run on the meta device in tests/test_gpu_paths.py)"


class CheckFailed(RuntimeError):
    """A GPU result that is wrong (shape, non-finite values, bf16 too far from fp32)."""


def model_inputs(kind: str, args: argparse.Namespace) -> tuple[Any, Any, Any, tuple[int, ...]]:
    """(visual, words, mask, expected logits shape) on the GPU, seeded."""
    import torch

    g = torch.Generator().manual_seed(args.seed + 1)
    if kind == "image":
        b, visual = args.batch, torch.randn(args.batch, 3, args.size, args.size, generator=g)
        want: tuple[int, ...] = (b, 2, args.size, args.size)
    else:
        b, s = 1, args.video_size
        visual = torch.randn(1, args.frames, 3, s, s, generator=g)
        want = (1, args.frames, 2, s, s)
    words = torch.randn(b, args.text_len, LANG_DIM, generator=g)
    mask = torch.zeros(b, args.text_len, dtype=torch.long)
    mask[:, : args.real_words] = 1
    return visual.cuda(), words.cuda(), mask.cuda(), want


def build(kind: str, args: argparse.Namespace) -> Any:
    import torch

    from lavt.config import LAVTConfig
    from lavt.models.lavt import LAVT

    torch.manual_seed(args.seed)
    if kind == "image":
        config = LAVTConfig.from_preset("base", 12, lang_dim=LANG_DIM)
    else:
        config = LAVTConfig.from_preset("tiny", 7, video=True, pwam_structure=12, lang_dim=LANG_DIM)
    return LAVT(config).cuda()


def check_logits(name: str, logits: Any, want: tuple[int, ...]) -> None:
    import torch

    if tuple(logits.shape) != want:
        raise CheckFailed(f"{name}: logits shape {tuple(logits.shape)}, expected {want}")
    if not torch.isfinite(logits).all():
        raise CheckFailed(f"{name}: non-finite logits")


def timed_runs(name: str, args: argparse.Namespace, work: Any) -> dict[str, Any]:
    """``work()`` warmed up and timed (synchronised), with its peak GPU memory; returns the timing keys."""
    import torch

    runs = harness.Repeats(args.warmup, args.repeats)
    torch.cuda.reset_peak_memory_stats()
    for run in runs:
        torch.cuda.synchronize()
        with run.timed():
            work()
            torch.cuda.synchronize()
        harness.log(f"    [{name}] {run.label}: {run.seconds * 1e3:.1f} ms (other processes: {run.other_cores:.2f} cores)")
    return {
        "times_s": runs.times,
        "median_s": runs.median,
        "min_s": min(runs.times),
        "spread": harness.spread(runs.times),
        "other_cpu_cores": runs.other_cores,
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20,
    }


def bench_model(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every run of one model: checks, bf16 vs fp32, timings."""
    import torch

    from lavt.engine.losses import build_loss

    model = build(kind, args).eval()
    visual, words, mask, want = model_inputs(kind, args)
    shape = "x".join(str(d) for d in visual.shape)

    def forward() -> Any:
        return model(visual, text_features=words, text_mask=mask)

    def forward_bf16() -> Any:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return forward()

    with torch.inference_mode():
        fp32, bf16 = forward().float(), forward_bf16().float()
        check_logits(f"{kind} fp32", fp32, want)
        check_logits(f"{kind} bf16", bf16, want)
        rel_diff = float((bf16 - fp32).abs().max() / fp32.abs().max().clamp_min(1e-12))
        channel = 2 if kind == "video" else 1
        agreement = float((bf16.argmax(channel) == fp32.argmax(channel)).float().mean())
        timings = {"fp32": timed_runs(f"{kind} fp32", args, forward), "bf16": timed_runs(f"{kind} bf16", args, forward_bf16)}
    if rel_diff > args.max_rel_diff or agreement < args.min_mask_agreement:
        raise CheckFailed(
            f"{kind}: bf16 vs fp32 max abs diff {rel_diff:.3g} of max |logit| (limit {args.max_rel_diff}), "
            f"masks agree on {agreement:.4f} of pixels (limit {args.min_mask_agreement})"
        )

    model.train()
    loss_fn = build_loss("ce")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    target = torch.randint(0, 2, (want[0] * (want[1] if kind == "video" else 1), *want[-2:]), device="cuda")

    def train_step(check: bool = False) -> None:
        """One step; ``check`` (once, untimed: each check waits for the GPU) tests logits, loss, gradients."""
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = forward()
        loss = loss_fn(logits.flatten(0, 1).float() if kind == "video" else logits.float(), target)
        loss.backward()
        if check:
            check_logits(f"{kind} train-bf16", logits, want)
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            if not grads or not torch.isfinite(loss) or not all(torch.isfinite(g).all() for g in grads):
                raise CheckFailed(f"{kind} train-bf16: no gradients, or a non-finite loss or gradient")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    train_step(check=True)
    timings["train-bf16"] = timed_runs(f"{kind} train-bf16", args, train_step)
    return {"model": kind, "input": shape, "bf16_rel_max_diff": rel_diff, "bf16_mask_agreement": agreement,
            "timings": timings}


def gpu_env() -> dict[str, Any]:
    import torch

    props = torch.cuda.get_device_properties(0)
    return {
        **harness.torch_env(),
        "gpu": props.name,
        "gpu_capability": f"{props.major}.{props.minor}",
        "gpu_memory_mib": props.total_memory / 2**20,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "bf16_supported": torch.cuda.is_bf16_supported(),
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
    }


def report(results: list[dict[str, Any]]) -> None:
    rows = []
    for r in results:
        for run in RUNS:
            t = r["timings"][run]
            rows.append([r["model"], run, r["input"], f"{t['median_s'] * 1e3:.1f}", f"{t['min_s'] * 1e3:.1f}",
                         f"{t['spread']:.0%}", f"{t['peak_gpu_mib']:.0f}"])
    harness.print_table(["model", "run", "input", "median ms", "min ms", "spread", "peak GPU MiB"], "lllrrrr", rows)
    print()
    for r in results:
        print(f"{r['model']}: bf16 vs fp32 max abs diff {r['bf16_rel_max_diff']:.3g} of max |logit|, "
              f"masks agree on {r['bf16_mask_agreement']:.2%} of pixels")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = harness.make_parser(__doc__)
    harness.add_run_options(ap, runs="run", repeats=10, repeats_help="default 10")
    ap.add_argument("--models", default="image,video", help="which models: image, video or both (default image,video)")
    ap.add_argument("--size", type=int, default=480, help="image side in px (default 480, the official input)")
    ap.add_argument("--batch", type=int, default=1, help="images per image batch (default 1)")
    ap.add_argument("--frames", type=int, default=8, help="frames of the video clip (default 8)")
    ap.add_argument("--video-size", type=int, default=224, help="video frame side in px (default 224)")
    ap.add_argument("--max-rel-diff", type=float, default=0.1, help="bf16 vs fp32 limit (default 0.1)")
    ap.add_argument("--min-mask-agreement", type=float, default=0.9, help="bf16 vs fp32 limit (default 0.9)")
    args = ap.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not args.models or set(args.models) - {"image", "video"}:
        ap.error("--models: choose from image,video")
    harness.check_options(ap, args, "size batch frames video_size")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(NO_CUDA)
        return 0
    started = time.perf_counter()
    harness.set_threads(args.threads)
    env = gpu_env()
    print(harness.machine_line())
    print(f"{harness.torch_line(env)} | GPU {env['gpu']} (sm {env['gpu_capability']}, {env['gpu_memory_mib']:.0f} MiB) "
          f"| CUDA {env['cuda']} | TF32 matmul {env['matmul_allow_tf32']} / cuDNN {env['cudnn_allow_tf32']}\n")
    results, failures = [], []
    for kind in args.models:
        harness.log(f"{kind}:")
        try:
            results.append(bench_model(kind, args))
        except CheckFailed as e:
            failures.append(str(e))
            print(f"FAIL {e}")
        torch.cuda.empty_cache()
    if results:
        report(results)
    meta = {"models": args.models, "size": args.size, "batch": args.batch, "frames": args.frames,
            "video_size": args.video_size, "text_len": args.text_len, "real_words": args.real_words,
            "warmup": args.warmup, "repeats": args.repeats, "seed": args.seed}
    harness.finish(started, args.json, env, meta, results=results, failures=failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
