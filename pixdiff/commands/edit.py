"""`pixdiff edit | inpaint | invert | interpolate`: a trained model applied to images (the bodies are
`pixdiff.pipelines.edit`). Each holds a lock on its --out folder, as `sample` does."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer

from pixdiff.commands.options import (
    BIG,
    CfgOpt,
    ClassOpt,
    DeviceOpt,
    SeedOpt,
    SetOpt,
    SolverOpt,
    SourceArg,
    StepsOpt,
    finite,
    reported,
)

ImagesArg = Annotated[list[Path], typer.Argument(help="Image files (fitted to the model's resolution).")]


def run_edit(out: Path, source: str, set_: list[str] | None, device: str | None, settings: dict[str, Any],
             action: Callable[[Any], Any]) -> Any:
    """Open an edit session (the model, its recipe with the command's sampler settings) and run
    `action` on it under the --out lock, errors in one line."""
    from pixdiff.checkpoints.loader import load_model
    from pixdiff.pipelines.edit import open_session
    from pixdiff.runtime.distributed import pick_device
    from pixdiff.runtime.lock import folder_lock

    with reported(ValueError), folder_lock(out):  # ValueError: a solver refusing its grid, as in `sample`
        dev = pick_device(device)
        model, r, _ = load_model(source, overrides=set_ or [], device=dev)
        return action(open_session(model, r, device=dev, **settings))


def edit(
    source: SourceArg,
    images: ImagesArg,
    out: Annotated[Path, typer.Option(help="Output folder: input_/edit_NNNN.png, grid.png, meta.json.")],
    strength: Annotated[float, typer.Option(help="0 = the image itself, 1 = plain sampling with the same noise.",
                                            min=0.0, max=1.0, callback=finite)] = 0.6,
    class_: ClassOpt = None,
    from_class: Annotated[Optional[int], typer.Option(
        help="Class edit: invert with this class (deterministic, no new noise), regenerate with --class.",
        min=0, max=BIG)] = None,
    cfg: CfgOpt = None, steps: StepsOpt = None, solver: SolverOpt = None, seed: SeedOpt = 0,
    set_: SetOpt = None, device: DeviceOpt = None,
) -> None:
    """SDEdit (img2img): noise images part of the way to the prior and solve back, optionally to a new class."""
    from pixdiff.pipelines import edit as pipeline

    grid = run_edit(out, source, set_, device, dict(steps=steps, solver=solver, cfg_scale=cfg, seed=seed),
                    lambda s: pipeline.edit(s, images, out, strength=strength, cls=class_, from_class=from_class))
    typer.echo(f"wrote {len(images)} edits and {grid}")


def inpaint(
    source: SourceArg,
    image: Annotated[Path, typer.Argument(help="The image.")],
    mask: Annotated[Path, typer.Argument(help="Mask PNG of the image's size: white = regenerate, black = keep.")],
    out: Annotated[Path, typer.Option(help="Output folder: masked_/inpaint_NNNN.png, grid.png, meta.json.")],
    num: Annotated[int, typer.Option("--num", "-n", help="Number of inpaintings.", min=1, max=100_000)] = 4,
    class_: ClassOpt = None,
    cfg: CfgOpt = None,
    jumps: Annotated[int, typer.Option(help="RePaint resamplings at every --jump-length-th step.", min=0,
                                       max=1000)] = 0,
    jump_length: Annotated[int, typer.Option(help="RePaint: steps per jump back.", min=1, max=BIG)] = 5,
    steps: StepsOpt = None, solver: SolverOpt = None, seed: SeedOpt = 0,
    set_: SetOpt = None, device: DeviceOpt = None,
) -> None:
    """Regenerate the white part of a mask, keeping the other pixels exactly."""
    from pixdiff.pipelines import edit as pipeline

    grid = run_edit(out, source, set_, device, dict(steps=steps, solver=solver, cfg_scale=cfg, seed=seed),
                    lambda s: pipeline.inpaint(s, image, mask, out, cls=class_, num=num, jumps=jumps,
                                               jump_length=jump_length))
    typer.echo(f"wrote {num} inpaintings and {grid}")


def invert(
    source: SourceArg,
    images: ImagesArg,
    out: Annotated[Path, typer.Option(help="Output folder: noise.safetensors, roundtrip_NNNN.png, grid.png, "
                                           "meta.json.")],
    class_: ClassOpt = None,
    cfg: Annotated[float, typer.Option(help="Guidance scale of the ODE (1: none, the invertible default).",
                                       min=0.0, max=1e6, callback=finite)] = 1.0,
    first_step: Annotated[Literal["mirror", "solver"], typer.Option(
        help="'mirror' (velocity at the step's far end; needed for x-prediction) or 'solver'.")] = "mirror",
    clip_x0: Annotated[bool, typer.Option(
        help="Clamp the velocity's x0 to the data range [-1, 1], both ways (a trained model's inversion "
             "otherwise diverges).")] = True,
    steps: StepsOpt = None, solver: SolverOpt = None,
    set_: SetOpt = None, device: DeviceOpt = None,
) -> None:
    """Invert images to noise with the probability-flow ODE, map it back, and report the round-trip PSNR."""
    from pixdiff.pipelines import edit as pipeline

    info = run_edit(out, source, set_, device, dict(steps=steps, solver=solver, cfg_scale=cfg),
                    lambda s: pipeline.invert(s, images, out, cls=class_, first_step=first_step, clip_x0=clip_x0))
    typer.echo(f"round-trip PSNR {info['psnr_db_mean']:.2f} dB ({info['solver']}, {info['steps']} steps); "
               f"wrote {out / 'noise.safetensors'}")


def interpolate(
    source: SourceArg,
    out: Annotated[Path, typer.Option(help="Output folder: frame_NNNN.png, grid.png, meta.json.")],
    images: Annotated[Optional[list[Path]], typer.Argument(help="Two images to interpolate between "
                                                                "(through their inversions).")] = None,
    frames: Annotated[int, typer.Option(help="Frames, ends included.", min=2, max=10_000)] = 8,
    seeds: Annotated[tuple[int, int], typer.Option(help="Without images: the noises of image 0 of "
                                                        "`pixdiff sample --seed A` and `--seed B`.")] = (0, 1),
    class_: ClassOpt = None,
    cfg: CfgOpt = None, steps: StepsOpt = None, solver: SolverOpt = None,
    set_: SetOpt = None, device: DeviceOpt = None,
) -> None:
    """Spherical interpolation between two noises (or two inverted images), decoded as a strip of frames."""
    from pixdiff.pipelines import edit as pipeline

    grid = run_edit(out, source, set_, device, dict(steps=steps, solver=solver, cfg_scale=cfg),
                    lambda s: pipeline.interpolate(s, out, frames=frames, cls=class_, seeds=seeds,
                                                   images=images or None))
    typer.echo(f"wrote {frames} frames and {grid}")
