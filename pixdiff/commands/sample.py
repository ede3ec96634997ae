"""`pixdiff sample`: a trained model's sample set as an ADM-evaluator .npz and a PNG grid."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, Optional

import typer

from pixdiff.commands.options import (
    BIG,
    CfgOpt,
    DeviceOpt,
    LayoutOpt,
    QuietOpt,
    ReuseOpt,
    SeedOpt,
    SetOpt,
    SolverOpt,
    SourceArg,
    StepsOpt,
    fail,
    not_empty,
    reported,
)

if TYPE_CHECKING:
    from torch import nn


def sample(
    source: SourceArg,
    out: Annotated[Path, typer.Option(help="Output folder: samples.npz, grid.png, meta.json.")],
    num: Annotated[int, typer.Option("--num", "--num-images", "-n", min=1, max=BIG, help=(
        "Number of images. Under torchrun write --num-images or -n: torchrun's own parser rejects "
        "--num as an abbreviation of its --numa-binding."))] = 64,
    recipe: Annotated[Optional[str], typer.Option(
        help="Recipe of the model; needed for the authors' reference checkpoints.", callback=not_empty)] = None,
    layout: LayoutOpt = None,
    set_: SetOpt = None,
    cfg: CfgOpt = None,
    steps: StepsOpt = None,
    solver: SolverOpt = None,
    reuse: ReuseOpt = None,
    seed: SeedOpt = 0,
    labels: Annotated[Literal["balanced", "random"], typer.Option(
        help="'balanced' (num/classes per class) or 'random'.")] = "balanced",
    classes: Annotated[Optional[int], typer.Option(help="Draw labels from the first K classes only.", min=1,
                                                   max=BIG)] = None,
    class_: Annotated[Optional[list[int]], typer.Option(
        "--class", help="Draw only this class (repeatable: --class 3 --class 5).", min=0, max=BIG)] = None,
    png: Annotated[bool, typer.Option(help="Also write every image as images/NNNNNN_cK.png.")] = False,
    batch_size: Annotated[int, typer.Option(help="Images per forward batch (does not change the images).", min=1,
                                            max=BIG)] = 64,
    weights: Annotated[Literal["ema", "raw"], typer.Option(help="'ema' (default) or 'raw' weights.")] = "ema",
    ema: Annotated[Optional[float], typer.Option(
        help="Which EMA, by decay (one of the run's train.ema_decays; default: the first).", min=0.0, max=1.0)] = None,
    device: DeviceOpt = None,
    dtype: Annotated[Literal["fp32", "bf16"], typer.Option(
        help="'fp32' or 'bf16' (weights converted to bf16; autocast on CUDA).")] = "fp32",
    compile_: Annotated[bool, typer.Option(
        "--compile", help="torch.compile the network (the path bench latency times).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace the samples already in --out.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Sample images to an ADM-evaluator .npz and a PNG grid; under torchrun the ranks split the work."""
    from pixdiff.checkpoints.loader import load_model
    from pixdiff.pipelines.generate import SampleJob, write_samples
    from pixdiff.recipe import with_sampler
    from pixdiff.runtime.distributed import setup, teardown
    from pixdiff.runtime.lock import rank0_lock
    from pixdiff.runtime.progress import progress

    if not overwrite and any((out / name).exists() for name in ("samples.npz", "meta.json")):
        fail(f"{out} already holds samples (samples.npz, meta.json): choose another --out or pass --overwrite")
    npz = None
    with reported(ValueError):
        d = setup(device)
        try:
            with rank0_lock(out, d):  # one writer per --out
                model, r, file = load_model(source, recipe=recipe, overrides=set_ or [], layout=layout if recipe
                                            else None, weights=weights, ema=ema, device=d.device)
                r = with_sampler(r, steps=steps, solver=solver, cfg_scale=cfg, reuse=reuse)
                job = SampleJob(num=num, seed=seed, labels=labels, batch_size=batch_size, classes=tuple(class_ or ()))
                with progress("sample", "images", enabled=d.main and not quiet) as on_progress:  # rank 0's share
                    npz = write_samples(model, r, job, out, d, num_classes=classes, dtype=dtype, compile=compile_,
                                        meta={"checkpoint": str(file), "weights": weights, "ema": ema,
                                              **weights_digest(model)}, png=png,
                                        on_progress=on_progress)
        finally:
            teardown()
    if npz is not None:
        typer.echo(f"wrote {npz} ({num} images) and {out / 'grid.png'}")


def weights_digest(model: nn.Module) -> dict[str, str]:
    """The digest of the weights sampled (after the EMA choice) for the samples' protocol record:
    `pixdiff eval` copies it into its result, so a score names the exact weights behind it."""
    from pixdiff.checkpoints.digest import ALGORITHM, digest

    return {"weights_digest": digest(model.state_dict()), "digest_algorithm": ALGORITHM}
