"""Pixel-Word Attention Module (paper Sec. 3.1.2) and the language gate (Sec. 3.1.3).

Every 1x1 convolution of the paper is an ``nn.Linear`` on (B, N, C) tokens (same maths, no
transposes). Where the official code differs from the paper text, the official behaviour is the
default (see docs/paper-vs-official.md): GELU (not ReLU) in the visual and output projections,
projection widths equal to the stage width C_i, attention scaled by C_i^-1/2 even with several
heads, padded words zeroed in keys/values and pushed to -1e4 before the softmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MASKED_WORD_LOGIT = -1e4  # official additive value for padded words (not -inf)


class TokenNorm(nn.Module):
    """The normalisation after the query / output projections, on (B, N, C) tokens (Table 6b).

    instance: each channel over the N positions of each sample (InstanceNorm, no affine, the
    default); layer: LayerNorm over channels; batch: BatchNorm over batch and positions; none.
    """

    def __init__(self, kind: str, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.kind, self.eps = kind, eps
        if kind == "layer":
            self.norm = nn.LayerNorm(dim, eps=eps)
        elif kind == "batch":
            self.norm = nn.BatchNorm1d(dim, eps=eps)
        elif kind not in ("instance", "none"):
            raise ValueError(f"unknown PWAM normalisation {kind!r}")

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "instance":
            # statistics in float32, as torch's own norms under autocast: in fp16 the backward of
            # rsqrt(var + eps) overflows (nan gradients), in bf16 the variance keeps 8 mantissa bits.
            # In float32 (the official model, the parity tests) this is the same computation.
            xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # (float64 stays float64)
            var, mean = torch.var_mean(xf, dim=1, keepdim=True, correction=0)
            return ((xf - mean) * torch.rsqrt(var + self.eps)).to(x.dtype)
        if self.kind == "layer":
            return self.norm(x)
        if self.kind == "batch":
            return self.norm(x.transpose(1, 2)).transpose(1, 2)
        return x


_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}


def _projection(in_dim: int, out_dim: int, dropout: float, activation: str = "gelu") -> nn.Sequential:
    # omega_m / omega_o: 1x1 conv -> GELU (official; the paper says ReLU) -> dropout
    return nn.Sequential(nn.Linear(in_dim, out_dim), _ACTIVATIONS[activation](), nn.Dropout(dropout))


class PWAM(nn.Module):
    """F = omega_o(omega_m(V) * omega_w(softmax(omega_q(V) omega_k(L)^T / sqrt(C)) omega_v(L)))."""

    def __init__(
        self,
        dim: int,
        lang_dim: int,
        num_heads: int = 1,
        norm: str = "instance",
        dropout: float = 0.0,
        activation: str = "gelu",
    ):
        super().__init__()
        self.num_heads = num_heads
        self.vis_project = _projection(dim, dim, dropout, activation)
        self.query = nn.Linear(dim, dim)
        self.query_norm = TokenNorm(norm, dim)
        self.key = nn.Linear(lang_dim, dim)
        self.value = nn.Linear(lang_dim, dim)
        self.out = nn.Linear(dim, dim)
        self.out_norm = TokenNorm(norm, dim)
        self.project_mm = _projection(dim, dim, dropout, activation)

    def attend(self, x: Tensor, words: Tensor, word_mask: Tensor) -> Tensor:
        """G_i: for every pixel, a mixture of word features. x (B,N,C), words (B,L,Cl), mask (B,L)."""
        q = self.query_norm(self.query(x))
        g = pixel_word_attention(q, self.key(words), self.value(words), word_mask, self.num_heads)
        return self.out_norm(self.out(g))

    def forward(self, x: Tensor, words: Tensor, word_mask: Tensor, grid: tuple[int, ...] | None = None) -> Tensor:
        # grid (the token layout) is unused: every projection is element-wise
        return self.project_mm(self.vis_project(x) * self.attend(x, words, word_mask))


def pixel_word_attention(q: Tensor, keys: Tensor, values: Tensor, word_mask: Tensor, num_heads: int) -> Tensor:
    """softmax(q k^T / sqrt(C)) v for pixel queries q (B,N,C) over word keys/values (B,L,C).

    Official details: padded words are zeroed in keys and values *and* pushed to -1e4 (not
    -inf) before the softmax; the scale is C^-1/2 of the full width even with several heads.
    """
    b, n, c = q.shape
    h = num_heads
    mask = word_mask.to(q.dtype)
    if q.stride(-1) != 1:  # a channel-strided query (the 3D PWAM's convolutions) sends SDPA to its slow math kernel
        q = q.contiguous()
    q = q.view(b, n, h, c // h).transpose(1, 2)
    k = (keys * mask[..., None]).view(b, -1, h, c // h).transpose(1, 2)
    v = (values * mask[..., None]).view(b, -1, h, c // h).transpose(1, 2)
    word_bias = ((1.0 - mask) * MASKED_WORD_LOGIT)[:, None, None, :]  # (B, 1, 1, L)
    g = F.scaled_dot_product_attention(q, k, v, attn_mask=word_bias, scale=c**-0.5)
    return g.transpose(1, 2).reshape(b, n, c)


class PooledFusion(nn.Module):
    """Table 5 "no PWAM": G_i replaced by one sentence vector (masked mean of the words)."""

    def __init__(self, dim: int, lang_dim: int, dropout: float = 0.0, activation: str = "gelu"):
        super().__init__()
        self.vis_project = _projection(dim, dim, dropout, activation)
        self.lang_project = nn.Sequential(nn.Linear(lang_dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.project_mm = _projection(dim, dim, dropout, activation)

    def forward(self, x: Tensor, words: Tensor, word_mask: Tensor, grid: tuple[int, ...] | None = None) -> Tensor:
        mask = word_mask.to(words.dtype)[..., None]
        sentence = (words * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.project_mm(self.vis_project(x) * self.lang_project(sentence)[:, None, :])


def language_gate(dim: int, activation: str = "tanh", bias: bool = False) -> nn.Sequential:
    """gamma_i: Linear -> ReLU -> Linear -> tanh (or sigmoid, Table 6a); bias-free as in the official code."""
    act = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid}[activation]
    return nn.Sequential(nn.Linear(dim, dim, bias=bias), nn.ReLU(), nn.Linear(dim, dim, bias=bias), act())


class WordUpdate(nn.Module):
    """bi-3D-PWAM's language step (paper Sec. 4.2, no official code): the PWAM construction with
    the roles swapped -- every real word attends to the stage's pixels --, added back to the word
    features through a gate, so the next stage reads vision-aware language.

        u = omega_o'(omega_m'(L) * omega_w'(softmax(omega_q'(L) omega_k'(V)^T / sqrt(C)) omega_v'(V)))
        L <- L + gate(u) * u        (padded words stay as they are)

    LayerNorm replaces PWAM's instance norm on the word side (an expression has too few words
    for statistics over positions, and padding would enter them).
    """

    def __init__(self, dim: int, lang_dim: int, dropout: float = 0.0, activation: str = "gelu") -> None:
        super().__init__()
        self.word_project = _projection(lang_dim, lang_dim, dropout, activation)  # omega_m'
        self.query = nn.Sequential(nn.Linear(lang_dim, dim), nn.LayerNorm(dim))  # omega_q'
        self.key = nn.Linear(dim, dim)  # omega_k'
        self.value = nn.Linear(dim, dim)  # omega_v'
        self.out = nn.Sequential(nn.Linear(dim, lang_dim), nn.LayerNorm(lang_dim))  # omega_w'
        self.project_mm = _projection(lang_dim, lang_dim, dropout, activation)  # omega_o'
        self.gate = language_gate(lang_dim)

    def forward(self, words: Tensor, word_mask: Tensor, pixels: Tensor) -> Tensor:
        """words (B, L, C_l), word_mask (B, L), pixels (B, N, C) -> updated words (B, L, C_l)."""
        q = self.query(words)
        attended = F.scaled_dot_product_attention(
            q[:, None], self.key(pixels)[:, None], self.value(pixels)[:, None], scale=q.shape[-1] ** -0.5
        )[:, 0]
        u = self.project_mm(self.word_project(words) * self.out(attended))
        return words + self.gate(u) * u * word_mask.to(words.dtype)[..., None]
