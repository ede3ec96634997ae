"""Backbone reuse on a trained model: backbone evaluations, wall time, PSNR to the full sampler
(same seeds), and FD/KID against the model's training data (4x4 block means, and EfficientNet
features), for several schedules.

    python benchmarks/reuse_study.py CHECKPOINT OUT.json [--num 100] [--batch 50] [--latency-num 12] [--note "..."]

The full sampler runs at three seed offsets (the seed spread of each FD); every schedule runs at
offset 0, so image i of a schedule and of the full sampler start from the same noise. The
reference is the whole data source the checkpoint's recipe names, at its resolution. A signalled
schedule decides per sample, and at batch 50 some sample recomputes at almost every step: so the
first `--latency-num` images are drawn again one at a time (batch 1, the latency case), where the
backbone evaluations per image and the wall ratio are what a single-image caller gets.
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
from pixdiff.eval import evaluate
from pixdiff.eval.features import load_extractor
from pixdiff.eval.metrics import reference_stats
from pixdiff.eval.pixels import coarse_fd, coarse_kid
from pixdiff.pipelines.generate import sample_batch
from pixdiff.runtime.rng import balanced_labels, seed_generators

OFFSETS = (0, 1_000_000, 2_000_000)  # the full sampler's seed offsets: its seed spread


def schedules(steps: int) -> list[str]:
    """In order of priority (the run may be cut short): every 2nd and 4th step; FirstBlockCache's
    signal at the thresholds that gave about 2x and 4x fewer evaluations per image on the demo's
    checkpoint; TeaCache's signal; and a half list dense near noise (every step of the first fifth,
    every other up to four fifths, none in the last fifth: 25 of 50 steps, 12 of 25), where the
    layout is still being decided."""
    half = [*range(steps // 5), *range(steps // 5 + 1, 4 * steps // 5, 2)]
    return ["every:2", "every:4", "first-block:0.15", "first-block:0.3", "adaptive:0.2",
            "steps:" + ",".join(map(str, half))]


def draw(net, recipe, num: int, batch: int, offset: int, reuse: str) -> tuple[np.ndarray, float, float]:
    """num images (uint8 NHWC), wall seconds, backbone evaluations (batch forwards) per batch, mean."""
    labels = balanced_labels(num, recipe.model.backbone.num_classes)
    out, seconds, evals = [], 0.0, []
    for start in range(0, num, batch):
        idx = range(start, min(start + batch, num))
        net.clear()
        t0 = time.perf_counter()
        x = sample_batch(net, recipe, labels[start:idx.stop], seed_generators([offset + i for i in idx]), reuse=reuse)
        seconds += time.perf_counter() - t0
        evals.append(len(net.batches))
        out.append(to_uint8(x))
    return np.concatenate(out), seconds, float(np.mean(evals))


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
    return 10 * np.log10(255.0**2 / np.maximum(mse, 1e-12))


def scores(images: np.ndarray, ref: np.ndarray, extractor, ref_stats) -> dict:
    """FD/KID on 4x4 block means (`eval.pixels`) and on EfficientNet features (biased upwards at this
    N, so compared only between rows of one file, all at the same N)."""
    m = evaluate(images, ref_stats, features=extractor, use_cache=False, kid_subsets=20,
                 kid_subset_size=min(100, len(images)))
    return {"coarse_fd": coarse_fd(ref, images), "coarse_kid": coarse_kid(ref, images),
            "fd_effnet": float(m["fd_effnet"]), "kid_effnet": float(m["kid_effnet"])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--num", type=int, default=100)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--latency-num", type=int, default=12, help="images drawn again at batch 1")
    ap.add_argument("--note", default="", help="what the checkpoint is (recipe, steps), for the record")
    a = ap.parse_args()
    model, recipe, _ = load_model(a.checkpoint, device="cpu")
    net = inference_network(model.eval())
    ref_file = reference_file(recipe.data.source, recipe.resolution)
    ref = load_images(ref_file)
    extractor = load_extractor("effnet")
    ref_stats = reference_stats(ref, extractor, use_cache=False)
    rows, drawn = {}, {offset: draw(net, recipe, a.num, a.batch, offset, "off") for offset in OFFSETS}
    for offset, (images, s, n) in drawn.items():
        rows["off" if offset == 0 else f"off@{offset}"] = {"seed_offset": offset, "evaluations": n, "seconds": s,
                                                           **scores(images, ref, extractor, ref_stats)}
    full, full_s, _ = drawn[0]
    _, one_s, one_n = draw(net, recipe, a.latency_num, 1, 0, "off")
    rows["off"].update(b1_evaluations=one_n, b1_seconds=one_s)
    for spec in schedules(recipe.sample.steps):
        images, s, n = draw(net, recipe, a.num, a.batch, 0, spec)
        _, b1_s, b1_n = draw(net, recipe, a.latency_num, 1, 0, spec)
        p = psnr(images, full)
        rows[spec] = {"seed_offset": 0, "evaluations": n, "seconds": s, "wall_ratio": s / full_s,
                      "b1_evaluations": b1_n, "b1_seconds": b1_s, "b1_wall_ratio": b1_s / one_s,
                      "psnr_mean_db": float(p.mean()), "psnr_min_db": float(p.min()),
                      **scores(images, ref, extractor, ref_stats)}
        print(spec, rows[spec], flush=True)
        write(a, recipe, ref_file, ref, rows)


def write(a: argparse.Namespace, recipe, ref_file, ref: np.ndarray, rows: dict) -> None:
    """The JSON so far (rewritten after every schedule)."""
    full = [k for k in rows if k.startswith("off")]
    result = {
        "command": f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python benchmarks/reuse_study.py "
                   f"{a.checkpoint} {a.out} --num {a.num} --batch {a.batch} --latency-num {a.latency_num}",
        "torch": torch.__version__, "python": platform.python_version(),
        "machine": f"{os.cpu_count()} CPU cores shared with other jobs: wall times are noisy, compare ratios only",
        "load_average_end": os.getloadavg(),
        "checkpoint_note": a.note,
        "sampler": {"steps": recipe.sample.steps, "solver": recipe.sample.solver, "cfg_scale": recipe.sample.cfg_scale,
                    "cfg_interval": list(recipe.sample.cfg_interval), "time_shift": recipe.sample.time_shift},
        "num": a.num, "reference": f"{ref_file} ({len(ref)} training emoji)",
        "fd_seed_spread": {m: {"min": min(v), "max": max(v), "values": v}
                           for m in ("coarse_fd", "fd_effnet") for v in [[rows[k][m] for k in full]]},
        "rows": rows,
    }
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
