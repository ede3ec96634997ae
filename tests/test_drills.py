"""The fast drills of tools/drills.py (docs/drills.md holds the full table, kill drills included; the
payload drill runs in-process, with more files, in tests/test_safety.py)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import drills  # noqa: E402


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return drills.Work(tmp_path_factory.mktemp("drills"))


@pytest.mark.parametrize("drill", [drills.concurrent_writers, drills.bit_flip, drills.foreign_checkpoint,
                                   drills.finished_run_resumed,
                                   drills.sample_twice, drills.diverged_model],
                         ids=lambda d: d.__name__)
def test_drill_passes(work, drill):
    row = drill(work)
    assert row.passed, row
