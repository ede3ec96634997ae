"""Recipes: Python files whose functions return a `Recipe` (a tree of frozen dataclasses).

`recipes/dip_xl16.py` defines `build()`; ablations are sibling functions that call `build()` and
`dataclasses.replace` one field, selected as `recipes/dip_xl16.py:dit_only`. A spec is one of
    path/to/file.py[:function]        a recipe file (function defaults to `build`)
    name[:function]                   a built-in recipe, recipes/<name>.py
    plugin:name                       a recipe registered by a plugin (see pixdiff.config.plugins)
    runs/x or runs/x/recipe.json      a run's stored recipe (decoded into known config classes only:
                                      nothing in it is executed)
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pixdiff.config.bundled import bundled_dir
from pixdiff.config.pyfile import import_file
from pixdiff.config.tree import DecodeError, apply_overrides, from_dict
from pixdiff.config.validate import ConfigError, check_fields, positive, require
from pixdiff.data.openmoji import LABELS as OPENMOJI_LABELS
from pixdiff.diffusion.objectives import FlowMatching, MeanFlow, Objective
from pixdiff.diffusion.reuse import Reuse, parse_reuse, reuse_problem
from pixdiff.diffusion.solvers import SOLVERS
from pixdiff.nn.model import ModelConfig

RECIPES_DIR = bundled_dir("recipes")


class RecipeError(ValueError):
    pass


@dataclass(frozen=True)
class RepaConfig:
    """REPA: align an MLP projection of one block's tokens with a frozen encoder's patch tokens."""

    encoder: str  # a TorchScript file or `module:attr` of a factory returning an nn.Module
    weight: float = 0.5
    block: int = 7  # 0-based index: the 8th block's output
    proj_dim: int = 768  # the encoder's token width

    def __post_init__(self) -> None:
        require(self, "encoder", isinstance(self.encoder, str) and bool(self.encoder),
                "REPA needs an encoder: set train.repa.encoder=FILE.pt or module:factory first")
        check_fields(self)
        require(self, "weight", self.weight >= 0, "must be >= 0")
        require(self, "block", self.block >= 0, "must be >= 0 (a 0-based block index)")
        positive(self, "proj_dim")


@dataclass(frozen=True)
class TrainConfig:
    global_batch: int = 256
    max_steps: int = 3_000_000  # about 600 epochs of ImageNet-1k at batch 256
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-3
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"  # after warm-up (see train.schedule)
    min_lr: float = 0.0  # where "cosine" and "linear" end, at max_steps
    warmup_steps: int = 0
    grad_clip: float = 0.0  # max gradient norm; 0 disables clipping
    grad_accum: int = 1
    ema_decays: tuple[float, ...] = (0.9999,)  # checkpoints: "ema" = the first (sampling's default), "ema_extra"
    precision: Literal["bf16", "fp32"] = "bf16"  # autocast dtype on CUDA; CPU always runs fp32
    compile: bool = False
    parallel: Literal["ddp", "fsdp"] = "ddp"
    seed: int = 0
    num_workers: int = 4
    log_every: int = 100
    ckpt_every: int = 5000
    sample_every: int = 10000  # 0 disables sample grids during training
    # FD and KID of eval_num samples of the first EMA against eval_ref ('emoji', 'data:SOURCE' or a
    # file, as `pixdiff eval --ref`) in the metrics rows (eval/fd, eval/kid); 0 disables them
    eval_every: int = 0
    eval_num: int = 256
    eval_ref: str = ""
    eval_features: str = "effnet"  # as `pixdiff eval --features`
    repa: RepaConfig | None = None
    tensorboard: bool = False  # also write metrics and sample grids as TensorBoard events under <run>/tensorboard
    wandb: bool = False  # also log them to Weights & Biases (pixdiff[wandb]; WANDB_MODE=offline works offline)
    wandb_project: str = "pixdiff"

    def __post_init__(self) -> None:
        require(self, "precision", self.precision != "fp16",
                "fp16 needs loss scaling (a GradScaler), which pixdiff does not do; use bf16 or fp32")
        check_fields(self)
        positive(self, "global_batch", "max_steps", "lr", "grad_accum", "log_every", "ckpt_every")
        require(self, "global_batch", self.global_batch % self.grad_accum == 0,
                f"must be divisible by train.grad_accum={self.grad_accum}")
        require(self, "betas", all(0 <= b < 1 for b in self.betas), "each beta must be in [0, 1)")
        for name in ("weight_decay", "warmup_steps", "grad_clip", "seed", "num_workers", "sample_every", "eval_every"):
            require(self, name, getattr(self, name) >= 0, "must be >= 0")
        require(self, "eval_every", self.eval_every % self.log_every == 0,
                f"must be a multiple of train.log_every={self.log_every} (the scores go into its rows)")
        require(self, "eval_num", self.eval_num >= 4, "must be >= 4 (KID needs more than 3 samples)")
        require(self, "eval_ref", not self.eval_every or bool(self.eval_ref.strip()),
                "train.eval_every needs a reference: 'emoji', 'data:SOURCE' or a file")
        require(self, "eval_features", bool(self.eval_features.strip()), "must be 'effnet' or 'inception:PATH'")
        require(self, "ema_decays", len(self.ema_decays) >= 1 and all(0 <= d < 1 for d in self.ema_decays),
                "must be one or more decays in [0, 1)")
        require(self, "ema_decays", len(set(self.ema_decays)) == len(self.ema_decays), "has a decay twice")
        require(self, "min_lr", 0 <= self.min_lr <= self.lr, f"must be in [0, train.lr={self.lr}]")


@dataclass(frozen=True)
class DataConfig:
    source: str = "emoji"  # built in: "emoji"[:picked], "openmoji"[:subgroup]; or an image folder, one sub-folder per class
    cache_dir: str | None = None  # None: the cache home ($PIXDIFF_CACHE_DIR, $XDG_CACHE_HOME/pixdiff, ~/.cache/pixdiff)
    flip: bool = True
    on_error: Literal["skip", "stop"] = "skip"
    small: Literal["upscale", "reject"] = "upscale"
    balance_classes: bool = False  # draw every class equally often (see train.epoch_order)
    # K >= 2: every K-th image (index % K == 0, ~1/K of each class) is never trained on, for
    # `pixdiff eval-readout --held-out`; 0: train on all
    holdout: int = 0

    def __post_init__(self) -> None:
        check_fields(self)
        require(self, "source", bool(self.source), "must name 'emoji', 'openmoji' or an image folder")
        name, colon, labels = self.source.partition(":")
        require(self, "source", name != "openmoji" or not colon or labels in OPENMOJI_LABELS,
                f"openmoji labels are {', '.join(OPENMOJI_LABELS)} (e.g. openmoji:subgroup)")
        require(self, "holdout", self.holdout == 0 or self.holdout >= 2, "must be 0 (none) or K >= 2 (every K-th image)")
        require(self, "cache_dir", self.cache_dir is None or bool(self.cache_dir.strip()),
                "must name a folder (or none: the cache home)")


@dataclass(frozen=True)
class SampleConfig:
    steps: int = 100
    solver: str = "euler"
    cfg_scale: float = 4.0
    cfg_interval: tuple[float, float] = (0.1, 1.0)
    time_shift: float = 1.0
    grid_images: int = 16
    last_step: float = 0.0  # length of the final step into t = 1; 0: 1/steps (see solvers.uniform_grid)
    reuse: str = "off"  # backbone reuse schedule: off, every:K, steps:I,J,..., adaptive:T, first-block:T (see diffusion.reuse)

    def __post_init__(self) -> None:
        check_fields(self)
        positive(self, "steps", "time_shift")
        require(self, "solver", self.solver in SOLVERS, f"unknown solver; choose one of {', '.join(SOLVERS)}")
        require(self, "cfg_scale", self.cfg_scale >= 0, "must be >= 0")
        require(self, "cfg_scale", self.solver != "meanflow" or self.cfg_scale == 1,
                "the meanflow solver does not guide at sampling time: use cfg_scale=1 (a MeanFlow model "
                "is guided by training it with objective.cfg_scale)")
        lo, hi = self.cfg_interval
        require(self, "cfg_interval", 0 <= lo <= hi <= 1, "must be (lo, hi) with 0 <= lo <= hi <= 1")
        require(self, "grid_images", self.grid_images >= 0, "must be >= 0")
        require(self, "last_step", 0 <= self.last_step < 1, "must be in [0, 1) (0: 1/steps)")
        problem = reuse_problem(self.reuse, self.steps, self.solver)
        require(self, "reuse", problem is None, problem or "")

    @property
    def reuse_schedule(self) -> Reuse | None:
        return parse_reuse(self.reuse)


@dataclass(frozen=True)
class Recipe:
    name: str
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: Objective = field(default_factory=FlowMatching)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def __post_init__(self) -> None:
        check_fields(self)
        require(self, "name", bool(self.name), "must not be empty")
        depth = self.model.backbone.depth
        require(self, "train.repa.block", self.train.repa is None or self.train.repa.block < depth,
                f"the backbone has only {depth} blocks (0..{depth - 1})")
        mean_flow = isinstance(self.objective, MeanFlow)
        require(self, "model.backbone.interval_embed", not mean_flow or self.model.backbone.interval_embed,
                "MeanFlow needs the second time input: set model.backbone.interval_embed=true")
        require(self, "sample.solver", mean_flow or self.sample.solver != "meanflow",
                "the meanflow solver needs a model trained with the MeanFlow objective; choose another solver")
        require(self, "train.repa", not mean_flow or self.train.repa is None,
                "REPA with MeanFlow is not supported (the JVP would run through REPA's block hook)")

    @property
    def resolution(self) -> int:
        return self.model.backbone.image_size


def with_sampler(recipe: Recipe, **overrides: Any) -> Recipe:
    """`recipe` with sampler settings overridden: the one place where the CLI (`sample --steps/--solver/
    --cfg`), the Python API (`pixdiff.load(...).sample(steps=...)`) and the training grids resolve
    them. A None value keeps the recipe's; the result is validated as a SampleConfig, and a bad value
    or an unknown name is one RecipeError line, e.g. "sample.steps=0: must be > 0"."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    names = [f.name for f in dataclasses.fields(SampleConfig)]
    unknown = sorted(set(changes) - set(names))
    if unknown:
        raise RecipeError(f"unknown sampler setting {', '.join(unknown)}; choose from {', '.join(names)}")
    if "cfg_interval" in changes:
        changes["cfg_interval"] = tuple(changes["cfg_interval"])
    try:
        return dataclasses.replace(recipe, sample=dataclasses.replace(recipe.sample, **changes))
    except ConfigError as e:
        # Recipe-level checks of the sampler name their field sample.<name> already
        raise RecipeError(f"sample.{e.field.removeprefix('sample.')}={e.value}: {e.reason}") from None


