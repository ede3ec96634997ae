"""Continuing a run without surprises: its own recipe.json is the base, a `--set` changes only what
it names, and every change is printed and kept in the run's recipe_history.jsonl.

    pixdiff train runs/x --resume --set train.max_steps=2000     # the run folder as the recipe
    pixdiff train emoji_tiny --out runs/x --resume               # or the recipe it was started from

Editing the recipe file after a run started does not change the run: only `--set` does. What a
resume may not change at all (the model, objective, data, batch, seed) is refused in one line by
`checkpointing.check_resume_compatible`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pixdiff.checkpoints import store as checkpoint
from pixdiff.config.tree import apply_overrides
from pixdiff.recipe import Recipe, load_recipe, stored_recipe_file
from pixdiff.runtime.atomic import atomic_write
from pixdiff.train.checkpointing import CKPT_DIR, latest_checkpoint
from pixdiff.train.errors import TrainingError

HISTORY = "recipe_history.jsonl"


def resume_recipe(spec: str, overrides: list[str], out: Path | None) -> tuple[Recipe, Path]:
    """The recipe and run folder that `pixdiff train SPEC --resume [--out OUT] [--set ...]` continues:
    the folder's recipe.json with `overrides` applied. SPEC is the run folder (or its recipe.json),
    or the recipe the run was started from, whose name must then be the run's."""
    stored = stored_recipe_file(spec)
    named = None if stored is not None and out is None else load_recipe(spec, overrides).name
    folder = out or (stored.parent if stored is not None else Path("runs") / named)
    if latest_checkpoint(folder) is None:
        raise TrainingError(f"--resume: no checkpoint in {folder / CKPT_DIR}")
    base = checkpoint.run_recipe(folder)
    if named is not None and named != base.name:
        raise TrainingError(f"--resume: {folder} is a run of recipe {base.name!r}, not {named!r}; "
                            f"resume it as `pixdiff train {folder} --resume`")
    return apply_overrides(base, overrides), folder


def check_unfinished(step: int, recipe: Recipe) -> None:
    """A resume that has nothing left to train is refused, so that it changes nothing."""
    max_steps = recipe.train.max_steps
    if step >= max_steps:
        where = (f"step {step} = train.max_steps" if step == max_steps
                 else f"step {step}, past train.max_steps={max_steps}")
        raise TrainingError(f"the run is already at {where}; raise it with --set train.max_steps=M (M > {step})")


def append_history(run_dir: Path, step: int, changes: dict[str, tuple[Any, Any]]) -> None:
    """One row per resume that changed the recipe: the step it resumed from, when, and each change."""
    path = run_dir / HISTORY
    before = path.read_text() if path.exists() else ""
    row = {"step": step, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "changes": {k: list(v) for k, v in changes.items()}}
    with atomic_write(path, text=True) as f:  # the whole file again: a kill never leaves half a row
        f.write(before + json.dumps(row) + "\n")
