"""Learning-rate schedules: pure functions of the step.

The rate of optimizer step `step` (0-based) is `decay(progress) * warmup_factor`: a linear warm-up
over `warmup_steps` steps, then a decay from `lr` to `min_lr` that spans the steps from the end of
warm-up to `max_steps` (progress 0 -> 1; "constant" ignores it).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from pixdiff.recipe import TrainConfig


def constant(progress: float, lr: float, min_lr: float) -> float:
    return lr


def cosine(progress: float, lr: float, min_lr: float) -> float:
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def linear(progress: float, lr: float, min_lr: float) -> float:
    return lr + (min_lr - lr) * progress


DECAYS: dict[str, Callable[[float, float, float], float]] = {"constant": constant, "cosine": cosine,
                                                              "linear": linear}


def warmup_factor(step: int, warmup_steps: int) -> float:
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


def progress(step: int, warmup_steps: int, max_steps: int) -> float:
    """0 until warm-up ends, then rising linearly to 1 at `max_steps`."""
    return min(1.0, max(0.0, (step - warmup_steps) / max(1, max_steps - warmup_steps)))


def lr_at(step: int, tc: TrainConfig) -> float:
    """The learning rate of optimizer step `step` under the recipe's schedule."""
    decay = DECAYS[tc.lr_schedule](progress(step, tc.warmup_steps, tc.max_steps), tc.lr, tc.min_lr)
    return decay * warmup_factor(step, tc.warmup_steps)
