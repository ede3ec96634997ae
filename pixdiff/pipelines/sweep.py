"""Sweeps: EMA copy x CFG scale x guidance interval x steps x solver, each cell scored by FD and
KID on a small N with a fixed seed set (the authors' advice for reproducing a number: "sweep the
EMA and cfg"), resumable cell by cell.

Layout of a sweep folder:
    setup.json       what every cell shares (checkpoint and its digest, N, seed, features, reference);
                     a rerun with another setup is refused, one with the same resumes
    cells/KEY.json   one finished cell each, written atomically: {"status": "ok", fd, kid, ...} or
                     {"status": "failed", "error": one line}; a rerun skips every cell that has one
    sweep.json, sweep.md, heatmap.png   the table of every cell and the best one, rewritten at the end

Failed cells (NaN or flat samples, non-finite scores) are recorded and the sweep goes on: a
diverging corner of the grid (a CFG scale too high for few steps) is a result. They stay failed on
a rerun (the same seeds fail the same way); delete the cell's file to retry it. Anything else (a
full disk, a broken checkpoint) stops the sweep; the cells finished so far are kept.
"""

from __future__ import annotations

import itertools
import json
import math
import shlex
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pixdiff.diffusion.names import SOLVER_NAMES
from pixdiff.runtime.atomic import atomic_write

CELLS_DIR = "cells"
SETUP_FILE = "setup.json"


class GridError(ValueError):
    """A grid option that names no valid cell: one line, before anything is drawn or written."""


@dataclass(frozen=True)
class Cell:
    ema: float | None  # the EMA's decay; None: the raw weights
    cfg: float
    interval: tuple[float, float]
    steps: int
    solver: str

    @property
    def key(self) -> str:
        """A file name that names the cell, e.g. ema0.9999_cfg1.5_int0.1-1.0_steps25_euler."""
        lo, hi = self.interval
        weights = "raw" if self.ema is None else f"ema{self.ema!r}"
        return f"{weights}_cfg{self.cfg!r}_int{lo!r}-{hi!r}_steps{self.steps}_{self.solver}"

    def sampler(self) -> dict[str, Any]:
        """The cell's settings as `with_sampler` overrides."""
        return {"cfg_scale": self.cfg, "cfg_interval": self.interval, "steps": self.steps, "solver": self.solver}

    def axes_but_cfg(self) -> str:
        """What tells the heat map's rows apart, e.g. "ema 0.9999, [0.1, 1.0], 25 euler"."""
        lo, hi = self.interval
        return f"{'raw' if self.ema is None else f'ema {self.ema!r}'}, [{lo!r}, {hi!r}], {self.steps} {self.solver}"


@dataclass(frozen=True)
class Grid:
    emas: tuple[float | None, ...]
    cfgs: tuple[float, ...]
    intervals: tuple[tuple[float, float], ...]
    steps: tuple[int, ...]
    solvers: tuple[str, ...]

    def cells(self) -> list[Cell]:
        """Every cell, EMA outermost (one model is loaded per EMA), CFG innermost (a heat-map row)."""
        return [Cell(e, c, i, s, v) for e, i, s, v, c in
                itertools.product(self.emas, self.intervals, self.steps, self.solvers, self.cfgs)]


def _items(option: str, text: str, parse: Callable[[str], Any]) -> tuple[Any, ...]:
    """'a,b,c' -> (parse(a), ...): no empty item, no value twice."""
    items = [t.strip() for t in text.split(",")]
    if not text.strip() or any(not t for t in items):
        raise GridError(f"{option} {text!r}: a comma-separated list of values, none empty")
    values = []
    for t in items:
        try:
            values.append(parse(t))
        except ValueError as e:
            raise GridError(f"{option} {text!r}: {t!r} {e}") from None
    if len(set(values)) != len(values):
        raise GridError(f"{option} {text!r}: a value is listed twice")
    return tuple(values)


