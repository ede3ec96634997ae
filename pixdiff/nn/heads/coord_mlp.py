"""Coordinate-based MLP head: a PixNerd-style neural field per patch (the paper's Table 2).

Every pixel of a patch is described by its noisy RGB and fixed DCT-style features of its position;
a small MLP maps that to the output pixel, and the MLP's weights are *generated from s_i*, so each
patch gets its own continuous function of the in-patch coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from pixdiff.config.validate import check_fields, positive, require
from pixdiff.nn.backbone import RMSNorm
from pixdiff.nn.heads import Reads, Scope


@dataclass(frozen=True)
class CoordinateMLP:
    """`depth` blocks of width `hidden` with generated `hidden x mlp_hidden` weights.

    The defaults (64 wide, 128 inner, 4 blocks, 8x8 frequencies) are the paper's (docs/design.md,
    section 2) with integer coordinate frequencies; PixNerd's own code uses `top_freq=8.0`
    (recipes/pixnerd.py, docs/family.md). The weight generators dominate: 4 x Linear(1152 -> 2*64*128)
    makes the head 75,567,875 parameters at D=1152, C=3 (any P), so DiP-XL/16 with it totals 700.6M
    (paper: 700M).
    """

    hidden: int = 64
    mlp_hidden: int = 128
    depth: int = 4
    num_freqs: int = 8
    top_freq: float | None = None  # see `dct_features`; PixNerd's code: float(num_freqs)
    scope: ClassVar[Scope] = "patch"
    reads: ClassVar[Reads] = "s"

    def __post_init__(self) -> None:
        check_fields(self)
        positive(self, "hidden", "mlp_hidden", "depth", "num_freqs")
        require(self, "top_freq", self.top_freq is None or self.top_freq > 0, "must be > 0 (or None)")

    def build(self, dim: int, channels: int, patch_size: int) -> CoordinateMLPHead:
        return CoordinateMLPHead(dim, channels, self.hidden, self.mlp_hidden, self.depth, self.num_freqs,
                                 self.top_freq)


def dct_features(patch_size: int, num_freqs: int, device: torch.device | None = None,
                 top_freq: float | None = None) -> torch.Tensor:
    """(P*P, F*F) coordinate features of the pixels of a patch, raster order.

    Pixel (row r, column q) sits at y = linspace(0, 1, P)[r], x = linspace(0, 1, P)[q]; feature
    fy * F + fx (fx, fy the F frequencies) is cos(pi fx x) cos(pi fy y) / (1 + fx fy): a DCT basis
    whose high frequencies are damped so that the field starts smooth. The frequencies are the
    integers 0..F-1 by default, linspace(0, top_freq, F) with `top_freq`: PixNerd's and DeCo's code
    use linspace(0, F, F) (0, 8/7, ..., 8 for F = 8), and list the features fx-major (fx * F + fy),
    which `pixdiff.checkpoints.pixnerd` maps.
    """
    pos = torch.linspace(0, 1, patch_size, device=device)  # (P,)
    if top_freq is None:
        freqs = torch.arange(num_freqs, dtype=torch.float32, device=device)  # (F,)
    else:
        freqs = torch.linspace(0, top_freq, num_freqs, device=device)  # (F,)
    waves = torch.cos(math.pi * pos[:, None] * freqs)  # (P, F): waves[i, f] = cos(pi f pos_i)
    damping = 1 / (1 + freqs[:, None] * freqs)  # (F, F): [fy, fx]
    # [r, q, fy, fx] = cos(pi fy y_r) cos(pi fx x_q) / (1 + fx fy)
    feats = waves[:, None, :, None] * waves[None, :, None, :] * damping  # (P, P, F, F)
    return feats.reshape(patch_size**2, num_freqs**2)  # (P*P, F*F)


class GeneratedMLPBlock(nn.Module):
    """x + W2 silu(W1 rmsnorm(x)), with W1 (m x h) and W2 (h x m) generated from s_i.

    The generated matrices are L2-normalised along their input dimension (every output unit is a
    unit-norm combination of its inputs), which keeps the per-pixel activations at a stable scale
    whatever the magnitude of the generator's output.
    """

    def __init__(self, dim: int, hidden: int, mlp_hidden: int):
        super().__init__()
        self.hidden, self.mlp_hidden = hidden, mlp_hidden
        self.norm = RMSNorm(hidden)
        self.generator = nn.Linear(dim, 2 * hidden * mlp_hidden)

    def generate_weights(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """s (BN, D) -> W1 (BN, m, h), W2 (BN, h, m), laid out (out, in) like nn.Linear weights."""
        w1, w2 = self.generator(s).chunk(2, dim=-1)  # (BN, h*m) each
        w1 = F.normalize(w1.view(-1, self.mlp_hidden, self.hidden), dim=-1)  # (BN, m, h), unit rows
        w2 = F.normalize(w2.view(-1, self.hidden, self.mlp_hidden), dim=-1)  # (BN, h, m), unit rows
        return w1, w2

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        w1, w2 = self.generate_weights(s)  # (BN, m, h), (BN, h, m)
        h = torch.bmm(self.norm(x), w1.transpose(1, 2))  # (BN, P*P, m)
        h = torch.bmm(F.silu(h), w2.transpose(1, 2))  # (BN, P*P, h)
        return x + h  # (BN, P*P, h)


class CoordinateMLPHead(nn.Module):
    """Linear(C + F*F -> h) per pixel, generated-weight blocks, RMSNorm, zero-init Linear(h -> C)."""

    def __init__(self, dim: int, channels: int, hidden: int, mlp_hidden: int, depth: int, num_freqs: int,
                 top_freq: float | None = None):
        super().__init__()
        self.num_freqs, self.top_freq = num_freqs, top_freq
        self.embed = nn.Linear(channels + num_freqs**2, hidden)
        self.blocks = nn.ModuleList(GeneratedMLPBlock(dim, hidden, mlp_hidden) for _ in range(depth))
        self.norm = RMSNorm(hidden)
        self.out = nn.Linear(hidden, channels)
        # zero-init output: the head starts by predicting 0, as PixNerd's final layer does
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, patches: torch.Tensor, s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        BN, C, P, _ = patches.shape
        pixels = patches.flatten(2).transpose(1, 2)  # (BN, P*P, C), raster order
        coords = dct_features(P, self.num_freqs, patches.device, self.top_freq).to(pixels.dtype)  # (P*P, F*F)
        x = torch.cat([pixels, coords.expand(BN, -1, -1)], dim=-1)  # (BN, P*P, C + F*F)
        x = self.embed(x)  # (BN, P*P, h)
        for block in self.blocks:
            x = block(x, s)  # (BN, P*P, h)
        out = self.out(self.norm(x))  # (BN, P*P, C)
        return out.transpose(1, 2).reshape(BN, C, P, P)  # (BN, C, P, P)
