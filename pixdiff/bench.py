"""Speed of a recipe's model: sampling latency (the paper's protocol) and sampling/training throughput.

Weights are random: speed does not depend on their values. Every figure comes from the real code
paths: `pixdiff.diffusion.sampling.inference_network` + `pixdiff.pipelines.generate.sample_batch`,
exactly what `pixdiff sample` runs (solver, guidance interval, per-sample generators, final clamp,
--dtype, --compile), and `pixdiff.train.TrainingLoss` with AdamW.

Timing. Each timed call is one whole sampling call (or one training step). On CUDA it is bracketed
by CUDA events after a `torch.cuda.synchronize()`; on the CPU by `time.perf_counter`. Warm-up calls
run first and are not timed, except the first, reported as `first_call_s` (with `compile` it holds
the compilation, so `compile_s` = first call - median).

Precision ("bf16"). Sampling converts the parameters to bf16 (what a fast inference path does:
autocast would re-cast every fp32 weight on every forward, ~3.8 GB of memory traffic per forward
for DiP-XL/16), while the RoPE tables stay fp32 and the solver state stays fp32: the network input
is cast to bf16 (under bf16 autocast on CUDA) and its output back to fp32 at each call. Training
keeps fp32 master weights under bf16 autocast on CUDA, as `pixdiff.train` does. "fp32" is plain
fp32 with torch's defaults (TF32 matmuls off; cuDNN convolutions may use TF32, torch's default).

Compilation. `torch.compile(model, mode=compile_mode, dynamic=False)`: one static graph per batch
shape (sampling with a guidance interval runs two: B outside the interval, 2B inside). Latency
defaults to mode "reduce-overhead" on CUDA (inductor + CUDA graphs: the batch-2 run is launch-bound,
so graph replay is the big win) and "default" on the CPU (no CUDA graphs there); throughput to
"default". Only the network is compiled: the solver, guidance and casts around it run eagerly, as
in `sample`. Training compiles in place (`model.compile`) as the trainer does.

FLOPs. `summary.forward_flops` at batch 1 (torch's FlopCounterMode on a meta-device copy); a call
at batch b costs b times that. A training image costs 3x a forward (forward + backward ~ 2x).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import itertools
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from pixdiff.diffusion.sampling import default_compile_mode, inference_network
from pixdiff.nn.heads.final_layer import DiTFinalLayer
from pixdiff.nn.model import ModelConfig
from pixdiff.nn.summary import count_params, first_block_flops, split_flops
from pixdiff.pipelines.generate import sample_batch
from pixdiff.recipe import Recipe
from pixdiff.runtime.distributed import pick_device
from pixdiff.runtime.precision import DTYPES, Dtype, autocast
from pixdiff.runtime.progress import OnProgress
from pixdiff.runtime.rng import balanced_labels, seed_generators

# Dense (no sparsity) peak TFLOP/s from NVIDIA's data sheets, by device-name substring, checked in
# order. bf16 only: for fp32 the ceiling depends on TF32 settings (matmuls vs cuDNN convolutions),
# so fp32 MFU needs an explicit `peak_tflops`.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100", 989.0),  # SXM5 / HBM3
    ("H200 NVL", 835.0),
    ("H200", 989.0),
    ("A100", 312.0),
)


# ----------------------------------------------------------------------------- environment
def default_dtype(device: str | torch.device) -> Dtype:
    return "bf16" if torch.device(device).type == "cuda" else "fp32"


def default_peak_tflops(device_name: str, dtype: Dtype) -> float | None:
    """The device's dense bf16 peak, or None (CPU, fp32, unknown GPU)."""
    if dtype != "bf16":
        return None
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in device_name), None)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _resolve(device: str | None, dtype: str | None) -> tuple[torch.device, Dtype]:
    dev = pick_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    dt = dtype or default_dtype(dev)
    if dt not in DTYPES:
        raise ValueError(f"dtype must be 'bf16' or 'fp32', not {dt!r}")
    return dev, dt


def _environment(device: torch.device, dtype: Dtype) -> dict[str, Any]:
    return {
        "device": device_name(device),
        "device_type": device.type,
        "dtype": dtype,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cpu_threads": torch.get_num_threads(),
    }


