"""The denoising readout (pixdiff.eval.readout): closed forms for oracle models, the orthogonal band
split, fixed noise, and `pixdiff eval-readout` end to end on a tiny run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pixdiff.diffusion import DDPM, FlowMatching, XPrediction
from pixdiff.diffusion.objectives import broadcast_coefficients
from pixdiff.eval.readout import READOUT_TIMES, bands, denoising_readout, patch_means, to_psnr

ROOT = Path(__file__).resolve().parent.parent


def dyadic_images(seed: int, n: int = 6, size: int = 8) -> torch.Tensor:
    """float64 (n, 3, size, size) in [-1, 1] on a 1/64 grid: sums and means of 4- or 16-pixel
    patches are exact in float64, so closed forms hold bit for bit."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(-64, 65, (n, 3, size, size), generator=g) / 64).double()


def run(objective, x0, truth_of, patch):
    """Readout rows of a model whose prediction implies x̂0 = truth_of(x0) for images x0 (one batch):
    it recovers the readout's noise as eps = (x_t - alpha x0) / sigma and returns the objective's
    target for (truth_of(x0), eps)."""

    def model(x_t, t, y):
        a, s, _, _ = broadcast_coefficients(objective, t, x_t)
        return objective.target(truth_of(x0), (x_t - a * x0) / s, t)

    return denoising_readout(model, objective, x0, torch.zeros(len(x0), dtype=torch.long), patch)


@pytest.mark.parametrize("patch", [2, 4])
def test_the_truth_scores_infinity_in_both_bands(patch):
    x0 = dyadic_images(0)
    rows = run(XPrediction(), x0, lambda x: x, patch)  # x-prediction: x̂0 is the output itself
    assert [r["t"] for r in rows] == list(READOUT_TIMES)
    assert all(r["psnr_low"] == r["psnr_high"] == r["psnr"] == math.inf for r in rows)


@pytest.mark.parametrize("objective", [FlowMatching(), DDPM()], ids=["flow", "ddpm"])
def test_the_truth_through_a_velocity_or_eps_model_is_exact_to_round_off(objective):
    rows = run(objective, dyadic_images(1), lambda x: x, 4)
    assert all(r["psnr_low"] > 250 and r["psnr_high"] > 250 for r in rows)  # float64 round-off: MSE < 1e-25


@pytest.mark.parametrize("patch", [2, 4])
def test_patch_means_score_the_datas_high_pass_energy_and_infinity_in_the_low_band(patch):
    x0 = dyadic_images(2)
    energy = (x0 - patch_means(x0, patch)).square().mean().item()
    rows = run(XPrediction(), x0, lambda x: patch_means(x, patch), patch)
    for r in rows:
        assert r["psnr_low"] == math.inf and r["mse_high"] == energy
        assert r["psnr_high"] == 10 * math.log10(4 / energy) == r["psnr"]


@settings(deadline=None, max_examples=40)
@given(st.integers(0, 2**31 - 1), st.sampled_from([1, 2, 4, 8]), st.sampled_from([8, 16]))
def test_bands_are_orthogonal_and_add_up(seed, patch, size):
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    low, high = bands(x, patch)
    assert torch.equal(low + high, low + (x - low))
    assert (low * high).sum().abs() < 1e-9 * x.square().sum()
    assert low.square().sum() + high.square().sum() == pytest.approx(x.square().sum().item(), rel=1e-12)
    assert torch.allclose(patch_means(high, patch), torch.zeros_like(high), atol=1e-12)


def test_the_noise_is_fixed_per_image_and_the_same_at_every_level():
    seen = []

    def model(x_t, t, y):
        seen.append((1 - t[0].item(), x_t.clone()))
        return torch.zeros_like(x_t)

    x0 = torch.zeros(3, 3, 8, 8)
    objective = FlowMatching()
    denoising_readout(model, objective, x0, torch.zeros(3, dtype=torch.long), 4, times=(0.2, 0.8), seed=5)
    (t1, a), (t2, b) = seen
    assert t1 == pytest.approx(0.2) and torch.allclose(a / 0.2, b / 0.8)  # x0 = 0: x_t = t eps, eps fixed
    first, second = [], []
    y = torch.zeros(3, dtype=torch.long)
    denoising_readout(lambda x, t, y: first.append(x) or x, objective, x0, y, 4, times=(0.5,), seed=5, batch_size=3)
    denoising_readout(lambda x, t, y: second.append(x) or x, objective, x0, y, 4, times=(0.5,), seed=5, batch_size=1)
    assert torch.equal(first[0], torch.cat(second))  # image i's noise does not depend on its batch


