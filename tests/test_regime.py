"""The regime drivers (experiments.regime, experiments.fig3), their measures and their verdict rules."""

import json

import numpy as np
import pytest

from experiments import claims, common, fig3, measures, regime, regime_report, report


def test_detail_ratio_closed_form():
    # a checkerboard (0.5 cycles/px on both axes) has all its energy above the cutoff; by Parseval its
    # energy scales with the amplitude squared, so doubling the contrast gives exactly 4x
    i, j = np.indices((16, 16))
    board = lambda a: np.repeat((128 + a * (-1.0) ** (i + j)).astype(np.uint8)[..., None], 3, axis=2)  # noqa: E731
    assert measures.detail_ratio(board(40)[None], board(20)[None]) == pytest.approx(4.0, rel=1e-9)
    # a wave of 1/16 cycles/px has no energy above 0.25 cycles/px: a blurred sample scores 0 against the data
    wave = np.repeat((128 + 60 * np.cos(2 * np.pi * j / 16))[..., None], 3, axis=2)
    assert measures.detail_ratio(wave[None], board(20)[None]) == pytest.approx(0.0, abs=1e-12)


def test_layout_accuracy_reads_coarse_layout_not_texture():
    flat = lambda v: np.full((16, 16, 3), v, np.uint8)  # noqa: E731
    left = flat(0).copy()
    left[:, :8] = 250  # class 1: bright left half; class 0: dark all over
    pool = np.stack([flat(10), flat(20), flat(30), left, left, left])
    pool_labels = np.array([0, 0, 0, 1, 1, 1])
    i, j = np.indices((16, 16))
    grain = (20 + 20 * (-1) ** (i + j)).astype(np.uint8)[..., None].repeat(3, 2)  # mean 20 under fine grain
    images = np.stack([grain, left, left, flat(15)])
    # the grainy dark image is class 0's layout, the bright-left ones class 1's: three of four labels agree;
    # flipping every label leaves only the third one right
    assert measures.layout_accuracy(images, np.array([0, 1, 0, 0]), pool, pool_labels, grid=4, k=3) == 0.75
    assert measures.layout_accuracy(images, np.array([1, 0, 1, 1]), pool, pool_labels, grid=4, k=3) == 0.25


def test_a_claim_goes_to_one_caller_until_cleared(tmp_path):
    assert claims.claim(tmp_path / "q", "job") and not claims.claim(tmp_path / "q", "job")
    assert claims.claim(tmp_path / "q", "other")
    claims.clear(tmp_path / "q")
    assert claims.claim(tmp_path / "q", "job")


def test_spread_and_flatness_rule():
    assert measures.spread([1.0, 2.0, 3.0]) == {"mean": 2.0, "std": 1.0, "min": 1.0, "max": 3.0, "n": 3}
    assert measures.spread([5.0])["std"] is None
    assert fig3.is_flat([10.0, 12.0, 13.0, 13.05, 13.1], evals=2, db=0.2)  # gained 0.1 dB over 2 evaluations
    assert not fig3.is_flat([10.0, 12.0, 13.0, 13.5], evals=2, db=0.2)
    assert not fig3.is_flat([10.0, 10.0], evals=2, db=0.2)  # too few evaluations to tell


def test_cpu_variants_cover_the_issue(tmp_path):
    vs = regime.variants(regime.SCALES["cpu"])
    assert {"dit_only_v", "dip_v", "dit_only_x", "dip_x", "dip_image_v", "dip_film_x", "mlp_v", "intra_attn_v",
            "coord_mlp_v", "dit_only_wide_v", "dip_depth1_v", "dip_width32_v", "dit_only_p8_v", "dip_p32_v"} <= vs.keys()
    sets = dict(vs["dip_p32_v"].sets)
    assert sets["model.backbone.patch_size"] == 32 and sets["model.head"].depth == 5  # halved down to 1x1
    assert dict(vs["dip_image_x"].sets)["model.head"].scope == "image"
    assert len(regime.jobs(regime.SCALES["cpu"])) == 3 * len(vs)
    for v in vs.values():  # every variant is a valid recipe: the base plus its overrides
        r = regime.recipe_for(regime.SCALES["cpu"], v, tmp_path, seed=1)
        assert r.train.seed == 1 and r.model.backbone.image_size == 64
        if v.name.startswith("dip"):
            assert r.model.head.depth == int(np.log2(r.model.backbone.patch_size)) or "depth" in v.name


