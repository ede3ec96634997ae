import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pixdiff.checkpoints import store as checkpoint
from pixdiff.checkpoints.loader import load_model
from pixdiff.recipe import TrainConfig, load_recipe
from pixdiff.runtime.distributed import Dist
from pixdiff.train import Trainer
from pixdiff.train.ema import ema_update

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.backbone.depth=2", "model.backbone.dim=32", "model.backbone.num_heads=2",
        "model.backbone.image_size=16", "model.head.width=8", "train.global_batch=8", "train.log_every=1",
        "train.sample_every=0", "train.warmup_steps=0", "train.lr=2e-3", "train.max_steps=3"]


@settings(deadline=None, max_examples=50)
@given(decays=st.lists(st.floats(0.0, 0.999), min_size=2, max_size=2, unique=True), k=st.integers(1, 12),
       skipped=st.sets(st.integers(1, 12)))
def test_two_emas_follow_their_closed_form(decays, k, skipped):
    # live weights p_j = j after step j; a skipped step (keep=0) leaves every EMA as it was
    emas = [[torch.zeros(3, dtype=torch.float64)] for _ in decays]
    for j in range(1, k + 1):
        keep = torch.tensor(0.0 if j in skipped else 1.0, dtype=torch.float64)
        ema_update(emas, [torch.full((3,), float(j), dtype=torch.float64)], tuple(decays), keep)
    applied = [j for j in range(1, k + 1) if j not in skipped]
    for (ema,), d in zip(emas, decays):
        # e_k = sum over applied steps j of (1 - d) d^(applied steps after j) p_j
        expected = sum((1 - d) * d ** (len(applied) - 1 - n) * j for n, j in enumerate(applied))
        torch.testing.assert_close(ema, torch.full((3,), expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_ema_decays_are_checked():
    for bad in ((), (1.0,), (0.9, 0.9), (-0.1,)):
        with pytest.raises(ValueError, match="ema_decays"):
            TrainConfig(ema_decays=bad)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three 3-step runs: EMAs (0.9, 0.5) together, and each alone."""
    root = tmp_path_factory.mktemp("ema")
    out = {}
    for decays in ("(0.9, 0.5)", "(0.9,)", "(0.5,)"):
        recipe = load_recipe("emoji_tiny", [*TINY, f"data.cache_dir={root / 'cache'}", f"train.ema_decays={decays}"])
        Trainer(recipe, root / decays, Dist(), progress=False).fit()
        out[decays] = root / decays
    return out


def test_each_ema_is_the_one_a_run_with_only_that_decay_keeps(runs):
    both = checkpoint.load(runs["(0.9, 0.5)"] / "checkpoints" / "step_00000003.pt")
    alone = {d: checkpoint.load(runs[f"({d},)"] / "checkpoints" / "step_00000003.pt")["ema"] for d in ("0.9", "0.5")}
    assert set(both["ema_extra"]) == {"0.5"}
    for k in both["model"]:
        assert torch.equal(both["ema"][k], alone["0.9"][k]), k
        assert torch.equal(both["ema_extra"]["0.5"][k], alone["0.5"][k]), k
    assert any(not torch.equal(both["ema"][k], both["ema_extra"]["0.5"][k]) for k in both["model"])


def test_sample_picks_the_ema_by_decay(runs):
    run = runs["(0.9, 0.5)"]
    ckpt = checkpoint.load(run / "checkpoints" / "step_00000003.pt")
    for decay, expected in ((None, ckpt["ema"]), (0.9, ckpt["ema"]), (0.5, ckpt["ema_extra"]["0.5"])):
        model, _, _ = load_model(run, ema=decay)
        assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items()), decay
    res = subprocess.run([sys.executable, "-m", "pixdiff.cli", "sample", str(run), "--out", str(run / "s"),
                          "--ema", "0.7", "--device", "cpu"], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "no EMA with decay 0.7" in res.stderr and "0.9, 0.5" in res.stderr
    assert not (run / "s").exists()
