"""High-level sampling: noise -> guided network -> velocity -> solver -> images in [-1, 1]."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from pixdiff.guidance import cfg
from pixdiff.objectives import Generators, Model, Objective, prior_std, randn
from pixdiff.solvers import Callback, Solver, ddim, ddpm_ancestral, euler, euler_maruyama, heun, odeint, shifted_grid

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


def balanced_labels(n: int, num_classes: int, *, device: torch.device | str = "cpu") -> Tensor:
    """(n,) labels cycling through the classes: N/num_classes each when n divides (the fair
    default of the evaluation protocol: 50 per class for 50k ImageNet samples)."""
    return torch.arange(n, device=device) % num_classes


def derive_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys, e.g. (run seed, image index) or
    (seed, step, sample): neighbouring keys give unrelated streams."""
    import numpy as np

    return int(np.random.SeedSequence([k & 0xFFFFFFFFFFFFFFFF for k in keys]).generate_state(2, np.uint64)[0] >> 1)
