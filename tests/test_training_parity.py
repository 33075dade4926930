"""The official training step, reproduced to the number through lavt's own trainer construction.

``../shared/parity/lavt_ris_tiny_train4`` holds a tiny official image LAVT, four training batches
and what the official LAVT-RIS training code produced from them (see that folder's README). Here
the model comes from :func:`load_official_checkpoint` and the optimizer, its parameter groups, the
LR schedule and the loss from the functions ``lavt train refcoco_swin_b`` builds them with
(:func:`build_optimizer`, :func:`build_scheduler`, :func:`build_loss`), configured through the run
config with the fixture's recipe values. The float64 run is the check that sees a wrong weight-decay
rule or AMSGrad (float32 rounding hides them).

The text-encoder side of the recipe (which BERT weights train; dropout per model variant) is not in
the fixture; it is checked from the fact sheet's rules on a small BERT of the same layout.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lavt.engine.build import build_optimizer, build_scheduler, freeze_untrained, param_groups
from lavt.engine.config import load_run_config
from lavt.engine.losses import build_loss
from lavt.weights.official import convert_image_state_dict, load_official_checkpoint

PARITY = Path(__file__).resolve().parents[2] / "shared" / "parity"
FIXTURE = PARITY / "lavt_ris_tiny_train4.pth"


@pytest.fixture(scope="module")
def io():
    if not FIXTURE.is_file():
        pytest.skip(f"parity fixture {FIXTURE} not available")
    # the fixture's own file (tensors + the recipe dict), written by the official code's run
    return torch.load(PARITY / "lavt_ris_tiny_train4.io.pt", map_location="cpu", weights_only=False)


def recipe_config(io, recipe_name: str = "refcoco_swin_b"):
    r = io["recipe"]
    return load_run_config(recipe_name, [
        f"train.lr={r['lr']}", f"train.weight_decay={r['weight_decay']}", f"train.lr_power={r['poly_power']}",
        "train.loss=ce",  # the conference loss the official RIS training step uses
    ])


def official_names(io) -> dict[str, str]:
    """Official parameter name -> ours, through lavt's own checkpoint key conversion."""
    state = io["expected_final_state"]
    names = {}
    for name in state:  # buffers rebuilt from the window size convert to nothing
        converted = convert_image_state_dict({name: state[name]})
        if converted:
            names[name] = next(iter(converted))
    return names


def run_official_steps(io, dtype: torch.dtype):
    """The official iteration (train-mode forward, loss, zero_grad, backward, step, scheduler
    step) on the fixture's batches, with the optimizer / schedule / loss lavt's trainer builds."""
    cfg = recipe_config(io)
    model = load_official_checkpoint(FIXTURE, drop_path_rate=io["recipe"]["drop_path_rate"]).to(dtype)
    freeze_untrained(model, cfg)
    optimizer = build_optimizer(model, cfg.train)
    scheduler = build_scheduler(optimizer, io["recipe"]["total_iters"], cfg.train)
    loss_fn = build_loss(cfg.train.loss)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    losses, lrs = [], []
    for batch in io["batches"]:
        lrs.append([group["lr"] for group in optimizer.param_groups])
        model.train()
        logits = model(batch["image"].to(dtype), text_features=batch["lang_feats"].transpose(1, 2).to(dtype),
                       text_mask=batch["lang_mask"])
        loss = loss_fn(logits, batch["target"].long())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    model.eval()
    probe = io["probe"]
    with torch.no_grad():
        probe_logits = model(probe["image"].to(dtype), text_features=probe["lang_feats"].transpose(1, 2).to(dtype),
                             text_mask=probe["lang_mask"])
    return model, optimizer, initial, torch.tensor(losses, dtype=torch.float64), lrs, probe_logits


def test_the_recipe_values_are_the_trainers(io):
    r = io["recipe"]
    cfg = recipe_config(io)
    model = load_official_checkpoint(FIXTURE, drop_path_rate=0.0)
    freeze_untrained(model, cfg)
    defaults = build_optimizer(model, cfg.train).defaults
    assert (defaults["lr"], defaults["betas"], defaults["eps"], defaults["amsgrad"]) == (
        r["lr"], r["betas"], r["eps"], r["amsgrad"])
    assert isinstance(build_optimizer(model, cfg.train), torch.optim.AdamW)  # decoupled decay, not L2
    assert build_loss("ce").__defaults__[0] == r["class_weights"]


