"""Run-folder drills: what happens to a run folder when two trainings start into it, when
a checkpoint's bytes are damaged, when a training is killed or preempted (SIGTERM), when a finished
run is resumed, when samples would be overwritten or come out NaN, and when a file carries a payload.

    python tools/drills.py [--write docs/drills.md] [--fast]

Each drill runs the real `pixdiff` command line in subprocesses on a tiny emoji_tiny (2 blocks, 16 px)
and reports one row: drill, expected, observed, pass. `--fast` skips the kill drills (two trainings
each); tests/test_drills.py runs the fast ones. `--write` also measures what verifying a checkpoint's
digest costs against loading it, on this machine, and writes both tables.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.backbone.depth=2", "model.backbone.dim=32", "model.backbone.num_heads=2",
        "model.backbone.image_size=16", "model.head.width=8", "train.global_batch=8", "train.log_every=1",
        "train.sample_every=0", "train.warmup_steps=0", "train.lr=2e-3"]


@dataclass(frozen=True)
class Row:
    drill: str
    expected: str
    observed: str
    passed: bool


class Work:
    """A scratch folder with one shared data cache, and the tiny training's command line."""

    def __init__(self, root: Path):
        self.root = root
        self.cache = root / "cache"

    def sets(self, *extra: str) -> list[str]:
        return [a for o in [*TINY, f"data.cache_dir={self.cache}", *extra] for a in ("--set", o)]

    def train_args(self, out: Path, *extra: str, resume: bool = False) -> list[str]:
        return ["train", "emoji_tiny", "--out", str(out), "--no-progress", "--device", "cpu",
                *(["--resume"] if resume else []), *self.sets(*extra)]


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pixdiff.cli", *args]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), capture_output=True, text=True, cwd=ROOT, env=env(), timeout=600)


def one_line(res: subprocess.CompletedProcess) -> str:
    lines = res.stderr.strip().splitlines()
    return f"exit {res.returncode}, {len(lines)} line(s): {lines[-1][:110] if lines else ''}"


def refused_in_one_line(res: subprocess.CompletedProcess, code: int = 2) -> bool:
    lines = res.stderr.strip().splitlines()
    return (res.returncode == code and len(lines) == 1 and lines[0].startswith("error: ")
            and "Traceback" not in res.stderr)


def rows_of(run_dir: Path) -> list[int]:
    log = run_dir / "metrics.jsonl"
    return [json.loads(r)["step"] for r in log.read_text().splitlines()] if log.exists() else []


