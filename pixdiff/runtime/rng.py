"""Random numbers that do not depend on batch size, rank or run order: per-sample generators and
seeds derived from integer keys (EDM's per-sample generators)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def seed_generators(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per sample: image i depends on seeds[i] only (not on batch size or rank)."""
    return [torch.Generator(device).manual_seed(int(s)) for s in seeds]


def derive_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys, e.g. (run seed, image index) or
    (seed, step, sample): neighbouring keys give unrelated streams."""
    import numpy as np

    return int(np.random.SeedSequence([k & 0xFFFFFFFFFFFFFFFF for k in keys]).generate_state(2, np.uint64)[0] >> 1)


def balanced_labels(n: int, num_classes: int, *, device: torch.device | str = "cpu") -> Tensor:
    """(n,) labels cycling through the classes: N/num_classes each when n divides (the fair
    default of the evaluation protocol: 50 per class for 50k ImageNet samples). num_classes = 0 (an
    unconditional model): all 0, its one (null) label."""
    if num_classes == 0:
        return torch.zeros(n, dtype=torch.long, device=device)
    return torch.arange(n, device=device) % num_classes
