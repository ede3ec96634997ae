"""Heads: what turns the backbone's tokens into the denoiser's output pixels.

A head *config* is a frozen dataclass (what recipes hold) with two declarations and a builder:

    scope   "patch"  the module refines every P x P patch on its own (DiP's Patch Detailer Head);
            "image"  the module sees the whole image, so it can work across patch borders;
    reads   "s"      the token features s = silu(t_emb + tokens) (what DiP's head reads);
            "tokens" the last block's tokens themselves (what a DiT final layer reads);
    build(dim, channels, patch_size) -> nn.Module

`scope` and `reads` are class attributes, or fields where a head offers both (the conv U-Net's
`scope`). The built module's forward, by scope (D = dim, P = patch_size, N = (H/P)*(W/P) tokens in
raster order, patches image-major as `pixdiff.nn.patches.to_patches` orders them):

    "patch":  forward(patches (B*N, C, P, P), s (B*N, D), c (B, D)) -> (B*N, C, P, P)
    "image":  forward(x (B, C, H, W), s (B, D, H/P, W/P), c (B, D)) -> (B, C, H, W)

`patches`/`x` are the noisy input pixels, `s` the features named by `reads` (per patch, or as a
map on the token grid), `c` = silu(t_emb + y_emb) the conditioning vector, one row per image:
patch i belongs to image i // N. Heads ignore what they do not need. `pixdiff.testing.check_head`
checks both kinds (a patch head must keep patches independent; an image head images).
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

from torch import nn

Scope = Literal["patch", "image"]
Reads = Literal["s", "tokens"]


@runtime_checkable
class HeadConfig(Protocol):
    scope: Scope
    reads: Reads

    def build(self, dim: int, channels: int, patch_size: int) -> nn.Module: ...
