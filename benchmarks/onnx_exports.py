#!/usr/bin/env python
"""Which models export to ONNX, and how closely ONNX Runtime reproduces them (``lavt export``).

For each model the graph is exported (``lavt.export.onnx.export_onnx``, which itself refuses a
graph off by more than 1e-4 on its own inputs) and then run by ONNX Runtime on other inputs:

* the three official parity fixtures (``../shared/parity``) at their own size -- against the
  official logits -- and at a second size (not a multiple of the window: padded windows) -- against
  PyTorch;
* a Swin-B LAVT (window 12) with seeded random weights at 480 and 384 px, against PyTorch;
* a tiny video LAVT with each of the twelve PWAM structures of the paper's Table 1 (T = 4, 64 px).

Prints one row per export: max |ONNX Runtime - reference| on the logits (batch 2, different word
counts), the graph size and the export time. Nothing here is a speed measurement.
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

PARITY = Path(__file__).resolve().parents[2] / "shared" / "parity"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ort_logits(directory: Path, pixels, features, mask):
    import onnxruntime as ort

    session = ort.InferenceSession(str(directory / "lavt.onnx"), providers=["CPUExecutionProvider"])
    feeds = {"pixel_values": pixels.numpy(), "text_features": features.numpy(), "text_mask": mask.numpy()}
    return session.run(None, feeds)[0]


def one(name: str, model: Any, size: int, frames: int, scratch: Path, inputs=None, expected=None) -> dict[str, Any]:
    """Export ``model`` at ``size`` and compare ONNX Runtime with ``expected`` (default: PyTorch)."""
    import numpy as np
    import torch

    from lavt.export.onnx import export_onnx

    out = scratch / name.replace(" ", "_")
    started = time.perf_counter()
    try:
        export_onnx(model, out, image_size=size, frames=frames, overwrite=True)
    except Exception as e:  # a row, not a crash: the table says which models do not export
        return {"model": name, "size": size, "exported": False, "error": " ".join(str(e).split())[:200]}
    seconds = time.perf_counter() - started
    if inputs is None:
        g = torch.Generator().manual_seed(7)
        shape = (2, frames, 3, size, size) if model.config.video else (2, 3, size, size)
        features = torch.randn(2, 20, model.config.lang_dim, generator=g)
        mask = torch.zeros(2, 20, dtype=torch.long)
        mask[0, :14], mask[1, :6] = 1, 1
        inputs = (torch.randn(shape, generator=g), features, mask)
    reference = "official"
    if expected is None:
        reference = "PyTorch"
        with torch.inference_mode():
            expected = model(inputs[0], text_features=inputs[1], text_mask=inputs[2])
    got = ort_logits(out, *inputs)
    diff = float(np.abs(got.reshape(expected.shape) - expected.numpy()).max())
    mib = sum(f.stat().st_size for f in out.glob("lavt.onnx*")) / 2**20
    return {"model": name, "size": size, "exported": True, "reference": reference, "max_abs_diff": diff,
            "max_abs_logit": float(expected.abs().max()), "graph_mib": mib, "export_s": seconds}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-swin-b", action="store_true", help="leave out the two Swin-B exports (~3 min)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import torch

    from lavt.config import LAVTConfig
    from lavt.models.lavt import LAVT
    from lavt.official import load_official_checkpoint

    torch.set_num_threads(2)
    warnings.simplefilter("ignore")
    rows = []
    with tempfile.TemporaryDirectory(prefix="lavt-onnx-exports-") as tmp:
        scratch = Path(tmp)
        for stem, second in (("lavt_ris_tiny_w7", 200), ("lavt_rs_video_pwam3d_s12_tiny", 80),
                             ("lavt_rs_video_naive_s1_tiny", 80)):
            if not (PARITY / f"{stem}.pth").is_file():
                log(f"skipping {stem}: not in {PARITY}")
                continue
            io = torch.load(PARITY / f"{stem}.io.pt", map_location="cpu", weights_only=False)
            model = load_official_checkpoint(PARITY / f"{stem}.pth").eval()
            pixels = io["video"] if "video" in io else io["image"]
            frames = pixels.shape[1] if pixels.dim() == 5 else 1
            inputs = (pixels, io["lang_feats"].transpose(1, 2).contiguous(), io["lang_mask"])
            log(f"{stem} at {pixels.shape[-1]} and {second} px ...")
            rows.append(one(stem, model, pixels.shape[-1], frames, scratch, inputs, io["expected_logits"]))
            rows.append(one(stem, model, second, frames, scratch))
        if not args.skip_swin_b:
            torch.manual_seed(0)
            swin_b = LAVT(LAVTConfig.from_preset("base", 12)).eval()
            for size in (480, 384):
                log(f"Swin-B at {size} px ...")
                rows.append(one("Swin-B w12, seeded", swin_b, size, 1, scratch))
        for structure in range(1, 13):
            log(f"video structure {structure} ...")
            torch.manual_seed(structure)
            cfg = LAVTConfig(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), window_size=7, lang_dim=32,
                             video=True, temporal_window=2, pwam_structure=structure)
            rows.append(one(f"video LAVT tiny, structure {structure}", LAVT(cfg).eval(), 64, 4, scratch))
    print("| model | side | reference | max abs diff | max abs logit | graph MiB | export s |\n|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        if not r["exported"]:
            print(f"| {r['model']} | {r['size']} | does not export: {r['error']} | | | | |")
            continue
        print(f"| {r['model']} | {r['size']} | {r['reference']} | {r['max_abs_diff']:.1e} | {r['max_abs_logit']:.2f} | "
              f"{r['graph_mib']:.1f} | {r['export_s']:.0f} |")
    worst = max((r["max_abs_diff"] for r in rows if r["exported"]), default=float("nan"))
    print(f"\n{sum(r['exported'] for r in rows)} of {len(rows)} exports; worst max |diff| {worst:.1e}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r["exported"] and r["max_abs_diff"] <= 1e-4 for r in rows) else 1


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
