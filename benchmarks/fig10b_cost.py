#!/usr/bin/env python
"""Fig. 10b's CPU cost: s/step of DiT-only on 4 px patches (256 tokens) against 8 px (64 tokens) on
the fair study's backbone (64 px, width 288, 3 blocks), batch 32, one torch thread.

    PYTHONPATH=. python benchmarks/fig10b_cost.py [out.json]   # default docs/experiments/fig10b_cost.json
"""

import json
import os
import sys
import tempfile
import time

import torch

from experiments.studies import fair_base
from pixdiff.config import replace
from pixdiff.nn import DiTFinalLayer
from pixdiff.train import Trainer


def seconds_per_step(patch: int, warm: int = 3, timed: int = 10) -> float:
    recipe = replace(fair_base("cpu"), **{"model.head": DiTFinalLayer(), "model.backbone.patch_size": patch,
                                          "train.max_steps": 100, "train.ckpt_every": 1000, "train.log_every": 1000})
    with Trainer(recipe, tempfile.mkdtemp() + "/run", progress=False) as trainer:
        for _ in range(warm):
            trainer.step()
        t0 = time.perf_counter()
        for _ in range(timed):
            trainer.step()
        return (time.perf_counter() - t0) / timed


def main() -> None:
    torch.set_num_threads(1)
    out = {"DiT-only/4 (256 tokens)": seconds_per_step(4), "DiT-only/8 (64 tokens)": seconds_per_step(8)}
    record = {"what": "s/step at batch 32, one torch thread, fair-study backbone (64 px, width 288, 3 blocks)",
              "s_per_step": out, "ratio_256_to_64_tokens": out["DiT-only/4 (256 tokens)"] / out["DiT-only/8 (64 tokens)"],
              "load_avg": os.getloadavg(), "command": "PYTHONPATH=. python benchmarks/fig10b_cost.py",
              "torch": torch.__version__}
    path = sys.argv[1] if len(sys.argv) > 1 else "docs/experiments/fig10b_cost.json"
    with open(path, "w") as f:
        f.write(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
