"""Swin Transformer pieces with the official LAVT maths.

We reuse torchvision's Swin building blocks (``SwinTransformerBlock``: pre-norm, MLP, stochastic
depth; ``PatchMerging``; the relative-position tables and indices of ``ShiftedWindowAttention``
and ``ShiftedWindowAttention3d``) and override only the attention forward, because the official
Swin (mmseg flavour, used by every released LAVT checkpoint) differs in two details:

* 2D: the window is never clamped and the shift is kept even when a feature map fits in one
  window (torchvision drops the shift there). A 7x7 stage-4 map with window 7 is still shifted.
* 3D (Video Swin): an axis not larger than its window uses its size as window and no shift,
  and the bias is read from the first ``prod(window)`` rows of the full-window index, as
  torchvision does too.

Both paths pad the *normalised* tokens with zeros to a multiple of the window; pad tokens are
not masked (they act as keys/values with k = bias_k, v = bias_v), exactly like the official
code. The attention itself runs through ``scaled_dot_product_attention`` and the shift mask is
built once per feature-map size and cached, instead of per forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.swin_transformer import ShiftedWindowAttention
from torchvision.models.video.swin_transformer import ShiftedWindowAttention3d

SHIFT_MASK_VALUE = -100.0  # official value for token pairs from different shift regions (not -inf)


@lru_cache(maxsize=128)
def shift_window_mask(
    padded_size: tuple[int, int, int],
    window: tuple[int, int, int],
    shift: tuple[int, int, int],
    device: torch.device,
) -> Tensor:
    """Additive mask (num_windows, N, N) separating the regions a cyclic shift glues together.

    Along each shifted axis of length P the canvas splits into [0, P-w), [P-w, P-s), [P-s, P);
    tokens of one window that come from different regions get -100. The mask encodes shift
    regions only, never padding (official behaviour). Cached: it depends only on sizes.
    """
    region = torch.zeros(padded_size, dtype=torch.long)
    stride = 1
    for axis in reversed(range(3)):
        size, w, s = padded_size[axis], window[axis], shift[axis]
        if s > 0:
            ids = torch.zeros(size, dtype=torch.long)
            ids[size - w : size - s] = 1
            ids[size - s :] = 2
            shape = [1, 1, 1]
            shape[axis] = size
            region = region + ids.view(shape) * stride
        stride *= 3
    windows = _partition(region[None, ..., None], window).squeeze(-1)  # (nW, N)
    mask = (windows[:, :, None] != windows[:, None, :]).float() * SHIFT_MASK_VALUE
    return mask.to(device)


def _partition(x: Tensor, window: Sequence[int]) -> Tensor:
    """(B, D, H, W, C) -> (B * num_windows, wd*wh*ww, C), windows in row-major order."""
    b, d, h, w, c = x.shape
    wd, wh, ww = window
    x = x.view(b, d // wd, wd, h // wh, wh, w // ww, ww, c)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, wd * wh * ww, c)


def _reverse_partition(x: Tensor, window: Sequence[int], b: int, d: int, h: int, w: int) -> Tensor:
    wd, wh, ww = window
    c = x.shape[-1]
    x = x.view(b, d // wd, h // wh, w // ww, wd, wh, ww, c)
    return x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, d, h, w, c)


def window_attention(
    x: Tensor,
    qkv: nn.Linear,
    proj: nn.Linear,
    position_bias: Tensor,
    window: tuple[int, int, int],
    shift: tuple[int, int, int],
    num_heads: int,
    attention_dropout: float = 0.0,
    dropout: float = 0.0,
    training: bool = False,
) -> Tensor:
    """(Shifted) window multi-head self-attention on (B, D, H, W, C) tokens.

    ``position_bias`` is (heads, N, N) for N = prod(window).
    """
    b, d, h, w, c = x.shape
    pads = [(-size) % win for size, win in zip((d, h, w), window)]
    if any(pads):
        x = F.pad(x, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))  # zeros after LN1, unmasked
    dp, hp, wp = d + pads[0], h + pads[1], w + pads[2]
    shifted = any(s > 0 for s in shift)
    if shifted:
        x = torch.roll(x, shifts=tuple(-s for s in shift), dims=(1, 2, 3))

    windows = _partition(x, window)  # (B*nW, N, C)
    n_tokens = windows.shape[1]
    n_windows = windows.shape[0] // b
    head_dim = c // num_heads
    # q, k, v stay strided views (B*nW, heads, N, hd) of the qkv output: SDPA's kernels take
    # strides, so no copy is made here
    q, k, v = (
        F.linear(windows, qkv.weight, qkv.bias)
        .view(-1, n_tokens, 3, num_heads, head_dim)
        .permute(2, 0, 3, 1, 4)
        .unbind(0)
    )
    # (1, heads, N, N) broadcasts over the windows without being copied; contiguous first, since
    # a permuted table makes the mask sum below permuted too (SDPA would then copy it)
    bias = position_bias.to(q.dtype).contiguous().unsqueeze(0)
    for_export = exporting()
    if shifted:
        # built afresh while exporting: the cache would otherwise keep the tracer's fake tensor
        build_mask = shift_window_mask.__wrapped__ if for_export else shift_window_mask
        mask = build_mask((dp, hp, wp), window, shift, x.device).to(q.dtype)
        bias = bias + mask.unsqueeze(1)  # (nW, heads, N, N): the windows of one image
    # 4D query and mask keep SDPA on its fast CPU kernel (a 3D mask sends it to the slow "math"
    # kernel). A per-window mask cannot broadcast over B*nW, so shifted batches run per image
    # rather than repeating the mask B times.
    p = attention_dropout if training else 0.0
    scale = head_dim**-0.5
    if for_export:
        out = _window_attention_for_export(q, k, v, bias, b, scale)
    elif shifted and b > 1:
        parts = zip(q.split(n_windows), k.split(n_windows), v.split(n_windows))
        out = torch.cat(
            [F.scaled_dot_product_attention(*qkv_i, attn_mask=bias, dropout_p=p, scale=scale).transpose(1, 2)
             for qkv_i in parts]
        )
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p, scale=scale).transpose(1, 2)
    out = out.reshape(-1, n_tokens, c)  # (B*nW, N, heads*hd)
    out = F.dropout(F.linear(out, proj.weight, proj.bias), p=dropout, training=training)

    out = _reverse_partition(out, window, b, dp, hp, wp)
    if shifted:
        out = torch.roll(out, shifts=tuple(shift), dims=(1, 2, 3))
    return out[:, :d, :h, :w].contiguous()


def exporting() -> bool:
    """Whether the model is being traced for export (``torch.export`` / ``torch.onnx.export``).

    The eager code picks its attention kernel by the batch size (per-image SDPA calls for
    shifted batches); a traced graph must not depend on it, or the exported batch size is baked
    in. Export therefore takes one batch-independent formulation of the same function."""
    return torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export()


def _window_attention_for_export(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, b, scale: float) -> Tensor:
    """softmax(q k^T * scale + bias) v written out (the official computation), with the windows of
    each image on their own axis so a per-window mask (nW, heads, N, N) broadcasts over any batch.
    q, k, v (B*nW, heads, N, hd) -> (B*nW, N, heads, hd)."""
    shape = (b, -1, *q.shape[1:])  # (B, nW, heads, N, hd)
    q, k, v = q.reshape(shape), k.reshape(shape), v.reshape(shape)
    attn = torch.softmax((q * scale) @ k.transpose(-2, -1) + bias, dim=-1)
    return (attn @ v).flatten(0, 1).transpose(1, 2)


def _nonpersistent_index(module: nn.Module) -> None:
    # The index is derived from the window size: keep it out of saved weights.
    index = module.relative_position_index
    del module._buffers["relative_position_index"]
    module.register_buffer("relative_position_index", index, persistent=False)


class WindowAttention2d(ShiftedWindowAttention):
    """torchvision's 2D window attention with the official rule: never clamp, always shift."""

    def define_relative_position_index(self) -> None:
        super().define_relative_position_index()
        _nonpersistent_index(self)

    def forward(self, x: Tensor) -> Tensor:  # (B, H, W, C)
        n = self.window_size[0] * self.window_size[1]
        bias = self.relative_position_bias_table[self.relative_position_index].view(n, n, -1).permute(2, 0, 1)
        out = window_attention(
            x.unsqueeze(1),
            self.qkv,
            self.proj,
            bias,
            (1, *self.window_size),
            (0, *self.shift_size),
            self.num_heads,
            self.attention_dropout,
            self.dropout,
            self.training,
        )
        return out.squeeze(1)


