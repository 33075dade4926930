"""Training engine: LR schedule, parameter groups, exact resume, DDP == accumulation, config errors."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from test_refer import build_fixture

from lavt.engine.build import param_groups, poly_schedule
from lavt.engine.config import load_run_config
from lavt.engine.trainer import Trainer
from lavt.errors import CheckpointError, ConfigError
from lavt.models.text import resolve_text_encoder


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return build_fixture(tmp_path_factory.mktemp("refer"))


@pytest.fixture(scope="module")
def quiet_encoder(tmp_path_factory) -> Path:
    """MiniLM with dropout 0: makes training deterministic across process layouts."""
    src = Path(resolve_text_encoder("minilm"))
    dst = tmp_path_factory.mktemp("minilm_nodrop")
    for f in src.iterdir():
        if f.is_file():
            shutil.copy(f, dst / f.name)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def overrides(data_root: Path, out: Path, encoder: str = "minilm", **extra) -> list[str]:
    items = {
        "model.embed_dim": 16,
        "model.depths": "[1, 1, 1, 1]",
        "model.num_heads": "[1, 1, 1, 1]",
        "model.window_size": 7,
        "model.lang_dim": 384,
        "model.drop_path_rate": 0.0,
        "model.text_encoder": f"{{name_or_path: '{encoder}'}}",
        "data.root": str(data_root),
        "data.image_size": 32,
        "data.num_workers": 0,
        "train.output_dir": str(out),
        "train.epochs": 2,
        "train.batch_size": 1,
        "train.checkpoint_every": 1,
        "train.lr": 1e-3,
        "train.text_encoder_layers": "4-5",
        "eval.batch_size": 4,
        **extra,
    }
    return [f"{k}={v}" for k, v in items.items()]


def test_poly_schedule_matches_the_formula():
    f = poly_schedule(100, 0.9)
    assert f(0) == 1.0 and f(100) == 0.0
    assert f(37) == pytest.approx((1 - 37 / 100) ** 0.9)


def test_scheduler_steps_every_iteration_and_groups_follow_the_official_recipe(data_root, tmp_path):
    cfg = load_run_config(None, overrides(data_root, tmp_path / "run"))
    trainer = Trainer(cfg)
    assert trainer.total_steps == 4  # 2 train refs, batch 1, 2 epochs
    base = trainer.optimizer.param_groups[0]["lr"]
    trainer.fit()
    # after the run the LR reached the end of the polynomial
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(base * poly_schedule(4)(4))
    lrs = [h["lr"] for h in trainer.history["train"]]
    assert lrs[0] == pytest.approx(1e-3 * (1 - 1 / 4) ** 0.9)

    model = trainer.model
    no_decay = {id(p) for p in trainer.optimizer.param_groups[1]["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in no_decay}
    assert "backbone.stages.0.blocks.0.norm1.weight" in names
    assert "backbone.stages.0.blocks.0.attn.relative_position_bias_table" in names
    assert "backbone.out_norms.2.bias" in names
    decay = {n for n, p in model.named_parameters() if p.requires_grad and id(p) not in no_decay}
    assert "decoder.bn1_4.weight" in decay and "backbone.stages.1.fusion.query.weight" in decay
    assert "backbone.stages.0.gate.0.weight" in decay
    trainable_text = {n for n, p in model.text_encoder.named_parameters() if p.requires_grad}
    assert trainable_text and all(n.startswith(("encoder.layer.4.", "encoder.layer.5.")) for n in trainable_text)
    assert not model.backbone.stages[3].gate[0].weight.requires_grad  # dead weight, frozen
    assert len(param_groups(model, 0.01)[0]["params"]) == len(trainer.optimizer.param_groups[0]["params"])
    run = tmp_path / "run"
    for name in ("last.pt", "best.pt", "config.yaml", "history.json", "best_model/config.json"):
        assert (run / name).exists(), name


def test_resume_mid_epoch_gives_the_same_weights_as_an_uninterrupted_run(data_root, tmp_path):
    # Dropout in MiniLM and drop path are active: exactness needs the RNG state restored too.
    full = Trainer(load_run_config(None, overrides(data_root, tmp_path / "full", **{"model.drop_path_rate": 0.2})))
    full.fit()
    part = Trainer(
        load_run_config(None, overrides(data_root, tmp_path / "part", **{"model.drop_path_rate": 0.2, "train.max_steps": 3}))
    )
    part.fit()
    assert part.step == 3 and part.batch_in_epoch == 1  # interrupted in the middle of epoch 2
    resumed = Trainer(
        load_run_config(None, overrides(data_root, tmp_path / "part", **{"model.drop_path_rate": 0.2})),
        resume=tmp_path / "part" / "last.pt",
    )
    assert resumed.step == 3
    resumed.fit()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run diverged"
    assert resumed.optimizer.state_dict()["state"].keys() == full.optimizer.state_dict()["state"].keys()
    # an uninterrupted run differs from its first 3 steps: the check above can fail
    assert not all(torch.equal(a[k], part.model.state_dict()[k]) for k in a)


def test_cached_text_features_train_like_a_frozen_dropout_free_encoder(data_root, quiet_encoder, tmp_path):
    # Reference: a frozen encoder without dropout recomputed every step, on the batch's padded
    # tokens. The cache encodes each expression alone at its own length (so that its features
    # do not depend on which batch it first came in: exact resume), which changes them by float
    # rounding only (~1e-6, test_text_feature_cache_ignores_the_batch_padding_length).
    frozen = {"train.text_encoder_layers": "none", "train.batch_size": 2, "data.per_expression": "true",
              "train.epochs": 3, "train.val_every": 0}
    plain = Trainer(load_run_config(None, overrides(data_root, tmp_path / "plain", str(quiet_encoder), **frozen)))
    cached = Trainer(
        load_run_config(None, overrides(data_root, tmp_path / "cached", **frozen, **{"train.cache_text_features": "true"}))
    )
    calls = []
    cached.model.text_encoder.register_forward_hook(lambda *a: calls.append(1))
    losses = {}
    for name, trainer in (("plain", plain), ("cached", cached)):
        step, losses[name] = trainer.train_step, []
        trainer.train_step = lambda batches, step=step, out=losses[name]: out.append(step(batches)) or out[-1]
        trainer.fit()
    assert len(losses["plain"]) == cached.step > cached.steps_per_epoch
    # the first step sees the same weights: only the features' rounding differs
    torch.testing.assert_close(losses["cached"][0], losses["plain"][0], rtol=1e-5, atol=0)
    # later steps: Adam turns rounding noise on parameters whose true gradient is zero (key bias
    # before a softmax, biases before an InstanceNorm) into +-lr steps; at lr 1e-3 on this tiny
    # model that moves the loss by ~1e-3 relative, while features of the wrong expressions or a
    # dropout-active encoder move it by far more (the model is then trained on other inputs)
    torch.testing.assert_close(losses["cached"], losses["plain"], rtol=1e-2, atol=0)
    n_expr = len(cached.train_set)
    assert len(cached.text_cache.features) == n_expr
    # every expression is encoded once, alone, in the first epoch; later epochs never call it
    assert len(calls) == n_expr


def test_training_cuts_token_padding_to_the_longest_expression(data_root, tmp_path):
    cfg = load_run_config(None, overrides(data_root, tmp_path / "run", **{"train.batch_size": 2, "train.max_steps": 3}))
    trainer = Trainer(cfg)
    widths = []
    trainer.model.text_encoder.register_forward_hook(
        lambda module, args, kwargs, out: widths.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    longest = []
    for batch in trainer._loader(0, 0):
        longest.append(int(batch["attention_mask"].sum(1).max()))
        trainer.train_step([batch])
        if len(longest) == 3:
            break
    assert widths == longest  # each step encodes exactly its longest expression's tokens
    assert max(widths) < cfg.model.text_encoder.max_tokens  # so the cut removed something


def test_text_feature_cache_ignores_the_batch_padding_length(quiet_encoder):
    from lavt.config import LAVTConfig, TextEncoderConfig
    from lavt.engine.build import TextFeatureCache
    from lavt.models.lavt import LAVT
    from lavt.models.text import Tokenizer, trim_padding

    config = LAVTConfig(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), window_size=7, lang_dim=384,
                        text_encoder=TextEncoderConfig(name_or_path=str(quiet_encoder)))
    model = LAVT.from_config(config)
    model.text_encoder.requires_grad_(False)
    tok = Tokenizer(str(quiet_encoder))
    ids, mask = tok(["the red one", "the second small blue circle from the left"])
    cache = TextFeatureCache(model)
    both = cache(*trim_padding(ids, mask))
    n_short, n_long = (int(m.sum()) for m in mask)
    assert both.shape[1] == n_long and len(cache.features) == 2
    alone = cache(*trim_padding(ids[:1], mask[:1]))  # cut to 5 tokens now, not 11: same entry
    assert alone.shape[1] == n_short and len(cache.features) == 2
    with torch.no_grad():
        direct = model.eval().encode_text(ids, mask)
    torch.testing.assert_close(both[0, :n_short], direct[0, :n_short], atol=1e-5, rtol=0)
    torch.testing.assert_close(alone[0], direct[0, :n_short], atol=1e-5, rtol=0)
    torch.testing.assert_close(both[1], direct[1, :n_long], atol=1e-5, rtol=0)
    assert not both[0, n_short:].any()  # padded words are zero; every consumer masks them


def test_cached_text_features_need_a_frozen_text_encoder(data_root, tmp_path):
    cfg = load_run_config(None, overrides(data_root, tmp_path / "x", **{"train.cache_text_features": "true"}))
    with pytest.raises(ConfigError, match="frozen text encoder"):
        Trainer(cfg)


def test_resume_from_another_architecture_is_one_clear_error(data_root, tmp_path):
    Trainer(load_run_config(None, overrides(data_root, tmp_path / "a", **{"train.max_steps": 1}))).fit()
    other = load_run_config(None, overrides(data_root, tmp_path / "b", **{"model.embed_dim": 32}))
    with pytest.raises(CheckpointError, match="another model architecture"):
        Trainer(other, resume=tmp_path / "a" / "last.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        Trainer(other, resume=tmp_path / "nothing" / "last.pt")


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown key.*'train'.*epoch_count"):
        load_run_config(None, ["train.epoch_count=3"])
    with pytest.raises(ConfigError, match="unknown config section"):
        bad = tmp_path / "bad.yaml"
        bad.write_text("optimiser: {lr: 1}\n")
        load_run_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_run_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="unknown config field"):
        load_run_config(None, ["model.windw=7"])


def test_numbers_written_without_a_dot_are_numbers(tmp_path):
    # PyYAML reads "1e-3" as a string; it must still reach the optimizer as a float
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train: {lr: 1e-3, weight_decay: 5e-2}\nmodel: {drop_path_rate: 1e-1}\n")
    cfg = load_run_config(recipe, ["train.clip_grad_norm=1e0", "eval.max_samples=2e2"])
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.model.drop_path_rate) == (1e-3, 5e-2, 0.1)
    assert isinstance(cfg.train.lr, float) and cfg.train.clip_grad_norm == 1.0
    preset = load_run_config(None, ["model.preset=tiny", "model.drop_path_rate=2e-1"])
    assert preset.model.drop_path_rate == 0.2
    with pytest.raises(ConfigError, match=r"train\.lr must be a number"):
        load_run_config(None, ["train.lr=fast"])
    assert cfg.eval.max_samples == 200 and isinstance(cfg.eval.max_samples, int)
    with pytest.raises(ConfigError, match=r"train\.epochs must be a whole number"):
        load_run_config(None, ["train.epochs=1.5"])


def test_every_shipped_config_parses():
    configs = sorted(Path(__file__).parent.parent.joinpath("configs").glob("*.yaml"))
    assert configs
    for path in configs:
        cfg = load_run_config(path)
        assert cfg.train.epochs > 0 and cfg.data.image_size > 0


# -- DDP ------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _record_gradients(trainer: Trainer) -> dict[str, torch.Tensor]:
    """The gradients the optimizer step sees (recorded just before it runs)."""
    grads: dict[str, torch.Tensor] = {}
    step = trainer.optimizer.step

    def recording_step(*args, **kwargs):
        grads.update({n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None})
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    return grads


def _ddp_worker(rank: int, world: int, port: int, items: list[str], result: str) -> None:
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    trainer = Trainer(load_run_config(None, items))
    grads = _record_gradients(trainer)
    trainer.fit()
    if rank == 0:
        torch.save({"state": trainer.model.state_dict(), "grads": grads}, result)
    trainer.close()


def test_two_process_ddp_equals_one_process_with_the_same_global_batch(data_root, quiet_encoder, tmp_path):
    common = {"train.epochs": 1, "train.val_every": 5}
    # 1 process: the global batch of 2 as 2 accumulated micro-batches of 1 (the same BatchNorm
    # statistics as 2 processes x 1; on CPU there is no SyncBatchNorm).
    single = Trainer(
        load_run_config(None, overrides(data_root, tmp_path / "one", str(quiet_encoder), **common, **{"train.grad_accum": 2}))
    )
    initial = {k: v.clone() for k, v in single.model.state_dict().items()}
    single_grads = _record_gradients(single)
    # one thread, like each DDP worker: the thread count changes float summation order, and
    # gradients that are exactly zero in theory (biases before an InstanceNorm) are pure rounding
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single.fit()
    finally:
        torch.set_num_threads(threads)
    assert single.step == 1
    items = overrides(data_root, tmp_path / "ddp", str(quiet_encoder), **common)
    result = str(tmp_path / "ddp_state.pt")
    mp.spawn(_ddp_worker, args=(2, _free_port(), items, result), nprocs=2, join=True)
    ddp = torch.load(result)
    ref = single.model.state_dict()
    # the step really moved the weights, so the equalities below are not trivial
    assert max((ref[k].float() - initial[k].float()).abs().max().item() for k in ref) > 1e-4
    # The averaged DDP gradient equals the accumulated one.
    assert single_grads.keys() == ddp["grads"].keys() and len(single_grads) > 50
    for name, g in single_grads.items():
        torch.testing.assert_close(ddp["grads"][name], g, atol=1e-6, rtol=1e-4, msg=lambda m, name=name: f"{name}: {m}")
    # So do the updated weights, up to elements whose gradient is ~0 (e.g. biases feeding an
    # InstanceNorm or a softmax, whose true gradient is exactly zero): there Adam turns float
    # noise into a full +-lr step, so a handful of elements may differ.
    total = off = 0
    for name in single_grads:
        diff = (ddp["state"][name] - ref[name]).abs()
        total += diff.numel()
        off += int((diff > 1e-5).sum())
    assert off / total < 2e-3, f"{off} of {total} weights differ"


def test_bf16_training_on_a_cpu_without_fast_bf16_warns(data_root, tmp_path, monkeypatch):
    import lavt.runtime.precision
    from lavt.runtime.precision import SlowPrecisionWarning

    monkeypatch.setattr(lavt.runtime.precision, "cpu_has_fast_bf16", lambda: False)
    with pytest.warns(SlowPrecisionWarning, match="use fp32"):
        Trainer(load_run_config(None, overrides(data_root, tmp_path / "run", **{"train.precision": "bf16"}))).close()


def test_eval_runs_the_model_at_its_own_input_size(data_root, tmp_path):
    from lavt.data.refer import ReferSegmentation
    from lavt.engine.build import make_tokenizer
    from lavt.engine.evaluate import evaluate_checkpoint
    from lavt.errors import InputSizeWarning
    from lavt.evaluation.protocols import evaluate
    from lavt.models.lavt import LAVT

    Trainer(load_run_config(None, overrides(data_root, tmp_path / "run", **{"train.max_steps": 1,
                                                                             "data.image_size": 40}))).fit()
    model_dir = tmp_path / "run" / "final_model"
    recipe = load_run_config(None, overrides(data_root, tmp_path / "x", **{"data.image_size": 480}))
    result = evaluate_checkpoint(recipe, str(model_dir))  # the recipe says 480, the model was trained at 40
    model = LAVT.from_pretrained(model_dir)
    at_40 = ReferSegmentation(data_root, "refcoco", "unc", split="val", image_size=40, mode="eval",
                              tokenizer=make_tokenizer(model))
    expected = evaluate(model, at_40, progress=False)
    assert result["image_size"] == 40 and result["oIoU"] == expected["oIoU"] and result["n"] == expected["n"]
    with pytest.warns(InputSizeWarning, match="data.image_size=48 px but the model was trained at 40"):
        wanted = load_run_config(None, overrides(data_root, tmp_path / "y", **{"data.image_size": 48}))
        assert evaluate_checkpoint(wanted, str(model_dir), image_size_given=True)["image_size"] == 48
