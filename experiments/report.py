"""docs/experiments.md from the finished arms' result.json and the sanity rows: every number on the
page is read from those files, and every verdict comes from `verdict` (ranges over seeds) or, for
Fig. 3, from the rule written in `studies` before the run (`fig3_verdict`)."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from experiments import curves
from experiments.scaffold import command_line, write_json
from experiments.studies import (
    FAIR_LABELS,
    DIAGNOSES,
    FAMILY,
    FIG3_FROM_STEP,
    FIG3_MIN_T,
    HOLDOUT,
    LAYOUT,
    OVERFIT_SIZES,
    SEEDS,
    SIZES,
    TAIL,
    best_lrs,
    lr_name,
    tail_loss,
)
from pixdiff.eval import ROWS

Result = dict[str, Any]
BETTER = {"PSNR to the image (dB)": "higher", "in-patch detail ratio": "one"}
READ_T = (0.2, 0.6, 0.95)  # the readout's noise levels shown in the comparison tables (all five in results.json)


def badness(values: list[float], better: str) -> np.ndarray:
    v = np.asarray(values, np.float64)
    return np.abs(np.log(v)) if better == "one" else v if better == "lower" else -v


def verdict(a: list[float], b: list[float], better: str) -> str:
    """'better' / 'worse' when every seed of a is better / worse than every seed of b, else 'overlap'
    (no claim: the difference is within the seeds' spread)."""
    ba, bb = badness(a, better), badness(b, better)
    return "better" if ba.max() < bb.min() else "worse" if ba.min() > bb.max() else "overlap"


def cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.mean(values):.4g} [{min(values):.4g}, {max(values):.4g}]"


def by_label(results: list[Result]) -> dict[str, list[Result]]:
    out: dict[str, list[Result]] = {}
    for r in results:
        out.setdefault(r["label"], []).append(r)
    return out


def band(r: Result, t: float, which: str = "high", readout: list[dict] | None = None) -> float:
    """The readout's PSNR (dB) of one band at noise level t."""
    row = next(x for x in (readout or r["readout"]) if math.isclose(x["t"], t))
    return row[f"psnr_{which}"]


def measures(metrics: dict[str, str]) -> dict[str, tuple[str, Callable[[Result], float]]]:
    """What a comparison table shows: the sanity-passing metrics, the held-out readout, the loss."""
    out = {m: (d, (lambda r, m=m: r["scores"][m])) for m, d in metrics.items()}
    for which, name in (("high", "in-patch band"), ("low", "patch-mean band")):
        for t in READ_T:
            out[f"readout PSNR, {name}, t = {t:g} (dB)"] = ("higher", lambda r, t=t, w=which: band(r, t, w))
    out[f"training loss, mean of the last {TAIL:.0%} of steps (same target)"] = ("lower", tail_loss)
    return out


def comparison(groups: dict[str, list[Result]], shown: dict[str, tuple[str, Callable]], a: str, b: str) -> str:
    """Per measure: each arm's mean [min, max] over seeds and the verdict of a against b."""
    lines = [f"| measure | better | {a} | {b} | {a} against {b} |", "|---|---|---|---|---|"]
    for name, (direction, get) in shown.items():
        va, vb = [get(r) for r in groups[a]], [get(r) for r in groups[b]]
        lines.append(f"| {name} | {direction} | {cell(va)} | {cell(vb)} | {verdict(va, vb, direction)} |")
    return "\n".join(lines)


def sentence(groups: dict[str, list[Result]], shown: dict[str, tuple[str, Callable]], a: str, b: str) -> str:
    """The verdicts in words: which measures separate a from b beyond the seeds' spread, and which do not."""
    found = {m: verdict([get(r) for r in groups[a]], [get(r) for r in groups[b]], d) for m, (d, get) in shown.items()}
    said = [f"every {a} seed scores {v} than every {b} seed on {m}" for m, v in found.items() if v != "overlap"]
    same = [m for m, v in found.items() if v == "overlap"]
    parts = ["; ".join(said) if said else f"no measure separates {a} from {b} beyond the seeds' spread"]
    if said and same:
        parts.append(f"the seeds' ranges overlap on {', '.join(same)}")
    return ". ".join(p[0].upper() + p[1:] for p in parts) + "."


