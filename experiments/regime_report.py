"""The regime experiments' part of the results page and their plots, from regime/results.json only.

Verdicts follow experiments.report's fixed margins: an FD-EffNet difference counts if it exceeds
the larger of FD_REL_MARGIN of the smaller mean and twice the larger per-seed standard deviation;
a PSNR difference if it exceeds PSNR_MARGIN_DB; a detail-ratio or seam-score difference if it
exceeds the larger of RATIO_MARGIN and twice the larger per-seed standard deviation; a layout-accuracy
difference if it exceeds the larger of ACCURACY_MARGIN and twice the larger per-seed standard deviation.
"""

from __future__ import annotations

from pathlib import Path

from experiments import common
from experiments.page import FD_REL_MARGIN, PSNR_MARGIN_DB, compare, img, margin

RATIO_MARGIN = 0.1
ACCURACY_MARGIN = 0.05
Verdict = tuple[str, str, str]


# ----------------------------------------------------------------------------- comparisons
def _fd(x: dict) -> dict:
    sp = x["spread"]["fd_effnet"]
    return {"fd_effnet_mean": sp["mean"], "fd_effnet_std": sp["std"]}


def fd_compare(x: dict, y: dict) -> tuple[str, str]:
    """('better' | 'worse' | 'tie' for x against y by per-seed FD-EffNet, evidence)."""
    a, b = _fd(x), _fd(y)
    return compare(a, b), (f"FD-EffNet {a['fd_effnet_mean']:.2f} vs {b['fd_effnet_mean']:.2f} "
                            f"(margin {margin(a, b):.2f})")


def ratio_gap(x: dict, y: dict, key: str, floor: float = RATIO_MARGIN) -> tuple[float, float]:
    """(mean of x's per-seed `key` minus y's, the margin that difference must exceed)."""
    sx, sy = x["spread"][key], y["spread"][key]
    return sx["mean"] - sy["mean"], max(floor, 2 * max(sx["std"] or 0.0, sy["std"] or 0.0))


def status(ok: bool, tie: bool, words: tuple[str, str] = ("reproduced", "not reproduced")) -> str:
    return "within noise" if tie else words[0] if ok else words[1]


def fd_verdict(claim: str, x: dict, y: dict, want: str = "better", words=("reproduced", "not reproduced")) -> Verdict:
    cmp, ev = fd_compare(x, y)
    return claim, status(cmp == want, cmp == "tie", words), ev


def regime_verdicts(res: dict, mid_t: str) -> list[Verdict]:
    out: list[Verdict] = []
    if {"dit_only_v", "dip_v"} <= res.keys():
        d, m = res["dip_v"], res["dit_only_v"]
        out.append(fd_verdict("Regime: with v-prediction, DiP's samples beat DiT-only's", d, m))
        gap, margin = ratio_gap(m, d, "detail_ratio")
        out.append(("Regime: with v-prediction, DiT-only's samples carry more high-frequency energy (grain) "
                    "than DiP's", status(gap > margin, abs(gap) <= margin),
                    f"detail ratio {m['spread']['detail_ratio']['mean']:.2f} vs {d['spread']['detail_ratio']['mean']:.2f}"
                    f" of the data's (margin {margin:.2f})"))
        dp = d["spread"][f"denoise_psnr@{mid_t}"]["mean"] - m["spread"][f"denoise_psnr@{mid_t}"]["mean"]
        out.append((f"Regime: with v-prediction, DiP denoises better in one step (t = {mid_t})",
                    status(dp > PSNR_MARGIN_DB, abs(dp) <= PSNR_MARGIN_DB), f"DiP - DiT-only PSNR {dp:+.2f} dB"))
    if {"dit_only_v", "dit_only_x"} <= res.keys():
        gap, margin = ratio_gap(res["dit_only_v"], res["dit_only_x"], "detail_ratio")
        out.append(("JiT: x-prediction removes DiT-only's grain", status(gap > margin, abs(gap) <= margin),
                    f"detail ratio v {res['dit_only_v']['spread']['detail_ratio']['mean']:.2f} vs x "
                    f"{res['dit_only_x']['spread']['detail_ratio']['mean']:.2f} (margin {margin:.2f})"))
    if {"dit_only_x", "dip_x"} <= res.keys():
        out.append(fd_verdict("Regime: with x-prediction, DiP's samples beat DiT-only's", res["dip_x"],
                              res["dit_only_x"], words=("holds", "does not hold")))
    return out


