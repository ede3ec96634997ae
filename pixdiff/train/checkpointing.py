"""A run's checkpoints: what one holds, writing it (newest two kept), resuming from it.

Keys besides `checkpoint`'s format/recipe/model: `ema` (the weights of train.ema_decays[0], what
sampling uses), `ema_extra` ({str(decay): weights} for the other decays), `step`, `optimizer`,
`rng`, `data`, `metrics_window` (the unfinished log window, so that a resumed run logs the same
rows), and `repa_projector` with REPA.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch

from pixdiff.checkpoints import store as checkpoint
from pixdiff.config.tree import to_dict
from pixdiff.recipe import Recipe
from pixdiff.runtime.atomic import atomic_write
from pixdiff.runtime.distributed import Dist, barrier
from pixdiff.train import parallel
from pixdiff.train.errors import TrainingError
from pixdiff.train.parallel import Parts

CKPT_DIR = "checkpoints"
KEEP_CHECKPOINTS = 2


def latest_checkpoint(out_dir: Path) -> Path | None:
    files = sorted((out_dir / CKPT_DIR).glob("step_*.pt"))
    return files[-1] if files else None


def last_good(out_dir: Path) -> str:
    """What a failed write kept, in words (a failed checkpoint write leaves no file under its name)."""
    try:
        path = latest_checkpoint(out_dir)
    except OSError:
        return "its checkpoints could not be listed"
    return f"last good checkpoint: {path}" if path else "no checkpoint was written"


def checkpoint_step(path: Path | None) -> int:
    return int(path.stem.split("_")[1]) if path else -1


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A `to_dict` tree as {dotted key: leaf value}; a section's class is its `KEY._type` leaf."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def recipe_changes(old: Recipe, new: Recipe) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (old value, new value)} of every field that differs, as JSON values."""
    a, b = flatten(to_dict(old)), flatten(to_dict(new))
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


def show_change(key: str, old: Any, new: Any) -> str:
    return f"{key} {json.dumps(old)} -> {json.dumps(new)}"


def changes_what_is_trained(key: str) -> bool:
    """What a resume may not change: the model, the objective, the data (where its decoded cache
    is kept aside), and the batch and seed that fix the data order and the noise."""
    if key == "data.cache_dir":
        return False
    return key.split(".")[0] in ("model", "objective", "data") or key in ("train.global_batch", "train.seed")


def check_resume_compatible(saved: Recipe, given: Recipe, what: str = "the run's recipe.json") -> None:
    """Resuming may change how long and how often (train.*, sample.*), never what is trained."""
    refused = [show_change(k, *v) for k, v in recipe_changes(saved, given).items() if changes_what_is_trained(k)]
    if refused:
        raise TrainingError(f"--resume cannot change {', '.join(refused)} (from {what}): "
                            f"that would change what the run trains; start a new --out folder")


def split_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


def run_state(recipe: Recipe, parts: Parts, step: int, dataset_size: int, window: dict) -> dict[str, Any]:
    """Everything a checkpoint holds (a collective under FSDP: every rank calls it)."""
    decays = recipe.train.ema_decays
    net = parallel.full_state_dict(parts.net, parts.fsdp)
    state = {
        "recipe": to_dict(recipe),
        "step": step,
        "model": split_prefix(net, "model."),
        "ema": parallel.ema_state(parts, 0),
        "ema_extra": {str(decay): parallel.ema_state(parts, i) for i, decay in enumerate(decays) if i > 0},
        "optimizer": parallel.optimizer_state(parts),
        "rng": {"torch": torch.get_rng_state()},
        "data": {"samples_seen": step * recipe.train.global_batch, "dataset_size": dataset_size},
        "metrics_window": window,
    }
    if recipe.train.repa:
        state["repa_projector"] = split_prefix(net, "repa_projector.")
    return state


def save(out_dir: Path, state: dict[str, Any], d: Dist) -> Path:
    """Write step_XXXXXXXX.pt (rank 0) and delete all but the newest KEEP_CHECKPOINTS up to it."""
    path = out_dir / CKPT_DIR / f"step_{state['step']:08d}.pt"
    if d.main:
        checkpoint.save(state, path)
        for old in prunable(out_dir, state["step"]):
            old.unlink()
    barrier(d)
    return path


