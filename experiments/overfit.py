"""Single-image overfitting (DiP paper, Fig. 3): can a DiT on 16x16 pixel patches render fine detail?

One real photo (scikit-image's bundled `astronaut`, public domain; ADM centre crop to 256x256) is
the whole training set. Two models with the same backbone, seed, data, objective (flow matching)
and number of steps are trained side by side, one step each in turn (so that a change in machine
load hits both alike):

    dit_only   the DiT with DiT's usual output layer (DiTFinalLayer)
    dip        the same DiT + the Patch Detailer Head (per-patch conv U-Net, post-hoc)

Every `eval_every` steps both are asked to denoise the photo from fixed noise at a few noise
levels t (t = 1 is data): x0_hat = objective.predict(model(x_t, t), x_t, t).x0, scored by PSNR
against the photo. At the end both sample the image from noise (Euler, no guidance: one class)
and the samples are scored by PSNR and by their high-frequency energy relative to the photo.

    python -m experiments.overfit                 # CPU size (the committed results)
    python -m experiments.overfit --scale gpu     # larger variant for one CUDA GPU (bf16 autocast)

Writes docs/experiments/overfit/{results.json, psnr_vs_step.png, crops.png, full.png}
(or docs/experiments_gpu/overfit/ for --scale gpu); run folders go to runs/experiments/.
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
from pixdiff.config.tree import to_dict
from pixdiff.diffusion.objectives import FlowMatching
from pixdiff.nn.backbone import DiTConfig
from pixdiff.nn.heads.final_layer import DiTFinalLayer
from pixdiff.nn.heads.unet import ConvUNet
from pixdiff.nn.model import ModelConfig
from pixdiff.recipe import DataConfig, Recipe, SampleConfig, TrainConfig, replace
from pixdiff.runtime.precision import autocast

NAME = "overfit"
VARIANTS = ("dit_only", "dip")
LABELS = {"dit_only": "DiT-only", "dip": "DiP (DiT + conv U-Net head)"}
# 64x64 regions of the 256x256 photo (top, left) shown zoomed x4: the face, the mission patch
CROPS = {"face": (14, 80), "patch": (160, 52)}
ZOOM = 4


@dataclass(frozen=True)
class Scale:
    device: str
    depth: int
    dim: int
    num_heads: int
    mlp_ratio: float
    unet_depth: int
    unet_width: int
    batch: int
    steps: int
    lr: float
    warmup: int
    eval_every: int
    eval_t: tuple[float, ...]
    sample_steps: int
    num_samples: int
    seed: int = 0


# dim >= 3*16*16 = 768 on purpose: with flow matching the network predicts the velocity x - eps,
# which must be able to cancel every one of the 768 noise dimensions of a 16x16 RGB patch. A
# DiT-only model narrower than 768 cannot (its output layer is Linear(dim -> 768), rank <= dim),
# so it would fail for a reason unrelated to the paper's (DiP-XL/16 has dim 1152 > 768).
SCALES = {
    "cpu": Scale(device="cpu", depth=3, dim=768, num_heads=12, mlp_ratio=2.0, unet_depth=4, unet_width=16,
                 batch=4, steps=400, lr=5e-4, warmup=20, eval_every=25, eval_t=(0.25, 0.5, 0.75),
                 sample_steps=50, num_samples=4),
    "gpu": Scale(device="cuda", depth=12, dim=768, num_heads=12, mlp_ratio=4.0, unet_depth=4, unet_width=64,
                 batch=32, steps=4000, lr=2e-4, warmup=100, eval_every=100, eval_t=(0.25, 0.5, 0.75),
                 sample_steps=100, num_samples=8),
}


# ----------------------------------------------------------------------------- data and recipes
def prepare_photo(work: Path) -> Path:
    """Write the astronaut as the one-class image folder <work>/astronaut/photo/astronaut.png."""
    import skimage.data
    from PIL import Image

    root = work / "astronaut"
    path = root / "photo" / "astronaut.png"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(skimage.data.astronaut()).save(path)  # 512x512; the cache centre-crops to 256
    return root


def recipes(s: Scale, data_root: Path, cache_dir: Path) -> dict[str, Recipe]:
    """The two recipes: identical but for the head."""
    backbone = DiTConfig(depth=s.depth, dim=s.dim, num_heads=s.num_heads, patch_size=16, image_size=256,
                         num_classes=1, mlp_ratio=s.mlp_ratio)
    dit_only = Recipe(
        name="overfit_dit_only",
        model=ModelConfig(backbone=backbone, head=DiTFinalLayer()),
        objective=FlowMatching(t_sampling="logit_normal", label_dropout=0.0),
        train=TrainConfig(global_batch=s.batch, max_steps=s.steps, lr=s.lr, warmup_steps=s.warmup, weight_decay=0.0,
                          grad_clip=1.0, ema_decays=(0.999,), precision="bf16", num_workers=0, seed=s.seed,
                          log_every=s.eval_every, ckpt_every=10**9, sample_every=0),
        data=DataConfig(source=str(data_root), cache_dir=str(cache_dir), flip=False),
        sample=SampleConfig(steps=s.sample_steps, solver="euler", cfg_scale=1.0, cfg_interval=(0.0, 1.0),
                            grid_images=s.num_samples),
    )
    dip = replace(dit_only, name="overfit_dip", **{"model.head": ConvUNet(depth=s.unet_depth, width=s.unet_width)})
    return {"dit_only": dit_only, "dip": dip}


# ----------------------------------------------------------------------------- measurements
@torch.no_grad()
def denoise(model: torch.nn.Module, objective: FlowMatching, x: torch.Tensor, eps: torch.Tensor,
            ts: torch.Tensor, device: torch.device) -> torch.Tensor:
    """One-step estimates x0_hat (T, C, H, W) in [-1, 1] of the photo x (1, C, H, W) from
    x_t = t x + (1 - t) eps at each t of ts (T,)."""
    x_t = ts[:, None, None, None] * x + (1 - ts[:, None, None, None]) * eps  # (T, C, H, W)
    y = torch.zeros(len(ts), dtype=torch.long, device=device)
    with autocast(device, "bf16"):
        out = model(x_t, ts, y)
    return objective.predict(out.float(), x_t, ts).x0.clamp(-1, 1)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    return (x.float() + 1) / 2  # [-1, 1] -> [0, 1]


@torch.no_grad()
def sample_images(model: torch.nn.Module, recipe: Recipe, n: int, device: torch.device) -> np.ndarray:
    """n samples uint8 (n, H, W, 3) from seeds 0..n-1 with the recipe's sampler settings."""
    from pixdiff.data.grid import to_uint8
    from pixdiff.generate import sample_recipe
    from pixdiff.runtime.rng import seed_generators

    y = torch.zeros(n, dtype=torch.long, device=device)
    with autocast(device, "bf16"):
        x = sample_recipe(model, recipe, y, seed_generators(range(n), device))
    return to_uint8(x)


