"""The light mask decoder (paper Eq. 10; official ``SimpleDecoding``).

Top-down: Y_4 = X_4; Y_i = rho_i([up(Y_{i+1}); X_i]) with rho = conv3x3-BN-ReLU-conv3x3-BN-ReLU
(no conv bias), then a 1x1 conv (with bias) to 2 class maps (0 = background, 1 = object).
The coarser map is resized with bilinear ``align_corners=True`` to the finer map's size (so odd
sizes work); the concatenation order is [top-down, skip].
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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
            setattr(self, f"conv1_{level}", nn.Conv2d(top + skip, hidden, 3, padding=1, bias=False))
            setattr(self, f"bn1_{level}", nn.BatchNorm2d(hidden))
            setattr(self, f"conv2_{level}", nn.Conv2d(hidden, hidden, 3, padding=1, bias=False))
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
            x = F.relu(getattr(self, f"bn1_{level}")(getattr(self, f"conv1_{level}")(x)))
            x = F.relu(getattr(self, f"bn2_{level}")(getattr(self, f"conv2_{level}")(x)))
        return self.conv1_1(x)