def _row(fd, detail=1.0, seam=1.0, psnr=20.0, layout=0.11):
    sp = lambda m, sd: {"mean": m, "std": sd, "min": m - sd, "max": m + sd, "n": 3}  # noqa: E731
    return {"groups": ["regime"], "spread": {"fd_effnet": sp(fd, 0.5), "detail_ratio": sp(detail, 0.02),
                                             "seam_score": sp(seam, 0.02), "denoise_psnr@0.5": sp(psnr, 0.2),
                                             "layout_accuracy": sp(layout, 0.01)}}


def test_verdicts_on_synthetic_results():
    res = {"dit_only_v": _row(200.0, detail=5.0, psnr=15.0), "dip_v": _row(100.0, detail=1.1, psnr=18.0),
           "dit_only_x": _row(150.0, detail=0.6), "dip_x": _row(152.0, detail=0.9, seam=1.6),
           "dip_image_x": _row(140.0, seam=1.05, layout=0.14), "dip_film_x": _row(152.0, seam=1.58, layout=0.30)}
    v = {claim: status for claim, status, _ in regime_report.regime_verdicts(res, "0.5")}
    assert v["Regime: with v-prediction, DiP's samples beat DiT-only's"] == "reproduced"
    assert v["Regime: with v-prediction, DiT-only's samples carry more high-frequency energy (grain) than DiP's"] \
        == "reproduced"
    assert v["Regime: with v-prediction, DiP denoises better in one step (t = 0.5)"] == "reproduced"
    assert v["JiT: x-prediction removes DiT-only's grain"] == "reproduced"
    assert v["Regime: with x-prediction, DiP's samples beat DiT-only's"] == "within noise"  # 150 vs 152, margin 7.5
    s = {claim: status for claim, status, _ in regime_report.seam_verdicts(res)}
    assert s["Beyond the paper (x-pred): the U-Net over the whole image has fewer seams than the per-patch head"] == "holds"
    assert s["Beyond the paper (x-pred): s_i at every stage has fewer seams than the per-patch head"] == "within noise"
    layout = "Beyond the paper (x-pred): {} draws its class's layout more often than the per-patch head"
    assert s[layout.format("s_i at every stage")] == "holds"  # 0.30 vs 0.11
    assert s[layout.format("the U-Net over the whole image")] == "within noise"  # 0.14 vs 0.11, margin 0.05
    res["mlp_v"], res["mlp_x"] = _row(300.0), _row(120.0)  # x-prediction moves the MLP head from last to first
    assert regime_report.ordering(res, "v") == ["dip", "dit_only", "mlp"]
    assert regime_report.ordering(res, "x") == ["mlp", "dit_only", "dip"]


@pytest.mark.filterwarnings("ignore")
def test_regime_pilot_writes_resumable_jobs_and_page(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "DOCS", tmp_path / "docs")
    out, work = common.results_dir("pilot") / "regime", tmp_path / "work"
    rows = regime.run("pilot", out, work)
    assert sorted((r["variant"], r["seed"]) for r in rows) == [("dip_v", 0), ("dip_v", 1), ("dit_only_v", 0),
                                                              ("dit_only_v", 1)]
    saved = json.loads(regime.result_path(out, "dip_v", 1).read_text())
    assert saved["num_samples"] == regime.SCALES["pilot"].samples_per_seed and saved["steps"] == 2
    assert saved["head_config"]["scope"] == "patch" and saved["fd_effnet"] > 0 and saved["seam_score"] > 0
    assert regime.run("pilot", out, work) == []  # every job done: a rerun resumes with nothing to do
    regime.result_path(out, "dip_v", 1).unlink()  # as if interrupted before its JSON was written
    claims.claim(regime.claims_dir(work), "dip_v-seed1")  # ... while another worker holds it
    assert regime.run("pilot", out, work, shard=None) == []
    claims.clear(regime.claims_dir(work))
    assert [(r["variant"], r["seed"]) for r in regime.run("pilot", out, work, shard=None)] == [("dip_v", 1)]

    rep = regime.aggregate("pilot", out, work)
    d, m = rep["results"]["dip_v"], rep["results"]["dit_only_v"]
    assert d["num_samples_pooled"] == 2 * saved["num_samples"]  # both seeds' samples pooled
    assert d["per_seed"]["fd_effnet"][1] == saved["fd_effnet"]
    assert d["spread"]["fd_effnet"]["mean"] == pytest.approx(np.mean(d["per_seed"]["fd_effnet"]))
    assert d["params"] - d["params_head"] == m["params"] - m["params_head"]  # one backbone, two heads
    page = report.write_page("pilot").read_text()
    assert "## 3. The paper's regime" in page and f"{d['fd_effnet_pooled']:.2f} (12)" in page
    assert (out / "regime.png").stat().st_size > 0 and (out / "samples_regime.png").stat().st_size > 0


