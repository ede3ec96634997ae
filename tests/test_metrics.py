"""Tests for sample files (pixdiff.data.npz), feature extractors (pixdiff.eval.features) and metrics."""

from __future__ import annotations

import json
import os
import warnings
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pixdiff.data import npz
from pixdiff.eval import features as feat
from pixdiff.eval import metrics
from pixdiff.eval.metrics import (
    FeatureStats,
    evaluate,
    frechet_distance,
    inception_score,
    kernel_distance,
    precision_recall,
)

# --------------------------------------------------------------------------------------------------
# Helpers


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """One intra-op thread: on a shared 2-core CI box, two threads that wait for each other at
    every barrier make LAPACK eigendecompositions 5-20x slower whenever other jobs run."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)



def shapes(n: int, size: int, seed: int) -> np.ndarray:
    """Structured synthetic images: gradient background plus three random discs/squares."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        top, bottom = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        img = top + (bottom - top) * yy[..., None]
        for _ in range(3):
            color = rng.uniform(0, 255, 3)
            cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.3)
            if rng.random() < 0.5:
                mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
            else:
                mask = (abs(xx - cx) < r) & (abs(yy - cy) < r)
            img[mask] = color
        out[i] = img.round()
    return out


def blur_and_tint(images: np.ndarray, k: int = 5) -> np.ndarray:
    """Box blur plus a strong colour cast: a clearly different image distribution."""
    x = np.pad(images.astype(np.float32), ((0, 0), (k // 2,) * 2, (k // 2,) * 2, (0, 0)), mode="edge")
    h, w = images.shape[1:3]
    blurred = sum(x[:, i : i + h, j : j + w] for i in range(k) for j in range(k)) / (k * k)
    return np.clip(blurred * np.array([1.0, 0.6, 0.3]) + np.array([60.0, 0, 0]), 0, 255).astype(np.uint8)


class InceptionStandIn(torch.nn.Module):
    """Tiny module with the calling convention of the TorchScript inception-2015-12-05.pt.

    ``dim`` is 2048 like the real pool_3 features; tests that only exercise the statistics
    plumbing use a narrower one, because 2048-d eigendecompositions are slow on a busy 2-core box.
    """

    def __init__(self, dim: int = 2048) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = torch.nn.Parameter(torch.randn(dim, 3 * 8 * 8, generator=g) / 8)
        self.output = torch.nn.Linear(dim, 1008)

    def forward(
        self, img: torch.Tensor, return_features: bool = False, use_fp16: bool = False,
        no_output_bias: bool = False,
    ) -> torch.Tensor:
        x = img.to(torch.float16 if use_fp16 else torch.float32)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = (x - 128) / 128
        features = torch.relu(F.adaptive_avg_pool2d(x, 8).flatten(1) @ self.proj.T)
        if return_features:
            return features
        if no_output_bias:
            logits = F.linear(features, self.output.weight)
        else:
            logits = self.output(features)
        return F.softmax(logits, dim=1)


def script_stand_in(directory, dim: int) -> str:
    path = str(directory / f"inception-stand-in-{dim}.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is what the real file is
        torch.jit.script(InceptionStandIn(dim).eval()).save(path)
    return path


@pytest.fixture(scope="module")
def inception_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return script_stand_in(tmp_path_factory.mktemp("inception"), 2048)


@pytest.fixture(scope="module")
def narrow_inception_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return script_stand_in(tmp_path_factory.mktemp("inception"), 32)


@pytest.fixture(scope="module")
def effnet() -> feat.Extractor:
    return feat.load_extractor("effnet")


def count_images(monkeypatch: pytest.MonkeyPatch, extractor: feat.Extractor) -> list[int]:
    """Patch the extractor so that every forward appends its batch size to the returned list."""
    seen: list[int] = []
    forward = extractor._forward

    def counting(x: torch.Tensor, want_logits: bool, want_spatial: bool):
        seen.append(len(x))
        return forward(x, want_logits, want_spatial)

    monkeypatch.setattr(extractor, "_forward", counting)
    return seen


# --------------------------------------------------------------------------------------------------
# Fréchet distance


def test_frechet_distance_matches_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    a, b = rng.uniform(0.1, 4, 16), rng.uniform(0.1, 4, 16)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_of_identical_statistics_is_zero_even_when_singular():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 64))  # fewer samples than dimensions: rank-deficient covariance
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8
    y = rng.normal(size=(20, 64)) + 0.5
    fd = frechet_distance(mu, sigma, y.mean(0), np.cov(y, rowvar=False))
    assert np.isfinite(fd) and fd > 0


def test_frechet_distance_agrees_with_scipy_sqrtm_reference():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(400, 32)), rng.normal(size=(400, 32)) @ rng.normal(size=(32, 32)) * 0.3 + 1
    m1, s1, m2, s2 = x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real  # the pytorch-fid / ADM evaluator formula
    reference = np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(reference, rel=1e-8)


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# --------------------------------------------------------------------------------------------------
# KID, IS, precision/recall


def test_kid_is_near_zero_for_one_distribution_and_positive_for_a_shifted_one():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(300, 32)), rng.normal(size=(300, 32))
    same, _ = kernel_distance(x, y, num_subsets=20, subset_size=200)
    shifted, _ = kernel_distance(x, y + 1.0, num_subsets=20, subset_size=200)
    assert shifted > 0.1
    assert abs(same) < 0.05 * shifted


