"""`pixdiff train`: a recipe in, a trained and resumable run folder out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pixdiff.commands.options import DeviceOpt, RecipeArg, SetOpt, load, not_empty, reported


def train(
    recipe: RecipeArg,
    set_: SetOpt = None,
    out: Annotated[Optional[Path], typer.Option(help="Run folder (default: runs/<recipe name>).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the run folder's newest checkpoint.")] = False,
    device: DeviceOpt = None,
    progress: Annotated[bool, typer.Option(help=(
        "Show the live progress bar on a terminal (--no-progress, or no terminal: one plain line per log row)."))]
    = True,
    init_from: Annotated[Optional[str], typer.Option(callback=not_empty, help=(
        "Fine-tune: start from this checkpoint's (or run folder's, or hf-hub:ORG/REPO[@REVISION][:FILE]'s) EMA weights, the label table fitted to "
        "model.backbone.num_classes; ignored by --resume, which continues from the run's own checkpoint."))] = None,
    keep_class_rows: Annotated[bool, typer.Option(help=(
        "With --init-from: classes 0..K-1 that both models have keep their label rows (else all start fresh)."))]
    = True,
) -> None:
    """Train a recipe; under `torchrun --nproc_per_node=N` the same command runs data-parallel."""
    from pixdiff.train import train as run_training
    from pixdiff.train.resume import resume_recipe

    with reported():
        if resume:  # the run's own recipe.json, changed only by --set
            r, out = resume_recipe(recipe, set_ or [], out)
        else:
            r = load(recipe, set_)
        result = run_training(r, out or Path("runs") / r.name, resume=resume, device=device, progress=progress,
                              init_from=init_from, keep_classes=keep_class_rows)
    if not result.main:
        raise typer.Exit(result.exit_code)
    typer.echo(result.summary())
    if result.stopped_by:
        typer.echo(result.stop_line())
        raise typer.Exit(result.exit_code)
    typer.echo(f"checkpoint: {result.checkpoint}")
    if result.sample_grid:
        typer.echo(f"samples: {result.sample_grid}")
