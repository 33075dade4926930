"""Helpers several test modules share: running ``lavt`` in-process, the one-line error check,
the tiny text-encoder model config, and our Swin key names in the official layout."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from lavt.apps.cli import main
from lavt.config import LAVTConfig, TextEncoderConfig


def run(capsys, argv: list) -> tuple[int, str, list[str]]:
    """``lavt ARGV`` in this process: (exit code, stdout, non-empty stderr lines)."""
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, [line for line in captured.err.splitlines() if line.strip()]


def assert_one_error(rc: int, err: list[str], *needles: str) -> None:
    """Exit code 2 and exactly one ``lavt: error:`` line containing every needle."""
    assert rc == 2
    assert len(err) == 1, err
    assert err[0].startswith("lavt: error:"), err
    for needle in needles:
        assert needle.lower() in err[0].lower(), (needle, err[0])


def tiny_config(**overrides) -> LAVTConfig:
    """A one-block-per-stage image LAVT with the MiniLM text encoder (fast to build and run)."""
    fields = dict(
        embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), window_size=7, lang_dim=384,
        text_encoder=TextEncoderConfig("minilm"),
    )
    return LAVTConfig(**{**fields, **overrides})


def swin_checkpoint_name(ours: str) -> str | None:
    """Our backbone key -> its name in Swin / Video Swin checkpoints (None: not a Swin weight)."""
    if ours.startswith("backbone.patch_embed."):
        return ours[len("backbone.") :]
    m = re.fullmatch(r"backbone\.stages\.(\d+)\.(blocks\.\d+\..*|downsample\..*)", ours)
    if not m:
        return None
    rest = m.group(2).replace(".mlp.0.", ".mlp.fc1.").replace(".mlp.3.", ".mlp.fc2.")
    return f"layers.{m.group(1)}.{rest}"


def noise_file(path: Path, size: int, seed: int) -> Path:
    """``size`` seeded random bytes: a file no reader can make sense of."""
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def balance_head(model, probs: np.ndarray, gain: float = 20.0) -> None:
    """Scale ``model``'s last layer by ``gain`` and move its object bias so that about half of the
    pixels behind ``probs`` (its object probabilities on some input) become foreground, in place:
    an untrained model marks (almost) every pixel alike, and comparing constant masks pixel for
    pixel would prove nothing."""
    import torch

    margin = np.log(probs / (1 - probs))  # object minus background logit
    with torch.no_grad():
        head = model.decoder.conv1_1
        head.weight.mul_(gain)
        head.bias.mul_(gain)
        head.bias[1] -= gain * float(np.median(margin))
