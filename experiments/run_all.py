"""Run the studies and write docs/experiments.md, in one command; rerun it to continue.

    python -m experiments.run_all                      # 2-core CPU, ~3-4 h: every study, then the page
    python -m experiments.run_all --study family       # one study
    python -m experiments.run_all --shard 1/3          # only arms i with i % 3 == 1, in this process
    python -m experiments.run_all --page-only          # rewrite the page from the finished arms
    bash benchmarks/experiments_gpu.sh                 # the 256 px / P = 16 / XL-width version

Workers (default 2 on a CPU, one torch thread each) are subprocesses that take the next
unclaimed arm, in this order: the lr sweep (seed 0 of DiP and DiT-only at every lr), Fig. 3, the
fair study's other seeds at each arm's best lr (they, the diagnosis, the family and Fig. 10b appear
once the sweep is done: `studies.best_lrs`), the diagnosis, the family, Fig. 10b. An arm whose loss turns non-finite is recorded as failed
and never chosen as best; a side none of whose lrs trained gets no seeds, and the run says so in
one line. Every arm resumes from its own checkpoints, and a finished arm is never rerun, so a
killed run continues where it stopped.
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
from experiments.studies import FAIR_LABELS, STUDIES, best_lrs, fair_arms

ORDER = ("sweep", "fig3", "fair", "diagnosis", "family", "fig10b")  # the workers' order; "sweep" is fair's seed 0 at every lr


def arms_of(scale: str, studies: list[str], work: Path) -> list[Arm]:
    """The studies' arms known now, in the workers' order: the fair seeds and Fig. 10b need the best
    lrs, read from the finished sweep arms in `work`."""
    sweep = fair_arms(scale)
    best = best_lrs(finished(sweep, work), scale)
    parts = {"sweep": sweep if "fair" in studies else [],
             "fair": fair_arms(scale, best)[len(sweep):] if "fair" in studies else []}
    parts |= {s: STUDIES[s](scale, best) for s in studies if s != "fair"}
    return [arm for part in ORDER for arm in parts.get(part, [])]


def sweep_settled(scale: str, studies: list[str], work: Path) -> bool:
    """Whether no more arms can appear: the sweep is done (or not part of the run)."""
    return "fair" not in studies or len(finished(fair_arms(scale), work)) == len(fair_arms(scale))


def claim(work: Path, arm: Arm) -> bool:
    """Atomically claim an arm for this worker (a claim file created exclusively)."""
    (work / "claims").mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(work / "claims" / arm.name, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def worker(scale: str, studies: list[str], work: Path, page: Path) -> None:
    """Run the next unclaimed arm until none is left; while the sweep is unfinished (another worker
    trains it), wait for the arms it will add."""
    while True:
        arm = next((arm for arm in arms_of(scale, studies, work) if claim(work, arm)), None)
        if arm is not None:
            run_arm(arm, work, page)
        elif sweep_settled(scale, studies, work):
            return
        else:
            time.sleep(5)


def run_workers(a: argparse.Namespace) -> None:
    """`a.workers` subprocesses over the studies' arms; raises SystemExit if one fails."""
    shutil.rmtree(a.work / "claims", ignore_errors=True)  # claims of a killed sitting
    threads = max(1, (os.cpu_count() or 1) // a.workers)
    cmd = [sys.executable, "-m", "experiments.run_all", "--scale", a.scale, "--work", str(a.work), "--page",
           str(a.page), "--threads", str(threads), "--study", *a.study, "--worker"]
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
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # internal: one worker process
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.worker:
        return worker(a.scale, a.study, a.work, a.page)
    if a.shard:  # the arms known now: after the sweep, run the same shards again for the seeds
        index, count = (int(v) for v in a.shard.split("/"))
        run_arms(arms_of(a.scale, a.study, a.work), a.work, (index, count), a.page)
        return
    if not a.page_only:
        run(a)
    from experiments import report

    every = arms_of(a.scale, list(STUDIES), a.work)  # the page shows every finished study
    results = {s: finished([arm for arm in every if arm.name.startswith(f"{s}-")], a.work) for s in STUDIES}
    print(f"page: {report.write(results, a.scale, a.work, a.page)}")


def run(a: argparse.Namespace) -> None:
    """The workers over every arm; then the sweep's verdict. work/run.json records every sitting's
    wall time and the best lrs, also when a side of the sweep failed."""
    log = a.work / "run.json"
    record = json.loads(log.read_text()) if log.exists() else {}
    record.setdefault("sittings", [])
    t0 = time.time()
    try:
        run_workers(a)
        if "fair" in a.study:
            best = best_lrs(finished(fair_arms(a.scale), a.work), a.scale)
            record["best_lr"] = best
            print(f"best lr: {', '.join(f'{k} {v:g}' for k, v in best.items()) or 'none'}")
            missing = [label for label in FAIR_LABELS if label not in best]
            if missing:
                raise SystemExit(f"no lr of {', '.join(missing)} trained (every loss non-finite): no seeds were run; "
                                 f"see the failed arms' result.json")
    finally:
        record["sittings"].append({"started": t0, "wall_s": time.time() - t0, "command": command_line()})
        write_json(log, record)


if __name__ == "__main__":
    main()
