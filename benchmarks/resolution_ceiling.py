"""How much val oIoU the demo's output resolution allows, before any learning.

LAVT predicts logits at 1/4 of the input size and upsamples them bilinearly
(``align_corners=True``) to the input size, where the official protocol compares them with
the nearest-resized ground truth. At the demo's 96 px the logit map is 24x24 and the small
synthetic objects span ~3 cells, so one may ask whether the 70-oIoU demo target is limited by
resolution rather than by learning. This script answers it on the synthetic val set:

* ``pooled``: the ground truth average-pooled to 1/4 size, upsampled, thresholded at 0.5 -- a
  prediction that is right cell by cell but knows nothing finer;
* ``best logits``: for every mask, the 1/4-size logit map fitted by gradient descent so that its
  upsampled sign matches the mask best -- about the most a perfect model could output.

    python benchmarks/resolution_ceiling.py [--image-sizes 96 128] [--refs N]

Prints one line per size; ``--json`` writes the numbers too.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/ is not a package
import harness  # noqa: E402

STRIDE = 4  # LAVT's decoder output stride


def val_masks(data_root: Path, image_size: int, max_refs: int | None = None) -> torch.Tensor:
    """(N, 1, S, S) float masks of the val referents (the first ``max_refs``), as the loader gives them."""
    from lavt.data.refer import ReferSegmentation

    ds = ReferSegmentation(
        data_root=data_root, dataset="synthetic", split_by="unc", split="val", mode="eval",
        image_size=image_size, tokenizer=None,
    )
    seen: set[int] = set()
    masks = []
    for i in range(len(ds)):
        ref_id = ds.sample_info(i)["ref_id"]
        if ref_id in seen:
            continue  # one mask per referent: expressions of the same object share it
        seen.add(ref_id)
        masks.append(ds[i]["target"].float())
        if len(masks) == max_refs:
            break
    return torch.stack(masks)[:, None]


def upsample(low: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=True)  # as LAVT.forward


def overall_iou(pred: torch.Tensor, gt: torch.Tensor) -> float:
    return 100.0 * float((pred & gt).sum()) / max(float((pred | gt).sum()), 1.0)


def ceilings(masks: torch.Tensor, steps: int = 400) -> dict[str, float]:
    size = masks.shape[-1]
    gt = masks.bool()
    pooled = F.avg_pool2d(masks, STRIDE)
    result = {"pooled": overall_iou(upsample(pooled, size) > 0.5, gt)}
    logits = ((pooled * 2 - 1) * 4).requires_grad_(True)  # start from the pooled map
    opt = torch.optim.Adam([logits], lr=0.1)
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(3 * upsample(logits, size), masks)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        result["best_logits"] = overall_iou(upsample(logits, size) > 0, gt)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-sizes", type=int, nargs="+", default=[96, 128])
    p.add_argument("--refs", type=int, default=300,
                   help="val referents used (one mask each; the val split has ~1000, all of them take ~9 min on one core)")
    p.add_argument("--data-root", type=Path, default=None,
                   help="synthetic set (generated with the demo's settings if missing; default: a temp folder)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    from lavt.data.synthetic import generate_synthetic_refer

    with tempfile.TemporaryDirectory() as tmp:
        root = args.data_root or Path(tmp)
        generate_synthetic_refer(root, seed=0)  # the demo's generator settings (configs/demo.yaml)
        rows = {}
        for size in args.image_sizes:
            masks = val_masks(root, size, args.refs)
            r = ceilings(masks)
            rows[size] = {**r, "refs": len(masks)}
            print(f"{size} px (logits {size // STRIDE}x{size // STRIDE}), {len(masks)} val referents: "
                  f"pooled ground truth {r['pooled']:.1f} oIoU, best 1/4-size logits {r['best_logits']:.1f} oIoU")
    if args.json:
        harness.write_json(args.json, {"oIoU": rows})
    return 0


if __name__ == "__main__":
    harness.stay_offline()
    sys.exit(main())
