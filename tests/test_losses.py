"""Losses: hand-computed values, gradient behaviour, registry and dtype handling."""

import math

import pytest
import torch

from lavt.engine.losses import (
    LOSSES,
    boundary_loss,
    build_loss,
    dice_boundary_loss,
    multiclass_dice_loss,
    weighted_cross_entropy,
)
from lavt.errors import ConfigError

LOG3 = math.log(3.0)


def _square(n, h, w, r0, r1, c0, c1):
    t = torch.zeros(n, h, w, dtype=torch.long)
    t[:, r0:r1, c0:c1] = 1
    return t


# ---------------------------------------------------------------- cross-entropy
def test_weighted_ce_matches_hand_computation():
    # logits[0, :, y, x] = (background, object) per pixel
    pix = {(0, 0): (2.0, -1.0), (0, 1): (0.5, 0.5), (1, 0): (-1.0, 3.0), (1, 1): (1.0, 0.0)}
    tgt = {(0, 0): 0, (0, 1): 1, (1, 0): 1, (1, 1): 1}
    logits = torch.zeros(1, 2, 2, 2)
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    for (y, x), (a, b) in pix.items():
        logits[0, 0, y, x], logits[0, 1, y, x] = a, b
        target[0, y, x] = tgt[(y, x)]

    w = (0.9, 1.1)
    num = den = 0.0
    for key, (a, b) in pix.items():
        c = tgt[key]
        logz = math.log(math.exp(a) + math.exp(b))
        nll = logz - (a, b)[c]
        num += w[c] * nll
        den += w[c]
    expected = num / den  # PyTorch weighted mean: divide by the sum of the weights
    got = weighted_cross_entropy(logits, target)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # not the plain mean of the weighted terms
    assert abs(got.item() - num / 4) > 1e-3
    # equal weights -> plain mean NLL
    plain = sum(math.log(math.exp(a) + math.exp(b)) - (a, b)[tgt[k]] for k, (a, b) in pix.items()) / 4
    assert build_loss("ce", weights=(1.0, 1.0))(logits, target).item() == pytest.approx(plain, rel=1e-6)


# ---------------------------------------------------------------- dice
def _dice_case():
    # one sample, H=1, W=3: p(object) = 3/4, 1/4, 1/2 exactly (logit ratios log 3, -log 3, 0)
    logits = torch.tensor([[[[0.0, 0.0, 0.0]], [[LOG3, -LOG3, 0.0]]]], dtype=torch.float64).float()
    target = torch.tensor([[[1, 0, 1]]])
    return logits, target


def test_dice_hand_computed_with_squared_denominator():
    logits, target = _dice_case()
    eps = 1e-6
    # object: sum p t = 3/4 + 1/2 = 5/4; sum p^2 = 9/16 + 1/16 + 4/16 = 7/8; sum t = 2
    fg = 1 - 2 * (5 / 4) / (7 / 8 + 2 + eps)  # = 3/23
    # background: p = 1/4, 3/4, 1/2; t = 0, 1, 0 -> sum p t = 3/4; sum p^2 = 7/8; sum t = 1
    bg = 1 - 2 * (3 / 4) / (7 / 8 + 1 + eps)  # = 1/5
    assert fg == pytest.approx(3 / 23, abs=1e-6) and bg == pytest.approx(0.2, abs=1e-6)
    terms = multiclass_dice_loss(logits, target, reduction="none")
    assert terms.shape == (1, 2)
    assert terms[0, 0].item() == pytest.approx(bg, abs=1e-6)
    assert terms[0, 1].item() == pytest.approx(fg, abs=1e-6)
    loss = multiclass_dice_loss(logits, target).item()
    assert loss == pytest.approx((fg + bg) / 2, abs=1e-6)
    # the p-not-squared variant (sum p + t) gives a clearly different value
    fg_lin = 1 - 2 * (5 / 4) / (3 / 2 + 2)
    bg_lin = 1 - 2 * (3 / 4) / (3 / 2 + 1)
    assert abs(loss - (fg_lin + bg_lin) / 2) > 0.05


def test_dice_mean_over_samples_then_classes():
    logits, target = _dice_case()
    perfect_logits = torch.zeros(1, 2, 1, 3)
    perfect_logits[0, 1] = torch.tensor([[30.0, -30.0, 30.0]])
    both = multiclass_dice_loss(torch.cat([logits, perfect_logits]), torch.cat([target, target]))
    assert both.item() == pytest.approx(multiclass_dice_loss(logits, target).item() / 2, abs=1e-6)


