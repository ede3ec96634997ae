"""Shared plumbing for the paper-claim experiments: devices, timing, PSNR, JSON, small figures.

Nothing here re-implements the toolkit: models, training, sampling, data and metrics come from
`pixdiff`. This module only holds what every driver needs around them.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
# run folders, caches and sample files: git-ignored, never committed
DEFAULT_WORK = REPO / "runs" / "experiments"


# ----------------------------------------------------------------------------- device and threads
def configure(threads: int | None, device: str) -> torch.device:
    """Pin the intra-op thread count (None keeps torch's default) and return the device."""
    if threads:
        torch.set_num_threads(threads)
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--scale gpu needs a CUDA device; none is visible (torch.cuda.is_available() is False)")
    return torch.device("cuda", 0) if device == "cuda" else torch.device("cpu")


def dist_for(device: torch.device) -> Any:
    """The single-process `pixdiff.runtime.distributed.Dist` for `device` (what `Trainer` takes)."""
    from pixdiff.runtime.distributed import Dist

    if device.type == "cuda":
        torch.cuda.set_device(device)
    return Dist(device=device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    """(fn(), seconds), with the device synchronised on both sides."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def train_round(trainers: Mapping[Hashable, Any], device: torch.device, step_times: dict[Hashable, list[float]],
                window: dict[Hashable, list[float]]) -> None:
    """One training step of every trainer in turn (so all see the same machine load); each step's
    time goes to `step_times[key]`, its loss to `window[key]`."""
    for key, trainer in trainers.items():
        stats, dt = timed(trainer.step, device)
        step_times[key].append(dt)
        window[key].append(float(stats["loss"]))


def flush_losses(window: dict[Hashable, list[float]], losses: dict[Hashable, list[tuple[int, float]]],
                 step: int) -> None:
    """Append (step, mean loss since the last flush) per key and empty the windows."""
    for key, values in window.items():
        if values:
            losses[key].append((step, float(np.mean(values))))
            values.clear()


def median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def environment(device: torch.device) -> dict[str, Any]:
    """Where the numbers were measured."""
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device.type,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu": _cpu_name(),
        "load_avg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_revision() -> dict[str, Any]:
    """The commit the code ran at and whether the tree had local changes (read-only git calls); the
    results the drivers themselves write under docs/ do not count as changes."""
    def run(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    outputs = (":(exclude,glob)docs/experiments*/**", ":(exclude)docs/experiments*.md")
    dirty = bool(run("status", "--porcelain", "--", ".", *outputs))
    return {"commit": run("rev-parse", "HEAD") or None, "dirty": dirty}


def command_line() -> str:
    """The command as typed (module form when run with -m)."""
    argv = list(sys.argv)
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        return " ".join(["python", "-m", spec.name.removesuffix(".__main__"), *argv[1:]])
    return " ".join(["python", *argv])


# ----------------------------------------------------------------------------- metrics
def psnr(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, peak: float) -> float:
    """Peak signal-to-noise ratio in dB between two arrays on the same scale (`peak` = max value)."""
    a = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a).double()
    b = torch.as_tensor(np.asarray(b) if not isinstance(b, torch.Tensor) else b).double()
    mse = (a - b).square().mean().item()
    return float("inf") if mse == 0 else 10 * float(np.log10(peak**2 / mse))


def high_frequency_energy(img: np.ndarray, cutoff: float = 0.25) -> float:
    """Spectral energy of a uint8 (H, W, 3) image's luminance above `cutoff` cycles/pixel.

    The ratio of this between a generated image and the photo tells blur (< 1: detail missing)
    from noise (> 1: spurious high frequencies); 1 is the photo's amount of fine detail.
    """
    g = img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # (H, W) luminance
    g = g - g.mean()
    spec = np.abs(np.fft.fft2(g)) ** 2
    fy = np.fft.fftfreq(g.shape[0])[:, None]
    fx = np.fft.fftfreq(g.shape[1])[None, :]
    return float(spec[np.sqrt(fx**2 + fy**2) > cutoff].sum() / g.size)


# ----------------------------------------------------------------------------- files
def write_json(path: Path, obj: Any) -> Path:
    from pixdiff.runtime.atomic import atomic_write

    with atomic_write(path, text=True) as f:
        f.write(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def rel(path: Path) -> str:
    """A path relative to the repository root when it is inside it."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def matplotlib_pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


class Log:
    """Timestamped progress lines on stderr (the drivers' only console output)."""

    def __init__(self, name: str):
        self.name, self.t0 = name, time.perf_counter()

    def __call__(self, msg: str) -> None:
        print(f"[{self.name} {time.perf_counter() - self.t0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def save_report(out: Path, report: dict[str, Any], *, t_start: float, train_s: float,
                device: torch.device) -> dict[str, Any]:
    """Add where, when and how a driver ran to its report and write <out>/results.json."""
    report.update({
        "train_wall_s": round(train_s, 1),
        "wall_s": round(time.perf_counter() - t_start, 1),
        "environment": environment(device),
        "command": command_line(),
    })
    write_json(out / "results.json", report)
    return report


def add_queue_options(p: Any, jobs: str, prepare: str) -> None:
    """--shard, --aggregate and --prepare of a driver whose `jobs` two workers can share through a queue."""
    p.add_argument("--shard", default="0/1", help=f"K/M: run the {jobs} whose index i has i %% M == K; 'queue': "
                                                  f"take unclaimed {jobs}, as many workers as there are")
    p.add_argument("--aggregate", action="store_true", help=f"pool the finished {jobs} into results.json")
    p.add_argument("--prepare", action="store_true", help=f"only {prepare} (once, before shards run side by side)")


def driver_parser(doc: str, name: str, scales: dict[str, Any], set_example: str) -> Any:
    """The options every driver takes: --scale, --out, --work, --threads, --set."""
    import argparse

    p = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=sorted(scales), default="cpu")
    p.add_argument("--out", type=Path, default=None, help=f"results folder (default docs/experiments[_gpu]/{name})")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK, help="scratch folder for runs, samples, caches")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help=f"override a field of the scale (pilots), e.g. {set_example}")
    return p


def results_dir(scale: str) -> Path:
    """docs/experiments for the committed CPU run, docs/experiments_<scale> for any other size."""
    return DOCS / ("experiments" if scale == "cpu" else f"experiments_{scale}")


def page_path(scale: str) -> Path:
    return DOCS / ("experiments.md" if scale == "cpu" else f"experiments_{scale}.md")


def parse_sets(items: list[str], base: Any) -> dict[str, Any]:
    """`FIELD=VALUE` strings -> {field: value} typed like the dataclass `base`'s current values."""
    import ast
    import dataclasses

    fields = {f.name for f in dataclasses.fields(base)}
    out: dict[str, Any] = {}
    for item in items:
        key, _, raw = item.partition("=")
        if key not in fields:
            raise SystemExit(f"unknown field {key!r}; fields: {', '.join(sorted(fields))}")
        cur = getattr(base, key)
        try:
            val = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            val = raw
        if isinstance(cur, float) and isinstance(val, int):
            val = float(val)
        if isinstance(cur, tuple) and isinstance(val, list):
            val = tuple(val)
        out[key] = val
    return out
