"""docs/experiments.md from the finished arms' result.json and the sanity rows: every number on the
page is read from those files, and every verdict comes from `verdict` (ranges over seeds)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from experiments.scaffold import command_line, write_json
from experiments.studies import FAMILY, LAYOUT, OVERFIT_SIZES, PILOT_THRESHOLD, SIZES
from pixdiff.eval import ROWS

BETTER = {"PSNR to the image (dB)": "higher", "in-patch detail ratio": "one"}


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


def by_label(results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        out.setdefault(r["label"], []).append(r)
    return out


def sanity_table(rows: list[dict[str, Any]], n: int) -> str:
    lines = [f"| metric (N = {n} per side) | better | {' | '.join(ROWS)} | must detect | passes |",
             "|---" * (len(ROWS) + 4) + "|"]
    for r in rows:
        # rows added to the sanity set later are absent from older result files: shown as "-"
        cells = " | ".join(cell(r["scores"][row]) if row in r["scores"] else "-" for row in ROWS)
        lines.append(f"| {r['metric']} | {r['better']} | {cells} | {', '.join(r['must_detect'])} | "
                     f"{'yes' if r['passes'] else 'NO'} |")
    return "\n".join(lines)


def comparison(groups: dict[str, list[dict[str, Any]]], better: dict[str, str], a: str, b: str) -> str:
    """Per metric: each arm's mean [min, max] over seeds and the verdict of a against b."""
    lines = [f"| metric | better | {a} | {b} | {a} against {b} |", "|---|---|---|---|---|"]
    for metric, direction in better.items():
        va = [r["scores"][metric] for r in groups[a]]
        vb = [r["scores"][metric] for r in groups[b]]
        lines.append(f"| {metric} | {direction} | {cell(va)} | {cell(vb)} | {verdict(va, vb, direction)} |")
    lines.append(f"| final training loss | lower | {cell([r['final_loss'] for r in groups[a]])} | "
                 f"{cell([r['final_loss'] for r in groups[b]])} | (different heads: not comparable as a score) |")
    return "\n".join(lines)