def test_dice_perfect_prediction_is_zero():
    target = _square(2, 8, 8, 2, 6, 1, 5)
    logits = torch.stack([-20.0 * target.float(), 20.0 * target.float()], dim=1)
    logits[:, 0] += 20.0 * (1 - target.float())
    assert multiclass_dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-5)


def test_dice_empty_frame_foreground_term_constant_zero_gradient():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 6, 6, requires_grad=True)
    target = _square(2, 6, 6, 1, 4, 1, 4)
    target[1] = 0  # frame 1 has no object
    terms = multiclass_dice_loss(logits, target, reduction="none")
    assert terms[1, 1].item() == 1.0  # exactly 1 - 0 / (sum p^2 + eps)
    (grad,) = torch.autograd.grad(terms[1, 1], logits, retain_graph=True)
    assert torch.count_nonzero(grad) == 0
    # frame 0's object term does depend on the logits
    (grad0,) = torch.autograd.grad(terms[0, 1], logits, retain_graph=True)
    assert grad0[0].abs().sum() > 0
    # the full loss still trains the empty frame through its background term
    (g_all,) = torch.autograd.grad(multiclass_dice_loss(logits, target), logits)
    assert g_all[1].abs().sum() > 0


# ---------------------------------------------------------------- boundary
def test_boundary_hand_computed_shifted_square():
    # 9x9, GT 3x3 square rows 3-5 cols 2-4, prediction shifted right by 3 (cols 5-7).
    # Each boundary is the 8-pixel ring; the 5x5 tolerance band of the GT ring covers
    # cols 0-6, containing 5 of the predicted ring's pixels -> P = 5/8; symmetrically R = 5/8.
    gt = torch.zeros(1, 1, 9, 9)
    gt[0, 0, 3:6, 2:5] = 1
    pred = torch.zeros(1, 1, 9, 9)
    pred[0, 0, 3:6, 5:8] = 1
    p = r = 5 / (8 + 1e-7)
    expected = 1 - 2 * p * r / (p + r + 1e-7)
    assert boundary_loss(pred, gt).item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(3 / 8, abs=1e-6)
    # empty prediction: no predicted boundary -> P = R = 0 -> BF1 = 0 -> loss 1
    assert boundary_loss(torch.zeros_like(gt), gt).item() == pytest.approx(1.0, abs=1e-6)


def test_boundary_perfect_is_zero_and_shift_is_positive():
    target = _square(1, 12, 12, 3, 8, 4, 9)
    onehot = torch.stack([1 - target, target], dim=1).float()
    assert boundary_loss(onehot, onehot).item() == pytest.approx(0.0, abs=1e-6)
    # a 1-pixel shift stays inside the 2-pixel tolerance band; a 4-pixel one does not
    shifted1 = torch.roll(onehot, shifts=1, dims=3)
    assert boundary_loss(shifted1, onehot).item() == pytest.approx(0.0, abs=1e-6)
    shifted4 = torch.roll(onehot, shifts=4, dims=3)
    assert boundary_loss(shifted4, onehot).item() > 0.2


def test_dice_boundary_is_dice_plus_weighted_boundary():
    torch.manual_seed(1)
    logits = torch.randn(3, 2, 10, 10)
    target = _square(3, 10, 10, 2, 7, 3, 8)
    probs = torch.softmax(logits, dim=1)
    onehot = torch.stack([1 - target, target], dim=1).float()
    expected = multiclass_dice_loss(logits, target) + 0.05 * boundary_loss(probs, onehot)
    assert dice_boundary_loss(logits, target).item() == pytest.approx(expected.item(), abs=1e-6)
    heavier = dice_boundary_loss(logits, target, boundary_weight=1.0)
    assert heavier.item() == pytest.approx(
        (multiclass_dice_loss(logits, target) + boundary_loss(probs, onehot)).item(), abs=1e-6
    )
    # a confident perfect prediction scores ~0
    big = torch.stack([20.0 * (1 - 2 * target.float()), 20.0 * (2 * target.float() - 1)], dim=1)
    assert dice_boundary_loss(big, target).item() == pytest.approx(0.0, abs=1e-5)


