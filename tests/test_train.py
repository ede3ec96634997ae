import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pixdiff.checkpoints import store as checkpoint
from pixdiff.config.tree import from_dict
from pixdiff.recipe import load_recipe
from pixdiff.runtime.distributed import Dist
from pixdiff.train import Trainer, TrainingError, class_groups, epoch_order, global_batch_indices

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.backbone.depth=2", "model.backbone.dim=32", "model.backbone.num_heads=2",
        "model.backbone.image_size=16", "model.head.width=8", "train.global_batch=8", "train.log_every=1",
        "train.sample_every=0", "train.warmup_steps=0", "train.lr=2e-3"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def tiny(cache_dir: Path, *extra: str) -> list[str]:
    return [*TINY, f"data.cache_dir={cache_dir}", *extra]


def cli(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "pixdiff.cli", *args], capture_output=True, text=True,
                          env=env, cwd=kw.pop("cwd", ROOT), timeout=kw.pop("timeout", 300), **kw)


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def losses(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def test_global_batches_cover_each_epoch_once():
    seen = torch.cat([global_batch_indices(0, s, 8, 20) for s in range(5)])  # 40 = two epochs
    assert sorted(seen[:20].tolist()) == list(range(20)) == sorted(seen[20:].tolist())
    assert not torch.equal(seen[:20], seen[20:])


@settings(deadline=None, max_examples=30)
@given(counts=st.lists(st.integers(0, 12), min_size=1, max_size=5).filter(any), seed=st.integers(0, 99),
       epoch=st.integers(0, 9))
def test_balanced_epochs_give_every_class_an_equal_share(counts, seed, epoch):
    labels = torch.cat([torch.full((n,), k) for k, n in enumerate(counts)])
    groups = class_groups(labels)
    order = epoch_order(seed, epoch, len(labels), groups)
    assert len(order) == len(labels)
    present = [k for k, n in enumerate(counts) if n]
    drawn = torch.bincount(labels[order], minlength=len(counts))
    share = len(labels) // len(present)
    assert all(share <= drawn[k] <= share + 1 for k in present)
    for k in present:  # no image of a class is drawn twice before all of that class were drawn once
        mine = order[labels[order] == k]
        n = counts[k]
        assert torch.bincount(mine, minlength=len(labels)).max() <= -(-len(mine) // n)
    assert torch.equal(order, epoch_order(seed, epoch, len(labels), groups))


@pytest.mark.parametrize("balance", [False, True])
def test_trainer_draws_classes_as_the_recipe_says(cache_dir, tmp_path, balance):
    # global batch 7 divides the 3,773 emoji, so these steps are exactly one epoch
    recipe = load_recipe("emoji_tiny", tiny(cache_dir, "train.global_batch=7", "data.source=emoji",
                                            f"data.balance_classes={balance}"))
    trainer = Trainer(recipe, tmp_path / "run", Dist(), progress=False)
    n, info = trainer.cache.info.count, trainer.cache.info
    assert n % 7 == 0
    labels = torch.cat([next(trainer.stream).y for _ in range(n // 7)])
    drawn = torch.bincount(labels, minlength=info.num_classes).tolist()
    if balance:
        assert all(n // info.num_classes <= c <= n // info.num_classes + 1 for c in drawn)
    else:
        assert drawn == list(info.class_counts)


def test_cli_training_run_loss_falls_and_writes_everything(cache_dir, tmp_path):
    out = tmp_path / "run"
    res = cli("train", "emoji_tiny", "--out", str(out), "--no-progress",
              *sets(tiny(cache_dir, "train.max_steps=40", "train.sample_every=40", "sample.steps=4",
                         "sample.grid_images=9")))
    assert res.returncode == 0, res.stderr
    trace = [loss for _, loss in losses(out)]
    assert len(trace) == 40
    assert sum(trace[-5:]) / 5 < 0.8 * sum(trace[:5]) / 5, trace
    assert (out / "loss.png").stat().st_size > 0 and (out / "samples" / "step_00000040.png").is_file()
    ckpt = checkpoint.load(out / "checkpoints" / "step_00000040.pt")
    assert ckpt["step"] == 40 and from_dict(ckpt["recipe"]).train.max_steps == 40
    assert torch.load(out / "checkpoints" / "step_00000040.pt", weights_only=True)["format"] == "pixdiff-1"
    assert json.loads((out / "recipe.json").read_text())["model"]["backbone"]["dim"] == 32
    assert "samples:" in res.stdout


def test_kill_drill_resume_repeats_the_uninterrupted_run(cache_dir, tmp_path):
    args = sets(tiny(cache_dir, "train.max_steps=14", "train.ckpt_every=3"))
    full = tmp_path / "full"
    assert cli("train", "emoji_tiny", "--out", str(full), "--no-progress", *args).returncode == 0

    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pixdiff.cli", "train", "emoji_tiny", "--out", str(killed),
                             "--no-progress", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:
        log = killed / "metrics.jsonl"
        if log.exists() and len(log.read_text().splitlines()) >= 8:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpts = sorted((killed / "checkpoints").glob("step_*.pt"))
    others = set((killed / "checkpoints").iterdir()) - set(ckpts)
    # a kill mid-write may leave only a hidden temp file; a final name always holds a complete checkpoint
    assert ckpts and all(p.name.startswith(".step_") and p.suffix == ".tmp" for p in others), others
    for p in ckpts:
        checkpoint.load(p)
    assert len(losses(killed)) < 14
    (killed / "checkpoints" / ".step_00000099.pt.x.tmp").write_bytes(b"half")  # as if killed mid-write


    res = cli("train", "emoji_tiny", "--out", str(killed), "--no-progress", "--resume", *args)
    assert res.returncode == 0, res.stderr
    assert losses(killed) == losses(full)
    assert not list((killed / "checkpoints").glob(".*.tmp"))  # resume cleared what the kill left
    a = checkpoint.load(killed / "checkpoints" / "step_00000014.pt")
    b = checkpoint.load(full / "checkpoints" / "step_00000014.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
        assert torch.equal(a["ema"][k], b["ema"][k]), k


def test_resume_refuses_a_different_model_and_a_fresh_run_refuses_a_used_folder(cache_dir, tmp_path):
    out = tmp_path / "run"
    args = sets(tiny(cache_dir, "train.max_steps=2"))
    assert cli("train", "emoji_tiny", "--out", str(out), "--no-progress", *args).returncode == 0
    res = cli("train", "emoji_tiny", "--out", str(out), "--no-progress", *args)
    assert res.returncode == 2 and "already holds checkpoints" in res.stderr
    res = cli("train", "emoji_tiny", "--out", str(out), "--no-progress", "--resume", *args,
              "--set", "model.backbone.depth=3")
    assert res.returncode == 2 and "cannot change model.backbone.depth 2 -> 3" in res.stderr
    res = cli("train", "emoji_tiny", "--out", str(tmp_path / "empty"), "--no-progress", "--resume", *args)
    assert res.returncode == 2 and "no checkpoint" in res.stderr


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_distributed_drill_two_gloo_ranks_match_one_process(cache_dir, tmp_path, parallel):
    args = sets(tiny(cache_dir, "train.max_steps=3", "train.grad_clip=1.0"))
    single = tmp_path / "single"
    assert cli("train", "emoji_tiny", "--out", str(single), "--no-progress", *args).returncode == 0
    multi = tmp_path / parallel
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          # --standalone: the rendezvous asks the OS for a free port (no fixed port to collide on)
                          "--standalone", "-m", "pixdiff.cli", "train", "emoji_tiny",
                          "--out", str(multi), "--no-progress", "--device", "cpu",
                          *args, "--set", f"train.parallel={parallel}"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("trained steps 0-3 (3 this session)") == 1  # only rank 0 reports
    a = checkpoint.load(single / "checkpoints" / "step_00000003.pt")
    b = checkpoint.load(multi / "checkpoints" / "step_00000003.pt")
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], atol=1e-5, rtol=1e-4, msg=k)
        torch.testing.assert_close(a["ema"][k], b["ema"][k], atol=1e-5, rtol=1e-4, msg=k)
    # the logged loss is the global mean either way
    for (s1, l1), (s2, l2) in zip(losses(single), losses(multi)):
        assert s1 == s2 and abs(l1 - l2) < 1e-5


def test_nan_loss_stops_naming_the_step_and_keeps_a_good_checkpoint(cache_dir, tmp_path, monkeypatch):
    recipe = load_recipe("emoji_tiny", tiny(cache_dir, "train.max_steps=10", "train.ckpt_every=2"))
    trainer = Trainer(recipe, tmp_path / "run", Dist(), progress=False)
    real_loss = type(recipe.objective).loss
    calls = {"n": 0}

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        loss, stats = real_loss(self, *args, **kwargs)
        return (loss * float("nan") if calls["n"] == 6 else loss), stats

    monkeypatch.setattr(type(recipe.objective), "loss", flaky)
    with pytest.raises(TrainingError, match="loss is nan at step 6"):
        trainer.fit()
    ckpt = checkpoint.load(tmp_path / "run" / "checkpoints" / "step_00000005.pt")
    assert ckpt["step"] == 5
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_repa_term_trains_with_a_tiny_frozen_encoder(cache_dir, tmp_path):
    class Encoder(torch.nn.Module):  # a random stand-in for DINOv2: one token per 4 px patch
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 12, 4, stride=4)

        def forward(self, x):
            return self.conv(x).flatten(2).transpose(1, 2)  # (B, 16, 12)

    enc_path = tmp_path / "encoder.pt2"
    torch.export.save(torch.export.export(Encoder(), (torch.zeros(2, 3, 16, 16),),
                                          dynamic_shapes=({0: torch.export.Dim("batch")},)), str(enc_path))
    recipe = load_recipe("emoji_tiny", tiny(cache_dir, "train.max_steps=3", f"train.repa.encoder={enc_path}",
                                            "train.repa.block=0", "train.repa.proj_dim=12",
                                            "model.backbone.patch_size=4", "model.head.depth=2"))  # the encoder's grid
    trainer = Trainer(recipe, tmp_path / "run", Dist(), progress=False)
    before = {k: v.clone() for k, v in trainer.net.repa_projector.state_dict().items()}
    stats = trainer.step()
    assert "repa" in stats and -1.0 <= stats["repa"] <= 1.0
    assert any(not torch.equal(before[k], v) for k, v in trainer.net.repa_projector.state_dict().items())
    trainer.fit()
    ckpt = checkpoint.load(tmp_path / "run" / "checkpoints" / "step_00000003.pt")
    assert "repa_projector" in ckpt and not any(k.startswith("encoder") for k in ckpt["model"])


@pytest.mark.parametrize("args, message", [
    (["--set", "data.source=/nonexistent/folder"], "/nonexistent/folder"),
    (["--set", "train.learning_rate=1"], "unknown key 'train.learning_rate'"),
])
def test_bad_input_gets_one_clear_error(cache_dir, tmp_path, args, message):
    res = cli("train", "emoji_tiny", "--out", str(tmp_path / "run"), "--no-progress",
              *sets(tiny(cache_dir)), *args)
    assert res.returncode == 2
    assert message in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_missing_recipe_file_and_empty_class_folder(cache_dir, tmp_path):
    res = cli("train", "recipes/nope.py", "--out", str(tmp_path / "run"))
    assert res.returncode == 2 and "recipe file not found: recipes/nope.py" in res.stderr
    (tmp_path / "data" / "cats").mkdir(parents=True)
    (tmp_path / "data" / "dogs").mkdir()
    from PIL import Image

    Image.new("RGB", (20, 20), "red").save(tmp_path / "data" / "cats" / "a.png")
    res = cli("train", "emoji_tiny", "--out", str(tmp_path / "run"), "--no-progress",
              *sets(tiny(cache_dir, f"data.source={tmp_path / 'data'}")))
    assert res.returncode == 2 and "dogs" in res.stderr and "Traceback" not in res.stderr
