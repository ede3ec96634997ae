"""The bodies of `pixdiff edit | inpaint | invert | interpolate`: read images (and a mask), run
the pure functions of `pixdiff.diffusion.editing` with a run's model, objective and sampler
settings, write PNGs, a grid and meta.json. Image i's noise comes from the seed derived from
(seed, i), as in `pixdiff sample`. Bad input raises EditError (one line) before anything is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from pixdiff.data.grid import make_grid, save_png, to_uint8
from pixdiff.data.images import DataError, center_crop, open_image, resize_square, to_rgb
from pixdiff.diffusion import editing
from pixdiff.diffusion.objectives import prior_std, randn
from pixdiff.diffusion.sampling import guided_velocity, inference_network
from pixdiff.diffusion.solvers import SOLVERS, Velocity
from pixdiff.eval.pixels import psnr
from pixdiff.pipelines.generate import check_output
from pixdiff.recipe import Recipe, with_sampler
from pixdiff.runtime.atomic import atomic_write
from pixdiff.runtime.rng import derive_seed, seed_generators


class EditError(ValueError):
    pass


@dataclass(frozen=True)
class EditSession:
    """A loaded model and its resolved recipe: the sampler settings an edit uses are `recipe.sample`
    (with the command's overrides already applied by `open_session`)."""

    net: Any
    recipe: Recipe
    device: torch.device
    seed: int = 0

    @property
    def steps(self) -> int:
        return self.recipe.sample.steps

    @property
    def solver(self) -> str:
        return self.recipe.sample.solver

    @property
    def cfg_scale(self) -> float:
        return self.recipe.sample.cfg_scale

    @property
    def size(self) -> int:
        return self.recipe.model.backbone.image_size

    @property
    def num_classes(self) -> int:
        return self.recipe.model.backbone.num_classes

    def labels(self, cls: int | None, n: int) -> Tensor:
        """(n,) labels: `cls`, or the null class (unconditional) when None."""
        if cls is None:
            cls = self.num_classes
        elif not 0 <= cls < self.num_classes:
            raise EditError(f"--class must be in [0, {self.num_classes - 1}] for this model, not {cls}"
                            if self.num_classes else "this model is unconditional: it takes no --class")
        return torch.full((n,), cls, dtype=torch.long, device=self.device)

    def velocity(self, cls: int | None, n: int, cfg_scale: float | None = None) -> Velocity:
        sc = self.recipe.sample
        return guided_velocity(self.net, self.recipe.objective, self.labels(cls, n), num_classes=self.num_classes,
                               cfg_scale=self.cfg_scale if cfg_scale is None else cfg_scale,
                               cfg_interval=sc.cfg_interval)

    def grid(self, strength: float = 1.0) -> Tensor:
        return editing.strength_grid(strength, self.steps, self.recipe.sample.time_shift, device=self.device)

    def noise(self, n: int, offset: int = 0) -> tuple[Tensor, list[torch.Generator]]:
        """Image i's N(0, I) draw (n, C, H, W) and its generator (for any solver noise after it)."""
        gens = seed_generators([derive_seed(self.seed, offset + i) for i in range(n)], self.device)
        bb = self.recipe.model.backbone
        return randn((n, bb.channels, bb.image_size, bb.image_size), gens, device=self.device), gens

    def solve(self, name: str | None = None):
        return SOLVERS[name or self.solver]


def open_session(model: torch.nn.Module, recipe: Recipe, *, steps: int | None = None, solver: str | None = None,
                 cfg_scale: float | None = None, seed: int = 0, device: torch.device | str = "cpu") -> EditSession:
    """A session with the recipe's sampler settings, overridden through `with_sampler` as `pixdiff sample`'s are."""
    resolved = with_sampler(recipe, steps=steps, solver=solver, cfg_scale=cfg_scale)
    if resolved.sample.solver == "meanflow":
        # edits run the instantaneous-velocity ODE (inversion even backwards, r < t, never trained)
        raise EditError("edits integrate the velocity step by step; the meanflow solver jumps: pass --solver "
                        "euler or heun (a MeanFlow model at r = t is a plain velocity model)")
    return EditSession(inference_network(model), resolved, torch.device(device), seed)


# ----------------------------------------------------------------------------- files
def _open(path: Path) -> Image.Image:
    try:
        return open_image(path)  # a decompression bomb or an unreadable file: one line
    except DataError as e:
        raise EditError(str(e)) from None


def _fit(img: Image.Image, size: int) -> np.ndarray:
    """Square images are resized whole (as emoji are in training), others centre-cropped (ADM)."""
    return resize_square(img, size) if img.width == img.height else center_crop(img, size)


def read_images(paths: list[Path], size: int, channels: int = 3) -> Tensor:
    """Image files -> (N, 3, size, size) float32 in [-1, 1]."""
    if channels != 3:
        raise EditError(f"editing reads RGB images; this model has {channels} channels")
    arrays = np.stack([_fit(_open(p), size) for p in paths])  # (N, H, W, 3) uint8
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 127.5 - 1


def read_mask(path: Path, image: Path, size: int) -> Tensor:
    """A mask PNG -> (1, 1, size, size) bool, True = regenerate. It must have the image's size and
    hold only black (0, keep) and white (255, regenerate); it is fitted as the image is, nearest."""
    mask, img = _open(path), _open(image)
    if mask.size != img.size:
        raise EditError(f"mask {path} is {mask.width}x{mask.height} but image {image} is {img.width}x{img.height}")
    gray = np.asarray(to_rgb(mask).convert("L"))
    bad = np.setdiff1d(np.unique(gray), [0, 255])
    if bad.size:
        raise EditError(f"mask {path} must be black (keep) and white (regenerate) only; it also holds "
                        f"{bad.size} grey level(s), e.g. {int(bad[0])}")
    m = Image.fromarray(gray)
    if m.width == m.height:
        m = m.resize((size, size), Image.Resampling.NEAREST)
    else:  # the centre crop of `center_crop`, with nearest-neighbour resampling
        scale = size / min(m.size)
        m = m.resize((round(m.width * scale), round(m.height * scale)), Image.Resampling.NEAREST)
        left, top = (m.width - size) // 2, (m.height - size) // 2
        m = m.crop((left, top, left + size, top + size))
    out = torch.from_numpy(np.asarray(m) > 127)[None, None]
    if not out.any():
        raise EditError(f"mask {path} has no white (regenerate) pixel at {size}x{size}")
    return out


def write_results(out: Path, rows: list[Tensor], names: list[str], info: dict, *, nrow: int) -> Path:
    """out/<name>_<i>.png for every row's images, out/grid.png (the rows one under the other) and
    out/meta.json; rows are (N, C, H, W) in [-1, 1]."""
    out.mkdir(parents=True, exist_ok=True)
    images = [to_uint8(r) for r in rows]
    for name, batch in zip(names, images):
        for i, im in enumerate(batch):
            save_png(im, out / f"{name}_{i:04d}.png")
    size = images[0].shape[1]
    grid = save_png(make_grid(np.concatenate(images), nrow=nrow), out / "grid.png", scale=max(1, 128 // size))
    with atomic_write(out / "meta.json", text=True) as f:
        f.write(json.dumps(info, indent=2))
    return grid


# ----------------------------------------------------------------------------- commands
def _check_strength(strength: float) -> None:
    if not 0 <= strength <= 1:
        raise EditError(f"--strength must be in [0, 1], not {strength}")


@torch.no_grad()
def edit(job: EditSession, images: list[Path], out: Path, *, strength: float, cls: int | None,
         from_class: int | None = None) -> Path:
    """SDEdit at `strength` towards class `cls`; with `from_class`, a class edit: invert with
    from_class to the strength's time, then regenerate with `cls` (deterministic, no new noise)."""
    _check_strength(strength)
    x = read_images(images, job.size, job.recipe.model.backbone.channels).to(job.device)
    n, ts = len(x), job.grid(strength)
    f = job.velocity(cls, n)
    if from_class is None:
        eps, gens = job.noise(n)
        y = editing.sdedit(f, x, eps, ts, schedule=job.recipe.objective, solver=job.solve(), generator=gens)
    else:
        _deterministic(job.solver, "--from-class")
        # both halves start off the training distribution (an inverted state): x0 clamped to the
        # data range, as in `invert`, or a trained model's velocity explodes
        obj = job.recipe.objective
        f_src = editing.data_range(job.velocity(from_class, n, cfg_scale=1.0), obj)
        y = editing.class_edit(f_src, editing.data_range(f, obj), x, ts, solver=job.solve(), schedule=obj)
    info = {"command": "edit", "images": [str(p) for p in images], "strength": strength, "class": cls,
            "from_class": from_class, **_settings(job)}
    return write_results(out, [x, _drawn(y, "edit")], ["input", "edit"], info, nrow=n)


@torch.no_grad()
def inpaint(job: EditSession, image: Path, mask: Path, out: Path, *, cls: int | None, num: int = 1, jumps: int = 0,
            jump_length: int = 1) -> Path:
    """`num` inpaintings of one image where the mask is white."""
    if job.solver == "odeint":
        raise EditError("inpainting replaces known pixels after every step; odeint steps on its own: "
                        "choose another --solver")
    if num < 1 or jumps < 0 or jump_length < 1:
        raise EditError(f"--num and --jump-length must be >= 1 and --jumps >= 0, not {num}, {jump_length}, {jumps}")
    m = read_mask(mask, image, job.size).to(job.device)
    x = read_images([image], job.size, job.recipe.model.backbone.channels).to(job.device).expand(num, -1, -1, -1)
    _, gens = job.noise(num)
    y = editing.inpaint(job.velocity(cls, num), x, m, job.grid(), schedule=job.recipe.objective,
                        solver=job.solve(), generator=gens, jumps=jumps, jump_length=jump_length)
    shown = torch.where(m, torch.ones_like(x[:1]), x[:1])  # the input with the masked region white
    info = {"command": "inpaint", "image": str(image), "mask": str(mask), "class": cls, "jumps": jumps,
            "jump_length": jump_length, **_settings(job)}
    return write_results(out, [shown, _drawn(y, "inpaint")], ["masked", "inpaint"], info, nrow=num + 1)


@torch.no_grad()
def invert(job: EditSession, images: list[Path], out: Path, *, cls: int | None, first_step: str = "mirror",
           clip_x0: bool = True) -> dict:
    """Invert images to noise (out/noise.safetensors, key "noise", (N, C, H, W)) and map the noise
    back with the same solver and grid; returns meta.json's content with the round-trip PSNR.
    `clip_x0`: both ways, the velocity's x0 is clamped to the data range [-1, 1]
    (`editing.data_range`; without it a trained x-prediction model's inversion diverges)."""
    from safetensors.torch import save

    _deterministic(job.solver, "inversion")
    if first_step not in ("mirror", "solver"):
        raise EditError(f"--first-step must be 'mirror' or 'solver', not {first_step!r}")
    x = read_images(images, job.size, job.recipe.model.backbone.channels).to(job.device)
    f, ts, step = job.velocity(cls, len(x)), job.grid(), job.solve()
    if clip_x0:
        f = editing.data_range(f, job.recipe.objective)
    z = editing.invert(f, x, ts, solver=step, schedule=job.recipe.objective, first_step=first_step)
    hint = "" if clip_x0 else "without --no-clip-x0 the x0 clamp keeps a trained model's inversion finite"
    check_output(z / (3 * prior_std(job.recipe.objective)), "inversion (the noise)", hint)
    back = _drawn(step(f, z, ts, schedule=job.recipe.objective), "inversion (the round trip)", hint)
    scores = [psnr(a, b) for a, b in zip(to_uint8(x), to_uint8(back))]
    info = {"command": "invert", "images": [str(p) for p in images], "class": cls, "first_step": first_step,
            "clip_x0": clip_x0,
            "psnr_db": scores, "psnr_db_mean": float(np.mean(scores)), **_settings(job)}
    noise = z.float().cpu().contiguous()
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "noise.safetensors") as fh:
        fh.write(save({"noise": noise}, metadata={"meta": json.dumps(info)}))
    shown = (noise / (3 * prior_std(job.recipe.objective))).clamp(-1, 1)  # noise at 3 std = full scale
    write_results(out, [x, shown, back], ["input", "noise", "roundtrip"], info, nrow=len(x))
    return info


@torch.no_grad()
def interpolate(job: EditSession, out: Path, *, frames: int, cls: int | None, seeds: tuple[int, int] | None = None,
                images: list[Path] | None = None) -> Path:
    """`frames` images along the slerp between two noises: seeds' draws, or two images' inversions."""
    if frames < 2:
        raise EditError(f"--frames must be at least 2, not {frames}")
    ts = job.grid()
    if images:
        if len(images) != 2:
            raise EditError(f"interpolation takes two images, not {len(images)}")
        _deterministic(job.solver, "interpolating images (through their inversions)")
        x = read_images(images, job.size, job.recipe.model.backbone.channels).to(job.device)
        # x0 clamped to the data range, as `invert` does by default: unclamped, a trained model's
        # inversion diverges to NaN (black frames)
        f = editing.data_range(job.velocity(cls, 2), job.recipe.objective)
        ends = editing.invert(f, x, ts, solver=job.solve(), schedule=job.recipe.objective)
        check_output(ends / (3 * prior_std(job.recipe.objective)), "inverting the two images")
    else:
        a, b = seeds or (job.seed, job.seed + 1)
        # image 0 of `pixdiff sample --seed a` (and b) starts from this noise
        ends = prior_std(job.recipe.objective) * torch.cat([replace(job, seed=s).noise(1)[0] for s in (a, b)])
    z = editing.slerp(ends[0], ends[1], torch.linspace(0, 1, frames, device=job.device))
    gens = seed_generators([derive_seed(job.seed, i) for i in range(frames)], job.device)
    f = job.velocity(cls, frames)
    if images:
        # back with the clamp as well, as `invert`'s round trip: an image far from the training data
        # inverts to noise several prior stds wide, from which the unclamped ODE diverges to NaN
        f = editing.data_range(f, job.recipe.objective)
    y = job.solve()(f, z, ts, schedule=job.recipe.objective, generator=gens)
    info = {"command": "interpolate", "frames": frames, "class": cls, "seeds": list(seeds or ()),
            "images": [str(p) for p in images or ()], **_settings(job)}
    return write_results(out, [_drawn(y, "interpolation")], ["frame"], info, nrow=frames)


def _drawn(y: Tensor, what: str, hint: str = "") -> Tensor:
    """A result as written: checked (finite, not one flat colour), then clamped to [-1, 1]."""
    try:
        return check_output(y, what, hint).float().clamp(-1, 1)
    except ValueError as e:
        raise EditError(str(e)) from None


def _deterministic(solver: str, what: str) -> None:
    if solver in editing.STOCHASTIC:
        raise EditError(f"{what} runs the deterministic probability-flow ODE; --solver {solver} draws noise: "
                        f"choose euler, heun, ddim or odeint")


def _settings(job: EditSession) -> dict:
    return {"steps": job.steps, "solver": job.solver, "cfg_scale": job.cfg_scale, "seed": job.seed,
            "time_shift": job.recipe.sample.time_shift, "recipe": job.recipe.name}
