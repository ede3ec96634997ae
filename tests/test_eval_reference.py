"""Evaluation scores what the model learned: references decoded exactly as training data are."""

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixdiff.data import emoji_source, load_image, prepare
from pixdiff.data.npz import load_images, open_images
from pixdiff.data.reference import cache_images, parse_part
from pixdiff.eval.features import load_extractor
from pixdiff.eval.metrics import SampleSizeWarning, evaluate, warn_if_too_few

ROOT = Path(__file__).resolve().parents[1]
PER_CLASS = 24  # 216 emoji: enough to separate the decodes, small enough for CI


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pixdiff.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


def test_folder_images_are_composited_onto_white_like_training_data(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = (71, 112, 76)  # the colour Twemoji stores under its transparent pixels
    rgba[2:6, 2:6] = (200, 30, 40, 255)
    rgba[0, 0] = (71, 112, 76, 128)  # half transparent: alpha-blended onto white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    got = load_images(tmp_path)[0]
    assert (got[1, 1] == 255).all() and (got[3, 3] == (200, 30, 40)).all()
    assert (got[0, 0] == np.rint((np.array([71, 112, 76]) * 128 + 255 * 127) / 255)).all()
    assert np.array_equal(got, load_image(tmp_path / "a.png", 8, fit="resize"))  # one decode for both


def test_parts_are_disjoint_cover_the_data_and_keep_every_class(tmp_path):
    cache = prepare("emoji", tmp_path / "cache", 16, limit=4)
    parts = [cache_images(cache, (k, 3)) for k in range(3)]
    assert sum(len(p[0]) for p in parts) == cache.info.count
    images = np.concatenate([p[0] for p in parts]).reshape(cache.info.count, -1)
    every = cache.images.numpy().transpose(0, 2, 3, 1).reshape(cache.info.count, -1)
    assert sorted(map(bytes, images)) == sorted(map(bytes, every))  # a permutation of the cache
    for _, labels in parts:
        assert set(labels.tolist()) == set(range(cache.info.num_classes))
    assert parse_part("1/2") == (1, 2) and parse_part(None) is None
    for bad in ("2/2", "1", "-1/2", "a/b"):
        with pytest.raises(ValueError, match="K/M"):
            parse_part(bad)


def test_small_n_warns_and_large_n_does_not():
    with pytest.warns(SampleSizeWarning, match="fewer than its 1280 feature dimensions"):
        warn_if_too_few("FD-EffNet", 900, 50_000, 1280)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_too_few("FD-EffNet", 1280, 1280, 1280)


@pytest.fixture(scope="module")
def halves(tmp_path_factory):
    """Half 0 of a small emoji subset as the raw Twemoji PNG files (RGBA/palette with a coloured
    transparent background), and half 1 exported through the documented command at 72 px."""
    tmp = tmp_path_factory.mktemp("halves")
    items = emoji_source().take(PER_CLASS).items
    (tmp / "h0").mkdir()
    for i, item in enumerate(items[0::2]):
        shutil.copy(item.path, tmp / "h0" / f"{i:04d}.png")
    res = cli("data", "export", "emoji", str(tmp / "h1.npz"), "--resolution", "72", "--part", "1/2",
              "--per-class", str(PER_CLASS), "--cache-dir", str(tmp / "cache"))
    assert res.returncode == 0, res.stderr
    return tmp


def fd(samples: Path | np.ndarray, ref: Path, extractor) -> float:
    with pytest.warns(SampleSizeWarning):  # 108 images are far below 1280 feature dimensions
        return evaluate(samples, ref, features=extractor, use_cache=False, max_ref_features=0)["fd_effnet"]


def test_a_folder_of_raw_pngs_scores_like_its_training_decode(halves):
    h0, h1 = halves / "h0", halves / "h1.npz"
    labels = np.load(h1)["labels"]
    assert open_images(h1).count == len(labels) == open_images(h0).count == PER_CLASS * 9 // 2
    # what `convert("RGB")` made of the same files: transparent pixels kept their stored colour
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL: palette transparency expressed in bytes
        old = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in sorted(h0.glob("*.png"))])
    extractor = load_extractor("effnet")
    same, wrong = fd(h0, h1, extractor), fd(old, h1, extractor)
    assert same * 1.3 < wrong, (same, wrong)  # measured: 94.6 vs 139.1


def test_eval_ref_data_builds_the_reference_from_the_training_cache(halves, tmp_path):
    folder = tmp_path / "data"
    for k, f in enumerate(sorted((halves / "h0").glob("*.png"))[:12]):
        (folder / f"class{k % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(f, folder / f"class{k % 2}" / f.name)
    samples = load_images(halves / "h1.npz")[:8, ::4, ::4]  # 18 px: the reference follows the samples
    np.savez(tmp_path / "s.npz", arr_0=np.ascontiguousarray(samples))
    res = cli("eval", str(tmp_path / "s.npz"), "--ref", f"data:{folder}", "--json", "--cache-dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert (out["num_ref"], out["num_samples"]) == (12, 8)
    cache = prepare(str(folder), tmp_path, 18)
    assert np.array_equal(np.sort(load_images(cache.info.path / "reference.npz"), axis=0),
                          np.sort(cache.images.numpy().transpose(0, 2, 3, 1), axis=0))
    bad = cli("eval", str(tmp_path / "s.npz"), "--ref", "data:/no/such/folder", "--cache-dir", str(tmp_path))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr, bad.stderr


def test_eval_json_stays_clean_with_progress_on_stderr(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("s", "r"):
        np.savez(tmp_path / f"{name}.npz", arr_0=rng.integers(0, 256, (8, 16, 16, 3), np.uint8))
    env = {**os.environ, "PIXDIFF_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}

    def run() -> subprocess.CompletedProcess:
        res = subprocess.run([sys.executable, "-m", "pixdiff.cli", "eval", str(tmp_path / "s.npz"), "--ref",
                              str(tmp_path / "r.npz"), "--batch-size", "4", "--json", "--device", "cpu"],
                             capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["num_samples"] == 8  # stdout is the JSON alone
        return res

    first = run()
    assert "eval reference: 4/8 images (50%)" in first.stderr and "eval reference: 8/8 images (100%)" in first.stderr
    assert "eval samples: 8/8 images (100%)" in first.stderr
    again = run()  # the reference's statistics are cached now: no extraction, no line for it
    assert "eval reference" not in again.stderr and "eval samples: 8/8 images" in again.stderr
