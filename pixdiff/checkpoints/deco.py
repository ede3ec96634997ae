"""The official DeCo layout (Zehong-Ma/DeCo, `dit_c2i_DeCo.PixNerDiT`) <-> pixdiff's DeCo recipes, strictly.

Same Lightning checkpoints and DiT backbone as PixNerd (`pixdiff.checkpoints.pixnerd`, which does
the reading and writing); the pixel decoder maps as

    x_embedder.embedder.0                  head.embed (coordinate columns reordered, as PixNerd's)
    dec_net.cond_embed / .input_proj       head.cond / head.proj_in
    dec_net.res_blocks.j.in_ln             head.blocks.j.norm
    dec_net.res_blocks.j.mlp.0 / .mlp.2    head.blocks.j.fc1 / .fc2
    dec_net.res_blocks.j.adaLN_modulation.1   head.blocks.j.adaLN (behind an nn.SiLU there, in forward here)
    dec_net.final_layer.linear             head.out
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from torch import Tensor

from pixdiff.checkpoints import pixnerd
from pixdiff.checkpoints.interop import InteropError
from pixdiff.checkpoints.keymap import Rule, renamed
from pixdiff.checkpoints.pixnerd import (
    MAX_FREQS,
    backbone_rules,
    coordinate_embed_rules,
    read_official,
    require_plain_dit,
)
from pixdiff.nn.heads.pixel_decoder import AdaLNPixelDecoder
from pixdiff.nn.model import ModelConfig

if TYPE_CHECKING:
    from pixdiff.recipe import Recipe

__all__ = ["official_checkpoint", "pixdiff_checkpoint", "read_official", "rules"]


def rules(model: ModelConfig) -> list[Rule]:
    """The whole mapping for a DeCo recipe: DiP's backbone, post-hoc AdaLNPixelDecoder with PixNerd's frequencies."""
    head, cfg = model.head, model.backbone
    if not (isinstance(head, AdaLNPixelDecoder) and head.num_freqs == MAX_FREQS and head.top_freq == MAX_FREQS
            and model.placement == "post"):
        raise InteropError("the recipe's head is not DeCo's (a post-hoc AdaLNPixelDecoder with num_freqs=8, "
                           "top_freq=8.0): pick a recipes/deco.py recipe")
    require_plain_dit(cfg, "DeCo")
    decoder = []
    for j in range(head.depth):
        ours, theirs = f"head.blocks.{j}.", f"dec_net.res_blocks.{j}."
        for mine, official in (("norm", "in_ln"), ("fc1", "mlp.0"), ("fc2", "mlp.2"), ("adaLN", "adaLN_modulation.1")):
            decoder += renamed(ours + mine, theirs + official)
    return [*backbone_rules(cfg), *coordinate_embed_rules("head.embed", "x_embedder.embedder.0", cfg.channels,
                                                         head.num_freqs),
            *renamed("head.cond", "dec_net.cond_embed"), *renamed("head.proj_in", "dec_net.input_proj"),
            *decoder, *renamed("head.out", "dec_net.final_layer.linear")]


def pixdiff_checkpoint(official: Mapping[str, Tensor], recipe: Recipe) -> dict[str, Any]:
    """An official DeCo Lightning state_dict as a pixdiff checkpoint (see `pixnerd.pixdiff_checkpoint`)."""
    return pixnerd.pixdiff_checkpoint(official, recipe, rules, "DeCo")


def official_checkpoint(ckpt: Mapping[str, Any], recipe: Recipe) -> dict[str, Any]:
    """A pixdiff checkpoint in DeCo's Lightning layout (see `pixnerd.official_checkpoint`)."""
    return pixnerd.official_checkpoint(ckpt, recipe, rules)
