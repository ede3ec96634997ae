"""The FID Inception port (pixdiff.eval.inception), ADM reference batches and the protocol record.

The network is checked against pytorch-fid's module name by name and shape (the listing in
tests/data, written from upstream by tools/fid_inception_upstream.py) -- its outputs against the
upstream module once, by hand, as docs/fid.md records. Weights here are random; nothing downloads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pixdiff.data.npz import save_samples
from pixdiff.eval import inception as inc
from pixdiff.eval.features import FIDInceptionExtractor, load_extractor, parse_spec
from pixdiff.eval.metrics import evaluate, inception_score

ROOT = Path(__file__).resolve().parents[1]
LISTING = ROOT / "tests" / "data" / "fid_inception_official_state_dict.tsv"


def official_listing() -> dict[str, tuple[int, ...]]:
    rows = [line.split("\t") for line in LISTING.read_text().splitlines() if not line.startswith("#")]
    return {k: tuple(json.loads(shape.replace("(", "[").replace(",)", ")").replace(")", "]"))) for k, shape in rows}


def random_weights(path: Path, seed: int = 0, extra: dict | None = None) -> Path:
    """A state-dict file in the published layout with weights that keep activations O(1)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in inc.FIDInceptionV3().state_dict().items():
        if k.endswith("running_var"):
            state[k] = 0.5 + torch.rand(v.shape, generator=g)
        elif k.endswith("bn.weight"):
            state[k] = 0.8 + 0.4 * torch.rand(v.shape, generator=g)
        elif k.endswith(("bn.bias", "running_mean", "fc.bias")):
            state[k] = 0.1 * torch.randn(v.shape, generator=g)
        else:
            state[k] = torch.randn(v.shape, generator=g) * (2.0 / v[0].numel()) ** 0.5
    torch.save({**state, **(extra or {})}, path)
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_weights(tmp_path_factory.mktemp("inception") / "random-inception.pth")


def test_state_dict_names_and_shapes_equal_the_upstream_listing():
    ours = {k: tuple(v.shape) for k, v in inc.FIDInceptionV3().state_dict().items()}
    official = official_listing()
    assert len(official) == 472
    assert list(ours) == list(official) and ours == official


def test_published_hash_is_refused_for_other_bytes(weights: Path):
    assert inc.WEIGHTS_SHA256.startswith("6726825d") and inc.WEIGHTS_FILE.endswith("-6726825d.pth")
    with pytest.raises(ValueError, match="sha256 .* is not the published FID Inception weights"):
        inc.load_weights(weights)
    with pytest.raises(ValueError, match="sha256"):
        load_extractor(f"inception:{weights}")  # the default spec checks the hash
    assert not parse_spec(f"inception:{weights}", check_hash=False).check_hash


def test_layout_errors_are_one_line(tmp_path: Path):
    state = torch.load(random_weights(tmp_path / "w.pth"), weights_only=True)
    del state["Mixed_6d.branch1x1.conv.weight"]
    torch.save(state, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"1 missing.*missing Mixed_6d.branch1x1.conv.weight"):
        inc.load_weights(tmp_path / "missing.pth", expected_sha256=None)
    state["Mixed_6d.branch1x1.conv.weight"] = torch.zeros(192, 768, 3, 3)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"has shape \(192, 768, 3, 3\), not \(192, 768, 1, 1\)"):
        inc.load_weights(tmp_path / "shape.pth", expected_sha256=None)
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="holds a list, not a state dict"):
        inc.load_weights(tmp_path / "list.pth", expected_sha256=None)


def test_num_batches_tracked_from_a_torchvision_copy_is_ignored(tmp_path: Path):
    path = random_weights(tmp_path / "w.pth", extra={"Conv2d_1a_3x3.bn.num_batches_tracked": torch.tensor(0)})
    model = inc.load_weights(path, expected_sha256=None)
    assert torch.equal(model.fc.bias, torch.load(path, weights_only=True)["fc.bias"])