def _number(text: str, lo: float, hi: float, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("is not a number") from None
    if not (math.isfinite(value) and lo <= value <= hi):
        raise ValueError(f"is not {what}")
    return value


def _ema(text: str) -> float | None:
    if text == "raw":
        return None
    value = _number(text, 0.0, 1.0, "an EMA decay in [0, 1) or 'raw'")
    if value == 1.0:
        raise ValueError("is not an EMA decay in [0, 1) or 'raw'")
    return value


def _interval(text: str) -> tuple[float, float]:
    lo, sep, hi = text.partition(":")
    if not sep:
        raise ValueError("is not LO:HI (e.g. 0.1:1)")
    pair = (_number(lo, 0.0, 1.0, "in [0, 1]"), _number(hi, 0.0, 1.0, "in [0, 1]"))
    if pair[0] > pair[1]:
        raise ValueError("has LO > HI")
    return pair


def _steps(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 100_000:
        raise ValueError("is not a step count in 1..100000")
    return int(text)


def _solver(text: str) -> str:
    if text not in SOLVER_NAMES:
        raise ValueError(f"is not a solver ({', '.join(SOLVER_NAMES)})")
    return text


def parse_grid(*, ema: str | None, cfg: str | None, interval: str | None, steps: str | None,
               solver: str | None) -> Grid:
    """The grid options (`pixdiff sweep --ema 0.9999,raw --cfg 1,1.5 --interval 0.1:1,0:1 --steps
    25,50 --solver euler,heun`); an axis given as None is left empty for `complete` to fill."""
    def axis(option: str, text: str | None, parse: Callable[[str], Any]) -> tuple[Any, ...]:
        return () if text is None else _items(option, text, parse)

    return Grid(axis("--ema", ema, _ema), axis("--cfg", cfg, lambda t: _number(t, 0.0, 1e6, "a guidance scale >= 0")),
                axis("--interval", interval, _interval), axis("--steps", steps, _steps),
                axis("--solver", solver, _solver))


def complete(grid: Grid, decays: Sequence[float], sample: Any) -> Grid:
    """The grid with its EMA axis checked against the checkpoint's decays and its empty axes filled:
    EMA, every one the checkpoint holds and raw; the others, the recipe's `sample` setting."""
    missing = [e for e in grid.emas if e is not None and e not in decays]
    if missing:
        raise GridError(f"--ema {missing[0]!r}: the checkpoint holds EMAs {', '.join(map(repr, decays))} (and raw)")
    return Grid(grid.emas or (*map(float, decays), None), grid.cfgs or (float(sample.cfg_scale),),
                grid.intervals or (tuple(map(float, sample.cfg_interval)),), grid.steps or (sample.steps,),
                grid.solvers or (sample.solver,))


# ---------------------------------------------------------------------------------------------------
# The folder: setup, cells, results


def check_setup(out: Path, setup: dict[str, Any]) -> None:
    """Refuse a folder that holds a sweep of another setup (its cells would not compare)."""
    path = out / SETUP_FILE
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GridError(f"{path} is unreadable or not JSON ({type(e).__name__}); choose another --out") from None
    changed = [k for k in sorted({*old, *setup}) if old.get(k) != setup.get(k)]
    if changed:
        k = changed[0]
        raise GridError(f"{out} holds a sweep with {k}={old.get(k)!r}, not {setup.get(k)!r}: choose another --out "
                        "(or the same options to resume it)")


def write_json(path: Path, data: Any) -> None:
    with atomic_write(path, text=True) as f:
        f.write(json.dumps(data, indent=2) + "\n")


def finished(out: Path, cell: Cell) -> dict[str, Any] | None:
    """The cell's row if an earlier run finished it (a damaged file counts as unfinished)."""
    path = out / CELLS_DIR / f"{cell.key}.json"
    try:
        row = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return row if isinstance(row, dict) and row.get("status") in ("ok", "failed") else None


def cell_row(cell: Cell, status: str, **fields: Any) -> dict[str, Any]:
    return {"key": cell.key, **asdict(cell), "interval": list(cell.interval), "status": status, **fields}


@dataclass(frozen=True)
class Outcome:
    rows: list[dict[str, Any]]  # every cell's row, in grid order
    best: dict[str, Any] | None  # the ok row of lowest FD (KID breaks ties); None: every cell failed


def pick_best(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    ok = [r for r in rows if r["status"] == "ok"]
    return min(ok, key=lambda r: (r["fd"], r["kid"])) if ok else None


def table(rows: list[dict[str, Any]], metric: str) -> Iterator[str]:
    """The cells as a Markdown table (what stdout and sweep.md show)."""
    yield f"| ema | cfg | interval | steps | solver | {metric} | KID | status |"
    yield "|---|---|---|---|---|---|---|---|"
    for r in rows:
        scores = (f"{r['fd']:.2f} | {r['kid']:.4f}" if r["status"] == "ok" else "- | -")
        lo, hi = r["interval"]
        yield (f"| {'raw' if r['ema'] is None else r['ema']} | {r['cfg']:g} | {lo:g}:{hi:g} | {r['steps']} | "
               f"{r['solver']} | {scores} | {r['status'] if r['status'] == 'ok' else 'failed: ' + r['error']} |")


def best_command(best: dict[str, Any], source: str, out: Path, setup: dict[str, Any], extra: Sequence[str]) -> str:
    """The shell command that draws the 50k set of the best cell and evaluates it."""
    lo, hi = best["interval"]
    weights = ["--weights", "raw"] if best["ema"] is None else ["--ema", repr(best["ema"])]
    folder = out / "best-50k"
    sample = ["pixdiff", "sample", source, "--out", str(folder), "--num", "50000", *extra, *weights,
              "--cfg", repr(best["cfg"]), "--steps", str(best["steps"]), "--solver", best["solver"],
              "--set", f"sample.cfg_interval=({lo!r}, {hi!r})", "--seed", str(setup["seed"])]
    evaluate = ["pixdiff", "eval", str(folder / "samples.npz"), "--ref", setup["ref"], "--features", setup["features"]]
    return f"{shlex.join(sample)} && {shlex.join(evaluate)}"


def heat_map(rows: list[dict[str, Any]], cells: list[Cell], path: Path, metric: str) -> Path:
    """CFG scale (columns) x every other axis (rows), coloured by FD; failed cells dark."""
    from pixdiff.data.grid import save_heatmap

    cfgs = list(dict.fromkeys(c.cfg for c in cells))
    row_names = list(dict.fromkeys(c.axes_but_cfg() for c in cells))
    values = [[math.nan] * len(cfgs) for _ in row_names]
    for c, r in zip(cells, rows):
        if r["status"] == "ok":
            values[row_names.index(c.axes_but_cfg())][cfgs.index(c.cfg)] = r["fd"]
    return save_heatmap(values, row_names, [f"cfg {c:g}" for c in cfgs], path, title=f"{metric} (lower is better)")


def summarize(out: Path, cells: list[Cell], rows: list[dict[str, Any]], setup: dict[str, Any],
              metric: str) -> Outcome:
    """sweep.json, sweep.md and heatmap.png from every cell's row."""
    best = pick_best(rows)
    write_json(out / "sweep.json", {"setup": setup, "metric": metric, "cells": rows,
                                    "best": None if best is None else best["key"]})
    with atomic_write(out / "sweep.md", text=True) as f:
        f.write(f"# sweep of {setup['checkpoint']}\n\n{setup['num']} samples per cell, seed {setup['seed']}, "
                f"features {setup['features']}, reference {setup['ref']}\n\n" + "\n".join(table(rows, metric)) + "\n")
    heat_map(rows, cells, out / "heatmap.png", metric)
    return Outcome(rows, best)


@dataclass(frozen=True)
class Sweep:
    """What to run: the cells, their folder, and how a cell is drawn and scored."""
    cells: list[Cell]
    out: Path
    setup: dict[str, Any]
    draw: Callable[[Cell], Any]  # cell -> uint8 (N, H, W, 3) images
    score: Callable[[Any], Any]  # images -> scoring.Score


def run_cells(sweep: Sweep, on_cell: Callable[[int, dict[str, Any], bool], None]) -> list[dict[str, Any]]:
    """Every cell's row, drawing and scoring the unfinished ones (each written as it finishes);
    on_cell(index, row, resumed) after each."""
    write_json(sweep.out / SETUP_FILE, sweep.setup)
    rows = []
    for i, cell in enumerate(sweep.cells):
        row = finished(sweep.out, cell)
        resumed = row is not None
        if row is None:
            row = _run_cell(sweep, cell)
            write_json(sweep.out / CELLS_DIR / f"{cell.key}.json", row)
        rows.append(row)
        on_cell(i, row, resumed)
    return rows


def _run_cell(sweep: Sweep, cell: Cell) -> dict[str, Any]:
    from pixdiff.pipelines.generate import OutputError

    t0 = time.perf_counter()
    try:
        s = sweep.score(sweep.draw(cell))
        row = cell_row(cell, "ok", metric=s.metric, fd=s.fd, kid=s.kid, kid_std=s.kid_std)
    except OutputError as e:
        row = cell_row(cell, "failed", error=" ".join(str(e).split()))
    return {**row, "seconds": round(time.perf_counter() - t0, 3)}


def drawer(source: str, job: Any, *, recipe: str | None, layout: str | None, overrides: Sequence[str],
           device: str) -> Callable[[Cell], Any]:
    """cell -> its images (`generate.draw_set`), loading each EMA's model once (cells come EMA by EMA)."""
    from pixdiff.checkpoints.loader import load_model
    from pixdiff.pipelines.generate import draw_set
    from pixdiff.recipe import with_sampler

    loaded: dict[str, Any] = {}

    def draw(cell: Cell) -> Any:
        if loaded.get("ema", ...) != cell.ema:
            loaded.clear()  # one model in memory at a time
            weights = "raw" if cell.ema is None else "ema"
            loaded["model"], loaded["recipe"], _ = load_model(source, recipe=recipe, overrides=overrides,
                                                              layout=layout, weights=weights, ema=cell.ema,
                                                              device=device)
            loaded["ema"] = cell.ema
        r = with_sampler(loaded["recipe"], **cell.sampler())
        images, _ = draw_set(loaded["model"], r, job, device=device)
        return images

    return draw
