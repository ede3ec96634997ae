"""The data stream: bit-identical to the reference definition for any workers and start step, and
workers that stop cleanly."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pixdiff.data.stream import (
    BatchStream,
    EpochOrders,
    StreamError,
    class_groups,
    epoch_order,
    flips,
    global_batch_indices,
    held_out,
)

CPU = torch.device("cpu")


def reference(images, labels, *, seed, step, micro, global_batch, grad_accum, rank, world, flip, balance):
    """What the trainer fed a step before the stream existed: whole-batch indices, torch.where flips."""
    b = global_batch // (world * grad_accum)
    groups = class_groups(labels) if balance else None
    indices = global_batch_indices(seed, step, global_batch, len(labels), groups)
    start = (rank * grad_accum + micro) * b
    positions = range(start, start + b)
    idx = indices[start:start + b]
    x = images[idx]
    if flip:
        x = torch.where(flips(seed, step, positions)[:, None, None, None], x.flip(-1), x)
    return x.float().div_(127.5).sub_(1.0), labels[idx], positions


def data(n: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 4, 5), dtype=torch.uint8, generator=g)  # W != H: flips show
    return images, torch.randint(0, classes, (n,), generator=g)


def data_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("pixdiff-data")]


@settings(deadline=None, max_examples=40)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 40), classes=st.integers(1, 6), b=st.integers(1, 5),
       grad_accum=st.integers(1, 3), world=st.integers(1, 3), rank_frac=st.floats(0, 0.999),
       flip=st.booleans(), balance=st.booleans(), start_step=st.integers(0, 30), workers=st.sampled_from([0, 2]),
       prefetch=st.integers(1, 3), count=st.integers(1, 12))
def test_stream_equals_the_reference_for_any_workers_and_start(seed, n, classes, b, grad_accum, world, rank_frac,
                                                               flip, balance, start_step, workers, prefetch, count):
    images, labels = data(n, classes, seed)
    rank, global_batch = int(rank_frac * world), b * grad_accum * world
    setting = dict(seed=seed, global_batch=global_batch, grad_accum=grad_accum, rank=rank, world=world, flip=flip)
    with BatchStream(images, labels, **setting, balance_classes=balance, device=CPU, start_step=start_step,
                     num_workers=workers, prefetch=prefetch) as stream:
        got = [next(stream) for _ in range(count)]
    for k, mb in enumerate(got):
        step, micro = divmod(start_step * grad_accum + k, grad_accum)
        assert (mb.step, mb.micro) == (step, micro)
        x, y, positions = reference(images, labels, step=step, micro=micro, balance=balance, **setting)
        assert mb.positions == positions and mb.x.dtype == torch.float32 and mb.y.dtype == torch.int64
        assert torch.equal(mb.x, x) and torch.equal(mb.y, y)


@settings(deadline=None, max_examples=30)
@given(seed=st.integers(0, 2**31), n=st.integers(2, 40), classes=st.integers(1, 5), every=st.integers(2, 5),
       balance=st.booleans(), workers=st.sampled_from([0, 2]))
def test_a_subset_stream_is_the_stream_of_the_subset(seed, n, classes, every, balance, workers):
    """data.holdout's path: drawing from `subset` gives exactly the batches of the data set cut to it,
    so a held-out image never enters a batch."""
    images, labels = data(n, classes, seed)
    keep = (~held_out(n, every)).nonzero().flatten()
    setting = dict(seed=seed, global_batch=4, grad_accum=1, rank=0, world=1, flip=True, balance_classes=balance,
                   device=CPU)
    with BatchStream(images, labels, **setting, num_workers=workers, subset=keep) as cut, \
            BatchStream(images[keep], labels[keep], **setting) as whole:
        for _ in range(6):
            a, b = next(cut), next(whole)
            assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert held_out(n, every).sum() == len(range(0, n, every)) and not held_out(n, 0).any()


@settings(deadline=None, max_examples=30)
@given(seed=st.integers(0, 99), n=st.integers(1, 30), starts=st.lists(st.integers(0, 200), min_size=1, max_size=8),
       size=st.integers(1, 70), balance=st.booleans())
def test_epoch_orders_slice_the_endless_stream_of_epochs(seed, n, starts, size, balance):
    labels = torch.arange(n) % 3
    groups = class_groups(labels) if balance else None
    orders = EpochOrders(seed, n, groups)
    endless = torch.cat([epoch_order(seed, e, n, groups) for e in range((max(starts) + size) // n + 1)])
    for start in sorted(starts):  # a stream only moves forward
        assert torch.equal(orders.take(start, start + size), endless[start:start + size])
    assert len(orders._orders) <= size // n + 2  # old epochs are forgotten


def test_memory_is_reused_only_once_nothing_holds_it():
    images, labels = data(40, 3, 1)
    setting = dict(seed=5, global_batch=4, grad_accum=1, rank=0, world=1, flip=True, balance_classes=False,
                   device=CPU, num_workers=2, prefetch=1)
    with BatchStream(images, labels, **setting) as stream:
        kept = []
        for _ in range(12):  # more micro-batches than the stream keeps buffers for
            mb = next(stream)
            kept.append((mb.x[1:3], mb.x[1:3].clone()))  # only a view survives, and its value when handed out
        assert all(torch.equal(view, value) for view, value in kept)
        del kept, mb
        for _ in range(2 * 1 + 1):  # built while all kept memory was held: fresh
            next(stream)
        addresses = {next(stream).x.data_ptr() for _ in range(20)}  # nothing held: recycled
        assert addresses <= {t.data_ptr() for t in stream._outputs.kept}


def test_without_a_storage_use_count_nothing_is_reused_and_batches_are_the_same(monkeypatch):
    # the documented fallback for a torch without the private torch._C._storage_Use_Count
    images, labels = data(40, 3, 1)
    setting = dict(seed=5, global_batch=4, grad_accum=1, rank=0, world=1, flip=True, balance_classes=False,
                   device=CPU, num_workers=2, prefetch=1)
    with BatchStream(images, labels, **setting) as stream:
        reference = [next(stream).x.clone() for _ in range(12)]
    monkeypatch.delattr(torch._C, "_storage_Use_Count")
    with BatchStream(images, labels, **setting) as stream:
        batches = [next(stream).x for _ in range(12)]
        assert len({b.data_ptr() for b in batches}) == 12  # every one fresh while all are held ...
        del batches[:]
        fresh = {next(stream).x.data_ptr() for _ in range(8)}
        assert not fresh & {t.data_ptr() for t in stream._outputs.kept}  # ... and none handed out again
    with BatchStream(images, labels, **setting) as stream:
        assert all(torch.equal(next(stream).x, r) for r in reference)


def test_workers_stop_on_close_and_on_leaving_the_context():
    images, labels = data(20, 3, 0)
    stream = BatchStream(images, labels, seed=0, global_batch=4, grad_accum=1, rank=0, world=1, flip=True,
                         balance_classes=False, device=CPU, num_workers=2, prefetch=3)
    next(stream)
    assert len(data_threads()) == 2
    stream.close()
    stream.close()  # idempotent
    assert data_threads() == []
    with pytest.raises(StreamError, match="closed"):
        next(stream)
    with BatchStream(images, labels, seed=0, global_batch=4, grad_accum=1, rank=0, world=1, flip=True,
                     balance_classes=False, device=CPU, num_workers=2) as stream:
        next(stream)
    assert data_threads() == []


@pytest.mark.parametrize("workers", [0, 2])
def test_a_failing_gather_is_one_error_naming_the_micro_batch(workers):
    images, labels = data(10, 2, 0)
    labels = torch.cat([labels, labels])  # indices 10..19 have labels but no images
    stream = BatchStream(images, labels, seed=1, global_batch=20, grad_accum=2, rank=0, world=1, flip=False,
                         balance_classes=False, device=CPU, start_step=3, num_workers=workers)
    with pytest.raises(StreamError, match=r"micro-batch 0 of step 3 failed: (IndexError|RuntimeError): .*index") as err:
        next(stream)
    assert err.value.__cause__ is not None
    assert data_threads() == []  # the stream closed itself
    with pytest.raises(StreamError, match="closed"):
        next(stream)


def test_bad_shapes_are_refused():
    images, labels = data(10, 2, 0)
    with pytest.raises(ValueError, match="not divisible by world size 2 x grad_accum 2"):
        BatchStream(images, labels, seed=0, global_batch=6, grad_accum=2, rank=0, world=2, flip=False,
                    balance_classes=False, device=CPU)
    with pytest.raises(ValueError, match="empty"):
        EpochOrders(0, 0)


def image_folder(root: Path, classes: int, per_class: int, shape: tuple[int, int], seed: int) -> Path:
    """A class-folder data set of random images: root/c<k>/<i>.png."""
    rng = np.random.default_rng(seed)
    for k in range(classes):
        (root / f"c{k}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(root / f"c{k}" / f"{i}.png")
    return root


def test_training_with_workers_repeats_training_without(tmp_path: Path):
    """The trainer end to end: background workers, flips and grad accumulation change nothing."""
    from pixdiff.recipe import load_recipe
    from pixdiff.runtime.distributed import Dist
    from pixdiff.train import Trainer

    image_folder(tmp_path / "imgs", 3, 5, (16, 20), seed=0)
    tiny = ["model.backbone.depth=1", "model.backbone.dim=16", "model.backbone.num_heads=2",
            "model.backbone.image_size=16", "model.head.width=4", "train.global_batch=6", "train.grad_accum=2",
            "train.max_steps=4", "train.log_every=1", "train.sample_every=0", "train.ckpt_every=100",
            f"data.source={tmp_path / 'imgs'}", f"data.cache_dir={tmp_path / 'cache'}", "data.flip=true"]
    weights = []
    for workers in (0, 2):
        recipe = load_recipe("emoji_tiny", [*tiny, f"train.num_workers={workers}"])
        trainer = Trainer(recipe, tmp_path / f"run{workers}", Dist(), progress=False)
        trainer.fit()
        weights.append(trainer.net.model.state_dict())
        assert data_threads() == []  # run() closes its stream
    for k, v in weights[0].items():
        assert torch.equal(v, weights[1][k]), k


def test_a_trainer_with_holdout_never_draws_a_held_out_image(tmp_path: Path):
    from pixdiff.recipe import load_recipe
    from pixdiff.runtime.distributed import Dist
    from pixdiff.train import Trainer

    image_folder(tmp_path / "imgs", 2, 6, (16, 16), seed=1)
    recipe = load_recipe("emoji_tiny", ["model.backbone.depth=1", "model.backbone.dim=16", "model.backbone.num_heads=2",
                                        "model.backbone.image_size=16", "model.head.width=4", "train.global_batch=4",
                                        "train.sample_every=0", f"data.source={tmp_path / 'imgs'}",
                                        f"data.cache_dir={tmp_path / 'cache'}", "data.flip=false", "data.holdout=3"])
    with Trainer(recipe, tmp_path / "run", Dist(), progress=False) as trainer:
        cache = trainer.cache
        pixels = cache.images.float().div(127.5).sub(1.0).flatten(1)  # (12, 3 * 16 * 16)
        drawn = {int((pixels == row.flatten()).all(1).nonzero()) for _ in range(12) for row in next(trainer.stream).x}
    out = set(held_out(len(pixels), 3).nonzero().flatten().tolist())
    assert out == {0, 3, 6, 9} and drawn and not drawn & out and drawn <= set(range(12)) - out
