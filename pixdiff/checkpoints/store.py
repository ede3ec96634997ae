"""Checkpoint files: plain tensors and builtins (loadable with `weights_only=True`), written atomically,
read safely (the loader that turns them into models is `loader`).

A checkpoint is a dict with at least
    format   "pixdiff-1"
    recipe   the resolved recipe as `config.tree.to_dict` gives it
    model    the raw weights' state dict
    ema      the EMA weights' state dict (what sampling uses by default)
    ema_extra  {str(decay): state dict} of further EMAs (train.ema_decays[1:]), possibly empty
Training adds `step`, `optimizer`, `rng`, `data`; a converted or exported file may have only the above.
    digest   {"algorithm", "value"} of everything else in the file (`digest.py`), checked on every read
A `.safetensors` export holds the EMA weights, with the format, the recipe (JSON) and the digest of both
in its metadata. A file without a digest (written before pixdiff checked its files) loads with a warning.
Nothing a file holds runs code: tensors load with `weights_only=True`, recipes decode only into
pixdiff's config dataclasses (see `config.tree.from_dict`).
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from pixdiff.checkpoints.digest import ALGORITHM, digest
from pixdiff.config.tree import DecodeError, from_dict, to_dict
from pixdiff.recipe import Recipe
from pixdiff.runtime.atomic import atomic_write

FORMAT = "pixdiff-1"
SAFETENSORS = ".safetensors"


# The non-builtin types the authors' files hold beside tensors: JiT's main_jit.py saves its
# argparse.Namespace as "args". PixNerd's and DeCo's Lightning checkpoints (MCG-NJU/PixNerd @ 6da060b,
# Zehong-Ma/DeCo @ 9e0a349) hold only dicts, lists, numbers and strings beside tensors: their
# CheckpointHook drops "callbacks", and neither calls save_hyperparameters.
SAFE_TYPES = (argparse.Namespace,)


class CheckpointError(ValueError):
    pass


class UnverifiedCheckpoint(UserWarning):
    """A pixdiff file from before digests: it loads, unchecked."""


def save(obj: dict[str, Any], path: str | Path) -> None:
    """Write atomically (`pixdiff.runtime.atomic`): a crash never leaves half a file under `path`."""
    content = {"format": FORMAT, **{k: v for k, v in obj.items() if k != "digest"}}
    with atomic_write(path) as f:
        torch.save({**content, "digest": {"algorithm": ALGORITHM, "value": digest(content)}}, f)


def save_safetensors(weights: dict[str, torch.Tensor], recipe: Recipe, path: str | Path) -> None:
    """EMA weights as safetensors, with the resolved recipe as JSON in the metadata."""
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous() for k, v in weights.items()}
    recipe_json = json.dumps(to_dict(recipe))
    content = {"format": FORMAT, "recipe": json.loads(recipe_json), "ema": tensors}  # as `read` will see it
    blob = save(tensors, metadata={"format": FORMAT, "recipe": recipe_json, "digest_algorithm": ALGORITHM,
                                   "digest": digest(content)})
    with atomic_write(path) as f:
        f.write(blob)


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temp files of writes that were killed before their rename (SIGKILL skips cleanup)."""
    stale = sorted(Path(folder).glob(".*.tmp")) if Path(folder).is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _read_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        ema = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("format") != FORMAT:
        return ema  # someone else's weights: the caller decides (e.g. a reference layout)
    try:
        recipe = json.loads(meta.get("recipe", ""))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: the recipe in its metadata is not JSON ({e})") from None
    data = {"format": FORMAT, "recipe": recipe, "ema": ema}
    if "digest" in meta:
        data["digest"] = {"algorithm": meta.get("digest_algorithm"), "value": meta["digest"]}
    return data


def check_digest(path: Path, content: dict[str, Any], stored: Any) -> None:
    """Refuse a file whose content does not match the digest it was written with."""
    if not isinstance(stored, dict) or stored.get("algorithm") != ALGORITHM:
        raise CheckpointError(f"{path}: unknown digest {stored!r:.80} (written by a newer pixdiff?)")
    if digest(content) != stored.get("value"):
        raise CheckpointError(f"{path} is damaged: its content does not match the digest it was written with "
                              "(a flipped bit or an overwritten byte); refused")


