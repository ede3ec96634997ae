"""Random numbers that do not depend on batch size, rank or run order: per-sample generators and
seeds derived from integer keys (EDM's per-sample generators)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

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


@contextmanager
def preserved_rng(device: torch.device | str = "cpu") -> Iterator[None]:
    """Run a side job (scores during training) without moving any global random stream: torch's
    CPU generator (and the CUDA one of `device`), numpy's and Python's are restored on exit, so a
    module built inside (its default init draws from torch's) leaves the caller's draws unchanged."""
    import random

    import numpy as np

    device = torch.device(device)
    cuda = [device] if device.type == "cuda" else []
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)
