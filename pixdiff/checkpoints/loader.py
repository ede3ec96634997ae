"""The one way weights become a model: every path that reads a trained model (sample, the edit
commands, convert, fine-tuning, `pixdiff.load`, training's sample grids) goes through here.

A source is a run folder (its newest checkpoint), a pixdiff checkpoint (.pt or .safetensors), one of
the authors' files in an official layout (`layouts.LAYOUTS`; told from its keys unless a layout is
named), read with the recipe of the model it belongs to, or any of these on the Hugging Face Hub
(`hf-hub:ORG/REPO[@REVISION][:FILE]`, `hub`). Foreign files are converted to a pixdiff checkpoint
first (in memory; a hub file's conversion is kept, `converted`), so weight selection (raw, EMA by
decay) and the strict load are the same for all of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pixdiff.checkpoints import converted, hub, store
from pixdiff.checkpoints.interop import check_state
from pixdiff.checkpoints.layouts import LAYOUTS, detect
from pixdiff.config.tree import apply_overrides
from pixdiff.recipe import Recipe, load_recipe


def open_checkpoint(source: str | Path, *, recipe: Recipe | None = None,
                    layout: str | None = None) -> tuple[dict[str, Any], Recipe, Path]:
    """(checkpoint in pixdiff's format, the recipe stored with it, the file) from any source. A file
    that is not pixdiff's is read in `layout` (default: the one its keys say) as the model of
    `recipe`, which it then needs (and which is returned as its recipe)."""
    if layout is not None and layout not in LAYOUTS:
        raise store.CheckpointError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if hub.is_hub(source):
        return open_hub(hub.parse(str(source)), recipe, layout)
    file = store.resolve(source)
    return (*as_pixdiff(file, recipe, layout), file)


def as_pixdiff(file: Path, recipe: Recipe | None, layout: str | None) -> tuple[dict[str, Any], Recipe]:
    """A file's content as a pixdiff checkpoint, with its recipe (`open_checkpoint`)."""
    found = LAYOUTS[layout].read(file) if layout else store.read(file)
    if found.get("format") == store.FORMAT:
        return dict(found), store.recipe_of(found, file)
    if recipe is None:
        raise store.CheckpointError(f"{file} is not a pixdiff checkpoint: pass --recipe (and --layout) to read it "
                                    "as one of the authors' checkpoints")
    return LAYOUTS[layout or detect(found, file)].to_pixdiff(found, recipe), recipe


def open_hub(src: hub.HubSource, recipe: Recipe | None, layout: str | None) -> tuple[dict[str, Any], Recipe, Path]:
    """A hub source's file; read as one of the authors' (a recipe given), its conversion is kept in
    pixdiff's cache and read from there next time (`converted`)."""
    file = hub.download(src)
    if recipe is None:
        return (*as_pixdiff(file, None, layout), file)
    kept = converted.cached_path(hub.file_digest(file), layout or "auto", recipe)
    ckpt = converted.load_or_convert(kept, lambda: as_pixdiff(file, recipe, layout)[0])
    return ckpt, store.recipe_of(ckpt, kept), kept


def pick_weights(ckpt: Mapping[str, Any], recipe: Recipe, weights: str = "ema", ema: float | None = None) -> Any:
    """The raw weights, or those of the EMA with decay `ema` (default: the first of train.ema_decays)."""
    if weights not in ("ema", "raw"):
        raise store.CheckpointError(f"weights must be 'ema' or 'raw', not {weights!r}")
    return store.pick_ema(ckpt, recipe.train.ema_decays, ema) if weights == "ema" else ckpt.get("model")


def model_from_state(config: Any, state: Any, what: str, device: torch.device | str = "cpu") -> nn.Module:
    """An eval-mode, frozen model of `config` (a ModelConfig) holding `state`, strictly (a missing,
    foreign or mismatched state is one error line). Built on the meta device, so nothing is
    initialised twice and no random numbers are drawn."""
    if not isinstance(state, dict):
        raise store.CheckpointError(f"{what} are missing from the file")
    with torch.device("meta"):
        model = config.build()
    check_state(model.state_dict(), state, what)
    model = model.to_empty(device="cpu")
    model.load_state_dict(state, strict=True)
    model.backbone.reset_rope()  # non-persistent buffers were left empty by the meta build
    return model.to(device).eval().requires_grad_(False)


def load_model(source: str | Path, *, recipe: str | None = None, overrides: Sequence[str] = (),
               layout: str | None = None, weights: str = "ema", ema: float | None = None,
               device: torch.device | str = "cpu") -> tuple[nn.Module, Recipe, Path]:
    """(model, resolved recipe, file) from any source. `recipe` names the model's recipe (needed for
    the authors' files); `overrides` (--set) apply to it, or to the run's own recipe."""
    named = load_recipe(recipe, list(overrides)) if recipe else None
    ckpt, saved, file = open_checkpoint(source, recipe=named, layout=layout)
    r = named or apply_overrides(saved, list(overrides))
    # the weights are picked by the stored recipe: its ema_decays say which slot holds which EMA
    state = pick_weights(ckpt, saved, weights, ema)
    return model_from_state(r.model, state, f"{file}'s {weights!r} weights", device), r, file