def prunable(out_dir: Path, step: int) -> list[Path]:
    """The checkpoints a save at `step` retires: all but the newest KEEP_CHECKPOINTS at or before it.
    Files named after `step` (a damaged one a resume skipped, those of steps a non-finite stop
    undid) are left alone, so they can never push out the one just written, the last good one."""
    upto = [p for p in sorted((out_dir / CKPT_DIR).glob("step_*.pt")) if checkpoint_step(p) <= step]
    return upto[:-KEEP_CHECKPOINTS]


def check_fresh(out_dir: Path) -> None:
    """A run without --resume starts in a folder no earlier run has logged to: it never appends to
    another run's metrics.jsonl or mixes its checkpoints with another's."""
    if latest_checkpoint(out_dir) is not None:
        raise TrainingError(f"{out_dir} already holds checkpoints: pass --resume to continue it, "
                            f"or choose another --out")
    if (out_dir / "metrics.jsonl").exists():
        raise TrainingError(f"{out_dir} holds the metrics.jsonl of an earlier run that left no checkpoint to "
                            f"resume: delete it or choose another --out")


def newest_verified(out_dir: Path) -> tuple[Path, dict[str, Any], list[str]]:
    """The newest checkpoint that reads and verifies, and a note on each newer one it skipped."""
    skipped = []
    for path in sorted((out_dir / CKPT_DIR).glob("step_*.pt"), reverse=True):
        try:
            return path, checkpoint.load(path, map_location="cpu"), skipped
        except checkpoint.CheckpointError as e:
            skipped.append(str(e))
    if skipped:
        raise TrainingError(f"--resume: no checkpoint in {out_dir / CKPT_DIR} verifies: {'; '.join(skipped)}")
    raise TrainingError(f"--resume: no checkpoint in {out_dir / CKPT_DIR}")


def restore(out_dir: Path, recipe: Recipe, parts: Parts) -> tuple[Path, dict[str, Any]]:
    """Load the newest checkpoint that verifies into `parts`, after checking that both the run's
    recipe.json and the checkpoint's own recipe fit `recipe`; returns its path and its contents.
    What the checkpoint holds is read by its own recipe (which EMA is which), never by recipe.json
    or `recipe`: a session that changed them may have ended before it wrote a checkpoint."""
    path, ckpt, skipped = newest_verified(out_dir)
    run = checkpoint.run_recipe(out_dir)  # decoded safely, like everything read from a run folder
    check_resume_compatible(run, recipe)
    stored = checkpoint.recipe_of(ckpt, path)
    check_resume_compatible(stored, recipe, f"the recipe stored in {path}")
    for note in skipped:
        warnings.warn(f"--resume skipped {note}", checkpoint.UnverifiedCheckpoint, stacklevel=2)
    net = {f"model.{k}": v for k, v in ckpt["model"].items()}
    net.update({f"repa_projector.{k}": v for k, v in ckpt.get("repa_projector", {}).items()})
    parallel.load_full_state_dict(parts.net, net, parts.fsdp)
    saved = checkpoint.ema_weights(ckpt, stored.train.ema_decays)
    for i, decay in enumerate(recipe.train.ema_decays):
        if decay not in saved:
            raise TrainingError(f"--resume: the checkpoint has no EMA with decay {decay} "
                                f"(it has {', '.join(map(str, saved))}); keep train.ema_decays as they were")
        parallel.load_ema_state(parts, i, saved[decay])
    parallel.load_optimizer_state(parts, ckpt["optimizer"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    return path, ckpt


def forget_metrics_after(log: Path, step: int) -> None:
    """Drop metrics rows logged after `step`: a resumed run is about to redo them."""
    if log.exists():
        rows = [r for r in log.read_text().splitlines() if r and json.loads(r)["step"] <= step]
        with atomic_write(log, text=True) as f:
            f.write("".join(r + "\n" for r in rows))