def unverified(data: dict[str, Any], path: Path) -> None:
    """Warn that a file has no digest, once nothing else is wrong with it (a refusal is the one line)."""
    recipe_of(data, path)
    warnings.warn(f"{path} has no digest (written before pixdiff checked its files): loaded unverified",
                  UnverifiedCheckpoint, stacklevel=3)


def refused_type(error: pickle.UnpicklingError) -> str | None:
    """The type torch's weights-only unpickler refused, read off its message ("Unsupported global:
    GLOBAL numpy.dtype was not an allowed global"), or None when it names none."""
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    return found.group(1) if found else None


def torch_load(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """torch.load with weights_only=True and SAFE_TYPES allowed; anything else pickled is one error line."""
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(list(SAFE_TYPES)):
            warnings.simplefilter("ignore")  # e.g. torch's note on a plain pickle's protocol: the error says it all
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        name = refused_type(e)
        what = (f"holds a pickled {name} (refused: beside tensors and builtins only argparse.Namespace loads"
                if name else "is not a plain-tensor checkpoint: corrupt, not a torch file, or it holds pickled "
                "objects (refused")
        raise CheckpointError(f"{path} {what}: loading other objects could run code)") from None


def read(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Any weights file, safely: a torch file (weights only) or a .safetensors file. Missing,
    truncated, foreign or pickled-code files raise CheckpointError with one line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = _read_safetensors(path) if path.suffix == SAFETENSORS else torch_load(path, map_location)
    except CheckpointError:
        raise
    except Exception as e:  # torch and safetensors explain on many lines; the first says what broke
        reason = (str(e).strip().splitlines() or [""])[0][:120]
        raise CheckpointError(f"{path} is unreadable or truncated ({type(e).__name__}: {reason})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a dict of weights")
    if data.get("format") == FORMAT:
        stored = data.pop("digest", None)
        if stored is None:
            unverified(data, path)
        else:
            check_digest(path, data, stored)
    return data


def recipe_of(ckpt: dict[str, Any], source: str | Path) -> Recipe:
    """The recipe stored in a pixdiff checkpoint, decoded safely."""
    try:
        recipe = from_dict(ckpt.get("recipe"))
    except DecodeError as e:
        raise CheckpointError(f"{source}: {e}") from None
    if not isinstance(recipe, Recipe):
        raise CheckpointError(f"{source}: its recipe is not a pixdiff Recipe")
    return recipe


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A pixdiff checkpoint: read, its format and its recipe checked."""
    ckpt = read(path, map_location)
    if ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pixdiff checkpoint (convert the authors' files with `pixdiff convert`)")
    recipe_of(ckpt, path)
    return ckpt


def ema_weights(ckpt: dict[str, Any], decays: tuple[float, ...]) -> dict[float, Any]:
    """{decay: weights} of every EMA a checkpoint holds: "ema" is `decays[0]` (its recipe's first
    train.ema_decays entry), "ema_extra" the others."""
    extra = ckpt.get("ema_extra") or {}
    if not isinstance(extra, dict):
        raise CheckpointError("the checkpoint's ema_extra is not a dict of weights")
    return {float(decays[0]): ckpt.get("ema"), **{float(k): v for k, v in extra.items()}}


def pick_ema(ckpt: dict[str, Any], decays: tuple[float, ...], decay: float | None) -> Any:
    """The weights of the EMA with `decay` (None: the first, what sampling uses by default)."""
    emas = ema_weights(ckpt, decays)
    key = float(decays[0]) if decay is None else float(decay)
    if key not in emas:
        raise CheckpointError(f"no EMA with decay {decay} in this checkpoint; it has {', '.join(map(str, emas))}")
    return emas[key]


def run_recipe(run_dir: str | Path) -> Recipe:
    """A run folder's recipe.json, decoded safely."""
    path = Path(run_dir) / "recipe.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is unreadable or not JSON ({type(e).__name__})") from None
    return recipe_of({"recipe": data}, path)


def resolve(path: str | Path) -> Path:
    """A run folder means its newest checkpoint (its recipe.json is checked too); a file is itself."""
    path = Path(path)
    if path.is_dir():
        files = sorted((path / "checkpoints").glob("step_*.pt")) or sorted(path.glob("*.pt"))
        if not files:
            raise CheckpointError(f"no checkpoint in {path} (looked in {path / 'checkpoints'})")
        if (path / "recipe.json").exists():
            run_recipe(path)
        return files[-1]
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path
