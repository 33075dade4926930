"""The training loop: steps (with gradient accumulation, mixed precision, DDP), logging,
validation with model selection, checkpoints, and a clean stop on SIGINT / SIGTERM.

Exact resume: a checkpoint holds model, optimizer, scheduler, scaler, RNG states, epoch and step;
the data order is a function of (seed, epoch) (``lavt.engine.build``), so a resumed run skips the
finished batches of the interrupted epoch and continues with exactly the same samples.
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..config import Preprocessing
from ..data.batch import collate
from ..errors import CheckpointError, ConfigError, TrainingInterrupted
from ..evaluation.protocols import evaluate, forward_visual
from ..io.torch_files import atomic_write_text
from ..models.lavt import load_state_dict_strict
from ..models.text import trim_padding
from ..runtime.distributed import (
    DistEnv,
    all_gather_objects,
    barrier,
    cleanup,
    init_distributed,
    max_over_ranks,
)
from ..runtime.precision import autocast, warn_if_slow
from ..runtime.progress import progress_bar
from .build import (
    EpochSampler,
    TextFeatureCache,
    build_datasets,
    build_model,
    build_optimizer,
    build_scheduler,
    check_files_exist,
    freeze_untrained,
    make_tokenizer,
)
from .checkpoint import (
    fingerprint,
    frozen_text_encoder_keys,
    load_training_checkpoint,
    plain_values,
    prepare_output_dir,
    rng_state,
    save_atomic,
    set_rng_state,
)
from .config import RunConfig, yaml_dump
from .interrupt import StopRequests
from .losses import build_loss


# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------
class Trainer:
    def __init__(
        self,
        cfg: RunConfig,
        resume: str | Path | None = None,
        env: DistEnv | None = None,
        desc: str = "train",
        progress: bool = True,
        overwrite: bool = False,
    ):
        self.cfg = cfg
        self.desc, self.progress = desc, progress
        t = cfg.train
        if t.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"train.precision={t.precision!r} is not one of fp32, bf16, fp16")
        self.env = env or init_distributed(t.device)
        warn_if_slow(t.precision, self.env.device)
        torch.manual_seed(t.seed + self.env.rank)
        np.random.seed(t.seed + self.env.rank)
        self.out = Path(t.output_dir)
        prepare_output_dir(self.out, resume, overwrite, self.env)

        self.model = build_model(cfg).to(self.env.device)
        # saved with every model directory: `lavt predict` then runs the model at its training size
        self.model.preprocessing = Preprocessing(image_size=cfg.data.image_size)
        freeze_untrained(self.model, cfg)
        # frozen text-encoder weights are rebuilt from the config, not stored in each checkpoint
        self.frozen_keys = frozen_text_encoder_keys(self.model)
        own = self.model.state_dict()
        self.frozen_fingerprint = fingerprint((k, own[k]) for k in self.frozen_keys)
        for stage in self.model.backbone.stages:
            stage.activation_checkpointing = t.activation_checkpointing
        self.text_cache = TextFeatureCache(self.model) if t.cache_text_features else None
        self.tokenizer = make_tokenizer(self.model)
        self.train_set, self.val_set = build_datasets(cfg, self.tokenizer)
        check_files_exist(self.train_set, self.val_set)
        self.joint = cfg.data.name == "joint"
        self.loss_fn = build_loss(t.loss)

        world_batch = t.batch_size * self.env.world_size
        if self.joint:
            from ..data.joint import batches_per_epoch

            n_batches = batches_per_epoch(self.train_set, t.batch_size, cfg.data.image_ratio, self.env.world_size)
            self.steps_per_epoch = n_batches // t.grad_accum
        else:
            self.steps_per_epoch = (len(self.train_set) // world_batch) // t.grad_accum
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"train split has {len(self.train_set)} samples: fewer than one step of "
                f"batch {t.batch_size} x {self.env.world_size} process(es) x grad_accum {t.grad_accum}"
            )
        self.total_steps = self.steps_per_epoch * t.epochs  # the LR schedule always spans the full run
        self.stop_step = self.total_steps if t.max_steps is None else min(self.total_steps, t.max_steps)

        self.ddp_model: nn.Module = self.model
        if self.env.distributed:
            if t.sync_bn and self.env.device.type == "cuda":
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            m = cfg.model
            self.ddp_model = DistributedDataParallel(
                self.model,
                device_ids=[self.env.device] if self.env.device.type == "cuda" else None,
                # a unified model trained single-stream leaves one Swin path idle in each batch
                find_unused_parameters=m.unified and m.unified_train_stream == "single",
            )
        self.optimizer = build_optimizer(self.model, t)
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, t)
        # fp16 gradients underflow without loss scaling; bf16 and fp32 need none (scaler disabled)
        self.scaler = torch.amp.GradScaler(self.env.device.type, enabled=t.precision == "fp16")
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.best_oiou = -1.0  # best validation score: oIoU (images) or J&F (videos)
        self.history: dict[str, list] = {"train": [], "val": []}
        self._saved_step = -1  # the step last.pt holds
        if resume is not None:
            self._load(resume)
        # written once everything checked out: a failed start leaves no run behind
        self.writer = self._tensorboard()
        if self.env.is_main:
            atomic_write_text(self.out / "config.yaml", yaml_dump(cfg.to_dict()))

    # -- state ---------------------------------------------------------------------------------
    def _tensorboard(self):
        if not self.env.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is an optional extra
            return None
        return SummaryWriter(str(self.out / "tensorboard"))

    def state_dict(self, rng_per_rank: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """What ``last.pt`` / ``best.pt`` hold: tensors, numbers, strings and plain containers.
        ``rng_per_rank``: every process's generator states (rank order); default this process's."""
        return {
            "model": {k: v for k, v in self.model.state_dict().items() if k not in self.frozen_keys},
            "frozen_text_encoder": {"keys": sorted(self.frozen_keys), "sha256": self.frozen_fingerprint},
            "model_config": self.cfg.model.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": (rng_per_rank or [rng_state()])[0],
            # each rank's own generators (dropout / drop-path masks differ per rank): restored per rank
            "rng_per_rank": rng_per_rank or [rng_state()],
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "best_oiou": float(self.best_oiou),
            "history": plain_values(self.history),
            "run_config": self.cfg.to_dict(),
        }

    def _load(self, path: str | Path) -> None:
        state = load_training_checkpoint(path)
        if state.get("model_config") != self.cfg.model.to_dict():
            raise CheckpointError(
                f"cannot resume from {path}: it was trained with another model architecture than this config"
            )
        frozen = state.get("frozen_text_encoder", {"keys": [], "sha256": fingerprint([])})
        if sorted(frozen["keys"]) != sorted(self.frozen_keys) or frozen["sha256"] != self.frozen_fingerprint:
            encoder = self.cfg.model.text_encoder.name_or_path if self.cfg.model.text_encoder else "none"
            raise CheckpointError(
                f"cannot resume from {path}: the frozen text-encoder weights this run builds (model.text_encoder "
                f"{encoder!r}, train.text_encoder_layers={self.cfg.train.text_encoder_layers!r}) differ from the ones "
                "it was trained with; resume with the same text encoder and settings"
            )
        own = self.model.state_dict()
        load_state_dict_strict(self.model, {**{k: own[k] for k in self.frozen_keys}, **state["model"]}, source=str(path))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(self._own_rng(state, path))
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.best_oiou, self.history = state["best_oiou"], state["history"]
        self._saved_step = self.step

    def _own_rng(self, state: dict[str, Any], path: str | Path) -> dict[str, Any]:
        """This rank's generator states from a checkpoint (all ranks' are stored since they differ)."""
        per_rank = state.get("rng_per_rank") or [state["rng"]]
        if len(per_rank) == self.env.world_size:
            return per_rank[self.env.rank]
        import warnings

        warnings.warn(
            f"{path} was saved by {len(per_rank)} process(es) and is resumed by {self.env.world_size}: the data "
            "order continues exactly, but random streams (dropout, drop-path) restart from rank 0's, so the run "
            "is not bit-identical to an uninterrupted one",
            UserWarning,
            stacklevel=3,
        )
        return per_rank[0]

    def save(self, name: str = "last.pt") -> None:
        """Every rank calls it (each contributes its generator states); rank 0 writes."""
        rngs = all_gather_objects(rng_state(), self.env)
        if self.env.is_main:
            save_atomic(self.state_dict(rngs), self.out / name)
        if name == "last.pt":
            self._saved_step = self.step

    # -- loop ----------------------------------------------------------------------------------
    def _loader(self, epoch: int, skip_batches: int) -> DataLoader:
        t = self.cfg.train
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(epoch)
        common = dict(
            num_workers=self.cfg.data.num_workers,
            collate_fn=collate,
            pin_memory=self.env.pin_memory,  # page-locked batches: the non_blocking copies in train_step overlap
            # its own generator: creating the iterator must not consume the global RNG, or a
            # resumed run (which creates one mid-epoch) would diverge from an uninterrupted one
            generator=torch.Generator().manual_seed(t.seed * 100_003 + epoch),
        )
        if self.joint:
            from ..data.joint import JointBatchSampler

            batches = JointBatchSampler(
                self.train_set, t.batch_size, self.cfg.data.image_ratio, t.seed, epoch,
                self.env.rank, self.env.world_size, skip=skip_batches,
            )
            return DataLoader(self.train_set, batch_sampler=batches, **common)
        sampler = EpochSampler(len(self.train_set), t.seed, epoch, self.env, skip=skip_batches * t.batch_size)
        return DataLoader(self.train_set, batch_size=t.batch_size, sampler=sampler, drop_last=True, **common)

    def train_step(self, batches: list[dict[str, Any]]) -> float:
        """One optimizer step over ``grad_accum`` micro-batches; returns the mean loss."""
        t, dev = self.cfg.train, self.env.device
        total = 0.0
        for k, batch in enumerate(batches):
            sync = k == len(batches) - 1
            ctx = self.ddp_model.no_sync() if (self.env.distributed and not sync) else nullcontext()
            with ctx:
                visual = batch["video"] if "video" in batch else batch["image"]
                # training only: evaluation keeps the official fixed length (bit-for-bit numbers)
                input_ids, attention_mask = trim_padding(batch["input_ids"], batch["attention_mask"])
                input_ids, attention_mask = input_ids.to(dev, non_blocking=True), attention_mask.to(dev, non_blocking=True)
                text_features = self.text_cache(input_ids, attention_mask) if self.text_cache is not None else None
                with autocast(t.precision, dev):
                    logits = forward_visual(
                        self.ddp_model, visual.to(dev, non_blocking=True), input_ids, attention_mask, text_features
                    )
                target = batch["target"].to(dev, non_blocking=True)
                if logits.dim() == 5:  # video: every frame of every clip is supervised (official)
                    logits, target = logits.flatten(0, 1), target.flatten(0, 1)
                loss = self.loss_fn(logits.float(), target) / len(batches)
                self.scaler.scale(loss).backward()
            total += loss.item()
        if t.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        return total

    def fit(self) -> dict[str, Any]:
        """Train to the end (or ``train.max_steps``), then write ``final_model/`` and
        ``history.json``. SIGINT / SIGTERM stop after the current optimizer step with a checkpoint
        (every rank at the same step) and raise :class:`TrainingInterrupted`."""
        t = self.cfg.train
        bar = progress_bar(None, self.progress and self.env.is_main, total=self.stop_step, initial=self.step, desc=self.desc)
        batches_per_epoch = self.steps_per_epoch * t.grad_accum  # leftovers never make a full step
        try:
            with StopRequests(announce=self.env.is_main) as stop:
                while self.step < self.stop_step and self.epoch < t.epochs:
                    self._stop_if_asked(stop)
                    self.train_mode()
                    pending: list[dict[str, Any]] = []
                    for batch in self._loader(self.epoch, self.batch_in_epoch):
                        if self.batch_in_epoch >= batches_per_epoch:
                            break
                        pending.append(batch)
                        self.batch_in_epoch += 1
                        if len(pending) < t.grad_accum:
                            continue
                        start = time.perf_counter()
                        loss = self.train_step(pending)
                        pending = []
                        self._log_step(loss, time.perf_counter() - start, bar)
                        if self.step % t.checkpoint_every == 0:
                            self.save()
                        if self.step >= self.stop_step:
                            break
                        self._stop_if_asked(stop)
                    if self.batch_in_epoch < batches_per_epoch:
                        break  # train.max_steps reached inside the epoch
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    if t.val_every and (self.epoch % t.val_every == 0 or self.epoch == t.epochs):
                        result = self._validate()
                        if self.progress and self.env.is_main:
                            video = "J&F" in result
                            bar.write(
                                f"{self.desc}: epoch {self.epoch} step {self.step}: val "
                                + (f"J&F {result['J&F']:.2f} " if video else "")
                                + f"oIoU {result['oIoU']:.2f} mIoU {result['mIoU']:.2f} "
                                f"(best {'score' if 'score' in result else 'J&F' if video else 'oIoU'} {self.best_oiou:.2f})"
                            )
                    self.save()
                self.save()
                if self.env.is_main:
                    # the weights the run ended with, ready for `lavt predict` / `lavt eval`
                    self.model.save_pretrained(self.out / "final_model", tokenizer=self.tokenizer)
        finally:
            bar.close()
            if self.writer is not None:
                self.writer.close()
            if self.env.is_main:
                atomic_write_text(self.out / "history.json", json.dumps(plain_values(self.history), indent=1))
        return self.history

    def train_mode(self) -> None:
        """``model.train()``, except a text encoder kept in eval mode (``train.text_encoder_dropout:
        false``, the official two-model ``lavt``: its separate BERT never runs dropout)."""
        self.model.train()
        if not self.cfg.train.text_encoder_dropout and self.model.text_encoder is not None:
            self.model.text_encoder.eval()

    def _stop_if_asked(self, stop: StopRequests) -> None:
        """After a finished step: if any rank got SIGINT / SIGTERM, every rank saves (rank 0
        writes) at this same step and stops. One tiny all-reduce per step keeps ranks in step."""
        signum = max_over_ranks(stop.signum, self.env)
        if not signum:
            return
        if self._saved_step != self.step:
            self.save()
        barrier(self.env)
        raise TrainingInterrupted(self.step, signum, str(self.out))

    def _log_step(self, loss: float, seconds: float, bar: Any) -> None:
        lr = self.optimizer.param_groups[0]["lr"]
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", epoch=self.epoch)
        if self.step % self.cfg.train.log_every == 0 or self.step == 1:
            self.history["train"].append({"step": self.step, "epoch": self.epoch, "loss": loss, "lr": lr, "s": seconds})
            if self.writer is not None:
                self.writer.add_scalar("train/loss", loss, self.step)
                self.writer.add_scalar("train/lr", lr, self.step)

    def _validate(self) -> dict[str, Any]:
        t = self.cfg.train
        model = self.ddp_model.module if self.env.distributed else self.model
        val_sets = self.val_set if isinstance(self.val_set, dict) else {"": self.val_set}
        parts = {
            name: evaluate(
                model, ds, self.env, batch_size=self.cfg.eval.batch_size, precision=t.precision,
                max_samples=t.val_max_samples, progress=self.progress,
            )
            for name, ds in val_sets.items()
        }
        if "" in parts:
            result = parts[""]
        else:  # joint: image oIoU and video J&F side by side; selection on their mean
            image, video = parts["image"], parts["video"]
            result = {
                "oIoU": image["oIoU"], "mIoU": image["mIoU"], "J": video["J"], "F": video["F"], "J&F": video["J&F"],
                "score": (image["oIoU"] + video["J&F"]) / 2, "image": image, "video": video,
            }
        keys = [k for k in ("oIoU", "mIoU", "J", "F", "J&F", "score") if k in result]
        self.history["val"].append({"step": self.step, "epoch": self.epoch, **{k: result[k] for k in keys}})
        if self.writer is not None:
            for k in keys:
                self.writer.add_scalar(f"val/{k}", result[k], self.step)
        # model selection: oIoU for images, J&F for videos, their mean for joint training
        score = result.get("score", result.get("J&F", result["oIoU"]))
        if score > self.best_oiou:
            self.best_oiou = score
            if t.keep_best:
                self.save("best.pt")
                if self.env.is_main:
                    self.model.save_pretrained(self.out / "best_model", tokenizer=self.tokenizer)
        barrier(self.env)
        return result

    def close(self) -> None:
        cleanup(self.env)


def train(cfg: RunConfig, resume: str | Path | None = None, overwrite: bool = False) -> dict[str, Any]:
    trainer = Trainer(cfg, resume=resume, overwrite=overwrite)
    try:
        return trainer.fit()
    finally:
        trainer.close()
