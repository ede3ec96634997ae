"""The official PixNerd layout (MCG-NJU/PixNerd, `pixnerd_c2i.PixNerDiT`) <-> pixdiff's PixNerd recipes,
strictly, both ways; the Lightning checkpoint plumbing that DeCo's layout (`pixdiff.checkpoints.deco`) shares.

The authors' Lightning checkpoints keep the denoiser under `state_dict` with the prefixes `denoiser.`
(raw) and `ema_denoiser.` (EMA), as DiP's reference code does (`pixdiff.checkpoints.interop.lightning_states`
reads both); other entries (the REPA projector under `diffusion_trainer.`, optimizer states) are not
the model's and are left alone. Inside the denoiser:

    s_embedder, t_embedder, y_embedder, blocks.0 .. K-1   DiP's backbone, same names under `backbone.`
    blocks.K + j (NerfBlock)           head.blocks.j: param_generator1.0 -> generator (rows reordered), norm
    x_embedder.embedder.0              head.embed (coordinate columns reordered)
    final_layer.norm / .linear         head.norm / head.out

with K = num_cond_blocks. Two reorderings, both pure permutations:
- PixNerd lists the coordinate features fx-major (fx * 8 + fy), pixdiff fy-major (`coord_mlp.dct_features`);
- PixNerd views the generated fc1 as (in 64, out 128) and fc2 as (in 128, out 64) and normalises
  along `in` (dim -2), pixdiff lays them out (out, in) like nn.Linear weights and normalises along
  `in` (dim -1): the same unit-norm columns, the generator's rows in another order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from pixdiff.checkpoints.interop import LIGHTNING_PREFIXES, InteropError, check_state, lightning_states
from pixdiff.checkpoints.keymap import Rule, convert, own_shapes, renamed
from pixdiff.checkpoints.store import ema_weights, read
from pixdiff.config.tree import to_dict
from pixdiff.nn.backbone import DiTConfig
from pixdiff.nn.heads.coord_mlp import CoordinateMLP
from pixdiff.nn.model import ModelConfig

if TYPE_CHECKING:
    from pixdiff.recipe import Recipe

MAX_FREQS = 8  # NerfEmbedder(max_freqs=8) in both official models: frequencies linspace(0, 8, 8)
RulesFn = Callable[[ModelConfig], list[Rule]]


def require_plain_dit(cfg: DiTConfig, family: str) -> None:
    """PixNerd's and DeCo's FlattenDiTBlock stack is DiP's backbone with its defaults (no JiT options)."""
    plain = (cfg.rope == "dip" and cfg.patch_bottleneck == 0 and cfg.pos_embed == "none" and not cfg.in_context_len
             and not cfg.qkv_bias and not cfg.mlp_bias and cfg.mlp_ratio == 4.0 and cfg.max_period == 10.0
             and cfg.rope_extent == 16.0 and cfg.rope_theta == 10000.0 and cfg.freq_dim == 256)
    if not plain:
        raise InteropError(f"the recipe's backbone is not {family}'s (DiP's DiT with its defaults): "
                           f"pick a recipes/{family.lower()}.py recipe")


def backbone_rules(cfg: DiTConfig) -> list[Rule]:
    """The DiT part, the same tensors under `backbone.`: K = cfg.depth blocks."""
    names = ["s_embedder.proj.weight", "s_embedder.proj.bias", "y_embedder.embedding_table.weight",
             *(f"t_embedder.mlp.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")),
             *(f"blocks.{i}.{k}" for i in range(cfg.depth) for k in (
                 "norm1.weight", "norm2.weight", "attn.qkv.weight", "attn.q_norm.weight", "attn.k_norm.weight",
                 "attn.proj.weight", "attn.proj.bias", "mlp.w1.weight", "mlp.w2.weight", "mlp.w3.weight",
                 "adaLN_modulation.0.weight", "adaLN_modulation.0.bias"))]
    return [Rule((f"backbone.{k}",), (k,)) for k in names]


def coordinate_embed_rules(ours: str, theirs: str, channels: int, num_freqs: int) -> list[Rule]:
    """Linear(C + F*F -> h) on [pixels, coordinates]: PixNerd's columns fx-major, pixdiff's fy-major."""
    coords = torch.arange(num_freqs**2).view(num_freqs, num_freqs).T.reshape(-1)  # pixdiff [fy, fx] <- fx * F + fy
    cols = torch.cat([torch.arange(channels), channels + coords])
    back = torch.argsort(cols)
    weight = Rule((f"{ours}.weight",), (f"{theirs}.weight",), to_ours=lambda w: (w[:, cols],),
                  to_theirs=lambda w: (w[:, back],))
    return [weight, *renamed(ours, theirs, ("bias",))]


