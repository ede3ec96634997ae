"""Signals stop a run at a step boundary with a checkpoint (SIGINT 130, SIGTERM 143, SIGUSR1 0 and a
requeue hint); a resume from it repeats the uninterrupted run bit for bit; a second Ctrl-C aborts."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from pixdiff.checkpoints import store as checkpoint
from pixdiff.recipe import load_recipe
from pixdiff.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.backbone.depth=2", "model.backbone.dim=32", "model.backbone.num_heads=2",
        "model.backbone.image_size=16", "model.head.width=8", "train.global_batch=8", "train.sample_every=0",
        "train.warmup_steps=0", "train.lr=2e-3", "train.log_every=5", "train.ckpt_every=1000"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def sets(cache_dir: Path, *extra: str) -> list[str]:
    return [a for o in [*TINY, f"data.cache_dir={cache_dir}", *extra] for a in ("--set", o)]


def rows(run: Path) -> list[dict]:
    return [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]


def start(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_rows(run: Path, n: int, proc: subprocess.Popen) -> None:
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        log = run / "metrics.jsonl"
        if log.exists() and len(log.read_text().splitlines()) >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"no {n} rows in time: {proc.poll()}")


def train_cmd(out: Path, cache_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pixdiff.cli", "train", "emoji_tiny", "--out", str(out), "--no-progress",
            "--device", "cpu", *sets(cache_dir, *extra)]


def test_sigterm_checkpoints_exits_143_and_the_resume_is_bit_identical(cache_dir, tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert subprocess.run(train_cmd(full, cache_dir, "train.max_steps=120"), cwd=ROOT, env=ENV,
                          capture_output=True, timeout=300).returncode == 0
    proc = start(train_cmd(cut, cache_dir, "train.max_steps=120"))
    wait_for_rows(cut, 4, proc)  # steps 1, 5, 10, 15 logged
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    line = out.strip().splitlines()[-1]
    m = re.fullmatch(r"interrupted by SIGTERM at step (\d+): checkpoint (\S+); continue with --resume", line)
    assert m, out
    step, path = int(m[1]), Path(m[2])
    assert 15 <= step < 120 and path == cut / "checkpoints" / f"step_{step:08d}.pt"
    assert checkpoint.load(path)["step"] == step and "Traceback" not in err

    res = subprocess.run(train_cmd(cut, cache_dir, "train.max_steps=120") + ["--resume"], cwd=ROOT, env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    steps = [r["step"] for r in rows(cut)]
    assert steps == sorted(set(steps)) and steps == [r["step"] for r in rows(full)]  # no row twice
    assert rows(cut)[-1]["loss"] == rows(full)[-1]["loss"]
    a = checkpoint.load(cut / "checkpoints" / "step_00000120.pt")
    b = checkpoint.load(full / "checkpoints" / "step_00000120.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]) and torch.equal(a["ema"][k], b["ema"][k]), k


def test_sigusr1_checkpoints_and_exits_0_with_a_requeue_hint(cache_dir, tmp_path):
    run = tmp_path / "run"
    proc = start(train_cmd(run, cache_dir, "train.max_steps=100000"))
    wait_for_rows(run, 2, proc)
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    m = re.search(r"stopped by SIGUSR1 at step (\d+): checkpoint (\S+); requeue the job with --resume", out)
    assert m and checkpoint.load(Path(m[2]))["step"] == int(m[1]), out


@pytest.fixture(scope="module")
def recipe(cache_dir):
    return load_recipe("emoji_tiny", [*TINY, f"data.cache_dir={cache_dir}", "train.max_steps=50"])


def send_at(step: int, *signals: int):
    """A callback that sends itself `signals` after `step` (as a terminal or a scheduler would)."""
    def callback(trainer, event):
        if event.kind == "step" and event.step == step:
            for sig in signals:
                os.kill(os.getpid(), sig)
    return callback


def test_sigint_stops_the_library_fit_and_restores_the_callers_handler(recipe, tmp_path):
    def mine(*_):
        pass

    signal.signal(signal.SIGINT, mine)
    try:
        result = Trainer(recipe, tmp_path / "run", progress=False).fit([send_at(3, signal.SIGINT)])
        assert (result.step, result.stopped_by, result.exit_code) == (3, signal.SIGINT, 130)
        assert checkpoint.load(result.checkpoint)["step"] == 3
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def test_a_second_ctrl_c_aborts_at_once_leaving_no_temp_file(recipe, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        Trainer(recipe, run, progress=False).fit([send_at(3, signal.SIGINT, signal.SIGINT)])
    assert not (run / "checkpoints").exists() or not list((run / "checkpoints").iterdir())
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_fit_in_a_worker_thread_installs_no_handlers(recipe, tmp_path):
    results = []
    thread = threading.Thread(target=lambda: results.append(Trainer(recipe, tmp_path / "run", progress=False).fit()))
    thread.start()
    thread.join()
    assert results and results[0].step == 50 and results[0].stopped_by == 0


def child_pids(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def test_under_torchrun_a_signal_to_one_rank_stops_both_at_the_same_step(cache_dir, tmp_path):
    run = tmp_path / "run"
    proc = start([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                  *train_cmd(run, cache_dir, "train.max_steps=100000")[1:]])
    wait_for_rows(run, 2, proc)
    workers = child_pids(proc.pid)
    assert len(workers) == 2, workers
    os.kill(workers[-1], signal.SIGUSR1)  # one rank only, whichever it is
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    m = re.search(r"stopped by SIGUSR1 at step (\d+): checkpoint (\S+);", out)
    assert m and out.count("stopped by SIGUSR1") == 1, out
    assert checkpoint.load(Path(m[2]))["step"] == int(m[1])


def test_sigterm_to_torchrun_itself_reaches_both_ranks_and_leaves_a_checkpoint(cache_dir, tmp_path):
    """What a scheduler does: signal the launcher. torchrun forwards SIGTERM to its workers and waits
    for them (30 s by default) before SIGKILL; the ranks stop at one step well within that."""
    run = tmp_path / "run"
    proc = start([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                  *train_cmd(run, cache_dir, "train.max_steps=100000")[1:]])
    wait_for_rows(run, 2, proc)
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, "a SIGTERM is a stop, not a success"
    m = re.search(r"interrupted by SIGTERM at step (\d+): checkpoint (\S+);", out)
    assert m and out.count("interrupted by SIGTERM") == 1, out + err[-3000:]
    assert checkpoint.load(Path(m[2]))["step"] == int(m[1])
    assert rows(run)[-1]["step"] <= int(m[1])
