#!/usr/bin/env python
"""How far each faster inference option moves the masks from the exact fp32 path.

Options (every one against ``exact``, the official computation in fp32 with direct convolutions):

* ``winograd``: fp32, the decoder's 3x3 convolutions by NNPACK's Winograd kernel (the fp32 CPU
  default of ``Predictor`` / ``lavt predict``);
* ``bf16``: ``torch.autocast("cpu", torch.bfloat16)`` around the model (the CPU default where the
  CPU has native bf16: AVX512-BF16 / AMX);
* ``onnxruntime``: the ``lavt export`` graphs run by ONNX Runtime (fp32);
* ``onnxruntime-int8``: the export's int8 graph (ONNX Runtime dynamic quantisation of the MatMuls).

Two models:

1. ``--model`` (default: the demo model, ``lavt-demo/lavt/final_model``, made by ``lavt demo``) on
   every expression of the synthetic benchmark's val split (``--data``, written by ``lavt demo``),
   text encoder included (the ONNX options run the exported text encoder too): max |logit
   difference|, mask pixel agreement at the model resolution, and the oIoU / mIoU of each option
   (official protocol: argmax at the model resolution against the resized ground truth);
2. a Swin-B LAVT (window 12, 480 px) with seeded random weights, no text encoder: ``--swin-b-images``
   val images resized to 480 px, each with seeded random word features (5-15 real words). Random
   weights make logits small and close to ties: a hard case for agreement.

Accuracy only, nothing is timed (latency: ``bench_inference.py``). Prints a table; ``--json`` writes it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

OPTIONS = ("exact", "winograd", "bf16", "onnxruntime", "onnxruntime-int8")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Runner:
    """Logits (B, 2, S, S) float32 of one model under each option, from the same inputs."""

    def __init__(self, model: Any, export_dir: Path, threads: int) -> None:
        import onnxruntime as ort

        self.model = model
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        session = lambda name: ort.InferenceSession(str(export_dir / name), options, providers=["CPUExecutionProvider"])  # noqa: E731
        self.vision = {"onnxruntime": session("lavt.onnx"), "onnxruntime-int8": session("lavt.int8.onnx")}
        self.text = session("text_encoder.onnx") if (export_dir / "text_encoder.onnx").is_file() else None

    def __call__(self, option: str, image, input_ids=None, attention_mask=None, features=None, mask=None):
        import numpy as np
        import torch

        if option.startswith("onnxruntime"):
            if features is None:
                features = self.text.run(None, {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})[0]
                mask = attention_mask
            else:
                features = features.numpy()
            feeds = {"pixel_values": image.numpy(), "text_features": np.asarray(features), "text_mask": mask.numpy()}
            return torch.from_numpy(self.vision[option].run(None, feeds)[0])
        self.model.use_winograd(option == "winograd")
        kwargs = {"text_features": features, "text_mask": mask} if features is not None else {}
        args = (image, input_ids, attention_mask) if features is None else (image,)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=option == "bf16"):
            return self.model(*args, **kwargs).float()


class Tally:
    """Running max |logit diff| and pixel agreement against exact, and the option's own IoU counts."""

    def __init__(self) -> None:
        from lavt.evaluation.metrics import RISMeter

        self.max_diff, self.same, self.pixels, self.meter, self.scored = 0.0, 0, 0, RISMeter(), False

    def add(self, logits, exact, target=None) -> None:
        self.max_diff = max(self.max_diff, float((logits - exact).abs().max()))
        pred, ref = logits.argmax(1), exact.argmax(1)
        self.same += int((pred == ref).sum())
        self.pixels += pred.numel()
        if target is not None:
            self.scored = True
            for p, t in zip(pred.bool(), target.bool()):
                self.meter.update_counts(int((p & t).sum()), int((p | t).sum()))

    def row(self) -> dict[str, Any]:
        out = {"max_abs_logit_diff": self.max_diff, "mask_agreement": self.same / max(self.pixels, 1)}
        if self.scored:
            result = self.meter.compute()
            out.update({k: result.get(k) for k in ("oIoU", "mIoU") if k in result})
        return out