@settings(deadline=None, max_examples=20)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 64))
def test_tf1_resize_samples_at_i_times_in_over_out(h: int, w: int, size: int):
    # f(y, x) = 3y + x is bilinear, so the resize reads it exactly at the TF1 source coordinates
    # (i * in / out, clamped at the last pixel), without half-pixel centres
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    out = inc.tf1_resize_bilinear((3 * y + x)[None, None], size)[0, 0]
    sy = torch.clamp(torch.arange(size, dtype=torch.float64) * (h / size), max=h - 1)
    sx = torch.clamp(torch.arange(size, dtype=torch.float64) * (w / size), max=w - 1)
    torch.testing.assert_close(out, 3 * sy[:, None] + sx[None, :], atol=1e-4, rtol=0)


def test_tf1_resize_closed_form_and_preprocess_range():
    x = torch.tensor([[[[10.0, 30.0]]]])  # 1x2 -> 1x4: sources 0, 0.5, 1, 1.5 (clamped to 1)
    assert inc.tf1_resize_bilinear(x, 4)[0, 0, 0].tolist() == [10.0, 20.0, 30.0, 30.0]
    img = torch.arange(256, dtype=torch.uint8).repeat(3, 299, 2)[None, :, :, :299]  # 299x299: no resize
    x = inc.preprocess(img)
    assert x.shape == (1, 3, 299, 299) and x.min() == -1.0 and x.max() == 127 / 128
    assert (inc.preprocess(torch.full((1, 3, 64, 48), 128, dtype=torch.uint8)) == 0).all()


def test_heads_shapes_and_bias_free_logits(weights: Path):
    model = inc.load_weights(weights, expected_sha256=None)
    seen = {}
    model.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: seen.setdefault("s", o))
    with torch.no_grad():
        pool3, spatial, logits = model(inc.preprocess(torch.randint(0, 256, (2, 3, 20, 24), dtype=torch.uint8)))
    assert pool3.shape == (2, 2048) and spatial.shape == (2, 7 * 17 * 17) and logits.shape == (2, 1008)
    # the ADM evaluator's spatial[..., :7].reshape(N, -1) of an NHWC map
    torch.testing.assert_close(spatial, seen["s"][:, :7].permute(0, 2, 3, 1).reshape(2, -1))
    assert model.fc.bias.abs().max() > 0
    torch.testing.assert_close(logits, pool3 @ model.fc.weight.T)
    assert pool3.std() > 0 and spatial.std() > 0


def test_inception_score_known_inputs():
    assert inception_score(np.zeros((20, 1008)), splits=2)[0] == pytest.approx(1.0)
    confident = np.full((40, 1008), -1e4)
    confident[np.arange(40), np.arange(40) % 8] = 0.0  # 8 distinct classes, each with certainty
    assert inception_score(confident, splits=1)[0] == pytest.approx(8.0, rel=1e-9)


def adm_batch(path: Path, images: np.ndarray, mu: np.ndarray, sigma: np.ndarray, mu_s: np.ndarray,
              sigma_s: np.ndarray) -> Path:
    np.savez(path, arr_0=images, mu=mu, sigma=sigma, mu_s=mu_s, sigma_s=sigma_s)
    return path


