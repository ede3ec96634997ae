"""What every command shares: the option types (each alias defined once), their parse-time checks,
and one way to report errors.

Every option is checked as it is parsed: types by their annotation, choices as Literal, ranges as
min/max (counts at most BIG: larger is a typo, and overflows int32 indexing), floats finite, devices
present. Errors are one line: bad input `error: ...` with exit 2, an OS refusal (disk full,
read-only, no permission) exit 1.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Literal, NoReturn, Optional

import typer

from pixdiff.checkpoints.names import LAYOUT_ORIGINS
from pixdiff.diffusion.names import SOLVER_NAMES

BIG = 2**31 - 1
SEED_MAX = 2**63 - 1


def finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def device_name(value: str | None) -> str | None:
    """'cpu', 'cuda' or 'cuda:N', and present on this machine (torch is imported only to check CUDA)."""
    if value is None:
        return value
    if not re.fullmatch(r"cpu|cuda(:\d+)?", value):
        raise typer.BadParameter(f"{value!r} is not 'cpu', 'cuda' or 'cuda:N'")
    if value != "cpu":
        from pixdiff.runtime.distributed import DeviceError, pick_device

        try:
            pick_device(value)
        except DeviceError as e:
            raise typer.BadParameter(str(e).removeprefix(f"--device {value}: ")) from None
    return value


def not_empty(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise typer.BadParameter("must not be empty")
    return value


def solver_name(value: str | None) -> str | None:
    if value is not None and value not in SOLVER_NAMES:
        raise typer.BadParameter(f"{value!r} is not a solver; choose one of {', '.join(SOLVER_NAMES)}")
    return value


def reuse_spec(value: str | None) -> str | None:
    """A readable schedule (`diffusion.reuse.parse_reuse`); its fit to the steps and solver is the
    recipe's check (`SampleConfig`), which runs before anything is drawn."""
    if value is not None:
        from pixdiff.diffusion.reuse import parse_reuse

        if not value.strip():
            raise typer.BadParameter("must name a schedule: off, every:K, steps:I,J,..., adaptive:T or first-block:T")
        try:
            parse_reuse(value)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
    return value


SOLVER_LIST = ", ".join(SOLVER_NAMES)
LayoutName = Literal[tuple(LAYOUT_ORIGINS)]  # type: ignore[valid-type]  # the table's names, as choices
LAYOUT_HELP = "; ".join(f"'{name}' ({origin})" for name, origin in LAYOUT_ORIGINS.items())

DeviceOpt = Annotated[Optional[str], typer.Option(
    help="'cpu', 'cuda' or 'cuda:N' (default: cuda when available).", callback=device_name)]
RecipeArg = Annotated[str, typer.Argument(
    callback=not_empty,
    help="Recipe: FILE.py[:function], a built-in name such as dip_xl16[:function], or plugin:NAME.")]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", help="Override a recipe field, e.g. --set train.lr=2e-4 (repeatable; type-checked).")]
SourceArg = Annotated[str, typer.Argument(callback=not_empty, help=(
    "A run folder (newest checkpoint), a checkpoint file, or hf-hub:ORG/REPO[@REVISION][:FILE] on the Hugging "
    "Face Hub (pip install 'pixdiff[hub]')."))]
ClassOpt = Annotated[Optional[int], typer.Option("--class", help="Target class (default: none, unconditional).",
                                                  min=0, max=BIG)]
StepsOpt = Annotated[Optional[int], typer.Option(help="Steps of the sampling grid (default: the recipe's).",
                                                 min=1, max=BIG)]
SolverOpt = Annotated[Optional[str], typer.Option(help=f"{SOLVER_LIST} (default: the recipe's).",
                                                  callback=solver_name)]
ReuseOpt = Annotated[Optional[str], typer.Option(help=(
    "Backbone reuse: off, every:K, steps:I,J,... (grid indices where the backbone is recomputed) or "
    "adaptive:T (recompute when the input's relative change reaches T) or first-block:T (when block 0's residual "
    "moved by T since the last recompute); default: the recipe's. See docs/speed.md."),
    callback=reuse_spec)]
CfgOpt = Annotated[Optional[float], typer.Option(help="Guidance scale (default: the recipe's).", min=0.0, max=1e6,
                                                 callback=finite)]
SeedOpt = Annotated[int, typer.Option(help="Image i's noise comes from the seed derived from (seed, i).",
                                      min=0, max=SEED_MAX)]
LayoutOpt = Annotated[Optional[LayoutName], typer.Option(
    help=f"The authors' layout (default: the one the file's keys say): {LAYOUT_HELP}.")]
CacheDirOpt = Annotated[Optional[Path], typer.Option(
    help="Where caches are kept (default: the cache home, $PIXDIFF_CACHE_DIR, $XDG_CACHE_HOME/pixdiff "
         "or ~/.cache/pixdiff).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print only the result as JSON.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress on stderr (stdout is unchanged).")]


def fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def os_failure(e: Exception) -> NoReturn:
    """The OS refused a read or write: one line naming the path and the cause, exit 1. Writes are
    atomic, so no half-written file remains."""
    from pixdiff.runtime.atomic import describe

    typer.secho(f"error: {describe(e) if isinstance(e, OSError) else e}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def user_errors() -> tuple[type[Exception], ...]:
    """pixdiff's own exceptions for bad input: reported in one line, never as a traceback."""
    from pixdiff.checkpoints.interop import InteropError
    from pixdiff.checkpoints.store import CheckpointError
    from pixdiff.config.plugins import PluginError
    from pixdiff.config.tree import DecodeError, OverrideError
    from pixdiff.data import DataError
    from pixdiff.pipelines.edit import EditError
    from pixdiff.pipelines.generate import OutputError
    from pixdiff.recipe import RecipeError
    from pixdiff.runtime.distributed import DeviceError
    from pixdiff.runtime.lock import FolderLocked
    from pixdiff.train.errors import TrainingError

    return (RecipeError, OverrideError, DecodeError, PluginError, CheckpointError, InteropError, FolderLocked,
            DataError, EditError, OutputError, TrainingError, DeviceError)


@contextmanager
def reported(*bad_input: type[Exception]) -> Iterator[None]:
    """Run a command's work with its errors as one line: pixdiff's own (and `bad_input`, e.g.
    ValueError where a library refuses a value) exit 2; the OS refusing a read or write exit 1."""
    from pixdiff.runtime.atomic import WriteFailed

    try:
        yield
    except (*user_errors(), *bad_input) as e:
        fail(str(e))
    except (WriteFailed, OSError) as e:
        os_failure(e)


def load(spec: str, overrides: list[str] | None):
    """A recipe spec with its --set overrides."""
    from pixdiff.recipe import load_recipe

    return load_recipe(spec, overrides or [])
