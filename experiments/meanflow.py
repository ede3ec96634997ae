"""MeanFlow against flow matching on emoji_tiny at equal training compute (docs/meanflow.md).

    python -m experiments.meanflow [--steps 2000] [--seeds 0 1] [--num 200] [--work /tmp/mf]
    python -m experiments.meanflow --merge seed0.json seed1.json     # seeds run as separate processes

Per seed: train `emoji_tiny` (x-prediction flow matching) for `steps` steps, then
`emoji_tiny:meanflow`, without and with guidance trained in (objective.cfg_scale=3), each until it
has used the same CPU time (one torch thread, `time.process_time`:
a MeanFlow step also runs a JVP, so it takes fewer steps; CPU time, unlike wall time, does not grow
when other jobs share the cores; both recipes keep a constant lr after warm-up, so stopping on a
budget is the same run as asking for that many steps). The same budget split in two: flow
matching for `steps / 2` steps, then MeanFlow (without and with guidance) fine-tuned from it
(`init_from`) for half of flow matching's CPU time. Then draw `num` class-balanced EMA samples with each
sampler and score FD-EffNet and KID against `num` data images. Writes
docs/experiments/meanflow.json with the raw numbers, the per-sampler mean and seed spread.

Resumes: a run folder holding `experiment_run.json` is not trained again, and the rows already in
`--out` (same steps and num) are not sampled again.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from experiments.scaffold import DOCS, command_line, data, environment, write_json
from pixdiff.pipelines import load
from pixdiff.config import replace
from pixdiff.data import to_uint8
from pixdiff.eval import evaluate
from pixdiff.recipe import load_recipe
from pixdiff.train import Trainer

# (label, run, sampler overrides): the flow-matching sampler at the recipe's guidance and without
SAMPLERS = (
    ("fm euler 100 steps cfg 3", "fm", {"steps": 100}),
    ("fm euler 25 steps cfg 3", "fm", {"steps": 25}),
    ("fm euler 100 steps cfg 1", "fm", {"steps": 100, "cfg_scale": 1.0}),
    ("meanflow 1 step", "mf", {"steps": 1}),
    ("meanflow 2 steps", "mf", {"steps": 2}),
    ("meanflow 4 steps", "mf", {"steps": 4}),
    ("meanflow, cfg 3 trained in, 1 step", "mf-cfg", {"steps": 1}),
    ("meanflow, cfg 3 trained in, 2 steps", "mf-cfg", {"steps": 2}),
    ("meanflow, cfg 3 trained in, 4 steps", "mf-cfg", {"steps": 4}),
    ("meanflow model, euler 100 steps (r = t)", "mf", {"steps": 100, "solver": "euler", "time_shift": 3.0}),
    *((f"meanflow fine-tuned{cfg}, {n} step{'s' * (n > 1)}", key, {"steps": n})
      for cfg, key in (("", "mf-ft"), (", cfg 3 trained in", "mf-cfg-ft")) for n in (1, 2, 4)),
)
# (recipe, overrides): the MeanFlow runs get flow matching's CPU time; "mf-cfg" trains in the guidance
# scale flow matching samples with (3), paying an extra forward pass per step
# "fm-half" is flow matching's first half (the same seed: the same run to that step); "-ft" runs start
# from it and get the CPU time "fm" spent on its second half
RECIPES = {"fm": ("emoji_tiny", []), "mf": ("emoji_tiny:meanflow", []),
           "mf-cfg": ("emoji_tiny:meanflow", ["objective.cfg_scale=3.0"]), "fm-half": ("emoji_tiny", []),
           "mf-ft": ("emoji_tiny:meanflow", []), "mf-cfg-ft": ("emoji_tiny:meanflow", ["objective.cfg_scale=3.0"])}
RECORD = "experiment_run.json"  # in a finished run folder: its figures (and the mark that it finished)


def train(key: str, folder: Path, steps: int, seed: int, cpu_s: float | None = None,
          init_from: Path | None = None) -> dict:
    """Train RECIPES[key] for `steps` steps, or, given `cpu_s`, until it has used that much CPU time;
    a folder that already holds its record is not trained again."""
    if (folder / RECORD).is_file():
        return json.loads((folder / RECORD).read_text())
    recipe = replace(load_recipe(*RECIPES[key]), **{"train.max_steps": steps, "train.seed": seed, "train.sample_every": 0,
                                           "train.ckpt_every": steps})
    t0, c0 = time.perf_counter(), time.process_time()

    def budget_spent(_trainer, event) -> bool:
        return cpu_s is not None and event.kind == "step" and time.process_time() - c0 >= cpu_s

    with Trainer(recipe, folder, progress=False, init_from=init_from) as trainer:
        result = trainer.fit([budget_spent], max_steps=steps)
    record = {"steps": result.step, "train_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
              "final_loss": result.last_loss, **({"init_from": str(init_from)} if init_from else {})}
    (folder / RECORD).write_text(json.dumps(record))
    return record


def train_all(work: Path, steps: int, seed: int) -> dict:
    """Every run of one seed -> {"KEY seed S": figures}."""
    runs = {"fm": train("fm", work / f"fm-{seed}", steps, seed)}
    budget = runs["fm"]["cpu_s"]
    for key in ("mf", "mf-cfg"):  # the step cap only guards a MeanFlow step cheaper than a flow-matching one
        runs[key] = train(key, work / f"{key}-{seed}", 2 * steps, seed, budget)
    runs["fm-half"] = train("fm-half", work / f"fm-half-{seed}", steps // 2, seed)
    # the second half's share of flow matching's CPU time: the same run's first half, timed again
    # under another load, would leave the fine-tuning a noisy remainder
    rest = budget * (1 - (steps // 2) / steps)
    for key in ("mf-ft", "mf-cfg-ft"):
        runs[key] = train(key, work / f"{key}-{seed}", 2 * steps, seed, rest, init_from=work / f"fm-half-{seed}")
    return {f"{key} seed {seed}": figures for key, figures in runs.items()}


def earlier_rows(args: argparse.Namespace) -> list[dict]:
    """The rows of an earlier run of this command into --out (same steps and num), to keep."""
    if not args.out.is_file():
        return []
    earlier = json.loads(args.out.read_text())
    if (earlier.get("steps"), earlier.get("num")) != (args.steps, args.num):
        return []
    return [r for r in earlier["rows"] if r["seed"] in args.seeds]


def summary(rows: list[dict]) -> dict:
    """Per sampler: FD mean and its range over seeds (the seed spread), KID mean."""
    out = {}
    for label, _, _ in SAMPLERS:
        fd = [r["fd_effnet"] for r in rows if r["sampler"] == label]
        kid = [r["kid"] for r in rows if r["sampler"] == label]
        out[label] = {"fd_mean": float(np.mean(fd)), "fd_min": min(fd), "fd_max": max(fd),
                      "kid_mean": float(np.mean(kid)), "seeds": len(fd)}
    return out


def merge(files: list[Path], out: Path) -> None:
    parts = [json.loads(f.read_text()) for f in files]
    rows = [r for p in parts for r in p["rows"]]
    write_json(out, {**parts[0], "command": command_line(), "seed_commands": [p["command"] for p in parts],
                     "seeds": [s for p in parts for s in p["seeds"]],
                     "runs": {k: v for p in parts for k, v in p["runs"].items()}, "rows": rows,
                     "summary": summary(rows)})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000, help="flow matching's steps; MeanFlow gets its CPU time")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--num", type=int, default=200)
    ap.add_argument("--work", type=Path, default=Path("/tmp/meanflow-exp"))
    ap.add_argument("--out", type=Path, default=DOCS / "experiments" / "meanflow.json")
    ap.add_argument("--merge", type=Path, nargs="+", help="combine per-seed result files into --out")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (CPU time is compared at 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.merge:
        return merge(args.merge, args.out)
    images, _ = data("emoji", 32)
    ref = images[np.sort(np.random.default_rng([0, 0]).permutation(len(images))[: args.num])]
    labels = np.arange(args.num) % 9
    rows, runs = earlier_rows(args), {}
    for seed in args.seeds:
        runs.update(train_all(args.work, args.steps, seed))
        for label, key, overrides in SAMPLERS:
            if any(r["sampler"] == label and r["seed"] == seed for r in rows):
                continue
            run = load(args.work / f"{key}-{seed}")
            t0 = time.perf_counter()
            samples = to_uint8(run.sample(labels, seed=1000 + seed, **overrides))
            seconds = time.perf_counter() - t0
            m = evaluate(samples, ref, use_cache=False, kid_subsets=20, kid_subset_size=min(100, args.num))
            fd = next(k for k in m if k.startswith("fd") or k == "fid")
            kid = next(k for k in m if k.startswith("kid") and not k.endswith("_std"))
            rows.append({"sampler": label, "seed": seed, "overrides": overrides, "sample_s": seconds,
                         "metric": m["metric"], "fd_effnet": float(m[fd]), "kid": float(m[kid]),
                         "std_pixel": float(samples.std())})
            print(rows[-1], flush=True)
    write_json(args.out, {"command": command_line(), "environment": environment(),
                          "note": "2 CPU cores shared with other jobs: wall seconds are indicative only; the "
                                  "training budgets are CPU seconds of one thread",
                          "steps": args.steps, "seeds": args.seeds, "num": args.num,
                          "runs": runs, "rows": rows, "summary": summary(rows)})


if __name__ == "__main__":
    main()
