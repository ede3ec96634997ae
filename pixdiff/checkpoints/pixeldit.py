"""The official PixelDiT layout (NVlabs/PixelDiT, c2i) <-> pixdiff's PixelDiT recipes, strictly, both ways.

c2i/src/lightning.py saves a Lightning checkpoint whose `state_dict` holds the denoiser twice,
`denoiser.` (raw) and `ema_denoiser.` (the EMA its sampler uses), plus the REPA projector under
`diffusion_trainer.` (not converted: pixdiff trains a fresh one). A bare denoiser state dict is
read too, as both weights. pixdiff names the same tensors with the same shapes, so the map is a
renaming of prefixes (sub-names inside the blocks are the official ones):

    s_embedder. t_embedder. y_embedder.     backbone.<same>
    patch_blocks.i.                         backbone.blocks.i.
    pixel_embedder.proj.                    head.embed.
    pixel_blocks.i.                         head.blocks.i.
    final_layer.norm. / final_layer.linear. head.norm. / head.out.

Every conversion is checked against the recipe's model (`check_state`: nothing missing, nothing
unused, every shape equal) before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from pixdiff.checkpoints import store
from pixdiff.checkpoints.interop import LIGHTNING_PREFIXES, InteropError, check_state, lightning_states
from pixdiff.checkpoints.keymap import own_shapes
from pixdiff.config.tree import to_dict

if TYPE_CHECKING:
    from pixdiff.recipe import Recipe

# (pixdiff prefix, official prefix)
PREFIXES = (
    ("backbone.s_embedder.", "s_embedder."),
    ("backbone.t_embedder.", "t_embedder."),
    ("backbone.y_embedder.", "y_embedder."),
    ("backbone.blocks.", "patch_blocks."),
    ("head.embed.", "pixel_embedder.proj."),
    ("head.blocks.", "pixel_blocks."),
    ("head.norm.", "final_layer.norm."),
    ("head.out.", "final_layer.linear."),
)


def _rename(state: Mapping[str, Tensor], *, forward: bool, what: str) -> dict[str, Tensor]:
    """Official -> pixdiff names (`forward`) or back; a key no prefix covers is one InteropError."""
    out, unknown = {}, []
    for key, value in state.items():
        for ours, theirs in PREFIXES:
            src, dst = (theirs, ours) if forward else (ours, theirs)
            if key.startswith(src):
                out[dst + key.removeprefix(src)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise InteropError(f"{what} does not match PixelDiT's layout; unused: {sorted(unknown)[:8]}"
                           f"{' ...' if len(unknown) > 8 else ''}")
    return out


def from_official(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """An official PixDiT state dict -> pixdiff model keys."""
    return _rename(state, forward=True, what="official PixelDiT checkpoint")


def to_official(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """pixdiff model keys -> an official PixDiT state dict."""
    return _rename(state, forward=False, what="pixdiff model")


def read_official(path: Path) -> dict[str, Any]:
    """An official checkpoint file, read weights-only (store.read: one clear line when refused)."""
    return store.read(path)


def pixdiff_checkpoint(official: Mapping[str, Any], recipe: Recipe) -> dict[str, Any]:
    """An official checkpoint as a pixdiff one (`model` the raw weights, `ema` the EMA), strictly."""
    own = own_shapes(recipe)
    out: dict[str, Any] = {"recipe": to_dict(recipe)}
    for weights, state in lightning_states(official).items():
        converted = from_official(state)
        check_state(own, converted, f"official PixelDiT checkpoint ({weights} weights)")
        out["model" if weights == "raw" else "ema"] = converted
    return out


def official_checkpoint(ckpt: Mapping[str, Any], recipe: Recipe) -> dict[str, Any]:
    """A pixdiff checkpoint in the official Lightning layout: {"state_dict": denoiser. and
    ema_denoiser. tensors} (the recipe's first EMA; no optimizer or REPA projector)."""
    own, decays = own_shapes(recipe), recipe.train.ema_decays
    states = {"raw": ckpt.get("model"), "ema": store.ema_weights(ckpt, decays)[float(decays[0])]}
    out = {}
    for weights, state in states.items():
        if not isinstance(state, Mapping):
            raise InteropError(f"the pixdiff checkpoint has no {weights} weights")
        check_state(own, state, f"pixdiff checkpoint ({weights})")
        out.update({LIGHTNING_PREFIXES[weights] + k: v.contiguous() for k, v in to_official(state).items()})
    return {"state_dict": out}
