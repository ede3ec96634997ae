"""The experiment scaffold and studies: the fair-regime rule, the verdict rule, and one end-to-end
run of every study at --scale smoke (train, resume, sample, score, page) through the public CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.report import verdict
from experiments.scaffold import Arm, head_problem, regime_problem
from experiments.studies import every_stage_variant, fair_arms, fair_base, family_arms, fig3_arms, fig10b_arms
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


@pytest.mark.parametrize("scale", ["cpu", "gpu"])
def test_every_measured_arm_is_in_the_regime_and_pairs_differ_only_in_the_head(scale):
    arms = fair_arms(scale) + family_arms(scale) + fig3_arms(scale) + fig10b_arms(scale)
    assert all(not a.contrast for a in arms) and len({a.name for a in arms}) == len(arms)
    for pair in (fair_arms(scale), fig3_arms(scale)):  # fig3 is GPU-only
        for dip, dit in zip(pair[::2], pair[1::2]):
            assert dip.seed == dit.seed and dip.recipe.train == dit.recipe.train
            assert dip.recipe.model.backbone == dit.recipe.model.backbone and dip.recipe.sample == dit.recipe.sample
            assert type(dip.recipe.model.head).__name__ == "ConvUNet" != type(dit.recipe.model.head).__name__
    for dip, dit in zip(fair_arms(scale)[::2], fig10b_arms(scale)):  # Fig. 10b: only the patch and head differ
        assert dit.seed == dip.seed and dit.recipe.train == dip.recipe.train and dit.recipe.sample == dip.recipe.sample
        assert dit.recipe.model.backbone.patch_size * 2 == dip.recipe.model.backbone.patch_size
    assert (fig10b_arms(scale) == []) == (scale == "cpu") == (fig3_arms(scale) == [])
    family = family_arms(scale)
    assert {a.recipe.sample for a in family} == {fair_base(scale).sample} and len({a.wall_s for a in family}) == 1


def test_every_family_model_is_within_10_percent_of_dips_parameter_count():
    counts = {a.label: sum(p.numel() for p in a.recipe.model.build().parameters()) for a in family_arms("cpu")}
    assert all(abs(n / counts["DiP"] - 1) < 0.10 for n in counts.values()), counts


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
    names = [a.name for a in fair_arms("smoke") + family_arms("smoke") + fig3_arms("smoke") + fig10b_arms("smoke")]
    results = {n: json.loads((work / n / "result.json").read_text()) for n in names}
    assert all(r["steps"] >= 1 and r["n_eval"] >= 2 and (page.parent / r["grid"]).is_file() for r in results.values())
    assert results["fair-dip-s1"]["seed"] == 1 and results["fig3-dip-s0"]["task"] == "overfit"
    text = page.read_text()
    for heading in ("## The regime", "## Metrics and their sanity rows", "## DiT-only against DiP",
                    "## The family at one budget", "## Fig. 3", "## Fig. 10b: DiP against DiT-only/2"):
        assert heading in text
    for r in results.values():  # every grid the page links exists beside it
        assert f"]({r['grid']})" in text
    # resume: a finished arm is never rerun; an unfinished one is (from its checkpoint)
    (work / "fair-dit-only-s2" / "result.json").unlink()
    kept = (work / "fair-dip-s0" / "result.json").stat().st_mtime_ns
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (work / "fair-dit-only-s2" / "result.json").exists()
    assert (work / "fair-dip-s0" / "result.json").stat().st_mtime_ns == kept
    assert len(json.loads((work / "run.json").read_text())["sittings"]) == 2


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
    variant = every_stage_variant(fair_arms("cpu")[0])
    assert variant.recipe.model.head.s_injection == "every_stage" and variant.contrast.startswith("variant")
    assert variant.label == "DiP, every-stage s_i" and variant.name == "fair-dip-s0-every-stage"
    assert variant.recipe.train == fair_arms("cpu")[0].recipe.train