def test_null_labels_and_bad_times_are_refused_or_used():
    got = []
    x0 = torch.zeros(2, 3, 4, 4)
    denoising_readout(lambda x, t, y: got.append(y) or x, FlowMatching(), x0, torch.tensor([0, 1]), 2,
                      times=(0.5,), use_labels="null", num_classes=9)
    assert got[0].tolist() == [9, 9]
    with pytest.raises(ValueError, match="noise levels"):
        denoising_readout(lambda x, t, y: x, FlowMatching(), x0, torch.tensor([0, 1]), 2, times=(0.0,))
    with pytest.raises(ValueError, match="patches"):
        patch_means(x0, 3)
    assert to_psnr(0.0) == math.inf and to_psnr(4.0) == 0.0


# ---------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A random-weight tiny DiP checkpoint (16 px, P = 4) and a folder of 8 images in 2 classes."""
    from PIL import Image

    from pixdiff.checkpoints import store
    from pixdiff.config.tree import to_dict
    from pixdiff.recipe import load_recipe

    root = tmp_path_factory.mktemp("readout")
    torch.manual_seed(0)
    r = load_recipe("emoji_tiny", ["model.backbone.depth=1", "model.backbone.dim=32", "model.backbone.num_heads=2",
                                   "model.backbone.image_size=16", "model.backbone.patch_size=4",
                                   "model.head.width=4", "model.head.depth=2"])
    sd = r.model.build().state_dict()
    store.save({"recipe": to_dict(r), "model": sd, "ema": sd}, root / "tiny.pt")
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / "data" / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / "data" / c / f"{i}.png")
    return root


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "pixdiff.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=300)


def test_eval_readout_writes_its_json_and_refuses_bad_input_in_one_line(tiny_run, tmp_path):
    base = ["eval-readout", str(tiny_run / "tiny.pt"), "--data", str(tiny_run / "data"), "--n", "6",
            "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    res = cli(*base, "--out", str(tmp_path / "r.json"), "--t", "0.3", "--t", "0.9")
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads((tmp_path / "r.json").read_text())
    assert [r["t"] for r in got["rows"]] == [0.3, 0.9] and got["patch"] == 4 and got["n"] == 6
    for r in got["rows"]:
        assert math.isfinite(r["psnr_low"]) and math.isfinite(r["psnr_high"])
        assert r["mse"] == pytest.approx(r["mse_low"] + r["mse_high"])
    again = cli(*base, "--out", str(tmp_path / "r2.json"), "--t", "0.3", "--t", "0.9", "--batch-size", "4")
    assert again.returncode == 0, again.stderr[-3000:]
    for a, b in zip(json.loads((tmp_path / "r2.json").read_text())["rows"], got["rows"]):  # float32 matmuls
        assert a == pytest.approx(b, rel=1e-6)  # in other batch shapes round differently: the same noise
    for bad, message in ((["--t", "1.0"], "noise levels"), (["--n", "99"], "more than the 8 images"),
                         (["--out", str(tmp_path)], "is a folder")):
        res = cli(*base, *(["--out", str(tmp_path / "x.json")] if "--out" not in bad else []), *bad)
        assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "x.json").exists()


def test_held_out_readout_chooses_only_images_the_run_never_trained_on(tiny_run, tmp_path):
    from pixdiff.checkpoints import store
    from pixdiff.config import replace
    from pixdiff.config.tree import from_dict, to_dict

    state = store.torch_load(tiny_run / "tiny.pt")
    data = str(tiny_run / "data")
    recipe = replace(from_dict(state["recipe"]), **{"data.source": data, "data.holdout": 2})
    store.save({**state, "recipe": to_dict(recipe)}, tmp_path / "held.pt")
    base = ["eval-readout", "--data", data, "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--held-out",
            "--t", "0.5"]
    res = cli(*base, str(tmp_path / "held.pt"), "--n", "4", "--out", str(tmp_path / "r.json"))
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads((tmp_path / "r.json").read_text())
    assert got["held_out"] is True and got["n"] == 4 and math.isfinite(got["rows"][0]["psnr_high"])
    for args, message in (([str(tmp_path / "held.pt"), "--n", "5"], "more than the 4 held-out images"),
                          ([str(tiny_run / "tiny.pt"), "--n", "2"], "data.holdout >= 2")):
        res = cli(*base, *args, "--out", str(tmp_path / "x.json"))
        assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "x.json").exists()
