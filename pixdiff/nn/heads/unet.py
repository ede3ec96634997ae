"""The Patch Detailer Head: DiP's convolutional U-Net, per patch (the paper's) or over the whole image.

One set of weights, two scopes (same state-dict keys and shapes, so a checkpoint trained in one
loads strictly in the other):

    "patch"  the paper's head and the authors' `LocalDecoder`: every P x P patch is refined alone,
             zero-padded at its own border; s_i is tiled over the patch's b x b bottleneck
             (b = P / 2^depth). The paper names the weakness: "risks for cross-patch boundary
             consistency".
    "image"  the same convolutions over the whole (B, C, H, W) image, zero-padded only at the image
             border, so the 3x3 convolutions see across patch borders. Pooling windows never straddle
             a border (P is divisible by 2^depth), and s_i fills its patch's b x b cell of the
             bottleneck grid, which is the token grid when depth = log2(P).

`s_injection` says where s_i enters:

    "bottleneck"   concatenated at the 1x1 bottleneck only (the paper's head, the default);
    "every_stage"  also FiLM (h * (1 + scale) + shift, per channel, from s_i) after every encoder
                   and decoder convolution. With s_i at the bottleneck alone, a small U-Net head was
                   measured to ignore it and render each patch from its noisy pixels. The FiLM
                   layers are zero-initialised, so the head starts as the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from pixdiff.config.validate import check_fields, positive
from pixdiff.nn.heads import Reads, Scope

SInjection = Literal["bottleneck", "every_stage"]


@dataclass(frozen=True)
class ConvUNet:
    """`depth` down/up stages, encoder widths width * 2^i (the knobs of the paper's Fig. 10a)."""

    depth: int = 4
    width: int = 64
    scope: Scope = "patch"
    s_injection: SInjection = "bottleneck"
    reads: ClassVar[Reads] = "s"

    def __post_init__(self) -> None:
        check_fields(self)
        positive(self, "depth", "width")

    def build(self, dim: int, channels: int, patch_size: int) -> ConvUNetHead:
        return ConvUNetHead(dim, channels, patch_size, self.depth, self.width, self.scope,
                            self.s_injection == "every_stage")


def conv_silu(cin: int, cout: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2), nn.SiLU())


def cells(grid: torch.Tensor, r: int) -> torch.Tensor:
    """(B, K, gh, gw) -> (B, K, gh*r, gw*r): every value fills its r x r cell (a view when gh = gw = 1)."""
    B, K, gh, gw = grid.shape
    if gh == gw == 1:
        return grid.expand(B, K, r, r)
    return grid[:, :, :, None, :, None].expand(B, K, gh, r, gw, r).reshape(B, K, gh * r, gw * r)


def zero_linear(cin: int, cout: int) -> nn.Linear:
    layer = nn.Linear(cin, cout)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class ConvUNetHead(nn.Module):
    """Encoder conv3x3+SiLU then 2x max-pool per stage; s_i joins at the bottleneck; the decoder
    upsamples with ConvTranspose2d(k=2, s=2), concatenates the skip and applies conv3x3+SiLU.
    No norms, default init. Module names follow the authors' `local_decoder` keys; the optional
    FiLM layers are `film_enc{i}` / `film_dec{i}`."""

    def __init__(self, dim: int, channels: int, patch_size: int, depth: int, width: int, scope: Scope,
                 film: bool):
        super().__init__()
        if patch_size % 2**depth:
            raise ValueError(f"patch size {patch_size} cannot be halved {depth} times")
        self.depth, self.scope, self.film = depth, scope, film
        widths = [width * 2**i for i in range(depth)]  # encoder output channels, stage 1..depth
        cin = channels
        for i, w in enumerate(widths, start=1):
            self.add_module(f"enc{i}", conv_silu(cin, w, 3))
            cin = w
        self.bottleneck = conv_silu(widths[-1] + dim, widths[-1], 1)
        for i in range(depth, 0, -1):
            self.add_module(f"up{i}", nn.ConvTranspose2d(cin, cin, kernel_size=2, stride=2))
            cout = widths[i - 2] if i > 1 else width
            self.add_module(f"dec{i}", conv_silu(cin + widths[i - 1], cout, 3))
            cin = cout
        self.out_conv = nn.Conv2d(width, channels, 1)
        if film:
            for i, w in enumerate(widths, start=1):
                self.add_module(f"film_enc{i}", zero_linear(dim, 2 * w))
                self.add_module(f"film_dec{i}", zero_linear(dim, 2 * (widths[i - 2] if i > 1 else width)))

    def forward(self, x: torch.Tensor, s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """scope "patch": x (BN, C, P, P), s (BN, D); scope "image": x (B, C, H, W), s (B, D, H/P, W/P).
        c is unused. Returns the shape of x."""
        s_grid = s[:, :, None, None] if self.scope == "patch" else s  # (B', D, gh, gw): one cell per patch
        h = x  # (B', C, gh*P, gw*P)
        skips = []
        for i in range(1, self.depth + 1):
            h = self.modulate(getattr(self, f"enc{i}")(h), s_grid, "enc", i)  # (B', w_i, gh*P/2^(i-1), ...)
            skips.append(h)
            h = F.max_pool2d(h, 2)  # (B', w_i, gh*P/2^i, ...)
        s_map = cells(s_grid, h.shape[-1] // s_grid.shape[-1])  # (B', D, gh*b, gw*b); b = P/2^depth
        h = self.bottleneck(torch.cat([h, s_map.to(h.dtype)], dim=1))  # (B', w_depth, gh*b, gw*b)
        for i in range(self.depth, 0, -1):
            h = getattr(self, f"up{i}")(h)  # (B', ch, 2x, 2x)
            h = getattr(self, f"dec{i}")(torch.cat([h, skips[i - 1]], dim=1))  # (B', w_{i-1}, 2x, 2x)
            h = self.modulate(h, s_grid, "dec", i)
        return self.out_conv(h)  # (B', C, gh*P, gw*P)

    def modulate(self, h: torch.Tensor, s_grid: torch.Tensor, path: str, stage: int) -> torch.Tensor:
        """FiLM of h (B', w, gh*r, gw*r) from each patch's s_i over its r x r cell (every_stage only)."""
        if not self.film:
            return h
        film = getattr(self, f"film_{path}{stage}")(s_grid.movedim(1, -1)).movedim(-1, 1)  # (B', 2w, gh, gw)
        scale, shift = cells(film.to(h.dtype), h.shape[-1] // s_grid.shape[-1]).chunk(2, dim=1)  # (B', w, ...) each
        return h * (1 + scale) + shift  # (B', w, gh*r, gw*r)
