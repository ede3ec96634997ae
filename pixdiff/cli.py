"""The `pixdiff` command line. Commands import torch lazily so that `--help` stays instant."""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer
from typer.core import TyperGroup


class OneLineErrors(TyperGroup):
    """Every command's errors and warnings as one line each: a bad option value, a missing argument
    (Typer checks types, ranges and choices as it parses) -> `error: ...`, exit 2."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):  # noqa: ANN201 (click's signature)
        import warnings

        with warnings.catch_warnings():
            warnings.showwarning = lambda message, *_, **__: typer.secho(
                f"warning: {message}", fg=typer.colors.YELLOW, err=True)
            try:
                code = super().main(*args, standalone_mode=False, **kwargs)
            except typer.Abort:
                code = 1
            except typer.TyperException as e:  # click's UsageError / BadParameter
                if type(e).__name__ != "NoArgsIsHelpError":  # the help text was the answer
                    typer.secho(f"error: {' '.join(e.format_message().split())}", fg=typer.colors.RED, err=True)
                code = getattr(e, "exit_code", 2)
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, cls=OneLineErrors,
                  help="pixdiff: pixel-space diffusion (DiP, its ablations and JiT) from recipe files.")

# Every option is checked as it is parsed: types by their annotation, choices as Literal, ranges as
# min/max (counts at most BIG: larger is a typo, and overflows int32 indexing), floats finite.
BIG = 2**31 - 1
SEED_MAX = 2**63 - 1


def finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def device_name(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"cpu|cuda(:\d+)?", value):
        raise typer.BadParameter(f"{value!r} is not 'cpu', 'cuda' or 'cuda:N'")
    return value


def not_empty(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise typer.BadParameter("must not be empty")
    return value


DeviceOpt = Annotated[Optional[str], typer.Option(
    help="'cpu' or 'cuda' (default: cuda when available).", callback=device_name)]
RecipeArg = Annotated[str, typer.Argument(
    callback=not_empty,
    help="Recipe: FILE.py[:function], a built-in name such as dip_xl16[:function], or plugin:NAME.")]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", help="Override a recipe field, e.g. --set train.lr=2e-4 (repeatable; type-checked).")]


def fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def os_failure(e: Exception) -> None:
    """The OS refused a read or write (disk full, read-only, no permission, a file in the way): one
    line naming the path and the cause, exit 1. Writes are atomic, so no half-written file remains."""
    from pixdiff.runtime.atomic import describe

    typer.secho(f"error: {describe(e) if isinstance(e, OSError) else e}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def user_errors() -> tuple[type[Exception], ...]:
    """Exceptions that mean bad input: reported in one line, never as a traceback."""
    from pixdiff.checkpoints.dip import InteropError
    from pixdiff.checkpoints.store import CheckpointError
    from pixdiff.config.plugins import PluginError
    from pixdiff.config.tree import DecodeError, OverrideError
    from pixdiff.recipe import RecipeError
    from pixdiff.runtime.lock import FolderLocked

    return RecipeError, OverrideError, DecodeError, PluginError, CheckpointError, InteropError, FolderLocked


def load(spec: str, overrides: list[str] | None):
    from pixdiff.recipe import load_recipe

    return load_recipe(spec, overrides or [])


@app.command()
def info(recipe: RecipeArg, set_: SetOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Parameters, head size, tokens and GFLOPs per forward (batch 1) of a recipe's model.

    The model is built on the meta device: instant and memory-free even at 1.1B parameters."""
    try:
        from pixdiff.nn.summary import model_summary

        r = load(recipe, set_)
        summary = {"recipe": r.name, **model_summary(r.model)}
    except user_errors() as e:
        fail(str(e))
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{recipe} ({summary['recipe']})", show_header=False)
    rows = [
        ("parameters", f"{summary['params']:,}"), ("  backbone", f"{summary['params_backbone']:,}"),
        ("  head", f"{summary['params_head']:,} ({summary['head']}, {summary['placement']})"),
        ("resolution", f"{summary['resolution']} px"), ("patch size", str(summary["patch_size"])),
        ("tokens", str(summary["tokens"])), ("depth x width", f"{summary['depth']} x {summary['dim']}"),
        ("GFLOPs / forward (batch 1)", f"{summary['gflops']:.1f}"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    Console().print(table)


@app.command("ls")
def list_recipes() -> None:
    """List the built-in recipes (with their functions) and discovered plugins."""
    from pixdiff.config.plugins import discover
    from pixdiff.recipe import builtin_recipes, load_recipe_module, recipe_functions

    try:
        for path in builtin_recipes():
            fns = recipe_functions(load_recipe_module(path))
            typer.echo(f"{path.stem}: {', '.join(fns)}")
        plugins = discover()
    except user_errors() as e:
        fail(str(e))
    for kind, table in (("HEADS", plugins.heads), ("RECIPES", plugins.recipes)):
        for name in sorted(table):
            typer.echo(f"plugin {kind.lower()[:-1]} {name}  ({plugins.sources[f'{kind}:{name}']})")


@app.command()
def convert(
    src: Annotated[Path, typer.Argument(help="Checkpoint (or, to export, a run folder) to convert.")],
    dst: Annotated[Path, typer.Argument(help="Output file.")],
    recipe: Annotated[str, typer.Option(help="--to pixdiff: the recipe whose model the weights belong to.",
                                        callback=not_empty)] = "dip_xl16",
    set_: SetOpt = None,
    to: Annotated[Literal["pixdiff", "reference", "safetensors"], typer.Option(
        help="'pixdiff' (from the authors' layout), 'reference' (back to it) or 'safetensors' (a pixdiff "
             "checkpoint's EMA weights and recipe).")] = "pixdiff",
    weights: Annotated[Literal["ema", "raw"], typer.Option(
        help="DiP's layout: 'ema' or 'raw' weights. (A JiT checkpoint's model, model_ema1 and model_ema2 "
             "map to model, ema and ema_extra.)")] = "ema",
    layout: Annotated[Literal["dip", "jit", "pixeldit", "pixnerd", "deco"], typer.Option(help=(
        "The authors' layout: 'dip' (DiP's reference code), 'jit' (LTH14/JiT's main_jit.py checkpoints), "
        "'pixeldit' (NVlabs/PixelDiT's c2i Lightning checkpoints), 'pixnerd' or 'deco' (the Lightning "
        "checkpoints of MCG-NJU/PixNerd or Zehong-Ma/DeCo).")
    )] = "dip",
) -> None:
    """Convert between the authors' reference checkpoints and pixdiff checkpoints, strictly, or export
    a pixdiff checkpoint as safetensors (which `pixdiff sample` reads)."""
    import torch

    from pixdiff.checkpoints import deco, jit, pixeldit, pixnerd
    from pixdiff.checkpoints import store as checkpoint
    from pixdiff.checkpoints.dip import to_reference
    from pixdiff.config.tree import to_dict
    from pixdiff.generate import load_model
    from pixdiff.runtime.atomic import atomic_write

    official = {"jit": jit, "pixeldit": pixeldit, "pixnerd": pixnerd, "deco": deco}  # layouts with key maps
    if to == "safetensors" and weights != "ema":
        fail("--to safetensors exports the EMA weights only (--weights ema)")
    try:  # everything is checked strictly before anything is written
        if layout in official and to == "pixdiff":
            family = official[layout]
            checkpoint.save(family.pixdiff_checkpoint(family.read_official(src), load(recipe, set_)), dst)
        elif layout in official and to == "reference":
            ckpt = checkpoint.load(checkpoint.resolve(src))
            state = official[layout].official_checkpoint(ckpt, checkpoint.recipe_of(ckpt, src))
            with atomic_write(dst) as f:
                torch.save(state, f)
        else:
            model, r, _ = load_model(src, recipe=recipe if to == "pixdiff" else None, overrides=set_ or [],
                                     weights=weights)
            sd = model.state_dict()
            if to == "pixdiff":
                checkpoint.save({"recipe": to_dict(r), "model": sd, "ema": sd}, dst)
            elif to == "reference":
                state = to_reference(sd)
                with atomic_write(dst) as f:
                    torch.save(state, f)
            else:
                checkpoint.save_safetensors(sd, r, dst)
    except user_errors() as e:
        fail(str(e))
    except OSError as e:
        os_failure(e)
    typer.echo(f"wrote {dst}")


@app.command()
def train(
    recipe: RecipeArg,
    set_: SetOpt = None,
    out: Annotated[Optional[Path], typer.Option(help="Run folder (default: runs/<recipe name>).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the run folder's newest checkpoint.")] = False,
    device: DeviceOpt = None,
    progress: Annotated[bool, typer.Option(help=(
        "Show the live progress bar on a terminal (--no-progress, or no terminal: one plain line per log row)."))]
    = True,
    init_from: Annotated[Optional[Path], typer.Option(help=(
        "Fine-tune: start from this checkpoint's (or run folder's) EMA weights, the label table fitted to "
        "model.backbone.num_classes; ignored by --resume, which continues from the run's own checkpoint."))] = None,
    keep_class_rows: Annotated[bool, typer.Option(help=(
        "With --init-from: classes 0..K-1 that both models have keep their label rows (else all start fresh)."))]
    = True,
) -> None:
    """Train a recipe; under `torchrun --nproc_per_node=N` the same command runs data-parallel."""
    from pixdiff.data import DataError
    from pixdiff.runtime.atomic import WriteFailed
    from pixdiff.train import TrainingError
    from pixdiff.train import train as run_training
    from pixdiff.train.resume import resume_recipe

    try:
        if resume:  # the run's own recipe.json, changed only by --set
            r, out = resume_recipe(recipe, set_ or [], out)
        else:
            r = load(recipe, set_)
        result = run_training(r, out or Path("runs") / r.name, resume=resume, device=device, progress=progress,
                              init_from=init_from, keep_classes=keep_class_rows)
    except (*user_errors(), DataError, TrainingError) as e:
        fail(str(e))
    except (WriteFailed, OSError) as e:
        os_failure(e)
    if not result.main:
        raise typer.Exit(result.exit_code)
    typer.echo(result.summary())
    if result.stopped_by:
        typer.echo(result.stop_line())
        raise typer.Exit(result.exit_code)
    typer.echo(f"checkpoint: {result.checkpoint}")
    if result.sample_grid:
        typer.echo(f"samples: {result.sample_grid}")


@app.command("sample")
def sample_cmd(
    source: Annotated[Path, typer.Argument(help="A run folder (newest checkpoint) or a checkpoint file.")],
    out: Annotated[Path, typer.Option(help="Output folder: samples.npz, grid.png, meta.json.")],
    num: Annotated[int, typer.Option("--num", "--num-images", "-n", min=1, max=BIG, help=(
        "Number of images. Under torchrun write --num-images or -n: torchrun's own parser rejects "
        "--num as an abbreviation of its --numa-binding."))] = 64,
    recipe: Annotated[Optional[str], typer.Option(
        help="Recipe of the model; needed for the authors' reference checkpoints.", callback=not_empty)] = None,
    set_: SetOpt = None,
    cfg: Annotated[Optional[float], typer.Option(help="Guidance scale (default: the recipe's).", min=0.0,
                                                 callback=finite)] = None,
    steps: Annotated[Optional[int], typer.Option(help="Solver steps (default: the recipe's).", min=1, max=BIG)] = None,
    solver: Annotated[Optional[str], typer.Option(
        help="euler, heun, ab2, ddim, ddpm_ancestral, euler_maruyama or odeint (default: the recipe's).",
        callback=not_empty)] = None,
    seed: Annotated[int, typer.Option(help="Image i uses a seed derived from (seed, i).", min=0, max=SEED_MAX)] = 0,
    labels: Annotated[Literal["balanced", "random"], typer.Option(
        help="'balanced' (num/classes per class) or 'random'.")] = "balanced",
    classes: Annotated[Optional[int], typer.Option(help="Draw labels from the first K classes only.", min=1,
                                                   max=BIG)] = None,
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
) -> None:
    """Sample images to an ADM-evaluator .npz and a PNG grid; under torchrun the ranks split the work."""
    from pixdiff.generate import SampleJob, generate, load_model
    from pixdiff.recipe import with_sampler
    from pixdiff.runtime.distributed import setup, teardown
    from pixdiff.runtime.lock import rank0_lock

    d = setup(device)
    try:
        with rank0_lock(out, d):  # one writer per --out
            model, r, file = load_model(source, recipe=recipe, overrides=set_ or [], weights=weights, ema=ema,
                                        device=d.device)
            r = with_sampler(r, steps=steps, solver=solver, cfg_scale=cfg)
            job = SampleJob(num=num, seed=seed, labels=labels, batch_size=batch_size)
            npz = generate(model, r, job, out, d, num_classes=classes, dtype=dtype, compile=compile_,
                           meta={"checkpoint": str(file), "weights": weights, "ema": ema})
    except (*user_errors(), ValueError) as e:
        fail(str(e))
    except OSError as e:
        os_failure(e)
    finally:
        teardown()
    if npz is not None:
        typer.echo(f"wrote {npz} ({num} images) and {out / 'grid.png'}")


SourceArg = Annotated[Path, typer.Argument(help="A run folder (newest checkpoint) or a checkpoint file.")]
ClassOpt = Annotated[Optional[int], typer.Option("--class", help="Target class (default: none, unconditional).",
                                                  min=0, max=BIG)]
StepsOpt = Annotated[Optional[int], typer.Option(help="Steps of the full sampling grid (default: the recipe's).",
                                                 min=1, max=BIG)]
SolverOpt = Annotated[Optional[str], typer.Option(help="A solver name (default: the recipe's).", callback=not_empty)]
CfgOpt = Annotated[Optional[float], typer.Option(help="Guidance scale (default: the recipe's).", min=0.0, max=1e6,
                                                 callback=finite)]
SeedOpt = Annotated[int, typer.Option(help="Image i's noise comes from (seed, i).", min=0, max=SEED_MAX)]


def edit_job(source: Path, set_: list[str] | None, steps: int | None, solver: str | None, cfg: float | None,
             seed: int, device: str | None):
    """The model and sampler settings of an edit command (see pixdiff/edit.py)."""
    import torch

    from pixdiff.edit import open_job
    from pixdiff.generate import load_model

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, r, _ = load_model(source, overrides=set_ or [], device=dev)
    return open_job(model, r, steps=steps, solver=solver, cfg_scale=cfg, seed=seed, device=dev)


def edit_errors() -> tuple[type[Exception], ...]:
    from pixdiff.edit import EditError

    return (*user_errors(), EditError, ValueError)  # ValueError: a solver refusing its grid, as in `sample`


def run_edit(out: Path, action: Callable[[], Any]) -> Any:
    """An edit command's work under its --out lock (one writer per folder, as for `sample`), with
    bad input and OS errors reported in one line."""
    from pixdiff.runtime.lock import folder_lock

    try:
        with folder_lock(out):
            return action()
    except edit_errors() as e:
        fail(str(e))
    except OSError as e:
        os_failure(e)


@app.command("edit")
def edit_cmd(
    source: SourceArg,
    images: Annotated[list[Path], typer.Argument(help="Image files (fitted to the model's resolution).")],
    out: Annotated[Path, typer.Option(help="Output folder: input_/edit_NNNN.png, grid.png, meta.json.")],
    strength: Annotated[float, typer.Option(help="0 = the image itself, 1 = plain sampling with the same noise.",
                                            min=0.0, max=1.0, callback=finite)] = 0.6,
    class_: ClassOpt = None,
    from_class: Annotated[Optional[int], typer.Option(
        help="Class edit: invert with this class (deterministic, no new noise), regenerate with --class.",
        min=0, max=BIG)] = None,
    cfg: CfgOpt = None,
    steps: StepsOpt = None, solver: SolverOpt = None,
    seed: SeedOpt = 0,
    set_: SetOpt = None, device: DeviceOpt = None,
) -> None:
    """SDEdit (img2img): noise images part of the way to the prior and solve back, optionally to a new class."""
    from pixdiff.edit import edit

    grid = run_edit(out, lambda: edit(edit_job(source, set_, steps, solver, cfg, seed, device), images, out,
                                      strength=strength, cls=class_, from_class=from_class))
    typer.echo(f"wrote {len(images)} edits and {grid}")


@app.command("inpaint")
def inpaint_cmd(
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
    steps: StepsOpt = None, solver: SolverOpt = None,
    seed: SeedOpt = 0,
    set_: SetOpt = None, device: DeviceOpt = None,
) -> None:
    """Regenerate the white part of a mask, keeping the other pixels exactly."""
    from pixdiff.edit import inpaint

    grid = run_edit(out, lambda: inpaint(edit_job(source, set_, steps, solver, cfg, seed, device), image, mask,
                                         out, cls=class_, num=num, jumps=jumps, jump_length=jump_length))
    typer.echo(f"wrote {num} inpaintings and {grid}")


@app.command("invert")
def invert_cmd(
    source: SourceArg,
    images: Annotated[list[Path], typer.Argument(help="Image files (fitted to the model's resolution).")],
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
    from pixdiff.edit import invert

    info = run_edit(out, lambda: invert(edit_job(source, set_, steps, solver, cfg, 0, device), images, out,
                                        cls=class_, first_step=first_step, clip_x0=clip_x0))
    typer.echo(f"round-trip PSNR {info['psnr_db_mean']:.2f} dB ({info['solver']}, {info['steps']} steps); "
               f"wrote {out / 'noise.safetensors'}")


@app.command("interpolate")
def interpolate_cmd(
    source: SourceArg,
    out: Annotated[Path, typer.Option(help="Output folder: frame_NNNN.png, grid.png, meta.json.")],
    images: Annotated[Optional[list[Path]], typer.Argument(help="Two images to interpolate between "
                                                                "(through their inversions).")] = None,
    frames: Annotated[int, typer.Option(help="Frames, ends included.", min=2, max=10_000)] = 8,
    seeds: Annotated[tuple[int, int], typer.Option(help="Without images: the noises of image 0 of "
                                                        "`pixdiff sample --seed A` and `--seed B`.")] = (0, 1),
    class_: ClassOpt = None,
    cfg: CfgOpt = None,
    steps: StepsOpt = None, solver: SolverOpt = None,
    set_: SetOpt = None, device: DeviceOpt = None,
) -> None:
    """Spherical interpolation between two noises (or two inverted images), decoded as a strip of frames."""
    from pixdiff.edit import interpolate

    grid = run_edit(out, lambda: interpolate(edit_job(source, set_, steps, solver, cfg, 0, device), out,
                                             frames=frames, cls=class_, seeds=seeds, images=images or None))
    typer.echo(f"wrote {frames} frames and {grid}")


@app.command("eval")
def eval_cmd(
    samples: Annotated[Path, typer.Argument(help="Samples: an .npz (arr_0 uint8 NHWC) or an image folder.")],
    ref: Annotated[str, typer.Option(
        callback=not_empty,
        help="Reference: an .npz, an image folder, a cached statistics file, or training data decoded as "
             "training decodes it, at the samples' resolution: 'emoji' (built in) or 'data:FOLDER'.")],
    features: Annotated[str, typer.Option(callback=not_empty, help=(
        "'effnet' (offline default, reported as FD-EffNet) or 'inception:PATH' to a TorchScript "
        "inception-2015-12-05.pt (reported as FID)."))] = "effnet",
    batch_size: Annotated[int, typer.Option(help="Feature-extraction batch size.", min=1, max=BIG)] = 64,
    cache_dir: Annotated[Optional[Path], typer.Option(
        help="Where training-data caches are kept (for --ref emoji; default: the cache home).")] = None,
    device: DeviceOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """FID-style Frechet distance, KID, IS and precision/recall of a sample set against a reference."""
    import warnings

    import torch

    from pixdiff.data import DataError
    from pixdiff.eval.metrics import SampleSizeWarning, evaluate

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SampleSizeWarning)
            result = evaluate(samples, resolve_reference(ref, samples, cache_dir), features=features,
                              batch_size=batch_size, device=dev)
    except (FileNotFoundError, ValueError, DataError) as e:
        fail(str(e))
    except OSError as e:
        os_failure(e)
    for w in caught:
        if issubclass(w.category, SampleSizeWarning):
            typer.secho(f"warning: {w.message}", fg=typer.colors.YELLOW, err=True)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    for k, v in result.items():
        typer.echo(f"{k:>24}: {v:.4f}" if isinstance(v, float) else f"{k:>24}: {v}")


@app.command("eval-sanity")
def eval_sanity(
    data: Annotated[str, typer.Argument(help="Training data, as for `data prepare`: 'openmoji', 'emoji', a folder.",
                                        callback=not_empty)],
    resolution: Annotated[int, typer.Option(help="Image size in pixels (square), as in training.", min=1, max=65536)],
    n: Annotated[int, typer.Option("--n", help="Images per side: two disjoint random sets of N per split.",
                                   min=2, max=10_000_000)],
    patch: Annotated[int, typer.Option(help="Patch size P for the in-patch detail ratio and the seam score.",
                                       min=1, max=65536)] = 8,
    repeats: Annotated[int, typer.Option(help="Random splits; rows show mean [min, max] over them.",
                                         min=1, max=1000)] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the splits and the noise.", min=0, max=2**63 - 1)] = 0,
    blur: Annotated[float, typer.Option(help="Gaussian blur sigma in pixels.", min=0.0, max=1e3,
                                        callback=finite)] = 1.0,
    noise: Annotated[float, typer.Option(help="Gaussian noise std, as a fraction of the 0..255 range.", min=0.0,
                                         max=1e3, callback=finite)] = 0.1,
    seams: Annotated[float, typer.Option(help="Per-patch offset std, as a fraction of the range.", min=0.0, max=1e3,
                                         callback=finite)] = 0.05,
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N images of each class.", min=1,
                                                 max=10_000_000)] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(
        help="Where caches are kept (default: the cache home).")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Sanity rows of the pixel metrics: data vs data (halves), vs blurred, noised and seamed data."""
    from pixdiff.data import DataError, prepare
    from pixdiff.eval.sanity import Degradations, format_table, sanity

    try:
        degradations = Degradations(blur, noise, seams)
        cache = prepare(data, cache_dir, resolution, limit=limit)
        images = cache.images.numpy().transpose(0, 2, 3, 1)  # (M, H, W, 3)
        results = sanity(images, cache.labels.numpy(), n, patch, repeats=repeats, seed=seed,
                         degradations=degradations)
    except (DataError, ValueError) as e:
        fail(str(e))
    if as_json:
        typer.echo(json.dumps([{"metric": r.metric, "better": r.better, "scores": r.scores, "detects":
                                [row for row in r.scores if row != "halves" and r.detects(row)], "passes": r.passes}
                               for r in results], indent=2))
        return
    typer.echo(f"{cache.info.source}, {resolution} px, N = {n} per side, P = {patch}, {repeats} splits; chance of "
               f"the balanced layout accuracy 1/{cache.info.num_classes} = {1 / cache.info.num_classes:.3f}")
    typer.echo(format_table(results))


def resolve_reference(ref: str, samples: Path, cache_dir: Path | None) -> Path:
    """A reference spec -> a file or folder `evaluate` reads. Training data ('emoji', 'data:SOURCE')
    becomes the data set's reference export at the samples' resolution; anything else is a path."""
    if ref != "emoji" and not ref.startswith("data:"):
        return Path(ref)
    from pixdiff.data.npz import open_images
    from pixdiff.data.reference import reference_file

    height, width, _ = open_images(samples).shape
    if height != width:
        raise ValueError(f"{samples}: samples are {height}x{width}; training data are square")
    return reference_file(ref.removeprefix("data:"), height, cache_dir=cache_dir)


bench_app = typer.Typer(no_args_is_help=True, help="Speed: sampling latency, sampling/training throughput, data feed.")
app.add_typer(bench_app, name="bench")
DtypeOpt = Annotated[Optional[Literal["bf16", "fp32"]], typer.Option(
    help="'bf16' or 'fp32' (default: bf16 on cuda, fp32 on cpu).")]
CompileOpt = Annotated[bool, typer.Option("--compile", help="torch.compile the model (compile time excluded).")]
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
CompileModeOpt = Annotated[Optional[CompileMode], typer.Option(help="torch.compile mode (default: reduce-overhead on "
                                                            "cuda for latency, default otherwise).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print only the result as JSON.")]
PeakOpt = Annotated[Optional[float], typer.Option(help="Peak TFLOP/s for MFU (default: by GPU name).", min=1e-6,
                                                 callback=finite)]
CfgOpt = Annotated[Optional[float], typer.Option(help="Guidance scale (default: the recipe's).", min=0.0,
                                                 callback=finite)]
StepsOpt = Annotated[Optional[int], typer.Option(help="Sampling steps (default: the recipe's).", min=1, max=BIG)]


def report(result: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    from pixdiff.bench import print_result

    print_result(result)


@bench_app.command("latency")
def bench_latency(
    recipe: RecipeArg,
    set_: SetOpt = None,
    steps: Annotated[int, typer.Option(help="Euler steps (the paper: 100).", min=1, max=BIG)] = 100,
    cfg: CfgOpt = None,
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
) -> None:
    """Seconds to sample images with random weights, as the paper measures (1 image, 100 Euler
    steps, CFG), for the recipe and its DiT-only counterpart, with NFE, GFLOPs and peak memory."""
    from pixdiff.bench import latency

    try:
        result = latency(load(recipe, set_), steps=steps, cfg_scale=cfg, batch=batch, dtype=dtype,
                         compile=compile_, compile_mode=compile_mode, device=device, warmup=warmup,
                         repeats=repeats, baseline=baseline, peak_tflops=peak_tflops)
    except (*user_errors(), ValueError) as e:
        fail(str(e))
    report(result, as_json)


@bench_app.command("throughput")
def bench_throughput(
    recipe: RecipeArg,
    set_: SetOpt = None,
    mode: Annotated[Literal["sample", "train"], typer.Option(
        help="'sample' (whole sampling calls) or 'train' (optimizer steps).")] = "sample",
    batch: Annotated[int, typer.Option(help="Images per call or per training step.", min=1, max=BIG)] = 64,
    steps: StepsOpt = None,
    cfg: CfgOpt = None,
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
) -> None:
    """Images per second for sampling or training, with achieved TFLOP/s and MFU against a stated peak."""
    from pixdiff.bench import throughput

    try:
        result = throughput(load(recipe, set_), mode=mode, batch=batch, steps=steps, cfg_scale=cfg, dtype=dtype,
                            compile=compile_, compile_mode=compile_mode, device=device, warmup=warmup,
                            iters=iters, peak_tflops=peak_tflops)
    except (*user_errors(), ValueError) as e:
        fail(str(e))
    report(result, as_json)


@bench_app.command("data")
def bench_data(
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
) -> None:
    """Images per second the data stream delivers to a training step (float images on the device)
    from a synthetic memory-mapped cache, and the per-step index cost at two data set sizes."""
    from pixdiff.bench import data_feed

    try:
        sizes = tuple(int(n) for n in index_sizes.split(","))
    except ValueError:
        fail(f"--index-sizes takes comma-separated integers, got {index_sizes!r}")
    try:
        result = data_feed(load(recipe, set_), num_workers=num_workers, batch=batch, images=images, steps=steps,
                           warmup=warmup, resolution=resolution, prefetch=prefetch, index_sizes=sizes,
                           device=device)
    except (*user_errors(), ValueError) as e:
        fail(str(e))
    report(result, as_json)


data_app = typer.Typer(no_args_is_help=True,
                       help="Training data: build the preprocessed cache, or export it as a reference batch.")
app.add_typer(data_app, name="data")


@data_app.command("prepare")
def data_prepare(
    source: Annotated[str, typer.Argument(
        help="Built in: 'emoji' (Twemoji), 'openmoji' (OpenMoji SVGs by Unicode group) or 'openmoji:subgroup'; "
             "or an image folder with one sub-folder per class.", callback=not_empty)],
    resolution: Annotated[int, typer.Option(help="Image size in pixels (square).", min=1, max=65536)],
    cache_dir: Annotated[Optional[Path], typer.Option(
        help="Where caches are kept (default: the cache home, $PIXDIFF_CACHE_DIR, $XDG_CACHE_HOME/pixdiff "
             "or ~/.cache/pixdiff).")] = None,
    on_error: Annotated[Literal["skip", "stop"], typer.Option(
        help="Unreadable files: 'skip' (and list them) or 'stop'.")] = "skip",
    small: Annotated[Literal["upscale", "reject"], typer.Option(
        help="Images smaller than the resolution: 'upscale' or 'reject'.")] = "upscale",
    rebuild: Annotated[bool, typer.Option(help="Rebuild even if a cache exists.")] = False,
    workers: Annotated[Optional[int], typer.Option(help="Decoding threads (default: one per CPU core).", min=1,
                                                   max=1024)] = None,
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N images of each class.", min=1,
                                                 max=10_000_000)] = None,
) -> None:
    """Decode images once into a memory-mapped uint8 cache (training never decodes JPEGs)."""
    from pixdiff.data import DataError, prepare

    try:
        cache = prepare(source, cache_dir, resolution, on_error=on_error, small=small, rebuild=rebuild,
                        workers=workers, limit=limit)
    except (DataError, ValueError) as e:  # ValueError: a bad resolution, limit or policy
        fail(str(e))
    except OSError as e:
        os_failure(e)
    typer.echo(cache.info.summary())


@data_app.command("export")
def data_export(
    source: Annotated[str, typer.Argument(help="'emoji', 'openmoji' (built in) or an image folder with one "
                                               "sub-folder per class.", callback=not_empty)],
    out: Annotated[Path, typer.Argument(help="Output .npz in the ADM-evaluator layout (arr_0 uint8 NHWC, labels).")],
    resolution: Annotated[int, typer.Option(help="Image size in pixels (square), as in training.", min=1,
                                            max=65536)],
    part: Annotated[Optional[str], typer.Option(
        callback=not_empty,
        help="Keep part K of M ('K/M'): cache indices i with i % M == K; parts are disjoint.")] = None,
    per_class: Annotated[Optional[int], typer.Option(help="Use only the first N images of each class.", min=1,
                                                     max=BIG)] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(
        help="Where caches are kept (default: the cache home, $PIXDIFF_CACHE_DIR, $XDG_CACHE_HOME/pixdiff "
             "or ~/.cache/pixdiff).")] = None,
) -> None:
    """Write training data, decoded exactly as training decodes it, as a reference batch for `pixdiff eval`."""
    from pixdiff.data import DataError
    from pixdiff.data.reference import export, parse_part

    try:
        path = export(source, out, resolution, cache_dir=cache_dir, part=parse_part(part), per_class=per_class)
    except (DataError, ValueError) as e:
        fail(str(e))
    except OSError as e:
        os_failure(e)
    typer.echo(f"wrote {path}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