def regime_table(results: dict[str, list[dict[str, Any]]], scale: str) -> str:
    z, o = SIZES[scale], OVERFIT_SIZES[scale]
    lines = ["| study | data | resolution | P | values per patch | tokens | width | blocks | arms x seeds | "
             "params | budget per arm | steps | train s per arm | sampler |", "|---" * 14 + "|"]
    shapes = {"fair": ("OpenMoji, 9 groups", z.image, z.patch, z.width, z.depth),
              "family": ("OpenMoji, 9 groups", z.image, z.patch, z.width, z.depth),
              "fig3": ("one photo", o.image, 16, o.width, o.depth),
              "fig10b": ("OpenMoji, 9 groups", z.image, z.patch // 2, z.width, z.depth)}
    for study, rs in results.items():
        if not rs:
            continue
        data, image, patch, width, depth = shapes[study]
        labels = by_label(rs)
        budget = f"{SIZES[scale].family_wall_s:.0f} s of training" if study == "family" else f"{rs[0]['steps']} steps"
        s = rs[0]["sampler"]
        sampler = f"{s['solver']} {s['steps']}, CFG {s['cfg_scale']:g} on {tuple(s['cfg_interval'])}"
        lines.append(
            f"| {study} | {data} | {image} px | {patch} | {3 * patch * patch} | {(image // patch) ** 2} | {width} | "
            f"{depth} | {len(labels)} x {max(len(v) for v in labels.values())} | "
            f"{min(r['params'] for r in rs) / 1e6:.2f}-{max(r['params'] for r in rs) / 1e6:.2f}M | {budget} | "
            f"{min(r['steps'] for r in rs)}-{max(r['steps'] for r in rs)} | "
            f"{min(r['train_s'] for r in rs):.0f}-{max(r['train_s'] for r in rs):.0f} | {sampler} |")
    return "\n".join(lines)


def family_table(results: list[dict[str, Any]], metrics: dict[str, str]) -> str:
    order = [label for label, _ in FAMILY]
    rs = sorted(results, key=lambda r: order.index(r["label"]))
    lines = [f"| model | params | steps in budget | train img/s | sample img/s | "
             f"{' | '.join(f'{m} ({d})' for m, d in metrics.items())} | samples |", "|---" * (6 + len(metrics)) + "|"]
    for r in rs:
        scores = " | ".join(f"{r['scores'][m]:.4g}" for m in metrics)
        lines.append(f"| {r['label']} | {r['params'] / 1e6:.2f}M | {r['steps']} | {r['train_img_per_s']:.1f} | "
                     f"{r['sample_img_per_s']:.2f} | {scores} | ![{r['label']}]({r['grid']}) |")
    return "\n".join(lines)


def grids(groups: dict[str, list[dict[str, Any]]]) -> str:
    return "\n".join(f"{label}, seed {r['seed']}:\n\n![{label} seed {r['seed']}]({r['grid']})\n"
                     for label, rs in groups.items() for r in rs)


def write(results: dict[str, list[dict[str, Any]]], scale: str, work: Path, page: Path) -> Path:
    sanity_files = sorted(work.glob("sanity-*.json"))
    sanity = json.loads(sanity_files[0].read_text()) if sanity_files else []
    metrics = {r["metric"]: r["better"] for r in sanity if r["passes"]}
    run = json.loads((work / "run.json").read_text()) if (work / "run.json").exists() else {}
    run = {"sittings": [], "pilots": [], **run}
    text = render(results=results, scale=scale, sanity=sanity, metrics=metrics, run=run, command=command_line())
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text)
    # everything the page was written from, beside its grids: the raw numbers travel with the page
    write_json(page.with_suffix("") / "results.json", {"scale": scale, "run": run, "sanity": sanity,
                                                        "results": results})
    return page


def sentence(groups: dict[str, list[dict[str, Any]]], metrics: dict[str, str], a: str, b: str) -> str:
    """The verdicts in words: which metrics separate a from b beyond the seeds' spread, and which do not."""
    found = {m: verdict([r["scores"][m] for r in groups[a]], [r["scores"][m] for r in groups[b]], d)
             for m, d in metrics.items()}
    said = [f"every {a} seed scores {v} than every {b} seed on {m}" for m, v in found.items() if v != "overlap"]
    same = [m for m, v in found.items() if v == "overlap"]
    parts = ["; ".join(said) if said else f"no metric separates {a} from {b} beyond the seeds' spread"]
    if said and same:
        parts.append(f"the seeds' ranges overlap on {', '.join(same)}")
    return ". ".join(p[0].upper() + p[1:] for p in parts) + "."


def render(*, results: dict[str, list[dict[str, Any]]], scale: str, sanity: list[dict[str, Any]],
           metrics: dict[str, str], run: dict[str, Any], command: str) -> str:
    z = SIZES[scale]
    wall = sum(s["wall_s"] for s in run["sittings"])
    arm_s = sum(r["train_s"] + r["sample_s"] for rs in results.values() for r in rs)
    env = next((r["environment"] for rs in results.values() for r in rs), {})
    out = [TITLE.format(command=command, wall=wall / 60, sittings=len(run["sittings"]), arm_s=arm_s / 60,
                        cpu=env.get("cpu", "?"), torch=env.get("torch", "?"), gpu=env.get("gpu")),
           "## The regime\n", REGIME.format(image=z.image, patch=z.patch, tokens=(z.image // z.patch) ** 2,
                                             values=3 * z.patch**2, width=z.width, batch=z.batch,
                                             sample_steps=z.sample_steps), regime_table(results, scale), "",
           "## Metrics and their sanity rows\n", SANITY.format(n=z.n_eval), sanity_table(sanity, z.n_eval), "",
           f"On the page: {', '.join(metrics) or 'none'}.\n"]
    fair = by_label(results.get("fair", []))
    if "DiP" in fair and "DiT-only" in fair:
        rows = next((r["scores"] for r in sanity if r["metric"] == LAYOUT), {"shuffled": [np.nan], "halves": [np.nan]})
        out += ["## DiT-only against DiP (fair regime, 3 seeds)\n",
                PILOT.format(history=pilot_history(run["pilots"]), threshold=PILOT_THRESHOLD, lo=min(rows["shuffled"]),
                             hi=max(rows["shuffled"]), half_lo=min(rows["halves"]), half_hi=max(rows["halves"])),
                comparison(fair, metrics, "DiP", "DiT-only"), "",
                "**Verdict.** " + sentence(fair, metrics, "DiP", "DiT-only"),
                "", "Samples (the first 36 of each arm's 300; 4 per class, rows of 9 = one per group):\n", grids(fair)]
    family = results.get("family", [])
    if family:
        out += ["## The family at one budget\n", FAMILY_TEXT.format(wall=SIZES[scale].family_wall_s),
                family_table(family, metrics), "", family_spread(fair, metrics), ""]
    fig3 = by_label(results.get("fig3", []))
    if "DiP" in fig3 and "DiT-only" in fig3:
        o = OVERFIT_SIZES[scale]
        out += ["## Fig. 3: overfitting one photo at 16 px patches\n",
                FIG3_TEXT.format(image=o.image, tokens=(o.image // 16) ** 2, width=o.width, depth=o.depth,
                                 steps=o.steps, batch=o.batch, n=o.n_eval, sample_steps=o.sample_steps),
                comparison(fig3, BETTER, "DiP", "DiT-only"), "",
                "**Verdict.** " + sentence(fig3, BETTER, "DiP", "DiT-only"),
                "", grids(fig3)]
    fig10b = results.get("fig10b", [])
    if fig10b and "DiP" in fair:
        groups = {"DiP": fair["DiP"], **by_label(fig10b)}
        small = fig10b[0]["label"]
        out += [f"## Fig. 10b: DiP against {small} (4x the tokens)\n", FIG10B_TEXT,
                comparison(groups, metrics, "DiP", small), "",
                "**Verdict.** " + sentence(groups, metrics, "DiP", small), "", grids(by_label(fig10b))]
    limits = LIMITS.format(image=z.image, tokens=(z.image // z.patch) ** 2, depth=z.depth, width=z.width,
                           steps=z.steps, batch=z.batch)
    out += [limits.rstrip("\n")] + ([] if fig3 else [FIG3_MISSING])
    return "\n".join(out) + "\n"


def pilot_history(pilots: list[dict[str, Any]]) -> str:
    """Every gate decision, in order: a failed pilot and what followed stay on the page."""
    said = []
    for p in pilots:
        twin = f" (DiT-only {p['dit_only_layout_accuracy']:.3f})" if "dit_only_layout_accuracy" in p else ""
        outcome = "passed" if p["passed"] else "below the bar, the run stopped"
        said.append(f"At {p['steps']:,} steps DiP scored {p['layout_accuracy']:.3f}{twin}: {outcome}"
                    + (f" ({p['note']})" if p.get("note") else "") + ".")
    return ("The gate's decisions. " + " ".join(said)) if said else "No pilot decision is recorded."


def family_spread(fair: dict[str, list[dict[str, Any]]], metrics: dict[str, str]) -> str:
    """The yardstick for the one-seed family table: how far DiP's own seeds spread in the fair study."""
    if "DiP" not in fair:
        return ""
    spread = ", ".join(f"{m} {min(v):.4g}-{max(v):.4g}" for m in metrics
                       for v in [[r["scores"][m] for r in fair["DiP"]]])
    return (f"One seed per model, so read a difference against seed noise: DiP's three seeds of the fair study "
            f"(same size, {SIZES_NOTE}) spread over {spread}. A gap smaller than that is not a ranking.")


SIZES_NOTE = "a step budget instead of a wall budget"

TITLE = """# Experiments: DiP's head in a fair regime, and the pixel-space family at one budget

Regenerate everything (resumable: rerun the command after an interruption; `experiments/README.md`
says how to shard it):

<!-- not run: about 2 hours on 2 CPU cores; tests/test_studies.py runs the same command at --scale smoke -->
```bash
python -m experiments.run_all
```

This page was written by `{command}` from the arms' `result.json` files (all of them, with the
sanity rows and the run record, in [experiments/results.json](experiments/results.json)). Wall time of the run:
{wall:.1f} min over {sittings} sitting(s) (the arms' own training + sampling time: {arm_s:.1f} worker-min,
two workers side by side with one torch thread each). Machine: {cpu}, torch {torch}, GPU: {gpu}.
"""

REGIME = """The question (paper, Sec. 3 and Table 2): does a DiT on large pixel patches need a local head
to render the detail inside each patch? The rule that makes the comparison fair: every backbone
is at least 1.5 x as wide as the 3 P² values of its patch, as DiP-XL/16 is (1152 = 1.5 x 768), and
sees at least 64 tokens. A narrower DiT-only model cannot even express a v-target (its per-token
output Linear has rank <= width < 3 P²) and would lose for a reason that is not the paper's.
DiP's side: its conv U-Net head reaches each patch's context through a bottleneck of at least
2/3 x the 3 P² values, as DiP-XL/16's head (512 channels for 768), and takes s_i at that
bottleneck only, as the paper's head (the project's every-stage FiLM injection is a separately
labelled variant). `experiments.scaffold.Arm` refuses an arm that breaks either side of the rule
(one line) unless it is labelled a contrast or variant; none is run here. At this scale: {image} px OpenMoji with P = {patch} ({tokens} tokens of
{values} values) and width {width} (>= 1.5 x {values}). At P = 8 that still probes the paper's
mechanism: an 8 x 8 patch of an emoji holds outlines, edges and colour steps that the DiT's
linear output must write value by value, while DiP's conv U-Net head renders them with shared
local filters.

"train s per arm" is each arm's own training clock: it grows with whatever else shared the
machine (at times a test-suite run or a probe beside the two workers), so compare step counts,
not seconds, across the fair arms. Same in every arm of a study: backbone, data order (seeded per
seed), optimiser (AdamW, lr 1e-3,
min(100, steps) warm-up steps, batch {batch}, EMA 0.995), class-balanced OpenMoji groups, and the
sampler: the paper's Euler with CFG 4.0 on t in (0.1, 1) (guidance interval), {sample_steps} steps
(the paper: 100).
Objective: the paper's flow matching (v-prediction, logit-normal t) for DiP and DiT-only; each
family member keeps its own (JiT: x-prediction; DeCo: frequency-aware flow matching).
"""

SANITY = """Each metric is checked at the N the arms use ({n} samples against {n} data images): 5 seeded
splits of OpenMoji into disjoint sets A and B score candidates against A: B itself (halves: the
metric's own noise at this N), a class-balanced draw of real images (balanced: what a perfect model
scores under the arms' class-balanced sampling; A has the data's class mix), B blurred (sigma 1,
0.7, 0.5 px), noised (std 25.5, 4, 2, 1 levels of 255), seamed (per-patch offsets, std 0.05) and
with B's labels shuffled. A degradation is detected when all its splits score worse than all halves
splits. A metric is on the page only if it detects what it is for: an image-quality metric the
gross blur and noise; grain every noise row, edge sharpness every blur row; the layout accuracy
(10-NN over A's labelled images in 8x8 block means, balanced over the 9 groups, chance 0.111)
shuffled labels, since it reads the class from coarse layout and is blind to pixel degradations by
design; the seam score seams. Read an arm's score against the balanced row, not the halves row
([metrics_sanity.md](metrics_sanity.md) has every row at this N).
"""

PILOT = """Pilot: DiP seed 0 and its DiT-only twin train first; seeds 1 and 2 start only if DiP's balanced
layout accuracy reaches {threshold}, set before the run (chance 0.111; shuffled labels score
{lo:.3f}-{hi:.3f} at this N; the data's own halves {half_lo:.3f}-{half_hi:.3f}). {history}

Cells: mean [min, max] over seeds 0, 1, 2. A difference counts only if the ranges do not overlap
(every DiP seed beats every DiT-only seed); with three seeds each, that is the only claim the
page makes. How to read the two detail metrics together: the in-patch detail ratio counts
high-frequency energy wherever it comes from, so residual sampling grain can lift a blurred
model's ratio towards 1; the FD term on log detail energy compares where that energy sits, block
by block, and its joint distribution with colour and layout.
"""

FAMILY_TEXT = """Every model on the fair study's backbone shape (PixelDiT one block fewer to pay for its pixel
transformer), its own head and objective, the same data, optimiser
and sampler, and the same {wall:.0f} s of training (so the step counts differ with each model's
cost). Parameters are matched to within 10% of DiP's. Training img/s is the
mean over the budget; sampling img/s includes CFG (two passes per step in the interval).
"""

FIG3_TEXT = """The paper's Fig. 3 overfits a DiT on one high-resolution image: the DiT-only model gets the
layout and colours but blurs textures and edges; a local head fixes it. Here: one photo
(scikit-image's astronaut, public domain, experiments/data/) at {image} px with 16 px patches
({tokens} tokens of 768 values) into a DiT of width {width} with {depth} blocks and DiP-XL/16's head
(4 stages, base width 64); the paper's objective; {steps} steps of batch {batch} for each (lr 5e-4,
EMA 0.9: a short run overfits, and a slow EMA would lag it); no guidance (one class). Each of {n}
samples drawn from fresh noise (Euler, {sample_steps} steps) is
scored against the photo: PSNR, and the in-patch detail ratio (1 = the photo's fine detail, below
1 blur).
"""

FIG3_MISSING = """- Fig. 3 (overfitting one photo at 16 px patches, width 1152) is not on this page: two attempts on
  the CPU drew noise from both models (PSNR 7.5-7.8 dB to the photo after 200 and 300 steps; losses
  still falling; [figures](experiments/fig3_cpu_attempts.json)). DiP's head at base width 64 costs
  1.1 s a step there, three times the 1-block DiT: memorising a photo is hours away on 2 cores.
  The GPU scale trains it (12 blocks, 2,000 steps, 3 seeds); no GPU has run it yet.
"""

FIG10B_TEXT = """The paper's Fig. 10b: at 512 px, DiP on 32 px patches keeps a margin over a DiT-only model on
16 px patches (four times the tokens). Here the same token ratio at this scale's resolution:
DiT-only on patches half as wide as DiP's, against the fair study's DiP arms (same seeds, width,
steps, sampler). Both sides are in the fair regime; the paper's DiP/32 (width 1152 for 3,072
values a patch) would not be.
"""

LIMITS = """## What would change the verdicts at full scale

- Scale: {image} px / {tokens} tokens / {depth} blocks of width {width} for {steps:,} steps of batch
  {batch} is far from 256 px / 256 tokens / 26 blocks of 1152 for 600 epochs of ImageNet. The fair
  rule keeps the mechanism (a per-token
  linear output against a local head at width >= 1.5 x a patch) but not the capacity or training
  length; at full length a DiT-only model has far more steps to learn in-patch detail.
- Data: 3,944 flat-colour vector emoji in 9 groups; ImageNet photos hold texture that emoji do not.
- One seed per family model; three per fair arm: differences inside the seed spread are not claimed.
- Fig. 10b (DiT-only with 4x the tokens) is not run on the CPU: 1,024 tokens would cost at least
  16x a 64-token step (an estimate, not measured: ~7 s here, 4 h for 2,000 steps).
  `benchmarks/experiments_gpu.sh` runs it, with the other studies, at 256 px /
  P = 16 / width 1152 (DiT-only/8 at 1,024 tokens against DiP/16 at 256, the paper's counts); no
  GPU has run it yet.
"""