# ----------------------------------------------------------------------------- timing and memory
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


Tick = Callable[[], None]  # called once per call, outside its timing


def _untracked() -> None:
    """The tick of a benchmark nobody follows."""


def _ticker(total: int, on_progress: OnProgress | None) -> Tick:
    """A tick per call of a benchmark, reported as on_progress(calls done, total)."""
    if on_progress is None:
        return _untracked
    done = itertools.count(1)
    return lambda: on_progress(next(done), total)


def _time_each(fn: Callable[[int], object], n: int, device: torch.device, tick: Tick = _untracked) -> list[float]:
    """Seconds of each of n back-to-back calls fn(0..n-1). On CUDA, events between the calls
    (no host sync added between them); one synchronize before and after. `tick` (progress: a
    counter, a line or a redraw now and then) runs between calls: outside the timing on the CPU;
    on CUDA it delays the next launch only if the GPU's queue has run dry."""
    _sync(device)
    if device.type == "cuda":
        events = [torch.cuda.Event(enable_timing=True) for _ in range(n + 1)]
        events[0].record()
        for i in range(n):
            fn(i)
            events[i + 1].record()
            tick()
        events[-1].synchronize()
        return [a.elapsed_time(b) / 1e3 for a, b in zip(events, events[1:])]
    times = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
        tick()
    return times


def _stats(times: list[float]) -> dict[str, Any]:
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "std_s": statistics.stdev(times) if len(times) > 1 else 0.0,
        "times_s": times,
    }


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def _memory_start(device: torch.device) -> int | None:
    """Start a peak-memory window; returns the CPU's current RSS in bytes (None on CUDA or where
    the peak RSS cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return None
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux: reset this process's peak RSS (VmHWM) to its current RSS
        return _proc_status_kb("VmRSS") * 1024
    except OSError:
        return None


def _memory_peak(device: torch.device, start: int | None) -> dict[str, Any]:
    if device.type == "cuda":
        return {"peak_mem_bytes": torch.cuda.max_memory_allocated(device),
                "peak_mem_kind": "cuda_max_memory_allocated"}
    if start is None:
        return {"peak_mem_bytes": None, "peak_mem_kind": None}
    # approximate: the allocator may reuse pages freed by an earlier model without raising the peak
    return {"peak_mem_bytes": _proc_status_kb("VmHWM") * 1024 - start, "peak_mem_kind": "cpu_peak_rss_increase"}


def _release(device: torch.device, compiled: bool) -> None:
    """Drop the previous model's compiled graphs (and CUDA graph pools) and cached memory."""
    gc.collect()
    if compiled:
        torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- models
def dit_only(config: ModelConfig) -> ModelConfig:
    """The recipe's DiT-only counterpart: same backbone, DiT's linear output layer, post placement."""
    return dataclasses.replace(config, head=DiTFinalLayer(), placement="post")


def _split_flops(config: ModelConfig) -> tuple[int, int]:
    """(backbone, head) FLOPs of one forward at batch 1, counted on a meta-device copy."""
    with torch.device("meta"):
        return split_flops(config.build(), config)


def _first_block_flops(config: ModelConfig) -> int:
    with torch.device("meta"):
        return first_block_flops(config.build(), config)


def _forward_gflops(config: ModelConfig) -> float:
    return sum(_split_flops(config)) / 1e9


