"""`pixdiff sweep`: EMA x CFG x guidance interval x steps x solver on a small N, each cell scored
with FD and KID, resumable cell by cell; a table, a heat map and the command for the 50k run of the
best cell (see `pixdiff.pipelines.sweep`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from pixdiff.commands.options import (
    BIG,
    CacheDirOpt,
    DeviceOpt,
    LayoutOpt,
    QuietOpt,
    SeedOpt,
    SetOpt,
    SourceArg,
    fail,
    not_empty,
    reported,
)


def _list(help_text: str) -> Any:
    return typer.Option(help=f"{help_text} Comma-separated (default: the recipe's).", callback=not_empty)


def sweep(
    source: SourceArg,
    out: Annotated[Path, typer.Option(help="Sweep folder: setup.json, cells/, sweep.json, sweep.md, heatmap.png.")],
    ref: Annotated[str, typer.Option(callback=not_empty, help=(
        "Reference, as `pixdiff eval --ref` takes it: an .npz, an image folder, a statistics file, or the "
        "training data at the model's resolution ('emoji', 'data:FOLDER')."))],
    ema: Annotated[Optional[str], typer.Option(callback=not_empty, help=(
        "EMA decays of the checkpoint and/or 'raw', comma-separated (default: every EMA it holds, and raw)."))] = None,
    cfg: Annotated[Optional[str], _list("Guidance scales, e.g. 1,1.5,2.")] = None,
    interval: Annotated[Optional[str], _list("Guidance intervals LO:HI, e.g. 0.1:1,0:1.")] = None,
    steps: Annotated[Optional[str], _list("Sampling steps, e.g. 25,50.")] = None,
    solver: Annotated[Optional[str], _list("Solvers, e.g. euler,heun.")] = None,
    num: Annotated[int, typer.Option("--num", "-n", min=4, max=BIG, help=(
        "Images per cell (at least 4, for KID); the same seeds and labels in every cell."))] = 256,
    seed: SeedOpt = 0,
    features: Annotated[str, typer.Option(callback=not_empty, help=(
        "As `pixdiff eval --features`: 'effnet' (offline default, FD-EffNet) or 'inception:PATH' (FID)."))] = "effnet",
    recipe: Annotated[Optional[str], typer.Option(
        help="Recipe of the model; needed for the authors' reference checkpoints.", callback=not_empty)] = None,
    layout: LayoutOpt = "dip",
    set_: SetOpt = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward batch (does not change the images).", min=1,
                                            max=BIG)] = 64,
    cache_dir: CacheDirOpt = None,
    device: DeviceOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Sweep EMA x CFG x interval x steps x solver, scoring each cell with FD and KID; rerun to resume."""
    from pixdiff.checkpoints.hub import file_digest
    from pixdiff.pipelines import sweep as sw
    from pixdiff.pipelines.generate import SampleJob
    from pixdiff.runtime.distributed import Dist, pick_device
    from pixdiff.runtime.lock import rank0_lock

    with reported(ValueError):
        dev = str(pick_device(device))
        grid = sw.parse_grid(ema=ema, cfg=cfg, interval=interval, steps=steps, solver=solver)
        r, file = _checked_source(source, recipe, layout, set_ or [], features, ref)
        cells = sw.complete(grid, r.train.ema_decays, r.sample).cells()
        _check_sampler(r, cells)
        job = SampleJob(num=num, seed=seed, batch_size=batch_size)
        # the file's sha256, not its size and time: a copied checkpoint resumes, a changed one is refused
        setup = {"checkpoint": str(file), "checkpoint_sha256": file_digest(file), "recipe": r.name,
                 "set": list(set_ or []),
                 "num": num, "seed": seed, "labels": job.labels, "features": features, "ref": ref}
        sw.check_setup(out, setup)
        with rank0_lock(out, Dist()):  # one writer per sweep folder
            draw = sw.drawer(str(source), job, recipe=recipe, layout=layout if recipe else None,
                             overrides=set_ or [], device=dev)
            score = _lazy_scorer(ref, features, r.resolution, dev, batch_size, cache_dir, shown=not quiet)
            rows = sw.run_cells(sw.Sweep(cells, out, setup, draw, score), _reporter(cells))
            metric = next((row["metric"] for row in rows if row["status"] == "ok"), "FD")
            outcome = sw.summarize(out, cells, rows, setup, metric)
    typer.echo("\n".join(sw.table(outcome.rows, metric)))
    typer.echo(f"wrote {out / 'sweep.json'}, {out / 'sweep.md'} and {out / 'heatmap.png'}")
    if outcome.best is None:
        fail(f"every one of the {len(cells)} cells failed: no best setting (see {out / 'sweep.md'})")
    b = outcome.best
    extra = [*(["--recipe", recipe, "--layout", layout] if recipe else []), *(a for s in set_ or [] for a in ("--set", s))]
    typer.echo(f"best: {b['key']} ({metric} {b['fd']:.2f}, KID {b['kid']:.4f}): "
               f"{sw.best_command(b, str(source), out, setup, extra)}")


def _checked_source(source: Path, recipe: str | None, layout: str, overrides: list[str], features: str,
                    ref: str) -> tuple[Any, Path]:
    """(the model's recipe, its checkpoint file), after checking that the checkpoint loads and that
    the features and the reference can be named (nothing is extracted yet)."""
    from pixdiff.checkpoints.loader import load_model
    from pixdiff.data.reference import names_training_data
    from pixdiff.eval.features import parse_spec

    parse_spec(features)
    if not names_training_data(ref) and not Path(ref).exists():
        raise ValueError(f"--ref {ref}: no such file or folder (or name training data: 'emoji', 'data:SOURCE')")
    _, r, file = load_model(source, recipe=recipe, overrides=overrides, layout=layout if recipe else None)
    return r, file


def _check_sampler(r: Any, cells: list[Any]) -> None:
    """Every cell's sampler settings are valid for the recipe (one RecipeError line otherwise)."""
    from pixdiff.recipe import with_sampler

    for cell in cells:
        with_sampler(r, **cell.sampler())


def _lazy_scorer(ref: str, features: str, resolution: int, device: str, batch_size: int, cache_dir: Path | None,
                 *, shown: bool) -> Any:
    """images -> Score, opening the extractor and the reference's statistics at the first cell that
    needs them (a rerun of a finished sweep extracts nothing)."""
    from pixdiff.pipelines.scoring import open_scorer, score_images
    from pixdiff.runtime.progress import progress

    opened: list[Any] = []

    def score(images: Any) -> Any:
        if not opened:
            with progress("sweep reference", enabled=shown) as on_progress:
                opened.append(open_scorer(ref, features, resolution, device=device, batch_size=batch_size,
                                          cache_dir=cache_dir, on_progress=on_progress))
        return score_images(images, opened[0])

    return score


def _reporter(cells: list[Any]) -> Any:
    """One stdout line per cell as it finishes (or is found finished)."""
    def report(i: int, row: dict[str, Any], resumed: bool) -> None:
        where = f"[{i + 1}/{len(cells)}] {row['key']}:"
        if row["status"] == "failed":
            typer.echo(f"{where} failed{' earlier' if resumed else ''}: {row['error']}")
            return
        when = "finished earlier" if resumed else f"{row['seconds']:.1f} s"
        typer.echo(f"{where} {row['metric']} {row['fd']:.2f}, KID {row['kid']:.4f} ({when})")

    return report
