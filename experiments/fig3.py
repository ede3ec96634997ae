"""Fig. 3 in the regime: single-image overfitting at 16 px patches, trained until DiP's PSNR is flat.

The photo of experiments.overfit (skimage's astronaut) at 128 px: 64 tokens of 16 x 16 px, each
768 values, into a DiT of width 256 (narrower than a patch, as in sections 3-6; 128 px and width
256 keep a step near 0.1 s of CPU, where 256 px at width 768 costs over 1 s). The objective is
x-prediction: under v-prediction a DiT-only model narrower than 768 cannot even express the target
(x - eps has full rank per patch, its output layer rank <= width), which would fail it for a reason
that is not the paper's. DiT-only and DiP (same backbone, seed, data order) train one step each in
turn; every `eval_every` steps both denoise the photo in one step from fixed noise at each t of
`eval_t`. Training stops when DiP's mean PSNR gained less than `flat_db` over the last
`flat_evals` evaluations (or at `steps`; the JSON says which). Measured at one thread: 0.11 s
(DiT-only) + 0.25 s (DiP) of CPU per round, so the 1,000-step cap costs ~6 min per seed. One job per seed writes
<out>/runs/seed<k>.json (resumable, `--shard K/M` as in experiments.regime); `--aggregate`
writes <out>/results.json and the plot.

    python -m experiments.fig3 [--scale cpu|pilot] [--shard K/M] [--aggregate]
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments import claims, common, measures, overfit
from experiments.page import PSNR_MARGIN_DB, img
from experiments.regime import OBJECTIVES, parse_shard
from pixdiff.recipe import Recipe, replace

NAME = "fig3"
VARIANTS = overfit.VARIANTS  # ("dit_only", "dip")


@dataclass(frozen=True)
class Scale:
    device: str
    image_size: int
    depth: int
    dim: int
    num_heads: int
    mlp_ratio: float
    unet_depth: int
    unet_width: int
    batch: int
    steps: int  # the most steps a seed may train
    min_steps: int
    lr: float
    warmup: int
    eval_every: int
    flat_evals: int
    flat_db: float
    eval_t: tuple[float, ...]
    seeds: tuple[int, ...]
    objective: str = "x"
    sample_steps: int = 50
    num_samples: int = 2
    seed: int = 0  # unused: each job sets its own (overfit.recipes reads the field)


SCALES = {
    "cpu": Scale(device="cpu", image_size=128, depth=4, dim=256, num_heads=4, mlp_ratio=4.0, unet_depth=4,
                 unet_width=16, batch=4, steps=1000, min_steps=300, lr=5e-4, warmup=20, eval_every=50, flat_evals=4,
                 flat_db=0.2, eval_t=(0.25, 0.5, 0.75), seeds=(0, 1, 2)),
    "gpu": Scale(device="cuda", image_size=256, depth=12, dim=768, num_heads=12, mlp_ratio=4.0, unet_depth=4,
                 unet_width=64, batch=32, steps=8000, min_steps=1000, lr=2e-4, warmup=100, eval_every=100,
                 flat_evals=5, flat_db=0.1, eval_t=(0.25, 0.5, 0.75), seeds=(0, 1, 2), objective="v",
                 sample_steps=100, num_samples=4),
    "pilot": Scale(device="cpu", image_size=64, depth=1, dim=32, num_heads=2, mlp_ratio=2.0, unet_depth=2,
                   unet_width=4, batch=2, steps=4, min_steps=2, lr=1e-3, warmup=1, eval_every=1, flat_evals=2,
                   flat_db=100.0, eval_t=(0.5,), seeds=(0, 1), sample_steps=2, num_samples=1),
}


def recipes(s: Scale, data_root: Path, cache_dir: Path, seed: int) -> dict[str, Recipe]:
    return {v: replace(r, **{"model.backbone.image_size": s.image_size, "objective": OBJECTIVES[s.objective],
                             "train.seed": seed})
            for v, r in overfit.recipes(s, data_root, cache_dir).items()}


def is_flat(psnr: list[float], evals: int, db: float) -> bool:
    """Whether the last `evals` evaluations gained less than `db` over the one before them."""
    return len(psnr) > evals and psnr[-1] - psnr[-1 - evals] < db


def run_job(s: Scale, seed: int, out: Path, work: Path, device: torch.device, log: common.Log) -> dict[str, Any]:
    from pixdiff.data.grid import make_grid, save_png
    from pixdiff.nn.summary import model_summary
    from pixdiff.train import Trainer

    data_root = overfit.prepare_photo(work / NAME)
    rs = recipes(s, data_root, work / NAME / "cache", seed)
    trainers = {}
    for v, r in rs.items():
        run_dir = work / NAME / "runs" / f"{v}-seed{seed}"
        shutil.rmtree(run_dir, ignore_errors=True)
        trainers[v] = Trainer(r, run_dir, common.dist_for(device), progress=False)
    cache = trainers["dip"].cache
    photo = cache.images[0].permute(1, 2, 0).numpy().copy()  # (H, W, 3) uint8: the training target
    x = cache.images[:1].to(device).float().div(127.5).sub(1.0)  # (1, 3, H, W)
    ts = torch.tensor(s.eval_t, device=device)
    eps = torch.randn((len(s.eval_t), *x.shape[1:]), generator=torch.Generator().manual_seed(12345)).to(device)
    curve: list[dict] = []
    cpu = {v: [] for v in VARIANTS}

    def evaluate(step: int) -> None:
        for v, tr in trainers.items():
            est = overfit.denoise(tr.net.model, rs[v].objective, x, eps, ts, device)  # (T, C, H, W)
            curve.append({"step": step, "variant": v, "psnr": {str(t): round(common.psnr(
                overfit.to_unit(est[i]), overfit.to_unit(x[0]), 1.0), 3) for i, t in enumerate(s.eval_t)}})

    def dip_mean() -> list[float]:
        return [float(np.mean(list(r["psnr"].values()))) for r in curve if r["variant"] == "dip"]

    evaluate(0)
    step, t0 = 0, time.perf_counter()
    while step < s.steps and not (step >= s.min_steps and is_flat(dip_mean(), s.flat_evals, s.flat_db)):
        for _ in range(s.eval_every):
            for v, tr in trainers.items():
                c0 = time.process_time()
                tr.step()
                cpu[v].append(time.process_time() - c0)
        step += s.eval_every
        evaluate(step)
    converged = is_flat(dip_mean(), s.flat_evals, s.flat_db)
    samples = {v: overfit.sample_images(tr.net.model, rs[v], s.num_samples, device) for v, tr in trainers.items()}
    save_png(make_grid(np.stack([photo] + [samples[v][0] for v in VARIANTS]), nrow=3),
             out / "runs" / f"seed{seed}.png")
    row = {
        "seed": seed, "steps": step, "converged": converged, "train_s": round(time.perf_counter() - t0, 1),
        "curve": curve,
        "results": {v: {
            "params": model_summary(rs[v].model)["params"], "params_head": model_summary(rs[v].model)["params_head"],
            "step_cpu_s": round(common.median(cpu[v][5:] or cpu[v]), 4),
            "denoise_psnr_final": [r for r in curve if r["variant"] == v][-1]["psnr"],
            "sample_psnr": round(float(np.mean([common.psnr(img, photo, 255.0) for img in samples[v]])), 3),
            "detail_ratio": round(measures.detail_ratio(samples[v], photo[None]), 4),
        } for v in VARIANTS},
        "figure": common.rel(out / "runs" / f"seed{seed}.png"),
    }
    common.write_json(out / "runs" / f"seed{seed}.json", row)
    for v in VARIANTS:
        shutil.rmtree(work / NAME / "runs" / f"{v}-seed{seed}", ignore_errors=True)
    log(f"seed {seed}: {step} steps (DiP flat: {converged}); final PSNR " + "; ".join(
        f"{v} {row['results'][v]['denoise_psnr_final']}" for v in VARIANTS))
    return row


def run(scale: str, out: Path, work: Path, *, threads: int | None = None, overrides: dict[str, Any] | None = None,
        shard: tuple[int, int] | None = (0, 1)) -> list[dict]:
    """Every unfinished seed of this shard (None: the seeds no other worker has claimed)."""
    s = dataclasses.replace(SCALES[scale], **(overrides or {}))
    device = common.configure(threads, s.device)
    log = common.Log(f"{NAME} {'queue' if shard is None else f'{shard[0]}/{shard[1]}'}")
    todo = [seed for i, seed in enumerate(s.seeds) if (shard is None or i % shard[1] == shard[0])
            and not (out / "runs" / f"seed{seed}.json").is_file()]
    log(f"scale={scale}: unfinished seeds: {todo}")
    return [run_job(s, seed, out, work, device, log) for seed in todo
            if shard is not None or claims.claim(work / NAME / "claims", f"seed{seed}")]


def aggregate(scale: str, out: Path, *, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    s = dataclasses.replace(SCALES[scale], **(overrides or {}))
    missing = [seed for seed in s.seeds if not (out / "runs" / f"seed{seed}.json").is_file()]
    if missing:
        raise SystemExit(f"error: seeds {missing} not done yet: run the shards first")
    rows = [json.loads((out / "runs" / f"seed{seed}.json").read_text()) for seed in s.seeds]
    results = {}
    for v in VARIANTS:
        per_seed = {f"denoise_psnr@{t}": [r["results"][v]["denoise_psnr_final"][str(t)] for r in rows] for t in s.eval_t}
        per_seed.update({k: [r["results"][v][k] for r in rows] for k in ("sample_psnr", "detail_ratio", "step_cpu_s")})
        results[v] = {"label": overfit.LABELS[v], "params": rows[0]["results"][v]["params"],
                      "params_head": rows[0]["results"][v]["params_head"], "per_seed": per_seed,
                      "spread": {k: measures.spread(x) for k, x in per_seed.items()}}
    report = {"experiment": NAME, "scale": scale, "config": dataclasses.asdict(s), "results": results,
              "seeds": [{k: r[k] for k in ("seed", "steps", "converged", "train_s", "figure")} for r in rows],
              "figures": {"psnr_vs_step": common.rel(plot(rows, s, out / "psnr_vs_step.png"))},
              "curves": {str(r["seed"]): r["curve"] for r in rows}, "command": common.command_line()}
    common.write_json(out / "results.json", report)
    return report


def plot(rows: list[dict], s: Scale, path: Path) -> Path:
    plt = common.matplotlib_pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    t = str(s.eval_t[len(s.eval_t) // 2])
    for r in rows:
        for v, color in (("dit_only", "tab:red"), ("dip", "tab:blue")):
            pts = [c for c in r["curve"] if c["variant"] == v]
            ax.plot([c["step"] for c in pts], [c["psnr"][t] for c in pts], color=color, alpha=0.8,
                    label=f"{overfit.LABELS[v].split(' (')[0]}, seed {r['seed']}")
    ax.set(xlabel="training step", ylabel=f"denoising PSNR at t = {t} (dB)", title="single-image overfitting, 16 px patches")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def section(r: dict) -> tuple[list[str], list[tuple[str, str, str]]]:
    """The page's lines for Fig. 3 in the regime and its verdicts (from results.json only)."""
    c, res = r["config"], r["results"]
    ts = [str(t) for t in c["eval_t"]]
    a, b = res["dit_only"], res["dip"]
    steps = ", ".join(f"seed {x['seed']}: {x['steps']}{'' if x['converged'] else ' (not flat: hit the cap)'}"
                      for x in r["seeds"])
    cell = lambda x, k, nd=2: (f"{x['spread'][k]['mean']:.{nd}f} ± {x['spread'][k]['std'] or 0:.{nd}f} ("  # noqa: E731
                               + ", ".join(f"{y:.{nd}f}" for y in x["per_seed"][k]) + ")")
    lines = [
        "## 2. Fig. 3 in the regime: single-image overfitting at 16 px patches, until DiP is flat", "",
        f"The astronaut photo at {c['image_size']} px ({(c['image_size'] // 16) ** 2} tokens of 768 values), DiT depth "
        f"{c['depth']}, width {c['dim']}; DiP adds the conv U-Net head (depth {c['unet_depth']}, width "
        f"{c['unet_width']}). Objective: {c['objective']}-prediction (under v-prediction a DiT-only narrower than 768 "
        f"cannot express its target). Batch {c['batch']}, lr {c['lr']}; stop when DiP's mean PSNR gains less than "
        f"{c['flat_db']} dB over {c['flat_evals']} evaluations ({c['eval_every']} steps apart), at least "
        f"{c['min_steps']}, at most {c['steps']} steps. Steps trained: {steps}.", "",
        "| | params | head params | CPU s / step | " + " | ".join(f"denoise PSNR t={t}" for t in ts)
        + " | sample PSNR | detail / photo's |", "|---|---:|---:|---:|" + "---:|" * len(ts) + "---:|---:|",
    ]
    for x in (a, b):
        lines.append(f"| {x['label']} | {x['params']:,} | {x['params_head']:,} | {cell(x, 'step_cpu_s', 3)} | "
                     + " | ".join(cell(x, f"denoise_psnr@{t}") for t in ts)
                     + f" | {cell(x, 'sample_psnr')} | {cell(x, 'detail_ratio')} |")
    lines += ["", "Cells: mean ± std over seeds (each seed's figure in brackets).", "",
              img(r["figures"]["psnr_vs_step"], "PSNR vs step, every seed"), ""]
    lines += [img(x["figure"], f"seed {x['seed']}: photo, DiT-only, DiP") for x in r["seeds"]] + [""]
    gaps = {t: b["spread"][f"denoise_psnr@{t}"]["mean"] - a["spread"][f"denoise_psnr@{t}"]["mean"] for t in ts}
    margin = {t: max(PSNR_MARGIN_DB, 2 * max(a["spread"][f"denoise_psnr@{t}"]["std"] or 0,
                                               b["spread"][f"denoise_psnr@{t}"]["std"] or 0)) for t in ts}
    ev = ", ".join(f"{gaps[t]:+.2f} dB at t={t} (margin {margin[t]:.2f})" for t in ts)
    status = ("reproduced" if all(gaps[t] > margin[t] for t in ts)
              else "not reproduced" if all(gaps[t] < -margin[t] for t in ts) else "partly or within noise")
    capped = [x["seed"] for x in r["seeds"] if not x["converged"]]
    ev += f"; DiP not flat at the {c['steps']}-step cap in seeds {capped}" if capped else "; DiP flat in every seed"
    return lines, [("Fig. 3 at 16 px patches: DiP denoises the photo better than DiT-only", status,
                    f"DiP - DiT-only: {ev}")]


def main(argv: list[str] | None = None) -> None:
    p = common.driver_parser(__doc__, NAME, SCALES, "--set steps=600 --set objective=v")
    common.add_queue_options(p, "seeds", "write the photo and its cache")
    a = p.parse_args(argv)
    out = a.out or common.results_dir(a.scale) / NAME
    overrides = common.parse_sets(a.set, SCALES[a.scale])
    if a.prepare:
        from pixdiff.data import prepare

        claims.clear(a.work / NAME / "claims")  # claims of an interrupted run: its unfinished seeds run again
        prepare(overfit.prepare_photo(a.work / NAME), a.work / NAME / "cache",
                dataclasses.replace(SCALES[a.scale], **overrides).image_size)
    elif a.aggregate:
        aggregate(a.scale, out, overrides=overrides)
    else:
        run(a.scale, out, a.work, threads=a.threads, overrides=overrides, shard=parse_shard(a.shard))


if __name__ == "__main__":
    main()
