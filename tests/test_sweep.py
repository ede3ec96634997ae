"""`pixdiff sweep` end to end on a tiny trained run: every cell scored and written as its own file,
a rerun resumes (draws nothing for finished cells), failed cells are recorded and the sweep goes on,
bad grids are refused in one line with nothing written, and the best line's command reproduces
the best cell's score."""

import hashlib
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pixdiff.cli import app
from pixdiff.data.reference import export
from pixdiff.pipelines import generate
from pixdiff.recipe import load_recipe
from pixdiff.train import Trainer

TINY = ["model.backbone.depth=2", "model.backbone.dim=32", "model.backbone.num_heads=2",
        "model.backbone.image_size=16", "model.head.width=8", "train.global_batch=8", "train.log_every=1",
        "train.sample_every=0", "train.warmup_steps=0", "train.max_steps=2", "train.ema_decays=(0.9, 0.99)"]
GRID = ["--ema", "0.9,raw", "--cfg", "1,3", "--interval", "0.1:1,0:1", "--steps", "2", "--num", "4"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(a 2-step tiny run with two EMAs, a 38-image reference .npz); statistics cached in the tmp folder."""
    root = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIXDIFF_CACHE_DIR", str(root / "home"))
        recipe = load_recipe("emoji_tiny", [*TINY, f"data.cache_dir={root / 'cache'}"])
        Trainer(recipe, root / "run", progress=False).fit()
        ref = export("emoji", root / "ref.npz", 16, cache_dir=root / "cache", part=(0, 100))
        yield root / "run", ref


@pytest.fixture(autouse=True)
def cache_home(setup, monkeypatch):
    monkeypatch.setenv("PIXDIFF_CACHE_DIR", str(setup[0].parent / "home"))


def sweep(setup, out: Path, *args: str):
    run, ref = setup
    return CliRunner().invoke(app, ["sweep", str(run), "--out", str(out), "--ref", str(ref), "--device", "cpu",
                                    "--quiet", *args])


@pytest.fixture
def draws(monkeypatch) -> list[int]:
    """The number of images each `draw_set` call drew (one call per cell drawn)."""
    calls: list[int] = []
    real = generate.draw_set

    def counted(model, recipe, job, **kw):
        calls.append(job.num)
        return real(model, recipe, job, **kw)

    monkeypatch.setattr(generate, "draw_set", counted)
    return calls


def cell_files(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted((out / "cells").glob("*.json"))}


def test_a_sweep_scores_every_cell_and_resumes_from_the_finished_ones(setup, tmp_path, draws):
    out = tmp_path / "sw"
    res = sweep(setup, out, *GRID)
    assert res.exit_code == 0, res.output
    assert len(draws) == 8 and set(draws) == {4}  # 2 EMAs x 2 CFG x 2 intervals x 1 steps
    summary = json.loads((out / "sweep.json").read_text())
    rows = summary["cells"]
    newest = max((setup[0] / "checkpoints").glob("step_*.pt"))
    assert summary["setup"]["checkpoint_sha256"] == hashlib.sha256(newest.read_bytes()).hexdigest()
    assert [(r["ema"], r["cfg"], r["interval"]) for r in rows[:2]] == [(0.9, 1.0, [0.1, 1.0]), (0.9, 3.0, [0.1, 1.0])]
    assert all(r["status"] == "ok" and np.isfinite([r["fd"], r["kid"]]).all() for r in rows)
    best = min(rows, key=lambda r: (r["fd"], r["kid"]))
    assert summary["best"] == best["key"] and f"best: {best['key']} (FD-EffNet" in res.output
    assert "| ema | cfg | interval | steps | solver | FD-EffNet | KID | status |" in (out / "sweep.md").read_text()
    assert len({r["fd"] for r in rows}) > 1  # the cells differ (raw vs EMA at least)
    heat = np.asarray(Image.open(out / "heatmap.png").convert("RGB"))
    assert heat.shape[0] > 4 * 26 and len(np.unique(heat.reshape(-1, 3), axis=0)) > 4  # 4 rows of coloured cells

    first = cell_files(out)
    assert len(first) == 8
    again = sweep(setup, out, *GRID)
    assert again.exit_code == 0, again.output
    assert len(draws) == 8 and cell_files(out) == first  # nothing drawn, no cell rewritten
    assert again.output.count("(finished earlier)") == 8

    victim = out / "cells" / f"{rows[5]['key']}.json"
    victim.unlink()
    third = sweep(setup, out, *GRID)
    assert third.exit_code == 0 and len(draws) == 9  # only the missing cell is drawn again ...
    assert json.loads(victim.read_text())["fd"] == rows[5]["fd"]  # ... and scores the same (fixed seeds)
    assert json.loads((out / "sweep.json").read_text())["cells"][5]["fd"] == rows[5]["fd"]


def test_the_best_line_runs_and_reproduces_the_best_cells_score(setup, tmp_path):
    out = tmp_path / "sw"
    res = sweep(setup, out, "--ema", "0.99,raw", "--cfg", "1,2", "--steps", "2", "--solver", "euler,heun",
                "--num", "6", "--seed", "5")
    assert res.exit_code == 0, res.output
    line = res.output.strip().splitlines()[-1]
    assert line.startswith("best: ")
    command = shlex.split(line.split("): ", 1)[1])
    split = command.index("&&")
    sample, evaluate = command[:split], command[split + 1:]
    assert sample[:2] == ["pixdiff", "sample"] and evaluate[:2] == ["pixdiff", "eval"]
    sample[sample.index("--num") + 1] = "6"  # the 50k run's first 6 images are the cell's 6
    drawn = CliRunner().invoke(app, [*sample[1:], "--device", "cpu", "--quiet"])
    assert drawn.exit_code == 0, drawn.output
    scored = CliRunner().invoke(app, [*evaluate[1:], "--device", "cpu", "--quiet", "--json"])
    assert scored.exit_code == 0, scored.output
    result = json.loads(scored.output[scored.output.index("{"):])
    best = json.loads((out / "sweep.json").read_text())
    row = next(r for r in best["cells"] if r["key"] == best["best"])
    assert result["num_samples"] == 6
    assert result["fd_effnet"] == pytest.approx(row["fd"], rel=1e-9)
    assert result["kid_effnet"] == pytest.approx(row["kid"], rel=1e-9, abs=1e-12)


def test_a_failed_cell_is_recorded_in_one_line_and_the_sweep_goes_on(setup, tmp_path, monkeypatch):
    real = generate.sample_batch

    def diverges_at_cfg_3(model, recipe, labels, generators, **kw):
        x = real(model, recipe, labels, generators, **kw)
        return torch.full_like(x, float("nan")) if recipe.sample.cfg_scale == 3.0 else x

    monkeypatch.setattr(generate, "sample_batch", diverges_at_cfg_3)
    out = tmp_path / "sw"
    res = sweep(setup, out, "--ema", "0.9", "--cfg", "1,3", "--steps", "2", "--num", "4")
    assert res.exit_code == 0, res.output
    failed = json.loads((out / "cells" / "ema0.9_cfg3.0_int0.0-1.0_steps2_euler.json").read_text())
    assert failed["status"] == "failed" and "hold NaN or inf" in failed["error"] and "\n" not in failed["error"]
    assert "[2/2] ema0.9_cfg3.0_int0.0-1.0_steps2_euler: failed: sampling images 0..3: 4 of 4 images" in res.output
    assert "best: ema0.9_cfg1.0_int0.0-1.0_steps2_euler" in res.output
    everything = sweep(setup, tmp_path / "all", "--ema", "0.9", "--cfg", "3", "--steps", "2", "--num", "4")
    assert everything.exit_code == 2 and "error: every one of the 1 cells failed" in everything.output
    assert "best:" not in everything.output and (tmp_path / "all" / "sweep.json").is_file()


@pytest.mark.parametrize("args, message", [
    (["--cfg", "1,,2"], "--cfg '1,,2': a comma-separated list of values, none empty"),
    (["--cfg", "1,-1"], "--cfg '1,-1': '-1' is not a guidance scale >= 0"),
    (["--cfg", "1,nan"], "'nan' is not a guidance scale >= 0"),
    (["--cfg", "2,2"], "--cfg '2,2': a value is listed twice"),
    (["--interval", "0.5:0.1"], "--interval '0.5:0.1': '0.5:0.1' has LO > HI"),
    (["--interval", "0.1"], "'0.1' is not LO:HI (e.g. 0.1:1)"),
    (["--interval", "0:2"], "'0:2' is not in [0, 1]"),
    (["--steps", "25,0"], "--steps '25,0': '0' is not a step count in 1..100000"),
    (["--solver", "euler,rk9"], "'rk9' is not a solver (euler, heun,"),
    (["--ema", "0.5"], "--ema 0.5: the checkpoint holds EMAs 0.9, 0.99 (and raw)"),
    (["--ema", "1"], "'1' is not an EMA decay in [0, 1) or 'raw'"),
    (["--num", "3"], "--num"),
    (["--features", "vgg"], "unknown feature extractor spec 'vgg'"),
    (["--cfg", ""], "must not be empty"),
])
def test_a_bad_grid_is_one_line_exit_2_and_writes_nothing(setup, tmp_path, args, message):
    out = tmp_path / "sw"
    res = sweep(setup, out, *args)
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert message in lines[0]
    assert not out.exists()


def test_a_folder_of_another_setup_is_refused_before_anything_is_drawn(setup, tmp_path, draws):
    out = tmp_path / "sw"
    assert sweep(setup, out, "--ema", "raw", "--cfg", "1", "--steps", "2", "--num", "4").exit_code == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    res = sweep(setup, out, "--ema", "raw", "--cfg", "1", "--steps", "2", "--num", "4", "--seed", "1")
    assert res.exit_code == 2 and "holds a sweep with seed=0, not 1: choose another --out" in res.stderr
    missing = sweep(setup, tmp_path / "x", "--ref", str(tmp_path / "nope.npz"))
    assert missing.exit_code == 2 and "no such file or folder" in missing.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before and len(draws) == 1
