"""Without a terminal (a batch job's log file) training prints plain, flushed lines as it goes: a
header first, one line per metrics row, an honest summary; on a terminal the bar never shows nan."""

import io
import os
import re
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from pixdiff.train.metrics import Progress

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.backbone.depth=2", "model.backbone.dim=32", "model.backbone.num_heads=2",
        "model.backbone.image_size=16", "model.head.width=8", "train.global_batch=8", "train.sample_every=0",
        "train.warmup_steps=0", "train.log_every=20", "train.ckpt_every=1000"]


def train(out: Path, cache: Path, max_steps: int, *extra: str) -> subprocess.Popen:
    sets = [a for o in [*TINY, f"data.cache_dir={cache}", f"train.max_steps={max_steps}"] for a in ("--set", o)]
    return subprocess.Popen([sys.executable, "-m", "pixdiff.cli", "train", "emoji_tiny", "--out", str(out),
                             "--device", "cpu", *sets, *extra], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def read_lines(proc: subprocess.Popen) -> list[tuple[str, bool]]:
    """Each stdout line as it arrives, and whether the process was still running then."""
    lines = [(line.rstrip("\n"), proc.poll() is None) for line in proc.stdout]
    proc.wait(timeout=60)
    return lines


def test_a_pipe_gets_a_header_a_line_per_row_while_training_and_a_summary(tmp_path):
    run = tmp_path / "run"
    proc = train(run, tmp_path / "cache", 300)  # no --no-progress: stdout is a pipe, not a terminal
    lines = read_lines(proc)
    assert proc.returncode == 0, proc.stderr.read()
    text = [line for line, _ in lines]
    assert text[0].startswith(f"train {run} (new run, to step 300): cpu x 1, fp32, ") and "parameters" in text[0]
    assert re.search(r"data emoji:picked \([\d,]+ images, 16 px\)", text[0]), text[0]
    rows = [(line, live) for line, live in lines if line.startswith("step ")]
    assert [int(re.match(r"step (\d+)/300", line)[1]) for line, _ in rows] == [1, *range(20, 301, 20)]
    assert all(re.fullmatch(r"step \d+/300  loss \d\.\d{4}  lr \S+  [\d.]+ img/s  ETA (\d+:\d\d:\d\d|\?)", line)
               for line, _ in rows), rows[:3]
    assert all(live for _, live in rows[:5])  # printed (and flushed) while training, not at the end
    assert re.fullmatch(r"trained steps 0-300 \(300 this session\) in [\d.]+ s, final loss \d\.\d{4}", text[-2])

    proc = train(run, tmp_path / "cache", 340, "--resume", "--no-progress")
    text = [line for line, _ in read_lines(proc)]
    assert proc.returncode == 0, proc.stderr.read()
    assert text[0].startswith(f"train {run} (resumed from step 300, to step 340)")
    assert [line.split()[1] for line in text if line.startswith("step ")] == ["320/340", "340/340"]
    assert text[-2].startswith("trained steps 300-340 (40 this session) in ")


def test_the_live_bar_does_not_start_at_loss_nan():
    out = io.StringIO()
    with Progress(100, 0, mode="bar", console=Console(file=out, force_terminal=True, width=120)):
        pass
    assert "loss -" in out.getvalue() and "nan" not in out.getvalue()