def seam_verdicts(res: dict) -> list[Verdict]:
    out: list[Verdict] = []
    for o in ("v", "x"):
        base = res.get(f"dip_{o}")
        for mode, what in (("image", "the U-Net over the whole image"), ("film", "s_i at every stage")):
            other = res.get(f"dip_{mode}_{o}")
            if base is None or other is None:
                continue
            gap, margin = ratio_gap(base, other, "seam_score")
            out.append((f"Beyond the paper ({o}-pred): {what} has fewer seams than the per-patch head",
                        status(gap > margin, abs(gap) <= margin, ("holds", "does not hold")),
                        f"seam score {other['spread']['seam_score']['mean']:.2f} vs "
                        f"{base['spread']['seam_score']['mean']:.2f} (1 = the data's; margin {margin:.2f})"))
            out.append(fd_verdict(f"Beyond the paper ({o}-pred): {what} beats the per-patch head", other, base,
                                  words=("holds", "does not hold")))
            gap, margin = ratio_gap(other, base, "layout_accuracy", ACCURACY_MARGIN)
            out.append((f"Beyond the paper ({o}-pred): {what} draws its class's layout more often than the "
                        "per-patch head", status(gap > margin, abs(gap) <= margin, ("holds", "does not hold")),
                        f"layout accuracy {other['spread']['layout_accuracy']['mean']:.3f} vs "
                        f"{base['spread']['layout_accuracy']['mean']:.3f} (margin {margin:.3f})"))
    return out


def table2_verdicts(res: dict, o: str) -> list[Verdict]:
    u = res.get(f"dip_{o}")
    if u is None:
        return []
    out = []
    for other, text in (("dit_only", "DiT-only"), ("dit_only_wide", "the widened DiT-only"),
                        ("mlp", "the standard MLP head"), ("intra_attn", "the intra-patch attention head")):
        if f"{other}_{o}" in res:
            out.append(fd_verdict(f"Table 2 ({o}-pred): the conv U-Net head beats {text}", u, res[f"{other}_{o}"]))
    if f"coord_mlp_{o}" in res:  # the paper's near tie (2.16 vs 2.20): reproduced unless the U-Net is worse
        cmp, ev = fd_compare(u, res[f"coord_mlp_{o}"])
        out.append((f"Table 2 ({o}-pred): the conv U-Net head is not worse than the coordinate-MLP head",
                    "not reproduced" if cmp == "worse" else "reproduced", ev))
    if {f"mlp_{o}", f"dit_only_{o}"} <= res.keys():
        out.append(fd_verdict(f"Table 2 ({o}-pred): the standard MLP head is worse than DiT-only", res[f"mlp_{o}"],
                              res[f"dit_only_{o}"], want="worse"))
    return out


def ordering(res: dict, o: str) -> list[str]:
    """Table 2's rows for objective o, best (lowest mean per-seed FD-EffNet) first, without the suffix."""
    rows = [n for n in ("dit_only", "dit_only_wide", "mlp", "intra_attn", "coord_mlp", "dip") if f"{n}_{o}" in res]
    return sorted(rows, key=lambda n: res[f"{n}_{o}"]["spread"]["fd_effnet"]["mean"])


def fig10_verdicts(res: dict, deepest: int, width: int, patch: int) -> list[Verdict]:
    out: list[Verdict] = []
    if "dip_v" in res and "dip_depth1_v" in res:
        out.append(fd_verdict(f"Fig. 10a: a deeper head is better (depth {deepest} vs 1)", res["dip_v"],
                              res["dip_depth1_v"]))
    wide = res.get(f"dip_width{2 * width}_v")
    if "dip_v" in res and wide is not None:
        cmp, ev = fd_compare(wide, res["dip_v"])
        out.append((f"Fig. 10a: doubling the head width ({width} -> {2 * width}) brings no clear gain",
                    "not reproduced" if cmp == "better" else "reproduced", ev))
    small = res.get(f"dit_only_p{patch // 2}_v")
    if small is not None and "dit_only_v" in res:
        out.append(fd_verdict(f"Fig. 10b: smaller patches are better for DiT-only ({patch // 2} vs {patch} px)", small,
                              res["dit_only_v"]))
    if small is not None and "dip_v" in res:
        out.append(fd_verdict(f"Fig. 10b: DiP at {patch} px beats DiT-only at {patch // 2} px", res["dip_v"], small))
    big = res.get(f"dip_p{2 * patch}_v")
    if big is not None and "dit_only_v" in res:
        out.append(fd_verdict(f"Fig. 10b: DiP at {2 * patch} px beats DiT-only at {patch} px", big, res["dit_only_v"]))
    return out