def test_kid_single_subset_matches_the_unbiased_mmd_formula():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(12, 5)), rng.normal(size=(12, 5)) + 0.3
    k = lambda a, b: (a @ b / 5 + 1) ** 3  # noqa: E731
    m = len(x)
    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    cross = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    expected = within / (m * (m - 1)) - 2 * cross / m**2
    kid, std = kernel_distance(x, y, num_subsets=1, subset_size=m)
    assert kid == pytest.approx(expected, rel=1e-10) and std == 0


def test_inception_score_extremes():
    assert inception_score(np.zeros((100, 10)))[0] == pytest.approx(1.0)
    confident = 50.0 * np.eye(10)[np.arange(100) % 10]  # each split holds every class once
    score, std = inception_score(confident, splits=10)
    assert score == pytest.approx(10.0, rel=1e-6) and std < 1e-9
    assert inception_score(confident, splits=1)[0] == pytest.approx(10.0, rel=1e-6)


def test_precision_recall_identical_disjoint_and_partial():
    rng = np.random.default_rng(5)
    real = rng.normal(size=(200, 16))
    assert precision_recall(real, real) == (1.0, 1.0)
    assert precision_recall(real, real + 100.0) == (0.0, 0.0)
    fake = np.concatenate([real[:100], real[100:] + 100.0])  # half on the real manifold
    precision, recall = precision_recall(real, fake)
    assert precision == pytest.approx(0.5)
    assert precision_recall(real, fake, chunk=7) == (precision, recall)  # chunking changes nothing


# --------------------------------------------------------------------------------------------------
# Sample files and image folders


def test_save_samples_round_trip_is_adm_compatible(tmp_path):
    images = shapes(10, 16, seed=0)
    labels = np.arange(10) % 3
    meta = {"labels": "50 per class", "steps": 100, "cfg": 4.0}
    path = tmp_path / "samples.npz"
    npz.save_samples(path, images, labels, meta)

    with np.load(path) as data:  # what the ADM evaluator reads
        assert data["arr_0"].dtype == np.uint8 and np.array_equal(data["arr_0"], images)
    loaded = npz.load_images(path)
    assert loaded.shape == (10, 16, 16, 3) and loaded.dtype == np.uint8
    assert np.array_equal(loaded, images)
    assert npz.load_labels(path).dtype == np.int64 and np.array_equal(npz.load_labels(path), labels)
    assert npz.load_meta(path) == meta
    assert os.listdir(tmp_path) == ["samples.npz"]  # no temporary files left behind
    chunks = list(npz.open_images(path).chunks(4))
    assert [len(c) for c in chunks] == [4, 4, 2] and np.array_equal(np.concatenate(chunks), images)


def test_guided_diffusion_sample_files_are_readable(tmp_path):
    images, labels = shapes(4, 8, seed=1), np.array([3, 1, 4, 1])
    np.savez(tmp_path / "gd.npz", images, labels)  # guided-diffusion layout: arr_0, arr_1
    assert np.array_equal(npz.load_images(tmp_path / "gd.npz"), images)
    assert np.array_equal(npz.load_labels(tmp_path / "gd.npz"), labels)
    assert npz.load_meta(tmp_path / "gd.npz") == {}


