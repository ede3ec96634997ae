import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from pixdiff.bench import default_peak_tflops, dit_only, latency, result_table, throughput
from pixdiff.diffusion.solvers import shifted_grid
from pixdiff.recipe import load_recipe

TINY = ["model.backbone.depth=2", "model.backbone.dim=32", "model.backbone.num_heads=2",
        "model.backbone.image_size=16", "model.head.width=8"]
STEPS = 10


@pytest.fixture(scope="module")
def recipe():
    # DiP's guidance interval (emoji_tiny guides on (0, 1)); with 10 steps the grid point t = 0.1
    # sits exactly on the open interval's edge
    return load_recipe("emoji_tiny", TINY + ["sample.cfg_interval=(0.1, 1.0)"])


@pytest.fixture(scope="module")
def lat(recipe):
    return latency(recipe, steps=STEPS, cfg_scale=3.0, device="cpu", warmup=1, repeats=2)


def guided_points(recipe, steps):
    """Euler evaluates the network at every grid point but the last; CFG runs where lo < t < hi."""
    lo, hi = recipe.sample.cfg_interval
    ts = shifted_grid(steps, recipe.sample.time_shift)[:-1]
    return int(((ts > lo) & (ts < hi)).sum())


REQUIRED = ("median_s", "min_s", "max_s", "nfe", "params", "device", "dtype", "torch_version", "baseline")


def test_latency_statistics_derive_from_the_timed_calls(lat):
    for key in REQUIRED:
        assert key in lat
    for r in (lat, lat["baseline"]):
        times = r["times_s"]  # `repeats` timed calls after the untimed warm-up
        assert len(times) == 2 and all(t > 0 for t in times) and r["first_call_s"] > 0
        assert (r["median_s"], r["min_s"], r["max_s"]) == (statistics.median(times), min(times), max(times))
        assert r["tflops"] == pytest.approx(r["tflop_per_call"] / r["median_s"])  # FLOPs of one call / its time
        assert r["compile_s"] is None and r["mfu"] is None and r["params"] > 0
    assert lat["dtype"] == "fp32" and lat["device_type"] == "cpu" and lat["torch_version"] == torch.__version__
    assert lat["device"] and lat["compile"] is False
    assert lat["ratio"] == pytest.approx(lat["median_s"] / lat["baseline"]["median_s"])
    json.loads(json.dumps(lat))


def test_latency_counts_network_evaluations_from_the_grid(recipe, lat):
    guided = guided_points(recipe, STEPS)
    assert 0 < guided < STEPS  # the interval leaves the first steps unguided
    for r in (lat, lat["baseline"]):
        assert r["nfe"] == STEPS  # Euler: one network call per step
        assert r["nfe_guided"] == guided  # each of them at batch 2 (uncond + cond)
        assert r["evals_per_image"] == STEPS + guided
        assert r["nfe_label"] == f"{STEPS}x2"
        assert r["tflop_per_call"] == pytest.approx(r["gflops_per_forward"] * (STEPS + guided) / 1e3)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_latency_without_guidance_runs_batch_one(dtype):
    r = latency(load_recipe("emoji_tiny", TINY), steps=3, cfg_scale=1.0, device="cpu", dtype=dtype, warmup=1,
                repeats=1, baseline=False)
    assert r["dtype"] == dtype
    assert (r["nfe"], r["nfe_guided"], r["evals_per_image"], r["nfe_label"]) == (3, 0, 3.0, "3")
    assert r["baseline"] is None and r["ratio"] is None


def test_baseline_is_the_dit_only_counterpart(recipe, lat):
    base = lat["baseline"]
    assert base["params_head"] < lat["params_head"]
    # same backbone: the difference in totals is the difference in heads
    assert lat["params"] - base["params"] == lat["params_head"] - base["params_head"]
    assert base["gflops_per_forward"] < lat["gflops_per_forward"]
    assert type(dit_only(recipe.model).head).__name__ == "DiTFinalLayer"
    assert lat["peak_mem_kind"] in ("cpu_peak_rss_increase", None)


@pytest.mark.parametrize("mode", ["sample", "train"])
def test_throughput(recipe, mode):
    r = throughput(recipe, mode=mode, batch=4, steps=3, device="cpu", iters=2, warmup=1)
    assert r["images_per_s"] == pytest.approx(4 / r["median_s"])
    assert r["images_per_s"] > 0 and r["tflops"] > 0
    assert r["mfu"] is None and r["peak_tflops"] is None
    assert (r["mode"], r["batch"], r["dtype"]) == (mode, 4, "fp32")
    if mode == "sample":
        assert r["steps"] == 3 and r["nfe"] == 3
    else:
        assert r["tflop_per_call"] == pytest.approx(3 * 4 * r["gflops_per_forward"] / 1e3)
    json.loads(json.dumps(r))
    assert result_table(r).row_count > 5


