#!/usr/bin/env python
"""CPU inference throughput (frames/s) and peak memory of video LAVT (Video Swin-T, 3D PWAM).

Measures, for every configuration (``--configs``):

* ``video-fp32`` / ``video-bf16``: video LAVT with Video Swin-T,
  ``LAVTConfig.from_preset("tiny", 7, video=True, pwam_structure=12, lang_dim=768)`` (window
  (8, 7, 7), the final 3D PWAM of Table 1, structure 12), on one clip ``(1, T, 3, S, S)``;
  fp32 or ``torch.autocast("cpu", dtype=torch.bfloat16)``.
* ``naive-fp32`` / ``naive-bf16``: the same with ``pwam_structure=1`` (the naive video LAVT: the
  2D PWAM on the flattened clip, no spatio-temporal convolutions). video vs naive = the cost of
  the 3D PWAM.
* ``image-fp32`` / ``image-bf16``: the image LAVT tiny, ``LAVTConfig.from_preset("tiny", 7,
  lang_dim=768)``, run frame by frame: the T frames as a batch of T images, the expression
  repeated T times. naive vs image = the cost of Video Swin (3D windows over time) vs Swin per
  frame.

Default: video-fp32, video-bf16, naive-fp32, image-fp32.

* time: ``time.perf_counter`` around one ``model(clip, text_features=words, text_mask=mask)``
  call (language-aware (Video) Swin + PWAMs + gates + decoder + final upsampling), eval mode,
  ``torch.inference_mode``. The text encoder is NOT timed: the model gets random word features
  ``(1, L, 768)`` (L = 20, 12 real words). s/clip = median over the repeats; frames/s = T / s/clip.
  The time spent inside the four PWAM modules (``stage.fusion``) and the decoder is measured too
  (forward pre/post hooks; four + one Python calls per forward, negligible).
* memory: every configuration runs in a fresh subprocess (this script re-invoked with the hidden
  ``--child`` flag; the parent never imports torch, see bench_inference.py). The child records
  its RSS right after building the model, resets the kernel's RSS high-water mark and reports the
  peak (``ru_maxrss``) over the warm-up and timed forwards minus that post-build RSS.

Weights are random (seeded); speed does not depend on their values.
Run ``python benchmarks/bench_video.py --help`` for the options; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
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
# and does not import torch: the parent process never imports torch, because a child started by
# fork/vfork + exec inherits the parent's RSS high-water mark in ru_maxrss.
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

MODELS = {  # model kind -> (description, LAVTConfig.from_preset overrides besides lang_dim)
    "video": ("Video Swin-T + 3D PWAM (structure 12)", dict(video=True, pwam_structure=12)),
    "naive": ("Video Swin-T + 2D PWAM on the clip (structure 1, naive)", dict(video=True, pwam_structure=1)),
    "image": ("image Swin-T + PWAM, frame by frame (T images)", {}),
}
CONFIGS = {f"{m}-{p}": (m, p) for m in MODELS for p in ("fp32", "bf16")}
DEFAULT_CONFIGS = ["video-fp32", "video-bf16", "naive-fp32", "image-fp32"]
LANG_DIM = 768


# =========================================================================================
# child process: one configuration
# =========================================================================================
def run_child(args: argparse.Namespace) -> None:
    """One configuration: build, warm up, time the forwards, measure peak RSS."""
    import torch

    from lavt.config import LAVTConfig
    from lavt.models.lavt import LAVT

    if args.threads:
        torch.set_num_threads(args.threads)
    name = args.configs[0]
    kind, precision = CONFIGS[name]
    t_frames, s = args.frames, args.size
    tag = f"[{name} T={t_frames} {s}px]"

    rss_before = current_rss_kib()
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    config = LAVTConfig.from_preset(args.preset, args.window, lang_dim=LANG_DIM, **MODELS[kind][1])
    model = LAVT(config).eval()
    build_s = time.perf_counter() - t0
    rss_built = current_rss_kib()
    maxrss_build = max_rss_kib()
    # Start the peak from here: a transient during import/build above the post-build RSS must not
    # hide part of the inference peak.
    was_reset = reset_peak_rss()
    maxrss_built = max_rss_kib()
    baseline = rss_built if was_reset else maxrss_built

    n_params = sum(p.numel() for p in model.parameters())
    fusions = [stage.fusion for stage in model.backbone.stages]
    n_pwam = sum(p.numel() for f in fusions for p in f.parameters())
    log(
        f"    {tag} built in {build_s:.1f} s: {n_params / 1e6:.1f} M parameters (PWAMs {n_pwam / 1e6:.1f} M), "
        f"RSS {rss_built / 1024:.0f} MiB"
    )

    # Inputs: one clip (1, T, 3, S, S) and one expression; the image model gets the T frames as a
    # batch of T images and the expression repeated T times.
    g = torch.Generator().manual_seed(args.seed + 1)
    clip = torch.randn(1, t_frames, 3, s, s, generator=g)
    words = torch.randn(1, args.text_len, LANG_DIM, generator=g)
    mask = torch.zeros(1, args.text_len, dtype=torch.long)
    mask[:, : args.real_words] = 1
    if kind == "image":
        inputs = (clip[0], words.expand(t_frames, -1, -1).contiguous(), mask.expand(t_frames, -1).contiguous())
        want_shape = (t_frames, 2, s, s)
    else:
        inputs = (clip, words, mask)
        want_shape = (1, t_frames, 2, s, s)

    # Time inside the PWAMs and the decoder (pre/post forward hooks).
    part_s = {"pwam": 0.0, "decoder": 0.0}
    starts: dict[int, float] = {}

    def hooks_for(part: str, module: Any) -> list[Any]:
        def pre(mod: Any, _inp: Any) -> None:
            starts[id(mod)] = time.perf_counter()

        def post(mod: Any, _inp: Any, _out: Any) -> None:
            part_s[part] += time.perf_counter() - starts.pop(id(mod))

        return [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    handles = [h for f in fusions for h in hooks_for("pwam", f)] + hooks_for("decoder", model.decoder)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()

    hz = os.sysconf("SC_CLK_TCK")
    times: list[float] = []
    parts: list[dict[str, float]] = []
    other_cores: list[float] = []  # CPU time other processes took during each timed forward
    warmup_times: list[float] = []
    with torch.inference_mode():
        for i in range(args.warmup + args.repeats):
            part_s.update(pwam=0.0, decoder=0.0)
            busy0, _ = cpu_busy_jiffies()
            own0 = self_cpu_seconds()
            t_a = time.perf_counter()
            with ctx:
                out = model(inputs[0], text_features=inputs[1], text_mask=inputs[2])
            dt = time.perf_counter() - t_a
            busy1, _ = cpu_busy_jiffies()
            other = max(0.0, (busy1 - busy0) / hz - (self_cpu_seconds() - own0)) / dt
            if tuple(out.shape) != want_shape:
                raise RuntimeError(f"{name}: output shape {tuple(out.shape)}, expected {want_shape}")
            if not torch.isfinite(out).all():
                raise RuntimeError(f"{name}: non-finite logits")
            del out
            warm = i < args.warmup
            kind_txt = f"warmup {i + 1}/{args.warmup}" if warm else f"repeat {i - args.warmup + 1}/{args.repeats}"
            log(
                f"    {tag} {kind_txt}: {dt:.2f} s/clip ({t_frames / dt:.3f} frames/s; PWAMs {part_s['pwam']:.2f} s, "
                f"decoder {part_s['decoder']:.2f} s; other processes: {other:.2f} cores)"
            )
            if warm:
                warmup_times.append(dt)
                continue
            times.append(dt)
            parts.append(dict(part_s))
            other_cores.append(other)
    for h in handles:
        h.remove()
    maxrss_end = max_rss_kib()
    median = statistics.median(times)
    emit(
        {
            "config": name,
            "model": kind,
            "description": MODELS[kind][0],
            "precision": precision,
            "frames": t_frames,
            "size": s,
            "preset": args.preset,
            "window": args.window,
            "pwam_structure": config.pwam_structure if config.video else None,
            "temporal_window": config.temporal_window if config.video else None,
            "env": {
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "capability": torch.backends.cpu.get_cpu_capability(),
            },
            "times_s": times,
            "parts_s": parts,
            "warmup_times_s": warmup_times,
            "median_clip_s": median,
            "min_clip_s": min(times),
            "frames_per_s": t_frames / median,
            "s_per_frame": median / t_frames,
            "median_pwam_s": statistics.median(p["pwam"] for p in parts),
            "median_decoder_s": statistics.median(p["decoder"] for p in parts),
            "other_cpu_cores_per_repeat": other_cores,
            "peak_over_build_mib": max(0, maxrss_end - baseline) / 1024,
            "peak_rss_mib": max(maxrss_build, maxrss_end) / 1024,  # incl. the build
            "peak_rss_reset_after_build": was_reset,
            "rss_before_build_mib": rss_before / 1024,
            "rss_after_build_mib": rss_built / 1024,
            "build_rss_mib": (rss_built - rss_before) / 1024,
            "build_s": build_s,
            "params_m": n_params / 1e6,
            "pwam_params_m": n_pwam / 1e6,
        }
    )


# =========================================================================================
# parent (no torch import: see the note at the bench_inference import)
# =========================================================================================
def child_flags(args: argparse.Namespace, config: str) -> list[str]:
    flags = [
        "--child", "--configs", config, "--frames", str(args.frames), "--size", str(args.size),
        "--preset", args.preset, "--window", str(args.window), "--warmup", str(args.warmup),
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
    header = [
        f"# Video LAVT inference benchmark: Swin-{args.preset} window {args.window} (video: ({min(args.frames, 8)}, "
        f"{args.window}, {args.window}) windows), clips of T={args.frames} frames at {args.size}x{args.size}, batch 1 "
        f"clip, CPU, eval, torch.inference_mode, random weights",
        f"CPU: {cpu_model()} ({os.cpu_count()} logical cores; flags: {cpu_flags()}) | python "
        f"{platform.python_version()} | {platform.platform()}",
        f"Timed: one forward per measurement, (Video) Swin + PWAMs + gates + decoder + upsampling. NOT timed: the text "
        f"encoder (random word features (1, {args.text_len}, {LANG_DIM}), {args.real_words} real words; repeated T "
        f"times for the image model, which gets the T frames as a batch of T images).",
        f"warmup {args.warmup}, repeats {args.repeats}; s/clip = median; frames/s = T / s/clip. Peak MiB over build = "
        f"peak RSS (ru_maxrss, high-water mark reset after the build) minus the RSS right after building the model; "
        f"every configuration runs in a fresh process.",
    ]
    for line in header:
        print(line, flush=True)

    results: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for idx, config in enumerate(args.configs, 1):
        log(
            f"[{idx}/{len(args.configs)}] {config} T={args.frames} {args.size}px "
            f"(elapsed {fmt_secs(time.perf_counter() - t_start)})"
        )
        res, diag = spawn(child_flags(args, config))
        if res is None:
            failed.append({"config": config, "diagnostics": diag})
            continue
        res["diagnostics"] = diag
        results.append(res)
        log(
            f"    -> {res['median_clip_s']:.2f} s/clip, {res['frames_per_s']:.3f} frames/s, peak "
            f"+{res['peak_over_build_mib']:.0f} MiB over build; other processes used up to "
            f"{max(res['other_cpu_cores_per_repeat']):.2f} cores during the timed forwards (child wall "
            f"{fmt_secs(diag['wall_s'])})"
        )
    if not results:
        print("ERROR: every configuration failed.", file=sys.stderr)
        return 1

    env = results[0]["env"]
    print(f"torch {env['torch']} | threads {env['threads']} | ATen capability {env['capability']}")
    print(
        "\n| config | model | precision | s/clip (median) | frames/s | s/frame | PWAMs s | decoder s "
        "| peak MiB over build | params M (PWAMs) | other procs' CPU, cores (max) |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['config']} | {r['description']} | {r['precision']} | {r['median_clip_s']:.3f} "
            f"| {r['frames_per_s']:.3f} | {r['s_per_frame']:.3f} | {r['median_pwam_s']:.3f} "
            f"| {r['median_decoder_s']:.3f} | {r['peak_over_build_mib']:.0f} "
            f"| {r['params_m']:.1f} ({r['pwam_params_m']:.1f}) | {max(r['other_cpu_cores_per_repeat']):.2f} |"
        )
    for f in failed:
        print(f"| {f['config']} | FAILED: {f['diagnostics']['error']} | | | | | | | | | |")
    print("\nRSS right after the build (incl. the Python/torch runtime; model build RSS in parentheses): " + ", ".join(
        f"{r['config']} {r['rss_after_build_mib']:.0f} MiB ({r['build_rss_mib']:.0f})" for r in results
    ))
    busy = max(max(r["other_cpu_cores_per_repeat"]) for r in results)
    if busy > 0.2:
        print(
            f"WARNING: other processes used up to {busy:.2f} CPU cores during the timed forwards (last column): "
            f"those times are inflated; rerun on an idle machine for clean numbers."
        )

    by_name = {r["config"]: r for r in results}
    ratios: list[dict[str, Any]] = []
    print()
    for precision in ("fp32", "bf16"):
        video, naive, image = (by_name.get(f"{m}-{precision}") for m in MODELS)
        for a, b, what in (
            (video, naive, "3D PWAM (structure 12) vs naive 2D PWAM (structure 1)"),
            (naive, image, "Video Swin on the clip vs image Swin frame by frame"),
            (video, image, "video LAVT vs image LAVT frame by frame"),
        ):
            if a and b:
                ratio = a["median_clip_s"] / b["median_clip_s"]
                ratios.append({"precision": precision, "numerator": a["config"], "denominator": b["config"], "ratio": ratio})
                print(
                    f"{what}, {precision}: time ratio {a['config']}/{b['config']} = {ratio:.2f} "
                    f"({a['median_clip_s'] - b['median_clip_s']:+.2f} s/clip; PWAMs {a['median_pwam_s']:.2f} vs "
                    f"{b['median_pwam_s']:.2f} s); peak over build {a['peak_over_build_mib']:.0f} vs "
                    f"{b['peak_over_build_mib']:.0f} MiB"
                )
    for kind in MODELS:
        f32, bf = by_name.get(f"{kind}-fp32"), by_name.get(f"{kind}-bf16")
        if f32 and bf:
            ratio = bf["median_clip_s"] / f32["median_clip_s"]
            ratios.append({"precision": "bf16/fp32", "numerator": bf["config"], "denominator": f32["config"], "ratio": ratio})
            print(
                f"bf16/fp32 time ratio, {kind}: {ratio:.2f} ({'bf16 SLOWER than fp32' if ratio > 1 else 'bf16 faster'}); "
                f"peak over build {f32['peak_over_build_mib']:.0f} (fp32) vs {bf['peak_over_build_mib']:.0f} MiB (bf16)"
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
                "frames": args.frames,
                "size": args.size,
                "warmup": args.warmup,
                "repeats": args.repeats,
                "text_len": args.text_len,
                "real_words": args.real_words,
                "lang_dim": LANG_DIM,
                "seed": args.seed,
                "timed": "one forward of (Video) Swin + PWAMs + gates + decoder on one T-frame clip (text encoder excluded)",
                "total_wall_s": total,
            },
            "results": results,
            "failed": failed,
            "ratios": ratios,
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
        help=f"comma-separated subset of {','.join(CONFIGS)} (default: {','.join(DEFAULT_CONFIGS)}; "
        "--quick: the fp32 ones of those)",
    )
    ap.add_argument("--frames", type=int, default=None, help="frames per clip T (default 8; --quick 2)")
    ap.add_argument("--size", type=int, default=None, help="square frame side (default 480; --quick 96)")
    ap.add_argument("--preset", default="tiny", choices=["tiny", "small", "base"], help="Swin preset (default tiny)")
    ap.add_argument("--window", type=int, default=7, help="spatial window size (default 7)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed forwards before timing (default 1)")
    ap.add_argument("--repeats", type=int, default=None, help="timed forwards; the median is reported (default 2; --quick 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    ap.add_argument("--text-len", type=int, default=20, help="words per expression (default 20)")
    ap.add_argument("--real-words", type=int, default=12, help="unmasked words per expression (default 12)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write all numbers to this JSON file")
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: T=2, 96x96, 1 repeat, fp32 configurations unless --configs"
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    fp32_defaults = [c for c in DEFAULT_CONFIGS if CONFIGS[c][1] == "fp32"]
    defaults = (
        dict(frames=2, size=96, repeats=1, configs=",".join(fp32_defaults))
        if args.quick
        else dict(frames=8, size=480, repeats=2, configs=",".join(DEFAULT_CONFIGS))
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown or not args.configs:
        ap.error(f"--configs: unknown {unknown or 'empty list'}; choose from {','.join(CONFIGS)}")
    if args.repeats < 1 or args.warmup < 0 or args.frames < 1 or args.size < 1:
        ap.error("need --repeats >= 1, --warmup >= 0 and a positive --frames and --size")
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
