"""Scores during training (train.eval_every): FD and KID of train.eval_num samples of the first EMA,
drawn with the recipe's sampler, against train.eval_ref, as eval/fd and eval/kid in the metrics rows.

They never change the training: the images come from their own per-image generators (fixed seeds,
so every evaluation draws the same noise and labels and the scores differ only by the weights), and
everything else that draws random numbers (building the extractor's modules) runs inside
`preserved_rng`, so a run with scores ends with bit-identical weights to one without, and resumes
as bit-exactly. Rank 0 scores; the other ranks go on, as with the sample grids.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pixdiff.data.reference import names_training_data
from pixdiff.eval.features import parse_spec
from pixdiff.pipelines.generate import SampleJob, draw_set
from pixdiff.pipelines.scoring import Scorer, open_scorer, score_images
from pixdiff.recipe import Recipe
from pixdiff.runtime.precision import autocast
from pixdiff.runtime.rng import preserved_rng
from pixdiff.train.errors import TrainingError


class TrainingScores:
    """Built when the Trainer is (checking train.eval_features and eval_ref then); the extractor
    and the reference statistics are loaded at the first evaluation."""

    def __init__(self, recipe: Recipe, device: torch.device):
        tc = recipe.train
        try:
            parse_spec(tc.eval_features)
        except ValueError as e:
            raise TrainingError(f"train.eval_features={tc.eval_features}: {e}") from None
        if not names_training_data(tc.eval_ref) and not Path(tc.eval_ref).exists():
            raise TrainingError(f"train.eval_ref={tc.eval_ref}: no such file or folder "
                                "(or name training data: 'emoji', 'data:SOURCE')")
        self.recipe, self.device = recipe, device
        self.job = SampleJob(num=tc.eval_num, seed=tc.seed)
        self._scorer: Scorer | None = None

    def due(self, step: int) -> bool:
        tc = self.recipe.train
        return tc.eval_every > 0 and (step % tc.eval_every == 0 or step == tc.max_steps)

    @torch.no_grad()
    def __call__(self, ema: nn.Module, num_classes: int) -> dict[str, float]:
        """{"eval/fd": ..., "eval/kid": ...} of the EMA model `ema`, its labels balanced over
        `num_classes` (0: unconditional); an OutputError when its samples are NaN or flat."""
        tc = self.recipe.train
        with preserved_rng(self.device):
            if self._scorer is None:
                self._scorer = open_scorer(tc.eval_ref, tc.eval_features, self.recipe.resolution,
                                           device=str(self.device), cache_dir=self.recipe.data.cache_dir)
            with autocast(self.device, tc.precision):
                images, _ = draw_set(ema, self.recipe, self.job, num_classes=num_classes, device=self.device)
            score = score_images(images, self._scorer)
        return {"eval/fd": round(score.fd, 6), "eval/kid": round(score.kid, 8)}