@pytest.mark.filterwarnings("ignore")
def test_fig3_pilot_stops_when_flat_and_reports(tmp_path, monkeypatch):
    pytest.importorskip("skimage.data")
    monkeypatch.setattr(common, "DOCS", tmp_path / "docs")
    out = common.results_dir("pilot") / "fig3"
    fig3.run("pilot", out, tmp_path / "work", overrides={"seeds": (0,)})
    rep = fig3.aggregate("pilot", out, overrides={"seeds": (0,)})
    seed = rep["seeds"][0]
    # flat_db=100 makes DiP flat at once: it stops at min_steps, and says it converged
    assert seed["steps"] == fig3.SCALES["pilot"].min_steps and seed["converged"]
    steps = [c["step"] for c in rep["curves"]["0"] if c["variant"] == "dip"]
    assert steps == [0, 1, 2]
    lines, verdicts = fig3.section(rep)
    assert verdicts[0][1] in ("reproduced", "not reproduced", "partly or within noise")
    assert f"{rep['results']['dip']['per_seed']['sample_psnr'][0]:.2f}" in "\n".join(lines)


def test_page_section_renders_every_group_of_the_cpu_run(tmp_path, monkeypatch):
    # a synthetic results.json with every CPU variant (FD from a fixed rule) and the x column of Table 2
    monkeypatch.setattr(common, "DOCS", tmp_path)
    s = regime.SCALES["cpu"]
    s = type(s)(**{**s.__dict__, "table2_objectives": ("v", "x")})
    keys = ("fd_effnet", "detail_ratio", "seam_score", "final_loss", "step_time_s", "step_cpu_s", "latency_s",
            "denoise_psnr@0.25", "denoise_psnr@0.5", "denoise_psnr@0.75", "layout_accuracy")
    results = {}
    for i, (name, v) in enumerate(regime.variants(s).items()):
        fd = 100.0 if name.startswith("dip") else 200.0 + i  # every DiP variant far better than every other
        per_seed = {k: [fd + j if k == "fd_effnet" else 1.0 + 0.01 * j for j in range(3)] for k in keys}
        results[name] = {"label": v.label, "groups": list(v.groups), "sets": regime.set_strings(v), "patch_size": 16,
                         "dim": 256, "params": 1, "params_head": 1, "per_seed": per_seed,
                         "spread": {k: measures.spread(x) for k, x in per_seed.items()},
                         "fd_effnet_pooled": fd, "num_samples_pooled": 1002}
    config = {**s.__dict__, "data": "emoji", "reference": "the data", "num_ref": 3773, "tokens": 16,
              "labels": "balanced", "cfg_scale": 1.0, "layout": {"grid": 8, "held_out": 500, "data": 0.75}}
    lines, verdicts = regime_report.section({"config": config, "results": results, "figures": {}}, tmp_path)
    page = "\n".join(lines)
    for title in regime_report.GROUP_TITLES.values():
        assert f"## {title}" in page
    v = dict((claim, st) for claim, st, _ in verdicts)
    assert v["Table 2 (v-pred): the conv U-Net head beats the widened DiT-only"] == "reproduced"
    assert v["Table 2 (x-pred): the conv U-Net head beats the intra-patch attention head"] == "reproduced"
    assert v["Fig. 10b: DiP at 16 px beats DiT-only at 8 px"] == "reproduced"
    assert v["Fig. 10a: a deeper head is better (depth 4 vs 1)"] == "within noise"  # both DiP: equal FD
    assert v["Fig. 10a: doubling the head width (16 -> 32) brings no clear gain"] == "reproduced"
    # equal layout accuracy everywhere: the every-stage head's layout claim is a tie, stated with its margin
    assert v["Beyond the paper (v-pred): s_i at every stage draws its class's layout more often than the per-patch "
             "head"] == "within noise"
    assert "500 held-out data images score 0.750" in page
    assert (tmp_path / "fig10.png").stat().st_size > 0
