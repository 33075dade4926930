"""The light mask decoder (paper Eq. 10; official ``SimpleDecoding``).

Top-down: Y_4 = X_4; Y_i = rho_i([up(Y_{i+1}); X_i]) with rho = conv3x3-BN-ReLU-conv3x3-BN-ReLU
(no conv bias), then a 1x1 conv (with bias) to 2 class maps (0 = background, 1 = object).
The coarser map is resized with bilinear ``align_corners=True`` to the finer map's size (so odd
sizes work); the concatenation order is [top-down, skip].

The 3x3 convolutions are most of the CPU inference time of a Swin-B LAVT (about half at 480 px).
:class:`Conv3x3` can run them with NNPACK's Winograd algorithm (shipped inside PyTorch's CPU
builds, but never chosen by ``F.conv2d`` when oneDNN is present), ~3x faster on AVX2 CPUs for
these sizes. Winograd is exact in exact arithmetic; in float32 it rounds differently (relative
difference ~1e-6..1e-5 of the activations, far below what TF32 convolutions on a GPU already
introduce). It is therefore off by default (the model call stays bit-for-bit the direct
convolution the parity fixtures check) and switched on for inference by ``LAVT.use_winograd``
(the :class:`~lavt.predict.Predictor` does so unless told ``exact=True``).
"""

from __future__ import annotations

import functools
import warnings
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@functools.lru_cache(maxsize=1)
def winograd_available() -> bool:
    """Whether this PyTorch build has NNPACK on this CPU (the check also initialises NNPACK,
    without which every NNPACK call fails)."""
    try:
        return bool(torch.backends.nnpack.is_available())
    except Exception:  # builds without the binding
        return False


class Conv3x3(nn.Conv2d):
    """``nn.Conv2d`` (3x3, stride 1, padding 1; same parameters and state-dict keys) whose forward
    can use NNPACK's Winograd kernel when ``winograd`` is set and the call is a CPU float32
    forward that autograd does not record (inference); anything else takes ``F.conv2d``."""

    winograd: bool = False
    _nnpack_failed = False  # class-wide: after one failure every layer stays on F.conv2d

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1, bias=False)

    def _winograd_applies(self, x: Tensor) -> bool:
        return (
            self.winograd
            and not Conv3x3._nnpack_failed
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.weight.dtype == torch.float32
            and not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))
            and not torch.is_autocast_enabled("cpu")
            and winograd_available()
        )

    def forward(self, x: Tensor) -> Tensor:
        if self._winograd_applies(x):
            out = self._winograd(x, self.weight, self.bias)
            if out is not None:
                return out
        return super().forward(x)

    def forward_bn_relu(self, x: Tensor, bn: nn.BatchNorm2d) -> Tensor:
        """relu(bn(self(x))). On the Winograd path (inference) the eval-mode BatchNorm is folded
        into the convolution's weight and bias, which saves a pass over the largest maps."""
        if not bn.training and bn.track_running_stats and self._winograd_applies(x):
            scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
            shift = bn.bias - bn.running_mean * scale
            out = self._winograd(x, self.weight * scale[:, None, None, None], shift)
            if out is not None:
                return out.relu_()
        return F.relu(bn(self(x)), inplace=True)  # in place: BN's backward does not need its output

    @staticmethod
    def _winograd(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor | None:
        try:
            return torch._nnpack_spatial_convolution(x.contiguous(), weight, bias, [1, 1], [1, 1])
        except RuntimeError as err:  # NNPACK refuses a case: fall back for good, once, loudly
            Conv3x3._nnpack_failed = True
            warnings.warn(f"NNPACK Winograd convolution failed ({err}); using direct convolution", stacklevel=3)
            return None


class SimpleDecoder(nn.Module):
    """Decodes 3 or 4 feature maps (finest first) into class logits at the finest map's size.

    Parameter names follow the official checkpoints (``conv1_4``, ``bn1_4``, ... ``conv1_1``):
    level 4 fuses X_4 with X_3, level 3 adds X_2, level 2 adds X_1.
    """

    def __init__(self, in_dims: Sequence[int], hidden: int, num_classes: int = 2) -> None:
        super().__init__()
        if len(in_dims) not in (3, 4):
            raise ValueError("SimpleDecoder takes 3 or 4 feature maps")
        dims = list(in_dims)[::-1]  # coarsest first
        self.levels = [4, 3, 2][: len(dims) - 1]
        top = dims[0]
        for level, skip in zip(self.levels, dims[1:]):
            setattr(self, f"conv1_{level}", Conv3x3(top + skip, hidden))
            setattr(self, f"bn1_{level}", nn.BatchNorm2d(hidden))
            setattr(self, f"conv2_{level}", Conv3x3(hidden, hidden))
            setattr(self, f"bn2_{level}", nn.BatchNorm2d(hidden))
            top = hidden
        self.conv1_1 = nn.Conv2d(hidden, num_classes, 1)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        feats = list(features)[::-1]  # coarsest first
        x = feats[0]
        for level, skip in zip(self.levels, feats[1:]):
            if x.shape[-2:] != skip.shape[-2:]:
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
            x = torch.cat([x, skip], dim=1)
            x = getattr(self, f"conv1_{level}").forward_bn_relu(x, getattr(self, f"bn1_{level}"))
            x = getattr(self, f"conv2_{level}").forward_bn_relu(x, getattr(self, f"bn2_{level}"))
        return self.conv1_1(x)