def _build(config: ModelConfig, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    with device:
        return config.build()


def _sizes(model: torch.nn.Module) -> dict[str, int]:
    params = count_params(model)
    return {"params": params, "params_head": params - count_params(model.backbone)}


def _measure_sampling(
    config: ModelConfig, recipe: Recipe, *, steps: int, cfg_scale: float, batch: int, dtype: Dtype,
    compile: bool, compile_mode: str, device: torch.device, warmup: int, repeats: int, tick: Tick = _untracked,
) -> dict[str, Any]:
    """Time whole sampling calls of one model; figures for one model (no environment keys)."""
    backbone_flops, head_flops = _split_flops(config)
    gflops = (backbone_flops + head_flops) / 1e9
    mem_start = _memory_start(device)
    model = _build(config, device).eval().requires_grad_(False)
    sizes = _sizes(model)
    network = inference_network(model, dtype=dtype, compile=compile, compile_mode=compile_mode)
    y = balanced_labels(batch, config.backbone.num_classes, device=device)
    as_built = dataclasses.replace(recipe, model=config)

    def call(i: int) -> None:
        network.clear()
        sample_batch(network, as_built, y, seed_generators(range(i * batch, (i + 1) * batch), device), steps=steps,
                      cfg_scale=cfg_scale)

    first = _time_each(call, 1, device, tick)[0]
    _time_each(call, max(warmup - 1, 0), device, tick)
    times = _time_each(call, repeats, device, tick)
    stats = _stats(times)
    batches = list(network.batches)  # of the last timed call; every call runs the same grid
    guided = sum(b == 2 * batch for b in batches)
    # under reuse a reused step runs only the head, so the two parts are counted apart; first-block
    # reuse runs block 0 at every step, and a recompute then goes on from it (not counted twice)
    flops = backbone_flops * sum(batches) + head_flops * sum(network.heads)
    if network.firsts:
        flops += _first_block_flops(config) * (sum(network.firsts) - sum(network.resumed))
    out = {
        **stats,
        "first_call_s": first,
        "compile_s": max(first - stats["median_s"], 0.0) if compile else None,
        "nfe": len(batches),
        "nfe_guided": guided,
        "evals_per_image": sum(batches) / batch,
        # the paper's convention: steps x 2 with CFG, though the interval leaves some steps at B
        "nfe_label": f"{len(batches)}x2" if guided else str(len(batches)),
        **sizes,
        "gflops_per_forward": gflops,
        "tflop_per_call": flops / 1e12,
        "tflops": flops / stats["median_s"] / 1e12,
        **_memory_peak(device, mem_start),
    }
    del model, network
    _release(device, compile)
    return out


# ----------------------------------------------------------------------------- public API
def latency(
    recipe: Recipe, *, steps: int = 100, cfg_scale: float | None = None, batch: int = 1,
    dtype: Dtype | None = None, compile: bool = False, compile_mode: str | None = None,
    device: str | None = None, warmup: int = 2, repeats: int = 5, baseline: bool = True,
    peak_tflops: float | None = None, on_progress: OnProgress | None = None,
) -> dict[str, Any]:
    """The paper's latency protocol: one whole sampling call (default: 1 image, 100 steps of the
    recipe's solver, the recipe's CFG scale and interval), `warmup` untimed calls then `repeats`
    timed ones. With `baseline`, the recipe's DiT-only counterpart is measured the same way in the
    same run (`baseline`, `ratio` = median / baseline median).

    Defaults: device cuda if available else cpu; dtype bf16 on cuda, fp32 on cpu; compile_mode
    "reduce-overhead" on cuda, "default" on cpu. MFU against `peak_tflops` (default: the device's
    dense bf16 peak; None on CPU). `on_progress(calls done, total)` counts the calls, untimed ones
    included."""
    dev, dt = _resolve(device, dtype)
    compile_mode = compile_mode or default_compile_mode(dev)
    if warmup < 1 or repeats < 1:
        raise ValueError("warmup and repeats must be at least 1 (the first call is never timed)")
    scale = recipe.sample.cfg_scale if cfg_scale is None else cfg_scale
    env = _environment(dev, dt)
    peak = peak_tflops if peak_tflops is not None else default_peak_tflops(env["device"], dt)
    common = dict(steps=steps, cfg_scale=scale, batch=batch, dtype=dt, compile=compile,
                  compile_mode=compile_mode, device=dev, warmup=warmup, repeats=repeats,
                  tick=_ticker((warmup + repeats) * (2 if baseline else 1), on_progress))

    def with_mfu(r: dict[str, Any]) -> dict[str, Any]:
        return {**r, "mfu": r["tflops"] / peak if peak else None}

    result: dict[str, Any] = {
        "kind": "latency",
        "recipe": recipe.name,
        "resolution": recipe.resolution,
        "steps": steps,
        "solver": recipe.sample.solver,
        "cfg_scale": scale,
        "cfg_interval": list(recipe.sample.cfg_interval),
        "reuse": recipe.sample.reuse,  # with reuse on, nfe counts backbone forwards (the head runs every step)
        "batch": batch,
        "compile": compile,
        "compile_mode": compile_mode if compile else None,
        "warmup": warmup,
        "repeats": repeats,
        "peak_tflops": peak,
        **env,
        **with_mfu(_measure_sampling(recipe.model, recipe, **common)),
        "baseline": None,
        "ratio": None,
    }
    if baseline:
        base = with_mfu(_measure_sampling(dit_only(recipe.model), recipe, **common))
        result["baseline"] = base
        result["ratio"] = result["median_s"] / base["median_s"]
    return result


def _measure_training(
    recipe: Recipe, *, batch: int, dtype: Dtype, compile: bool, compile_mode: str, device: torch.device,
    warmup: int, iters: int, tick: Tick = _untracked,
) -> dict[str, Any]:
    """forward + backward + AdamW step of `pixdiff.train.TrainingLoss` on random data in [-1, 1]
    (REPA off, no EMA update, no gradient clipping)."""
    from pixdiff.train import TrainingLoss

    gflops = _forward_gflops(recipe.model)
    mem_start = _memory_start(device)
    model = _build(recipe.model, device)
    sizes = _sizes(model)
    if compile:
        model.compile(mode=compile_mode)  # in place, as the trainer does
    bb, tc = recipe.model.backbone, recipe.train
    loss_fn = TrainingLoss(model, recipe.objective, bb.num_classes, repa=None)
    optimizer = torch.optim.AdamW(loss_fn.parameters(), lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay,
                                  fused=device.type == "cuda")
    data = torch.Generator(device).manual_seed(0)
    x = torch.rand(batch, bb.channels, bb.image_size, bb.image_size, generator=data, device=device) * 2 - 1
    y = torch.randint(bb.num_classes, (batch,), generator=data, device=device)

    def step(i: int) -> None:
        gens = seed_generators(range(i * batch, (i + 1) * batch), device)  # per-sample, as in training
        with autocast(device, dtype):
            loss, _ = loss_fn(x, y, gens)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    first = _time_each(step, 1, device, tick)[0]
    _time_each(step, max(warmup - 1, 0), device, tick)
    stats = _stats(_time_each(step, iters, device, tick))
    flops = 3 * gflops * 1e9 * batch
    out = {
        **stats,
        "first_call_s": first,
        "compile_s": max(first - stats["median_s"], 0.0) if compile else None,
        **sizes,
        "gflops_per_forward": gflops,
        "flops_convention": "3 x forward FLOPs per image (forward + backward ~ 2x forward)",
        "tflop_per_call": flops / 1e12,
        "tflops": flops / stats["median_s"] / 1e12,
        **_memory_peak(device, mem_start),
    }
    del loss_fn, model, optimizer
    _release(device, compile)
    return out


def throughput(
    recipe: Recipe, *, mode: Literal["sample", "train"] = "sample", batch: int = 64, dtype: Dtype | None = None,
    compile: bool = False, compile_mode: str = "default", device: str | None = None, steps: int | None = None,
    cfg_scale: float | None = None, iters: int | None = None, warmup: int | None = None,
    peak_tflops: float | None = None, on_progress: OnProgress | None = None,
) -> dict[str, Any]:
    """Images per second at a large batch.

    mode "sample": whole sampling calls of `batch` images with `steps` steps (default: the
    recipe's; no extrapolation) and the recipe's CFG (2B per guided step); images/s = batch /
    median call time. Defaults iters 3, warmup 1.
    mode "train": forward + backward + AdamW steps of TrainingLoss on `batch` random images (bf16
    autocast with fp32 master weights, or fp32); images/s = batch / median step time, FLOPs
    3x forward per image. Defaults iters 10, warmup 3.
    MFU = achieved TFLOP/s / `peak_tflops` (default: the device's dense bf16 peak; None on CPU).
    `on_progress(calls done, total)` counts the calls or steps, untimed ones included."""
    if mode not in ("sample", "train"):
        raise ValueError(f"mode must be 'sample' or 'train', not {mode!r}")
    dev, dt = _resolve(device, dtype)
    iters = iters if iters is not None else (3 if mode == "sample" else 10)
    warmup = warmup if warmup is not None else (1 if mode == "sample" else 3)
    if warmup < 1 or iters < 1:
        raise ValueError("warmup and iters must be at least 1 (the first call is never timed)")
    env = _environment(dev, dt)
    peak = peak_tflops if peak_tflops is not None else default_peak_tflops(env["device"], dt)
    tick = _ticker(warmup + iters, on_progress)
    result: dict[str, Any] = {
        "kind": "throughput",
        "mode": mode,
        "recipe": recipe.name,
        "resolution": recipe.resolution,
        "batch": batch,
        "compile": compile,
        "compile_mode": compile_mode if compile else None,
        "warmup": warmup,
        "iters": iters,
        **env,
    }
    if mode == "sample":
        scale = recipe.sample.cfg_scale if cfg_scale is None else cfg_scale
        n_steps = steps or recipe.sample.steps
        result.update(steps=n_steps, solver=recipe.sample.solver, reuse=recipe.sample.reuse, cfg_scale=scale,
                      cfg_interval=list(recipe.sample.cfg_interval))
        measured = _measure_sampling(recipe.model, recipe, steps=n_steps, cfg_scale=scale, batch=batch, dtype=dt,
                                     compile=compile, compile_mode=compile_mode, device=dev, warmup=warmup,
                                     repeats=iters, tick=tick)
    else:
        measured = _measure_training(recipe, batch=batch, dtype=dt, compile=compile, compile_mode=compile_mode,
                                     device=dev, warmup=warmup, iters=iters, tick=tick)
    result.update(measured)
    result.update(
        images_per_s=batch / measured["median_s"],
        peak_tflops=peak,
        mfu=measured["tflops"] / peak if peak else None,
    )
    return result


# ----------------------------------------------------------------------------- data feed
def synthetic_cache(path: Path, count: int, resolution: int, num_classes: int, seed: int = 0):
    """A cache of `count` random uint8 images with random labels, written at `path` in the format
    `pixdiff.data.cache` reads; opened. The file is full size (20k images at 256 px are 3.9 GB) but
    repeats one block of 256 random images: pixel values do not change the cost of reading them."""
    from pixdiff.data.cache import IMAGES_FILE, LABELS_FILE, CacheInfo, open_cache, write_meta

    rng = np.random.default_rng(seed)
    per_image, chunk = 3 * resolution * resolution, 256
    block = rng.bytes(per_image * min(chunk, count))
    path.mkdir(parents=True)
    with open(path / IMAGES_FILE, "wb") as f:
        for start in range(0, count, chunk):
            f.write(memoryview(block)[:per_image * min(chunk, count - start)])
    labels = rng.integers(0, num_classes, count, dtype=np.int64)
    (path / LABELS_FILE).write_bytes(labels.tobytes())
    names = tuple(f"class{k}" for k in range(num_classes))
    write_meta(path, CacheInfo(path, resolution, count, names, tuple(np.bincount(labels, minlength=num_classes).tolist()),
                               "synthetic (random uint8)", "upscale", (), 0.0))
    return open_cache(path, resolution=resolution)


def _index_cost(seed: int, global_batch: int, dataset_size: int, num_classes: int, balance: bool,
                steps: int = 200) -> dict[str, Any]:
    """Host time to find one step's dataset indices: the stream's (the epoch's order is built once,
    then sliced) against the reference that rebuilds the epoch for every step."""
    from pixdiff.data.stream import EpochOrders, class_groups, global_batch_indices

    labels = torch.randint(0, num_classes, (dataset_size,), generator=torch.Generator().manual_seed(seed))
    groups = class_groups(labels) if balance else None
    orders = EpochOrders(seed, dataset_size, groups)
    start = time.perf_counter()
    orders.take(0, global_batch)  # builds epoch 0
    epoch_s = time.perf_counter() - start
    per_step = []
    for step in range(1, steps + 1):
        start = time.perf_counter()
        orders.take(step * global_batch, (step + 1) * global_batch)
        per_step.append(time.perf_counter() - start)
    reference = []
    for step in range(3):
        start = time.perf_counter()
        global_batch_indices(seed, step, global_batch, dataset_size, groups)
        reference.append(time.perf_counter() - start)
    return {
        "dataset_size": dataset_size,
        "epoch_order_s": epoch_s,  # once per epoch
        "steps_per_epoch": dataset_size / global_batch,
        "per_step_us": statistics.median(per_step) * 1e6,  # median over `steps` steps inside one epoch
        "amortized_per_step_us": (statistics.median(per_step) + epoch_s * global_batch / dataset_size) * 1e6,
        "reference_per_step_us": statistics.median(reference) * 1e6,
    }


def data_feed(recipe: Recipe, *, num_workers: int | None = None, batch: int = 256, images: int = 20_000,
              steps: int = 50, warmup: int = 5, resolution: int = 256, prefetch: int = 2,
              index_sizes: tuple[int, ...] = (20_000, 1_281_167), device: str | None = None,
              on_progress: OnProgress | None = None) -> dict[str, Any]:
    """Images/s that `BatchStream` delivers to a training step (float32 x on the device) from a
    synthetic `resolution` px memory-mapped cache of `images` random images written to a temporary
    directory (so in the page cache: this times the feed, not the disk), with the recipe's flips
    and class balancing, one process, batch = global batch; plus the per-step index cost at each
    of `index_sizes` images. num_workers defaults to the recipe's train.num_workers.
    `on_progress(steps done, total)` counts the steps, warm-up ones included."""
    from pixdiff.data.stream import BatchStream

    if min(batch, images, steps, resolution) < 1 or warmup < 0 or any(n < 1 for n in index_sizes):
        raise ValueError("batch, images, steps, resolution and index sizes must be at least 1, warmup at least 0")
    workers = recipe.train.num_workers if num_workers is None else num_workers
    if workers < 0 or prefetch < 1:
        raise ValueError(f"need num_workers >= 0 and prefetch >= 1, got {workers} and {prefetch}")
    dev, _ = _resolve(device, "fp32")
    tc, dc, classes = recipe.train, recipe.data, recipe.model.backbone.num_classes
    result: dict[str, Any] = {
        "kind": "data", "recipe": recipe.name, "resolution": resolution, "batch": batch, "num_workers": workers,
        "prefetch": prefetch, "images": images, "steps": steps, "warmup": warmup, "flip": dc.flip,
        "balance_classes": dc.balance_classes, **_environment(dev, "fp32"),
    }
    with tempfile.TemporaryDirectory(prefix="pixdiff-bench-data-") as tmp:
        start = time.perf_counter()
        cache = synthetic_cache(Path(tmp) / "cache", images, resolution, classes, tc.seed)
        result["cache_write_s"] = time.perf_counter() - start
        with BatchStream(cache.images, cache.labels, seed=tc.seed, global_batch=batch, grad_accum=1, rank=0, world=1,
                         flip=dc.flip, balance_classes=dc.balance_classes, device=dev, num_workers=workers,
                         prefetch=prefetch) as stream:
            tick = _ticker(warmup + steps, on_progress)
            for _ in range(warmup):
                next(stream)
                tick()
            delivered = 0

            def take(_: int) -> None:
                nonlocal delivered
                delivered += next(stream).x.shape[0]

            times = _time_each(take, steps, dev, tick)
    seconds = sum(times)
    result.update(_stats(times), images_delivered=delivered, seconds=seconds, images_per_s=delivered / seconds)
    result["index"] = [_index_cost(tc.seed, batch, n, classes, dc.balance_classes) for n in index_sizes]
    return result


# ----------------------------------------------------------------------------- printing
def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _mem(r: dict[str, Any]) -> str:
    n = r.get("peak_mem_bytes")
    if n is None:
        return "-"
    size = f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"
    return f"{size} ({r['peak_mem_kind']})"


def result_table(result: dict[str, Any]):
    """A rich Table for a `latency` or `throughput` result."""
    from rich.table import Table

    r = result
    if r["kind"] == "data":
        return _data_table(r)
    title = (f"{r['kind']}: {r['recipe']} on {r['device']} ({r['dtype']}, "
             f"{'compiled ' + r['compile_mode'] if r['compile'] else 'eager'}, torch {r['torch_version']})")
    if r["kind"] == "latency":
        cols = [r] + ([r["baseline"]] if r["baseline"] else [])
        table = Table(title=title)
        table.add_column("")
        table.add_column(r["recipe"], justify="right")
        if r["baseline"]:
            table.add_column("DiT-only baseline", justify="right")
        rows = [
            ("median s", "median_s"), ("min s", "min_s"), ("max s", "max_s"), ("std s", "std_s"),
            ("first call s", "first_call_s"), ("compile s", "compile_s"),
            ("NFE (network calls)", "nfe"), ("  CFG calls (batch 2B)", "nfe_guided"),
            ("evaluations per image", "evals_per_image"), ("paper convention", "nfe_label"),
            ("parameters", "params"), ("  head", "params_head"), ("GFLOP / forward (B=1)", "gflops_per_forward"),
            ("achieved TFLOP/s", "tflops"), ("MFU", "mfu"),
        ]
        for label, key in rows:
            table.add_row(label, *(_fmt(c[key]) for c in cols))
        table.add_row("peak memory", *(_mem(c) for c in cols))
        table.caption = (f"batch {r['batch']}, {r['steps']} {r['solver']} steps, CFG {r['cfg_scale']} on "
                         f"{tuple(r['cfg_interval'])}, {r['repeats']} repeats"
                         + (f"; ratio {r['ratio']:.3f}" if r["ratio"] else ""))
        return table
    table = Table(title=title, show_header=False)
    rows = [
        ("mode", r["mode"]), ("batch", r["batch"]), ("images / s", r["images_per_s"]),
        ("median s / call", r["median_s"]), ("min / max s", f"{r['min_s']:.4g} / {r['max_s']:.4g}"),
        ("first call s", r["first_call_s"]), ("compile s", r["compile_s"]),
        ("achieved TFLOP/s", r["tflops"]), ("peak TFLOP/s", r["peak_tflops"]), ("MFU", r["mfu"]),
        ("parameters", r["params"]), ("GFLOP / forward (B=1)", r["gflops_per_forward"]), ("peak memory", _mem(r)),
    ]
    if r["mode"] == "sample":
        rows.insert(3, ("steps / CFG", f"{r['steps']} {r['solver']} / {r['cfg_scale']} on {tuple(r['cfg_interval'])}"))
        rows.insert(4, ("NFE (guided)", f"{r['nfe']} ({r['nfe_guided']})"))
    else:
        rows.insert(3, ("FLOPs", r["flops_convention"]))
    for label, value in rows:
        table.add_row(label, _fmt(value))
    return table


def _data_table(r: dict[str, Any]):
    from rich.table import Table

    table = Table(title=f"data feed: {r['recipe']} on {r['device']} (torch {r['torch_version']})", show_header=False)
    rows = [
        ("images / s delivered", r["images_per_s"]), ("batch x steps", f"{r['batch']} x {r['steps']}"),
        ("median / min / max s per batch", f"{r['median_s']:.4g} / {r['min_s']:.4g} / {r['max_s']:.4g}"),
        ("workers / prefetch", f"{r['num_workers']} / {r['prefetch']}"),
        ("cache", f"{r['images']:,} random images at {r['resolution']} px"),
        ("flip / balance classes", f"{r['flip']} / {r['balance_classes']}"),
    ]
    for i in r["index"]:
        rows.append((f"index us/step at {i['dataset_size']:,} images",
                     f"{i['per_step_us']:.1f} (+{i['epoch_order_s']:.3g} s per epoch; "
                     f"rebuilt every step: {i['reference_per_step_us']:,.0f})"))
    for label, value in rows:
        table.add_row(label, _fmt(value))
    return table


def print_result(result: dict[str, Any], console: Any = None) -> None:
    from rich.console import Console

    (console or Console()).print(result_table(result))
