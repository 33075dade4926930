#!/usr/bin/env python
"""GPU check and speed of LAVT on CUDA: precisions, attention kernels, batch sizes, training with and without checkpointing.

The CPU-only CI never runs a CUDA kernel (tests/test_gpu_paths.py covers the GPU code paths on
the ``meta`` device and with mocks, and runs this script's measuring code on the CPU with a tiny
model); this script is the real check on a machine with a GPU, and the GPU speed reference. One
run measures everything below. With no CUDA device it prints one line and exits 0 (bad options
are refused first, with a one-line error and exit status 2).

Models (random weights, seeded; ``--models``, default both):

* ``image``: image LAVT, Swin-B window 12 (``LAVTConfig.from_preset("base", 12)``), on batches
  of ``--batch-sizes`` images (default 1 and 8) of ``--size`` px (default 480, the official input);
* ``video``: a small video LAVT, Video Swin-T window (8, 7, 7) with the final 3D PWAM
  (``from_preset("tiny", 7, video=True)``), on one clip of ``--frames`` frames of ``--video-size`` px
  (batch 1 clip for every row).

Rows (``plan_runs``), per model and batch size:

* inference forwards (eval mode, ``torch.inference_mode``) in each of ``--precisions``:
  ``fp32`` (TF32 off: ``torch.backends.cuda.matmul.allow_tf32`` and ``torch.backends.cudnn.allow_tf32``
  False), ``tf32`` (fp32 with both flags True), ``bf16`` / ``fp16`` (``torch.autocast("cuda", dtype)``,
  TF32 off); the flags are restored after every row;
* each of them with SDPA as torch picks it (``auto``) and restricted by
  ``torch.nn.attention.sdpa_kernel`` to each backend of ``--sdpa`` (default ``flash efficient
  math``). A backend that cannot run the model's attention in that precision (flash: no fp32, no
  ``attn_mask``) is reported ``unavailable`` with the reason torch gives, not a crash;
* training steps (``--train-batch`` images, default 8; video: one clip) in ``--train-precision``
  (default bf16), with and without activation checkpointing (``--checkpointing off on``:
  ``stage.activation_checkpointing`` on every backbone stage, as the trainer sets it for
  ``train.activation_checkpointing=true``): autocast forward, the training loss (``ce``) in fp32,
  backward (through a ``GradScaler`` for fp16), AdamW step (train mode: dropout and drop-path on).

Every row runs once untimed to check it (and to see which attention kernel ran), then
``--warmup`` times untimed and ``--repeats`` times timed. Which kernel ran: every
``scaled_dot_product_attention`` call of the checking run is asked ``torch._fused_sdp_choice``
(the choice SDPA itself makes) with the call's arguments, counted per backend.

Checks (a failure prints FAIL, the other rows still run, the script exits 1): output shapes,
finite logits / loss / gradients (fp16: the GradScaler may skip a first step whose gradients
overflow, as in training; ``grads_finite`` in the JSON), every inference row against the fp32 forward (TF32 off, SDPA
auto) on the same inputs: max |row - fp32| relative to max |fp32 logit| at most
``--max-rel-diff`` and the argmax masks agreeing on at least ``--min-mask-agreement`` of the
pixels; checkpointed block calls in the training step where checkpointing is on and none where
it is off. A row that runs out of GPU memory is reported ``out of memory`` (not a failure). The
text encoder is not run: the models get random word features (L = ``--text-len``,
``--real-words`` of them unmasked).

Timing: ``torch.cuda.synchronize()`` before and inside each timed block, wall time by
``time.perf_counter`` (harness ``Repeats``: median of the repeats, each with the CPU cores other
processes used meanwhile). Peak GPU memory per row: ``torch.cuda.max_memory_allocated`` after
``torch.cuda.reset_peak_memory_stats()`` at the row's start (the model, its inputs and the fp32
reference logits are resident then: ``resident_gpu_mib`` in the JSON). Output: one table (stdout),
progress on stderr, ``--json FILE`` with every number.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, NoReturn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/ is not a package
import harness  # noqa: E402

harness.stay_offline()

LANG_DIM = 768
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
SDPA_BACKENDS = ("flash", "efficient", "math", "cudnn")  # restricted rows; "auto" = torch's own choice
SDPA_ENUM = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "math": "MATH", "cudnn": "CUDNN_ATTENTION"}
KERNEL_NAMES = {v: k for k, v in SDPA_ENUM.items()}
NO_KERNEL = ("No available kernel", "No viable backend")  # what SDPA raises when the allowed backends cannot run
NO_CUDA = "bench_gpu: no CUDA device: nothing to check or time here (the GPU paths run on the meta device in tests/test_gpu_paths.py)"


class CheckFailed(RuntimeError):
    """A result that is wrong (shape, non-finite values, too far from fp32, checkpointing not applied).

    ``details``: what was measured before the check failed (kept in the row's results)."""

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


class Unavailable(RuntimeError):
    """The SDPA backend a row is restricted to cannot run the model's attention (with torch's reasons)."""


@dataclass(frozen=True)
class Row:
    """One measured configuration."""

    model: str  # image | video
    mode: str  # infer | train
    batch: int  # images (video: clips)
    precision: str  # fp32 | tf32 | bf16 | fp16
    sdpa: str = "auto"  # auto | flash | efficient | math | cudnn
    checkpointing: bool = False

    @property
    def name(self) -> str:
        if self.mode == "train":
            return f"{self.model} b{self.batch} train-{self.precision}{'+ckpt' if self.checkpointing else ''}"
        return f"{self.model} b{self.batch} {self.precision} sdpa={self.sdpa}"


# ----------------------------------------------------------------------------------------------
# command line and the plan
# ----------------------------------------------------------------------------------------------
def _one_line_errors(ap: argparse.ArgumentParser) -> None:
    """Errors as one line ``bench_gpu: error: ...`` and exit status 2 (argparse prints the usage too)."""

    def error(message: str) -> NoReturn:
        ap.exit(2, f"bench_gpu: error: {' '.join(message.split())} (see `{ap.prog} --help`)\n")

    ap.error = error  # type: ignore[method-assign]


def _dedupe(values: list[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Options, every value checked here (before CUDA is looked for), so that bad ones fail at once."""
    ap = harness.make_parser(__doc__)
    _one_line_errors(ap)
    harness.add_run_options(ap, runs="run", repeats=10, repeats_help="default 10")
    ap.add_argument("--models", default="image,video", help="which models: image, video or both (default image,video)")
    ap.add_argument("--size", type=int, default=480, help="image side in px (default 480, the official input)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=None, metavar="N",
                    help="image batch sizes of the inference rows (default 1 8)")
    ap.add_argument("--batch", type=int, default=None, help="one image batch size: the same as --batch-sizes N")
    ap.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS, metavar="P",
                    help="inference precisions: fp32 tf32 bf16 fp16 (default all four)")
    ap.add_argument("--sdpa", nargs="+", default=["flash", "efficient", "math"], choices=(*SDPA_BACKENDS, "none"),
                    metavar="B", help="SDPA backends to restrict to, each row beside torch's own choice: flash "
                    "efficient math cudnn, or none (default flash efficient math)")
    ap.add_argument("--train-batch", type=int, default=8, help="images per training step (default 8; video: 1 clip)")
    ap.add_argument("--train-precision", default="bf16", choices=(*PRECISIONS, "none"),
                    help="precision of the training rows, or none for no training rows (default bf16)")
    ap.add_argument("--checkpointing", nargs="+", default=["off", "on"], choices=("off", "on"),
                    help="training rows without / with activation checkpointing (default off on)")
    ap.add_argument("--frames", type=int, default=8, help="frames of the video clip (default 8)")
    ap.add_argument("--video-size", type=int, default=224, help="video frame side in px (default 224)")
    ap.add_argument("--max-rel-diff", type=float, default=0.1,
                    help="limit of max |row - fp32| / max |fp32 logit| (default 0.1)")
    ap.add_argument("--min-mask-agreement", type=float, default=0.9,
                    help="limit of the pixels whose argmax agrees with fp32 (default 0.9)")
    args = ap.parse_args(argv)

    args.models = _dedupe([m.strip() for m in args.models.split(",") if m.strip()])
    if not args.models or set(args.models) - {"image", "video"}:
        ap.error("--models: choose from image,video")
    if args.batch is not None:
        if args.batch_sizes is not None:
            ap.error("give --batch-sizes or --batch, not both")
        if args.batch < 1:
            ap.error("--batch must be positive")
        args.batch_sizes = [args.batch]
    args.batch_sizes = _dedupe(args.batch_sizes or [1, 8])
    args.precisions = _dedupe(args.precisions)
    if "none" in args.sdpa and len(args.sdpa) > 1:
        ap.error("--sdpa none cannot be combined with backends")
    args.sdpa = [] if args.sdpa == ["none"] else _dedupe(args.sdpa)
    args.checkpointing = [c == "on" for c in _dedupe(args.checkpointing)]
    harness.check_options(ap, args, "size batch_sizes train_batch frames video_size")
    if args.threads is not None and args.threads < 0:
        ap.error("--threads must be >= 0 (0: torch's default)")
    if not args.max_rel_diff > 0:
        ap.error("--max-rel-diff must be positive")
    if not 0 <= args.min_mask_agreement <= 1:
        ap.error("--min-mask-agreement must be between 0 and 1")
    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        ap.error(f"--json {args.json}: its folder does not exist")
    return args


def plan_runs(args: argparse.Namespace) -> list[Row]:
    """Every row of one run, in the order they run: per model, per batch size, precision x SDPA, then training."""
    rows = []
    for model in args.models:
        batches = args.batch_sizes if model == "image" else [1]
        for batch in batches:
            for precision in args.precisions:
                rows += [Row(model, "infer", batch, precision, sdpa) for sdpa in ("auto", *args.sdpa)]
        if args.train_precision != "none":
            batch = args.train_batch if model == "image" else 1
            rows += [Row(model, "train", batch, args.train_precision, checkpointing=c) for c in args.checkpointing]
    return rows


# ----------------------------------------------------------------------------------------------
# model, inputs, contexts
# ----------------------------------------------------------------------------------------------
def build(kind: str, args: argparse.Namespace, device: Any) -> Any:
    import torch

    from lavt.config import LAVTConfig
    from lavt.models.lavt import LAVT

    torch.manual_seed(args.seed)
    if kind == "image":
        config = LAVTConfig.from_preset("base", 12, lang_dim=LANG_DIM)
    else:
        config = LAVTConfig.from_preset("tiny", 7, video=True, pwam_structure=12, lang_dim=LANG_DIM)
    return LAVT(config).to(device)


def model_inputs(kind: str, batch: int, args: argparse.Namespace, device: Any, lang_dim: int = LANG_DIM
                 ) -> tuple[Any, Any, Any, tuple[int, ...]]:
    """(visual, words, mask, expected logits shape) on ``device``, seeded."""
    import torch

    g = torch.Generator().manual_seed(args.seed + batch)
    if kind == "image":
        visual = torch.randn(batch, 3, args.size, args.size, generator=g)
        want: tuple[int, ...] = (batch, 2, args.size, args.size)
    else:
        s = args.video_size
        visual = torch.randn(batch, args.frames, 3, s, s, generator=g)
        want = (batch, args.frames, 2, s, s)
    words = torch.randn(batch, args.text_len, lang_dim, generator=g)
    mask = torch.zeros(batch, args.text_len, dtype=torch.long)
    mask[:, : args.real_words] = 1
    return visual.to(device), words.to(device), mask.to(device), want


@contextlib.contextmanager
def tf32(on: bool):
    """TF32 for matmuls and cuDNN convolutions on or off, restored afterwards."""
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def autocast(precision: str, device: Any) -> Any:
    """bf16 / fp16 autocast on ``device``; none for fp32 and tf32."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def sdpa_restricted(sdpa: str) -> Any:
    """``sdpa_kernel`` allowing only that backend; nothing for ``auto``."""
    if sdpa == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([getattr(SDPBackend, SDPA_ENUM[sdpa])])


@contextlib.contextmanager
def attention_kernels(counts: Counter):
    """Counts, per backend, the kernel SDPA picks for each ``scaled_dot_product_attention`` call.

    Untimed runs only: each call first asks ``torch._fused_sdp_choice`` (SDPA's own choice, under
    the current ``sdpa_kernel`` restriction) with the call's arguments, cast as autocast will cast
    them. When no allowed backend can run, that raises as SDPA would.
    """
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend

    original = F.scaled_dot_product_attention
    choose = getattr(torch, "_fused_sdp_choice", None)

    def spy(query: Any, key: Any, value: Any, attn_mask: Any = None, dropout_p: float = 0.0,
            is_causal: bool = False, scale: float | None = None, **kwargs: Any) -> Any:
        if choose is None:
            counts["unknown"] += 1
        else:
            device_type = query.device.type
            tensors = [query, key, value, attn_mask]
            if torch.is_autocast_enabled(device_type):
                dtype = torch.get_autocast_dtype(device_type)
                tensors = [t.to(dtype) if t is not None and t.is_floating_point() else t for t in tensors]
            backend = SDPBackend(choose(*tensors, dropout_p=dropout_p, is_causal=is_causal, scale=scale))
            counts[KERNEL_NAMES.get(backend.name, backend.name.lower())] += 1
        return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                        scale=scale, **kwargs)

    F.scaled_dot_product_attention = spy
    try:
        yield counts
    finally:
        F.scaled_dot_product_attention = original


@contextlib.contextmanager
def torch_reasons(row: Row):
    """A restricted row whose backend cannot run raises ``Unavailable`` with torch's warnings as the reason."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        except RuntimeError as e:
            if row.sdpa == "auto" or not any(text in str(e) for text in NO_KERNEL):
                raise
            reasons = _dedupe([_first_line(w.message) for w in caught if "Triggered internally" in str(w.message)])
            raise Unavailable("; ".join(reasons).replace(":; ", ": ") or _first_line(e)) from None
    for w in caught:  # the row ran: its warnings are shown as usual
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _first_line(message: Any) -> str:
    text = str(message).split(" (Triggered internally")[0]
    return " ".join(text.split())


def kernel_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items())) or "-"


# ----------------------------------------------------------------------------------------------
# measuring
# ----------------------------------------------------------------------------------------------
def check_logits(name: str, logits: Any, want: tuple[int, ...]) -> None:
    import torch

    if tuple(logits.shape) != want:
        raise CheckFailed(f"{name}: logits shape {tuple(logits.shape)}, expected {want}")
    if not torch.isfinite(logits).all():
        raise CheckFailed(f"{name}: non-finite logits")


def timed_runs(name: str, args: argparse.Namespace, work: Any, device: Any) -> dict[str, Any]:
    """``work()`` warmed up and timed (synchronised on a GPU), with its peak GPU memory; the timing keys."""
    import torch

    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    runs = harness.Repeats(args.warmup, args.repeats)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    resident = torch.cuda.memory_allocated() / 2**20 if cuda else None
    for run in runs:
        sync()
        with run.timed():
            work()
            sync()
        harness.log(f"    [{name}] {run.label}: {run.seconds * 1e3:.1f} ms (other processes: {run.other_cores:.2f} cores)")
    return {
        "times_s": runs.times,
        "median_s": runs.median,
        "min_s": min(runs.times),
        "spread": harness.spread(runs.times),
        "other_cpu_cores": runs.other_cores,
        "resident_gpu_mib": resident,
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    }


def reference_logits(model: Any, inputs: tuple, device: Any) -> Any:
    """The fp32 forward every inference row is compared with: TF32 off, SDPA as torch picks it."""
    import torch

    visual, words, mask, want = inputs
    with tf32(False), torch.inference_mode():
        logits = model(visual, text_features=words, text_mask=mask).float()
    check_logits("fp32 reference", logits, want)
    return logits


def measure_infer(row: Row, model: Any, inputs: tuple, reference: Any, args: argparse.Namespace, device: Any
                  ) -> dict[str, Any]:
    """One inference row: checked against ``reference`` (and which attention kernels ran), then timed."""
    import torch

    visual, words, mask, want = inputs

    def forward() -> Any:
        with autocast(row.precision, device):
            return model(visual, text_features=words, text_mask=mask)

    kernels: Counter = Counter()
    with tf32(row.precision == "tf32"), sdpa_restricted(row.sdpa), torch.inference_mode():
        with torch_reasons(row), attention_kernels(kernels):
            logits = forward().float()
        check_logits(row.name, logits, want)
        rel_diff = float((logits - reference).abs().max() / reference.abs().max().clamp_min(1e-12))
        agreement = float((logits.argmax(-3) == reference.argmax(-3)).float().mean())
        del logits
        out = {"attention_kernels": dict(kernels), "rel_max_diff_vs_fp32": rel_diff, "mask_agreement_vs_fp32": agreement}
        if rel_diff > args.max_rel_diff or agreement < args.min_mask_agreement:
            raise CheckFailed(
                f"{row.name}: vs fp32 max abs diff {rel_diff:.3g} of max |logit| (limit {args.max_rel_diff}), "
                f"masks agree on {agreement:.4f} of pixels (limit {args.min_mask_agreement})", out
            )
        out.update(timed_runs(row.name, args, forward, device))
    return out


def measure_train(row: Row, model: Any, args: argparse.Namespace, device: Any) -> dict[str, Any]:
    """One training-step row: a checked step (logits, loss, gradients, checkpointed blocks, kernels), then timed."""
    import torch

    import lavt.models.encoder as encoder_mod
    from lavt.engine.losses import build_loss

    kind = row.model
    visual, words, mask, want = model_inputs(kind, row.batch, args, device, lang_dim=model.config.lang_dim)
    model.train()
    for stage in model.backbone.stages:
        stage.activation_checkpointing = row.checkpointing
    loss_fn = build_loss("ce")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    scaler = torch.amp.GradScaler(device.type, enabled=row.precision == "fp16")
    g = torch.Generator().manual_seed(args.seed)
    frames = want[1] if kind == "video" else 1
    target = torch.randint(0, 2, (want[0] * frames, *want[-2:]), generator=g).to(device)

    def train_step(check: bool = False) -> tuple[float, bool] | None:
        """One step; ``check`` (once, untimed: each check waits for the GPU) tests logits, loss, gradients."""
        with autocast(row.precision, device):
            logits = model(visual, text_features=words, text_mask=mask)
        loss = loss_fn(logits.flatten(0, 1).float() if kind == "video" else logits.float(), target)
        scaler.scale(loss).backward()
        value = None
        if check:
            check_logits(row.name, logits, want)
            if scaler.is_enabled():
                scaler.unscale_(optimizer)  # fp16: the true gradients (the step below knows)
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            finite = all(torch.isfinite(g).all() for g in grads)
            # fp16 gradients may overflow at the GradScaler's first scale: it skips the step and
            # lowers the scale, as in training; elsewhere a non-finite gradient is an error
            if not grads or not torch.isfinite(loss) or not (finite or scaler.is_enabled()):
                raise CheckFailed(f"{row.name}: no gradients, or a non-finite loss or gradient")
            value = float(loss.detach()), bool(finite)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return value

    calls = [0]
    original_checkpoint = encoder_mod.checkpoint

    def counting_checkpoint(*a: Any, **kw: Any) -> Any:
        calls[0] += 1
        return original_checkpoint(*a, **kw)

    kernels: Counter = Counter()
    try:
        with tf32(row.precision == "tf32"):
            encoder_mod.checkpoint = counting_checkpoint
            try:
                with attention_kernels(kernels):
                    loss, grads_finite = train_step(check=True)
            finally:
                encoder_mod.checkpoint = original_checkpoint
            out = {"attention_kernels": dict(kernels), "loss": loss, "grads_finite": grads_finite,
                   "checkpointed_block_calls": calls[0]}
            if row.checkpointing != (calls[0] > 0):
                raise CheckFailed(f"{row.name}: {calls[0]} checkpointed block calls in a step with checkpointing "
                                  f"{'on' if row.checkpointing else 'off'}", out)
            out.update(timed_runs(row.name, args, train_step, device))
    finally:
        for stage in model.backbone.stages:
            stage.activation_checkpointing = False
        optimizer.zero_grad(set_to_none=True)
        model.eval()
    return out


def outcome(name: str, e: Exception) -> tuple[str, str]:
    """(status, reason) of a row that raised: unavailable, out of memory or FAIL."""
    import torch

    if isinstance(e, Unavailable):
        return "unavailable", str(e)
    if isinstance(e, getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)):
        return "out of memory", f"{name}: {_first_line(e)}"
    if isinstance(e, CheckFailed):
        return "FAIL", str(e)
    return "FAIL", f"{name}: {type(e).__name__}: {_first_line(e)}"


def guarded(row: Row, measure: Any, device: Any) -> dict[str, Any]:
    """``measure()`` as a result row with its status: ok, unavailable, out of memory or FAIL (the others still run)."""
    import torch

    result: dict[str, Any] = {**asdict(row), "name": row.name}
    harness.log(f"  {row.name}")
    try:
        result.update(measure())
        result["status"] = "ok"
    except Exception as e:  # noqa: BLE001 - one broken row must not lose the others' numbers
        status, reason = outcome(row.name, e)
        result.update(getattr(e, "details", {}), status=status, reason=reason)
        harness.log(f"    {status}: {reason}")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def run_model(kind: str, model: Any, rows: list[Row], args: argparse.Namespace, device: Any) -> list[dict[str, Any]]:
    """Every row of one model on ``device`` (any device: the tests run it on the CPU with a tiny model)."""
    model.eval()
    lang_dim = model.config.lang_dim
    results = []
    for batch in _dedupe([r.batch for r in rows if r.mode == "infer"]):
        batch_rows = [r for r in rows if r.mode == "infer" and r.batch == batch]
        inputs = model_inputs(kind, batch, args, device, lang_dim=lang_dim)
        harness.log(f"{kind}, batch {batch}: fp32 reference")
        try:
            logits = reference_logits(model, inputs, device)
        except Exception as e:  # noqa: BLE001 - reported on each row of this batch, the others still run
            status, reason = outcome(f"{kind} b{batch} fp32 reference", e)
            harness.log(f"    {status}: {reason}")
            results += [{**asdict(r), "name": r.name, "status": status, "reason": reason} for r in batch_rows]
            continue
        for row in batch_rows:
            results.append(guarded(row, partial(measure_infer, row, model, inputs, logits, args, device), device))
        del logits, inputs
    for row in (r for r in rows if r.mode == "train"):
        results.append(guarded(row, partial(measure_train, row, model, args, device), device))
    return results


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------
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
        "default_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "default_cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
    }


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f}"


def table_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    out = []
    for r in results:
        ok = r["status"] == "ok"
        run = "infer" if r["mode"] == "infer" else ("train+ckpt" if r["checkpointing"] else "train")
        diff = f"{r['rel_max_diff_vs_fp32']:.2g}" if "rel_max_diff_vs_fp32" in r else "-"
        agree = f"{r['mask_agreement_vs_fp32']:.2%}" if "mask_agreement_vs_fp32" in r else "-"
        peak = r.get("peak_gpu_mib")
        out.append([
            r["model"], run, str(r["batch"]), r["precision"], r["sdpa"] if r["mode"] == "infer" else "auto",
            kernel_text(r.get("attention_kernels", {})),
            _ms(r["median_s"]) if ok else "-", _ms(r["median_s"] / r["batch"]) if ok else "-",
            f"{r['spread']:.0%}" if ok else "-", "-" if peak is None else f"{peak:.0f}", diff, agree, r["status"],
        ])  # fmt: skip
    return out


def report(results: list[dict[str, Any]]) -> None:
    harness.print_table(
        ["model", "run", "batch", "precision", "SDPA allowed", "attention kernel (calls)", "median ms", "ms/sample",
         "spread", "peak GPU MiB", "max diff vs fp32", "masks agree", "status"],
        "llrlllrrrrrrl", table_rows(results),
    )  # fmt: skip
    notes = [f"{r['name']}: {r['status']}: {r['reason']}" for r in results if r["status"] != "ok"]
    if notes:
        print()
        print("\n".join(notes))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = plan_runs(args)
    import torch

    if not torch.cuda.is_available():
        print(NO_CUDA)
        return 0
    started = time.perf_counter()
    harness.set_threads(args.threads)
    device = torch.device("cuda")
    env = gpu_env()
    print(harness.machine_line())
    print(f"{harness.torch_line(env)} | GPU {env['gpu']} (sm {env['gpu_capability']}, {env['gpu_memory_mib']:.0f} MiB) "
          f"| CUDA {env['cuda']} | TF32 defaults: matmul {env['default_matmul_allow_tf32']} / cuDNN "
          f"{env['default_cudnn_allow_tf32']} (set per row here)\n")
    results = []
    for kind in args.models:
        harness.log(f"{kind}: building")
        model = build(kind, args, device)
        results += run_model(kind, model, [r for r in plan if r.model == kind], args, device)
        del model
        torch.cuda.empty_cache()
    report(results)
    failures = _dedupe([r["reason"] for r in results if r["status"] == "FAIL"])
    for failure in failures:
        print(f"FAIL {failure}")
    meta = {"models": args.models, "size": args.size, "batch_sizes": args.batch_sizes, "precisions": args.precisions,
            "sdpa": args.sdpa, "train_batch": args.train_batch, "train_precision": args.train_precision,
            "checkpointing": args.checkpointing, "frames": args.frames, "video_size": args.video_size,
            "text_len": args.text_len, "real_words": args.real_words, "max_rel_diff": args.max_rel_diff,
            "min_mask_agreement": args.min_mask_agreement, "warmup": args.warmup, "repeats": args.repeats,
            "seed": args.seed}
    harness.finish(started, args.json, env, meta, results=results, failures=failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
