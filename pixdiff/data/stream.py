"""The training data stream: which images each rank's micro-batch holds, gathered ahead of time.

Determinism: the data order is a function of (seed, epoch) alone (`epoch_order`), and a sample's
flip a function of (seed, step, position in the global batch) (`flips`), so a micro-batch does
not depend on the number of processes, of workers, or on where a run was resumed.
`global_batch_indices` is the definition the stream must agree with, bit for bit.

Speed: an epoch's order is computed once, when the stream reaches it, and a micro-batch takes a
slice of it, so the per-step index cost does not grow with the data set (`global_batch_indices`
rebuilds the whole epoch for every call). Gathering from the memory-mapped uint8 cache, flipping
and, on the CPU, the float conversion run in `num_workers` threads (torch releases the GIL in
indexing and copies), which keep up to `prefetch` micro-batches per worker ready. On CUDA the
uint8 micro-batch is gathered into pinned memory, copied without blocking the host and converted
to float on the GPU.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from pixdiff.runtime.rng import derive_seed


# ----------------------------------------------------------------------------- the order (pure)
def class_groups(labels: torch.Tensor) -> list[torch.Tensor]:
    """The dataset indices of each class present in `labels` (N,), in index order."""
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels)
    return [g for g in torch.split(order, counts.tolist()) if len(g)]


def held_out(count: int, every: int) -> torch.Tensor:
    """(count,) bool: the images `data.holdout = every` keeps out of training, index % every == 0.

    Caches are sorted by class, so this takes about 1/every of each class. every = 0: none."""
    index = torch.arange(count)
    return index % every == 0 if every else torch.zeros(count, dtype=torch.bool)


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
    """Dataset indices of the global batch of `step`: a stream of `epoch_order` epochs.

    The reference definition (it rebuilds every epoch it touches); `EpochOrders` is the fast path."""
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


class EpochOrders:
    """Dataset indices at positions of the endless stream epoch_order(seed, 0), epoch_order(seed, 1), ...

    Each epoch's order is computed once, when first reached; epochs before the one a request
    starts in are forgotten, so a request may straddle two epochs (or more, for a data set smaller
    than the request) and memory stays at about two epochs of int64."""

    def __init__(self, seed: int, dataset_size: int, groups: list[torch.Tensor] | None = None):
        if dataset_size < 1:
            raise ValueError(f"the data set is empty (dataset_size={dataset_size})")
        self.seed, self.dataset_size, self.groups = seed, dataset_size, groups
        self._orders: dict[int, torch.Tensor] = {}

    def _epoch(self, epoch: int) -> torch.Tensor:
        if epoch not in self._orders:
            self._orders[epoch] = epoch_order(self.seed, epoch, self.dataset_size, self.groups)
        return self._orders[epoch]

    def take(self, start: int, stop: int) -> torch.Tensor:
        """(stop - start,) int64 dataset indices at stream positions start .. stop - 1."""
        n = self.dataset_size
        self._orders = {e: o for e, o in self._orders.items() if e >= start // n}
        parts = []
        while start < stop:
            epoch, offset = divmod(start, n)
            end = min(stop, (epoch + 1) * n)
            parts.append(self._epoch(epoch)[offset:offset + end - start])
            start = end
        return parts[0] if len(parts) == 1 else torch.cat(parts)


# ----------------------------------------------------------------------------- the stream
@dataclass(frozen=True)
class MicroBatch:
    step: int
    micro: int  # 0 .. grad_accum-1
    x: torch.Tensor  # (b, C, H, W) float32 in [-1, 1], on the training device
    y: torch.Tensor  # (b,) int64 labels, on the training device
    positions: range  # positions in the global batch (key of the per-sample generators)


class StreamError(RuntimeError):
    """A data worker failed; the message names the micro-batch, the cause is chained."""


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [-1, 1], as the GPU path runs it (CPU workers run the same ops into reused memory)."""
    return images.float().div_(127.5).sub_(1.0)