# ----------------------------------------------------------------------------- figures
def _label_strip(text: str, width: int, height: int = 22) -> np.ndarray:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(img).text((4, 5), text, fill="black")
    return np.asarray(img)


def _tile_grid(rows: list[tuple[str, list[np.ndarray]]], cols: list[str], pad: int = 4) -> np.ndarray:
    """Rows of equally sized uint8 tiles with column titles on top and a caption above each row."""
    h, w, _ = rows[0][1][0].shape
    width = len(cols) * w + (len(cols) + 1) * pad
    parts = [np.concatenate([_label_strip(c, w + pad) for c in cols] + [_label_strip("", pad)], axis=1)[:, :width]]
    for caption, tiles in rows:
        parts.append(_label_strip(caption, width))
        line = [np.full((h, pad, 3), 255, np.uint8)]
        for t in tiles:
            line += [t, np.full((h, pad, 3), 255, np.uint8)]
        parts.append(np.concatenate(line, axis=1))
    parts.append(np.full((pad, width, 3), 255, np.uint8))
    return np.concatenate(parts, axis=0)


def crop_zoom(img: np.ndarray, where: tuple[int, int], size: int = 64) -> np.ndarray:
    top, left = where
    c = img[top:top + size, left:left + size]
    return c.repeat(ZOOM, axis=0).repeat(ZOOM, axis=1)


