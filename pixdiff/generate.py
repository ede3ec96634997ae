"""Generate sample sets from a trained (or converted) model: PNG grid + ADM-evaluator `.npz`.

Image i of a run is a function of (seed, i) alone: its label is fixed by the label policy, its
noise comes from its own generator. So a set does not depend on the batch size or on how many
processes (`torchrun`) produced it. Ranks take interleaved indices, write their part to disk, and
rank 0 assembles exactly N samples in index order.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from pixdiff.checkpoints import store as checkpoint
from pixdiff.config.tree import apply_overrides
from pixdiff.config.validate import check_fields, positive
from pixdiff.data.grid import save_grid, to_uint8
from pixdiff.data.npz import save_samples
from pixdiff.diffusion.objectives import Generators, Model
from pixdiff.diffusion.sampling import inference_network, sample
from pixdiff.diffusion.solvers import Callback
from pixdiff.recipe import Recipe, load_recipe, with_sampler
from pixdiff.runtime.atomic import atomic_write
from pixdiff.runtime.distributed import Dist, barrier
from pixdiff.runtime.precision import Dtype
from pixdiff.runtime.rng import balanced_labels, derive_seed, seed_generators


def sample_recipe(model: Model, recipe: Recipe, labels: Tensor, generators: Generators, *,
                  callback: Callback | None = None, **overrides: Any) -> Tensor:
    """`sample` with the recipe's objective, image shape, class count and sampler settings
    (recipe.sample), any of which `overrides` replaces through `with_sampler`, e.g.
    `sample_recipe(net, recipe, y, gens, steps=25)`. (B,) labels -> (B, C, H, W) in [-1, 1]."""
    sc = with_sampler(recipe, **overrides).sample if overrides else recipe.sample
    bb = recipe.model.backbone
    return sample(model, recipe.objective, labels, shape_chw=(bb.channels, bb.image_size, bb.image_size),
                  num_classes=bb.num_classes, steps=sc.steps, solver=sc.solver, cfg_scale=sc.cfg_scale,
                  cfg_interval=sc.cfg_interval, time_shift=sc.time_shift, last_step=sc.last_step, generators=generators,
                  callback=callback)


LabelPolicy = Literal["balanced", "random"]


@dataclass(frozen=True)
class SampleJob:
    """What to draw, not how: the sampler settings live in the recipe (`with_sampler` overrides them)."""
    num: int
    seed: int = 0
    labels: LabelPolicy = "balanced"
    batch_size: int = 64

    def __post_init__(self) -> None:  # command-line values: refused before any image is drawn
        check_fields(self)
        positive(self, "num", "batch_size")


def load_model(path: Path, *, recipe: str | None = None, overrides: list[str] = (), weights: str = "ema",
               ema: float | None = None, device: torch.device = torch.device("cpu")) -> tuple[nn.Module, Recipe, Path]:
    """Model and recipe from a pixdiff checkpoint or run folder, or from one of the authors'
    reference checkpoints when `recipe` names the model it belongs to. `ema` picks the EMA of
    that decay among train.ema_decays (default: the first)."""
    from pixdiff.checkpoints.dip import load_reference

    file = checkpoint.resolve(path)
    raw = checkpoint.read(file)
    if raw.get("format") == checkpoint.FORMAT:
        saved = checkpoint.recipe_of(raw, file)
        # --set applies to the run's own recipe too (e.g. sample.time_shift), not only to a named one
        r = load_recipe(recipe, list(overrides)) if recipe else apply_overrides(saved, list(overrides))
        with torch.device("meta"):
            model = r.model.build()
        model = model.to_empty(device="cpu")
        state = checkpoint.pick_ema(raw, saved.train.ema_decays, ema) if weights == "ema" else raw.get("model")
        load_weights(model, state, f"{file}'s {weights!r} weights")
    else:
        if recipe is None:
            raise checkpoint.CheckpointError(f"{file} is not a pixdiff checkpoint: pass --recipe to read it "
                                             "as one of the authors' reference checkpoints")
        r = load_recipe(recipe, list(overrides))
        with torch.device("meta"):
            model = r.model.build()
        model = model.to_empty(device="cpu")
        load_reference(model, raw, weights)
    model.backbone.reset_rope()  # non-persistent buffers were left empty by the meta build
    return model.to(device).eval().requires_grad_(False), r, file


def load_weights(model: nn.Module, state: Any, what: str) -> None:
    """Strictly load `state` into `model`; a missing, foreign or mismatched state is one error line."""
    from pixdiff.checkpoints.dip import check_state

    if not isinstance(state, dict):
        raise checkpoint.CheckpointError(f"{what} are missing from the file")
    check_state(model.state_dict(), state, what)
    model.load_state_dict(state, strict=True)


def labels_for(n: int, num_classes: int, policy: LabelPolicy, seed: int) -> torch.Tensor:
    if policy == "balanced" or num_classes == 0:
        return balanced_labels(n, num_classes)
    if policy == "random":
        return torch.randint(num_classes, (n,), generator=torch.Generator().manual_seed(derive_seed(seed, -1)))
    raise ValueError(f"labels must be 'balanced' or 'random', not {policy!r}")


@torch.no_grad()
def generate(model: nn.Module, recipe: Recipe, job: SampleJob, out_dir: Path, d: Dist = Dist(), *,
             num_classes: int | None = None, dtype: Dtype = "fp32", compile: bool = False,
             meta: dict | None = None) -> Path | None:
    """Write out_dir/samples.npz (+ grid.png, meta.json); returns the .npz path on rank 0.

    `num_classes` limits the labels drawn (a model may have more rows than the data had classes).
    `dtype` and `compile` go to `sampling.inference_network` (with "bf16" the model's weights are
    converted in place), the path `pixdiff bench latency` times."""
    bb = recipe.model.backbone
    classes = bb.num_classes if num_classes is None else num_classes
    if bb.num_classes and not 1 <= classes <= bb.num_classes or not bb.num_classes and classes:
        raise ValueError(f"--classes {classes}: the model has {bb.num_classes} classes")  # 0: unconditional
    s = job
    labels = labels_for(s.num, classes, s.labels, s.seed)  # (N,), identical on every rank
    mine = list(range(d.rank, s.num, d.world))
    net = inference_network(model, dtype=dtype, compile=compile)
    chunks = []
    for start in range(0, len(mine), s.batch_size):
        idx = mine[start:start + s.batch_size]
        y = labels[idx].to(d.device)
        gens = seed_generators([derive_seed(s.seed, i) for i in idx], d.device)
        x = sample_recipe(net, recipe, y, gens)
        chunks.append(to_uint8(x))
    parts = out_dir / ".parts"
    parts.mkdir(parents=True, exist_ok=True)
    mine_images = np.concatenate(chunks) if chunks else np.zeros((0, bb.image_size, bb.image_size, bb.channels),
                                                                  np.uint8)
    with atomic_write(parts / f"rank{d.rank:05d}.npy") as f:  # a full disk leaves no half part behind
        np.save(f, mine_images)
    barrier(d)
    if not d.main:
        return None
    images = np.empty((s.num, bb.image_size, bb.image_size, bb.channels), np.uint8)
    for r in range(d.world):
        images[r::d.world] = np.load(parts / f"rank{r:05d}.npy")
    shutil.rmtree(parts)
    sc = recipe.sample
    info = {"num": s.num, "labels": s.labels, "num_classes": classes, "seed": s.seed, "steps": sc.steps,
            "solver": sc.solver, "cfg_scale": sc.cfg_scale, "cfg_interval": list(sc.cfg_interval),
            "time_shift": sc.time_shift, "last_step": sc.last_step, "dtype": dtype, "compile": compile,
            "world_size": d.world, "recipe": recipe.name, **(meta or {})}
    npz = out_dir / "samples.npz"
    save_samples(npz, images, labels.numpy(), info)
    save_grid(images[:64], out_dir / "grid.png")
    with atomic_write(out_dir / "meta.json", text=True) as f:
        f.write(json.dumps(info, indent=2))
    return npz
