"""Example head plugin: a FiLM-modulated depthwise-separable conv stack.

A different answer to "how does s_i reach the pixels" than DiP's U-Net (which concatenates s_i at
a 1x1 bottleneck): here the patch stays at full resolution and s_i sets a per-channel scale and
shift (FiLM) in every block. Each block is ConvNeXt-like:

    x + pw2(silu(pw1(film(norm(dwconv(x)), s_i))))

with a depthwise k x k conv for spatial mixing and 1x1 convs for channel mixing. The norm is a
per-patch GroupNorm(1) without affine (FiLM supplies the affine), so patches stay independent.

Discovered by `pixdiff.config.plugins` through the module-level `HEADS` and `RECIPES` tables at the
bottom: `pixdiff train plugin:film_conv_tiny` trains it on the built-in emoji at 32 px in under a
minute on a laptop CPU; `pixdiff train plugin:dip_xl16_film` trains DiP-XL/16 with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from pixdiff.config import check_fields, positive, replace, require
from pixdiff.nn import Reads, Scope
from pixdiff.recipe import Recipe, load_recipe


@dataclass(frozen=True)
class FiLMConvHead:
    """`depth` FiLM blocks of `width` channels, depthwise kernel `kernel_size`, 1x1 expansion `expansion`."""

    width: int = 64
    depth: int = 4
    kernel_size: int = 5
    expansion: int = 2
    scope: ClassVar[Scope] = "patch"
    reads: ClassVar[Reads] = "s"

    def __post_init__(self) -> None:
        check_fields(self)
        positive(self, "width", "depth", "kernel_size", "expansion")
        require(self, "kernel_size", self.kernel_size % 2 == 1, "must be odd to keep the patch size")

    def build(self, dim: int, channels: int, patch_size: int) -> FiLMConvNet:
        return FiLMConvNet(dim, channels, self.width, self.depth, self.kernel_size, self.expansion)


class FiLMBlock(nn.Module):
    def __init__(self, dim: int, width: int, kernel_size: int, expansion: int):
        super().__init__()
        self.dwconv = nn.Conv2d(width, width, kernel_size, padding=kernel_size // 2, groups=width)
        self.film = nn.Linear(dim, 2 * width)
        self.pw1 = nn.Conv2d(width, expansion * width, 1)
        self.pw2 = nn.Conv2d(expansion * width, width, 1)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(s)[:, :, None, None].chunk(2, dim=1)  # (BN, w, 1, 1) each
        h = F.group_norm(self.dwconv(x), 1)  # (BN, w, P, P), normalised over this patch only
        h = h * (1 + scale) + shift  # (BN, w, P, P)
        h = self.pw2(F.silu(self.pw1(h)))  # (BN, w, P, P)
        return x + h  # (BN, w, P, P)


class FiLMConvNet(nn.Module):
    """conv3x3(C -> w), FiLM blocks, conv1x1(w -> C)."""

    def __init__(self, dim: int, channels: int, width: int, depth: int, kernel_size: int, expansion: int):
        super().__init__()
        self.stem = nn.Conv2d(channels, width, 3, padding=1)
        self.blocks = nn.ModuleList(FiLMBlock(dim, width, kernel_size, expansion) for _ in range(depth))
        self.out = nn.Conv2d(width, channels, 1)

    def forward(self, patches: torch.Tensor, s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = self.stem(patches)  # (BN, w, P, P)
        for block in self.blocks:
            x = block(x, s)  # (BN, w, P, P)
        return self.out(x)  # (BN, C, P, P)


def dip_xl16_film() -> Recipe:
    """The built-in DiP-XL/16 recipe with this head in place of the conv U-Net."""
    return replace(load_recipe("dip_xl16"), name="dip_xl16_film", **{"model.head": FiLMConvHead()})


def film_conv_tiny() -> Recipe:
    """The CPU demo recipe with this head as a per-patch head (8 px patches): 200 steps."""
    return replace(load_recipe("emoji_tiny"), name="film_conv_tiny", **{
        "model.head": FiLMConvHead(width=16, depth=2, kernel_size=3), "train.max_steps": 200,
        "train.ckpt_every": 100, "train.sample_every": 200, "train.warmup_steps": 20})


HEADS = {"film_conv": FiLMConvHead}
RECIPES = {"dip_xl16_film": dip_xl16_film, "film_conv_tiny": film_conv_tiny}