def demo_model_rows(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    import torch

    from lavt.data.refer import ReferSegmentation
    from lavt.engine.build import make_tokenizer
    from lavt.export.onnx import export_onnx
    from lavt.predict import load_model

    model = load_model(args.model)
    size = model.preprocessing.image_size if model.preprocessing else 480
    log(f"demo model: exporting {args.model} to ONNX ...")
    export_onnx(model, scratch / "demo", int8=True)
    runner = Runner(model, scratch / "demo", args.threads)
    data = ReferSegmentation(args.data, args.dataset, args.split_by, split=args.split, image_size=size, mode="eval",
                             tokenizer=make_tokenizer(model))
    n = len(data) if args.max_samples is None else min(args.max_samples, len(data))
    tallies = {o: Tally() for o in OPTIONS}
    started = time.perf_counter()
    for start in range(0, n, args.batch_size):
        items = [data[i] for i in range(start, min(n, start + args.batch_size))]
        image = torch.stack([it["image"] for it in items])
        ids = torch.stack([it["input_ids"] for it in items])
        mask = torch.stack([it["attention_mask"] for it in items])
        target = torch.stack([it["target"] for it in items])
        exact = runner("exact", image, ids, mask)
        for option in OPTIONS:
            tallies[option].add(exact if option == "exact" else runner(option, image, ids, mask), exact, target)
        if (start // args.batch_size) % 10 == 0:
            log(f"  {min(n, start + args.batch_size)}/{n} expressions ({time.perf_counter() - started:.0f} s)")
    return {"model": str(args.model), "split": args.split, "expressions": n, "image_size": size,
            "options": {o: t.row() for o, t in tallies.items()}}


def swin_b_rows(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    import torch

    from lavt.config import LAVTConfig
    from lavt.data.refer import ReferSegmentation
    from lavt.export.onnx import export_onnx
    from lavt.models.lavt import LAVT

    torch.manual_seed(0)
    model = LAVT(LAVTConfig.from_preset("base", 12)).eval()
    log("Swin-B (seeded weights): exporting to ONNX at 480 px (about 2 minutes) ...")
    export_onnx(model, scratch / "swinb", image_size=480, int8=True)
    runner = Runner(model, scratch / "swinb", args.threads)
    data = ReferSegmentation(args.data, args.dataset, args.split_by, split=args.split, image_size=480, mode="eval")
    g = torch.Generator().manual_seed(1)
    tallies = {o: Tally() for o in OPTIONS}
    picks = torch.linspace(0, len(data) - 1, args.swin_b_images).round().long().tolist()
    for k, index in enumerate(picks):
        image = data[index]["image"][None]
        features = torch.randn(1, 20, model.config.lang_dim, generator=g)
        mask = torch.zeros(1, 20, dtype=torch.long)
        mask[0, : int(torch.randint(5, 16, (1,), generator=g))] = 1
        exact = runner("exact", image, features=features, mask=mask)
        for option in OPTIONS:
            logits = exact if option == "exact" else runner(option, image, features=features, mask=mask)
            tallies[option].add(logits, exact)
        log(f"  image {k + 1}/{len(picks)}")
    rows = {o: {k: v for k, v in t.row().items() if k in ("max_abs_logit_diff", "mask_agreement")} for o, t in tallies.items()}
    return {"model": "Swin-B window 12, seeded random weights (torch.manual_seed(0)), random word features",
            "images": len(picks), "image_size": 480, "options": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="lavt-demo/lavt/final_model", help="a model with a text encoder (default: the demo's)")
    ap.add_argument("--data", default=str(Path.home() / ".cache" / "lavt" / "synthetic-demo"),
                    help="refer-format data root (default: the synthetic benchmark lavt demo writes)")
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--split-by", default="unc")
    ap.add_argument("--split", default="val")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-samples", type=int, default=None, help="first N expressions only (default: all)")
    ap.add_argument("--swin-b-images", type=int, default=8, help="images for the Swin-B part (0: skip it)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    if args.batch_size < 1 or args.threads < 1 or args.swin_b_images < 0:
        ap.error("--batch-size and --threads must be positive, --swin-b-images >= 0")
    if not Path(args.model).is_dir():
        ap.error(f"--model {args.model} is not a model directory (run `lavt demo` first, or pass --model)")
    if not Path(args.data).is_dir():
        ap.error(f"--data {args.data} does not exist (run `lavt demo` first, or pass --data)")
    import torch

    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import harness

    started = time.perf_counter()
    report: dict[str, Any] = {"machine": harness.machine_line(), "torch": torch.__version__}
    with tempfile.TemporaryDirectory(prefix="lavt-agreement-") as scratch:
        report["demo_model"] = demo_model_rows(args, Path(scratch))
        if args.swin_b_images:
            report["swin_b"] = swin_b_rows(args, Path(scratch))
    report["seconds"] = time.perf_counter() - started

    print(f"# Agreement with the exact fp32 path\n{report['machine']}; torch {report['torch']}\n")
    demo = report["demo_model"]
    print(f"Demo model ({demo['model']}, {demo['image_size']} px), {demo['split']} split, {demo['expressions']} expressions:\n")
    print("| option | max abs logit diff | mask pixels agreeing | oIoU | mIoU |\n|---|---:|---:|---:|---:|")
    for option, r in demo["options"].items():
        print(f"| {option} | {r['max_abs_logit_diff']:.2e} | {100 * r['mask_agreement']:.3f} % | "
              f"{r['oIoU']:.2f} | {r['mIoU']:.2f} |")
    if "swin_b" in report:
        sb = report["swin_b"]
        print(f"\n{sb['model']}, {sb['images']} val images at 480 px:\n")
        print("| option | max abs logit diff | mask pixels agreeing |\n|---|---:|---:|")
        for option, r in sb["options"].items():
            print(f"| {option} | {r['max_abs_logit_diff']:.2e} | {100 * r['mask_agreement']:.4f} % |")
    print(f"\n({report['seconds'] / 60:.1f} min)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