def test_adm_batch_statistics_are_used_for_fid_and_sfid(weights: Path, tmp_path: Path):
    rng = np.random.default_rng(0)
    samples = rng.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)
    ext = FIDInceptionExtractor(str(weights), expected_sha256=None)
    heads = list(ext.run(samples, want_spatial=True))
    pool3, spatial = (torch.cat([h[i] for h in heads]).double().numpy() for i in (0, 2))
    # reference statistics that are NOT those of its images, with the samples' covariances and shifted
    # means: a score that reads the file's statistics is |shift|^2 in closed form
    mu, mu_s = pool3.mean(0) + 0.5, spatial.mean(0) - 0.25
    sigma, sigma_s = np.cov(pool3, rowvar=False), np.cov(spatial, rowvar=False)
    ref = adm_batch(tmp_path / "VIRTUAL_tiny.npz", rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8),
                    mu, sigma, mu_s, sigma_s)
    out = evaluate(samples, str(ref), features=ext, use_cache=False)
    assert out["fid"] == pytest.approx(2048 * 0.5**2, rel=1e-4)
    assert out["sfid"] == pytest.approx(2023 * 0.25**2, rel=1e-4)
    assert out["num_ref"] == 6 and 0 <= out["precision"] <= 1 and "is" in out
    assert "precomputed mu/sigma" in out["protocol"]["reference"]["kind"]
    small = adm_batch(tmp_path / "VIRTUAL_8.npz", np.zeros((6, 8, 8, 3), np.uint8), mu, sigma, mu_s, sigma_s)
    with pytest.raises(ValueError, match="holds 8x8 images but the samples are 16x16"):
        evaluate(samples, str(small), features=ext, use_cache=False)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pixdiff.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


def test_eval_cli_end_to_end_with_an_adm_batch_and_the_protocol(weights: Path, tmp_path: Path):
    rng = np.random.default_rng(1)
    meta = {"num": 10, "labels": "balanced", "num_classes": 2, "seed": 7, "steps": 50, "solver": "heun",
            "cfg_scale": 2.0, "cfg_interval": [0.1, 1.0], "time_shift": 1.0, "last_step": None, "ema": "0.9999",
            "checkpoint": "/runs/x/last.safetensors", "weights_digest": "ab" * 16, "digest_algorithm": "sum64+blake2b"}
    samples = tmp_path / "samples.npz"
    save_samples(samples, rng.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8), np.arange(10) % 2, meta)
    d, ds = 2048, 2023
    ref = adm_batch(tmp_path / "VIRTUAL_tiny.npz", rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8),
                    np.zeros(d), np.eye(d), np.zeros(ds), np.eye(ds))
    args = ["eval", str(samples), "--ref", str(ref), "--features", f"inception:{weights}", "--cache-dir",
            str(tmp_path / "cache"), "--json", "--quiet"]
    refused = cli(*args)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "sha256" in refused.stderr
    res = cli(*args, "--unverified-weights")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    for key in ("fid", "sfid", "is", "precision", "recall", "kid"):
        assert np.isfinite(out[key]), key
    p = out["protocol"]
    assert p["extractor"]["weights_sha256"] == inc.file_sha256(weights) and not p["extractor"]["published_weights"]
    assert p["extractor"]["preprocessing"] == "tf1-bilinear299/128-128"
    assert p["reference"]["sha256"] == inc.file_sha256(ref) and p["num_samples"] == 10 and p["num_ref"] == 6
    assert p["samples"]["labels"] == "balanced" and p["samples"]["seed"] == 7 and p["samples"]["ema"] == "0.9999"
    assert p["samples"]["sampler"]["cfg_interval"] == [0.1, 1.0] and p["samples"]["weights_digest"] == "ab" * 16
    wrong = adm_batch(tmp_path / "VIRTUAL_8.npz", np.zeros((6, 8, 8, 3), np.uint8), np.zeros(d), np.eye(d),
                      np.zeros(ds), np.eye(ds))
    bad = cli("eval", str(samples), "--ref", str(wrong), "--features", f"inception:{weights}", "--unverified-weights")
    assert bad.returncode == 2 and bad.stderr.startswith("error: reference batch") and bad.stderr.count("\n") == 1


def test_bare_inception_without_downloaded_weights_is_one_line(tmp_path: Path):
    res = subprocess.run([sys.executable, "-m", "pixdiff.cli", "eval", "x.npz", "--ref", "y.npz", "--features",
                          "inception"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "PIXDIFF_CACHE_DIR": str(tmp_path)})
    assert res.returncode == 2 and "--download-weights" in res.stderr and res.stderr.count("\n") == 1