def test_the_parameter_groups_are_the_official_ones_by_name(io):
    cfg = recipe_config(io)
    model = load_official_checkpoint(FIXTURE, drop_path_rate=0.0)
    freeze_untrained(model, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = param_groups(model, cfg.train.weight_decay)
    no_decay = {names[id(p)] for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    decay = {names[id(p)] for g in groups if g["weight_decay"] == io["recipe"]["weight_decay"] for p in g["params"]}
    ours = official_names(io)
    assert no_decay == {ours[n] for n in io["param_groups"]["backbone_no_decay"]}
    without_grad = {ours[n] for n in io["params_without_grad"]}  # only the stage-4 gate
    official_decay = {ours[n] for n in io["param_groups"]["backbone_decay"] + io["param_groups"]["classifier"]}
    # The official decay group also lists the stage-4 gate; it never receives a gradient, so AdamW
    # skips it there (weights bit-identical, checked below). We freeze it instead of carrying it.
    assert without_grad <= official_decay
    assert decay == official_decay - without_grad
    left_out = {n for n, _ in model.named_parameters()} - no_decay - decay
    assert left_out == without_grad


def test_four_official_training_steps_in_float32(io):
    model, _, initial, losses, lrs, probe = run_official_steps(io, torch.float32)
    expected = io["expected_losses"].double()
    assert abs(losses[0] - expected[0]) <= 1e-5
    assert (losses[1:] - expected[1:]).abs().max() <= 1e-4
    expected_lrs = io["expected_lrs"]
    for step, row in enumerate(lrs):
        for lr in row:  # every group of ours has the lr of every official group (all equal)
            assert torch.allclose(torch.tensor(lr, dtype=torch.float64), expected_lrs[step], rtol=1e-12, atol=0)
    assert (probe - io["expected_probe_logits"]).abs().max() <= 1e-3
    ours = official_names(io)
    state = model.state_dict()
    for name in io["params_without_grad"]:  # never updated (no gradient): bit-identical
        assert torch.equal(state[ours[name]], initial[ours[name]])
    batches_tracked = [v for k, v in state.items() if k.endswith("num_batches_tracked")]
    assert batches_tracked and all(int(v) == 4 for v in batches_tracked)


def test_four_official_training_steps_in_float64(io):
    """Float64 removes the rounding noise: a wrong decay rule, no decay, AMSGrad or L2 instead of
    AdamW move the losses by 1e-8..1e-4 here, far beyond the 1e-10 tolerance."""
    fp64 = io["expected_fp64"]
    weights = torch.tensor(build_loss("ce").__defaults__[0], dtype=torch.float32).double()
    assert torch.equal(weights, fp64["class_weights"])  # the float32 values 0.9 / 1.1, as float64
    model, _, _, losses, _, probe = run_official_steps(io, torch.float64)
    assert probe.dtype == torch.float64 and losses.dtype == torch.float64
    assert (losses - fp64["losses"]).abs().max() <= 1e-10
    stride = fp64["probe_stride"]
    assert (probe[..., ::stride, ::stride] - fp64["probe_logits_sub"]).abs().max() <= 1e-9
    ours = official_names(io)
    state = model.state_dict()
    for name, value in fp64["bn_running_stats"].items():
        assert (state[ours[name]].double() - value).abs().max() <= 1e-9, name


# -------------------------------------------------------------------------- the text-encoder side
def _tiny_bert_model(cfg):
    """An image LAVT whose text encoder has BERT-base's layout (12 layers) at a tiny width."""
    import transformers

    from lavt.models.lavt import LAVT

    bert = transformers.BertModel(
        transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=12, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=32),
        add_pooling_layer=False,
    )
    config = cfg.model.__class__(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), window_size=7, lang_dim=16)
    return LAVT(config, text_encoder=bert)


def test_only_bert_layers_0_to_9_are_optimised(io):
    cfg = load_run_config("refcoco_swin_b")
    model = _tiny_bert_model(cfg)
    freeze_untrained(model, cfg)
    optimizer = build_optimizer(model, cfg.train)
    names = {id(p): n for n, p in model.named_parameters()}
    optimised = {names[id(p)] for g in optimizer.param_groups for p in g["params"] if n_text(names[id(p)])}
    layers = {int(n.split(".")[3]) for n in optimised}
    assert layers == set(range(10))  # encoder.layer.0..9
    assert not any(".embeddings." in n or "pooler" in n for n in optimised)
    text = [n for n in names.values() if n_text(n)]
    assert all(not model.get_parameter(n).requires_grad for n in text if n not in optimised)


def n_text(name: str) -> bool:
    return name.startswith("text_encoder.")