# ----------------------------------------------------------------------------- tables and plots
def _cell(sp: dict, values: list[float], nd: int = 2) -> str:
    if sp["std"] is None:
        return f"{sp['mean']:.{nd}f}"
    return f"{sp['mean']:.{nd}f} ± {sp['std']:.{nd}f} ({', '.join(f'{v:.{nd}f}' for v in values)})"


def table(res: dict, names: list[str], ts: list[str]) -> list[str]:
    lines = ["| variant | patch | width | params | head params | CPU s / step | latency / image | FD-EffNet ↓ per seed | "
             "FD-EffNet pooled | detail / data's | seam score | layout accuracy | "
             + " | ".join(f"PSNR t={t}" for t in ts) + " | final loss |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(ts) + "---:|"]
    for n in names:
        x, sp, ps = res[n], res[n]["spread"], res[n]["per_seed"]
        lines.append(
            f"| {x['label']} | {x['patch_size']} | {x['dim']} | {x['params']:,} | {x['params_head']:,} | "
            f"{_cell(sp['step_cpu_s'], ps['step_cpu_s'], 3)} | {_cell(sp['latency_s'], ps['latency_s'], 3)} s | "
            f"{_cell(sp['fd_effnet'], ps['fd_effnet'])} | "
            f"{x['fd_effnet_pooled']:.2f} ({x['num_samples_pooled']:,}) | "
            f"{_cell(sp['detail_ratio'], ps['detail_ratio'])} | {_cell(sp['seam_score'], ps['seam_score'])} | "
            f"{_cell(sp['layout_accuracy'], ps['layout_accuracy'], 3)} | "
            + " | ".join(_cell(sp[f'denoise_psnr@{t}'], ps[f'denoise_psnr@{t}']) for t in ts)
            + f" | {_cell(sp['final_loss'], ps['final_loss'], 4)} |")
    return lines


def plot_group(res: dict, names: list[str], path: Path, title: str, layout_data: float) -> Path:
    """Per-seed dots and means of FD-EffNet, detail ratio, seam score and layout accuracy for the
    variants of one group; red lines: the data's value."""
    plt = common.matplotlib_pyplot()
    keys = (("fd_effnet", "FD-EffNet (lower is better)"), ("detail_ratio", "HF energy / data's (1 = data)"),
            ("seam_score", "seam score (1 = data)"), ("layout_accuracy", "layout accuracy (red: data's)"))
    fig, axes = plt.subplots(1, len(keys), figsize=(4.7 * len(keys), 3.8), dpi=100)
    for ax, (key, ylabel) in zip(axes, keys):
        for i, n in enumerate(names):
            vals = res[n]["per_seed"][key]
            ax.bar(i, res[n]["spread"][key]["mean"], color="tab:blue" if "dip" in n else "tab:gray", alpha=0.7)
            ax.scatter([i] * len(vals), vals, color="black", s=10, zorder=3)
        ax.set_xticks(range(len(names)), [res[n]["label"] for n in names], rotation=30, ha="right", fontsize=7)
        ax.set(ylabel=ylabel)
        ax.grid(alpha=0.3, axis="y")
        if key != "fd_effnet":
            ax.axhline(layout_data if key == "layout_accuracy" else 1.0, color="tab:red", lw=0.8)
    fig.suptitle(title + " (bars: mean over seeds; dots: seeds)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- page section
GROUP_TITLES = {
    "regime": "3. The paper's regime: DiT-only vs DiP, v- vs x-prediction",
    "seams": "4. Beyond the paper: a seam-free head and s_i at every stage",
    "table2": "5. Table 2 in the regime (v-prediction)",
    "table2_x": "5b. Table 2 in the regime, x-prediction column",
    "fig10": "6. Fig. 10 in the regime: head depth and width, patch size",
}


def _layout_words(c: dict) -> str:
    lay = c["layout"]
    return (f"{lay['grid']} x {lay['grid']} block means (shapes and colours, no texture) have its class as the "
            "majority of their 10 nearest data images (the global picture; chance is 1/9, "
            f"{lay['held_out']} held-out data images score {lay['data']:.3f})")


def section(r: dict, plots_dir: Path) -> tuple[list[str], list[Verdict]]:
    """The page's lines for every group present in regime/results.json, and their verdicts; writes plots."""
    c, res = r["config"], r["results"]
    ts = [str(t) for t in c["eval_t"]]
    mid_t = ts[len(ts) // 2]
    lines = [
        f"Sections 3-6 share one setup. Data: {c['data']}, {c['image_size']} px; reference for FD-EffNet, detail "
        f"and seams: {c['reference']} ({c['num_ref']:,} images). Backbone: DiT depth {c['depth']}, width {c['dim']} "
        f"(narrower than the {3 * c['patch_size'] ** 2} values of a {c['patch_size']} px patch), {c['num_heads']} heads, "
        f"{c['tokens']} tokens. Training: {c['steps']} steps, batch {c['batch']}, AdamW lr {c['lr']} (warm-up "
        f"{c['warmup']}), EMA {c['ema_decay']}, seeds {', '.join(map(str, c['seeds']))}. Each variant is this base plus "
        "the recipe overrides listed in the JSON (`sets`, the same paths `--set` takes). Scores, per seed: FD-EffNet "
        f"of {c['samples_per_seed']} EMA samples ({c['labels']} labels, Euler {c['sample_steps']} steps, CFG "
        f"{c['cfg_scale']}); 'pooled': FD-EffNet of all seeds' samples together; detail: high-frequency energy "
        "(luminance above 0.25 cycles/px) relative to the data's (< 1 blur, > 1 grain); seam score: pixel "
        "gradients across patch borders relative to inside patches, over the same ratio on the data (1 = no "
        f"seams); layout accuracy: how often a sample's {_layout_words(c)}; PSNR: one-step denoising of "
        f"{c['eval_images']} fixed data images from fixed noise at t (t = 1 is "
        "data); CPU s / step: median CPU time of one training step at one thread (steadier than wall time on a "
        "shared machine); latency: median wall time of sampling one image with those settings. Cells: mean ± "
        "std over seeds (each seed's figure in brackets).",
        "",
    ]
    verdicts: list[Verdict] = []
    for group, title in GROUP_TITLES.items():
        names = [n for n, x in res.items() if group in x["groups"]]
        if not names:
            continue
        lines += [f"## {title}", ""] + table(res, names, ts) + [""]
        plot = plot_group(res, names, plots_dir / f"{group}.png", title, c["layout"]["data"])
        lines += [img(common.rel(plot), f"{group} scores"), ""]
        if f"samples_{group}" in r.get("figures", {}):
            lines += [f"Samples (seed {c['seeds'][0]}, 2 per class, classes in order):", "",
                      img(r["figures"][f"samples_{group}"], f"{group} samples"), ""]
        if group == "regime":
            verdicts += regime_verdicts(res, mid_t)
        elif group == "seams":
            verdicts += seam_verdicts(res)
        elif group in ("table2", "table2_x"):
            o = "v" if group == "table2" else "x"
            verdicts += table2_verdicts(res, o)
            if group == "table2_x":
                same = ordering(res, "v") == ordering(res, "x")
                lines += [f"Ordering by FD-EffNet, v: {' < '.join(ordering(res, 'v'))}; x: "
                          f"{' < '.join(ordering(res, 'x'))} ({'the same' if same else 'x-prediction changes it'}).", ""]
        elif group == "fig10":
            deepest = c["patch_size"].bit_length() - 1  # log2(P): the default head halves down to 1x1
            verdicts += fig10_verdicts(res, deepest, c["head_width"], c["patch_size"])
    lines += [
        "Caveats for sections 3-6: the backbone and budget are far below the paper's (DiP-XL/16, 26 layers, width "
        f"1152, ~600 epochs of ImageNet); here {c['steps']} steps. Per-seed FD-EffNet uses {c['samples_per_seed']} "
        "samples, fewer than the 1,280 feature dimensions, so it is biased upwards: compare per-seed values only "
        "with each other; the pooled column uses every seed's samples. FD-EffNet is a proxy (EfficientNet-lite0 "
        "features, not Inception): never compare it with the paper's FIDs. The seam score is computed on the "
        "variant's own patch grid.",
        "",
    ]
    return lines, verdicts


RULES = (f"Regime rules: FD-EffNet as above ({FD_REL_MARGIN:.0%} / 2 std, per-seed values); PSNR "
         f"{PSNR_MARGIN_DB} dB; detail ratio and seam score: the larger of {RATIO_MARGIN} and twice the larger "
         f"per-seed standard deviation; layout accuracy: the larger of {ACCURACY_MARGIN} and twice the larger "
         "per-seed standard deviation. 'holds' / 'does not hold' mark claims that are not the paper's.")
