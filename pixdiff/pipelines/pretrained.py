"""A trained run in one line, like `from_pretrained`: `pixdiff.load("runs/x")` -> model, objective and
sampler settings, ready to sample.

    run = pixdiff.load("runs/emoji")                    # a run folder (newest checkpoint) or a checkpoint file
    images = run.sample([0, 1, 2, 3], seed=0, steps=25)  # (4, 3, H, W) in [-1, 1]
    pixdiff.save_grid(images, "grid.png")

Image i is drawn from the seed derive_seed(seed, i), as `pixdiff sample --seed` draws it, so the
same seed, labels and settings give the CLI's images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pixdiff.checkpoints.loader import load_model
from pixdiff.diffusion.objectives import Objective
from pixdiff.pipelines.generate import sample_batch
from pixdiff.recipe import Recipe, SampleConfig
from pixdiff.runtime.rng import derive_seed, seed_generators


@dataclass(frozen=True)
class Pretrained:
    model: nn.Module  # eval mode, gradients off, on the device it was loaded to
    recipe: Recipe  # the run's resolved recipe
    checkpoint: Path  # the file the weights came from

    @property
    def objective(self) -> Objective:
        return self.recipe.objective

    @property
    def sampler(self) -> SampleConfig:
        return self.recipe.sample

    @torch.no_grad()
    def sample(self, labels: Sequence[int] | Tensor, *, seed: int = 0, **overrides: Any) -> Tensor:
        """(B,) class labels -> (B, C, H, W) float32 images in [-1, 1], with the run's objective and
        sampler settings; `overrides` (steps, solver, cfg_scale, cfg_interval, time_shift) go through
        `with_sampler`."""
        device = next(self.model.parameters()).device
        y = torch.as_tensor(labels, dtype=torch.long, device=device).reshape(-1)
        classes = self.recipe.model.backbone.num_classes
        if len(y) and not (0 <= int(y.min()) and int(y.max()) < classes):
            raise ValueError(f"labels must lie in 0..{classes - 1} (the model's classes), got {y.tolist()}")
        gens = seed_generators([derive_seed(seed, i) for i in range(len(y))], device)
        return sample_batch(self.model, self.recipe, y, gens, **overrides)


def load(path: str | Path, *, weights: str = "ema", ema: float | None = None, device: str | torch.device = "cpu",
         overrides: Sequence[str] = ()) -> Pretrained:
    """The newest checkpoint of run folder `path` (or the checkpoint file `path`, or the hub source
    "hf-hub:ORG/REPO[@REVISION][:FILE]", a pixdiff export there): its EMA weights by
    default (`weights="raw"` for the trained ones; `ema` picks a decay among train.ema_decays) and its
    recipe, with `overrides` ("sample.steps=25", ...) applied as `--set` does."""
    model, recipe, file = load_model(path, overrides=overrides, weights=weights, ema=ema, device=device)
    return Pretrained(model, recipe, file)