# ------------------------------------------------------------------ fast drills
def concurrent_writers(w: Work) -> Row:
    """Two trainings started together into one folder (the second with another lr)."""
    out = w.root / "dup"
    procs = [subprocess.Popen(command(*w.train_args(out, "train.max_steps=40", "train.ckpt_every=20", *extra)),
                              cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for extra in ([], ["train.lr=1e-4"])]
    results = [(p.wait(600), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    refusal = next((err.strip() for code, err in results if code == 2), "")
    steps = rows_of(out)
    recipe_lr = json.loads((out / "recipe.json").read_text())["train"]["lr"] if (out / "recipe.json").exists() else None
    winner_lr = 2e-3 if results[0][0] == 0 else 1e-4
    ok = (codes == [0, 2] and len(refusal.splitlines()) == 1 and "in use by pid" in refusal
          and steps == list(range(1, 41)) and recipe_lr == winner_lr)
    return Row("concurrent writers", "one trains (exit 0), one refused (exit 2, one line naming the holder's pid); "
               "metrics.jsonl and recipe.json are the winner's alone",
               f"exits {codes}; {refusal[:100]!r}; metrics rows 1..{steps[-1] if steps else 0} "
               f"({len(steps)} rows); recipe lr {recipe_lr}", ok)


def trained(w: Work) -> Path:
    """A finished tiny run (made once; several drills read its checkpoint)."""
    out = w.root / "trained"
    if not (out / "checkpoints").is_dir():
        res = run(*w.train_args(out, "train.max_steps=4", "train.ckpt_every=2"))
        if res.returncode != 0:
            raise RuntimeError(f"the tiny training failed: {res.stderr[-500:]}")
    return out


def bit_flip(w: Work) -> Row:
    """8 bytes overwritten in the middle of a checkpoint (as `dd conv=notrunc` does)."""
    src = sorted((trained(w) / "checkpoints").glob("step_*.pt"))[-1]
    flip = w.root / "flip.pt"
    blob = bytearray(src.read_bytes())
    mid = len(blob) // 2
    blob[mid:mid + 8] = bytes(b ^ 0xFF for b in blob[mid:mid + 8])
    flip.write_bytes(bytes(blob))
    out = w.root / "flip_samples"
    res = run("sample", str(flip), "--out", str(out), "--num", "2", "--steps", "2", "--device", "cpu")
    ok = refused_in_one_line(res) and not out.exists()
    return Row("bit flip", "`sample` of a checkpoint with 8 bytes overwritten mid-file: refused in one line, "
               "nothing written", one_line(res) + ("" if not out.exists() else "; wrote output"), ok)


def payloads(w: Work) -> Row:
    """Files that would run code through a careless loader: a pickled object, a recipe naming subprocess:run."""
    import torch

    marker = w.root / "MARKER"
    src = sorted((trained(w) / "checkpoints").glob("step_*.pt"))[-1]
    good = torch.load(src, weights_only=True)
    good.pop("digest")
    files = {"pickle": w.root / "pickle_payload.pt", "recipe": w.root / "recipe_payload.pt"}
    torch.save({**good, "recipe": Payload(marker)}, files["pickle"])
    torch.save({**good, "recipe": {"_type": "subprocess:run", "args": ["touch", str(marker)]}}, files["recipe"])
    results = {k: run("sample", str(f), "--out", str(w.root / f"out_{k}"), "--device", "cpu")
               for k, f in files.items()}
    ok = all(refused_in_one_line(r) for r in results.values()) and not marker.exists()
    return Row("payloads", "a pickled object and a recipe naming subprocess:run: refused in one line, no code runs",
               "; ".join(f"{k}: {one_line(r)}" for k, r in results.items())
               + ("; the payload RAN" if marker.exists() else "; marker untouched"), ok)


class Payload:
    """Unpickling this runs `touch marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return subprocess.run, (["touch", str(self.marker)],)


def foreign_checkpoint(w: Work) -> Row:
    """The run folder's newest checkpoint belongs to another recipe."""
    import shutil

    run_dir = w.root / "foreign"
    shutil.copytree(trained(w), run_dir)
    other = w.root / "other"
    res = run(*w.train_args(other, "train.max_steps=1", "model.backbone.depth=3"))
    assert res.returncode == 0, res.stderr
    shutil.copy(other / "checkpoints" / "step_00000001.pt", run_dir / "checkpoints" / "step_00000099.pt")
    res = run(*w.train_args(run_dir, "train.max_steps=6", "train.ckpt_every=2", resume=True))
    ok = refused_in_one_line(res) and "cannot change model.backbone.depth" in res.stderr
    return Row("foreign checkpoint", "--resume whose newest checkpoint is another recipe's: refused in one line "
               "before loading", one_line(res), ok)


def finished_run_resumed(w: Work) -> Row:
    """--resume of a run already at train.max_steps: one line, the run folder unchanged."""
    out = trained(w)
    before = {f: f.read_bytes() for f in sorted(out.rglob("*")) if f.is_file() and f.name != ".lock"}
    res = run(*w.train_args(out, "train.max_steps=2", resume=True))
    after = {f: f.read_bytes() for f in sorted(out.rglob("*")) if f.is_file() and f.name != ".lock"}
    ok = refused_in_one_line(res) and before == after
    return Row("resume a finished run", "--resume at or past train.max_steps: refused in one line, nothing in the "
               "run folder changes", f"{one_line(res)}; folder {'unchanged' if before == after else 'CHANGED'}", ok)


def sample_twice(w: Work) -> Row:
    """`sample` into a folder that already holds samples."""
    out = w.root / "samples"
    first = run("sample", str(trained(w)), "-n", "2", "--steps", "2", "--out", str(out), "--device", "cpu", "--quiet")
    before = (out / "samples.npz").read_bytes() if first.returncode == 0 else b""
    res = run("sample", str(trained(w)), "-n", "3", "--steps", "2", "--out", str(out), "--device", "cpu", "--quiet")
    ok = first.returncode == 0 and refused_in_one_line(res) and (out / "samples.npz").read_bytes() == before
    return Row("sample into a full folder", "refused in one line unless --overwrite; the samples there are kept",
               one_line(res), ok)


def diverged_model(w: Work) -> Row:
    """Sampling a model whose weights give NaN: a failure, never black images and exit 0."""
    import torch

    ckpt = torch.load(next((trained(w) / "checkpoints").glob("step_*.pt")), weights_only=True)
    blown = {k: v * 1e30 if v.is_floating_point() else v for k, v in ckpt["ema"].items()}
    bad = w.root / "diverged.pt"
    from pixdiff.checkpoints import store

    store.save({**ckpt, "ema": blown, "model": blown, "ema_extra": {}}, bad)
    out = w.root / "diverged"
    res = run("sample", str(bad), "-n", "2", "--steps", "2", "--out", str(out), "--device", "cpu", "--quiet")
    ok = refused_in_one_line(res) and not (out / "samples.npz").exists()
    return Row("diverged model", "`sample` of NaN outputs: refused in one line, no samples written", one_line(res), ok)


# ------------------------------------------------------------------ kill drills (two trainings each)
def kill_when(w: Work, out: Path, extra: list[str], rows: int) -> None:
    proc = subprocess.Popen(command(*w.train_args(out, *extra)), cwd=ROOT, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(rows_of(out)) < rows and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def kill_and_resume(w: Work) -> Row:
    """SIGKILL mid-run, then --resume: the run ends bit-identical to an uninterrupted one."""
    import torch

    args = ["train.max_steps=14", "train.ckpt_every=3"]
    full, killed = w.root / "full", w.root / "killed"
    assert run(*w.train_args(full, *args)).returncode == 0
    kill_when(w, killed, args, rows=8)
    rows_at_kill = len(rows_of(killed))
    res = run(*w.train_args(killed, *args, resume=True))
    a = torch.load(killed / "checkpoints" / "step_00000014.pt", weights_only=True) if res.returncode == 0 else {}
    b = torch.load(full / "checkpoints" / "step_00000014.pt", weights_only=True)
    same = [k for k in ("model", "ema", "optimizer") if k in a and _equal(a[k], b[k])]
    ok = res.returncode == 0 and rows_of(killed) == rows_of(full) and len(same) == 3 and \
        (killed / "metrics.jsonl").read_text().count("\n") == 14
    return Row("kill and resume", "SIGKILL at ~step 8, --resume: metrics rows and the final model, EMA and optimizer "
               "state equal an uninterrupted run's", f"killed after {rows_at_kill} rows; resume exit {res.returncode}; "
               f"rows {'equal' if rows_of(killed) == rows_of(full) else 'differ'}; bit-equal: {', '.join(same)}", ok)


def sigterm_and_resume(w: Work) -> Row:
    """SIGTERM mid-run (a preemption), then --resume: a checkpoint at the step it stopped, the same end."""
    import torch

    args = ["train.max_steps=14", "train.ckpt_every=100"]
    full, cut = w.root / "full_term", w.root / "cut"
    assert run(*w.train_args(full, *args)).returncode == 0
    proc = subprocess.Popen(command(*w.train_args(cut, *args)), cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and len(rows_of(cut)) < 6 and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate()
    stopped = [line for line in out.splitlines() if line.startswith("interrupted by SIGTERM")]
    res = run(*w.train_args(cut, *args, resume=True))
    a = torch.load(cut / "checkpoints" / "step_00000014.pt", weights_only=True) if res.returncode == 0 else {}
    b = torch.load(full / "checkpoints" / "step_00000014.pt", weights_only=True)
    same = [k for k in ("model", "ema", "optimizer") if k in a and _equal(a[k], b[k])]
    ok = proc.returncode == 143 and len(stopped) == 1 and len(same) == 3 and rows_of(cut) == rows_of(full)
    return Row("SIGTERM and resume", "SIGTERM at ~step 6: exit 143, one line naming the checkpoint; --resume: model, "
               "EMA and optimizer at step 14 bit-identical to an uninterrupted run, no duplicated rows",
               f"exit {proc.returncode}, {stopped[0] if stopped else 'no line'}; identical: {', '.join(same) or 'none'}",
               ok)


def _equal(a, b) -> bool:
    import torch

    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


def kill_before_first_checkpoint(w: Work) -> Row:
    """Killed before its first checkpoint; a plain rerun must not append to the old log."""
    out = w.root / "early"
    kill_when(w, out, ["train.max_steps=400", "train.ckpt_every=400"], rows=5)
    before = (out / "metrics.jsonl").read_text()
    rerun = run(*w.train_args(out, "train.max_steps=4"))
    resume = run(*w.train_args(out, "train.max_steps=4", resume=True))
    ok = (refused_in_one_line(rerun) and refused_in_one_line(resume) and "no checkpoint" in resume.stderr
          and (out / "metrics.jsonl").read_text() == before)
    return Row("kill before the first checkpoint", "a plain rerun is refused (never appends to the old metrics.jsonl); "
               "--resume says there is no checkpoint", f"rerun: {one_line(rerun)}; resume: {one_line(resume)}; "
               f"log {'unchanged' if (out / 'metrics.jsonl').read_text() == before else 'CHANGED'}", ok)


FAST: list[Callable[[Work], Row]] = [concurrent_writers, bit_flip, payloads, foreign_checkpoint, finished_run_resumed,
                                     sample_twice, diverged_model]
SLOW: list[Callable[[Work], Row]] = [kill_and_resume, kill_before_first_checkpoint, sigterm_and_resume]


def table(rows: list[Row]) -> str:
    lines = ["| drill | expected | observed | pass |", "|---|---|---|---|"]
    lines += [f"| {r.drill} | {r.expected} | {r.observed.replace('|', '/')} | {'yes' if r.passed else 'NO'} |"
              for r in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------ what verifying costs
def digest_cost(megabytes: int = 100) -> str:
    """MB/s of hashing candidates and of torch.load (page cache) on a ~`megabytes` MB state dict."""
    import hashlib
    import zlib

    import torch

    from pixdiff.checkpoints.digest import digest

    torch.manual_seed(0)
    state = {f"w{i}": torch.randn(1024, 1024) for i in range(megabytes * 1_000_000 // 4_194_304)}
    mb = sum(t.numel() * t.element_size() for t in state.values()) / 1e6

    def best(fn: Callable[[], object]) -> float:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    def hashed(name: str) -> None:
        h = hashlib.new(name)
        for t in state.values():
            h.update(t.reshape(-1).view(torch.uint8).numpy())

    def crc() -> None:
        c = 0
        for t in state.values():
            c = zlib.crc32(t.reshape(-1).view(torch.uint8).numpy(), c)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.pt"
        torch.save(state, path)
        load_s = best(lambda: torch.load(path, weights_only=True))
    cases = {"torch.load (file in the page cache)": load_s, "blake2b": best(lambda: hashed("blake2b")),
             "sha256": best(lambda: hashed("sha256")), "zlib.crc32": best(crc),
             "pixdiff digest (sum64 + blake2b, used)": best(lambda: digest(state))}
    lines = [f"{mb:.0f} MB of fp32 tensors, best of 3, {os.cpu_count()} CPU(s) visible:", "",
             "| what | MB/s | time vs torch.load |", "|---|---|---|"]
    lines += [f"| {k} | {mb / s:,.0f} | {s / load_s:.0%} |" for k, s in cases.items()]
    used = cases["pixdiff digest (sum64 + blake2b, used)"]
    xl_mb = 4 * 631_989_411 * 4 / 1e6  # DiP-XL/16 training checkpoint: model, EMA, AdamW's two moments (fp32)
    lines += ["", f"Extrapolated, not measured: both torch.load and the digest read every byte once, so the ratio "
              f"holds at any size; a DiP-XL/16 training checkpoint ({xl_mb / 1e3:.1f} GB: model, one EMA and "
              f"AdamW's two moments in fp32) would take {xl_mb / (mb / load_s):.1f} s to load from the page "
              f"cache at this rate and {xl_mb / (mb / used):.1f} s more to verify ({used / load_s:.0%}"
              f"{'' if used < 0.05 * load_s else ', above the 5% target, on this machine'}). A cold read from "
              "disk is slower than the page cache, which lowers the share. Timings on a shared machine vary from "
              "run to run."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="skip the kill drills")
    parser.add_argument("--write", type=Path, help="also write the table (and the digest cost) to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        w = Work(Path(tmp))
        rows = [drill(w) for drill in (FAST if args.fast else [*FAST, *SLOW])]
    print(table(rows))
    if args.write:
        cost = digest_cost()
        print("\n" + cost)
        args.write.write_text(f"# Run-folder drills\n\n`python tools/drills.py --write {args.write}` "
                              f"(tiny emoji_tiny, CPU; see the script's docstring).\n\n{table(rows)}\n\n"
                              f"## What verifying a checkpoint costs\n\n{cost}\n")
    sys.exit(0 if all(r.passed for r in rows) else 1)


if __name__ == "__main__":
    main()
