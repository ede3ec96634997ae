"""The DiP authors' reference layout <-> pixdiff's DiP model.

Their denoiser keeps the backbone at the top level (`s_embedder.`, `t_embedder.`, `y_embedder.`,
`blocks.N.`) and the Patch Detailer Head under `local_decoder.`; their Lightning checkpoints store it
under `state_dict` with the prefixes `denoiser.` (raw) and `ema_denoiser.` (EMA), see
`interop.lightning_states`. pixdiff names the same tensors `backbone.*` and `head.*`, so
conversion is a strict prefix mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pixdiff.checkpoints import store
from pixdiff.checkpoints.interop import LIGHTNING_PREFIXES, InteropError, check_state, lightning_states
from pixdiff.checkpoints.keymap import own_shapes
from pixdiff.config.tree import to_dict

if TYPE_CHECKING:
    from pixdiff.recipe import Recipe

BACKBONE, HEAD = "backbone.", "head."
REFERENCE_HEAD = "local_decoder."


def from_reference(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Reference denoiser keys -> pixdiff DiP keys."""
    return {
        (HEAD + k.removeprefix(REFERENCE_HEAD)) if k.startswith(REFERENCE_HEAD) else BACKBONE + k: v
        for k, v in state.items()
    }


def to_reference(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """pixdiff DiP keys -> reference denoiser keys (post-hoc placement only: the reference has no other)."""
    out = {}
    for k, v in state.items():
        if k.startswith(BACKBONE):
            out[k.removeprefix(BACKBONE)] = v
        elif k.startswith(HEAD):
            out[REFERENCE_HEAD + k.removeprefix(HEAD)] = v
        else:
            raise InteropError(f"{k!r} has no counterpart in the reference layout (only post-hoc DiP converts)")
    return out


def read_official(path: Path) -> dict[str, Any]:
    """A reference state dict or Lightning checkpoint, read weights-only (`store.read`)."""
    return store.read(path)


def pixdiff_checkpoint(official: Mapping[str, Any], recipe: Recipe) -> dict[str, Any]:
    """A reference checkpoint as a pixdiff one (`model` the raw denoiser, `ema` the EMA one; see
    `interop.lightning_states`), strictly: every tensor used, none missing, shapes equal."""
    own = own_shapes(recipe)
    out: dict[str, Any] = {"recipe": to_dict(recipe)}
    for weights, state in lightning_states(official).items():
        converted = from_reference(state)
        check_state(own, converted, f"reference checkpoint ({weights} weights)")
        out["model" if weights == "raw" else "ema"] = converted
    return out


def official_checkpoint(ckpt: Mapping[str, Any], recipe: Recipe) -> dict[str, Any]:
    """A pixdiff checkpoint in the authors' Lightning layout: {"state_dict": denoiser. and
    ema_denoiser. tensors} (the recipe's first EMA; no optimizer or trainer state)."""
    own, decays = own_shapes(recipe), recipe.train.ema_decays
    states = {"raw": ckpt.get("model"), "ema": store.ema_weights(ckpt, decays)[float(decays[0])]}
    out: dict[str, torch.Tensor] = {}
    for weights, state in states.items():
        if not isinstance(state, Mapping):
            raise InteropError(f"the pixdiff checkpoint has no {weights} weights")
        check_state(own, state, f"pixdiff checkpoint ({weights})")
        out.update({LIGHTNING_PREFIXES[weights] + k: v.contiguous() for k, v in to_reference(state).items()})
    return {"state_dict": out}
