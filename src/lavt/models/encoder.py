"""The language-aware Swin encoder (paper Sec. 3.1.1, Fig. 2; video: Sec. 3.2, Fig. 5a).

Per stage i: Swin blocks -> V_i; F_i = PWAM(V_i, L); E_i = V_i + gate(F_i) * F_i (the language
pathway); PatchMerging(E_i) feeds stage i+1. Images run on (B, H, W, C) tokens with 2D windows;
videos (``config.video``) on (B, T, H, W, C) tokens with Video Swin's 3D windows, the 3D PWAM of
the configured Table-1 structure, a token-wise gate and spatial-only patch merging; their decoder
inputs are returned per frame, (B*T, C, H, W) batch-major (row b*T + t), as the official code. The decoder reads LayerNorm(F_i) (official per-stage
``norm{i}``; the paper omits it). Stage 4's E_4 is computed only when the decoder reads E_i
(official: E_4 is discarded, the stage-4 gate is dead weight, but kept so checkpoints load).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torchvision.models.swin_transformer import PatchMerging, SwinTransformerBlock
from torchvision.models.video.swin_transformer import PatchEmbed3d

from ..config import LAVTConfig
from .pwam import PWAM, PooledFusion, WordUpdate, language_gate
from .pwam3d import PWAM3d
from .swin import PatchEmbed2d, WindowAttention2d, WindowAttention3d


class LanguageAwareStage(nn.Module):
    def __init__(self, cfg: LAVTConfig, index: int, drop_path: list[float]) -> None:
        super().__init__()
        dim, ws = cfg.stage_dims[index], cfg.window_size
        window = [cfg.temporal_window, ws, ws] if cfg.video else [ws, ws]
        self.blocks = nn.Sequential(
            *(
                # torchvision's block is dimension-agnostic; only the attention differs
                SwinTransformerBlock(
                    dim,
                    cfg.num_heads[index],
                    window_size=window,
                    shift_size=[0] * len(window) if j % 2 == 0 else [w // 2 for w in window],
                    mlp_ratio=cfg.mlp_ratio,
                    stochastic_depth_prob=drop_path[j],
                    attn_layer=WindowAttention3d if cfg.video else WindowAttention2d,
                )
                for j in range(cfg.depths[index])
            )
        )
        # unified LAVT: 2D Swin blocks on the central frame beside the Video Swin blocks
        self.blocks2d = (
            nn.Sequential(
                *(
                    SwinTransformerBlock(
                        dim,
                        cfg.num_heads[index],
                        window_size=[ws, ws],
                        shift_size=[0, 0] if j % 2 == 0 else [ws // 2, ws // 2],
                        mlp_ratio=cfg.mlp_ratio,
                        stochastic_depth_prob=drop_path[j],
                        attn_layer=WindowAttention2d,
                    )
                    for j in range(cfg.depths[index])
                )
            )
            if cfg.unified
            else None
        )
        self.unified_merge = cfg.unified_merge
        self.word_update = (
            WordUpdate(dim, cfg.lang_dim, cfg.fusion_dropout, cfg.pwam_activation)
            if cfg.bidirectional and index < cfg.num_stages - 1  # the last stage's words feed nothing
            else None
        )
        if cfg.fusion == "pwam" and cfg.video and cfg.pwam_structure != 1:
            self.fusion = PWAM3d(
                dim,
                cfg.lang_dim,
                cfg.pwam_structure,
                cfg.pwam_heads[index],
                cfg.pwam_norm,
                cfg.fusion_dropout,
                cfg.pwam_activation,
            )
        elif cfg.fusion == "pwam":  # images, and the naive video LAVT (structure 1)
            self.fusion = PWAM(
                dim, cfg.lang_dim, cfg.pwam_heads[index], cfg.pwam_norm, cfg.fusion_dropout, cfg.pwam_activation
            )
        else:
            self.fusion = PooledFusion(dim, cfg.lang_dim, cfg.fusion_dropout, cfg.pwam_activation)
        self.gate = language_gate(dim, cfg.gate, cfg.gate_bias) if cfg.gate != "none" else None
        self.language_pathway = cfg.language_pathway
        # torchvision's PatchMerging merges the last two grid axes: spatial-only for videos too
        self.downsample = PatchMerging(dim) if index < cfg.num_stages - 1 else None
        self.activation_checkpointing = False  # a training option: recompute blocks in backward

    @staticmethod
    def _run(blocks: nn.Sequential, x: Tensor, checkpointing: bool) -> Tensor:
        if not checkpointing:
            return blocks(x)
        for block in blocks:
            x = checkpoint(block, x, use_reentrant=False)
        return x

    def run_blocks(self, x: Tensor, stream: str = "3d") -> Tensor:
        """V_i from the stage input. Images and plain video models: their Swin blocks. Unified
        models: ``"3d"`` the Video Swin path, ``"2d"`` the 2D path on every frame (an image is a
        one-frame clip), ``"dual"`` both, the central frame's 2D output added to the clip's
        (broadcast over time, or to the central frame only)."""
        ckpt = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        if self.blocks2d is None or stream == "3d":
            return self._run(self.blocks, x, ckpt)
        b, t = x.shape[:2]
        if stream == "2d":
            return self._run(self.blocks2d, x.flatten(0, 1), ckpt).view(x.shape)
        center = t // 2
        v_c = self._run(self.blocks2d, x[:, center], ckpt)  # (B, H, W, C)
        v_t = self._run(self.blocks, x, ckpt)
        if self.unified_merge == "broadcast":
            return v_t + v_c[:, None]
        return torch.cat([v_t[:, :center], v_t[:, center : center + 1] + v_c[:, None], v_t[:, center + 1 :]], dim=1)

    def fuse(self, v: Tensor, words: Tensor, word_mask: Tensor, need_e: bool = True) -> tuple[Tensor, Tensor | None]:
        """(B, *grid, C) visual features V -> (F, E) on the same grid (grid (H, W) or (T, H, W))."""
        b, *grid, c = v.shape
        f = self.fusion(v.reshape(b, -1, c), words, word_mask, tuple(grid)).view(v.shape)
        if not need_e:
            return f, None
        if not self.language_pathway:
            return f, v
        return f, v + (self.gate(f) * f if self.gate is not None else f)


class LanguageAwareSwin(nn.Module):
    """Image encoder: returns the decoder inputs, finest first, as (B, C_i, H_i, W_i) maps."""

    def __init__(self, cfg: LAVTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.video:  # Conv3d (1, p, p) + LN, pads H/W to a multiple of the patch like the 2D one
            self.patch_embed: nn.Module = PatchEmbed3d(
                [1, cfg.patch_size, cfg.patch_size], embed_dim=cfg.embed_dim, norm_layer=nn.LayerNorm
            )
        else:
            self.patch_embed = PatchEmbed2d(cfg.patch_size, cfg.embed_dim)
        # plain numbers: on the CPU even when the model is built under `with torch.device("meta"/"cuda")`
        rates = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths), device="cpu").tolist()
        starts = [sum(cfg.depths[:i]) for i in range(cfg.num_stages)]
        self.stages = nn.ModuleList(
            LanguageAwareStage(cfg, i, rates[starts[i] : starts[i] + cfg.depths[i]]) for i in range(cfg.num_stages)
        )
        norm = nn.LayerNorm if cfg.stage_norm else (lambda d: nn.Identity())
        self.out_norms = nn.ModuleList(norm(d) for d in cfg.stage_dims)
        self._init_weights()

    def _init_weights(self) -> None:
        # Official init: trunc_normal(0.02) on Swin linears and gates, zero bias, LN 1/0.
        # PWAM projections keep PyTorch's default (they are Conv1d layers in the official code,
        # whose default init equals nn.Linear's).
        for name, m in self.named_modules():
            if ".fusion" in name:
                continue
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def unused_parameters(self) -> list[str]:
        """Parameters that never influence the output in this configuration (kept so official
        checkpoints load): the stage-4 gate unless the decoder reads E_i, and the stage-1 output
        norm when it reads V_2..V_4. Freezing them lets DDP run without find_unused_parameters."""
        names = []
        last = self.stages[-1]
        if self.cfg.decoder_features != "E" and last.gate is not None:
            names += [f"stages.{len(self.stages) - 1}.gate.{n}" for n, _ in last.gate.named_parameters()]
        if self.cfg.decoder_features == "V":
            names += [f"out_norms.0.{n}" for n, _ in self.out_norms[0].named_parameters()]
        return names

    def stream_for(self, is_image: bool) -> str:
        """Which Swin path(s) a unified model runs: both while training (paper; or the input's
        own path with ``unified_train_stream: single``), at inference one stream chosen by the
        input -- images the 2D path, clips the Video Swin path."""
        if not self.cfg.unified:
            return "3d"
        if self.training and self.cfg.unified_train_stream == "dual":
            return "dual"
        return "2d" if is_image else "3d"

    def forward(
        self, image: Tensor, words: Tensor, word_mask: Tensor, stream: str | None = None
    ) -> list[Tensor]:
        """image (B or 1, 3, H, W), or a video (B or 1, T, 3, H, W); words (B, L, C_l);
        word_mask (B, L).

        A batch of 1 image (clip) with B expressions runs the language-free part (patch
        embedding and the stage-1 Swin blocks) once and shares it across the expressions.
        """
        n_text = words.shape[0]
        if self.cfg.video:
            x = self.patch_embed(image.transpose(1, 2))  # (B, 3, T, H, W) -> (B, T, H', W', C)
        else:
            x = self.patch_embed(image)
        mode = self.cfg.decoder_features
        outputs = []
        stream = stream or "3d"
        for i, stage in enumerate(self.stages):
            v = stage.run_blocks(x, stream)
            if v.shape[0] != n_text:
                v = v.expand(n_text, *v.shape[1:])
            last = stage.downsample is None
            f, e = stage.fuse(v, words, word_mask, need_e=not last or mode == "E")
            if stage.word_update is not None and not last:  # bi-3D-PWAM: vision-aware words for the next stage
                words = stage.word_update(words, word_mask, v.reshape(v.shape[0], -1, v.shape[-1]))
            chosen = {"F": f, "E": e, "V": v}[mode]
            if not (mode == "V" and i == 0):  # V_1 is pure vision: the V variant skips it
                y = self.out_norms[i](chosen)
                if self.cfg.video:  # (B, T, H, W, C) -> (B*T, C, H, W), row b*T + t
                    y = y.flatten(0, 1)
                outputs.append(y.permute(0, 3, 1, 2))
            if not last:
                x = stage.downsample(e)
        return outputs
