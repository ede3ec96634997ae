"""Run the studies and write docs/experiments.md, in one command; rerun it to continue.

    python -m experiments.run_all                      # 2-core CPU, ~2 h: every study, then the page
    python -m experiments.run_all --study family       # one study
    python -m experiments.run_all --shard 1/3          # only arms i with i % 3 == 1, in this process
    python -m experiments.run_all --page-only          # rewrite the page from the finished arms
    bash benchmarks/experiments_gpu.sh                 # the 256 px / P = 16 / XL-width version

Workers (default 2 on a CPU, one torch thread each) are subprocesses that take the next
unclaimed arm. The pilot (the first DiP arm and its DiT-only twin) runs first, beside the other
studies; the other seeds of the fair study start only if the pilot DiP's balanced
layout accuracy reaches PILOT_THRESHOLD, so an untrainable setting does not cost the full run.
Every arm resumes from its own checkpoints, and a finished arm is never rerun, so a killed run
continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from experiments.scaffold import (
    DEFAULT_WORK,
    PAGE,
    REPO,
    Arm,
    command_line,
    finished,
    run_arm,
    run_arms,
    write_json,
)
from experiments.studies import LAYOUT, PILOT_THRESHOLD, STUDIES


def arms_of(scale: str, studies: list[str]) -> list[Arm]:
    return [arm for s in studies for arm in STUDIES[s](scale)]


def claim(work: Path, arm: Arm) -> bool:
    """Atomically claim an arm for this worker (a claim file created exclusively)."""
    (work / "claims").mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(work / "claims" / arm.name, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def worker(arms: list[Arm], work: Path, page: Path) -> None:
    for arm in arms:
        if claim(work, arm):
            run_arm(arm, work, page)


def run_workers(a: argparse.Namespace, names: list[str]) -> None:
    """`a.workers` subprocesses over the named arms; raises SystemExit if one fails."""
    shutil.rmtree(a.work / "claims", ignore_errors=True)  # claims of a killed sitting
    threads = max(1, (os.cpu_count() or 1) // a.workers)
    cmd = [sys.executable, "-m", "experiments.run_all", "--scale", a.scale, "--work", str(a.work), "--page",
           str(a.page), "--threads", str(threads), "--worker", ",".join(names)]
    (a.work / "logs").mkdir(parents=True, exist_ok=True)
    logs = [(a.work / "logs" / f"worker{i}.log").open("a") for i in range(a.workers)]
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT) for log in logs]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"a worker failed (exit codes {codes}, logs in {a.work / 'logs'}); rerun the same "
                         f"command to continue")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=("cpu", "gpu", "smoke"), default="cpu")
    p.add_argument("--study", nargs="+", choices=tuple(STUDIES), default=list(STUDIES))
    p.add_argument("--work", type=Path, default=DEFAULT_WORK, help="run folders (git-ignored by default)")
    p.add_argument("--workers", type=int, default=2 if not torch.cuda.is_available() else 1)
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0: torch's default)")
    p.add_argument("--shard", default="", help="i/n: run arms i, i + n, ... in this process, no page")
    p.add_argument("--page-only", action="store_true")
    p.add_argument("--page", type=Path, default=PAGE, help="the page; sample grids go to the folder of its "
                                                          "name (default: docs/experiments.md, docs/experiments/)")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)  # internal: comma-separated arm names
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    arms = arms_of(a.scale, a.study)
    if a.worker:
        return worker([arm for arm in arms if arm.name in a.worker.split(",")], a.work, a.page)
    if a.shard:
        index, count = (int(v) for v in a.shard.split("/"))
        run_arms(arms, a.work, (index, count), a.page)
        return
    if not a.page_only:
        run(a, arms)
    from experiments import report

    results = {s: finished(arms_of(a.scale, [s]), a.work) for s in STUDIES}  # the page shows every finished study
    print(f"page: {report.write(results, a.scale, a.work, a.page)}")


def run(a: argparse.Namespace, arms: list[Arm]) -> None:
    """Pilot (beside the ungated studies), gate, then the gated arms; work/run.json records every
    sitting's wall time and every pilot verdict, also when the gate stops the run."""
    log = a.work / "run.json"
    record = json.loads(log.read_text()) if log.exists() else {}
    record.setdefault("sittings", []), record.setdefault("pilots", [])
    t0 = time.time()
    pilot = [arm for arm in arms if arm.name in ("fair-dip-s0", "fair-dit-only-s0")]
    gated = [arm for arm in arms if arm.name.startswith("fair-") and arm not in pilot]
    try:
        run_workers(a, [arm.name for arm in arms if arm not in gated])
        if pilot and gated:
            result = json.loads((a.work / "fair-dip-s0" / "result.json").read_text())
            accuracy = result["scores"].get(LAYOUT, 0.0)
            gate = a.scale != "smoke"
            record["pilots"].append({"steps": result["steps"], "layout_accuracy": accuracy,
                                     "passed": accuracy >= PILOT_THRESHOLD or not gate,
                                     **({} if gate else {"note": "smoke scale: no gate"})})
            print(f"pilot: DiP's balanced layout accuracy {accuracy:.3f} at {result['steps']} steps "
                  f"(threshold {PILOT_THRESHOLD}, chance 0.111)")
            if gate and accuracy < PILOT_THRESHOLD:
                raise SystemExit(f"pilot below threshold ({accuracy:.3f} < {PILOT_THRESHOLD}): train longer "
                                 f"before spending the full run")
            run_workers(a, [arm.name for arm in gated])
    finally:
        record["sittings"].append({"started": t0, "wall_s": time.time() - t0, "command": command_line()})
        write_json(log, record)


if __name__ == "__main__":
    main()
