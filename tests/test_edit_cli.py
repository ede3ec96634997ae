"""End-to-end `pixdiff edit | inpaint | invert | interpolate` on a tiny emoji model trained 2 steps."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from pixdiff.cli import app

TINY = ["model.backbone.depth=2", "model.backbone.dim=32", "model.backbone.num_heads=2",
        "model.backbone.image_size=16", "model.head.width=8", "train.global_batch=8", "train.sample_every=0",
        "train.max_steps=2"]


def cli(*args: str) -> SimpleNamespace:
    """In process (the commands import torch once, not per call); a traceback would be an exception."""
    res = CliRunner().invoke(app, list(args))
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return SimpleNamespace(returncode=res.exit_code, stdout=res.stdout, stderr=res.stderr)


def ok(*args: str) -> str:
    res = cli(*args, "--device", "cpu")
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder, two 24 px input images and a half-white mask."""
    tmp = tmp_path_factory.mktemp("edit")
    sets = [a for s in [*TINY, f"data.cache_dir={tmp / 'cache'}"] for a in ("--set", s)]
    ok("train", "emoji_tiny", *sets, "--out", str(tmp / "run"), "--no-progress")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(tmp / f"img{i}.png")
    mask = np.zeros((24, 24), np.uint8)
    mask[:, 12:] = 255
    Image.fromarray(mask).save(tmp / "mask.png")
    return tmp


def test_edit_writes_edits_and_strength_zero_returns_the_input(run, tmp_path):
    imgs = [str(run / "img0.png"), str(run / "img1.png")]
    ok("edit", str(run / "run"), *imgs, "--out", str(tmp_path / "a"), "--strength", "0.5", "--class", "2",
       "--cfg", "2", "--steps", "4")
    assert (tmp_path / "a" / "grid.png").is_file() and (tmp_path / "a" / "edit_0001.png").is_file()
    ok("edit", str(run / "run"), *imgs, "--out", str(tmp_path / "b"), "--strength", "0", "--steps", "4")
    for i in range(2):
        same = [np.asarray(Image.open(tmp_path / "b" / f"{k}_{i:04d}.png")) for k in ("input", "edit")]
        assert np.array_equal(*same)
    ok("edit", str(run / "run"), imgs[0], "--out", str(tmp_path / "c"), "--class", "1", "--from-class", "0",
       "--steps", "4")
    assert json.loads((tmp_path / "c" / "meta.json").read_text())["from_class"] == 0


def test_inpaint_keeps_the_black_half(run, tmp_path):
    ok("inpaint", str(run / "run"), str(run / "img0.png"), str(run / "mask.png"), "--out", str(tmp_path),
       "-n", "2", "--jumps", "1", "--jump-length", "2", "--steps", "4")
    # the input is resized 24 -> 16 px as the mask is: compare the inpainting with the fitted input
    from pixdiff.data.images import resize_square

    fitted = resize_square(Image.open(run / "img0.png"), 16)
    out = np.asarray(Image.open(tmp_path / "inpaint_0001.png"))
    assert np.array_equal(out[:, :8], fitted[:, :8]) and not np.array_equal(out[:, 8:], fitted[:, 8:])


def test_invert_writes_noise_and_reports_psnr(run, tmp_path):
    stdout = ok("invert", str(run / "run"), str(run / "img0.png"), str(run / "img1.png"), "--out", str(tmp_path),
                "--steps", "4", "--solver", "heun")
    assert "round-trip PSNR" in stdout and "dB" in stdout
    assert load_file(tmp_path / "noise.safetensors")["noise"].shape == (2, 3, 16, 16)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert len(meta["psnr_db"]) == 2 and meta["psnr_db_mean"] > 0