def generator_rows(hidden: int, mlp_hidden: int) -> Tensor:
    """Official generator row for each pixdiff one: pixdiff's w1 (m, h) and w2 (h, m) <- PixNerd's
    fc1 (h, m) and fc2 (m, h), both chunks of one Linear(D -> 2 h m)."""
    n = hidden * mlp_hidden
    w1 = torch.arange(n).view(hidden, mlp_hidden).T.reshape(-1)  # pixdiff [j, i] <- official i * m + j
    w2 = n + torch.arange(n).view(mlp_hidden, hidden).T.reshape(-1)  # pixdiff [i, j] <- official j * h + i
    return torch.cat([w1, w2])


def rules(model: ModelConfig) -> list[Rule]:
    """The whole mapping for a PixNerd recipe: DiP's backbone, post-hoc CoordinateMLP with PixNerd's frequencies."""
    head, cfg = model.head, model.backbone
    if not (isinstance(head, CoordinateMLP) and head.num_freqs == MAX_FREQS and head.top_freq == MAX_FREQS
            and model.placement == "post"):
        raise InteropError("the recipe's head is not PixNerd's (a post-hoc CoordinateMLP with num_freqs=8, "
                           "top_freq=8.0): pick a recipes/pixnerd.py recipe")
    require_plain_dit(cfg, "PixNerd")
    rows = generator_rows(head.hidden, head.mlp_hidden)
    back = torch.argsort(rows)
    field = []
    for j in range(head.depth):
        ours, theirs = f"head.blocks.{j}.", f"blocks.{cfg.depth + j}."
        field += [Rule((f"{ours}generator.{p}",), (f"{theirs}param_generator1.0.{p}",),
                       to_ours=lambda w: (w[rows],), to_theirs=lambda w: (w[back],)) for p in ("weight", "bias")]
        field.append(Rule((f"{ours}norm.weight",), (f"{theirs}norm.weight",)))
    return [*backbone_rules(cfg), *coordinate_embed_rules("head.embed", "x_embedder.embedder.0", cfg.channels,
                                                         head.num_freqs),
            *field, Rule(("head.norm.weight",), ("final_layer.norm.weight",)),
            *renamed("head.out", "final_layer.linear")]


def from_official(state: Mapping[str, Tensor], model: ModelConfig, rules_fn: RulesFn = rules,
                  what: str = "official PixNerd checkpoint") -> dict[str, Tensor]:
    """An official denoiser state dict (no prefix) -> pixdiff model keys."""
    return convert(state, rules_fn(model), forward=True, what=what)


def to_official(state: Mapping[str, Tensor], model: ModelConfig, rules_fn: RulesFn = rules) -> dict[str, Tensor]:
    """pixdiff model keys -> an official denoiser state dict (no prefix)."""
    return {k: v.contiguous() for k, v in convert(state, rules_fn(model), forward=False, what="pixdiff model").items()}


def read_official(path: Path) -> dict[str, Tensor]:
    """The `state_dict` of an official Lightning checkpoint (or a bare state dict), read weights_only."""
    ckpt = read(path)
    state = ckpt.get("state_dict", ckpt)
    if not isinstance(state, Mapping) or not any(k.startswith(p) for p in LIGHTNING_PREFIXES.values() for k in state):
        raise InteropError(f"{path} is not an official Lightning checkpoint "
                           "(no 'denoiser.' or 'ema_denoiser.' tensors)")
    return dict(state)


def pixdiff_checkpoint(official: Mapping[str, Tensor], recipe: Recipe, rules_fn: RulesFn = rules,
                       family: str = "PixNerd") -> dict[str, Any]:
    """An official Lightning state_dict as a pixdiff checkpoint: `model` the raw denoiser, `ema` the EMA
    one (one found alone serves as both). Strict: every tensor of the
    denoiser used, none missing, shapes equal."""
    own = own_shapes(recipe)

    out: dict[str, Any] = {"recipe": to_dict(recipe)}
    for weights, state in lightning_states(official).items():
        what = f"official {family} checkpoint ({LIGHTNING_PREFIXES[weights]})"
        converted = from_official(state, recipe.model, rules_fn, what)
        check_state(own, converted, what)
        out["model" if weights == "raw" else "ema"] = converted
    return out


def official_checkpoint(ckpt: Mapping[str, Any], recipe: Recipe, rules_fn: RulesFn = rules) -> dict[str, Any]:
    """A pixdiff checkpoint as {"state_dict": {denoiser.*, ema_denoiser.*}}, the tensors of the authors'
    Lightning layout (the first EMA of train.ema_decays; no optimizer or trainer state)."""
    own = own_shapes(recipe)
    decays = recipe.train.ema_decays
    states = {"raw": ckpt.get("model"), "ema": ema_weights(ckpt, decays)[float(decays[0])]}
    out: dict[str, Tensor] = {}
    for weights, state in states.items():
        if not isinstance(state, Mapping):
            raise InteropError(f"the pixdiff checkpoint has no {weights} weights")
        check_state(own, state, f"pixdiff checkpoint ({weights})")
        out.update({LIGHTNING_PREFIXES[weights] + k: v for k, v in to_official(state, recipe.model, rules_fn).items()})
    return {"state_dict": out}
