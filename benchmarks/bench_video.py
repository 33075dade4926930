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
  (forward pre/post hooks; four + one Python calls per forward, negligible). All configurations
  are timed in one child process, taking turns (round-robin, the order rotated every round; one
  model per kind serves both precisions), so background load hits all of them alike and each
  ratio is also taken round by round; ``--separate`` times each alone instead.
* memory: a separate pass runs every configuration alone in a fresh subprocess (this script
  re-invoked with the hidden ``--child`` flag; the parent never imports torch, see harness.py)
  for warm-up + 1 forward (with ``--separate``, that child is the timing one too). The child
  records its RSS right after building the model, resets the kernel's RSS high-water mark and
  reports the peak (``ru_maxrss``) over its forwards minus that post-build RSS.

Weights are random (seeded); speed does not depend on their values.
Run ``python benchmarks/bench_video.py --help`` for the options; see benchmarks/README.md.
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

MODELS = {  # model kind -> (description, LAVTConfig.from_preset overrides besides lang_dim)
    "video": ("Video Swin-T + 3D PWAM (structure 12)", dict(video=True, pwam_structure=12)),
    "naive": ("Video Swin-T + 2D PWAM on the clip (structure 1, naive)", dict(video=True, pwam_structure=1)),
    "image": ("image Swin-T + PWAM, frame by frame (T images)", {}),
}
CONFIGS = {f"{m}-{p}": (m, p) for m in MODELS for p in ("fp32", "bf16")}
DEFAULT_CONFIGS = ["video-fp32", "video-bf16", "naive-fp32", "image-fp32"]
LANG_DIM = 768


