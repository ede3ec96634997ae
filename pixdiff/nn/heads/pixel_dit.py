"""PixelDiT's pixel-level DiT (Yu et al., CVPR 2026, arXiv 2511.20645) as an image-scope head.

Every pixel is a token of width w (PixelDiT-XL: 16): Linear(C -> w) plus a fixed 2D sin-cos table
over the image's pixel coordinates. `depth` PiT blocks then refine the pixel tokens, conditioned
pixel by pixel on their patch's token s_i (s = silu(t_emb + tokens), the backbone's head features):

    shift, scale, gate (x2) = Linear(D -> 6 w P^2)(s_i), one set per pixel of the patch
    x = x + gate1 * expand(attn(compress(modulate(norm1(x)))))      attention, with "compaction"
    x = x + gate2 * mlp(modulate(norm2(x), shift2, scale2))         per-pixel GELU MLP (4w)

Compaction: attention over H*W pixel tokens would be quadratic in pixels, so each patch's P^2
pixel tokens are flattened (P^2 w values) and compressed by one Linear into a single token of width
A (default: the backbone width D); those (H/P)(W/P) tokens attend to each other across the whole
image (pixdiff's backbone attention: qk-RMSNorm and DiP's 2D RoPE over the patch grid), and one
Linear expands each back to its P^2 pixels. The head so mixes information across patch borders,
which is why its scope is "image". Then RMSNorm and Linear(w -> C) per pixel (zero-initialised, as
are the adaLN projections, so a fresh head outputs zero).

`post_modulation` is the official code's optional variant against loss spikes (its c2i README):
4 projections per pixel (scale, shift after attention and after the MLP, no gates):
    x = x + attn_out * (1 + scale1) + shift1,   x = x + mlp(norm2(x)) * (1 + scale2) + shift2.

Module names inside a block follow the official PiTBlock (NVlabs/PixelDiT `pixeldit_c2i.py`), so
`pixdiff.checkpoints.pixeldit` maps the official state dict by renaming prefixes only.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar

import torch
from einops import rearrange
from torch import nn

from pixdiff.config.validate import check_fields, positive, require
from pixdiff.nn.backbone import Attention, RMSNorm, rope_2d, sincos_2d
from pixdiff.nn.heads import Reads, Scope

# the official pixel-level RoPE: DiP's positions linspace(0, 16, grid) per axis, theta 10000
ROPE_EXTENT, ROPE_THETA = 16.0, 10000.0


@dataclass(frozen=True)
class PixelDiTHead:
    """PixelDiT-XL's pixel level: width 16, 4 PiT blocks, 16 heads over tokens of width D.

    At D = 1152 and P = 16 that is 172,361,859 parameters (two thirds of them in the per-pixel
    adaLN projections, Linear(1152 -> 6 * 16 * 256) per block); with DiP's 26-block DiT-XL the
    whole PixelDiT-XL is 797,383,203, the official count (`recipes/pixeldit.py`).
    """

    width: int = 16  # the pixel tokens' width (official: pixel_hidden_size)
    depth: int = 4  # PiT blocks (official: pixel_depth)
    num_heads: int = 16  # attention heads over the compacted patch tokens (official: num_groups)
    attn_dim: int = 0  # width of the compacted tokens; 0 = the backbone width D (the official choice)
    mlp_ratio: float = 4.0
    pixel_positions: bool = True  # the fixed 2D sin-cos table over pixel coordinates (use_pixel_abs_pos)
    post_modulation: bool = False  # the official pit_adaln_post_modulation variant (see the module docstring)
    scope: ClassVar[Scope] = "image"
    reads: ClassVar[Reads] = "s"

    def __post_init__(self) -> None:
        check_fields(self)
        positive(self, "width", "depth", "num_heads", "mlp_ratio")
        require(self, "width", self.width % 4 == 0, "must be a multiple of 4 for the 2D sin-cos pixel positions")
        require(self, "attn_dim", self.attn_dim >= 0, "must be >= 0 (0 = the backbone width)")
        if self.attn_dim:
            self._check_attention(self.attn_dim)

    def _check_attention(self, attn_dim: int) -> None:
        require(self, "num_heads", attn_dim % self.num_heads == 0,
                f"must divide the attention width {attn_dim}")
        require(self, "num_heads", (attn_dim // self.num_heads) % 4 == 0,
                f"head dim {attn_dim // self.num_heads} must be a multiple of 4 for 2D RoPE")

    def build(self, dim: int, channels: int, patch_size: int) -> PixelTransformer:
        attn_dim = self.attn_dim or dim
        self._check_attention(attn_dim)
        return PixelTransformer(self, dim, channels, patch_size, attn_dim)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Per-pixel adaLN: x, shift, scale (BL, P^2, w)."""
    return x * (1 + scale) + shift


