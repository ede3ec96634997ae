"""A resume continues the run's own recipe.json: --set changes only what it names, each change is
printed and kept in recipe_history.jsonl, what is trained cannot change, a finished run is left
alone; EMAs are read by the checkpoint's own recipe."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import pixdiff
from pixdiff.checkpoints import store as checkpoint
from pixdiff.cli import app
from pixdiff.recipe import load_recipe
from pixdiff.train import Trainer

TINY = ["model.backbone.depth=2", "model.backbone.dim=32", "model.backbone.num_heads=2",
        "model.backbone.image_size=16", "model.head.width=8", "train.global_batch=8", "train.log_every=1",
        "train.sample_every=0", "train.warmup_steps=0", "train.max_steps=2"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def cli(*args: str):
    return CliRunner().invoke(app, ["train", *args, "--no-progress", "--device", "cpu"])


def sets(*overrides: str) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def run(cache, tmp_path) -> Path:
    """A tiny run trained to its max_steps=2."""
    out = tmp_path / "run"
    res = cli("emoji_tiny", "--out", str(out), *sets(*TINY, f"data.cache_dir={cache}"))
    assert res.exit_code == 0, res.stderr
    return out


def test_a_run_folder_resumes_with_only_the_changes_it_is_given(run):
    res = cli(str(run), "--resume", *sets("train.max_steps=4", "train.lr=5e-4"))
    assert res.exit_code == 0, res.stderr
    assert "resume: train.lr 0.002 -> 0.0005" in res.stdout and "resume: train.max_steps 2 -> 4" in res.stdout
    assert "trained steps 2-4 (2 this session)" in res.stdout
    stored = load_recipe(str(run / "recipe.json"))
    assert (stored.train.max_steps, stored.train.lr, stored.model.backbone.dim) == (4, 5e-4, 32)
    history = [json.loads(r) for r in (run / "recipe_history.jsonl").read_text().splitlines()]
    assert [(h["step"], h["changes"]) for h in history] == [
        (2, {"train.lr": [0.002, 0.0005], "train.max_steps": [2, 4]})]
    # the recipe it was started from works too, and needs none of the first session's --set again
    res = cli("emoji_tiny", "--out", str(run), "--resume", *sets("train.max_steps=5"))
    assert res.exit_code == 0, res.stderr
    assert [h["step"] for h in map(json.loads, (run / "recipe_history.jsonl").read_text().splitlines())] == [2, 4]
    assert checkpoint.load(run / "checkpoints" / "step_00000005.pt")["step"] == 5


def one_error_line(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (res.exit_code, res.stderr)
    return lines[0]


@pytest.mark.parametrize("args, message", [
    ([], "the run is already at step 2 = train.max_steps; raise it with --set train.max_steps=M (M > 2)"),
    (sets("train.max_steps=1"), "the run is already at step 2, past train.max_steps=1;"),
    (sets("train.max_steps=4", "model.backbone.depth=3"), "--resume cannot change model.backbone.depth 2 -> 3"),
    (sets("train.max_steps=4", "objective.t_eps=0.5"), "--resume cannot change objective.t_eps 1.0 -> 0.5"),
    (sets("train.max_steps=4", "data.flip=true"), "--resume cannot change data.flip false -> true"),
    (sets("train.max_steps=4", "train.seed=1"), "--resume cannot change train.seed 0 -> 1"),
])
def test_a_refused_resume_is_one_line_and_changes_nothing(run, args, message):
    before = snapshot(run)
    assert message in one_error_line(cli(str(run), "--resume", *args))
    assert snapshot(run) == before


def test_a_resume_of_another_recipe_names_the_runs_own(run):
    before = snapshot(run)
    line = one_error_line(cli("emoji_tiny:dit_only", "--out", str(run), "--resume", *sets("train.max_steps=4")))
    assert "is a run of recipe 'emoji_tiny', not 'emoji_tiny_dit_only'" in line
    assert snapshot(run) == before


def test_emas_are_read_by_the_checkpoints_own_recipe(cache, tmp_path):
    recipe = load_recipe("emoji_tiny", [*TINY, f"data.cache_dir={cache}", "train.ema_decays=(0.9, 0.99)",
                                        "train.ckpt_every=100"])
    out = tmp_path / "run"
    Trainer(recipe, out, progress=False).fit()
    ckpt = checkpoint.load(out / "checkpoints" / "step_00000002.pt")
    swapped = pixdiff.replace(recipe, **{"train.ema_decays": (0.99, 0.9), "train.max_steps": 3})
    with Trainer(swapped, out, resume=True, progress=False) as trainer:  # writes recipe.json, then dies
        trainer.step()                                                  # before its next checkpoint
    assert load_recipe(str(out)).train.ema_decays == (0.99, 0.9)
    for decays in ((0.9, 0.99), (0.99, 0.9)):  # neither order wedges the run
        again = pixdiff.replace(recipe, **{"train.ema_decays": decays, "train.max_steps": 3})
        with Trainer(again, out, resume=True, progress=False) as trainer:
            for i, decay in enumerate(decays):
                expected = ckpt["ema"] if decay == 0.9 else ckpt["ema_extra"]["0.99"]
                names = [n for n, _ in trainer.net.model.named_parameters()]
                assert all(torch.equal(e, expected[n]) for n, e in zip(names, trainer.parts.emas[i])), decays
