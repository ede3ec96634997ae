"""Local heads: networks that refine each P x P patch independently, given its token.

Every head follows one interface. A head *config* is a frozen dataclass (what recipes hold) with
`build(dim, channels, patch_size) -> nn.Module`; the built module maps

    forward(patches (B*N, C, P, P), s (B*N, D), c (B*N, D)) -> (B*N, C, P, P)

where `patches` are the noisy input pixels of each patch, `s` is the patch's token feature from the
backbone (s = silu(t_emb + token)), and `c` is the sample's conditioning vector
(silu(t_emb + y_emb)) repeated per patch. Heads ignore what they do not need.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class HeadConfig(Protocol):
    def build(self, dim: int, channels: int, patch_size: int) -> nn.Module: ...


class Head(Protocol):
    def __call__(self, patches: torch.Tensor, s: torch.Tensor, c: torch.Tensor) -> torch.Tensor: ...
