"""The experiment scaffold and studies: the fair-regime rule, the verdict rule, and one end-to-end
run of every study at --scale smoke (train, resume, sample, score, page) through the public CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.report import verdict
from experiments.scaffold import Arm, head_problem, regime_problem
from experiments.studies import (
    SIZES,
    best_lrs,
    diagnosis_arms,
    fair_arm,
    fair_arms,
    fair_base,
    family_arms,
    fig3_arms,
    fig10b_arms,
    tail_loss,
)
from pixdiff.config import replace
from pixdiff.nn import ConvUNet, DiTFinalLayer

ROOT = Path(__file__).resolve().parent.parent


def test_arms_outside_the_fair_regime_are_refused_unless_labelled_a_contrast():
    narrow = replace(fair_base("cpu"), **{"model.backbone.dim": 192, "model.backbone.num_heads": 4})
    with pytest.raises(ValueError, match=r"not in the fair regime: width 192 < 1.5 x 192 values .* contrast") as e:
        Arm("narrow", narrow, "DiT-only")
    assert "\n" not in str(e.value)
    few_tokens = replace(fair_base("cpu"), **{"model.backbone.image_size": 56})
    with pytest.raises(ValueError, match="49 tokens"):
        Arm("few", few_tokens, "DiP")
    assert Arm("narrow", narrow, "DiT-only", contrast="the narrow-width contrast").contrast


BEST = {"DiP": 3e-4, "DiT-only": 3e-3}


@pytest.mark.parametrize("scale", ["cpu", "gpu"])
def test_every_measured_arm_is_in_the_regime_and_pairs_differ_only_in_the_head(scale):
    arms = fair_arms(scale, BEST) + family_arms(scale, BEST) + fig3_arms(scale) + fig10b_arms(scale, BEST)
    assert all(not a.contrast for a in arms) and len({a.name for a in arms}) == len(arms)
    sweep = fair_arms(scale)
    assert sorted({a.recipe.train.lr for a in sweep}) == sorted(SIZES[scale].lrs) and {a.seed for a in sweep} == {0}
    for pair in (sweep, fig3_arms(scale)):
        for dip, dit in zip(pair[::2], pair[1::2]):
            assert dip.seed == dit.seed and dip.recipe.train == dit.recipe.train
            assert dip.recipe.model.backbone == dit.recipe.model.backbone and dip.recipe.sample == dit.recipe.sample
            assert type(dip.recipe.model.head).__name__ == "ConvUNet" != type(dit.recipe.model.head).__name__
    seeds = fair_arms(scale, BEST)[len(sweep):]  # each side's other seeds at its own best lr
    assert {(a.label, a.seed, a.recipe.train.lr) for a in seeds} == {(k, s, v) for k, v in BEST.items() for s in (1, 2)}
    for dit in fig10b_arms(scale, BEST):  # Fig. 10b: DiT-only at its best lr on half-width patches
        assert dit.recipe.train.lr == BEST["DiT-only"] and dit.recipe.sample == fair_base(scale).sample
        assert dit.recipe.model.backbone.patch_size * 2 == fair_base(scale).model.backbone.patch_size
    assert (fig10b_arms(scale, BEST) == []) == (scale == "cpu") and len(fig3_arms(scale)) == 4
    # the arms that need a best lr appear only once the sweep has found it
    assert family_arms(scale) == diagnosis_arms(scale) == fig10b_arms(scale) == []
    family = family_arms(scale, BEST)
    assert {a.recipe.sample for a in family} == {fair_base(scale).sample} and len(family) == 4
    assert {a.recipe.train for a in family} == {fair_base(scale, BEST["DiP"]).train}  # the same steps, DiP's lr


def test_the_best_lr_is_the_lowest_tail_loss_and_a_non_finite_arm_is_never_chosen():
    def result(label, lr, losses, failed=False):
        curve = [[10 * (i + 1), v, 1.0] for i, v in enumerate(losses)]
        return {"label": label, "seed": 0, "lr": lr, "curve": curve, **({"failed": "loss is nan"} if failed else {})}
    lrs = SIZES["cpu"].lrs
    # only the last fifth of the logged steps counts: an early lead does not
    dip = [result("DiP", lrs[0], [0.1] * 8 + [0.5, 0.5]), result("DiP", lrs[1], [0.9] * 8 + [0.3, 0.3]),
           *(result("DiP", lr, [0.01] * 10, failed=True) for lr in lrs[2:])]
    dit = [result("DiT-only", lr, [0.2] * 10) for lr in lrs[:2]]  # its sweep is not finished
    assert best_lrs(dip + dit, "cpu") == {"DiP": lrs[1]}
    assert tail_loss(dip[0]) == pytest.approx(0.5) and tail_loss(dip[2]) != tail_loss(dip[2])
    assert best_lrs(dip[:-1], "cpu") == {}  # a side is decided only when every lr of its sweep has finished
    assert best_lrs([result("DiP", lr, [1.0], failed=True) for lr in lrs], "cpu") == {}


def test_verdict_needs_every_seed_on_one_side():
    assert verdict([1.0, 2.0, 3.0], [3.5, 4.0, 5.0], "lower") == "better"
    assert verdict([1.0, 2.0, 3.6], [3.5, 4.0, 5.0], "lower") == "overlap"
    assert verdict([0.5, 0.6], [0.2, 0.3], "lower") == "worse"
    assert verdict([0.5, 0.6], [0.2, 0.3], "higher") == "better"
    # a ratio to the data: 0.9 and 1.1 are as good as each other, both better than 0.5 or 2
    assert verdict([0.9, 1.1], [0.5, 2.0], "one") == "better" and verdict([0.5], [2.0], "one") == "overlap"


def test_smoke_run_of_every_study_resumes_and_writes_the_page(tmp_path):
    work, page = tmp_path / "work", tmp_path / "docs" / "experiments.md"
    cmd = [sys.executable, "-m", "experiments.run_all", "--scale", "smoke", "--work", str(work), "--page", str(page)]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    sweep = [json.loads((work / a.name / "result.json").read_text()) for a in fair_arms("smoke")]
    best = best_lrs(sweep, "smoke")
    assert set(best) == {"DiP", "DiT-only"} and json.loads((work / "run.json").read_text())["best_lr"] == best
    arms = (fair_arms("smoke", best) + diagnosis_arms("smoke", best) + family_arms("smoke", best) + fig3_arms("smoke")
            + fig10b_arms("smoke", best))
    results = {a.name: json.loads((work / a.name / "result.json").read_text()) for a in arms}
    assert all(r["steps"] >= 1 and r["n_eval"] >= 2 and (page.parent / r["grid"]).is_file() for r in results.values())
    for r in results.values():  # the curve and the readout of every arm; an overfit arm's probes
        assert [c[0] for c in r["curve"]] == sorted({c[0] for c in r["curve"]}) and len(r["readout"]) == 5
        assert all(math.isfinite(x["psnr_high"]) for x in r["readout"])
    assert list(results["fig3-dip-s0"]["probes"]) == ["2"] and results["fig3-dip-s0"]["task"] == "overfit"
    seeds = {(r["label"], r["seed"], r["lr"]) for r in results.values() if r["arm"].startswith("fair-")}
    assert {(k, s, v) for k, v in best.items() for s in (0, 1, 2)} <= seeds
    text = page.read_text()
    for heading in ("## The regime", "## Metrics and their sanity rows", "## Each side at its best learning rate",
                    "## DiT-only against DiP", "## Why DiP's head fits worse", "## The family at an equal step budget",
                    "## Fig. 3",
                    "## The paper's claims at this scale"):
        assert heading in text
    shown = [r for r in results.values() if not r["arm"].startswith("fair-") or r["lr"] == best[r["label"]]]
    assert "## Fig. 10b: DiP against DiT-only/2" in text and len(shown) > 10
    for r in shown:  # every grid and figure the page links exists beside it
        assert f"]({r['grid']})" in text
    for png in ("lr_sweep.png", "fair_curves.png", "fig3_curves.png"):
        assert f"/{png})" in text and (page.with_suffix("") / png).is_file()
    # resume: a finished arm is never rerun; an unfinished one is (from its checkpoint)
    redo, keep = fair_arms("smoke", best)[-1].name, fair_arms("smoke")[0].name
    (work / redo / "result.json").unlink()
    kept = (work / keep / "result.json").stat().st_mtime_ns
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (work / redo / "result.json").exists()
    assert (work / keep / "result.json").stat().st_mtime_ns == kept
    assert len(json.loads((work / "run.json").read_text())["sittings"]) == 2


def test_an_arm_whose_loss_turns_non_finite_is_recorded_as_failed_and_the_study_goes_on(tmp_path, monkeypatch):
    from experiments import scaffold

    arm = fair_arms("smoke")[0]
    monkeypatch.setattr(scaffold, "sanity_rows", lambda arm, work: [])
    nan = replace(arm.recipe, **{"train.lr": 1e30, "train.grad_clip": 0.0, "train.warmup_steps": 0,
                                 "train.max_steps": 3})
    result = scaffold.run_arm(Arm(arm.name, nan, arm.label), tmp_path, tmp_path / "page.md")
    assert "not finite" in result["failed"] or "loss is" in result["failed"]
    assert json.loads((tmp_path / arm.name / "result.json").read_text()) == result and tail_loss(result) != tail_loss(result)
    assert best_lrs([result], "smoke") == {}


# ---------------------------------------------------------------- the fair regime


@pytest.mark.parametrize(("width", "patch", "image", "problem"), [
    (1152, 16, 256, None),  # DiP-XL/16 on ImageNet 256: exactly 1.5 x 768, 256 tokens
    (288, 8, 64, None),  # the CPU regime: 1.5 x 192, 64 tokens
    (256, 16, 256, "width 256 < 1.5 x 768 values per 16 px patch = 1152"),
    (287, 8, 64, "width 287 < 1.5 x 192"),
    (288, 8, 32, "16 tokens (32 px / 8 px patches) < 64"),
    (288, 8, 60, "does not split"),
])
def test_regime_problem_cases(width, patch, image, problem):
    got = regime_problem(width, patch, image)
    assert got is None if problem is None else problem in got and "\n" not in got


@settings(deadline=None, max_examples=50)
@given(st.integers(1, 2048), st.sampled_from([2, 4, 8, 16, 32]), st.integers(1, 32))
def test_regime_problem_is_the_rule(width, patch, grid):
    fair = width >= 1.5 * 3 * patch**2 and grid * grid >= 64
    assert (regime_problem(width, patch, grid * patch) is None) == fair


# ---------------------------------------------------------------- DiP's side of the rule


@pytest.mark.parametrize(("head", "patch", "problem"), [
    (ConvUNet(depth=4, width=64), 16, None),  # DiP-XL/16: 512 channels for 768 values, exactly 2/3
    (ConvUNet(depth=3, width=32), 8, None),  # the CPU regime: 128 for 192
    (ConvUNet(depth=3, width=16), 8, "head bottleneck 64 channels < 2/3 x 192 values per 8 px patch = 128"),
    (ConvUNet(depth=4, width=63), 16, "head bottleneck 504 channels < 2/3 x 768"),
    (ConvUNet(depth=3, width=32, s_injection="every_stage"), 8, "s_i enters the head at every stage"),
    (DiTFinalLayer(), 8, None),  # DiT-only has no head to size
])
def test_head_problem_cases(head, patch, problem):
    got = head_problem(head, patch)
    assert got is None if problem is None else problem in got and "\n" not in got


@settings(deadline=None, max_examples=50)
@given(st.integers(1, 5), st.integers(1, 300), st.sampled_from([2, 4, 8, 16, 32]))
def test_head_problem_is_the_rule(depth, width, patch):
    fair = 3 * width * 2 ** (depth - 1) >= 2 * 3 * patch**2  # bottleneck >= 2/3 x 3 P², in integers
    assert (head_problem(ConvUNet(depth=depth, width=width), patch) is None) == fair


def test_a_narrow_head_or_every_stage_s_is_refused_unless_labelled():
    narrow = replace(fair_base("cpu"), **{"model.head.width": 16})  # the committed results' head: 64 for 192
    with pytest.raises(ValueError, match=r"not in the fair regime: head bottleneck 64 channels .* contrast") as e:
        Arm("narrow-head", narrow, "DiP")
    assert "\n" not in str(e.value)
    film = replace(fair_base("cpu"), **{"model.head.s_injection": "every_stage"})
    with pytest.raises(ValueError, match="s_i enters the head at every stage"):
        Arm("film", film, "DiP")
    # the diagnosis: one change to the paper's head per arm, everything else DiP's seed 0 at its best lr
    dip = fair_arm("cpu", "DiP", BEST["DiP"], 0)
    wide, film, image = diagnosis_arms("cpu", BEST)
    assert wide.recipe.model.head.width * 4 == 3 * 8**2 and not wide.contrast  # bottleneck 192: the fair rule's
    assert film.recipe.model.head.s_injection == "every_stage" and film.contrast.startswith("variant")
    assert image.recipe.model.head.scope == "image" and image.contrast.startswith("variant")
    assert film.label == "DiP, every-stage s_i" and film.name == "diagnosis-every-stage-s0"
    for arm in (wide, film, image):
        assert arm.recipe.train == dip.recipe.train and arm.recipe.data == dip.recipe.data and arm.seed == dip.seed
        assert arm.recipe.model.backbone == dip.recipe.model.backbone and arm.recipe.sample == dip.recipe.sample


def test_head_usage_is_zero_exactly_when_the_head_cannot_read_the_backbone():
    from experiments.head_usage import usage

    torch.manual_seed(0)
    config = fair_base("smoke").model
    model = config.build().eval()
    fresh = usage(model, 32)
    assert fresh["out_shift_t"] > 0 and fresh["out_shift_class"] > 0 and 0 <= fresh["saturated"] <= 1
    conv = model.head.bottleneck[0]
    with torch.no_grad():  # the bottleneck's s_i columns: the paper's head's only way to t and the class
        conv.weight[:, conv.weight.shape[1] - config.backbone.dim:] = 0
        conv.bias.fill_(-5.0)
    cut = usage(model, 32)
    assert cut["out_shift_t"] == 0 and cut["out_shift_class"] == 0 and cut["saturated"] == 1
