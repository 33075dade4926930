"""Training losses of LAVT on two-class logits.

Every loss takes ``logits`` of shape ``(N, 2, H, W)`` (channel 0 = background, channel 1 =
object) and an integer or boolean ``target`` of shape ``(N, H, W)`` with values in ``{0, 1}``,
and returns a scalar. For video models flatten batch and time first (``(B*T, 2, H, W)``), as
the official code does.

* ``"ce"`` -- :func:`weighted_cross_entropy`: the conference (RIS) loss, PyTorch's weighted
  mean cross-entropy with class weights (background 0.9, object 1.1).
* ``"dice"`` -- :func:`multiclass_dice_loss`: the RS ``mc_dice`` loss (V-Net dice with ``p**2``
  in the denominator, mean over frames, then over the two classes).
* ``"dice_boundary"`` -- :func:`dice_boundary_loss`: dice + 0.05 x :func:`boundary_loss`
  (a differentiable boundary-F1 built from max-pooling).

All losses are computed in float32: the logits are cast to float and autocast is disabled
inside, so a bf16/fp16 autocast forward still gets a float32 loss.

>>> import torch
>>> loss_fn = build_loss("dice_boundary")
>>> loss = loss_fn(torch.zeros(2, 2, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long))
>>> loss.dtype, loss.shape
(torch.float32, torch.Size([]))
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..errors import ConfigError

__all__ = [
    "LOSSES",
    "boundary_loss",
    "build_loss",
    "dice_boundary_loss",
    "multiclass_dice_loss",
    "weighted_cross_entropy",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------
def _check_inputs(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate shapes/values; return float32 logits and int64 target."""
    if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise ValueError(
            f"logits and target must be torch tensors, got {type(logits).__name__} and "
            f"{type(target).__name__}"
        )
    if logits.ndim != 4 or logits.shape[1] != 2:
        raise ValueError(
            f"logits must have shape (N, 2, H, W) (background, object), got {tuple(logits.shape)}"
        )
    n, _, h, w = logits.shape
    if tuple(target.shape) != (n, h, w):
        raise ValueError(
            f"target must have shape (N, H, W) = {(n, h, w)} to match logits "
            f"{tuple(logits.shape)}, got {tuple(target.shape)}"
        )
    if target.is_floating_point() or target.is_complex():
        raise ValueError(f"target must be an integer or bool mask with values in {{0, 1}}, got dtype {target.dtype}")
    target = target.long()
    if target.numel() and (int(target.min()) < 0 or int(target.max()) > 1):
        raise ValueError(
            f"target values must be 0 (background) or 1 (object), got range "
            f"[{int(target.min())}, {int(target.max())}]"
        )
    # float32 at least (a bf16 / fp16 forward still gets a float32 loss); float64 stays float64
    return (logits if logits.dtype == torch.float64 else logits.float()), target


def _no_autocast(device: torch.device):
    return torch.autocast(device_type=device.type, enabled=False)


def _onehot(target: torch.Tensor) -> torch.Tensor:
    """(N, H, W) int64 in {0,1} -> (N, 2, H, W) float32."""
    return F.one_hot(target, num_classes=2).permute(0, 3, 1, 2).float()


# --------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------
def weighted_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, weights: Sequence[float] = (0.9, 1.1)
) -> torch.Tensor:
    """Class-weighted cross-entropy, PyTorch "weighted mean" reduction.

    ``loss = sum_i w[y_i] * (-log softmax(logits_i)[y_i]) / sum_i w[y_i]`` over all pixels ``i``
    of all samples (the official conference loss with ``weights=(0.9, 1.1)``).
    """
    logits, target = _check_inputs(logits, target)
    if len(weights) != 2:
        raise ValueError(f"weights must have 2 entries (background, object), got {tuple(weights)}")
    with _no_autocast(logits.device):
        # the official weights are a float32 tensor (0.8999999762, 1.1000000238), also in a float64 run
        weight = torch.as_tensor(tuple(float(x) for x in weights), dtype=torch.float32, device=logits.device)
        return F.cross_entropy(logits, target, weight=weight.to(logits.dtype), reduction="mean")


def _dice_terms(probs: torch.Tensor, onehot: torch.Tensor, eps: float) -> torch.Tensor:
    """Per sample and class ``1 - 2*sum(p*t) / (sum(p^2 + t) + eps)``, shape (N, C)."""
    num = 2.0 * (probs * onehot).sum(dim=(2, 3))
    den = (probs * probs + onehot).sum(dim=(2, 3)) + eps
    return 1.0 - num / den


def multiclass_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-6, reduction: str = "mean"
) -> torch.Tensor:
    """Two-class soft dice loss (V-Net style, the official RS ``MultiClassDiceLoss``).

    ``p = softmax(logits, dim=1)``, ``t = one_hot(target)``; for every sample ``n`` and class
    ``c``: ``dice = 2 * sum_hw(p*t) / (sum_hw(p**2 + t) + eps)`` (``p`` is **squared** in the
    denominator); ``loss = 1 - dice`` averaged over samples, then over the two classes.

    For a frame without object the foreground term is exactly ``1 - 0 / (...) = 1``: it is a
    constant and contributes zero gradient (only the background term of that frame trains).

    ``reduction="none"`` returns the ``(N, 2)`` per-sample, per-class terms.
    """
    logits, target = _check_inputs(logits, target)
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    with _no_autocast(logits.device):
        terms = _dice_terms(torch.softmax(logits, dim=1), _onehot(target), eps)
        return terms if reduction == "none" else terms.mean(dim=0).mean()


