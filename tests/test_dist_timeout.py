"""A stalled rank ends the job after PIXDIFF_DIST_TIMEOUT seconds instead of hanging it forever."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pixdiff.cli import app
from pixdiff.runtime.distributed import DistError, collective_timeout

ROOT = Path(__file__).resolve().parents[1]
STALL = """
import sys, time
import torch, torch.distributed as dist
from pixdiff.runtime.distributed import setup
d = setup("cpu")
if d.rank == 1:
    time.sleep(120)  # a stalled rank: never joins the collective
t0 = time.time()
try:
    dist.all_reduce(torch.ones(1))
except Exception:
    print(f"rank 0 gave up after {time.time() - t0:.1f} s", flush=True)
    sys.exit(3)
"""


def test_a_collective_gives_up_on_a_stalled_rank_after_the_timeout(tmp_path):
    script = tmp_path / "stall.py"
    script.write_text(STALL)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PIXDIFF_DIST_TIMEOUT": "3", "PYTHONPATH": str(ROOT)}
    t0 = time.time()
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                          str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=100)
    assert res.returncode != 0 and time.time() - t0 < 90
    waited = float(re.search(r"rank 0 gave up after ([\d.]+) s", res.stdout)[1])
    assert 2.5 <= waited < 30, res.stdout


def test_the_timeout_setting_is_checked(monkeypatch):
    monkeypatch.delenv("PIXDIFF_DIST_TIMEOUT", raising=False)
    assert collective_timeout().total_seconds() == 600
    monkeypatch.setenv("PIXDIFF_DIST_TIMEOUT", "2.5")
    assert collective_timeout().total_seconds() == 2.5
    for bad in ("abc", "0", "-1", "inf", "nan"):
        monkeypatch.setenv("PIXDIFF_DIST_TIMEOUT", bad)
        with pytest.raises(DistError, match="PIXDIFF_DIST_TIMEOUT"):
            collective_timeout()
    res = CliRunner().invoke(app, ["train", "emoji_tiny", "--out", "never", "--no-progress", "--device", "cpu"])
    assert res.exit_code == 2 and res.stderr.strip().splitlines() == [
        "error: PIXDIFF_DIST_TIMEOUT='nan' must be a positive number of seconds"]
    assert not Path("never").exists()
