"""Editing measurements for docs/editing.md.

    python -m experiments.editing first-step            # closed form, CPU seconds
    python -m experiments.editing trained RUN [--num 8] [--device cuda] [--out docs]

`first-step`: the inversion's round-trip PSNR on data from N(0.3, 0.5^2) with the exact network, for
flow matching and x-prediction, euler and heun, and three ways to start at the data end (the
mirror step, the solver's own first step, a grid that ends at 1 - delta): a markdown table.
`trained`: on a trained run (e.g. emoji_tiny's), the round-trip PSNR of the first `num` training
images vs steps (10, 25, 50, 100) for euler and heun (docs/experiments/editing.json), and a
figure (docs/editing_figure.png): inputs, SDEdit at three strengths, a class edit, an inpainting
of the right half, a heun round trip, and an interpolation between the inversions of images 0 and 1.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from experiments.scaffold import DOCS, write_json
from pixdiff.data import make_grid, save_png, to_uint8
from pixdiff.diffusion import SOLVERS, FlowMatching, XPrediction, editing, gaussian_model, shifted_grid
from pixdiff.eval import psnr

STEPS = (10, 25, 50, 100)


def first_step_table(m: float = 0.3, s: float = 0.5) -> str:
    x = m + s * torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    rows = ["| objective | solver | start | " + " | ".join(f"N={n}" for n in STEPS) + " |",
            "|---|---|---|" + "---|" * len(STEPS)]
    for obj in (FlowMatching(), XPrediction()):
        model = gaussian_model(obj, torch.tensor(m), torch.tensor(s))

        def f(x, t, obj=obj, model=model):
            return obj.predict(model(x, t, None), x, t).velocity

        for solver in ("euler", "heun"):
            for start in ("mirror", "solver", "1 - 1e-3", "1 - 1e-2"):
                cells = []
                for n in STEPS:
                    ts = shifted_grid(n, 1.0, dtype=torch.float64)
                    t_in = ts.clone()
                    if start.startswith("1 - "):
                        t_in[-1] = 1 - float(start[4:])  # treat the image as the state at 1 - delta
                    z = editing.invert(f, x, t_in, solver=SOLVERS[solver], schedule=obj,
                                       first_step="mirror" if start == "mirror" else "solver")
                    db = psnr(SOLVERS[solver](f, z, ts, schedule=obj), x, peak=2.0)  # data in [-1, 1]
                    cells.append("nan" if math.isnan(db) else f"{db:.1f}")
                rows.append(f"| {type(obj).__name__} | {solver} | {start} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


@torch.no_grad()
def trained(run: Path, num: int, device: str, out: Path = DOCS) -> None:
    from pixdiff.checkpoints import load_model
    from pixdiff.data import prepare
    from pixdiff.pipelines import open_session

    dev = torch.device(device)
    model, recipe, _ = load_model(run, device=dev)
    dc = recipe.data
    cache = prepare(dc.source, dc.cache_dir, recipe.resolution, on_error=dc.on_error, small=dc.small)
    x = (cache.images[:num].float() / 127.5 - 1).to(dev)  # (num, 3, H, W)
    k = recipe.model.backbone.num_classes
    y = (cache.labels[:num] if k else torch.zeros(num, dtype=torch.long)).to(dev)  # k = 0: the null label
    job = open_session(model, recipe, solver="heun", device=dev)
    obj = recipe.objective

    def f(labels, cfg_scale=1.0, clip=False):
        from pixdiff.diffusion import guided_velocity

        v = guided_velocity(job.net, obj, labels, num_classes=k, cfg_scale=cfg_scale,
                            cfg_interval=recipe.sample.cfg_interval)
        return editing.data_range(v, obj) if clip else v

    table = {}
    for clip in (False, True):  # as the model is, and with x0 clamped to the data range (pixdiff invert's default)
        for solver in ("euler", "heun"):
            for n in STEPS:
                ts = editing.strength_grid(1.0, n, recipe.sample.time_shift, device=dev)
                z = editing.invert(f(y, clip=clip), x, ts, solver=SOLVERS[solver], schedule=obj)
                back = SOLVERS[solver](f(y, clip=clip), z, ts, schedule=obj).clamp(-1, 1)
                key = f"{solver}_{n}{'_clip_x0' if clip else ''}"
                table[key] = float(np.nanmean([psnr(a, b, 255.0) for a, b in zip(to_uint8(x), to_uint8(back))]))
                print(key, f"{table[key]:.2f} dB, noise std {float(z.std()):.3f}", flush=True)
    write_json(out / "experiments" / "editing.json", {"run": str(run), "images": num, "psnr_db": table})

    eps, gens = job.noise(num)
    rows = [x]
    for strength in (0.3, 0.6, 0.9):
        ts = editing.strength_grid(strength, recipe.sample.steps, recipe.sample.time_shift, device=dev)
        rows.append(editing.sdedit(f(y, job.cfg_scale), x, eps, ts, schedule=obj, solver=SOLVERS["heun"]))
    ts = editing.strength_grid(0.6, recipe.sample.steps, recipe.sample.time_shift, device=dev)
    rows.append(editing.class_edit(f(y, clip=True), f((y + 1) % max(k, 1), job.cfg_scale, clip=True), x, ts,
                                   solver=SOLVERS["heun"], schedule=obj))
    mask = torch.zeros(1, 1, *x.shape[2:], dtype=torch.bool, device=dev)
    mask[..., x.shape[-1] // 2:] = True
    full = job.grid()
    rows.append(editing.inpaint(f(y, job.cfg_scale), x, mask, full, schedule=obj, solver=SOLVERS["heun"],
                                generator=gens))
    z = editing.invert(f(y, clip=True), x, full, solver=SOLVERS["heun"], schedule=obj)
    rows.append(SOLVERS["heun"](f(y, clip=True), z, full, schedule=obj))
    frames = editing.slerp(z[0], z[1], torch.linspace(0, 1, num, device=dev))
    rows.append(SOLVERS["heun"](f(y[:1].expand(num), clip=True), frames, full, schedule=obj))
    images = np.concatenate([to_uint8(r.float().clamp(-1, 1)) for r in rows])
    save_png(make_grid(images, nrow=num), out / "editing_figure.png", scale=max(1, 64 // recipe.resolution))
    print("rows: input, SDEdit 0.3 / 0.6 / 0.9, class edit (label + 1) at 0.6, inpaint right half, "
          "heun round trip, interpolation 0 -> 1")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    sub.add_parser("first-step")
    t = sub.add_parser("trained")
    t.add_argument("run", type=Path)
    t.add_argument("--num", type=int, default=8)
    t.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    t.add_argument("--out", type=Path, default=DOCS, help="writes experiments/editing.json, editing_figure.png")
    a = p.parse_args()
    if a.what == "first-step":
        print(first_step_table())
    else:
        trained(a.run, a.num, a.device, a.out)


if __name__ == "__main__":
    main()