class PiTBlock(nn.Module):
    """One pixel-level block: compacted attention across patches, per-pixel MLP, per-pixel adaLN from s_i."""

    def __init__(self, dim: int, width: int, pixels: int, attn_dim: int, num_heads: int, mlp_ratio: float,
                 post_modulation: bool):
        super().__init__()
        self.post_modulation = post_modulation
        self.norm1 = RMSNorm(width)
        self.compress_to_attn = nn.Linear(pixels * width, attn_dim)
        self.attn = Attention(attn_dim, num_heads, "sdpa")
        self.expand_from_attn = nn.Linear(attn_dim, pixels * width)
        self.norm2 = RMSNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(OrderedDict(fc1=nn.Linear(width, hidden), act=nn.GELU(),
                                             fc2=nn.Linear(hidden, width)))
        n_mod = 4 if post_modulation else 6
        # index 0 kept for the official key names; zero: every block starts as the identity
        self.adaLN_modulation = nn.Sequential(nn.Linear(dim, n_mod * width * pixels))
        nn.init.zeros_(self.adaLN_modulation[0].weight)
        nn.init.zeros_(self.adaLN_modulation[0].bias)

    def forward(self, x: torch.Tensor, s: torch.Tensor, images: int, cos: torch.Tensor,
                sin: torch.Tensor) -> torch.Tensor:
        """x (BL, P^2, w) pixel tokens, s (BL, D) their patches' features, cos/sin (L, hd/2) -> (BL, P^2, w)."""
        BL, P2, w = x.shape
        # the official layout: pixel j's parameters are columns j*n*w .. (j+1)*n*w - 1, n chunks of w
        mods = self.adaLN_modulation(s).view(BL, P2, -1).chunk(4 if self.post_modulation else 6, dim=-1)
        if self.post_modulation:
            scale1, shift1, scale2, shift2 = mods  # (BL, P^2, w) each
            h = self.norm1(x)
        else:
            shift1, scale1, gate1, shift2, scale2, gate2 = mods  # (BL, P^2, w) each
            h = modulate(self.norm1(x), shift1, scale1)  # (BL, P^2, w)
        tokens = self.compress_to_attn(h.reshape(BL, P2 * w)).view(images, BL // images, -1)  # (B, L, A)
        attended = self.attn(tokens, cos, sin).reshape(BL, -1)  # (BL, A)
        out = self.expand_from_attn(attended).view(BL, P2, w)  # (BL, P^2, w)
        if self.post_modulation:
            x = x + out * (1 + scale1) + shift1
            return x + self.mlp(self.norm2(x)) * (1 + scale2) + shift2
        x = x + gate1 * out
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))  # (BL, P^2, w)


class PixelTransformer(nn.Module):
    """The image-scope head module: forward(x (B, C, H, W), s (B, D, H/P, W/P), c (B, D)) -> (B, C, H, W)."""

    def __init__(self, config: PixelDiTHead, dim: int, channels: int, patch_size: int, attn_dim: int):
        super().__init__()
        self.config, self.patch_size, self.head_dim = config, patch_size, attn_dim // config.num_heads
        width, pixels = config.width, patch_size**2
        self.embed = nn.Linear(channels, width)
        self.blocks = nn.ModuleList(
            PiTBlock(dim, width, pixels, attn_dim, config.num_heads, config.mlp_ratio, config.post_modulation)
            for _ in range(config.depth)
        )
        self.norm = RMSNorm(width)
        self.out = nn.Linear(width, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        P = self.patch_size
        gh, gw = H // P, W // P
        width = self.config.width
        pixels = self.embed(x.permute(0, 2, 3, 1))  # (B, H, W, w)
        if self.config.pixel_positions:
            # in x's dtype as the official code adds it (fp32 under autocast: the sum is fp32 then)
            pos = sincos_2d(width, H, W, device=x.device).view(H, W, width)  # (H, W, w)
            pixels = pixels + pos.to(x.dtype)
        pixels = rearrange(pixels, "b (gh p) (gw q) w -> (b gh gw) (p q) w", p=P, q=P)  # (BL, P^2, w)
        cond = s.flatten(2).transpose(1, 2).reshape(B * gh * gw, -1)  # (BL, D), patches in raster order
        cos, sin = rope_2d(self.head_dim, gh, gw, extent=ROPE_EXTENT, theta=ROPE_THETA, device=x.device)
        for block in self.blocks:
            pixels = block(pixels, cond, B, cos, sin)  # (BL, P^2, w)
        out = self.out(self.norm(pixels))  # (BL, P^2, C)
        return rearrange(out, "(b gh gw) (p q) c -> b c (gh p) (gw q)", gh=gh, gw=gw, p=P)  # (B, C, H, W)
