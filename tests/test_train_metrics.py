"""metrics.jsonl rows are window means; TensorBoard mirrors them; a resume logs the same rows; a
non-finite step is skipped on the device and stops the run at the next log step."""

import itertools
import json
import shutil
from pathlib import Path

import pytest
import torch

from pixdiff.checkpoints import store as checkpoint
from pixdiff.recipe import load_recipe
from pixdiff.runtime.distributed import Dist
from pixdiff.train import Trainer, TrainingError

TINY = ["model.backbone.depth=2", "model.backbone.dim=32", "model.backbone.num_heads=2",
        "model.backbone.image_size=16", "model.head.width=8", "train.global_batch=8",
        "train.sample_every=0", "train.warmup_steps=0", "train.lr=2e-3"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def run(cache_dir: Path, out: Path, *extra: str, resume: bool = False) -> list[dict]:
    recipe = load_recipe("emoji_tiny", [*TINY, f"data.cache_dir={cache_dir}", *extra])
    Trainer(recipe, out, Dist(), progress=False, resume=resume).fit()
    return rows(out)


def rows(out: Path) -> list[dict]:
    return [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def every_step(cache_dir, tmp_path_factory):
    return run(cache_dir, tmp_path_factory.mktemp("every") / "run", "train.max_steps=7", "train.log_every=1")


def test_rows_are_means_over_the_log_window_and_tensorboard_has_the_same(cache_dir, tmp_path, every_step):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    windowed = run(cache_dir, out, "train.max_steps=7", "train.log_every=3", "train.tensorboard=true")
    assert [r["step"] for r in windowed] == [1, 3, 6, 7]  # the first step, every 3rd, the last
    per_step = {r["step"]: r for r in every_step}
    for row, window in zip(windowed, [(1,), (2, 3), (4, 5, 6), (7,)]):
        for key in ("loss", "grad_norm"):
            assert row[key] == pytest.approx(sum(per_step[s][key] for s in window) / len(window), abs=2e-6), key
        assert row["img_per_s"] > 0 and row["lr"] == 2e-3
    events = EventAccumulator(str(out / "tensorboard")).Reload()
    for tag in ("loss", "lr", "grad_norm", "img_per_s"):
        scalars = events.Scalars(tag)
        assert [e.step for e in scalars] == [1, 3, 6, 7], tag
        assert [e.value for e in scalars] == pytest.approx([r[tag] for r in windowed], rel=1e-6), tag


def test_a_resume_inside_a_log_window_logs_the_rows_of_the_uninterrupted_run(cache_dir, tmp_path):
    args = ("train.max_steps=8", "train.log_every=4", "train.ckpt_every=3")
    full = run(cache_dir, tmp_path / "full", *args)
    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    (tmp_path / "cut" / "checkpoints" / "step_00000008.pt").unlink()  # as if killed after the step-6 checkpoint
    resumed = run(cache_dir, tmp_path / "cut", *args, resume=True)  # its window at step 6 holds steps 5 and 6
    assert [(r["step"], r["loss"], r["grad_norm"]) for r in resumed] == [
        (r["step"], r["loss"], r["grad_norm"]) for r in full]


def test_a_nan_step_is_skipped_on_device_and_stops_the_run_at_the_next_log_step(cache_dir, tmp_path, monkeypatch):
    clean = tmp_path / "clean"
    run(cache_dir, clean, "train.max_steps=1")
    recipe = load_recipe("emoji_tiny", [*TINY, f"data.cache_dir={cache_dir}", "train.max_steps=10",
                                        "train.log_every=5", "train.ckpt_every=100"])
    trainer = Trainer(recipe, tmp_path / "run", Dist(), progress=False)
    real, calls = type(recipe.objective).loss, itertools.count(1)

    def infinite_at_step_2(loss_and_stats, call):
        return (loss_and_stats[0] * (float("inf") if call == 2 else 1.0), loss_and_stats[1])

    monkeypatch.setattr(type(recipe.objective), "loss",
                        lambda self, *a, **k: infinite_at_step_2(real(self, *a, **k), next(calls)))
    with pytest.raises(TrainingError, match="loss is inf at step 2"):
        trainer.fit()
    assert next(calls) == 6  # steps 3-5 ran (no sync in between); the run stopped at the step-5 row
    assert [r["step"] for r in rows(tmp_path / "run")] == [1]
    kept = checkpoint.load(tmp_path / "run" / "checkpoints" / "step_00000001.pt")
    ref = checkpoint.load(clean / "checkpoints" / "step_00000001.pt")
    assert kept["step"] == 1
    for k in ref["model"]:  # no update after step 1 was applied: neither the bad one nor the later ones
        assert torch.equal(kept["model"][k], ref["model"][k]), k
        assert torch.equal(kept["ema"][k], ref["ema"][k]), k
    assert all(int(s["step"]) == 1 for s in kept["optimizer"]["state"].values())
