"""The authors' files from the Hub, converted once: the pixdiff checkpoint a hub source's file turns into
is kept in pixdiff's cache home (`runtime.paths.cache_home()/converted/`), named by the source file's
sha256, its layout and the model it was read as, and read from there on the next call instead of
being converted again.

It is a pixdiff checkpoint (`store.save`: digest-checked, plain tensors), not a safetensors export,
because an export holds the EMA weights only and the authors' files hold more (JiT's raw weights and
second EMA, the Lightning files' raw denoiser), which `--weights raw` and `--ema` select.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from collections.abc import Callable
from typing import Any

from pixdiff.checkpoints import store
from pixdiff.config.tree import to_dict
from pixdiff.recipe import Recipe
from pixdiff.runtime.paths import cache_home

FOLDER = "converted"


def model_key(recipe: Recipe) -> str:
    """What a conversion depends on in a recipe: the model and the EMA decays (which slot is which
    EMA); a changed sampler or training setting reuses the same file."""
    spec = json.dumps({"model": to_dict(recipe.model), "ema_decays": list(recipe.train.ema_decays)}, sort_keys=True)
    return hashlib.blake2b(spec.encode(), digest_size=8).hexdigest()


def cached_path(source_digest: str, layout: str, recipe: Recipe) -> Path:
    return cache_home() / FOLDER / f"{source_digest[:32]}-{layout}-{model_key(recipe)}.pt"


def load_or_convert(path: Path, convert: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The cached checkpoint at `path`, or `convert()` saved there first (atomically: a killed
    conversion leaves no file behind)."""
    if path.is_file():
        return store.load(path)
    ckpt = {"format": store.FORMAT, **convert()}
    path.parent.mkdir(parents=True, exist_ok=True)
    store.save(ckpt, path)
    return ckpt