def sanity_table(rows: list[Result], n: int) -> str:
    lines = [f"| metric (N = {n} per side) | better | {' | '.join(ROWS)} | must detect | passes |",
             "|---" * (len(ROWS) + 4) + "|"]
    for r in rows:
        # rows added to the sanity set later are absent from older result files: shown as "-"
        cells = " | ".join(cell(r["scores"][row]) if row in r["scores"] else "-" for row in ROWS)
        lines.append(f"| {r['metric']} | {r['better']} | {cells} | {', '.join(r['must_detect'])} | "
                     f"{'yes' if r['passes'] else 'NO'} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the sweep
def sweep_table(sweep: list[Result], best: dict[str, float], metrics: dict[str, str]) -> str:
    shown = [m for m in (LAYOUT, "FD, 4x4 block means + log in-patch detail (64 dims)") if m in metrics]
    lines = [f"| arm | lr | tail loss | tail grad norm | held-out in-patch PSNR, t = 0.6 | "
             f"{' | '.join(shown)} | chosen | samples |", "|---" * (7 + len(shown)) + "|"]
    for r in sorted(sweep, key=lambda r: (FAIR_LABELS.index(r["label"]), r["lr"])):
        if r.get("failed"):
            lines.append(f"| {r['label']} | {r['lr']:g} | failed: {r['failed']} |" + " |" * (5 + len(shown)))
            continue
        grad = [g for step, _, g in r["curve"] if step > (1 - TAIL) * r["curve"][-1][0]]
        scores = " | ".join(f"{r['scores'][m]:.4g}" for m in shown)
        lines.append(f"| {r['label']} | {r['lr']:g} | {tail_loss(r):.4f} | {statistics.mean(grad):.3f} | "
                     f"{band(r, 0.6):.2f} | {scores} | {'**best**' if best.get(r['label']) == r['lr'] else ''} | "
                     f"[grid]({r['grid']}) |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the diagnosis
def diagnosis_reading(value: float, dip: list[float], dit: list[float], better: str) -> str:
    """`studies`' diagnosis rule (written before the run) for one measure of one changed-head arm."""
    if verdict(dip, dit, better) != "worse":
        return "no gap to explain"
    beyond = (lambda v, ref: v < min(ref)) if better == "lower" else (lambda v, ref: v > max(ref))
    reaches = (lambda v, ref: v <= max(ref)) if better == "lower" else (lambda v, ref: v >= min(ref))
    if not beyond(value, dip):
        return "not the cause"
    return "**closes the gap**" if reaches(value, dit) else "explains part"


DIAGNOSIS_MEASURES: dict[str, tuple[str, Callable[[Result], float]]] = {
    f"tail loss (last {TAIL:.0%})": ("lower", tail_loss),
    "in-patch PSNR, t = 0.95": ("higher", lambda r: band(r, 0.95)),
    "patch-mean PSNR, t = 0.95": ("higher", lambda r: band(r, 0.95, "low")),
    "in-patch PSNR, t = 0.6": ("higher", lambda r: band(r, 0.6)),
}


def diagnosis_section(groups: dict[str, list[Result]], diagnosis: list[Result]) -> list[str]:
    names = list(DIAGNOSIS_MEASURES)
    lines = [f"| arm | seeds | params | train img/s | {' | '.join(names)} |", "|---" * (4 + len(names)) + "|"]
    for label in ("DiP", "DiT-only"):
        rs = groups[label]
        lines.append(f"| {label} (the fair study) | {len(rs)} | {rs[0]['params'] / 1e6:.2f}M | "
                     f"{statistics.mean(r['train_img_per_s'] for r in rs):.1f} | "
                     + " | ".join(cell([get(r) for r in rs]) for _, get in DIAGNOSIS_MEASURES.values()) + " |")
    for r in diagnosis:
        readings = [f"{get(r):.4g}: {diagnosis_reading(get(r), [get(x) for x in groups['DiP']], [get(x) for x in groups['DiT-only']], d)}"
                    for d, get in DIAGNOSIS_MEASURES.values()]
        lines.append(f"| {r['label']} | 1 | {r['params'] / 1e6:.2f}M | {r['train_img_per_s']:.1f} | "
                     + " | ".join(readings) + " |")
    changes = "\n".join(f"- **DiP, {label}**: {why}." for label, why, _ in DIAGNOSES)
    return ["## Why DiP's head fits worse: one change at a time\n", DIAGNOSIS_TEXT.format(changes=changes),
            "\n".join(lines), "", *head_usage(), "Samples:\n", grids(by_label(diagnosis))]


HEAD_USAGE = Path(__file__).resolve().parent.parent / "docs" / "experiments" / "head_usage.json"


def head_usage() -> list[str]:
    """How much each trained head follows the backbone (`experiments.head_usage`), when measured."""
    if not HEAD_USAGE.exists():
        return []
    raw = json.loads(HEAD_USAGE.read_text())
    lines = ["| arm | lr | seed | s_i rms | bottleneck units saturated by s_i | output shift, t 0.3 -> 0.7 | "
             "output shift, class 0 -> 5 |", "|---|---|---|---|---|---|---|"]
    for r in raw["rows"]:
        s = f"{r['s_rms']:.4g} | {r['saturated']:.0%}" if "s_rms" in r else "- | -"
        lines.append(f"| {r['label']} | {r['lr']:g} | {r['seed']} | {s} | {r['out_shift_t']:.4f} | "
                     f"{r['out_shift_class']:.4f} |")
    return [HEAD_USAGE_TEXT.format(below=raw["saturated_below"]), "\n".join(lines), ""]


# ----------------------------------------------------------------------------- Fig. 3
def fig3_rows(fig3: dict[str, list[Result]]) -> list[dict[str, Any]]:
    """Per probed step and arm: each seed's in-patch MSE at every t >= FIG3_MIN_T and mean sample PSNR."""
    steps = sorted({int(s) for rs in fig3.values() for r in rs for s in r.get("probes", {})})
    rows = []
    for step in steps:
        row: dict[str, Any] = {"step": step}
        for label, rs in fig3.items():
            probes = [r["probes"][str(step)] for r in rs if str(step) in r.get("probes", {})]
            row[label] = {"mse_high": [{x["t"]: x["mse_high"] for x in p["readout"] if x["t"] >= FIG3_MIN_T - 1e-9}
                                       for p in probes],
                          "psnr": [statistics.mean(p["psnr"]) for p in probes],
                          "psnr_high": [[x["psnr_high"] for x in p["readout"]] for p in probes]}
        rows.append(row)
    return rows


def fig3_verdict(rows: list[dict[str, Any]]) -> tuple[bool, list[str]]:
    """The rule of `studies` (written before the run): (reproduced, the reasons it is not)."""
    fails = []
    for row in (r for r in rows if r["step"] >= FIG3_FROM_STEP):
        dip, dit = row["DiP"], row["DiT-only"]
        for t in dip["mse_high"][0] if dip["mse_high"] else ():
            if not max(m[t] for m in dip["mse_high"]) < min(m[t] for m in dit["mse_high"]):
                fails.append(f"step {row['step']}, t = {t:g}: DiP's in-patch MSE is not below DiT-only's for every seed")
        if not min(dip["psnr"]) > max(dit["psnr"]):
            fails.append(f"step {row['step']}: DiP's sample PSNR is not above DiT-only's for every seed")
    seen = [r for r in rows if r["step"] >= FIG3_FROM_STEP]
    return bool(seen) and not fails, fails if seen else [f"no checkpoint from {FIG3_FROM_STEP} steps on was read out"]


def fig3_table(rows: list[dict[str, Any]], times: list[float]) -> str:
    lines = ["| step | arm | sample PSNR to the image (dB), per seed | " +
             " | ".join(f"in-patch PSNR t = {t:g}" for t in times) + " |", "|---" * (3 + len(times)) + "|"]
    for row in rows:
        for label in FAIR_LABELS:
            v = row[label]
            highs = " | ".join(", ".join(f"{p[k]:.2f}" for p in v["psnr_high"]) for k in range(len(times)))
            lines.append(f"| {row['step']} | {label} | {', '.join(f'{p:.2f}' for p in v['psnr'])} | {highs} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the page
def write(results: dict[str, list[Result]], scale: str, work: Path, page: Path) -> Path:
    sanity_files = sorted(work.glob("sanity-openmoji-*.json")) or sorted(work.glob("sanity-*.json"))
    sanity = json.loads(sanity_files[0].read_text()) if sanity_files else []
    metrics = {r["metric"]: r["better"] for r in sanity if r["passes"]}
    run = json.loads((work / "run.json").read_text()) if (work / "run.json").exists() else {}
    run = {"sittings": [], **run}
    figures = curves.write_all(results, scale, page.with_suffix(""))
    text = render(results=results, scale=scale, sanity=sanity, metrics=metrics, run=run, command=command_line(),
                  figures={k: v.relative_to(page.parent).as_posix() for k, v in figures.items()})
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text)
    # everything the page was written from, beside its grids: the raw numbers travel with the page
    write_json(page.with_suffix("") / "results.json", {"scale": scale, "run": run, "sanity": sanity,
                                                        "results": results})
    return page


def ok(results: list[Result]) -> list[Result]:
    return [r for r in results if not r.get("failed")]


def render(*, results: dict[str, list[Result]], scale: str, sanity: list[Result], metrics: dict[str, str],
           run: dict[str, Any], command: str, figures: dict[str, str]) -> str:
    z = SIZES[scale]
    wall = sum(s["wall_s"] for s in run["sittings"])
    arm_s = sum(r.get("train_s", 0) + r.get("sample_s", 0) for rs in results.values() for r in rs)
    env = next((r["environment"] for rs in results.values() for r in rs), {})
    out = [TITLE.format(command=command, wall=wall / 60, sittings=len(run["sittings"]), arm_s=arm_s / 60,
                        cpu=env.get("cpu", "?"), torch=env.get("torch", "?"), gpu=env.get("gpu")),
           "## The regime\n", REGIME.format(image=z.image, patch=z.patch, tokens=(z.image // z.patch) ** 2,
                                             values=3 * z.patch**2, width=z.width, batch=z.batch, steps=z.steps,
                                             sample_steps=z.sample_steps, holdout=HOLDOUT),
           "## Metrics and their sanity rows\n", SANITY.format(n=z.n_eval), sanity_table(sanity, z.n_eval), "",
           f"On the page: {', '.join(metrics) or 'none'}.\n"]
    fair = results.get("fair", [])
    best = best_lrs(fair, scale)
    sweep = [r for r in fair if r["seed"] == 0]
    if sweep:
        out += ["## Each side at its best learning rate\n",
                SWEEP.format(lrs=", ".join(f"{v:g}" for v in z.lrs), steps=z.steps, tail=TAIL),
                sweep_table(sweep, best, metrics), "",
                f"Best: {', '.join(f'{k} {v:g}' for k, v in best.items()) or 'not decided yet'}.\n"]
        out += [f"![loss and grad-norm curves of the sweep]({figures['sweep']})\n"] if "sweep" in figures else []
    groups = {label: [r for r in ok(fair) if r["label"] == label and r["lr"] == lr]
              for label, lr in best.items()}
    if len(groups) == 2 and all(len(v) >= 2 for v in groups.values()):
        shown = measures(metrics)
        out += [f"## DiT-only against DiP (fair regime, {len(groups['DiP'])} seeds at each side's best lr)\n",
                FAIR_TEXT.format(dip=best["DiP"], dit=best["DiT-only"], steps=z.steps,
                                 seeds=", ".join(str(r["seed"]) for r in groups["DiP"])),
                comparison(groups, shown, "DiP", "DiT-only"), "",
                "**Verdict.** " + sentence(groups, shown, "DiP", "DiT-only"), ""]
        out += [f"![loss curves of the fair arms]({figures['fair']})\n"] if "fair" in figures else []
        out += ["Samples (the first 36 of each arm's 300; 4 per class, rows of 9 = one per group):\n",
                grids(groups)]
    diagnosis = ok(results.get("diagnosis", []))
    if diagnosis and len(groups) == 2:
        out += diagnosis_section(groups, diagnosis)
    family = ok(results.get("family", []))
    dip_family = groups.get("DiP", [])  # the fair study's DiP seeds: the family trains at DiP's best lr
    if family and dip_family:
        out += ["## The family at an equal step budget\n", FAMILY_TEXT.format(steps=z.steps, lr=best["DiP"]),
                family_table(dip_family + family, metrics), "", family_spread(dip_family, metrics), ""]
    fig3 = by_label(ok(results.get("fig3", [])))
    if "DiP" in fig3 and "DiT-only" in fig3:
        out += fig3_section(fig3, scale, figures)
    fig10b = ok(results.get("fig10b", []))
    if fig10b and "DiP" in groups:
        pair = {"DiP": groups["DiP"], **by_label(fig10b)}
        small = fig10b[0]["label"]
        shown = measures(metrics)
        out += [f"## Fig. 10b: DiP against {small} (4x the tokens)\n", FIG10B_TEXT,
                comparison(pair, shown, "DiP", small), "",
                "**Verdict.** " + sentence(pair, shown, "DiP", small), "", grids(by_label(fig10b))]
    out += [CLAIMS_HEAD, claims(groups, fig3, family, dip_family, diagnosis), "",
            unfinished(groups, family, diagnosis), "",
            LIMITS.format(image=z.image, tokens=(z.image // z.patch) ** 2, depth=z.depth, width=z.width,
                          steps=z.steps, batch=z.batch, fig10b=fig10b_cost(z.steps)).rstrip("\n")]
    return "\n".join(out) + "\n"


def fig3_section(fig3: dict[str, list[Result]], scale: str, figures: dict[str, str]) -> list[str]:
    o = OVERFIT_SIZES[scale]
    rows = fig3_rows(fig3)
    times = [x["t"] for x in fig3["DiP"][0]["readout"]]
    reproduced, fails = fig3_verdict(rows)
    said = ("**Verdict: reproduced** at this scale: every part of the rule holds." if reproduced else
            "**Verdict: the effect is absent at this scale** (the rule fails: " + "; ".join(fails[:6])
            + (f"; and {len(fails) - 6} more" if len(fails) > 6 else "") + ").")
    return ["## Fig. 3 at the fair size: memorising one image\n",
            FIG3_TEXT.format(image=o.image, patch=o.patch, tokens=(o.image // o.patch) ** 2, values=3 * o.patch**2,
                             width=o.width, depth=o.depth, head=o.head_width, steps=o.steps, batch=o.batch, lr=o.lr,
                             ema=o.ema, n=o.n_eval, sample_steps=o.sample_steps, seeds=len(fig3["DiP"]),
                             probes=", ".join(f"{s:,}" for s in o.probes), from_step=FIG3_FROM_STEP, min_t=FIG3_MIN_T),
            fig3_table(rows, times), "", said, "",
            *([f"![Fig. 3 curves]({figures['fig3']})\n"] if "fig3" in figures else []),
            "Samples at the end (seed 0 of each arm first):\n", grids(fig3)]


FIG10B_COST = Path(__file__).resolve().parent.parent / "docs" / "experiments" / "fig10b_cost.json"


def fig10b_cost(steps: int) -> str:
    """What Fig. 10b's CPU arm costs, from benchmarks/fig10b_cost.py's measurement."""
    if not FIG10B_COST.exists():
        return "its step cost at 256 tokens is not measured"
    raw = json.loads(FIG10B_COST.read_text())
    big, small = raw["s_per_step"]["DiT-only/4 (256 tokens)"], raw["s_per_step"]["DiT-only/8 (64 tokens)"]
    return (f"a DiT-only step at 256 tokens took {big:.2f} s against {small:.2f} s at 64 ({big / small:.1f}x; batch 32, "
            f"one thread, measured beside the two workers: [fig10b_cost.json](experiments/fig10b_cost.json)), so "
            f"3 seeds of {steps} steps are ~{3 * steps * big / 3600:.1f} worker-hours of training alone")


def unfinished(groups: dict[str, list[Result]], family: list[Result], diagnosis: list[Result]) -> str:
    """What the run did not reach: rerunning the same command trains it (every arm resumes)."""
    said = []
    if len(diagnosis) < len(DIAGNOSES):
        said.append(f"- The diagnosis has {len(diagnosis)} of its {len(DIAGNOSES)} arms (`--study diagnosis`).")
    seeds = {label: len(rs) for label, rs in groups.items()}
    if seeds and min(seeds.values()) < len(SEEDS):
        said.append(f"- The fair study has {min(seeds.values())} of its {len(SEEDS)} seeds per side.")
    if not family:
        said.append("- The family at an equal step budget (JiT, PixNerd, PixelDiT, DeCo; "
                    "`--study family`) has no finished arm.")
    return ("## Not finished in this run (rerun the command: every arm resumes)\n\n" + "\n".join(said)) if said else ""


def grids(groups: dict[str, list[Result]]) -> str:
    return "\n".join(f"{label}, seed {r['seed']}:\n\n![{label} seed {r['seed']}]({r['grid']})\n"
                     for label, rs in groups.items() for r in rs)


def family_table(results: list[Result], metrics: dict[str, str]) -> str:
    order = [label for label, _ in FAMILY]
    rs = sorted(results, key=lambda r: order.index(r["label"]))
    lines = [f"| model | params | steps | train img/s | sample img/s | tail loss (own target) | "
             f"held-out in-patch PSNR, t = 0.6 | {' | '.join(f'{m} ({d})' for m, d in metrics.items())} | samples |",
             "|---" * (8 + len(metrics)) + "|"]
    for r in rs:
        scores = " | ".join(f"{r['scores'][m]:.4g}" for m in metrics)
        lines.append(f"| {r['label']} | {r['params'] / 1e6:.2f}M | {r['steps']} | {r['train_img_per_s']:.1f} | "
                     f"{r['sample_img_per_s']:.2f} | {tail_loss(r):.4f} | {band(r, 0.6):.2f} | {scores} | "
                     f"![{r['label']}]({r['grid']}) |")
    return "\n".join(lines)


def family_spread(dip: list[Result], metrics: dict[str, str]) -> str:
    """The yardstick for the one-seed family table: how far DiP's seeds spread at the same budget."""
    if not dip:
        return "DiP's seed spread at this budget is not measured yet."
    spread = ", ".join(f"{m} {min(v):.4g}-{max(v):.4g}" for m in metrics for v in [[r["scores"][m] for r in dip]])
    return (f"One seed per model, so read a difference against seed noise: DiP's {len(dip)} seeds at the same "
            f"step budget (at its best lr, {dip[0]['lr']:g}) spread over {spread}. A gap smaller than that is not "
            f"a ranking.")


def claims(groups: dict[str, list[Result]], fig3: dict[str, list[Result]], family: list[Result],
           dip_family: list[Result], diagnosis: list[Result]) -> str:
    """A verdict per claim of the paper, each from the measures above."""
    lines = []
    if len(groups) == 2:
        loss = verdict([tail_loss(r) for r in groups["DiP"]], [tail_loss(r) for r in groups["DiT-only"]], "lower")
        lines.append(f"- **The head accelerates convergence** (paper, Sec. 3): on the shared v-target, DiP's tail "
                     f"training loss is {cell([tail_loss(r) for r in groups['DiP']])} against DiT-only's "
                     f"{cell([tail_loss(r) for r in groups['DiT-only']])} at the same steps, each at its best lr: "
                     f"DiP is **{loss}** ({'supported' if loss == 'better' else 'not supported'} at this scale).")
        highs = [verdict([band(r, t) for r in groups["DiP"]], [band(r, t) for r in groups["DiT-only"]], "higher")
                 for t in (0.2, 0.4, 0.6, 0.8, 0.95)]
        lines.append("- **The head restores in-patch detail** (Sec. 3, Fig. 3): held-out in-patch readout, DiP "
                     "against DiT-only at t = 0.2, 0.4, 0.6, 0.8, 0.95: " + ", ".join(highs)
                     + f" ({'supported' if all(h == 'better' for h in highs) else 'not supported'} at every level).")
    if "DiP" in fig3 and "DiT-only" in fig3:
        reproduced, _ = fig3_verdict(fig3_rows(fig3))
        lines.append(f"- **Fig. 3** (a DiT alone blurs a memorised image, the head fixes it): "
                     f"{'reproduced' if reproduced else 'not reproduced'} by the rule written before the run.")
    if len(groups) == 2:
        cost = [statistics.mean(r[k] for r in groups[label]) for label in FAIR_LABELS
                for k in ("train_img_per_s", "sample_img_per_s")]
        params = [groups[label][0]["params"] / 1e6 for label in FAIR_LABELS]
        lines.append(f"- **The head is cheap** (Sec. 4: +0.3% parameters at XL): here DiP has {params[0]:.2f}M "
                     f"parameters against {params[1]:.2f}M (+{100 * (params[0] / params[1] - 1):.1f}%), trains at "
                     f"{cost[0]:.1f} img/s against {cost[2]:.1f} and samples at {cost[1]:.2f} img/s against "
                     f"{cost[3]:.2f} on this CPU (the cores were shared, at times with a test suite: ratios, not rates): a conv head over 64 small patches is not cheap next to a 3-block "
                     f"DiT; at XL the backbone dominates.")
    if diagnosis and len(groups) == 2:
        loss = DIAGNOSIS_MEASURES[f"tail loss (last {TAIL:.0%})"][1]
        said = [f"{r['label']}: tail loss {loss(r):.4f}, "
                + diagnosis_reading(loss(r), [loss(x) for x in groups["DiP"]], [loss(x) for x in groups["DiT-only"]],
                                    "lower").replace("**", "") for r in diagnosis]
        lines.append("- **Why DiP's head fits worse here** (the diagnosis above, one seed per change, against DiP's "
                     f"{cell([loss(r) for r in groups['DiP']])} and DiT-only's "
                     f"{cell([loss(r) for r in groups['DiT-only']])}): " + "; ".join(said) + ".")
    if family and dip_family:
        lines.append("- **The family** at one step budget and one seed: see the table; a gap inside DiP's seed "
                     "spread is not a ranking, and no member's lr was tuned.")
    return "\n".join(lines) or "No study has finished yet."


TITLE = """# Experiments: DiP's head in a fair regime, at small scale

Regenerate everything (resumable: rerun the command after an interruption; `experiments/README.md`
says how to shard it):

<!-- not run: about 3-4 hours on 2 CPU cores; tests/test_studies.py runs the same command at --scale smoke -->
```bash
python -m experiments.run_all
```

This page was written by `{command}` from the arms' `result.json` files (all of them, with the
sanity rows and the run record, in [experiments/results.json](experiments/results.json)). Wall time of the run:
{wall:.1f} min over {sittings} sitting(s) (the arms' own training + sampling time: {arm_s:.1f} worker-min,
two workers side by side with one torch thread each). Machine: {cpu}, torch {torch}, GPU: {gpu}.
"""

REGIME = """The question (paper, Sec. 3 and Table 2): does a DiT on large pixel patches need a local head
to render the detail inside each patch? Fair means neither side is handicapped by a setting the paper
does not have. The backbone: at least 1.5 x as wide as the 3 P² values of its patch, as DiP-XL/16
(1152 = 1.5 x 768), and at least 64 tokens; narrower, the per-token output Linear of DiT-only has rank
<= width < 3 P² and cannot express a v-target. The head: its conv U-Net reaches each patch's context
through a bottleneck of at least 2/3 x the 3 P² values, as DiP-XL/16's head (512 channels for 768),
and takes s_i at that bottleneck only, as the paper's head (the project's every-stage FiLM is a
separately labelled variant, run only in the diagnosis). `experiments.scaffold.Arm` refuses an arm that breaks
either side (one line). The learning rate: each side at its own best of a sweep (next section).

At this scale: {image} px OpenMoji with P = {patch} ({tokens} tokens of {values} values), width
{width} (1.5 x {values}), 3 blocks, head base width 32 (bottleneck 128 = 2/3 x {values}). Only these
two ratios match DiP-XL/16; depth, width, data and training length do not. Whether an 8 x 8 patch of
a flat-colour emoji holds enough in-patch detail for the paper's mechanism to show is what this
page measures, not an assumption. Every {holdout}th image of the data is held out of training
(`data.holdout`): the readout scores those.

Same in every arm: backbone, data order (seeded per seed), {steps} steps of batch {batch}, AdamW with
min(100, steps) warm-up steps, grad clip 1.0 (not in the paper), no weight decay, EMA 0.995,
class-balanced OpenMoji groups, and the paper's sampler: Euler with CFG 4.0 on t in (0.1, 1), {sample_steps}
steps (the paper: 100). Objective: flow matching with v-prediction and logit-normal t, as the authors'
code trains DiP (the paper's text says the head predicts the noise component); each family member
keeps its own (JiT: x-prediction; DeCo: frequency-aware flow matching).

The denoising readout (`pixdiff eval-readout`, `pixdiff.eval.readout`): for the held-out images and
one fixed noise per image, the one-step clean-image estimate at noise level t (0 = data), its error
split into the patch-mean band (what the tokens carry) and the in-patch band (what a local head is
for), each as PSNR (peak 2 on [-1, 1]). No sampler, no guidance: it isolates the head's job.
"""

SANITY = """Each metric is checked at the N the arms use ({n} samples against {n} data images), on seeded
splits of OpenMoji into disjoint sets A and B (the committed rows of
[metrics_sanity.md](metrics_sanity.md): 5 splits for the pixel metrics, 2 for EfficientNet's): B itself
(halves: the metric's own noise at this N), a class-balanced draw of real images (balanced: what a
perfect model scores under the arms' class-balanced sampling), B blurred (sigma 1, 0.7, 0.5 px),
noised (std 25.5, 4, 2, 1 levels of 255), seamed (per-patch offsets, std 0.05) and with B's labels
shuffled. A degradation is detected when all its splits score worse than all halves splits. A metric
is on the page only if it detects what it is for: an image-quality metric the gross blur and noise;
grain every noise row, edge sharpness every blur row; the layout accuracy (10-NN over A's labelled
images in 8x8 block means, balanced over the 9 groups, chance 0.111) shuffled labels; the seam score
seams. Read an arm's score against the balanced row, not the halves row.
"""

SWEEP = """The rule, fixed before the sweep (`experiments/studies.py`): seed 0 of each side trains at every
lr of {lrs} for {steps} steps; a side's best lr is the one with the lowest mean training loss over the
last {tail:.0%} of its logged steps. Both sides minimise the same MSE on the same v-target with the
same t draws and data order, so within a side the loss ranks the lrs. An lr whose loss turns
non-finite is reported as failed and never chosen. "Tail" columns: means over that last {tail:.0%}.
"""

FAIR_TEXT = """Each side at its own best lr (DiP {dip:g}, DiT-only {dit:g}), seeds {seeds}, {steps} steps.
Cells: mean [min, max] over seeds. A difference counts only if the ranges do not overlap (every DiP
seed beats every DiT-only seed). The training loss is on the same target for both sides, so it is
evidence of fit, not a score of a different head. The readout rows are on the held-out images.
At this budget neither side's samples are recognisable (layout accuracy near chance, 0.111, against
the balanced real row of the sanity table): the loss and the readout carry most of the evidence.
"""

FAMILY_TEXT = """Every model on the fair study's backbone shape (PixelDiT one block fewer to pay for its pixel
transformer), its own head and objective, the same data, optimiser, sampler and lr ({lr:g}, DiP's best
in the sweep, which was DiT-only's too; no other member's lr was tuned), and the same {steps} steps: an
equal step budget, not equal wall time. DiP's rows are the fair study's seeds. Parameters are within
10% of DiP's. The losses are on each model's own target (JiT's is x-prediction): not comparable
across rows.
"""

DIAGNOSIS_TEXT = """DiP's loss on the shared target and its held-out readout trail DiT-only's (above), most at high
noise, where the estimate must come from the backbone's context, which reaches the paper's head only
through its bottleneck. Each arm below changes one thing about the paper's head (seed 0, DiP's best
lr, the same step budget, data order and sampler):

{changes}

**The rule, written before these arms ran** (`experiments/studies.py`): a change *explains part of
the gap* on a measure if its value is beyond every DiP seed's (outside DiP's seed spread), and
*closes the gap* if it also reaches DiT-only's range; otherwise it is *not the cause*. One seed
per change: a change inside DiP's spread is not evidence either way.
"""

HEAD_USAGE_TEXT = """How much each trained model follows the backbone (`python -m experiments.head_usage`,
[head_usage.json](experiments/head_usage.json)): on 8 fixed noise images, the rms of s_i, the share of
the head's bottleneck units whose s_i part of the pre-activation is below {below:g} (SiLU's flat tail:
neither the output nor the gradient follows s_i there), and how far the output (rms, on a target of
rms ~1) moves when only t or only the class changes. The paper's head sees neither t nor the class
itself: both reach it only through s_i.
"""

FIG3_TEXT = """The paper's Fig. 3 overfits a DiT on one image: DiT-only gets the layout and colours but blurs
edges; the local head fixes them. Here, on the fair study's size: one {image} px OpenMoji image (the one
with the most in-patch high-pass energy at P = {patch}; experiments/data/fig3-openmoji/), {tokens}
tokens of {values} values, width {width}, {depth} blocks, DiP's head of base width {head}; {steps} steps of
batch {batch}, lr {lr:g}, EMA {ema:g}, for {seeds} seeds of each side; no label dropout or guidance. At
steps {probes} each checkpoint is read out: the one-step estimate's in-patch band (16 fixed noises of
the image) and {n} samples from fresh noise (Euler, {sample_steps} steps, CFG 1), each scored as
PSNR to the image.

**The rule, written before the run** (`experiments/studies.py`): the mechanism is reproduced if at
every probed checkpoint from {from_step:,} steps on (a) at every t >= {min_t:g} each DiP seed's in-patch MSE is
below each DiT-only seed's, and (b) each DiP seed's mean sample PSNR is above each DiT-only seed's;
otherwise this page says the effect is absent at this scale.

Per step, arm and seed (comma-separated: seed 0, seed 1):
"""

FIG10B_TEXT = """The paper's Fig. 10b: at 512 px, DiP on 32 px patches keeps a margin over a DiT-only model on
16 px patches (four times the tokens). Here the same token ratio at this scale's resolution:
DiT-only on patches half as wide as DiP's, at DiT-only's best lr, against the fair study's DiP arms
(same seeds, width, steps, sampler), scored at DiP's P. Both sides are in the fair regime; the
paper's DiP/32 (width 1152 for 3,072 values a patch) would not be.
"""

CLAIMS_HEAD = """## The paper's claims at this scale
"""

LIMITS = """## What would change the verdicts at full scale

- Scale: {image} px / {tokens} tokens / {depth} blocks of width {width} for {steps:,} steps of batch
  {batch} is far from 256 px / 256 tokens / 26 blocks of 1152 for 600 epochs of ImageNet. The fair
  rule keeps two ratios (backbone width and head bottleneck against a patch's values), not the
  capacity or the training length.
- Data: 3,944 flat-colour vector emoji in 9 groups; ImageNet photos hold texture that emoji do not.
- The family: one seed per model, untuned lr; DiP's seed spread at the same budget is the yardstick.
- Fig. 10b (DiT-only with 4x the tokens) is not run on the CPU: {fig10b}, more than this
  session had. `benchmarks/experiments_gpu.sh` runs it at 256 px /
  P = 16 / width 1152 (DiT-only/8 at 1,024 tokens against DiP/16 at 256, the paper's counts); no GPU
  has run it yet.
- Fig. 3 at DiP-XL/16's own patch (16 px, width 1152) needs a GPU: two CPU attempts at width 1152 drew
  noise from both models after 200 and 300 steps ([figures](experiments/fig3_cpu_attempts.json)). The
  version above is at the fair study's size, which the CPU trains.
"""