# =========================================================================================
# child processes: one configuration (memory pass, --separate) or a group taking turns
# =========================================================================================
class ClipModel:
    """One model kind, built with its inputs, that runs timed forwards and says how long its PWAMs and decoder took."""

    def __init__(self, kind: str, args: argparse.Namespace) -> None:
        import torch

        from lavt.config import LAVTConfig
        from lavt.models.lavt import LAVT

        t_frames, s = args.frames, args.size
        t0 = time.perf_counter()
        torch.manual_seed(args.seed)
        self.config = LAVTConfig.from_preset(args.preset, args.window, lang_dim=LANG_DIM, **MODELS[kind][1])
        self.model = LAVT(self.config).eval()
        self.build_s = time.perf_counter() - t0
        self.kind, self.frames, self.size = kind, t_frames, s

        fusions = [stage.fusion for stage in self.model.backbone.stages]
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.n_pwam = sum(p.numel() for f in fusions for p in f.parameters())

        # Inputs: one clip (1, T, 3, S, S) and one expression; the image model gets the T frames as a
        # batch of T images and the expression repeated T times.
        g = torch.Generator().manual_seed(args.seed + 1)
        clip = torch.randn(1, t_frames, 3, s, s, generator=g)
        words = torch.randn(1, args.text_len, LANG_DIM, generator=g)
        mask = torch.zeros(1, args.text_len, dtype=torch.long)
        mask[:, : args.real_words] = 1
        if kind == "image":
            self.inputs = (clip[0], words.expand(t_frames, -1, -1).contiguous(), mask.expand(t_frames, -1).contiguous())
            self.want_shape = (t_frames, 2, s, s)
        else:
            self.inputs = (clip, words, mask)
            self.want_shape = (1, t_frames, 2, s, s)

        # Time inside the PWAMs and the decoder (pre/post forward hooks).
        self.part_s = {"pwam": 0.0, "decoder": 0.0}
        starts: dict[int, float] = {}

        def hooks_for(part: str, module: Any) -> list[Any]:
            def pre(mod: Any, _inp: Any) -> None:
                starts[id(mod)] = time.perf_counter()

            def post(mod: Any, _inp: Any, _out: Any) -> None:
                self.part_s[part] += time.perf_counter() - starts.pop(id(mod))

            return [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

        self.handles = [h for f in fusions for h in hooks_for("pwam", f)] + hooks_for("decoder", self.model.decoder)

    def forward(self, name: str, precision: str, run: harness.Run) -> dict[str, float]:
        """One (warm-up or timed) forward as ``name``: checked, logged; returns its PWAM and decoder seconds."""
        import torch

        from lavt.runtime.precision import autocast

        self.part_s.update(pwam=0.0, decoder=0.0)
        with torch.inference_mode():
            with run.timed(), autocast(precision, torch.device("cpu")):
                out = self.model(self.inputs[0], text_features=self.inputs[1], text_mask=self.inputs[2])
            if tuple(out.shape) != self.want_shape:
                raise RuntimeError(f"{name}: output shape {tuple(out.shape)}, expected {self.want_shape}")
            if not torch.isfinite(out).all():
                raise RuntimeError(f"{name}: non-finite logits")
        part = self.part_s
        harness.log(
            f"    [{name} T={self.frames} {self.size}px] {run.label}: {run.seconds:.2f} s/clip "
            f"({self.frames / run.seconds:.3f} frames/s; PWAMs {part['pwam']:.2f} s, decoder {part['decoder']:.2f} s; "
            f"other processes: {run.other_cores:.2f} cores)"
        )
        return dict(part)

    def timing(self, runs: harness.Repeats, parts: list[dict[str, float]]) -> dict[str, Any]:
        """The report's timing keys from the timed runs and their part times."""
        median = runs.median
        return {
            "times_s": runs.times,
            "parts_s": parts,
            "warmup_times_s": runs.warmup_times,
            "median_clip_s": median,
            "min_clip_s": min(runs.times),
            "spread": harness.spread(runs.times),
            "frames_per_s": self.frames / median,
            "s_per_frame": median / self.frames,
            "median_pwam_s": statistics.median(p["pwam"] for p in parts),
            "median_decoder_s": statistics.median(p["decoder"] for p in parts),
            "other_cpu_cores_per_repeat": runs.other_cores,
        }


def run_child(args: argparse.Namespace) -> None:
    """One configuration alone: build, warm up, time the forwards, measure peak RSS."""
    harness.set_threads(args.threads)
    name = args.configs[0]
    kind, precision = CONFIGS[name]
    memory = harness.PeakRSS()
    subject = ClipModel(kind, args)
    memory.built()
    harness.log(
        f"    [{name}] built in {subject.build_s:.1f} s: {subject.n_params / 1e6:.1f} M parameters (PWAMs "
        f"{subject.n_pwam / 1e6:.1f} M), RSS {memory.after_build_kib / 1024:.0f} MiB"
    )
    runs = harness.Repeats(args.warmup, args.repeats)
    parts = [subject.forward(name, precision, run) for run in runs][args.warmup :]
    for h in subject.handles:
        h.remove()
    peak_over_build = memory.over_build_mib()
    config = subject.config
    harness.emit(
        {
            "config": name,
            "model": kind,
            "description": MODELS[kind][0],
            "precision": precision,
            "frames": args.frames,
            "size": args.size,
            "preset": args.preset,
            "window": args.window,
            "pwam_structure": config.pwam_structure if config.video else None,
            "temporal_window": config.temporal_window if config.video else None,
            "env": harness.torch_env(),
            **subject.timing(runs, parts),
            "peak_over_build_mib": peak_over_build,
            "peak_rss_mib": memory.peak_rss_mib(peak_over_build),  # incl. the build
            **memory.build_report(),
            "build_s": subject.build_s,
            "params_m": subject.n_params / 1e6,
            "pwam_params_m": subject.n_pwam / 1e6,
        }
    )


def run_group_child(args: argparse.Namespace) -> None:
    """The configurations of ``--child-group`` taking turns in this one process; one model per kind
    serves both precisions (the same weights and inputs, only autocast differs)."""
    harness.set_threads(args.threads)
    subjects = {kind: ClipModel(kind, args) for kind in dict.fromkeys(CONFIGS[name][0] for name in args.child_group)}
    turns = harness.RoundRobin(args.child_group, args.warmup, args.repeats)
    parts: dict[str, list[dict[str, float]]] = {name: [] for name in args.child_group}
    for name, run in turns:
        kind, precision = CONFIGS[name]
        part = subjects[kind].forward(name, precision, run)
        if not run.warmup:
            parts[name].append(part)
    turns.emit({name: subjects[CONFIGS[name][0]].timing(turns.schedules[name], parts[name]) for name in parts})


# =========================================================================================
# parent (no torch import: see harness.py)
# =========================================================================================
SETTINGS = "preset window frames size warmup repeats text_len real_words"  # in the report
CHILD_OPTIONS = "frames size preset window warmup repeats text_len real_words seed threads"  # passed on to every child
TIMED = "one forward of (Video) Swin + PWAMs + gates + decoder on one T-frame clip (text encoder excluded)"
CONTENTION = harness.Contention("other_cpu_cores_per_repeat", "the timed forwards")


def run_parent(args: argparse.Namespace) -> int:
    header = [
        f"# Video LAVT inference benchmark: Swin-{args.preset} window {args.window} (video: ({min(args.frames, 8)}, "
        f"{args.window}, {args.window}) windows), clips of T={args.frames} frames at {args.size}x{args.size}, batch 1 "
        f"clip, CPU, eval, torch.inference_mode, random weights",
        harness.machine_line(),
        f"Timed: one forward per measurement, (Video) Swin + PWAMs + gates + decoder + upsampling. NOT timed: the text "
        f"encoder (random word features (1, {args.text_len}, {LANG_DIM}), {args.real_words} real words; repeated T "
        f"times for the image model, which gets the T frames as a batch of T images).",
        f"warmup {args.warmup}, repeats {args.repeats}; s/clip = median; frames/s = T / s/clip. Peak MiB over build = "
        f"peak RSS (ru_maxrss, high-water mark reset after the build) minus the RSS right after building the model; "
        + harness.method_sentence(not args.separate, "--configs (one model per kind serves both precisions)"),
    ]
    meta = {**harness.settings(args, SETTINGS), "lang_dim": LANG_DIM, "seed": args.seed, "timed": TIMED}
    return harness.run_configs_parent(
        __file__, args, header, meta, CHILD_OPTIONS, CONTENTION, progress, report,
        detail=f"T={args.frames} {args.size}px", interleaved=not args.separate,
    )  # fmt: skip


def progress(r: dict[str, Any]) -> str:
    """One configuration's outcome, on the progress stream."""
    clip, fps, peak = r["median_clip_s"], r["frames_per_s"], r["peak_over_build_mib"]
    return f"{clip:.2f} s/clip, {fps:.3f} frames/s, peak +{peak:.0f} MiB over build"


def report(results: list[dict[str, Any]], failed: list[dict[str, Any]]) -> dict[str, Any]:
    """The table, the post-build RSS and the time ratios between the models and precisions."""
    print()
    harness.print_table(
        ["config", "model", "precision", "s/clip (median)", "spread (max-min)/median", "frames/s", "s/frame", "PWAMs s",
         "decoder s", "peak MiB over build", "params M (PWAMs)", "other procs' CPU, cores (max)"],
        "lllrrrrrrrrr",
        [
            [r["config"], r["description"], r["precision"], f"{r['median_clip_s']:.3f}", f"{100 * r['spread']:.1f} %",
             f"{r['frames_per_s']:.3f}",
             f"{r['s_per_frame']:.3f}", f"{r['median_pwam_s']:.3f}", f"{r['median_decoder_s']:.3f}",
             f"{r['peak_over_build_mib']:.0f}", f"{r['params_m']:.1f} ({r['pwam_params_m']:.1f})",
             f"{CONTENTION.most(r):.2f}"]
            for r in results
        ]
        + [[f["config"], f"FAILED: {f['diagnostics']['error']}", *[""] * 10] for f in failed],
    )  # fmt: skip
    print("\nRSS right after the build (incl. the Python/torch runtime; model build RSS in parentheses): " + ", ".join(
        f"{r['config']} {r['rss_after_build_mib']:.0f} MiB ({r['build_rss_mib']:.0f})" for r in results
    ))

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
                ratio = harness.time_ratio(a, b, "median_clip_s", CONTENTION)
                pair = {"precision": precision, "numerator": a["config"], "denominator": b["config"]}
                ratios.append({**pair, **harness.ratio_record(ratio, "ratio")})
                print(
                    f"{what}, {precision}: time ratio {a['config']}/{b['config']} = {harness.ratio_text(ratio)} "
                    f"({a['median_clip_s'] - b['median_clip_s']:+.2f} s/clip; PWAMs {a['median_pwam_s']:.2f} vs "
                    f"{b['median_pwam_s']:.2f} s); peak over build {a['peak_over_build_mib']:.0f} vs "
                    f"{b['peak_over_build_mib']:.0f} MiB"
                )
    for kind in MODELS:
        f32, bf = by_name.get(f"{kind}-fp32"), by_name.get(f"{kind}-bf16")
        if f32 and bf:
            ratio = harness.time_ratio(bf, f32, "median_clip_s", CONTENTION)
            pair = {"precision": "bf16/fp32", "numerator": bf["config"], "denominator": f32["config"]}
            ratios.append({**pair, **harness.ratio_record(ratio, "ratio")})
            print(
                f"bf16/fp32 time ratio, {kind}: {harness.ratio_text(ratio)} "
                f"({harness.bf16_verdict(harness.headline(ratio))}); "
                f"peak over build {f32['peak_over_build_mib']:.0f} (fp32) vs {bf['peak_over_build_mib']:.0f} MiB (bf16)"
            )
    return {"ratios": ratios}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = harness.make_parser(
        __doc__,
        configs_help=f"comma-separated subset of {','.join(CONFIGS)} (default: {','.join(DEFAULT_CONFIGS)}; "
        "--quick: the fp32 ones of those)",
    )
    ap.add_argument("--frames", type=int, default=None, help="frames per clip T (default 8; --quick 2)")
    ap.add_argument("--size", type=int, default=None, help="square frame side (default 480; --quick 96)")
    ap.add_argument("--preset", default="tiny", choices=["tiny", "small", "base"], help="Swin preset (default tiny)")
    ap.add_argument("--window", type=int, default=7, help="spatial window size (default 7)")
    harness.add_run_options(ap, runs="forward", repeats=None, repeats_help="default 2; --quick 1")
    harness.add_interleave_options(ap)
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: T=2, 96x96, 1 repeat, fp32 configurations unless --configs"
    )
    args = ap.parse_args(argv)
    fp32_defaults = [c for c in DEFAULT_CONFIGS if CONFIGS[c][1] == "fp32"]
    harness.fill_defaults(
        args,
        dict(frames=2, size=96, repeats=1, configs=",".join(fp32_defaults))
        if args.quick
        else dict(frames=8, size=480, repeats=2, configs=",".join(DEFAULT_CONFIGS)),
    )
    harness.check_options(ap, args, positive="frames size", configs=CONFIGS)
    return args


def main(argv: list[str] | None = None) -> int:
    return harness.dispatch(parse_args(argv), run_parent, child_group=run_group_child, child=run_child)


if __name__ == "__main__":
    sys.exit(main())
