"""Intra-patch attention head (the paper's Table 2, "Intra-Patch Attention").

Each P x P patch becomes a sequence of P*P pixel tokens processed by a small transformer that is
conditioned on the patch's token s_i through adaLN-Zero. Pixels interact by content-aware
attention, which is what the ablation contrasts with convolutions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from pixdiff.config.validate import check_fields, positive, require
from pixdiff.nn.heads import Reads, Scope

# CUDA attention kernels put the batch on a grid axis capped at 65,535 blocks (pytorch#142228);
# BN = images x patches per image reaches that at batch 256 with 16x16 patches, so attention runs
# over slices of at most this many patches.
MAX_ATTENTION_BATCH = 32768

# Wavelength scale of the sinusoidal pixel positions: patches are at most a few dozen pixels wide,
# so the usual 10000 would spend most channels on frequencies that are constant across a patch.
POSITION_BASE = 100.0


@dataclass(frozen=True)
class IntraPatchAttention:
    """`depth` pre-norm blocks of width `width` over the P*P pixels of each patch.

    The defaults (width 64, 6 blocks, 4 heads of 16) make the head 3,102,915 parameters at D=1152,
    C=3 (any P: positions are sinusoidal), so DiP-XL/16 with it totals 628.1M (paper: 630M). Most
    parameters sit in the adaLN projections of s_i, which run once per patch; the per-pixel work
    stays small: about 65 GFLOP per 256x256 image at P=16 (the DiT backbone: ~221 GFLOP), of which
    attention over the 256 pixels is 40%; at P=32 each attention costs 4x more per pixel.
    """

    width: int = 64
    depth: int = 6
    num_heads: int = 4
    mlp_ratio: float = 4.0
    scope: ClassVar[Scope] = "patch"
    reads: ClassVar[Reads] = "s"

    def __post_init__(self) -> None:
        check_fields(self)
        positive(self, "width", "depth", "num_heads", "mlp_ratio")
        require(self, "width", self.width % self.num_heads == 0, f"must be divisible by num_heads={self.num_heads}")
        require(self, "width", self.width % 4 == 0, "must be a multiple of 4 for 2D sinusoidal positions")

    def build(self, dim: int, channels: int, patch_size: int) -> IntraPatchAttentionHead:
        return IntraPatchAttentionHead(
            dim, channels, self.width, self.depth, self.num_heads, int(self.mlp_ratio * self.width)
        )


def pixel_positions(patch_size: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """(P*P, width) sinusoidal 2D embedding of the pixel positions inside a patch, raster order.

    Channels: [sin(y w_k), cos(y w_k), sin(x w_k), cos(x w_k)] with w_k = POSITION_BASE^(-k/(width/4)),
    y the row and x the column index of the pixel.
    """
    quarter = width // 4
    omega = POSITION_BASE ** (-torch.arange(quarter, dtype=torch.float32, device=device) / quarter)  # (w/4,)
    idx = torch.arange(patch_size, dtype=torch.float32, device=device)  # (P,)
    y, x = torch.meshgrid(idx, idx, indexing="ij")  # (P, P) each
    ay = y.reshape(-1, 1) * omega  # (P*P, w/4)
    ax = x.reshape(-1, 1) * omega  # (P*P, w/4)
    return torch.cat([ay.sin(), ay.cos(), ax.sin(), ax.cos()], dim=1)  # (P*P, width)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(BN, heads, L, hd) x3 -> (BN, heads, L, hd), in batch slices of at most MAX_ATTENTION_BATCH."""
    if q.shape[0] <= MAX_ATTENTION_BATCH:
        return F.scaled_dot_product_attention(q, k, v)  # (BN, h, L, hd)
    slices = zip(q.split(MAX_ATTENTION_BATCH), k.split(MAX_ATTENTION_BATCH), v.split(MAX_ATTENTION_BATCH))
    return torch.cat([F.scaled_dot_product_attention(*qkv) for qkv in slices])  # (BN, h, L, hd)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (BN, L, w), shift/scale (BN, 1, w) -> (BN, L, w)."""
    return x * (1 + scale) + shift


class PixelBlock(nn.Module):
    """Pre-norm attention + MLP over pixel tokens; shift/scale/gate of both from s_i (adaLN-Zero)."""

    def __init__(self, dim: int, width: int, num_heads: int, mlp_hidden: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(width, mlp_hidden), nn.GELU(approximate="tanh"), nn.Linear(mlp_hidden, width)
        )
        self.modulation = nn.Linear(dim, 6 * width)
        # zero gates: every block starts as the identity, as in DiT's adaLN-Zero
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        BN, L, w = x.shape
        mods = self.modulation(s)[:, None].chunk(6, dim=-1)
        shift1, scale1, gate1, shift2, scale2, gate2 = mods  # (BN, 1, w) each
        h = modulate(self.norm1(x), shift1, scale1)  # (BN, L, w)
        qkv = self.qkv(h).view(BN, L, 3, self.num_heads, w // self.num_heads)  # (BN, L, 3, heads, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (BN, heads, L, hd) each
        a = attend(q, k, v).transpose(1, 2).reshape(BN, L, w)  # (BN, L, w)
        x = x + gate1 * self.proj(a)  # (BN, L, w)
        x = x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))  # (BN, L, w)
        return x


class IntraPatchAttentionHead(nn.Module):
    """Linear(C -> w) per pixel + sinusoidal position, pixel blocks, adaLN final norm, Linear(w -> C)."""

    def __init__(self, dim: int, channels: int, width: int, depth: int, num_heads: int, mlp_hidden: int):
        super().__init__()
        self.width = width
        self.embed = nn.Linear(channels, width)
        self.blocks = nn.ModuleList(PixelBlock(dim, width, num_heads, mlp_hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Linear(dim, 2 * width)
        self.out = nn.Linear(width, channels)
        nn.init.zeros_(self.final_modulation.weight)
        nn.init.zeros_(self.final_modulation.bias)

    def forward(self, patches: torch.Tensor, s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        BN, C, P, _ = patches.shape
        pixels = patches.flatten(2).transpose(1, 2)  # (BN, P*P, C), raster order
        pos = pixel_positions(P, self.width, patches.device)  # (P*P, w)
        x = self.embed(pixels)  # (BN, P*P, w)
        x = x + pos.to(x.dtype)  # (BN, P*P, w)
        for block in self.blocks:
            x = block(x, s)  # (BN, P*P, w)
        shift, scale = self.final_modulation(s)[:, None].chunk(2, dim=-1)  # (BN, 1, w) each
        out = self.out(modulate(self.norm(x), shift, scale))  # (BN, P*P, C)
        return out.transpose(1, 2).reshape(BN, C, P, P)  # (BN, C, P, P)
