"""One denoiser for DiP and all its ablations: backbone + placement + local head.

    forward(x_t (B, C, H, W), t (B,), y (B,)) -> (B, C, H, W)

Placements (paper Fig. 5):
    "post"          the head refines the image after the last block (DiP's choice);
    "intermediate"  the head runs after block `inject_after`, its refined patches are projected
                    back into the token stream, and DiT's final layer produces the result;
    "hybrid"        both: a head at `inject_after` and another after the last block.

Every head gets what its config declares (`pixdiff.nn.heads`): its scope's pixels (patches or the
whole image), s = silu(t_emb + tokens) or the tokens themselves, and c (B, D) once per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from pixdiff.config.validate import check_fields, require
from pixdiff.nn.backbone import BackboneOutput, DiTConfig, FirstBlock, modulate
from pixdiff.nn.heads import HeadConfig
from pixdiff.nn.heads.final_layer import DiTFinalLayer
from pixdiff.nn.heads.unet import ConvUNet
from pixdiff.nn.patches import from_patches, patchify, to_patches

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

    @property
    def final(self) -> HeadConfig:
        """The head after the last block: DiT's final layer when the head is injected earlier."""
        return DiTFinalLayer() if self.placement == "intermediate" else self.head

    def build(self) -> DiP:
        return DiP(self)


def apply_head(head: nn.Module, config: HeadConfig, x: torch.Tensor, tokens: torch.Tensor, s: torch.Tensor,
               c: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Run a built head on its declared scope and features (see `pixdiff.nn.heads`).

    x (B, C, H, W) noisy image, tokens and s = silu(t_emb + tokens) (B, N, D), c (B, D) -> (B, C, H, W).
    """
    B, C, H, W = x.shape
    feats = tokens if config.reads == "tokens" else s  # (B, N, D)
    if config.scope == "image":
        grid = feats.transpose(1, 2).unflatten(2, (H // patch_size, W // patch_size))  # (B, D, H/P, W/P)
        return head(x, grid, c)  # (B, C, H, W)
    refined = head(to_patches(x, patch_size), feats.flatten(0, 1), c)  # (BN, C, P, P)
    return from_patches(refined, H, W)  # (B, C, H, W)


class Injection(nn.Module):
    """Intermediate placement: refine the image from block-k tokens, project it back as a residual."""

    def __init__(self, config: HeadConfig, channels: int, patch_size: int, dim: int):
        super().__init__()
        self.config, self.patch_size = config, patch_size
        self.head = config.build(dim, channels, patch_size)
        self.proj = nn.Linear(channels * patch_size**2, dim)
        # small, not zero: heads whose output starts at zero (coord-MLP, linear) would otherwise
        # leave both the head and this projection without a gradient forever
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)

    def forward(self, tokens: torch.Tensor, t_emb: torch.Tensor, c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        s = F.silu(t_emb[:, None] + tokens)  # (B, N, D)
        refined = apply_head(self.head, self.config, x, tokens, s, c, self.patch_size)  # (B, C, H, W)
        return tokens + self.proj(patchify(refined, self.patch_size))  # (B, N, D)


class DiP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        bb = config.backbone
        self.num_classes = bb.num_classes
        self.patch_size = bb.patch_size
        self.backbone = bb.build()
        self.head = config.final.build(bb.dim, bb.channels, bb.patch_size)
        self.injection = (
            Injection(config.head, bb.channels, bb.patch_size, bb.dim) if config.placement != "post" else None
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, *, r: torch.Tensor | None = None,
                return_blocks: Sequence[int] = (), first: FirstBlock | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """x (B, C, H, W) noisy image, t (B,) in [0, 1] (1 = data), y (B,) labels (num_classes = null),
        r (B,) MeanFlow's interval end, `first` the embeddings and block 0 from `first_block` (see `DiT.forward`).

        Returns the prediction (B, C, H, W); with `return_blocks`, also {block: tokens (B, N, D)}.
        """
        out = self.features(x, t, y, r=r, return_blocks=return_blocks, first=first)
        pred = self.decode(x, out)  # (B, C, H, W)
        return (pred, out.blocks) if return_blocks else pred

    # The split that backbone reuse (`pixdiff.diffusion.reuse`) calls: forward == decode(x, features(x, t, y)).
    def features(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, *, r: torch.Tensor | None = None,
                 return_blocks: Sequence[int] = (), first: FirstBlock | None = None) -> BackboneOutput:
        """The backbone (with any injected head) on x (B, C, H, W): what the final head consumes."""
        hooks = {}
        if self.injection is not None:
            hooks[self.config.inject_after] = partial(self.injection, x=x)
        return self.backbone(x, t, y, r=r, hooks=hooks, return_blocks=return_blocks, first=first)

    def decode(self, x: torch.Tensor, out: BackboneOutput) -> torch.Tensor:
        """The final head on the current pixels x (B, C, H, W) and backbone features -> (B, C, H, W)."""
        return apply_head(self.head, self.config.final, x, out.tokens, out.s, out.c, self.patch_size)

    @property
    def decode_reads_pixels(self) -> bool:
        """False when the final head is DiT's final layer (JiT, intermediate placement): it never
        looks at the pixels, so reusing its features would reuse the whole output."""
        return not isinstance(self.config.final, DiTFinalLayer)

    def probe(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """A cheap signal of how much the backbone's input changed (TeaCache's): the first block's
        adaLN-modulated, normalised patch tokens (B, N, D). Costs the patch embedding and one
        modulation, no attention."""
        inp = self.backbone.embed(x, t, y, None)
        block = self.backbone.blocks[0]
        shift, scale = block.adaLN_modulation(inp.c).chunk(6, dim=-1)[:2]  # (B, D) each
        return modulate(block.norm1(inp.tokens), shift, scale)  # (B, N, D)

    def first_block(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> tuple[FirstBlock, torch.Tensor]:
        """FirstBlockCache's split: (the embeddings and block 0, block 0's residual (B, n_ctx + N, D));
        `features(..., first=)` then runs blocks 1.. only."""
        first = self.backbone.first_block(x, t, y)
        return first, first.after - first.before
