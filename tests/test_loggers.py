"""TensorBoard and Weights & Biases (offline) get the metrics rows and the sample grids; a resumed run
continues the same W&B run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.backbone.depth=2", "model.backbone.dim=32", "model.backbone.num_heads=2",
        "model.backbone.image_size=16", "model.head.width=8", "train.global_batch=8", "train.log_every=2",
        "train.sample_every=2", "train.tensorboard=true", "train.wandb=true"]


def train(out: Path, cache: Path, *extra: str, resume: bool = False) -> subprocess.CompletedProcess:
    sets = [a for s in [*TINY, f"data.cache_dir={cache}", *extra] for a in ("--set", s)]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run([sys.executable, "-m", "pixdiff.cli", "train", "emoji_tiny", *sets, "--out", str(out),
                           "--no-progress", *(["--resume"] if resume else [])],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


def test_tensorboard_and_wandb_get_scalars_and_sample_grids(tmp_path):
    pytest.importorskip("wandb")
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    run = tmp_path / "run"
    done = train(run, tmp_path / "cache", "train.max_steps=4")
    assert done.returncode == 0, done.stderr[-2000:]
    tb = event_accumulator.EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    tb.Reload()
    import json

    rows = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e.step for e in tb.Scalars("loss")] == rows and rows[-1] == 4
    assert [e.step for e in tb.Images("samples")] == [2, 4]
    run_id = (run / "wandb_id").read_text()
    first = list((run / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(first) == 1 and b"loss" in (first[0] / f"run-{run_id}.wandb").read_bytes()
    assert sorted(p.name.split("_")[1] for p in (first[0] / "files" / "media" / "images").glob("samples_*.png")) \
        == ["2", "4"]
    done = train(run, tmp_path / "cache", "train.max_steps=6", resume=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (run / "wandb_id").read_text() == run_id  # the same W&B run continues
    assert len(list((run / "wandb").glob(f"offline-run-*-{run_id}"))) == 2
