"""The training data feed: which images each micro-batch holds, as pure functions of (seed, step).

A synchronous stand-in with the interface of the prefetching `pixdiff.data.stream` (same
MicroBatch contents bit for bit); the trainer only constructs one `BatchStream` and iterates it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from pixdiff.sampling import derive_seed


def class_groups(labels: torch.Tensor) -> list[torch.Tensor]:
    """The dataset indices of each class present in `labels` (N,), in index order."""
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels)
    return [g for g in torch.split(order, counts.tolist()) if len(g)]


def epoch_order(seed: int, epoch: int, dataset_size: int, groups: list[torch.Tensor] | None = None) -> torch.Tensor:
    """The dataset indices of one epoch, `dataset_size` of them.

    Without groups, a permutation. With `class_groups(labels)`, class-balanced: each class gets an
    equal share of the slots (the first N % K classes one more), filled from a fresh permutation
    of its images, cycled where the class is smaller than its share and cut where it is larger
    (a different subset each epoch); then the slots are shuffled.
    """
    g = torch.Generator().manual_seed(derive_seed(seed, epoch))
    if groups is None:
        return torch.randperm(dataset_size, generator=g)
    share, extra = divmod(dataset_size, len(groups))
    slots = []
    for k, members in enumerate(groups):
        members = members[torch.randperm(len(members), generator=g)]
        need = share + (k < extra)
        slots.append(members.repeat(-(-need // len(members)))[:need])
    return torch.cat(slots)[torch.randperm(dataset_size, generator=g)]


def global_batch_indices(seed: int, step: int, global_batch: int, dataset_size: int,
                         groups: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Dataset indices of the global batch of `step`: a stream of `epoch_order` epochs."""
    positions = torch.arange(step * global_batch, (step + 1) * global_batch)
    epochs, offsets = positions // dataset_size, positions % dataset_size
    out = torch.empty_like(positions)
    for epoch in epochs.unique().tolist():
        mask = epochs == epoch
        out[mask] = epoch_order(seed, epoch, dataset_size, groups)[offsets[mask]]
    return out


def flips(seed: int, step: int, indices: range) -> torch.Tensor:
    """(n,) bool horizontal flips, one coin per global sample position."""
    return torch.tensor([derive_seed(seed, step, i, 1) & 1 == 1 for i in indices])


@dataclass(frozen=True)
class MicroBatch:
    step: int
    micro: int  # 0 .. grad_accum-1
    x: torch.Tensor  # (b, C, H, W) float32 in [-1, 1], on the training device
    y: torch.Tensor  # (b,) int64 labels, on the training device
    positions: range  # positions in the global batch (key of the per-sample generators)


class BatchStream:
    """This rank's micro-batches from `start_step` on, forever: (step, 0), (step, 1), ..., (step + 1, 0)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, seed: int, global_batch: int,
                 grad_accum: int, rank: int, world: int, flip: bool, balance_classes: bool,
                 device: torch.device, start_step: int = 0, num_workers: int = 0, prefetch: int = 2):
        self.images, self.labels, self.seed, self.global_batch = images, labels, seed, global_batch
        self.grad_accum, self.rank, self.flip, self.device, self.start_step = grad_accum, rank, flip, device, start_step
        self.micro_batch = global_batch // (world * grad_accum)
        self.groups = class_groups(labels) if balance_classes else None

    def _get(self, step: int, micro: int) -> MicroBatch:
        b = self.micro_batch
        indices = global_batch_indices(self.seed, step, self.global_batch, len(self.labels), self.groups)
        start = (self.rank * self.grad_accum + micro) * b
        positions = range(start, start + b)
        idx = indices[start:start + b]
        images = self.images[idx]  # (b, C, H, W) uint8
        if self.flip:
            flip = flips(self.seed, step, positions)[:, None, None, None]  # (b, 1, 1, 1)
            images = torch.where(flip, images.flip(-1), images)
        x = images.to(self.device, non_blocking=True).float().div_(127.5).sub_(1.0)
        return MicroBatch(step, micro, x, self.labels[idx].to(self.device), positions)

    def __iter__(self) -> Iterator[MicroBatch]:
        step = self.start_step
        while True:
            for micro in range(self.grad_accum):
                yield self._get(step, micro)
            step += 1

    def close(self) -> None:
        pass

    def __enter__(self) -> BatchStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
