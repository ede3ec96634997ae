"""train.eval_every: FD and KID of the first EMA in the metrics rows (and TensorBoard, W&B), without
touching the training: weights bit-identical to a run without scores, and a resume as bit-exact."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import pixdiff
from pixdiff.checkpoints import store as checkpoint
from pixdiff.data.reference import export
from pixdiff.eval import features
from pixdiff.config.tree import OverrideError
from pixdiff.recipe import load_recipe
from pixdiff.runtime.rng import preserved_rng
from pixdiff.train import Trainer, TrainingError

TINY = ["model.backbone.depth=2", "model.backbone.dim=32", "model.backbone.num_heads=2",
        "model.backbone.image_size=16", "model.head.width=8", "train.global_batch=8", "train.log_every=1",
        "train.sample_every=0", "train.warmup_steps=0", "train.max_steps=4", "sample.steps=3",
        "train.ckpt_every=2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("scores")
    return root / "cache", export("emoji", root / "ref.npz", 16, cache_dir=root / "cache", part=(0, 100))


@pytest.fixture(autouse=True)
def cache_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PIXDIFF_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "scores-home"))


def recipe(data, *extra: str):
    cache, ref = data
    return load_recipe("emoji_tiny", [*TINY, f"data.cache_dir={cache}", *(
        ["train.eval_num=4", f"train.eval_ref={ref}"] if extra else []), *extra])


def weights(run: Path, step: int = 4) -> dict[str, torch.Tensor]:
    ckpt = checkpoint.load(run / "checkpoints" / f"step_{step:08d}.pt")
    return {**{f"model.{k}": v for k, v in ckpt["model"].items()}, **{f"ema.{k}": v for k, v in ckpt["ema"].items()}}


def rows(run: Path) -> list[dict]:
    return [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]


def test_scores_are_logged_and_leave_the_weights_bit_identical(data, tmp_path):
    Trainer(recipe(data), tmp_path / "plain", progress=False).fit()
    Trainer(recipe(data, "train.eval_every=2"), tmp_path / "scored", progress=False).fit()
    plain, scored = weights(tmp_path / "plain"), weights(tmp_path / "scored")
    assert plain.keys() == scored.keys() and all(torch.equal(plain[k], scored[k]) for k in plain)
    logged = rows(tmp_path / "scored")
    assert [r["step"] for r in logged if "eval/fd" in r] == [2, 4]
    assert all(np.isfinite([r["eval/fd"], r["eval/kid"]]).all() and r["eval/fd"] > 0 for r in logged if "eval/fd" in r)
    assert [r["loss"] for r in logged] == [r["loss"] for r in rows(tmp_path / "plain")]


def test_a_resumed_run_with_scores_is_bit_exact(data, tmp_path):
    whole = tmp_path / "whole"
    Trainer(recipe(data, "train.eval_every=2"), whole, progress=False).fit()
    split = tmp_path / "split"
    Trainer(recipe(data, "train.eval_every=2", "train.max_steps=2"), split, progress=False).fit()
    Trainer(recipe(data, "train.eval_every=2"), split, resume=True, progress=False).fit()
    a, b = weights(whole), weights(split)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [(r["step"], r.get("eval/fd")) for r in rows(split)] == [(r["step"], r.get("eval/fd")) for r in rows(whole)]


def test_scoring_moves_no_global_random_stream(data, tmp_path):
    """What the bit-identity rests on: building the extractor (its default init draws from torch's
    generator) and sampling leave torch's, numpy's and Python's global streams where they were."""
    with Trainer(recipe(data, "train.eval_every=2"), tmp_path / "run", progress=False) as tr:
        tr.step()  # step 1: no scores due yet, so the scorer is opened below
        features._load_extractor.cache_clear()  # built afresh inside: EfficientNet's init draws from torch's stream
        before = torch.random.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
        scores = tr.eval_scores()
        after = torch.random.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    assert set(scores) == {"eval/fd", "eval/kid"}
    assert torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1]) and before[2] == after[2]
    with preserved_rng():
        torch.nn.Linear(4, 4)
        np.random.rand()
        random.random()
    assert torch.equal(torch.random.get_rng_state(), after[0]) and random.getstate() == after[2]


def test_tensorboard_and_wandb_get_the_scores(data, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    Trainer(recipe(data, "train.eval_every=2", "train.tensorboard=true", "train.wandb=true"), run,
            progress=False).fit()
    tb = event_accumulator.EventAccumulator(str(run / "tensorboard"))
    tb.Reload()
    logged = {r["step"]: r for r in rows(run)}
    assert [(e.step, pytest.approx(e.value)) for e in tb.Scalars("eval/fd")] == [(s, logged[s]["eval/fd"]) for s in (2, 4)]
    assert [e.step for e in tb.Scalars("eval/kid")] == [2, 4]
    run_id = (run / "wandb_id").read_text()
    (found,) = (run / "wandb").glob(f"offline-run-*-{run_id}")
    assert b"eval/fd" in (found / f"run-{run_id}.wandb").read_bytes()


@pytest.mark.parametrize("overrides, error, message", [
    (["train.eval_every=3", "train.log_every=2"], OverrideError, "must be a multiple of train.log_every=2"),
    (["train.eval_every=2", "train.eval_ref="], OverrideError, "train.eval_every needs a reference"),
    (["train.eval_every=2", "train.eval_num=3"], OverrideError, "must be >= 4"),
])
def test_bad_score_settings_are_refused_when_parsed(data, overrides, error, message):
    with pytest.raises(error, match=message):
        recipe(data, *overrides)


@pytest.mark.parametrize("overrides, message", [
    (["train.eval_every=2", "train.eval_features=vgg"], "train.eval_features=vgg: unknown feature extractor"),
    (["train.eval_every=2", "train.eval_ref=/no/such/ref.npz"], "train.eval_ref=/no/such/ref.npz: no such file"),
])
def test_a_missing_reference_or_unknown_features_stop_before_the_data(data, tmp_path, overrides, message):
    with pytest.raises(TrainingError, match=message):
        Trainer(recipe(data, *overrides), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "recipe.json").exists()