def test_progress_counts_every_call_untimed_ones_included(recipe):
    reports = []
    latency(recipe, steps=2, cfg_scale=3.0, device="cpu", warmup=2, repeats=2, baseline=False,
            on_progress=lambda done, total: reports.append((done, total)))
    assert reports == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_peak_and_printing(lat):
    assert default_peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.0
    assert default_peak_tflops("NVIDIA H100 PCIe", "bf16") == 756.0
    assert default_peak_tflops("NVIDIA H200", "bf16") == 989.0
    assert default_peak_tflops("NVIDIA H200", "fp32") is None
    assert default_peak_tflops("AMD EPYC", "bf16") is None
    assert result_table(lat).row_count > 10


def test_bad_arguments(recipe):
    with pytest.raises(ValueError, match="dtype"):
        latency(recipe, steps=1, dtype="fp16", device="cpu")
    with pytest.raises(ValueError, match="mode"):
        throughput(recipe, mode="infer", device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            latency(recipe, steps=1, device="cuda")


def test_bench_data_cli_delivers_steps_times_batch_images(tmp_path):
    """`pixdiff bench data` end to end on a tiny synthetic cache: counts and rates come from what ran."""
    root = Path(__file__).resolve().parents[1]
    args = [sys.executable, "-m", "pixdiff.cli", "bench", "data", "emoji_tiny", "--images", "24", "--resolution", "8",
            "--batch", "4", "--steps", "5", "--warmup", "1", "--index-sizes", "50,500", "--num-workers", "2",
            "--device", "cpu", "--set", "data.flip=true"]
    res = subprocess.run([*args, "--json"], capture_output=True, text=True, cwd=root, timeout=300)
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)  # progress goes to stderr: stdout stays JSON
    assert "bench data: 6/6 steps (100%)" in res.stderr  # warm-up steps included
    assert (r["kind"], r["batch"], r["steps"], r["num_workers"], r["resolution"]) == ("data", 4, 5, 2, 8)
    assert r["images_delivered"] == 5 * 4 and len(r["times_s"]) == 5 and all(t > 0 for t in r["times_s"])
    assert r["seconds"] == pytest.approx(sum(r["times_s"]))
    assert r["images_per_s"] == pytest.approx(r["images_delivered"] / r["seconds"])
    assert r["flip"] is True and r["balance_classes"] is True  # the recipe's data settings
    assert [i["dataset_size"] for i in r["index"]] == [50, 500]
    for i in r["index"]:
        assert i["per_step_us"] > 0 and i["epoch_order_s"] > 0 and i["reference_per_step_us"] > 0
        assert i["amortized_per_step_us"] == pytest.approx(i["per_step_us"] + i["epoch_order_s"] * 4 / i["dataset_size"] * 1e6)
    assert not list(Path(tempfile.gettempdir()).glob("pixdiff-bench-data-*"))  # the synthetic cache is gone
    bad = subprocess.run([*args, "--batch", "0"], capture_output=True, text=True, cwd=root, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("error:")


def test_under_reuse_a_reused_step_counts_only_its_head_flops():
    from pixdiff.nn.summary import first_block_flops, split_flops

    r = load_recipe("emoji_tiny", [*TINY, "sample.reuse=every:2"])
    with torch.device("meta"):
        backbone, head = split_flops(r.model.build(), r.model)
    assert backbone > 0 and head > 0
    got = latency(r, steps=4, cfg_scale=1.0, device="cpu", warmup=1, repeats=1, baseline=False)
    assert got["nfe"] == 2  # the backbone at steps 0 and 2; the head at all 4
    assert got["tflop_per_call"] * 1e12 == pytest.approx(2 * backbone + 4 * head, rel=1e-12)
    off = latency(load_recipe("emoji_tiny", TINY), steps=4, cfg_scale=1.0, device="cpu", warmup=1, repeats=1,
                  baseline=False)
    assert off["tflop_per_call"] * 1e12 == pytest.approx(4 * (backbone + head), rel=1e-12)
    assert off["gflops_per_forward"] * 1e9 == pytest.approx(backbone + head, rel=1e-12)
    # first-block: block 0 at all 4 steps, the backbone (going on from block 0) at step 0 only
    r = load_recipe("emoji_tiny", [*TINY, "sample.reuse=first-block:1e9"])
    with torch.device("meta"):
        first = first_block_flops(r.model.build(), r.model)
    assert 0 < first < backbone  # the embeddings and the first of TINY's 2 blocks
    got = latency(r, steps=4, cfg_scale=1.0, device="cpu", warmup=1, repeats=1, baseline=False)
    assert got["nfe"] == 1
    assert got["tflop_per_call"] * 1e12 == pytest.approx(backbone + 4 * head + 3 * first, rel=1e-12)
