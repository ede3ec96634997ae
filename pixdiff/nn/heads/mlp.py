"""Standard MLP head: the paper's spatially unaware baseline (Table 2, "Standard MLP").

The noisy patch is flattened and concatenated with its token s_i, and a plain MLP predicts the
flattened output patch. Every pixel is just one more input feature, so the head has no notion of
which pixels are neighbours: the missing spatial bias is the point of the ablation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from pixdiff.config.validate import check_fields, positive
from pixdiff.nn.heads import Reads, Scope


@dataclass(frozen=True)
class StandardMLP:
    """`hidden_layers` SiLU layers of width `hidden`.

    The defaults (2 x 1280) make the head 5,082,368 parameters at D=1152, C=3, P=16, so that
    DiP-XL/16 with this head totals 630.1M (paper: 630M).
    """

    hidden: int = 1280
    hidden_layers: int = 2
    scope: ClassVar[Scope] = "patch"
    reads: ClassVar[Reads] = "s"

    def __post_init__(self) -> None:
        check_fields(self)
        positive(self, "hidden", "hidden_layers")

    def build(self, dim: int, channels: int, patch_size: int) -> StandardMLPHead:
        return StandardMLPHead(dim, channels, patch_size, self.hidden, self.hidden_layers)


class StandardMLPHead(nn.Module):
    """Linear(C*P*P + D -> h), SiLU, [Linear(h -> h), SiLU] x (layers - 1), Linear(h -> C*P*P).

    No norms and default init, like the conv U-Net head it is compared with.
    """

    def __init__(self, dim: int, channels: int, patch_size: int, hidden: int, hidden_layers: int):
        super().__init__()
        pixels = channels * patch_size**2
        layers: list[nn.Module] = [nn.Linear(pixels + dim, hidden), nn.SiLU()]
        for _ in range(hidden_layers - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        layers.append(nn.Linear(hidden, pixels))
        self.mlp = nn.Sequential(*layers)

    def forward(self, patches: torch.Tensor, s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = torch.cat([patches.flatten(1), s.to(patches.dtype)], dim=1)  # (BN, C*P*P + D)
        out = self.mlp(x)  # (BN, C*P*P), channel-major like the flattened input
        return out.view_as(patches)  # (BN, C, P, P)
