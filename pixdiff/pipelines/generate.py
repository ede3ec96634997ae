"""Generate sample sets from a trained (or converted) model: PNG grid + ADM-evaluator `.npz`.

Image i of a run is a function of (seed, i) alone: its label is fixed by the label policy, its
noise comes from its own generator. So a set does not depend on the batch size or on how many
processes (`torchrun`) produced it. Ranks take interleaved indices, write their part to disk, and
rank 0 assembles exactly N samples in index order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from pixdiff.config.validate import check_fields, positive
from pixdiff.data.cache import cached_class_names
from pixdiff.data.grid import save_class_grid, save_png, to_uint8
from pixdiff.data.npz import save_samples
from pixdiff.diffusion.objectives import Generators, Model
from pixdiff.diffusion.sampling import inference_network, sample_images
from pixdiff.diffusion.solvers import Callback
from pixdiff.recipe import Recipe, with_sampler
from pixdiff.runtime.atomic import atomic_write, scratch_folder
from pixdiff.runtime.distributed import Dist, barrier
from pixdiff.runtime.precision import Dtype
from pixdiff.runtime.progress import OnProgress
from pixdiff.runtime.rng import balanced_labels, derive_seed, seed_generators


def sample_batch(model: Model, recipe: Recipe, labels: Tensor, generators: Generators, *,
                 callback: Callback | None = None, **overrides: Any) -> Tensor:
    """One batch of `diffusion.sampling.sample_images` with the recipe's objective, image shape,
    class count and sampler settings (recipe.sample), any of which `overrides` replaces through
    `with_sampler`, e.g. `sample_batch(net, recipe, y, gens, steps=25)`.
    (B,) labels -> (B, C, H, W) in [-1, 1]."""
    sc = with_sampler(recipe, **overrides).sample if overrides else recipe.sample
    bb = recipe.model.backbone
    return sample_images(model, recipe.objective, labels, shape_chw=(bb.channels, bb.image_size, bb.image_size),
                         num_classes=bb.num_classes, steps=sc.steps, solver=sc.solver, cfg_scale=sc.cfg_scale,
                         cfg_interval=sc.cfg_interval, time_shift=sc.time_shift, last_step=sc.last_step,
                         generators=generators, reuse=sc.reuse_schedule, callback=callback)


class OutputError(ValueError):
    """A model drew NaN/inf or constant images: reported as a failure, never written as a success."""


def check_output(x: Tensor, what: str, hint: str = "") -> Tensor:
    """`x` (N, C, H, W) as drawn, after refusing non-finite values and images of one value (a
    diverged model or sampler gives NaN, which writes as black)."""
    flat = x.detach().float().flatten(1)
    bad = int((~torch.isfinite(flat).all(1)).sum())
    if bad:
        raise OutputError(f"{what}: {bad} of {len(x)} images hold NaN or inf (the model or sampler diverged)"
                          + (f"; {hint}" if hint else ""))
    flat = flat.clamp(-1, 1)  # what is written: saturated images count as constant
    constant = int(((flat.amax(1) - flat.amin(1)) == 0).sum())
    if constant:
        raise OutputError(f"{what}: {constant} of {len(x)} images are one flat colour (every pixel the same)"
                          + (f"; {hint}" if hint else ""))
    return x


LabelPolicy = Literal["balanced", "random"]


@dataclass(frozen=True)
class SampleJob:
    """What to draw, not how: the sampler settings live in the recipe (`with_sampler` overrides them)."""
    num: int
    seed: int = 0
    labels: LabelPolicy = "balanced"
    batch_size: int = 64
    classes: tuple[int, ...] = ()  # draw only these classes (default: all, or the first --classes K)

    def __post_init__(self) -> None:  # command-line values: refused before any image is drawn
        check_fields(self)
        positive(self, "num", "batch_size")


def labels_for(n: int, num_classes: int, policy: LabelPolicy, seed: int, only: tuple[int, ...] = ()) -> torch.Tensor:
    """(n,) labels by `policy` over classes 0..num_classes-1, or over the classes `only` names."""
    pool = torch.tensor(only or range(num_classes), dtype=torch.long)
    if policy == "balanced" or num_classes == 0:
        return pool[balanced_labels(n, len(only))] if only else balanced_labels(n, num_classes)
    if policy == "random":
        g = torch.Generator().manual_seed(derive_seed(seed, -1))
        return pool[torch.randint(len(pool), (n,), generator=g)]
    raise ValueError(f"labels must be 'balanced' or 'random', not {policy!r}")


def _check_classes(job: SampleJob, limit: int | None, model_classes: int) -> int:
    """The class count labels are drawn from; one line for a class the model does not have."""
    classes = model_classes if limit is None else limit
    if model_classes and not 1 <= classes <= model_classes or not model_classes and classes:
        raise ValueError(f"--classes {classes}: the model has {model_classes} classes")  # 0: unconditional
    bad = [c for c in job.classes if not 0 <= c < model_classes]
    if bad:
        raise ValueError(f"--class {bad[0]}: the model has classes 0..{model_classes - 1}" if model_classes
                         else "this model is unconditional: it takes no --class")
    return classes


def _draw(net: Any, recipe: Recipe, job: SampleJob, labels: Tensor, mine: list[int], d: Dist,
          on_progress: OnProgress | None = None) -> np.ndarray:
    """This rank's images (indices `mine`) as uint8 (n, H, W, C), each checked as drawn;
    on_progress(drawn, len(mine)) after each batch."""
    bb = recipe.model.backbone
    chunks = [np.zeros((0, bb.image_size, bb.image_size, bb.channels), np.uint8)]
    for start in range(0, len(mine), job.batch_size):
        idx = mine[start:start + job.batch_size]
        gens = seed_generators([derive_seed(job.seed, i) for i in idx], d.device)
        x = sample_batch(net, recipe, labels[idx].to(d.device), gens)
        chunks.append(to_uint8(check_output(x, f"sampling images {idx[0]}..{idx[-1]}")))
        if on_progress is not None:
            on_progress(start + len(idx), len(mine))
    return np.concatenate(chunks)


def _gather(mine: np.ndarray, out_dir: Path, num: int, d: Dist) -> np.ndarray | None:
    """Every rank's images in index order, on rank 0 (None elsewhere), through parts on disk that are
    removed however the command ends."""
    with scratch_folder(out_dir / ".parts", owner=d.main) as parts:
        with atomic_write(parts / f"rank{d.rank:05d}.npy") as f:  # a full disk leaves no half part behind
            np.save(f, mine)
        barrier(d)
        if not d.main:
            return None
        images = np.empty((num, *mine.shape[1:]), np.uint8)
        for r in range(d.world):
            images[r::d.world] = np.load(parts / f"rank{r:05d}.npy")
        return images


@torch.no_grad()
def draw_set(model: nn.Module, recipe: Recipe, job: SampleJob, *, num_classes: int | None = None,
             device: torch.device | str = "cpu") -> tuple[np.ndarray, Tensor]:
    """All `job.num` images in one process, as `write_samples` draws them (the same labels and
    per-image noise, so the same images), kept in memory: uint8 (N, H, W, C) and (N,) labels.
    For scoring many small sets (`pipelines.scoring`: sweeps, scores during training)."""
    classes = _check_classes(job, num_classes, recipe.model.backbone.num_classes)
    labels = labels_for(job.num, classes, job.labels, job.seed, job.classes)
    return _draw(model, recipe, job, labels, list(range(job.num)), Dist(device=torch.device(device))), labels


@torch.no_grad()
def class_names(recipe: Recipe) -> tuple[str, ...]:
    """The training data's class names, when its cache is here (never built for this) and has one
    name per class of the model (a hub checkpoint's recipe may name data it was not trained on)."""
    dc, classes = recipe.data, recipe.model.backbone.num_classes
    names = cached_class_names(dc.source, dc.cache_dir, recipe.resolution, small=dc.small) if classes else ()
    return names if len(names) == classes else ()


def write_samples(model: nn.Module, recipe: Recipe, job: SampleJob, out_dir: Path, d: Dist = Dist(), *,
                  num_classes: int | None = None, dtype: Dtype = "fp32", compile: bool = False,
                  meta: dict | None = None, png: bool = False, on_progress: OnProgress | None = None
                  ) -> Path | None:
    """Write out_dir/samples.npz (+ grid.png with a row per class, meta.json, and with `png`
    images/NNNNNN_cK.png); returns the .npz path on rank 0.

    `num_classes` limits the labels drawn (a model may have more rows than the data had classes).
    `dtype` and `compile` go to `sampling.inference_network` (with "bf16" the model's weights are
    converted in place), the path `pixdiff bench latency` times. `on_progress(drawn, total)` follows
    this rank's share of the images (all of them on one process)."""
    bb = recipe.model.backbone
    classes = _check_classes(job, num_classes, bb.num_classes)
    labels = labels_for(job.num, classes, job.labels, job.seed, job.classes)  # (N,), identical on every rank
    net = inference_network(model, dtype=dtype, compile=compile)
    mine = _draw(net, recipe, job, labels, list(range(d.rank, job.num, d.world)), d, on_progress)
    images = _gather(mine, out_dir, job.num, d)
    if images is None:
        return None
    sc = recipe.sample
    info = {"num": job.num, "labels": job.labels, "num_classes": classes, "classes": list(job.classes),
            "seed": job.seed, "steps": sc.steps, "solver": sc.solver, "cfg_scale": sc.cfg_scale,
            "cfg_interval": list(sc.cfg_interval), "time_shift": sc.time_shift, "last_step": sc.last_step,
            "reuse": sc.reuse, "dtype": dtype, "compile": compile, "world_size": d.world, "recipe": recipe.name, **(meta or {})}
    npz = out_dir / "samples.npz"
    save_samples(npz, images, labels.numpy(), info)
    save_class_grid(images, labels.numpy(), out_dir / "grid.png", labelled=bool(bb.num_classes),
                    names=class_names(recipe))
    if png:  # one file per image, named for its index and class, ready for `pixdiff edit`
        for i, (image, label) in enumerate(zip(images, labels.tolist())):
            save_png(image, out_dir / "images" / f"{i:06d}_c{label}.png")
    with atomic_write(out_dir / "meta.json", text=True) as f:
        f.write(json.dumps(info, indent=2))
    return npz