def boundary_loss(
    probs: torch.Tensor,
    onehot: torch.Tensor,
    theta0: int = 3,
    theta: int = 5,
    reduction: str = "mean",
) -> torch.Tensor:
    """Differentiable boundary-F1 loss on ``(N, C, H, W)`` probabilities and one-hot targets.

    Boundary map of ``x``: ``maxpool(1 - x, theta0, stride 1, pad theta0 // 2) - (1 - x)`` (the
    inner boundary of each class region); extended map: ``maxpool(boundary, theta, stride 1,
    pad theta // 2)`` (a ``theta // 2`` pixel tolerance band). Max-pool padding is ``-inf``, so
    the image border is not a boundary. Per sample and class::

        P = sum(pred_b * gt_ext) / (sum(pred_b) + 1e-7)
        R = sum(pred_ext * gt_b) / (sum(gt_b) + 1e-7)
        BF1 = 2 P R / (P + R + 1e-7)

    and the loss is ``mean(1 - BF1)`` over samples and classes (``reduction="none"``: ``(N, C)``).
    A class without any boundary in both maps (e.g. an empty or full mask) has BF1 = 0.
    """
    if probs.ndim != 4 or probs.shape != onehot.shape:
        raise ValueError(
            f"probs and onehot must both have shape (N, C, H, W), got {tuple(probs.shape)} and "
            f"{tuple(onehot.shape)}"
        )
    if theta0 < 1 or theta < 1 or theta0 % 2 == 0 or theta % 2 == 0:
        raise ValueError(f"theta0 and theta must be odd positive kernel sizes, got {theta0}, {theta}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    with _no_autocast(probs.device):
        probs = probs.float()
        onehot = onehot.float()

        def bmap(x: torch.Tensor) -> torch.Tensor:
            inv = 1.0 - x
            return F.max_pool2d(inv, kernel_size=theta0, stride=1, padding=theta0 // 2) - inv

        def extend(b: torch.Tensor) -> torch.Tensor:
            return F.max_pool2d(b, kernel_size=theta, stride=1, padding=theta // 2)

        gt_b, pred_b = bmap(onehot), bmap(probs)
        gt_ext, pred_ext = extend(gt_b), extend(pred_b)
        precision = (pred_b * gt_ext).sum(dim=(2, 3)) / (pred_b.sum(dim=(2, 3)) + 1e-7)
        recall = (pred_ext * gt_b).sum(dim=(2, 3)) / (gt_b.sum(dim=(2, 3)) + 1e-7)
        bf1 = 2.0 * precision * recall / (precision + recall + 1e-7)
        terms = 1.0 - bf1
        return terms if reduction == "none" else terms.mean()


def dice_boundary_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    boundary_weight: float = 0.05,
    dice_weight: float = 1.0,
    eps: float = 1e-6,
    theta0: int = 3,
    theta: int = 5,
) -> torch.Tensor:
    """``dice_weight * multiclass_dice_loss + boundary_weight * boundary_loss(softmax, one_hot)``
    (the official RS ``DiceBoundaryLoss(boundary_rate=0.05, dice_rate=1)``)."""
    logits, target = _check_inputs(logits, target)
    with _no_autocast(logits.device):
        probs = torch.softmax(logits, dim=1)
        onehot = _onehot(target)
        dice = _dice_terms(probs, onehot, eps).mean(dim=0).mean()
        boundary = boundary_loss(probs, onehot, theta0=theta0, theta=theta)
        return dice_weight * dice + boundary_weight * boundary


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------
LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "ce": weighted_cross_entropy,
    "dice": multiclass_dice_loss,
    "dice_boundary": dice_boundary_loss,
}


def build_loss(name: str, **kwargs) -> LossFn:
    """Return ``loss_fn(logits, target) -> scalar`` for a registered loss name.

    ``kwargs`` are bound to the loss's keyword options (e.g. ``build_loss("ce",
    weights=(1, 1))``); an unknown name or option raises :class:`lavt.errors.ConfigError`.
    """
    if name not in LOSSES:
        raise ConfigError(f"unknown loss {name!r}; choose one of: {', '.join(sorted(LOSSES))}")
    fn = LOSSES[name]
    params = inspect.signature(fn).parameters
    options = [p for p in list(params)[2:]]
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        raise ConfigError(
            f"loss {name!r} has no option(s) {', '.join(unknown)}; its options are: "
            f"{', '.join(o for o in options if o != 'reduction') or '(none)'}"
        )
    if kwargs.get("reduction", "mean") != "mean":
        raise ConfigError(f"build_loss returns scalar losses; reduction must be 'mean', got {kwargs['reduction']!r}")
    return functools.partial(fn, **kwargs) if kwargs else fn