class WindowAttention3d(ShiftedWindowAttention3d):
    """torchvision's 3D window attention (Video Swin rule: clamp to the input, then no shift)."""

    def define_relative_position_index(self) -> None:
        super().define_relative_position_index()
        _nonpersistent_index(self)

    def forward(self, x: Tensor) -> Tensor:  # (B, D, H, W, C)
        window, shift = list(self.window_size), list(self.shift_size)
        for axis, size in enumerate(x.shape[1:4]):
            if size <= window[axis]:
                window[axis], shift[axis] = size, 0
        n = window[0] * window[1] * window[2]
        # Official Video Swin reads the first N rows/cols of the full-window index.
        bias = self.relative_position_bias_table[self.relative_position_index[:n, :n].reshape(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1)
        return window_attention(
            x,
            self.qkv,
            self.proj,
            bias,
            tuple(window),
            tuple(shift),
            self.num_heads,
            self.attention_dropout,
            self.dropout,
            self.training,
        )


class PatchEmbed2d(nn.Module):
    """Conv patchify + LayerNorm; the image is zero-padded right/bottom to a multiple of the patch."""

    def __init__(self, patch_size: int, embed_dim: int, in_channels: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, H/p, W/p, C)
        p = self.patch_size
        pad_h, pad_w = (-x.shape[-2]) % p, (-x.shape[-1]) % p
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))