@pytest.mark.parametrize("dropout, expected_training", [(True, True), (False, False)])
def test_the_text_encoders_train_mode_follows_the_model_variant(tmp_path, dropout, expected_training):
    """lavt_one / LAVT-RS (BERT inside the model): the encoder follows model.train(), its dropout is
    active; the two-model ``lavt`` (separate BERT): eval mode for the whole run."""
    from test_refer import build_fixture

    from lavt.engine.trainer import Trainer

    root = build_fixture(tmp_path / "refer")
    items = {
        "model.embed_dim": 16, "model.depths": "[1,1,1,1]", "model.num_heads": "[1,1,1,1]", "model.window_size": 7,
        "model.lang_dim": 384, "model.text_encoder": "{name_or_path: minilm}", "data.root": root,
        "data.image_size": 32, "data.num_workers": 0, "train.batch_size": 2, "train.epochs": 1,
        "train.val_every": 1, "train.output_dir": tmp_path / "run", "train.text_encoder_dropout": str(dropout).lower(),
    }
    trainer = Trainer(load_run_config(None, [f"{k}={v}" for k, v in items.items()]), progress=False)
    modes = []
    step = trainer.train_step
    trainer.train_step = lambda batches: modes.append(
        (trainer.model.training, trainer.model.text_encoder.training)) or step(batches)
    trainer.fit()  # includes a validation (eval mode) and the next epoch's return to training
    assert modes and all(m == (True, expected_training) for m in modes)


# ------------------------------------------------------------------------------ the video recipe
VIDEO_FIXTURE = PARITY / "lavt_rs_video_pwam3d_s12_tiny.pth"


def _fact_sheet_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """LAVT-RS ``mc_dice`` as the fact sheet writes it: softmax over 2 channels, one-hot target,
    dice = 2 sum(p t) / (sum(p^2 + t) + 1e-6) per sample and class, loss = 1 - dice, mean over the
    (B*T) samples, then mean of the two classes. Written out by hand here, independently."""
    p = logits.double().softmax(dim=1)
    total = 0.0
    for c in range(2):
        per_sample = []
        for b in range(p.shape[0]):
            pc, tc = p[b, c], (target[b] == c).double()
            per_sample.append(1 - 2 * (pc * tc).sum() / ((pc * pc + tc).sum() + 1e-6))
        total = total + torch.stack(per_sample).mean()
    return total / 2


@pytest.mark.parametrize("recipe, lr", [("ytvos_video_swin_b", 4e-5), ("a2d_video_swin_b", 6e-5)])
def test_the_video_recipe_through_the_trainers_construction(recipe, lr):
    """LAVT-RS (fact sheet 3.1): AdamW, the same four groups as RIS, per-iteration poly 0.9, the
    multi-class Dice loss with p^2 in the denominator (empty frames included); the lr is the
    paper's 4e-5 for Ref-YouTube-VOS (README command: 5e-5) and 6e-5 for A2D."""
    if not VIDEO_FIXTURE.is_file():
        pytest.skip(f"parity fixture {VIDEO_FIXTURE} not available")
    cfg = load_run_config(recipe)
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.lr_power, cfg.train.loss) == (lr, 1e-2, 0.9, "dice")
    assert cfg.train.text_encoder_layers in ("0-9", "encoder-10")
    model = load_official_checkpoint(VIDEO_FIXTURE, drop_path_rate=0.0)
    freeze_untrained(model, cfg)
    optimizer = build_optimizer(model, cfg.train)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["amsgrad"] is False
    assert (optimizer.defaults["betas"], optimizer.defaults["eps"]) == ((0.9, 0.999), 1e-8)

    # group membership: the official rule applied to the official names, compared in numbers of
    # parameters (the 3D PWAM's names change shape on import, so no name-by-name map here)
    official = torch.load(VIDEO_FIXTURE, map_location="cpu", weights_only=True)["model"]
    no_decay_keys = ("norm", "absolute_pos_embed", "relative_position_bias_table")
    trained = [k for k, v in official.items() if v.is_floating_point()
               and not k.endswith(("running_mean", "running_var", "relative_position_index", "attn_mask"))]
    official_no_decay = sum(official[k].numel() for k in trained
                            if k.startswith("backbone.") and any(s in k for s in no_decay_keys))
    official_all = sum(official[k].numel() for k in trained)
    unused = sum(model.backbone.get_parameter(n).numel() for n in model.backbone.unused_parameters())
    by_decay = {g["weight_decay"]: sum(p.numel() for p in g["params"]) for g in optimizer.param_groups}
    assert by_decay[0.0] == official_no_decay
    assert by_decay[1e-2] + by_decay[0.0] + unused == official_all

    scheduler = build_scheduler(optimizer, 10, cfg.train)
    for it in range(10):
        assert all(abs(g["lr"] - lr * (1 - it / 10) ** 0.9) <= 1e-18 for g in optimizer.param_groups)
        optimizer.step()
        scheduler.step()

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 2, 12, 12, generator=generator, dtype=torch.float64) * 3  # B*T = 2*3 frames
    target = (torch.rand(6, 12, 12, generator=generator) > 0.6).long()
    target[4] = 0  # a frame without the object
    loss = build_loss(cfg.train.loss)(logits, target)
    assert abs(loss.item() - _fact_sheet_dice(logits, target).item()) <= 1e-12
