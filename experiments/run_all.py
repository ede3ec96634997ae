"""Run every paper-claim experiment and regenerate the results page, in one command.

    python -m experiments.run_all                 # 2-core CPU size (~2 h): docs/experiments/ + docs/experiments.md
    python -m experiments.run_all --scale gpu     # one CUDA GPU: docs/experiments_gpu/ + docs/experiments_gpu.md
    python -m experiments.run_all --scale pilot   # seconds: docs/experiments_pilot/ (a smoke test)

The drivers are experiments.regime (sections 3-6: the 2x2, the seam-free heads, Table 2 and
Fig. 10 at 16 px patches) and experiments.fig3 (Fig. 3 at 16 px patches). On the CPU two workers
run at the same time, one torch thread each (one per core of a 2-core machine), each taking the
next unclaimed (variant, seed) job of every driver; on a GPU one worker runs them all. Every job writes its
own JSON, so an interrupted run continues where it stopped when the command is repeated. Then
each driver pools its seeds (--aggregate) and `experiments.report` writes the page from the JSON,
with the measured wall time of this command. Run folders, samples and caches go to
runs/experiments/ (git-ignored); only JSON, PNG and the page land in docs/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

from experiments import common, report

DRIVERS = ("regime", "fig3")  # experiments.overfit and experiments.head_ablation run on their own


def worker(commands: list[list[str]], log: Path) -> tuple[int, float]:
    """Run commands one after the other into one log; (first non-zero exit code or 0, seconds)."""
    t0 = time.perf_counter()
    with log.open("a") as f:
        for c in commands:
            code = subprocess.run(c, cwd=common.REPO, stdout=f, stderr=subprocess.STDOUT).returncode
            if code:
                return code, time.perf_counter() - t0
    return 0, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    from concurrent.futures import ThreadPoolExecutor

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=("cpu", "gpu", "pilot"), default="cpu")
    p.add_argument("--work", type=Path, default=common.DEFAULT_WORK, help="scratch folder (git-ignored by default)")
    p.add_argument("--sequential", action="store_true", help="on the CPU, one worker with torch's default "
                                                             "thread count instead of two with one thread each")
    a = p.parse_args(argv)
    command = common.command_line()
    workers = 2 if a.scale != "gpu" and not a.sequential else 1
    out_root = common.results_dir(a.scale)
    logs = a.work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.timezone.utc)
    load_before = list(os.getloadavg())
    t0 = time.perf_counter()

    def cmd(name: str, *extra: str, one_thread: bool = workers > 1) -> list[str]:
        c = [sys.executable, "-m", f"experiments.{name}", "--scale", a.scale, "--work", str(a.work),
             "--out", str(out_root / name), *extra]
        return c + (["--threads", "1"] if one_thread else [])

    # shared data first (caches, reference statistics): workers must not build them side by side
    codes, walls = {}, {}
    codes["prepare"], walls["prepare"] = worker([cmd(n, "--prepare") for n in DRIVERS], logs / "prepare.log")
    if codes["prepare"]:
        raise SystemExit(f"failed: prepare (log: {logs / 'prepare.log'}); the page was not rewritten")
    # every worker takes the next unclaimed job of every driver (experiments.claims), so jobs of
    # uneven cost spread evenly; finished jobs are skipped on a rerun
    plans = {f"worker{k}": [cmd(n, "--shard", "queue") for n in DRIVERS] for k in range(workers)}
    with ThreadPoolExecutor(workers) as pool:
        futures = {name: pool.submit(worker, c, logs / f"{name}.log") for name, c in plans.items()}
        print(f"started {workers} worker(s); logs in {logs}", file=sys.stderr)
        done = {name: f.result() for name, f in futures.items()}
    codes.update({name: code for name, (code, _) in done.items()})
    walls.update({name: s for name, (_, s) in done.items()})
    if not any(codes.values()):
        # alone on the machine now: torch's default threads for the pooled feature extraction
        codes["aggregate"], walls["aggregate"] = worker([cmd(n, "--aggregate", one_thread=False) for n in DRIVERS],
                                                        logs / "aggregate.log")
    wall = time.perf_counter() - t0
    failed = [n for n, c in codes.items() if c != 0]
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)} (logs in {logs}); the page was not rewritten")
    run_info = {
        "command": command,
        "scale": a.scale,
        "mode": f"{workers} workers, 1 torch thread each" if workers > 1 else "one worker",
        "started_utc": started.isoformat(timespec="seconds"),
        "wall_s": round(wall, 1),
        "driver_wall_s": {k: round(v, 1) for k, v in walls.items()},  # per worker, then the aggregation
        "load_avg_before": load_before,
        "load_avg_after": list(os.getloadavg()),
        "cpu_count": os.cpu_count(),
        "git": common.git_revision(),
    }
    common.write_json(out_root / "run.json", run_info)
    page = report.write_page(a.scale)
    print(f"total wall time {wall / 60:.1f} min; page: {common.rel(page)}", file=sys.stderr)


if __name__ == "__main__":
    main()
