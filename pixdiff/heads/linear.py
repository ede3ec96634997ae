"""The DiT-only baseline's output layer, expressed as a head so every variant shares one model."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pixdiff.backbone import modulate
from pixdiff.validate import check_fields


@dataclass(frozen=True)
class LinearOut:
    def __post_init__(self) -> None:
        check_fields(self)

    def build(self, dim: int, channels: int, patch_size: int) -> LinearOutHead:
        return LinearOutHead(dim, channels, patch_size)


class LinearOutHead(nn.Module):
    """DiT's final layer: LayerNorm without affine, adaLN shift/scale from c, Linear(D -> C*P*P).

    It never looks at the noisy pixels: everything comes from the token, which is exactly the
    limitation DiP's head removes. Zero-initialised like DiT's, so training starts from output 0.
    """

    def __init__(self, dim: int, channels: int, patch_size: int):
        super().__init__()
        self.channels, self.patch_size = channels, patch_size
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.adaLN_modulation = nn.Sequential(nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, channels * patch_size**2)
        for layer in (self.adaLN_modulation[0], self.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, patches: torch.Tensor, s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)  # (BN, D) each
        h = modulate(self.norm(s)[:, None], shift, scale)[:, 0]  # (BN, D)
        out = self.linear(h)  # (BN, C*P*P), channel-major as unfold orders a patch
        return out.view(-1, self.channels, self.patch_size, self.patch_size)  # (BN, C, P, P)