def test_interpolate_between_seeds_and_between_images(run, tmp_path):
    ok("interpolate", str(run / "run"), "--out", str(tmp_path / "s"), "--frames", "3", "--seeds", "4", "5",
       "--steps", "4")
    assert (tmp_path / "s" / "frame_0002.png").is_file()
    ok("interpolate", str(run / "run"), str(run / "img0.png"), str(run / "img1.png"), "--out", str(tmp_path / "i"),
       "--frames", "3", "--steps", "4")
    assert (tmp_path / "i" / "grid.png").is_file()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny model trained 300 steps (about 20 s), and two flat-coloured squares far from its data:
    their inversions are noise several prior stds wide, which is where an unclamped ODE diverges."""
    tmp = tmp_path_factory.mktemp("trained")
    sets = [a for s in [*TINY, "train.max_steps=300", "train.lr=2e-3", "train.warmup_steps=0",
                        f"data.cache_dir={tmp / 'cache'}"] for a in ("--set", s)]
    ok("train", "emoji_tiny", *sets, "--out", str(tmp / "run"), "--no-progress")
    for i in range(2):
        a = np.zeros((16, 16, 3), np.uint8)
        a[4:12, 4:12] = [255 * (i == 0), 200, 50 * i]
        Image.fromarray(a).save(tmp / f"img{i}.png")
    return tmp


def test_interpolating_images_of_a_trained_model_is_finite_and_ends_at_their_round_trips(trained, tmp_path):
    """Without the x0 clamp on the way back this model's frames are NaN (black PNGs before the check)."""
    imgs = [str(trained / f"img{i}.png") for i in range(2)]
    ok("interpolate", str(trained / "run"), *imgs, "--out", str(tmp_path / "i"), "--frames", "5", "--steps", "20")
    ok("invert", str(trained / "run"), *imgs, "--out", str(tmp_path / "inv"), "--steps", "20")
    frames = [np.asarray(Image.open(tmp_path / "i" / f"frame_{k:04d}.png")) for k in range(5)]
    for k, i in ((0, 0), (4, 1)):  # the slerp's ends are the two inversions, decoded as `invert` does
        assert np.array_equal(frames[k], np.asarray(Image.open(tmp_path / "inv" / f"roundtrip_{i:04d}.png")))
    assert all(f.std() > 5 for f in frames) and not np.array_equal(frames[1], frames[3])


@pytest.mark.parametrize("args,message", [
    (("edit", "{run}", "{img}", "--strength", "1.5"), "Invalid value for '--strength'"),
    (("edit", "{run}", "{img}", "--class", "99"), "--class must be in [0, 8]"),
    (("edit", "{run}", "{dir}/missing.png"), "cannot read image"),
    (("inpaint", "{run}", "{img}", "{dir}/grey.png"), "black (keep) and white (regenerate) only"),
    (("inpaint", "{run}", "{img}", "{dir}/small.png"), "is 20x20 but image"),
    (("invert", "{run}", "{img}", "--solver", "euler_maruyama"), "deterministic probability-flow ODE"),
])
def test_bad_input_is_one_line_and_writes_nothing(run, tmp_path, args, message):
    grey = np.zeros((24, 24), np.uint8)
    grey[0, 0] = 100
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "small.png")
    fill = {"run": str(run / "run"), "img": str(run / "img0.png"), "dir": str(tmp_path)}
    res = cli(*(a.format(**fill) for a in args), "--out", str(tmp_path / "out"), "--device", "cpu")
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_interpolation_ends_are_the_samples_of_the_two_seeds(run, tmp_path):
    from pixdiff.data.npz import load_images

    ok("interpolate", str(run / "run"), "--out", str(tmp_path / "i"), "--frames", "3", "--seeds", "7", "9",
       "--class", "0", "--steps", "3")
    for seed, frame in (("7", 0), ("9", 2)):
        ok("sample", str(run / "run"), "--out", str(tmp_path / seed), "-n", "1", "--seed", seed, "--steps", "3")
        want = load_images(tmp_path / seed / "samples.npz")[0]
        got = np.asarray(Image.open(tmp_path / "i" / f"frame_{frame:04d}.png"))
        # same noise and label; other batch shapes may move a pixel across a rounding boundary by one level
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


