"""Parity with the official LAVT code, as numbers: max |ours - official| on the logits and the four
stage features of every fixture in ``../shared/parity``, for the exact path (the plain model call,
what ``--exact`` / ``exact=True`` run) and the default Winograd decoder path of ``lavt predict``.

The tests (tests/test_official.py, tests/test_video_model.py) enforce the 1e-4 tolerance; this
prints what the differences actually are, for the README's parity table.

    python benchmarks/parity_report.py [--parity DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from lavt.models.decoder import winograd_available
from lavt.weights.official import load_official_checkpoint

DEFAULT_PARITY = Path(__file__).resolve().parents[2] / "shared" / "parity"
FIXTURES = ("lavt_ris_tiny_w7", "lavt_rs_video_pwam3d_s12_tiny", "lavt_rs_video_naive_s1_tiny")


def measure(parity: Path, name: str, winograd: bool) -> dict[str, float]:
    io = torch.load(parity / f"{name}.io.pt", map_location="cpu", weights_only=False)  # our own fixture file
    model = load_official_checkpoint(parity / f"{name}.pth")
    model.use_winograd(winograd)
    visual = io["image"] if "image" in io else io["video"]
    words, mask = io["lang_feats"].transpose(1, 2), io["lang_mask"]
    with torch.no_grad():
        logits = model(visual, text_features=words, text_mask=mask)
        stages = model.stage_features(visual, text_features=words, text_mask=mask)
    expected = io["expected_logits"]
    logits = logits.flatten(0, 1) if logits.dim() == 5 else logits  # video: (B*T, 2, H, W) batch-major
    out = {"logits": (logits - expected).abs().max().item()}
    for i, (ours, theirs) in enumerate(zip(stages, io["expected_stage_features"])):
        out[f"stage{i + 1}"] = (ours - theirs).abs().max().item()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parity", type=Path, default=DEFAULT_PARITY, help="folder of the official fixtures")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON")
    args = ap.parse_args(argv)
    missing = [n for n in FIXTURES if not (args.parity / f"{n}.pth").is_file()]
    if missing:
        print(f"parity fixtures missing in {args.parity}: {', '.join(missing)}", file=sys.stderr)
        return 1
    paths = ["exact"] + (["winograd"] if winograd_available() else [])
    results = {name: {path: measure(args.parity, name, path == "winograd") for path in paths} for name in FIXTURES}
    print(f"max |ours - official| (torch {torch.__version__}, {torch.get_num_threads()} threads; tolerance 1e-4)")
    print(f"{'fixture':<32}{'path':<10}{'logits':>10}{'stages (max)':>14}")
    for name, by_path in results.items():
        for path, r in by_path.items():
            stage = max(v for k, v in r.items() if k.startswith("stage"))
            print(f"{name:<32}{path:<10}{r['logits']:>10.1e}{stage:>14.1e}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
