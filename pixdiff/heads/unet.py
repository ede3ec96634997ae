"""The Patch Detailer Head: DiP's per-patch convolutional U-Net."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pixdiff.validate import check_fields, positive


@dataclass(frozen=True)
class ConvUNet:
    """`depth` down/up stages, encoder widths width * 2^i (the knobs of the paper's Fig. 10a)."""

    depth: int = 4
    width: int = 64

    def __post_init__(self) -> None:
        check_fields(self)
        positive(self, "depth", "width")

    def build(self, dim: int, channels: int, patch_size: int) -> ConvUNetHead:
        return ConvUNetHead(dim, channels, patch_size, self.depth, self.width)


def conv_silu(cin: int, cout: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2), nn.SiLU())


class ConvUNetHead(nn.Module):
    """Encoder conv3x3+SiLU then 2x max-pool per stage; s_i joins at the bottleneck; the decoder
    upsamples with ConvTranspose2d(k=2, s=2), concatenates the skip and applies conv3x3+SiLU.
    No norms, default init. Module names follow the authors' `local_decoder` keys."""

    def __init__(self, dim: int, channels: int, patch_size: int, depth: int, width: int):
        super().__init__()
        if depth < 1 or patch_size % 2**depth:
            raise ValueError(f"patch size {patch_size} cannot be halved {depth} times")
        self.depth = depth
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

    def forward(self, patches: torch.Tensor, s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = patches  # (BN, C, P, P)
        skips = []
        for i in range(1, self.depth + 1):
            h = getattr(self, f"enc{i}")(h)  # (BN, w_i, P/2^(i-1), same)
            skips.append(h)
            h = F.max_pool2d(h, 2)  # (BN, w_i, P/2^i, same)
        s_map = s[:, :, None, None].expand(-1, -1, *h.shape[-2:])  # (BN, D, b, b); b = P/2^depth
        h = self.bottleneck(torch.cat([h, s_map.to(h.dtype)], dim=1))  # (BN, w_depth, b, b)
        for i in range(self.depth, 0, -1):
            h = getattr(self, f"up{i}")(h)  # (BN, ch, 2x, 2x)
            h = getattr(self, f"dec{i}")(torch.cat([h, skips[i - 1]], dim=1))  # (BN, w_{i-1}, 2x, 2x)
        return self.out_conv(h)  # (BN, C, P, P)