def recipe_functions(module: Any) -> dict[str, Any]:
    """Functions defined in a recipe module that can be called with no arguments."""
    out = {}
    for name, fn in vars(module).items():
        if name.startswith("_") or not inspect.isfunction(fn) or fn.__module__ != module.__name__:
            continue
        try:
            inspect.signature(fn).bind()
        except TypeError:
            continue
        out[name] = fn
    return out


def builtin_recipes() -> list[Path]:
    return sorted(RECIPES_DIR.glob("*.py")) if RECIPES_DIR.is_dir() else []


def load_recipe_module(path: Path) -> Any:
    try:
        return import_file(path, f"pixdiff_recipe_{path.stem}")
    except Exception as e:
        raise RecipeError(f"recipe file {path} failed to import: {type(e).__name__}: {e}") from e


def _resolve_path(file_part: str) -> Path:
    path = Path(file_part)
    if path.suffix == ".py" or path.exists():
        if not path.is_file():
            builtin = RECIPES_DIR / path.name
            hint = f" (did you mean the built-in {path.stem!r}?)" if path.suffix == ".py" and builtin.is_file() else ""
            raise RecipeError(f"recipe file not found: {path}{hint}")
        return path
    builtin = RECIPES_DIR / f"{file_part}.py"
    if builtin.is_file():
        return builtin
    names = ", ".join(p.stem for p in builtin_recipes()) or "none"
    raise RecipeError(f"no recipe file {file_part!r} (not a path; built-in recipes: {names})")


