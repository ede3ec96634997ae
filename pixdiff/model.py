"""One denoiser for DiP and all its ablations: backbone + placement + local head.

    forward(x_t (B, C, H, W), t (B,), y (B,)) -> (B, C, H, W)

Placements (paper Fig. 5):
    "post"          the head refines every patch after the last block (DiP's choice);
    "intermediate"  the head runs after block `inject_after`, its refined patches are projected
                    back into the token stream, and a DiT output layer produces the result;
    "hybrid"        both: a head at `inject_after` and another after the last block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from pixdiff.backbone import DiTConfig
from pixdiff.heads import HeadConfig
from pixdiff.heads.linear import LinearOut
from pixdiff.heads.unet import ConvUNet
from pixdiff.patches import from_patches, to_patches
from pixdiff.validate import check_fields, require

Placement = Literal["post", "intermediate", "hybrid"]


@dataclass(frozen=True)
class ModelConfig:
    backbone: DiTConfig = field(default_factory=DiTConfig)
    head: HeadConfig = field(default_factory=ConvUNet)
    placement: Placement = "post"
    inject_after: int = 12  # block index (0-based) after which intermediate/hybrid heads run

    def __post_init__(self) -> None:
        check_fields(self)
        require(self, "inject_after", self.placement == "post" or 0 <= self.inject_after < self.backbone.depth - 1,
                f"must name a block before the last (0..{self.backbone.depth - 2})")
        if isinstance(self.head, ConvUNet):  # halves each patch `depth` times
            p = self.backbone.patch_size
            require(self, "head.depth", p % 2**self.head.depth == 0, f"patch size {p} cannot be halved that many times")

    def build(self) -> DiP:
        return DiP(self)


class Injection(nn.Module):
    """Intermediate placement: refine patches from block-k tokens, project them back as a residual."""

    def __init__(self, head: nn.Module, channels: int, patch_size: int, dim: int):
        super().__init__()
        self.head = head
        self.proj = nn.Linear(channels * patch_size**2, dim)
        # small, not zero: heads whose output starts at zero (coord-MLP, linear) would otherwise
        # leave both the head and this projection without a gradient forever
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)

    def forward(self, tokens: torch.Tensor, t_emb: torch.Tensor, c: torch.Tensor,
                patches: torch.Tensor) -> torch.Tensor:
        B, N, D = tokens.shape
        s = F.silu(t_emb[:, None] + tokens).flatten(0, 1)  # (BN, D)
        refined = self.head(patches, s, c.repeat_interleave(N, 0))  # (BN, C, P, P)
        return tokens + self.proj(refined.reshape(B, N, -1))  # (B, N, D)


class DiP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        bb = config.backbone
        self.num_classes = bb.num_classes
        self.patch_size = bb.patch_size
        self.backbone = bb.build()
        final = LinearOut() if config.placement == "intermediate" else config.head
        self.head = final.build(bb.dim, bb.channels, bb.patch_size)
        self.injection = (
            Injection(config.head.build(bb.dim, bb.channels, bb.patch_size), bb.channels, bb.patch_size, bb.dim)
            if config.placement != "post" else None
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, *,
                return_blocks: Sequence[int] = ()) -> torch.Tensor | tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """x (B, C, H, W) noisy image, t (B,) in [0, 1] (1 = data), y (B,) labels (num_classes = null).

        Returns the prediction (B, C, H, W); with `return_blocks`, also {block: tokens (B, N, D)}.
        """
        B, C, H, W = x.shape
        patches = to_patches(x, self.patch_size)  # (BN, C, P, P)
        N = patches.shape[0] // B
        hooks = {}
        if self.injection is not None:
            hooks[self.config.inject_after] = partial(self.injection, patches=patches)
        out = self.backbone(x, t, y, hooks=hooks, return_blocks=return_blocks)
        s = out.s.flatten(0, 1)  # (BN, D)
        c = out.c.repeat_interleave(N, 0)  # (BN, D)
        refined = self.head(patches, s, c)  # (BN, C, P, P)
        pred = from_patches(refined, H, W)  # (B, C, H, W)
        return (pred, out.blocks) if return_blocks else pred
