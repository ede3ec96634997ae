"""DeCo's pixel decoder (Ma et al., arXiv 2511.19365): an attention-free per-pixel MLP conditioned by
AdaLN from the DiT token of its patch.

Every pixel of a patch starts from its noisy RGB and the neural-field coordinate features of its
position (`coord_mlp.dct_features`, PixNerd's embedding); the token s_i is projected once into one
condition vector per pixel, and each residual block modulates that pixel's features with a
shift/scale/gate from its own condition (DiT's adaLN, applied per pixel). No attention and no
convolution: the DiT carries the low frequencies, the decoder only renders the high ones.

    patches (B*N, C, P, P), s (B*N, D) -> (B*N, C, P, P)

Layer for layer DeCo's `SimpleMLPAdaLN` with its `NerfEmbedder` (Zehong-Ma/DeCo, dit_c2i_DeCo.py;
`pixdiff.checkpoints.deco` maps the names), including its init: xavier-uniform Linear weights and
zero biases in the decoder, zero adaLN and output layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from pixdiff.config.validate import check_fields, positive, require
from pixdiff.nn.heads import Reads, Scope
from pixdiff.nn.heads.coord_mlp import dct_features


@dataclass(frozen=True)
class AdaLNPixelDecoder:
    """`depth` residual blocks of width `hidden` per pixel. The defaults are DeCo-XL's
    (hidden_size_x 32, num_blocks - num_cond_blocks = 31 - 28 = 3; 8x8 coordinate frequencies
    linspace(0, 8, 8)): 9,464,739 parameters at D=1152, P=16, C=3, of which the condition
    projection Linear(D -> P*P*hidden) is 9,445,376."""

    hidden: int = 32
    depth: int = 3
    num_freqs: int = 8
    top_freq: float | None = 8.0  # see `coord_mlp.dct_features`
    scope: ClassVar[Scope] = "patch"
    reads: ClassVar[Reads] = "s"

    def __post_init__(self) -> None:
        check_fields(self)
        positive(self, "hidden", "depth", "num_freqs")
        require(self, "top_freq", self.top_freq is None or self.top_freq > 0, "must be > 0 (or None)")

    def build(self, dim: int, channels: int, patch_size: int) -> PixelDecoderHead:
        return PixelDecoderHead(dim, channels, patch_size, self.hidden, self.depth, self.num_freqs, self.top_freq)


class AdaLNResBlock(nn.Module):
    """x + gate * MLP(LayerNorm(x) * (1 + scale) + shift), (shift, scale, gate) = Linear(SiLU(y)) per pixel."""

    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, eps=1e-6)
        self.fc1 = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.adaLN = nn.Linear(hidden, 3 * hidden)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y (BN, P*P, h) -> (BN, P*P, h)."""
        shift, scale, gate = self.adaLN(F.silu(y)).chunk(3, dim=-1)  # (BN, P*P, h) each
        h = self.fc2(F.silu(self.fc1(self.norm(x) * (1 + scale) + shift)))  # (BN, P*P, h)
        return x + gate * h


class PixelDecoderHead(nn.Module):
    def __init__(self, dim: int, channels: int, patch_size: int, hidden: int, depth: int, num_freqs: int,
                 top_freq: float | None):
        super().__init__()
        self.hidden, self.num_freqs, self.top_freq = hidden, num_freqs, top_freq
        self.embed = nn.Linear(channels + num_freqs**2, hidden)  # DeCo keeps PyTorch's default init here
        self.cond = nn.Linear(dim, patch_size**2 * hidden)
        self.proj_in = nn.Linear(hidden, hidden)
        self.blocks = nn.ModuleList(AdaLNResBlock(hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.out = nn.Linear(hidden, channels)
        for module in [self.cond, self.proj_in, *self.blocks.modules(), self.out]:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        # adaLN-Zero and a zero output layer: the decoder starts as the identity on zero, as DeCo's
        for layer in [*(block.adaLN for block in self.blocks), self.out]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, patches: torch.Tensor, s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        BN, C, P, _ = patches.shape
        pixels = patches.flatten(2).transpose(1, 2)  # (BN, P*P, C), raster order
        coords = dct_features(P, self.num_freqs, patches.device, self.top_freq).to(pixels.dtype)  # (P*P, F*F)
        x = self.proj_in(self.embed(torch.cat([pixels, coords.expand(BN, -1, -1)], dim=-1)))  # (BN, P*P, h)
        y = self.cond(s).view(BN, P * P, self.hidden)  # (BN, P*P, h): one condition per pixel
        for block in self.blocks:
            x = block(x, y)  # (BN, P*P, h)
        out = self.out(self.norm(x))  # (BN, P*P, C)
        return out.transpose(1, 2).reshape(BN, C, P, P)  # (BN, C, P, P)