def test_image_folder_is_recursive_sorted_and_rgb(tmp_path):
    images = shapes(3, 12, seed=2)
    (tmp_path / "b").mkdir()
    Image.fromarray(images[0]).save(tmp_path / "a.png")
    Image.fromarray(images[1]).convert("RGBA").save(tmp_path / "b" / "x.png")
    Image.fromarray(images[2][..., 0]).save(tmp_path / "c.png")  # grayscale
    (tmp_path / "notes.txt").write_text("ignored")
    loaded = npz.load_images(tmp_path)
    assert loaded.shape == (3, 12, 12, 3)
    assert np.array_equal(loaded[0], images[0]) and np.array_equal(loaded[1], images[1])
    assert np.array_equal(loaded[2], np.repeat(images[2][..., :1], 3, axis=-1))


def test_bad_inputs_give_errors_naming_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        npz.load_images(tmp_path / "missing.npz")
    (tmp_path / "corrupt.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="corrupt.npz"):
        npz.load_images(tmp_path / "corrupt.npz")
    np.savez(tmp_path / "float.npz", np.zeros((2, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="float.npz.*uint8"):
        npz.load_images(tmp_path / "float.npz")
    np.savez(tmp_path / "gray.npz", np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="gray.npz"):
        npz.load_images(tmp_path / "gray.npz")
    np.savez(tmp_path / "other.npz", images=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="other.npz.*no arr_0"):
        npz.load_images(tmp_path / "other.npz")
    with zipfile.ZipFile(tmp_path / "truncated.npz", "w") as zf:
        with zf.open("arr_0.npy", "w") as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": "|u1", "fortran_order": False, "shape": (5, 4, 4, 3)})
            f.write(b"\0" * 10)
    with pytest.raises(ValueError, match="truncated.npz.*truncated"):
        npz.load_images(tmp_path / "truncated.npz")
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(ValueError, match="folder: no images"):
        npz.load_images(folder)
    Image.fromarray(shapes(1, 8, 0)[0]).save(folder / "a.png")
    Image.fromarray(shapes(1, 9, 0)[0]).save(folder / "b.png")
    with pytest.raises(ValueError, match="b.png.*differs"):
        npz.load_images(folder)
    with pytest.raises(TypeError, match="uint8"):
        npz.save_samples(tmp_path / "x.npz", np.zeros((2, 4, 4, 3)), np.zeros(2, int))
    with pytest.raises(ValueError, match="labels"):
        npz.save_samples(tmp_path / "x.npz", np.zeros((2, 4, 4, 3), np.uint8), np.zeros(3, int))
    with pytest.raises(TypeError, match="JSON"):
        npz.save_samples(tmp_path / "x.npz", np.zeros((2, 4, 4, 3), np.uint8), np.zeros(2, int),
                         {"bad": object()})
    assert not (tmp_path / "x.npz").exists()


# --------------------------------------------------------------------------------------------------
# Feature extractors


def test_parse_spec():
    assert feat.parse_spec("effnet") == feat.ExtractorSpec("effnet")
    spec = feat.parse_spec("inception:/w/inception-2015-12-05.pt")
    assert spec.kind == "inception" and spec.path == "/w/inception-2015-12-05.pt"
    assert (spec.fd_key, spec.metric_name) == ("fid", "FID")
    assert (feat.ExtractorSpec("effnet").fd_key, feat.ExtractorSpec("effnet").metric_name) == (
        "fd_effnet", "FD-EffNet")
    with pytest.raises(ValueError, match="inception:PATH"):
        feat.parse_spec("inception")
    with pytest.raises(ValueError, match="unknown"):
        feat.parse_spec("dinov2")
    with pytest.raises(FileNotFoundError, match="nothing is downloaded unless you pass --download-weights"):
        feat.load_extractor("inception:/nonexistent/inception.pt")


def test_effnet_loads_the_wheel_weights_strictly(effnet):
    state = torch.load(feat.effnet_weights_path(), map_location="cpu", weights_only=True)
    model_state = effnet.model.state_dict()
    assert set(model_state) == set(state) and len(state) == 296
    assert all(torch.equal(model_state[k], state[k]) for k in state)
    assert sum(p.numel() for p in effnet.model.parameters()) == 4_652_008  # EfficientNet-lite0: 4.65M


def test_effnet_features_are_deterministic_finite_and_batch_independent(effnet):
    images = shapes(6, 40, seed=7)
    a = effnet.features(images, batch_size=6)
    b = effnet.features(images, batch_size=4)
    assert a.shape == (6, 1280) and a.dtype == np.float64 and np.isfinite(a).all()
    assert np.allclose(a, b, atol=1e-4)
    assert np.array_equal(a, effnet.features(images, batch_size=6))
    logits = effnet.logits(images[:2])
    assert logits.shape == (2, 1000) and np.isfinite(logits).all()


def test_effnet_recognises_real_photos(effnet):
    data = pytest.importorskip("skimage.data")
    cat = effnet.logits(data.chelsea()[None])[0]
    coffee = effnet.logits(data.coffee()[None])[0]
    assert cat.argmax() in range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert coffee.argmax() == 967  # espresso


def test_effnet_evaluation_separates_same_and_shifted_distributions(effnet, tmp_path):
    n = 48
    samples = shapes(n, 48, seed=10)
    shifted = blur_and_tint(shapes(n, 48, seed=11))
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    for i, img in enumerate(shapes(n, 48, seed=12)):
        Image.fromarray(img).save(ref_dir / f"{i:03d}.png")
    npz.save_samples(tmp_path / "samples.npz", samples, np.zeros(n, np.int64), {})

    kw = dict(features="effnet", batch_size=n, cache_dir=tmp_path / "cache", kid_subsets=10)
    same = evaluate(tmp_path / "samples.npz", ref_dir, **kw)
    other = evaluate(shifted, ref_dir, **kw)  # reference statistics now come from the cache

    assert same["metric"] == "FD-EffNet" and "fid" not in same and "is" not in same
    assert same["num_samples"] == same["num_ref"] == same["num_ref_features"] == n
    assert same["fd_effnet"] * 2.5 < other["fd_effnet"]
    assert abs(same["kid_effnet"]) * 10 < other["kid_effnet"]
    assert same["precision_effnet"] > other["precision_effnet"] + 0.4
    assert same["recall_effnet"] > other["recall_effnet"] + 0.4
    assert 1.0 <= same["is_effnet"] and np.isfinite(same["is_effnet_std"])


# --------------------------------------------------------------------------------------------------
# TorchScript Inception path and the statistics cache


def test_inception_torchscript_path(inception_path):
    extractor = feat.load_extractor(f"inception:{inception_path}")
    images = shapes(24, 32, seed=20)
    feats = extractor.features(images, batch_size=10)
    module = feat.InceptionExtractor(inception_path).model
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    with torch.no_grad():  # the reference call: uint8 NCHW in [0, 255], resized inside
        expected_feats = module(x, return_features=True).numpy()
        expected_probs = module(x, no_output_bias=True).numpy()
    assert feats.shape == (24, 2048) and feats.dtype == np.float64
    assert np.allclose(feats, expected_feats, atol=1e-5)
    probs = torch.softmax(torch.from_numpy(extractor.logits(images)), dim=1).numpy()
    assert np.allclose(probs, expected_probs, atol=1e-6)


def test_inception_evaluation_reports_fid_keys(narrow_inception_path):
    images = shapes(24, 32, seed=20)
    result = evaluate(images, shapes(24, 32, seed=21), features=f"inception:{narrow_inception_path}",
                      use_cache=False, kid_subsets=5)
    assert result["metric"] == "FID" and result["extractor"] == "inception"
    assert {"fid", "kid", "kid_std", "is", "is_std", "precision", "recall"} <= set(result)
    assert not any(key.endswith("_effnet") for key in result)


def test_reference_statistics_are_cached_and_reused(narrow_inception_path, tmp_path, monkeypatch):
    extractor = feat.InceptionExtractor(narrow_inception_path)
    seen = count_images(monkeypatch, extractor)
    samples, ref = shapes(20, 32, seed=30), shapes(30, 32, seed=31)
    ref_path = tmp_path / "ref.npz"
    npz.save_samples(ref_path, ref, np.zeros(30, np.int64))
    cache = tmp_path / "cache"
    kw = dict(features=extractor, cache_dir=cache, kid_subsets=5, batch_size=8)

    first = evaluate(samples, ref_path, **kw)
    assert sum(seen) == 20 + 30
    (cache_file,) = cache.iterdir()
    assert metrics.is_stats_file(cache_file)

    seen.clear()
    second = evaluate(samples, ref_path, **kw)
    assert sum(seen) == 20  # only the samples went through the network
    assert second == first

    seen.clear()
    from_file = metrics.reference_stats(cache_file, extractor)  # a statistics file is a reference
    assert sum(seen) == 0 and from_file.count == 30 and from_file.features.shape == (30, 32)

    os.utime(ref_path, ns=(1, 1))  # a changed reference file is not served from the cache
    metrics.reference_stats(ref_path, extractor, cache_dir=cache)
    assert sum(seen) == 30


def test_statistics_round_trip_and_max_features(narrow_inception_path, tmp_path):
    extractor = feat.load_extractor(f"inception:{narrow_inception_path}")
    stats = metrics.compute_stats(shapes(30, 16, seed=40), extractor, max_features=12)
    assert stats.count == 30 and stats.features.shape == (12, 32)
    assert stats.mu.shape == (32,) and stats.sigma.shape == (32, 32)
    metrics.save_stats(tmp_path / "s.npz", stats)
    back = metrics.load_stats(tmp_path / "s.npz")
    assert (back.extractor, back.fingerprint, back.count) == (stats.extractor, stats.fingerprint, 30)
    assert np.array_equal(back.mu, stats.mu) and np.array_equal(back.features, stats.features)
    full = metrics.compute_stats(shapes(30, 16, seed=40), extractor)
    assert np.allclose(full.mu, stats.mu) and np.allclose(full.sigma, stats.sigma)
    feats = extractor.features(shapes(30, 16, seed=40))
    assert np.allclose(full.sigma, np.cov(feats, rowvar=False), atol=1e-9)  # streaming == np.cov
    with pytest.raises(ValueError, match="holds feature statistics, not images"):
        npz.load_images(tmp_path / "s.npz")


def test_statistics_from_another_extractor_are_refused(effnet, inception_path, tmp_path):
    stats = FeatureStats("inception", "abc", 10, np.zeros(2048), np.eye(2048))
    metrics.save_stats(tmp_path / "inception_stats.npz", stats)
    with pytest.raises(ValueError, match="'inception' feature statistics.*'effnet-lite0'"):
        metrics.reference_stats(tmp_path / "inception_stats.npz", effnet)
    with pytest.raises(ValueError, match="'inception' feature statistics"):
        evaluate(shapes(4, 16, seed=0), tmp_path / "inception_stats.npz", features="effnet")
    inception = feat.load_extractor(f"inception:{inception_path}")
    with pytest.raises(ValueError, match="different 'inception' weights"):
        metrics.reference_stats(stats, inception)


def test_stats_file_marker_and_json_meta_are_plain_npz(tmp_path):
    stats = FeatureStats("effnet-lite0", "f", 3, np.zeros(4), np.eye(4))
    metrics.save_stats(tmp_path / "s.npz", stats)
    with np.load(tmp_path / "s.npz", allow_pickle=False) as data:  # no pickles anywhere
        assert str(data["format"]) == metrics.STATS_FORMAT and "features" not in data.files
    npz.save_samples(tmp_path / "x.npz", shapes(2, 4, 0), np.zeros(2, int), {"a": [1, 2]})
    with np.load(tmp_path / "x.npz", allow_pickle=False) as data:
        assert json.loads(str(data["meta"])) == {"a": [1, 2]}
    assert not metrics.is_stats_file(tmp_path / "x.npz")
    with pytest.raises(ValueError, match="x.npz: not a pixdiff statistics file"):
        metrics.load_stats(tmp_path / "x.npz")


def test_label_sorted_samples_trigger_a_shuffle_warning(tmp_path, caplog):
    npz.save_samples(tmp_path / "sorted.npz", shapes(4, 4, 0), np.array([0, 0, 1, 1]))
    assert "shuffle the sample order" in caplog.text
