import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pixdiff.checkpoints import store as checkpoint
from pixdiff.checkpoints.digest import ALGORITHM, digest
from pixdiff.checkpoints.dip import to_reference
from pixdiff.config.tree import to_dict
from pixdiff.data.npz import load_images, load_labels, load_meta
from pixdiff.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.backbone.depth=2", "model.backbone.dim=32", "model.backbone.num_heads=2",
        "model.backbone.image_size=16", "model.head.width=8"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A random-weight tiny DiP saved as a pixdiff checkpoint (sampling does not care about training)."""
    torch.manual_seed(0)
    r = load_recipe("emoji_tiny", TINY)
    sd = r.model.build().state_dict()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    checkpoint.save({"recipe": to_dict(r), "model": sd, "ema": sd}, path)
    return path


def cli(*args: str, launcher: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, *(launcher or ("-m",)), "pixdiff.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def sample(ckpt: Path, out: Path, *extra: str, launcher: tuple[str, ...] = ()) -> np.ndarray:
    res = cli("sample", str(ckpt), "--out", str(out), "--steps", "3", "--cfg", "2.0", "--device", "cpu", *extra,
              launcher=launcher)
    assert res.returncode == 0, res.stderr[-3000:]
    return load_images(out / "samples.npz")


def test_sample_npz_round_trip_and_balanced_labels(ckpt, tmp_path):
    images = sample(ckpt, tmp_path, "--num", "10", "--classes", "5", "--batch-size", "4")
    assert images.shape == (10, 16, 16, 3) and images.dtype == np.uint8
    labels = load_labels(tmp_path / "samples.npz")
    assert np.bincount(labels).tolist() == [2, 2, 2, 2, 2]
    meta = load_meta(tmp_path / "samples.npz")
    assert meta["labels"] == "balanced" and meta["num"] == 10 and meta["steps"] == 3
    # the weights sampled (here the EMA copy), named for `pixdiff eval`'s protocol record
    assert meta["weights_digest"] == digest(checkpoint.read(ckpt)["ema"]) and meta["digest_algorithm"] == ALGORITHM
    assert (tmp_path / "grid.png").is_file()
    assert len({im.tobytes() for im in images}) == 10  # no duplicates


def test_sample_shows_progress_on_stderr_and_quiet_turns_it_off(ckpt, tmp_path):
    args = ["--num", "4", "--batch-size", "1", "--steps", "2", "--device", "cpu"]
    res = cli("sample", str(ckpt), "--out", str(tmp_path / "shown"), *args)  # stderr is a pipe, not a TTY
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.splitlines()[-1].startswith("wrote ") and "images/s" not in res.stdout
    lines = [line for line in res.stderr.splitlines() if line.startswith("sample: ")]
    assert lines[0].startswith("sample: 1/4 images (25%)") and lines[-1].startswith("sample: 4/4 images (100%)")
    assert "\r" not in res.stderr
    quiet = cli("sample", str(ckpt), "--out", str(tmp_path / "quiet"), *args, "--quiet")
    assert quiet.returncode == 0 and "sample: " not in quiet.stderr and quiet.stdout.startswith("wrote ")


def test_a_checkpoint_samples_with_either_head_scope(ckpt, tmp_path):
    # same weights, same keys: the strict load succeeds, and convolving across borders changes the samples
    per_patch = sample(ckpt, tmp_path / "patch", "--num", "2", "--set", "model.head.scope=patch")
    whole = sample(ckpt, tmp_path / "image", "--num", "2", "--set", "model.head.scope=image")
    assert whole.shape == per_patch.shape and not np.array_equal(whole, per_patch)


def test_set_overrides_a_checkpoints_own_recipe(ckpt, tmp_path):
    plain = sample(ckpt, tmp_path / "plain", "--num", "2")
    shifted = sample(ckpt, tmp_path / "shifted", "--num", "2", "--set", "sample.time_shift=0.5")
    assert load_meta(tmp_path / "shifted" / "samples.npz")["time_shift"] == 0.5
    assert not np.array_equal(plain, shifted)
    res = cli("sample", str(ckpt), "--out", str(tmp_path / "bad"), "--set", "sample.bogus=1")
    assert res.returncode != 0 and "sample.bogus" in res.stderr and "Traceback" not in res.stderr


def test_samples_do_not_depend_on_batch_size(ckpt, tmp_path):
    a = sample(ckpt, tmp_path / "a", "--num", "6", "--batch-size", "1")
    b = sample(ckpt, tmp_path / "b", "--num", "6", "--batch-size", "6")
    # per-sample noise makes the sets equal; CPU matmuls of other shapes may differ in the last float
    # bits, which can move a pixel across a rounding boundary, never more than one level
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert (a == b).mean() > 0.999


def test_two_gloo_ranks_write_exactly_n_unique_samples_for_odd_n(ckpt, tmp_path):
    one = sample(ckpt, tmp_path / "one", "--num", "7", "--labels", "random")
    two = sample(ckpt, tmp_path / "two", "--num-images", "7", "--labels", "random",
                 launcher=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"))
    assert two.shape[0] == 7 and len({im.tobytes() for im in two}) == 7
    assert np.abs(one.astype(int) - two.astype(int)).max() <= 1
    np.testing.assert_array_equal(load_labels(tmp_path / "one" / "samples.npz"),
                                  load_labels(tmp_path / "two" / "samples.npz"))
    assert load_meta(tmp_path / "two" / "samples.npz")["world_size"] == 2
    assert not (tmp_path / "two" / ".parts").exists()


def test_authors_reference_checkpoint_samples_like_the_converted_one(ckpt, tmp_path):
    ours = checkpoint.load(ckpt)
    ref = tmp_path / "ref.ckpt"
    torch.save({"state_dict": {f"ema_denoiser.{k}": v for k, v in to_reference(ours["ema"]).items()}}, ref)
    direct = sample(ref, tmp_path / "direct", "--num", "3", "--recipe", "emoji_tiny", *[
        a for o in TINY for a in ("--set", o)])
    res = cli("convert", str(ref), str(tmp_path / "converted.pt"), "--recipe", "emoji_tiny",
              *[a for o in TINY for a in ("--set", o)])
    assert res.returncode == 0, res.stderr
    converted = sample(tmp_path / "converted.pt", tmp_path / "conv", "--num", "3")
    original = sample(ckpt, tmp_path / "orig", "--num", "3")
    np.testing.assert_array_equal(direct, original)
    np.testing.assert_array_equal(converted, original)


def test_sample_errors_are_clear(ckpt, tmp_path):
    res = cli("sample", str(tmp_path / "missing.pt"), "--out", str(tmp_path))
    assert res.returncode == 2 and "checkpoint not found" in res.stderr
    bare = tmp_path / "bare.pt"
    torch.save({"x": torch.zeros(1)}, bare)
    res = cli("sample", str(bare), "--out", str(tmp_path))
    assert res.returncode == 2 and "--recipe" in res.stderr


@pytest.mark.slow
def test_compiled_and_bf16_sampling_from_the_cli(ckpt, tmp_path):
    """`--compile` (inductor on the CPU) and `--dtype bf16` run the path `bench latency` times."""
    # no guidance: one batch shape, one graph to compile
    eager = sample(ckpt, tmp_path / "eager", "--num", "2", "--cfg", "1.0")
    compiled = sample(ckpt, tmp_path / "compiled", "--num", "2", "--cfg", "1.0", "--compile")
    assert load_meta(tmp_path / "compiled" / "samples.npz")["compile"] is True
    assert np.abs(eager.astype(int) - compiled.astype(int)).max() <= 2  # same network, fused kernels
    bf16 = sample(ckpt, tmp_path / "bf16", "--num", "2", "--cfg", "1.0", "--dtype", "bf16")
    assert load_meta(tmp_path / "bf16" / "samples.npz")["dtype"] == "bf16"
    assert not np.array_equal(eager, bf16) and np.abs(eager.astype(int) - bf16.astype(int)).mean() < 8
