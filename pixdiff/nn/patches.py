"""Conversions between images, token sequences and per-patch batches.

Layouts (channel-major inside a patch, as `F.unfold` / `F.fold` order it: C, then rows, then columns;
tokens in raster order over the patch grid):
    image    (B, C, H, W)
    tokens   (B, N, C*P*P)      N = (H/P) * (W/P)
    patches  (B*N, C, P, P)     what a local head sees
"""

from __future__ import annotations

import torch
from einops import rearrange


def check_divisible(height: int, width: int, patch_size: int) -> None:
    if patch_size < 1 or height % patch_size or width % patch_size:
        raise ValueError(
            f"image size {height}x{width} is not divisible by the patch size {patch_size}"
        )


def patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, C*P*P)."""
    check_divisible(x.shape[-2], x.shape[-1], patch_size)
    return rearrange(x, "b c (gh p) (gw q) -> b (gh gw) (c p q)", p=patch_size, q=patch_size)


def unpatchify(tokens: torch.Tensor, patch_size: int, height: int, width: int) -> torch.Tensor:
    """(B, N, C*P*P) -> (B, C, H, W)."""
    check_divisible(height, width, patch_size)
    return rearrange(
        tokens, "b (gh gw) (c p q) -> b c (gh p) (gw q)",
        gh=height // patch_size, p=patch_size, q=patch_size,
    )


def to_patches(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B*N, C, P, P)."""
    check_divisible(x.shape[-2], x.shape[-1], patch_size)
    return rearrange(x, "b c (gh p) (gw q) -> (b gh gw) c p q", p=patch_size, q=patch_size)


def from_patches(patches: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B*N, C, P, P) -> (B, C, H, W)."""
    patch_size = patches.shape[-1]
    check_divisible(height, width, patch_size)
    return rearrange(
        patches, "(b gh gw) c p q -> b c (gh p) (gw q)",
        gh=height // patch_size, gw=width // patch_size,
    )