@pytest.mark.parametrize("command", ["edit", "inpaint", "invert", "interpolate"])
def test_help(command):
    res = cli(command, "--help")
    assert res.returncode == 0 and "Usage" in res.stdout


@pytest.fixture(scope="module")
def diverged(run, tmp_path_factory):
    """The run's checkpoint with its weights blown up: every output is inf or NaN (a diverged model)."""
    import torch

    from pixdiff.checkpoints import store

    ckpt = store.load(store.resolve(run / "run"))
    blown = {k: v * 1e30 if v.is_floating_point() else v for k, v in ckpt["ema"].items()}
    path = tmp_path_factory.mktemp("diverged") / "diverged.pt"
    store.save({**ckpt, "ema": blown, "model": blown, "ema_extra": {}}, path)
    assert torch.isfinite(next(iter(ckpt["ema"].values()))).all()
    return path


@pytest.mark.parametrize("command", [
    ["sample", "-n", "2", "--steps", "2"],
    ["interpolate", "--frames", "3", "--steps", "2"],
    ["edit", "IMAGE", "--steps", "2"],
    ["invert", "IMAGE", "--steps", "2", "--no-clip-x0"],
])
def test_nan_or_flat_output_is_a_failure_not_black_images(run, diverged, tmp_path, command):
    args = [str(run / "img0.png") if a == "IMAGE" else a for a in command]
    res = cli(args[0], str(diverged), *args[1:], "--out", str(tmp_path / "out"), "--device", "cpu")
    assert res.returncode == 2 and res.stderr.startswith("error:") and res.stderr.count("\n") == 1, res.stderr
    assert "NaN or inf" in res.stderr or "one flat colour" in res.stderr
    assert not list((tmp_path / "out").glob("*.png")) and not (tmp_path / "out" / "samples.npz").exists()


def test_check_output_closed_form():
    import torch

    from pixdiff.pipelines.generate import OutputError, check_output

    x = torch.rand(3, 3, 4, 4) * 2 - 1
    assert check_output(x, "x") is x
    with pytest.raises(OutputError, match="1 of 3 images hold NaN"):
        check_output(torch.cat([x[:2], torch.full((1, 3, 4, 4), float("nan"))]), "x")
    with pytest.raises(OutputError, match="1 of 3 images are one flat colour"):
        check_output(torch.cat([x[:2], torch.full((1, 3, 4, 4), 7.0)]), "x")  # saturates to 1 everywhere


def test_sample_classes_png_and_no_silent_overwrite(run, tmp_path):
    out = tmp_path / "s"
    ok("sample", str(run / "run"), "-n", "6", "--steps", "2", "--class", "3", "--class", "5", "--png", "--out", str(out))
    labels = np.load(out / "samples.npz")["labels"]
    assert labels.tolist() == [3, 5, 3, 5, 3, 5]
    assert sorted(p.name for p in (out / "images").glob("*.png")) == [f"{i:06d}_c{c}.png" for i, c in enumerate(labels)]
    before = (out / "samples.npz").read_bytes()
    res = cli("sample", str(run / "run"), "-n", "2", "--steps", "2", "--out", str(out), "--device", "cpu")
    assert res.returncode == 2 and "--overwrite" in res.stderr and (out / "samples.npz").read_bytes() == before
    ok("sample", str(run / "run"), "-n", "2", "--steps", "2", "--out", str(out), "--overwrite")
    assert len(np.load(out / "samples.npz")["labels"]) == 2
    res = cli("sample", str(run / "run"), "-n", "2", "--class", "99", "--out", str(tmp_path / "t"), "--device", "cpu")
    assert res.returncode == 2 and "--class 99" in res.stderr


def test_convert_keeps_the_runs_recipe_and_reads_the_extension(run, tmp_path):
    from pixdiff.checkpoints import store

    res = cli("convert", str(run / "run"), str(tmp_path / "x.safetensors"))
    assert res.returncode == 0, res.stderr
    data = store.read(tmp_path / "x.safetensors")
    assert store.recipe_of(data, "x").model.backbone.image_size == 16  # not dip_xl16's 256
