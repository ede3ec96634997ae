"""`pixdiff bench latency | throughput | data`: speed, measured as the paper measures it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Literal, Optional

import typer

from pixdiff.commands.options import (
    BIG,
    CfgOpt,
    DeviceOpt,
    JsonOpt,
    QuietOpt,
    RecipeArg,
    ReuseOpt,
    SetOpt,
    StepsOpt,
    fail,
    finite,
    load,
    not_empty,
    reported,
)

if TYPE_CHECKING:
    from pixdiff.recipe import Recipe

DtypeOpt = Annotated[Optional[Literal["bf16", "fp32"]], typer.Option(
    help="'bf16' or 'fp32' (default: bf16 on cuda, fp32 on cpu).")]
CompileOpt = Annotated[bool, typer.Option("--compile", help="torch.compile the model (compile time excluded).")]
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
CompileModeOpt = Annotated[Optional[CompileMode], typer.Option(help="torch.compile mode (default: reduce-overhead on "
                                                                    "cuda for latency, default otherwise).")]
PeakOpt = Annotated[Optional[float], typer.Option(help="Peak TFLOP/s for MFU (default: by GPU name).", min=1e-6,
                                                  callback=finite)]


def with_reuse(recipe: Recipe, reuse: str | None) -> Recipe:
    """The recipe with --reuse as its sample.reuse (checked against the steps when sampling starts)."""
    from pixdiff.recipe import with_sampler

    return with_sampler(recipe, reuse=reuse)


def report(result: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    from pixdiff.bench import print_result

    print_result(result)


def latency(
    recipe: RecipeArg,
    set_: SetOpt = None,
    steps: Annotated[int, typer.Option(help="Euler steps (the paper: 100).", min=1, max=BIG)] = 100,
    cfg: CfgOpt = None,
    reuse: ReuseOpt = None,
    batch: Annotated[int, typer.Option(help="Images per sampling call (the paper: 1).", min=1, max=BIG)] = 1,
    dtype: DtypeOpt = None,
    compile_: CompileOpt = False,
    compile_mode: CompileModeOpt = None,
    device: DeviceOpt = None,
    warmup: Annotated[int, typer.Option(help="Untimed calls first.", min=0, max=BIG)] = 2,
    repeats: Annotated[int, typer.Option(help="Timed calls; the median is reported.", min=1, max=BIG)] = 5,
    baseline: Annotated[bool, typer.Option(help="Also time the DiT-only counterpart.")] = True,
    peak_tflops: PeakOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Seconds to sample images with random weights, as the paper measures (1 image, 100 Euler
    steps, CFG), for the recipe and its DiT-only counterpart, with NFE, GFLOPs and peak memory."""
    from pixdiff.bench import latency
    from pixdiff.runtime.progress import progress

    with reported(ValueError), progress("bench latency", "calls", enabled=not quiet) as on_progress:
        result = latency(with_reuse(load(recipe, set_), reuse), steps=steps, cfg_scale=cfg, batch=batch,
                         dtype=dtype, compile=compile_, compile_mode=compile_mode, device=device, warmup=warmup,
                         repeats=repeats, baseline=baseline, peak_tflops=peak_tflops, on_progress=on_progress)
    report(result, as_json)


def throughput(
    recipe: RecipeArg,
    set_: SetOpt = None,
    mode: Annotated[Literal["sample", "train"], typer.Option(
        help="'sample' (whole sampling calls) or 'train' (optimizer steps).")] = "sample",
    batch: Annotated[int, typer.Option(help="Images per call or per training step.", min=1, max=BIG)] = 64,
    steps: StepsOpt = None,
    cfg: CfgOpt = None,
    reuse: ReuseOpt = None,
    dtype: DtypeOpt = None,
    compile_: CompileOpt = False,
    compile_mode: Annotated[CompileMode, typer.Option(help="torch.compile mode.")] = "default",
    device: DeviceOpt = None,
    warmup: Annotated[Optional[int], typer.Option(help="Untimed iterations (default 1 sample / 3 train).", min=0,
                                                  max=BIG)] = None,
    iters: Annotated[Optional[int], typer.Option(help="Timed iterations (default 3 sample / 10 train).", min=1,
                                                 max=BIG)] = None,
    peak_tflops: PeakOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Images per second for sampling or training, with achieved TFLOP/s and MFU against a stated peak."""
    from pixdiff.bench import throughput
    from pixdiff.runtime.progress import progress

    unit = "calls" if mode == "sample" else "steps"
    with reported(ValueError), progress("bench throughput", unit, enabled=not quiet) as on_progress:
        result = throughput(with_reuse(load(recipe, set_), reuse), mode=mode, batch=batch, steps=steps,
                            cfg_scale=cfg, dtype=dtype,
                            compile=compile_, compile_mode=compile_mode, device=device, warmup=warmup,
                            iters=iters, peak_tflops=peak_tflops, on_progress=on_progress)
    report(result, as_json)


def data_feed(
    recipe: RecipeArg,
    set_: SetOpt = None,
    num_workers: Annotated[Optional[int], typer.Option(help="Data worker threads (default: the recipe's).", min=0,
                                                       max=1024)] = None,
    batch: Annotated[int, typer.Option(help="Images per step (the global batch, one process).", min=1, max=BIG)] = 256,
    images: Annotated[int, typer.Option(help="Images in the synthetic cache.", min=1, max=BIG)] = 20_000,
    steps: Annotated[int, typer.Option(help="Timed steps.", min=1, max=BIG)] = 50,
    warmup: Annotated[int, typer.Option(help="Untimed steps first.", min=0, max=BIG)] = 5,
    resolution: Annotated[int, typer.Option(help="Image size of the synthetic cache.", min=1, max=65536)] = 256,
    prefetch: Annotated[int, typer.Option(help="Micro-batches built ahead per worker.", min=1, max=1024)] = 2,
    index_sizes: Annotated[str, typer.Option(help="Data set sizes at which to time the per-step index cost.",
                                             callback=not_empty)]
    = "20000,1281167",
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Images per second the data stream delivers to a training step (float images on the device)
    from a synthetic memory-mapped cache, and the per-step index cost at two data set sizes."""
    from pixdiff.bench import data_feed
    from pixdiff.runtime.progress import progress

    try:
        sizes = tuple(int(n) for n in index_sizes.split(","))
    except ValueError:
        fail(f"--index-sizes takes comma-separated integers, got {index_sizes!r}")
    with reported(ValueError), progress("bench data", "steps", enabled=not quiet) as on_progress:
        result = data_feed(load(recipe, set_), num_workers=num_workers, batch=batch, images=images, steps=steps,
                           warmup=warmup, resolution=resolution, prefetch=prefetch, index_sizes=sizes,
                           device=device, on_progress=on_progress)
    report(result, as_json)
