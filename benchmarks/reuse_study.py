"""Backbone reuse on a trained emoji_tiny: backbone evaluations, wall time, PSNR to the full sampler
(same seeds) and FD/KID against the training data, for several schedules.

    python benchmarks/reuse_study.py CHECKPOINT OUT.json [--num 100] [--batch 50]

The full sampler runs at three seed offsets (for the seed spread of FD); every schedule runs at
offset 0, so image i of a schedule and of the full sampler start from the same noise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from pixdiff.checkpoints.loader import load_model
from pixdiff.data.grid import to_uint8
from pixdiff.data.reference import reference_file
from pixdiff.diffusion.sampling import inference_network
from pixdiff.data.npz import load_images
from pixdiff.eval.pixels import coarse_fd, coarse_kid
from pixdiff.pipelines.generate import sample_batch
from pixdiff.runtime.rng import balanced_labels, seed_generators

HALF_LIST = "steps:" + ",".join(map(str, [*range(10), *range(11, 41, 2)]))  # 25 of 50: dense near noise
SCHEDULES = ["every:2", "every:4", "adaptive:0.2", HALF_LIST]  # in order of priority: the run may be cut short


def draw(net, recipe, num: int, batch: int, offset: int, reuse: str) -> tuple[np.ndarray, float, int]:
    """num images (uint8 NHWC), wall seconds, backbone evaluations per batch of `batch`."""
    labels = balanced_labels(num, recipe.model.backbone.num_classes)
    out, seconds, evals = [], 0.0, []
    for start in range(0, num, batch):
        idx = range(start, min(start + batch, num))
        net.batches.clear()
        t0 = time.perf_counter()
        x = sample_batch(net, recipe, labels[start:idx.stop], seed_generators([offset + i for i in idx]), reuse=reuse)
        seconds += time.perf_counter() - t0
        evals.append(len(net.batches))
        out.append(to_uint8(x))
    return np.concatenate(out), seconds, max(evals)


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
    return 10 * np.log10(255.0**2 / np.maximum(mse, 1e-12))


def scores(images: np.ndarray, ref: np.ndarray) -> dict:
    """FD/KID on 4x4 block means (`eval.pixels`: the tiny-model metrics; network FD needs N >> 1280)."""
    return {"coarse_fd": coarse_fd(ref, images), "coarse_kid": coarse_kid(ref, images)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--num", type=int, default=100)
    ap.add_argument("--batch", type=int, default=50)
    a = ap.parse_args()
    model, recipe, _ = load_model(a.checkpoint, device="cpu")
    net = inference_network(model.eval())
    ref_file = reference_file("emoji", recipe.resolution)
    ref = load_images(ref_file)
    rows = {}
    full, full_s, full_evals = draw(net, recipe, a.num, a.batch, 0, "off")
    rows["off"] = {"seed_offset": 0, "evaluations": full_evals, "seconds": full_s, **scores(full, ref)}
    for offset in (1_000_000,):
        images, s, n = draw(net, recipe, a.num, a.batch, offset, "off")
        rows[f"off@{offset}"] = {"seed_offset": offset, "evaluations": n, "seconds": s, **scores(images, ref)}
    for spec in SCHEDULES:
        images, s, n = draw(net, recipe, a.num, a.batch, 0, spec)
        p = psnr(images, full)
        rows[spec] = {"seed_offset": 0, "evaluations": n, "seconds": s, "wall_ratio": s / full_s,
                      "psnr_mean_db": float(p.mean()), "psnr_min_db": float(p.min()), **scores(images, ref)}
        print(spec, rows[spec], flush=True)
        write(a, recipe, ref_file, ref, rows)


def write(a: argparse.Namespace, recipe, ref_file, ref: np.ndarray, rows: dict) -> None:
    """The JSON so far (rewritten after every schedule)."""
    fds = [rows[k]["coarse_fd"] for k in rows if k.startswith("off")]
    result = {
        "command": f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python benchmarks/reuse_study.py "
                   f"{a.checkpoint} {a.out} --num {a.num} --batch {a.batch}",
        "torch": torch.__version__, "python": platform.python_version(),
        "machine": "2 CPU cores shared with ~6 other agents' jobs (load average ~12 during the run): wall "
                   "times are noisy, compare ratios only",
        "load_average_end": os.getloadavg(),
        "checkpoint_note": "emoji_tiny trained 557 steps (pixdiff train recipes/emoji_tiny.py --set "
                           "train.max_steps=1600 stopped by a 480 s timeout), EMA weights",
        "sampler": {"steps": recipe.sample.steps, "solver": recipe.sample.solver, "cfg_scale": recipe.sample.cfg_scale,
                    "cfg_interval": list(recipe.sample.cfg_interval), "time_shift": recipe.sample.time_shift},
        "num": a.num, "reference": f"{ref_file} ({len(ref)} training emoji)",
        "fd_seed_spread": {"min": min(fds), "max": max(fds), "values": fds},
        "rows": rows,
    }
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
