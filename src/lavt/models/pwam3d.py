"""The 3D Pixel-Word Attention Module (paper Sec. 3.2.2, Table 1, Fig. 6).

The 2D PWAM's four spatial projections -- omega_m (visual), omega_q (query), omega_w (attended
words) and omega_o (multi-modal) -- become spatio-temporal convolutions over the (T, H, W) token
grid. Table 1 lists twelve constructions; :data:`STRUCTURES` spells each row as four kernel specs:

    "1x1x1"            element-wise (a Linear on tokens)
    "3x1x1", "1x3x3", "3x3x3"   one temporal / spatial / spatio-temporal convolution
    "3x1x1o1x3x3"      f o g: the 3x1x1 convolution on top of the 1x3x3 one (Fig. 6a)
    "A+B"              two convolutions side by side, outputs added (Fig. 6c)
    "A;B"              two convolutions side by side, outputs concatenated, then a 1x1x1
                       channel reduction (Fig. 6b)

Every projection keeps PWAM's post-op: GELU + dropout for omega_m / omega_o, the PWAM norm
(InstanceNorm by default) for omega_q / omega_w. As in the official SepTPWAM, each branch of a
side-by-side pair has its *own* post-op before the addition (the paper's figure suggests one
after it), and InstanceNorm statistics span the whole clip (T*H*W positions), so a frame's
output depends on the other frames. Structure 1 is the "naive" video LAVT: the 2D PWAM on the
flattened clip (:class:`lavt.models.pwam.PWAM`), which this module does not re-implement.

Only structures 1 and 12 exist in the released code with known key names; the others follow
the paper's table. For the sequential construct (structure 5) no nonlinearity sits between the
two convolutions ("nonlinearity and normalization stay unchanged from PWAM"), and for the
concatenated one (structure 8) each branch has its post-op before the concatenation.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from .pwam import _ACTIVATIONS, TokenNorm, pixel_word_attention

# Table 1: (omega_m, omega_q, omega_w, omega_o) per structure.
_P = "3x3x3+1x1x1"
STRUCTURES: dict[int, tuple[str, str, str, str]] = {
    1: ("1x1x1", "1x1x1", "1x1x1", "1x1x1"),
    2: ("3x1x1", "3x1x1", "1x1x1", "1x1x1"),
    3: ("1x3x3", "1x3x3", "1x1x1", "1x1x1"),
    4: ("3x3x3", "3x3x3", "1x1x1", "1x1x1"),
    5: ("3x1x1o1x3x3", "3x1x1o1x3x3", "1x1x1", "1x1x1"),
    6: ("3x1x1+1x3x3", "3x1x1+1x3x3", "1x1x1", "1x1x1"),
    7: (_P, _P, "1x1x1", "1x1x1"),
    8: ("3x3x3;1x1x1", "3x3x3;1x1x1", "1x1x1", "1x1x1"),
    9: ("3x3x3", "3x3x3", "3x3x3", "3x3x3"),
    10: (_P, _P, _P, "1x1x1"),
    11: (_P, _P, "1x1x1", _P),
    12: (_P, _P, _P, _P),
}


def _kernel(spec: str) -> tuple[int, int, int]:
    try:
        k = tuple(int(v) for v in spec.split("x"))
    except ValueError:
        k = ()
    if len(k) != 3 or any(v not in (1, 3) for v in k):
        raise ValueError(f"bad kernel spec {spec!r} (expected e.g. '3x1x1')")
    return k  # type: ignore[return-value]


class _Conv(nn.Module):
    """One convolution on (B, N, C) tokens laid out on a (T, H, W) grid, 'same' padding.
    1x1x1 is a Linear (same maths, no reshapes)."""

    def __init__(self, in_dim: int, out_dim: int, kernel: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel = kernel
        if kernel == (1, 1, 1):
            self.proj: nn.Module = nn.Linear(in_dim, out_dim)
        else:
            self.proj = nn.Conv3d(in_dim, out_dim, kernel, padding=tuple(k // 2 for k in kernel))

    def forward(self, x: Tensor, grid: tuple[int, int, int]) -> Tensor:
        if self.kernel == (1, 1, 1):
            return self.proj(x)
        b, n, c = x.shape
        y = self.proj(x.transpose(1, 2).reshape(b, c, *grid))
        return y.flatten(2).transpose(1, 2)


class _Branch(nn.Module):
    """Convolution(s) then the projection's post-op."""

    def __init__(self, in_dim: int, out_dim: int, spec: str, post: Callable[[], nn.Module]) -> None:
        super().__init__()
        # "fog": g first, f on top
        specs = list(reversed(spec.split("o"))) if "o" in spec else [spec]
        self.convs = nn.ModuleList(
            _Conv(in_dim if i == 0 else out_dim, out_dim, _kernel(s)) for i, s in enumerate(specs)
        )
        self.post = post()

    def forward(self, x: Tensor, grid: tuple[int, int, int]) -> Tensor:
        for conv in self.convs:
            x = conv(x, grid)
        return self.post(x)


class SpatioTemporalProjection(nn.Module):
    """One of omega_m / omega_q / omega_w / omega_o for a Table-1 kernel spec."""

    def __init__(self, in_dim: int, out_dim: int, spec: str, post: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.spec = spec
        self.concat = ";" in spec
        parts = spec.split(";") if self.concat else spec.split("+")
        self.branches = nn.ModuleList(_Branch(in_dim, out_dim, p, post) for p in parts)
        self.reduce = nn.Linear(out_dim * len(parts), out_dim) if self.concat else None

    def forward(self, x: Tensor, grid: tuple[int, int, int]) -> Tensor:
        outs = [branch(x, grid) for branch in self.branches]
        if self.reduce is not None:
            return self.reduce(torch.cat(outs, dim=-1))
        y = outs[0]
        for o in outs[1:]:
            y = y + o
        return y


class PWAM3d(nn.Module):
    """3D PWAM on (B, T*H*W, C) tokens of a (T, H, W) grid; same attention as the 2D PWAM."""

    def __init__(
        self,
        dim: int,
        lang_dim: int,
        structure: int = 12,
        num_heads: int = 1,
        norm: str = "instance",
        dropout: float = 0.0,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        if structure not in STRUCTURES:
            raise ValueError(f"unknown 3D PWAM structure {structure}; Table 1 has 1-12")
        self.structure = structure
        self.num_heads = num_heads
        m, q, w, o = STRUCTURES[structure]

        def act() -> nn.Module:
            return nn.Sequential(_ACTIVATIONS[activation](), nn.Dropout(dropout))

        def normalise() -> nn.Module:
            return TokenNorm(norm, dim)

        self.vis_project = SpatioTemporalProjection(dim, dim, m, act)  # omega_m
        self.query = SpatioTemporalProjection(dim, dim, q, normalise)  # omega_q
        self.key = nn.Linear(lang_dim, dim)  # omega_k
        self.value = nn.Linear(lang_dim, dim)  # omega_v
        self.out = SpatioTemporalProjection(dim, dim, w, normalise)  # omega_w
        self.project_mm = SpatioTemporalProjection(dim, dim, o, act)  # omega_o

    def forward(self, x: Tensor, words: Tensor, word_mask: Tensor, grid: tuple[int, int, int]) -> Tensor:
        q = self.query(x, grid)
        g = pixel_word_attention(q, self.key(words), self.value(words), word_mask, self.num_heads)
        return self.project_mm(self.vis_project(x, grid) * self.out(g, grid), grid)