def stored_recipe_file(spec: str) -> Path | None:
    """The recipe.json a spec names (the file, or a run folder holding one); None for other specs."""
    path = Path(spec)
    if path.suffix == ".json":
        return path
    return path / "recipe.json" if path.is_dir() else None


def load_stored_recipe(path: Path) -> Recipe:
    """A stored recipe (a run's recipe.json), decoded like a checkpoint's: JSON into known config
    dataclasses, never a file executed or a class imported from outside pixdiff and its plugins."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RecipeError(f"recipe file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RecipeError(f"{path} is unreadable or not JSON ({type(e).__name__})") from None
    try:
        recipe = from_dict(data, str(path))
    except DecodeError as e:
        raise RecipeError(str(e)) from None
    if not isinstance(recipe, Recipe):
        raise RecipeError(f"{path} does not hold a pixdiff Recipe")
    return recipe


def _no_import_from_a_record(recipe: Recipe, overrides: Sequence[str], path: Path) -> None:
    """A REPA encoder given as `module:factory` imports and calls code: from a recipe file or --set that
    is the user's choice, from a record (a run's recipe.json) it would be the file's, so it is refused
    unless --set names it again."""
    repa = recipe.train.repa
    if repa is None or ":" not in repa.encoder or Path(repa.encoder).is_file():
        return
    if any(o.split("=", 1)[0].strip() == "train.repa.encoder" for o in overrides):
        return
    raise RecipeError(f"{path} names the REPA encoder factory {repa.encoder!r}; a stored recipe never imports "
                      f"code: pass it yourself with --set train.repa.encoder={repa.encoder}")


def load_recipe(spec: str, overrides: list[str] = ()) -> Recipe:
    """Build the recipe named by `spec` and apply `key=value` overrides (type-checked)."""
    stored = stored_recipe_file(spec)
    if stored is not None:
        recipe = apply_overrides(load_stored_recipe(stored), list(overrides))
        _no_import_from_a_record(recipe, overrides, stored)
        return recipe
    if spec.startswith("plugin:"):
        from pixdiff.config.plugins import discover

        recipes = discover().recipes
        name = spec.removeprefix("plugin:")
        if name not in recipes:
            raise RecipeError(f"no plugin recipe {name!r}; plugin recipes: {', '.join(sorted(recipes)) or 'none'}")
        fn = recipes[name]
    else:
        # split "file.py:fn" on the last colon that is not part of a Windows drive
        file_part, sep, fn_name = spec.rpartition(":") if ":" in spec[2:] else (spec, "", "")
        module = load_recipe_module(_resolve_path(file_part))
        fns = recipe_functions(module)
        fn_name = fn_name or "build"
        if fn_name not in fns:
            raise RecipeError(
                f"recipe file {file_part} has no function {fn_name!r}; available: {', '.join(sorted(fns)) or 'none'}"
            )
        fn = fns[fn_name]
    try:
        recipe = fn()
    except ValueError as e:  # a config's validation: one line, not a traceback
        raise RecipeError(f"{spec}: {e}") from None
    if not isinstance(recipe, Recipe):
        raise RecipeError(f"{spec} returned {type(recipe).__name__}, expected a pixdiff Recipe")
    return apply_overrides(recipe, list(overrides))

