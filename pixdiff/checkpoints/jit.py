"""The official JiT checkpoint layout (LTH14/JiT) <-> pixdiff's JiT recipes, strictly, both ways.

main_jit.py saves {"model", "model_ema1", "model_ema2", "optimizer", "epoch", "args"}: three state
dicts of the Denoiser, which holds the network as `net.` (no other tensors: its RoPE tables are
plain attributes, not buffers), the EMA dicts being the model's state dict with every parameter
replaced by its EMA (decays 0.9999 and 0.9996; the first is what its sampler uses). "args" is an
argparse.Namespace, the only non-tensor type the reader allows (weights_only, nothing executed).

The tensors are the same maps under other names, except four conversions:
    x_embedder.proj1 / proj2        Conv(PxP) / Conv(1x1) weights -> Linear weights (flattened, C-major)
    blocks.i.mlp.w12                fused SwiGLU input: rows [w1; w3] (the first half is gated by SiLU)
    blocks.i.mlp.w3                 the SwiGLU output, pixdiff's w2
    final_layer.linear              output features ordered (row, col, channel) -> pixdiff's (channel, row, col)
and adaLN_modulation.1 (after an nn.SiLU) -> adaLN_modulation.0, since pixdiff's c is already SiLU'd.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from pixdiff.checkpoints.interop import InteropError, check_state
from pixdiff.checkpoints.keymap import Rule, convert, own_shapes, renamed
from pixdiff.checkpoints.store import ema_weights, read
from pixdiff.config.tree import to_dict
from pixdiff.nn.backbone import DiTConfig

if TYPE_CHECKING:
    from pixdiff.recipe import Recipe

NET = "net."
WEIGHTS = {"ema": "model_ema1", "ema2": "model_ema2", "raw": "model"}  # --weights -> official checkpoint key


def _block_rules(i: int) -> list[Rule]:
    ours, theirs = f"backbone.blocks.{i}.", f"blocks.{i}."
    rules = [Rule((ours + k,), (theirs + k,)) for k in
             ("norm1.weight", "norm2.weight", "attn.q_norm.weight", "attn.k_norm.weight")]
    rules += renamed(ours + "attn.qkv", theirs + "attn.qkv") + renamed(ours + "attn.proj", theirs + "attn.proj")
    rules += renamed(ours + "mlp.w2", theirs + "mlp.w3") + renamed(ours + "adaLN_modulation.0",
                                                                      theirs + "adaLN_modulation.1")
    for p in ("weight", "bias"):
        rules.append(Rule((f"{ours}mlp.w1.{p}", f"{ours}mlp.w3.{p}"), (f"{theirs}mlp.w12.{p}",),
                          to_ours=lambda w12: tuple(w12.chunk(2, dim=0)),
                          to_theirs=lambda w1, w3: (torch.cat([w1, w3], dim=0),)))
    return rules


def _output_rows(channels: int, patch: int) -> Tensor:
    """Official output feature index for each pixdiff one: pixdiff (c, p, q) <- official (p, q, c)."""
    return torch.arange(channels * patch * patch).view(patch, patch, channels).permute(2, 0, 1).reshape(-1)


def rules(cfg: DiTConfig) -> list[Rule]:
    """The whole mapping for a JiT backbone config with pixdiff's DiT final layer as head."""
    jit_like = (cfg.patch_bottleneck and cfg.pos_embed == "sincos" and cfg.in_context_len and cfg.rope == "jit"
                and cfg.qkv_bias and cfg.mlp_bias)
    if not jit_like:
        raise InteropError("the recipe's backbone is not JiT's (needs patch_bottleneck, pos_embed='sincos', "
                           "in_context_len, rope='jit', qkv_bias, mlp_bias): pick a recipes/jit.py recipe")
    rows = _output_rows(cfg.channels, cfg.patch_size)
    back = torch.argsort(rows)
    conv = Rule(("backbone.s_embedder.proj1.weight",), ("x_embedder.proj1.weight",),
                to_ours=lambda w: (w.flatten(1),),
                to_theirs=lambda w: (w.view(cfg.patch_bottleneck, cfg.channels, cfg.patch_size, cfg.patch_size),))
    conv1x1 = Rule(("backbone.s_embedder.proj2.weight",), ("x_embedder.proj2.weight",),
                   to_ours=lambda w: (w.flatten(1),), to_theirs=lambda w: (w[:, :, None, None],))
    out = [Rule((f"head.linear.{p}",), (f"final_layer.linear.{p}",),
                to_ours=lambda w: (w[rows],), to_theirs=lambda w: (w[back],)) for p in ("weight", "bias")]
    return [
        Rule(("backbone.pos_embed",), ("pos_embed",)),
        Rule(("backbone.in_context_posemb",), ("in_context_posemb",)),
        *renamed("backbone.t_embedder.mlp.0", "t_embedder.mlp.0"),
        *renamed("backbone.t_embedder.mlp.2", "t_embedder.mlp.2"),
        Rule(("backbone.y_embedder.embedding_table.weight",), ("y_embedder.embedding_table.weight",)),
        conv, conv1x1, *renamed("backbone.s_embedder.proj2", "x_embedder.proj2", ("bias",)),
        *(rule for i in range(cfg.depth) for rule in _block_rules(i)),
        Rule(("head.norm.weight",), ("final_layer.norm_final.weight",)),
        *renamed("head.adaLN_modulation.0", "final_layer.adaLN_modulation.1"),
        *out,
    ]


