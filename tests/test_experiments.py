"""The paper-claim drivers stay runnable: a micro-sized single-image overfit, then the results page."""

import json

import pytest

pytest.importorskip("skimage.data")

from experiments import common, overfit, report  # noqa: E402


def test_overfit_driver_writes_results_figures_and_page(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "DOCS", tmp_path / "docs")
    out = common.results_dir("cpu") / "overfit"
    micro = {"depth": 1, "dim": 64, "num_heads": 4, "unet_depth": 2, "unet_width": 4, "batch": 2, "steps": 2,
             "eval_every": 1, "sample_steps": 2, "num_samples": 1}
    rep = overfit.run("cpu", out, tmp_path / "work", overrides=micro)

    saved = json.loads((out / "results.json").read_text())
    assert saved["results"].keys() == {"dit_only", "dip"}
    assert [r["step"] for r in saved["curve"] if r["variant"] == "dip"] == [0, 1, 2]
    backbone = {v: r["params"] - r["params_head"] for v, r in saved["results"].items()}
    assert backbone["dip"] == backbone["dit_only"]  # the two differ only in the head
    for name in ("psnr_vs_step.png", "crops.png", "full.png"):
        assert (out / name).stat().st_size > 0
    assert rep["results"]["dip"]["sample_psnr_mean"] == saved["results"]["dip"]["sample_psnr_mean"]

    page = report.write_page("cpu").read_text()
    # the earlier 8 px study is the page's appendix; the ablation did not run, so only its first part is there
    assert "### A1. Single-image overfitting" in page and "### A2." not in page
    assert f"{saved['results']['dip']['sample_psnr_mean']:.2f} dB" in page  # numbers come from the JSON
