"""Run every paper-claim experiment and regenerate the results page, in one command.

    python -m experiments.run_all                 # 2-core CPU size: docs/experiments/ + docs/experiments.md
    python -m experiments.run_all --scale gpu     # one CUDA GPU: docs/experiments_gpu/ + docs/experiments_gpu.md

On the CPU the two drivers run at the same time, one torch thread each (one per core of a 2-core
machine: better use of two cores than one driver with two threads). On a GPU they run one after
the other. The page is then written from the drivers' JSON by `experiments.report`, with the
measured wall time of this command. Run folders, samples and caches go to runs/experiments/
(git-ignored); only JSON, PNG and the page land in docs/.
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

DRIVERS = ("overfit", "head_ablation")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--work", type=Path, default=common.DEFAULT_WORK, help="scratch folder (git-ignored by default)")
    p.add_argument("--sequential", action="store_true", help="on the CPU, run the drivers one after the other "
                                                             "with torch's default thread count")
    a = p.parse_args(argv)
    command = common.command_line()
    parallel = a.scale == "cpu" and not a.sequential
    out_root = common.results_dir(a.scale)
    logs = a.work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.timezone.utc)
    load_before = list(os.getloadavg())
    t0 = time.perf_counter()

    def cmd(name: str) -> list[str]:
        c = [sys.executable, "-m", f"experiments.{name}", "--scale", a.scale, "--work", str(a.work),
             "--out", str(out_root / name)]
        return c + (["--threads", "1"] if parallel else [])

    walls: dict[str, float] = {}
    codes: dict[str, int] = {}
    if parallel:
        procs = {}
        for name in DRIVERS:
            log = (logs / f"{name}.log").open("w")
            procs[name] = (subprocess.Popen(cmd(name), cwd=common.REPO, stdout=log, stderr=subprocess.STDOUT),
                           time.perf_counter(), log)
            print(f"started {name} (pid {procs[name][0].pid}); log: {logs / f'{name}.log'}", file=sys.stderr)
        pending = set(procs)
        while pending:
            for name in sorted(pending):
                proc, start, log = procs[name]
                if proc.poll() is not None:
                    walls[name], codes[name] = time.perf_counter() - start, proc.returncode
                    log.close()
                    pending.discard(name)
                    print(f"{name} finished: exit {proc.returncode}, {walls[name]:.0f}s", file=sys.stderr)
            time.sleep(2)
    else:
        for name in DRIVERS:
            start = time.perf_counter()
            with (logs / f"{name}.log").open("w") as log:
                codes[name] = subprocess.run(cmd(name), cwd=common.REPO, stdout=log, stderr=subprocess.STDOUT).returncode
            walls[name] = time.perf_counter() - start
            print(f"{name} finished: exit {codes[name]}, {walls[name]:.0f}s", file=sys.stderr)
    wall = time.perf_counter() - t0
    failed = [n for n, c in codes.items() if c != 0]
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)} (logs in {logs}); the page was not rewritten")
    run_info = {
        "command": command,
        "scale": a.scale,
        "mode": "both drivers at once, 1 torch thread each" if parallel else "drivers one after the other",
        "started_utc": started.isoformat(timespec="seconds"),
        "wall_s": round(wall, 1),
        "driver_wall_s": {k: round(v, 1) for k, v in walls.items()},
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