def _holders(t: torch.Tensor) -> int:
    """How many tensors share `t`'s memory (views, autograd's saved tensors, ...), `t` included.

    torch has no public storage reference count, so this reads the private
    `torch._C._storage_Use_Count` (there since torch 2.1). Fallback, where a torch lacks it: a
    count so large that no buffer is ever reused; the stream then allocates every micro-batch
    afresh (slower on the CPU, the same values). tests/test_stream.py runs both ways."""
    use_count = getattr(torch._C, "_storage_Use_Count", None)
    if use_count is None:
        return 1 << 30
    return use_count(t.untyped_storage()._cdata) - 1  # minus the storage object made here


class _Recycled:
    """Output tensors of one shape and dtype, handed out again once nothing else references their memory.

    On the CPU a fresh (256, 3, 256, 256) float32 tensor costs ~100 ms of page faults on first
    touch, several times the conversion that fills it. Reuse is decided on the memory's reference
    count, so a micro-batch that the consumer, a view of it or an autograd graph still holds is
    never overwritten; when all `limit` kept tensors are held, a fresh one is made."""

    def __init__(self, limit: int):
        self.limit, self.kept, self.lock = limit, [], threading.Lock()

    def take(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        with self.lock:  # the view made here counts as a holder before another thread looks
            for t in self.kept:
                if _holders(t) == 1 and t.shape == shape and t.dtype == dtype:
                    return t.view(shape)
            t = torch.empty(shape, dtype=dtype)
            if len(self.kept) < self.limit:
                self.kept.append(t)
            return t.view(shape)

    def clear(self) -> None:
        with self.lock:
            self.kept.clear()


class BatchStream:
    """This rank's micro-batches (start_step, 0), (start_step, 1), ..., (start_step + 1, 0), ... forever.

    images (N, C, H, W) uint8 (e.g. the memory-mapped cache), labels (N,) int64; `subset` (M,): the
    dataset indices the stream draws from (None: all N), ordered as if they were the data set. Micro-batch
    `micro` of `step` holds the global batch's positions (rank * grad_accum + micro) * b ... + b,
    b = global_batch / (world * grad_accum), exactly as `global_batch_indices` and `flips` define
    them. num_workers=0 builds each micro-batch when asked for; otherwise up to
    num_workers * prefetch are built ahead in threads. Use as a context manager or call close().
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, seed: int, global_batch: int,
                 grad_accum: int, rank: int, world: int, flip: bool, balance_classes: bool,
                 device: torch.device, start_step: int = 0, num_workers: int = 0, prefetch: int = 2,
                 subset: torch.Tensor | None = None):
        if global_batch % (world * grad_accum):
            raise ValueError(f"global_batch={global_batch} is not divisible by world size {world} "
                             f"x grad_accum {grad_accum}")
        if num_workers < 0 or prefetch < 1:
            raise ValueError(f"need num_workers >= 0 and prefetch >= 1, got {num_workers} and {prefetch}")
        # a plain tensor view of the same memory: indexing a tensor subclass costs a dispatch detour
        self.images, self.labels = images.as_subclass(torch.Tensor), labels
        self.seed, self.global_batch, self.grad_accum, self.rank = seed, global_batch, grad_accum, rank
        self.flip, self.device, self.num_workers, self.prefetch = flip, torch.device(device), num_workers, prefetch
        self.micro_batch = global_batch // (world * grad_accum)
        self.subset = subset
        drawn = labels if subset is None else labels[subset]
        self.orders = EpochOrders(seed, len(drawn), class_groups(drawn) if balance_classes else None)
        self._next = (start_step, 0)
        self._pending: deque[tuple[int, int, range, Future]] = deque()
        self._pool = ThreadPoolExecutor(num_workers, thread_name_prefix="pixdiff-data",
                                        initializer=self._start_worker) if num_workers else None
        self._closed = False
        self._local = threading.local()
        # live at once: the micro-batches in flight (up to num_workers * prefetch + 1), the one being
        # filled, the consumer's current and previous one
        self._outputs = _Recycled(num_workers * prefetch + 4)

    def _start_worker(self) -> None:
        if self.device.type == "cuda" and self.device.index is not None:
            # pinned memory is allocated through the thread's current device: without this every
            # rank's workers would open a context on GPU 0
            torch.cuda.set_device(self.device)

    # ------------------------------------------------------------------ what each micro-batch holds
    def _plan(self) -> tuple[int, int, range, torch.Tensor]:
        """The next (step, micro, positions, dataset indices), advancing the stream (consumer thread only)."""
        step, micro = self._next
        self._next = (step, micro + 1) if micro + 1 < self.grad_accum else (step + 1, 0)
        start = (self.rank * self.grad_accum + micro) * self.micro_batch
        first = step * self.global_batch + start
        idx = self.orders.take(first, first + self.micro_batch)
        return step, micro, range(start, start + self.micro_batch), idx if self.subset is None else self.subset[idx]

    def _gather(self, step: int, positions: range, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Host side of a micro-batch: images (b, C, H, W) (uint8 for a device, pinned for CUDA; the
        final float32 for the CPU) and labels (b,). Runs in a worker thread."""
        shape, on_cpu, pin = (len(idx), *self.images.shape[1:]), self.device.type == "cpu", self.device.type == "cuda"
        # for a device, fresh memory that the copy reads (pinned: CUDA's caching host allocator
        # recycles it once the copy is done); for the CPU, this thread's buffer, converted below
        images = self._staging(shape) if on_cpu else torch.empty(shape, dtype=torch.uint8, pin_memory=pin)
        labels = torch.empty(len(idx), dtype=self.labels.dtype, pin_memory=pin)
        torch.index_select(self.images, 0, idx, out=images)  # (b, C, H, W) uint8
        torch.index_select(self.labels, 0, idx, out=labels)
        if self.flip:
            for r in flips(self.seed, step, positions).nonzero().flatten().tolist():
                # one row at a time through a 2-D view: ~20x faster than flipping a 4-D uint8 block
                # and indexing it back (torch's flip kernel)
                row = images[r]  # (C, H, W)
                row.copy_(row.view(-1, row.shape[-1]).flip(-1).view(row.shape))
        if not on_cpu:
            return images, labels
        x = self._outputs.take(shape, torch.float32)
        return x.copy_(images).div_(127.5).sub_(1.0), labels  # = to_unit_range(images), into reused memory

    def _staging(self, shape: tuple[int, ...]) -> torch.Tensor:
        """This thread's uint8 gather buffer, reused (only this thread reads it, before its next gather)."""
        buf = getattr(self._local, "images", None)
        if buf is None or buf.shape != shape:
            buf = self._local.images = torch.empty(shape, dtype=torch.uint8)
        return buf

    def _finish(self, step: int, micro: int, positions: range, host: tuple[torch.Tensor, torch.Tensor]) -> MicroBatch:
        images, labels = host
        if self.device.type == "cpu":
            return MicroBatch(step, micro, images, labels, positions)
        x = to_unit_range(images.to(self.device, non_blocking=True))
        return MicroBatch(step, micro, x, labels.to(self.device, non_blocking=True), positions)

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[MicroBatch]:
        return self

    def __next__(self) -> MicroBatch:
        if self._closed:
            raise StreamError("the data stream is closed")
        if self._pool is None:
            step, micro, positions, idx = self._plan()
            host = self._built(step, micro, lambda: self._gather(step, positions, idx))
        else:
            while len(self._pending) <= self.num_workers * self.prefetch:
                step, micro, positions, idx = self._plan()
                future = self._pool.submit(self._gather, step, positions, idx)
                self._pending.append((step, micro, positions, future))
            step, micro, positions, future = self._pending.popleft()
            host = self._built(step, micro, future.result)
        return self._finish(step, micro, positions, host)

    def _built(self, step: int, micro: int, build: Callable[[], Any]) -> Any:
        """build(), or one StreamError naming the micro-batch (the stream is closed first)."""
        try:
            return build()
        except Exception as err:
            self.close()
            raise StreamError(f"data stream: building micro-batch {micro} of step {step} failed: "
                              f"{type(err).__name__}: {err}") from err

    def close(self) -> None:
        """Stop the workers (micro-batches being built are finished and dropped). Idempotent."""
        self._closed = True
        for *_, future in self._pending:
            future.cancel()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._outputs.clear()

    def __enter__(self) -> BatchStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