def save_figures(out: Path, photo: np.ndarray, samples: dict[str, np.ndarray], denoised: dict[str, np.ndarray],
                 t_show: float, curve: list[dict], eval_t: tuple[float, ...], losses: dict[str, list]) -> dict:
    from pixdiff.data.grid import save_png

    cols = ["photo (training image)"] + [LABELS[v] for v in VARIANTS]
    rows = []
    for name, where in CROPS.items():
        rows.append((f"{name}: 64x64 crop at (row, col) {where}, zoom x{ZOOM}, sample #0 drawn from noise",
                     [crop_zoom(photo, where)] + [crop_zoom(samples[v][0], where) for v in VARIANTS]))
    name, where = next(iter(CROPS.items()))
    rows.append((f"{name}: one-step denoised estimate x0_hat from x_t at t = {t_show} (fixed noise), zoom x{ZOOM}",
                 [crop_zoom(photo, where)] + [crop_zoom(denoised[v], where) for v in VARIANTS]))
    files = {"crops": save_png(_tile_grid(rows, cols), out / "crops.png")}
    files["full"] = save_png(_tile_grid([("full 256x256 image; sample #0", [photo] + [samples[v][0] for v in VARIANTS])],
                                        cols), out / "full.png")

    plt = common.matplotlib_pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    colors = {"dit_only": "tab:red", "dip": "tab:blue"}
    styles = ["-", "--", ":", "-."]
    for v in VARIANTS:
        rows_v = [r for r in curve if r["variant"] == v]
        for k, t in enumerate(eval_t):
            ax.plot([r["step"] for r in rows_v], [r["psnr"][str(t)] for r in rows_v], styles[k % 4],
                    color=colors[v], label=f"{LABELS[v].split(' (')[0]}, t={t}")
        ls = losses[v]
        ax2.plot([r[0] for r in ls], [r[1] for r in ls], color=colors[v], label=LABELS[v].split(" (")[0])
    ax.set(xlabel="training step", ylabel="denoising PSNR (dB)",
           title="one-step denoising of the photo (t = 1 is data)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax2.set(xlabel="training step", ylabel="flow-matching loss (interval mean)", title="training loss", yscale="log")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    files["psnr_vs_step"] = out / "psnr_vs_step.png"
    fig.savefig(files["psnr_vs_step"])
    plt.close(fig)
    return {k: common.rel(p) for k, p in files.items()}


# ----------------------------------------------------------------------------- driver
def run(scale: str, out: Path, work: Path, *, threads: int | None = None,
        overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    from pixdiff.nn.summary import model_summary
    from pixdiff.train import Trainer

    s = dataclasses.replace(SCALES[scale], **(overrides or {}))
    device = common.configure(threads, s.device)
    log = common.Log(NAME)
    t_start = time.perf_counter()
    work = work / NAME
    data_root = prepare_photo(work)
    rs = recipes(s, data_root, work / "cache")
    d = common.dist_for(device)
    trainers = {}
    for v, r in rs.items():
        run_dir = work / "runs" / v
        shutil.rmtree(run_dir, ignore_errors=True)  # our own scratch folder: a rerun starts afresh
        trainers[v] = Trainer(r, run_dir, d, progress=False)
    cache = trainers["dit_only"].cache
    photo_u8 = cache.images[0].permute(1, 2, 0).numpy().copy()  # (256, 256, 3) uint8: the exact training target
    x = cache.images[:1].to(device).float().div(127.5).sub(1.0)  # (1, 3, 256, 256) in [-1, 1]
    ts = torch.tensor(s.eval_t, device=device)
    g = torch.Generator().manual_seed(12345)
    eps = torch.randn((len(s.eval_t), *x.shape[1:]), generator=g).to(device)  # fixed evaluation noise
    objective = rs["dit_only"].objective
    summaries = {v: model_summary(r.model) for v, r in rs.items()}
    log(f"scale={scale} steps={s.steps} batch={s.batch} device={device} threads={torch.get_num_threads()}; "
        + ", ".join(f"{v}: {summaries[v]['params']:,} params" for v in VARIANTS))

    curve: list[dict] = []
    step_times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    losses: dict[str, list[tuple[int, float]]] = {v: [] for v in VARIANTS}
    window: dict[str, list[float]] = {v: [] for v in VARIANTS}

    def evaluate(step: int) -> None:
        for v, tr in trainers.items():
            est = denoise(tr.net.model, objective, x, eps, ts, device)
            p = {str(t): round(common.psnr(to_unit(est[i]), to_unit(x[0]), 1.0), 3) for i, t in enumerate(s.eval_t)}
            curve.append({"step": step, "variant": v, "psnr": p})
        common.flush_losses(window, losses, step)
        last = {v: curve[-len(VARIANTS) + i]["psnr"] for i, v in enumerate(VARIANTS)}
        log(f"step {step}: " + "; ".join(f"{v} " + " ".join(f"t={t}:{p}" for t, p in last[v].items()) for v in VARIANTS))

    evaluate(0)
    t_train = time.perf_counter()
    for step in range(1, s.steps + 1):
        common.train_round(trainers, device, step_times, window)
        if step % s.eval_every == 0 or step == s.steps:
            evaluate(step)
    train_s = time.perf_counter() - t_train

    log("sampling")
    samples, sample_s = {}, {}
    for v, tr in trainers.items():
        samples[v], sample_s[v] = common.timed(lambda: sample_images(tr.net.model, rs[v], s.num_samples, device), device)
    t_show = 0.5 if 0.5 in s.eval_t else s.eval_t[len(s.eval_t) // 2]
    i_show = list(s.eval_t).index(t_show)
    denoised = {}
    for v, tr in trainers.items():
        est = denoise(tr.net.model, objective, x, eps, ts, device)[i_show:i_show + 1]
        denoised[v] = ((est + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).cpu().numpy()

    hf_photo = common.high_frequency_energy(photo_u8)
    results: dict[str, Any] = {}
    warm = min(5, max(0, s.steps - 1))
    for v in VARIANTS:
        ps = [common.psnr(img, photo_u8, 255.0) for img in samples[v]]
        crops = {name: [common.psnr(img[t:t + 64, l:l + 64], photo_u8[t:t + 64, l:l + 64], 255.0)
                        for img in samples[v]] for name, (t, l) in CROPS.items()}
        final = [r for r in curve if r["variant"] == v][-1]["psnr"]
        results[v] = {
            "label": LABELS[v],
            "params": summaries[v]["params"],
            "params_head": summaries[v]["params_head"],
            "head": summaries[v]["head"],
            "gflops_per_forward": round(summaries[v]["gflops"], 3),
            "step_time_median_s": round(common.median(step_times[v][warm:]), 4),
            "sampling_s": round(sample_s[v], 2),
            "denoise_psnr_final": final,
            "sample_psnr": [round(p, 3) for p in ps],
            "sample_psnr_mean": round(float(np.mean(ps)), 3),
            "sample_crop_psnr_mean": {k: round(float(np.mean(c)), 3) for k, c in crops.items()},
            "sample_hf_energy_ratio": [round(common.high_frequency_energy(img) / hf_photo, 3) for img in samples[v]],
            "final_loss": losses[v][-1][1] if losses[v] else None,
        }
        results[v]["sample_hf_energy_ratio_mean"] = round(float(np.mean(results[v]["sample_hf_energy_ratio"])), 3)
    out.mkdir(parents=True, exist_ok=True)
    figures = save_figures(out, photo_u8, samples, denoised, t_show, curve, s.eval_t, losses)
    report = {
        "experiment": NAME,
        "scale": scale,
        "config": {**dataclasses.asdict(s), "image": "skimage.data.astronaut(), ADM centre crop 512 -> 256",
                   "patch_size": 16, "tokens": 256, "objective": "flow matching, v-prediction, logit-normal t",
                   "weights_evaluated": "live (not EMA) weights", "eval_noise_seed": 12345,
                   "sample_seeds": list(range(s.num_samples)), "crops": CROPS},
        "recipes": {v: to_dict(r) for v, r in rs.items()},
        "results": results,
        "curve": curve,
        "loss_curve": {v: losses[v] for v in VARIANTS},
        "figures": figures,
    }
    common.save_report(out, report, t_start=t_start, train_s=train_s, device=device)
    log(f"done in {report['wall_s']:.0f}s: " + "; ".join(
        f"{v} sample PSNR {results[v]['sample_psnr_mean']:.2f} dB, {results[v]['step_time_median_s']:.3f} s/step"
        for v in VARIANTS))
    return report


def main(argv: list[str] | None = None) -> None:
    a = common.driver_parser(__doc__, NAME, SCALES, "--set steps=100 --set lr=1e-3").parse_args(argv)
    out = a.out or common.results_dir(a.scale) / NAME
    run(a.scale, out, a.work, threads=a.threads, overrides=common.parse_sets(a.set, SCALES[a.scale]))


if __name__ == "__main__":
    main()
