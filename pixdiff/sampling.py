"""High-level sampling: noise -> guided network -> velocity -> solver -> images in [-1, 1]."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from pixdiff.guidance import cfg
from pixdiff.objectives import Generators, Model, Objective, prior_std, randn
from pixdiff.precision import DTYPES, Dtype, autocast
from pixdiff.solvers import Callback, Solver, ddim, ddpm_ancestral, euler, euler_maruyama, heun, odeint, shifted_grid

if TYPE_CHECKING:
    from pixdiff.recipe import Recipe

# The CLI takes a solver by name; `sample` also accepts any function with the Solver signature.
SOLVERS: dict[str, Solver] = {
    "euler": euler,
    "heun": heun,
    "ddim": ddim,
    "ddpm_ancestral": ddpm_ancestral,
    "euler_maruyama": euler_maruyama,
    "odeint": odeint,
}


def seed_generators(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per sample: image i depends on seeds[i] only (not on batch size or rank)."""
    return [torch.Generator(device).manual_seed(int(s)) for s in seeds]


@torch.no_grad()
def sample(
    model: Model, objective: Objective, y: Tensor, *, shape_chw: tuple[int, int, int], num_classes: int,
    steps: int = 100, solver: str | Solver = "euler", cfg_scale: float = 1.0,
    cfg_interval: tuple[float, float] = (0.1, 1.0), time_shift: float = 1.0, generators: Generators = None,
    callback: Callback | None = None, **solver_options: Any,
) -> Tensor:
    """Draw len(y) samples of class y (B,) -> (B, C, H, W) float32 in data space.

    Noise comes from `generators` (use `seed_generators` for per-sample reproducibility; the
    initial x, `prior_std(objective)` * N(0, I), and any solver noise are drawn per sample), on y's device. The grid is
    `shifted_grid(steps, time_shift)` (DiP: 100 Euler steps, no shift). Guidance follows
    `guidance.cfg`. The result is clamped to [-1, 1] once, at the end: intermediate states are
    left alone because clamping them would change the ODE. `solver_options` go to the solver
    (eta for ddim, noise_scale for euler_maruyama, method/rtol/atol for odeint).
    """
    if isinstance(solver, str) and solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {sorted(SOLVERS)} or pass a function")
    step = SOLVERS[solver] if isinstance(solver, str) else solver
    x = prior_std(objective) * randn((y.shape[0], *shape_chw), generators, device=y.device, dtype=torch.float32)
    ts = shifted_grid(steps, time_shift, device=y.device)
    net = cfg(model, cfg_scale, num_classes=num_classes, interval=cfg_interval)

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        return objective.predict(net(x, t, y), x, t).velocity

    x = step(velocity, x, ts, schedule=objective, generator=generators, callback=callback, **solver_options)
    return x.float().clamp(-1, 1)


def sample_recipe(model: Model, recipe: Recipe, labels: Tensor, generators: Generators, *,
                  callback: Callback | None = None, **overrides: Any) -> Tensor:
    """`sample` with the recipe's objective, image shape, class count and sampler settings
    (recipe.sample: steps, solver, cfg_scale, cfg_interval, time_shift), any of which `overrides`
    replaces, e.g. `sample_recipe(net, recipe, y, gens, steps=25)`."""
    sc = dataclasses.replace(recipe.sample, **overrides)
    bb = recipe.model.backbone
    return sample(model, recipe.objective, labels, shape_chw=(bb.channels, bb.image_size, bb.image_size),
                  num_classes=bb.num_classes, steps=sc.steps, solver=sc.solver, cfg_scale=sc.cfg_scale,
                  cfg_interval=sc.cfg_interval, time_shift=sc.time_shift, generators=generators, callback=callback)


class Network:
    """A model as the sampler calls it at a given precision: the fp32 solver state is cast to the
    weights' dtype (under bf16 autocast on CUDA) and the output back to fp32. Each call's batch is
    recorded (with CFG inside the interval: 2B), for the benchmark's FLOP count."""

    def __init__(self, net: Callable, device: torch.device, dtype: Dtype, cudagraphs: bool):
        self.net, self.device, self.dtype, self.cudagraphs = net, torch.device(device), dtype, cudagraphs
        self.batches: list[int] = []

    def __call__(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        if self.cudagraphs:
            # under CUDA graphs the next replay overwrites this call's output: mark the step and
            # hand back a copy, so a solver may keep it across calls (Heun does)
            torch.compiler.cudagraph_mark_step_begin()
        self.batches.append(x.shape[0])
        with autocast(self.device, self.dtype):
            out = self.net(x.to(DTYPES[self.dtype]), t, y)
        return out.float().clone() if self.cudagraphs else out.float()


CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")  # torch.compile modes that capture CUDA graphs


def default_compile_mode(device: torch.device | str) -> str:
    """CUDA graphs on CUDA (sampling at small batch is launch-bound); inductor's default on the CPU."""
    return "reduce-overhead" if torch.device(device).type == "cuda" else "default"


def inference_network(model: torch.nn.Module, *, dtype: Dtype = "fp32", compile: bool = False,
                      compile_mode: str | None = None) -> Network:
    """The sampling path of `pixdiff sample` and `pixdiff bench`: with "bf16" the model's parameters
    are converted to bf16 in place (buffers such as RoPE tables stay fp32; autocast would re-cast
    every fp32 weight on every forward); with `compile`, `torch.compile(mode, dynamic=False)`
    of the network alone (one graph per batch shape)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be 'bf16' or 'fp32', not {dtype!r}")
    device = next(model.parameters()).device
    if dtype == "bf16":
        for p in model.parameters():
            p.data = p.data.to(torch.bfloat16)
    mode = compile_mode or default_compile_mode(device)
    net = torch.compile(model, mode=mode, dynamic=False) if compile else model
    return Network(net, device, dtype, compile and device.type == "cuda" and mode in CUDAGRAPH_MODES)


def balanced_labels(n: int, num_classes: int, *, device: torch.device | str = "cpu") -> Tensor:
    """(n,) labels cycling through the classes: N/num_classes each when n divides (the fair
    default of the evaluation protocol: 50 per class for 50k ImageNet samples)."""
    return torch.arange(n, device=device) % num_classes


def derive_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys, e.g. (run seed, image index) or
    (seed, step, sample): neighbouring keys give unrelated streams."""
    import numpy as np

    return int(np.random.SeedSequence([k & 0xFFFFFFFFFFFFFFFF for k in keys]).generate_state(2, np.uint64)[0] >> 1)