# ---------------------------------------------------------------- registry, grads, dtypes
def test_build_loss_registry_and_errors():
    assert set(LOSSES) == {"ce", "dice", "dice_boundary"}
    with pytest.raises(ConfigError) as exc:
        build_loss("focal")
    msg = str(exc.value)
    assert "focal" in msg and "ce" in msg and "dice_boundary" in msg
    with pytest.raises(ConfigError, match="gamma"):
        build_loss("dice", gamma=2.0)
    fn = build_loss("dice_boundary", boundary_weight=0.0)
    logits, target = torch.randn(1, 2, 5, 5), _square(1, 5, 5, 1, 3, 1, 3)
    assert fn(logits, target).item() == pytest.approx(multiclass_dice_loss(logits, target).item(), abs=1e-7)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_finite_even_for_extreme_logits(name):
    torch.manual_seed(2)
    logits = (torch.randn(2, 2, 9, 9) * 1e4).requires_grad_(True)
    target = _square(2, 9, 9, 2, 6, 2, 6)
    target[1] = 0
    loss = build_loss(name)(logits, target)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_bf16_autocast_gives_float32_loss(name, monkeypatch):
    """Inside a bf16 autocast region the loss is the float32 loss, bit for bit, and its own ops
    run with autocast off. On CPU, autocast leaves softmax / cross-entropy / max-pool in float32
    anyway, so comparing values alone cannot see whether autocast was disabled: a spy records the
    autocast state at each of the loss's ops. The same formula computed in bf16 differs from the
    float32 loss by ~1e-4 (ce) to ~1e-3 (dice), checked below; the comparisons above are exact."""
    import torch.nn.functional as F

    import lavt.engine.losses as losses

    torch.manual_seed(3)
    logits32 = torch.randn(2, 2, 8, 8)
    target = _square(2, 8, 8, 2, 6, 2, 6)
    conv = torch.nn.Conv2d(2, 2, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = conv(logits32)
        assert logits.dtype == torch.bfloat16
        loss = build_loss(name)(logits, target)
        inside = build_loss(name)(logits32, target)  # float32 logits under autocast
    assert loss.dtype == torch.float32
    ref = build_loss(name)(logits.float(), target)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6, abs=1e-7)
    assert torch.equal(loss, ref)  # bf16 logits are cast up, then everything runs in float32
    assert inside.dtype == torch.float32 and torch.equal(inside, build_loss(name)(logits32, target))

    # the loss's ops see autocast disabled, although the caller has it on
    seen = []

    def spy(fn, op):
        def wrapped(*args, **kwargs):
            seen.append((op, torch.is_autocast_enabled("cpu"), args[0].dtype))
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(torch, "softmax", spy(torch.softmax, "softmax"))
    monkeypatch.setattr(F, "cross_entropy", spy(F.cross_entropy, "cross_entropy"))
    monkeypatch.setattr(F, "max_pool2d", spy(F.max_pool2d, "max_pool2d"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
        spied = build_loss(name)(logits, target)
    monkeypatch.undo()
    assert torch.equal(spied, ref)
    expected_ops = {"ce": {"cross_entropy"}, "dice": {"softmax"}, "dice_boundary": {"softmax", "max_pool2d"}}[name]
    assert {op for op, _, _ in seen} == expected_ops
    assert all(not enabled and dtype == torch.float32 for _, enabled, dtype in seen), seen

    # teeth: the same loss computed in bf16 (nothing cast up) is far from the float32 one
    if name == "ce":  # F.cross_entropy wants its class weights in the logits' dtype
        in_bf16 = F.cross_entropy(logits.detach(), target, weight=torch.tensor([0.9, 1.1], dtype=torch.bfloat16))
    else:
        onehot = losses._onehot
        monkeypatch.setattr(losses, "_check_inputs", lambda lg, t: (lg, t.long()))
        monkeypatch.setattr(losses, "_onehot", lambda t: onehot(t).bfloat16())
        in_bf16 = build_loss(name)(logits.detach(), target)
        monkeypatch.undo()
    assert abs(in_bf16.float().item() - ref.item()) > 3e-5, (in_bf16.item(), ref.item())


def test_input_validation_messages():
    logits = torch.zeros(2, 2, 4, 4)
    with pytest.raises(ValueError, match=r"\(N, 2, H, W\)"):
        weighted_cross_entropy(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="target must have shape"):
        multiclass_dice_loss(logits, torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="0 \\(background\\) or 1"):
        dice_boundary_loss(logits, torch.full((2, 4, 4), 255, dtype=torch.long))
    with pytest.raises(ValueError, match="integer or bool"):
        weighted_cross_entropy(logits, torch.zeros(2, 4, 4))
    # bool targets are fine
    assert torch.isfinite(weighted_cross_entropy(logits, torch.zeros(2, 4, 4, dtype=torch.bool)))
