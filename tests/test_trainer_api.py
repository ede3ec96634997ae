"""The Trainer's public API: `step` and `fit` with callbacks, one path for the CLI and everyone else."""

from __future__ import annotations

import json

import pytest
import torch

import pixdiff
from pixdiff.checkpoints import store as checkpoint
from pixdiff.recipe import load_recipe
from pixdiff.train import Trainer, TrainingError

TINY = ["model.backbone.depth=2", "model.backbone.dim=32", "model.backbone.num_heads=2",
        "model.backbone.image_size=16", "model.head.width=8", "train.global_batch=8", "train.log_every=2",
        "train.sample_every=0", "train.warmup_steps=0", "train.lr=2e-3", "train.max_steps=6", "train.ckpt_every=3"]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    return load_recipe("emoji_tiny", [*TINY, f"data.cache_dir={tmp_path_factory.mktemp('cache')}"])


def weights(path):
    return checkpoint.load(path)["model"]


def test_step_by_step_equals_fit_and_callbacks_see_every_event_in_order(recipe, tmp_path):
    events = []
    result = Trainer(recipe, tmp_path / "fit", progress=False).fit([lambda tr, ev: events.append((ev.kind, ev.step))])
    by_hand = Trainer(recipe, tmp_path / "steps", progress=False)
    for _ in range(6):
        by_hand.step()
    manual = by_hand.fit()  # nothing left to train: only the end's checkpoint
    assert result.step == manual.step == 6
    a, b = weights(result.checkpoint), weights(manual.checkpoint)
    assert all(torch.equal(a[k], b[k]) for k in a)  # same process: bit-identical
    # rows at the first step, every log_every-th and the last; checkpoints every ckpt_every but the last
    assert [e for e in events if e[0] != "step"] == [("log", 1), ("log", 2), ("checkpoint", 3), ("log", 4),
                                                       ("log", 6), ("end", 6)]
    assert [s for k, s in events if k == "step"] == [1, 2, 3, 4, 5, 6]


def test_a_callback_stops_training_and_the_stop_is_checkpointed(recipe, tmp_path):
    result = Trainer(recipe, tmp_path / "run", progress=False).fit([lambda tr, ev: ev.kind == "step" and ev.step == 4])
    assert result.step == 4 and checkpoint.load(result.checkpoint)["step"] == 4
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 4]


def test_the_non_finite_stop_applies_to_step_too(recipe, tmp_path, monkeypatch):
    trainer = Trainer(recipe, tmp_path / "run", progress=False)
    trainer.step()
    real_loss = type(recipe.objective).loss

    def nan_loss(self, *args, **kwargs):
        loss, stats = real_loss(self, *args, **kwargs)
        return loss * float("nan"), stats

    monkeypatch.setattr(type(recipe.objective), "loss", nan_loss)
    with pytest.raises(TrainingError, match="at step 2"):
        trainer.step()  # step 2 is a log step: the check runs there
    trainer.close()


def test_the_root_package_exports_load_sample_and_trainer_lazily(recipe, tmp_path):
    Trainer(recipe, tmp_path / "run", progress=False).fit()
    run = pixdiff.load(tmp_path / "run")
    assert run.objective == recipe.objective and run.sampler == recipe.sample
    a = run.sample([0, 1, 2], seed=5, steps=3)
    b = run.sample(torch.tensor([0, 1, 2]), seed=5, steps=3)
    assert a.shape == (3, 3, 16, 16) and torch.equal(a, b) and a.abs().max() <= 1
    assert pixdiff.save_grid(a, tmp_path / "g.png").stat().st_size > 0
    with pytest.raises(ValueError, match="labels must lie in 0..8"):
        run.sample([9])
    with pytest.raises(pixdiff.recipe.RecipeError, match="sample.steps=0: must be > 0"):
        run.sample([0], steps=0)


def test_a_checkpoint_saved_by_a_callback_after_a_non_finite_step_stops_and_keeps_the_last_good(
        recipe, tmp_path, monkeypatch):
    recipe = pixdiff.replace(recipe, **{"train.log_every": 4, "train.ckpt_every": 100})
    real_loss = type(recipe.objective).loss
    calls = {"n": 0}

    def nan_at_2(self, *args, **kwargs):
        calls["n"] += 1
        loss, stats = real_loss(self, *args, **kwargs)
        return (loss * float("nan") if calls["n"] == 2 else loss), stats

    monkeypatch.setattr(type(recipe.objective), "loss", nan_at_2)
    def save_every_step(trainer, event):
        if event.kind == "step":
            trainer.save_checkpoint()

    with pytest.raises(TrainingError, match=r"loss is nan at step 2 .* Last good checkpoint: .*step_00000001.pt"):
        Trainer(recipe, tmp_path / "run", progress=False).fit([save_every_step])
    files = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert files == ["step_00000001.pt"]  # not step 2 (its update was skipped), and step 1 kept
    last_good = checkpoint.load(tmp_path / "run" / "checkpoints" / files[0])
    assert last_good["step"] == 1 and all(torch.isfinite(v).all() for v in last_good["model"].values())


def test_pruning_keeps_the_checkpoint_just_written_whatever_newer_names_lie_around(tmp_path):
    from pixdiff.runtime.distributed import Dist
    from pixdiff.train import checkpointing

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for step in (1, 2, 7, 8):  # 7 and 8: files of steps a stop undid, or damaged ones a resume skipped
        (folder / f"step_{step:08d}.pt").write_bytes(b"x")
    checkpointing.save(tmp_path, {"step": 3, "model": {}}, Dist())
    assert sorted(p.name for p in folder.iterdir()) == ["step_00000002.pt", "step_00000003.pt", "step_00000007.pt",
                                                         "step_00000008.pt"]