def from_official(state: Mapping[str, Tensor], cfg: DiTConfig) -> dict[str, Tensor]:
    """An official Denoiser state dict (keys `net.*`) -> pixdiff model keys."""
    stray = sorted(k for k in state if not k.startswith(NET))
    if stray:
        raise InteropError(f"official JiT state dicts hold only 'net.' tensors; found {stray[:8]}")
    return convert({k.removeprefix(NET): v for k, v in state.items()}, rules(cfg), forward=True,
                    what="official JiT checkpoint")


def to_official(state: Mapping[str, Tensor], cfg: DiTConfig) -> dict[str, Tensor]:
    """pixdiff model keys -> an official Denoiser state dict (keys `net.*`)."""
    out = convert(state, rules(cfg), forward=False, what="pixdiff model")
    return {NET + k: v.contiguous() for k, v in out.items()}


def read_official(path: Path) -> dict:
    """An official checkpoint file, read weights_only (`store.read`: its argparse.Namespace "args" is
    the one extra type allowed)."""
    ckpt = read(path)
    if not isinstance(ckpt, dict) or not all(k in ckpt for k in WEIGHTS.values()):
        keys = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise InteropError(f"{path} is not an official JiT checkpoint (needs {sorted(WEIGHTS.values())}; has {keys})")
    return ckpt


def pixdiff_checkpoint(official: Mapping[str, Mapping[str, Tensor]], recipe: Recipe) -> dict[str, Any]:
    """An official checkpoint as a pixdiff one: `model` the raw weights, `ema` model_ema1 (the
    recipe's first train.ema_decays entry) and, when the recipe keeps a second EMA, model_ema2 in
    `ema_extra`. Strict: every tensor used, none missing, shapes equal."""
    own, cfg = own_shapes(recipe), recipe.model.backbone

    def take(weights: str) -> dict[str, Tensor]:
        state = from_official(official[WEIGHTS[weights]], cfg)
        check_state(own, state, f"official JiT checkpoint ({WEIGHTS[weights]})")
        return state

    decays = recipe.train.ema_decays
    extra = {str(decays[1]): take("ema2")} if len(decays) > 1 else {}
    return {"recipe": to_dict(recipe), "model": take("raw"), "ema": take("ema"), "ema_extra": extra}


def official_checkpoint(ckpt: Mapping[str, Any], recipe: Recipe) -> dict[str, Any]:
    """A pixdiff checkpoint in the layout main_jit.py --resume reads (model and both EMAs; no
    optimizer, so it starts afresh). A run with one EMA fills both EMA slots with it."""
    own, cfg, decays = own_shapes(recipe), recipe.model.backbone, recipe.train.ema_decays
    emas = ema_weights(ckpt, decays)
    states = {"model": ckpt.get("model"), "model_ema1": emas[float(decays[0])],
              "model_ema2": emas[float(decays[1])] if len(decays) > 1 else emas[float(decays[0])]}
    for key, state in states.items():
        if not isinstance(state, Mapping):
            raise InteropError(f"the pixdiff checkpoint has no weights for {key}")
        check_state(own, state, f"pixdiff checkpoint ({key})")
    return {key: to_official(state, cfg) for key, state in states.items()}
