"""benchmarks/film_baseline.py (the README's evidence that the demo is budget-limited) still runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "film_baseline.py"
TINY = [
    "data.synthetic.num_images={train: 12, val: 6, testA: 1, testB: 1}",
    "data.image_size=64",
    "train.batch_size=4",
    "train.epochs=2",
    "eval.batch_size=16",
]


@pytest.fixture(scope="module")
def film():
    spec = importlib.util.spec_from_file_location("film_baseline", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_segmenter_reads_the_expression(film):
    torch.manual_seed(0)
    model = film.FiLMSegmenter(torch.nn.Identity(), lang_dim=8).eval()
    image = torch.randn(2, 3, 64, 64)
    words = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    logits = model(image, text_features=words, text_mask=mask)
    assert logits.shape == (2, 2, 64, 64)
    other = model(image, text_features=words.flip(0), text_mask=mask.flip(0))
    assert not torch.allclose(logits, other)  # the sentence modulates every stage
    padded = words.clone()
    padded[0, 3:] = 100.0  # padded words must not count
    assert torch.allclose(model(image, text_features=padded, text_mask=mask)[0], logits[0])


def test_trains_and_scores_with_the_demo_recipe(film, tmp_path, capsys):
    out = tmp_path / "film.json"
    rc = film.main(["--data-root", str(tmp_path / "data"), "--json", str(out), *TINY, "train.max_steps=4"])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["steps"] == 4  # train.max_steps stops the run inside its first epoch
    assert 0.0 <= result["val"]["oIoU"] <= 100.0
    assert set(result["val"]["types"]) <= {"attribute", "position", "relation", "ordinal"}
    assert "FiLM baseline" in capsys.readouterr().out
