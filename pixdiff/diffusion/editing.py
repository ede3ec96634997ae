"""Editing with any model, objective and solver: SDEdit (img2img), inpainting, deterministic
inversion, class edits and noise interpolation. Pure functions over a velocity f(x, t) (build it
with `sampling.guided_velocity`), a solver from `solvers.SOLVERS` and an explicit time grid.

Time runs from noise (t = 0) to data (t = 1), as everywhere in pixdiff. The user-facing knob is a
convention-free `strength` in [0, 1]: the fraction of the sampling grid that an edit re-runs.
`strength_grid(s, steps, shift)` is the tail of the sampling grid `shifted_grid(steps, shift)`
that starts at time_shift(1 - s): s = 0 is the single point t = 1 (the image itself, no network
call), s = 1 is the whole grid (plain sampling with the same noise).

The image is noised onto the objective's own path, x_t = alpha(t) x + sigma(t) eps. At t = 0 an
edit starts exactly where plain sampling starts, `prior_std(objective) * eps` (the same value on
the flow-matching paths; DDPM's alpha(0) is small but not 0, and its sampler ignores it).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor

from pixdiff.diffusion.objectives import (
    Generators,
    Schedule,
    broadcast_coefficients,
    from_velocity,
    from_x0,
    prior_std,
    randn,
    time_shift,
)
from pixdiff.diffusion.solvers import Solver, Velocity

FirstStep = Literal["mirror", "solver"]
STOCHASTIC = ("ddpm_ancestral", "euler_maruyama")  # solvers that draw noise: no inversion through them


def strength_grid(strength: float, steps: int, shift: float = 1.0, *, device=None,
                  dtype: torch.dtype = torch.float32) -> Tensor:
    """(n + 1,) times time_shift(1 - s + s k / n), k = 0..n, n = ceil(s * steps) (n = 0: just t = 1).

    strength 1 gives `shifted_grid(steps, shift)` bit for bit (same float64 arithmetic); the step
    count scales with the strength so that a partial edit has about the plain run's step size."""
    if not 0 <= strength <= 1:
        raise ValueError(f"strength must be in [0, 1], not {strength}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    n = math.ceil(round(strength * steps, 9))  # 0.3 * 10 is 3.0000000000000004: 3 steps, not 4
    u = torch.arange(n + 1, dtype=torch.float64) / max(n, 1)
    if strength < 1:  # (1 - s) + s may round away from 1: pin the data end
        u = torch.cat([(1 - strength) + strength * u[:-1], u.new_ones(1)])
    # a strength below the dtype's resolution near t = 1 rounds onto the data end: merge the repeats
    return torch.unique_consecutive(time_shift(u, shift).to(device=device, dtype=dtype))


def noised(schedule: Schedule, x: Tensor, eps: Tensor, t: float | Tensor) -> Tensor:
    """x (B, ...) moved onto the forward path at time t: alpha(t) x + sigma(t) eps; at t = 0 the
    sampler's start prior_std * eps (see the module docstring)."""
    t = torch.as_tensor(t, device=x.device).reshape(1)  # a grid's own dtype; a Python float as float32
    if float(t) == 0:
        return prior_std(schedule) * eps
    a, s, _, _ = broadcast_coefficients(schedule, t, x)
    return a * x + s * eps


def sdedit(f: Velocity, x: Tensor, eps: Tensor, ts: Tensor, *, schedule: Schedule, solver: Solver,
           generator: Generators = None, **options: Any) -> Tensor:
    """SDEdit (Meng et al.): noise x (B, C, H, W) to ts[0] with eps (B, C, H, W) ~ N(0, I), then
    solve along ts to ts[-1] = 1. A one-point grid (strength 0) returns x itself."""
    if len(ts) == 1:
        return x
    return solver(f, noised(schedule, x, eps, ts[0]), ts, schedule=schedule, generator=generator, **options)


def renoise(schedule: Schedule, x: Tensor, t: Tensor, s: Tensor, generator: Generators) -> Tensor:
    """A draw of the forward transition q(x_s | x_t) for s < t (towards noise):
    x_s = (alpha_s / alpha_t) x_t + sqrt(sigma_s^2 - (alpha_s sigma_t / alpha_t)^2) z."""
    a_t, s_t, _, _ = broadcast_coefficients(schedule, t.reshape(1), x)
    a_s, s_s, _, _ = broadcast_coefficients(schedule, s.reshape(1), x)
    r = a_s / a_t
    z = randn(x.shape, generator, device=x.device, dtype=x.dtype)
    return r * x + (s_s**2 - (r * s_t) ** 2).clamp_min(0).sqrt() * z


def repaint_schedule(steps: int, jumps: int, jump_length: int) -> list[int]:
    """The grid indices an inpainting run visits, in order (RePaint's schedule): forward one step
    at a time; on reaching an index divisible by `jump_length` (not the last), jump back
    `jump_length` steps `jumps` times before going on. jumps = 0: 0, 1, ..., steps."""
    if jumps < 0 or jump_length < 1:
        raise ValueError(f"jumps must be >= 0 and jump_length >= 1, not {jumps} and {jump_length}")
    path, done, i = [0], {}, 0
    while i < steps:
        i += 1
        path.append(i)
        if i < steps and i % jump_length == 0 and done.get(i, 0) < jumps:
            done[i] = done.get(i, 0) + 1
            i -= jump_length
            path.append(i)
    return path


def inpaint(f: Velocity, x: Tensor, mask: Tensor, ts: Tensor, *, schedule: Schedule, solver: Solver,
            generator: Generators = None, jumps: int = 0, jump_length: int = 1, **options: Any) -> Tensor:
    """Regenerate the pixels where mask (B or 1, 1 or C, H, W) is True; keep x (B, C, H, W) elsewhere.

    Starts from prior noise at ts[0] = 0. After every step the known pixels are replaced by a
    fresh draw of the forward path, alpha x + sigma z (RePaint, Lugmayr et al.), through the
    solver's callback (which may update the state in place; odeint calls it only at its end, so
    it cannot inpaint). With `jumps` the state is sent back `jump_length` steps (a fresh forward
    transition) that many times at every `jump_length`-th step, so that the regenerated pixels can
    adapt to the known ones; each forward run is one solver call (its last step is the solver's
    final one: deterministic, and Euler for heun). The result holds x exactly at the known pixels.
    """
    mask = mask.to(device=x.device, dtype=torch.bool).expand_as(x)
    state = prior_std(schedule) * randn(x.shape, generator, device=x.device, dtype=x.dtype)
    path = repaint_schedule(len(ts) - 1, jumps, jump_length)

    def keep_known(i: int, t: Tensor, state: Tensor) -> None:
        z = randn(x.shape, generator, device=x.device, dtype=x.dtype)
        state.copy_(torch.where(mask, state, noised(schedule, x, z, t)))

    runs = [0] + [k for k in range(1, len(path)) if path[k] < path[k - 1]] + [len(path)]
    for a, b in zip(runs[:-1], runs[1:]):  # the path's increasing runs, each after one jump back
        first, last = path[a], path[b - 1]
        if a > 0:
            state = renoise(schedule, state, ts[path[a - 1]], ts[first], generator)
        state = solver(f, state, ts[first:last + 1], schedule=schedule, generator=generator,
                       callback=keep_known, **options)
    return torch.where(mask, state, x)


def invert(f: Velocity, x: Tensor, ts: Tensor, *, solver: Solver, schedule: Schedule | None = None,
           first_step: FirstStep = "mirror", **options: Any) -> Tensor:
    """The probability-flow ODE backwards: x (B, ...) at ts[-1] (the data end) -> the state at
    ts[0] (t = 0: the noise that the same solver and grid map back to about x).

    The velocity of x-prediction (x0 - x_t)/(1 - t) and of VP paths is singular at t = 1, where
    inversion starts. first_step="mirror" takes the first step (from ts[-1] to ts[-2]) as Euler
    with the velocity at the step's far end, f(x, ts[-2]): the exact mirror image of the sampler's
    last step, which evaluates there too (DDIM inversion's approximation x_{t_-} ~ x_t, for one
    step). first_step="solver" hands the whole reversed grid to the solver (it evaluates f at
    ts[-1]: fine for velocity prediction at t = 1, not for x-prediction; or end the grid at
    1 - delta). docs/editing.md measures both.
    """
    rev = ts.flip(0)
    if len(rev) < 2:
        return x
    if first_step == "mirror":
        x = x + (rev[1] - rev[0]) * f(x, rev[1].expand(x.shape[0]))
        rev = rev[1:]
    elif first_step != "solver":
        raise ValueError(f"first_step must be 'mirror' or 'solver', not {first_step!r}")
    if len(rev) < 2:
        return x
    return solver(f, x, rev, schedule=schedule, **options)


def data_range(f: Velocity, schedule: Schedule, lo: float = -1.0, hi: float = 1.0) -> Velocity:
    """f with the x0 it implies clamped to the data range [lo, hi] (DDPM's clip_denoised, in velocity
    terms): v -> x0 (from_velocity) -> clamp -> the velocity of that x0 at the same x_t (from_x0).

    An identity wherever f's x0 already lies in the range. Inverting a trained x-prediction model
    needs it: walking the ODE backwards leaves the states the network saw in training, and there
    its x0 can explode (emoji_tiny after `make demo`: |x0| 1.7e4 at t = 0.18, NaN by t = 0.08,
    round-trip PSNR 2.4 dB at any step count; with the clamp 28-35 dB, docs/editing.md). Needs
    sigma(t) > 0, i.e. t < 1 on the flow paths (the mirror first step never evaluates at t = 1)."""

    def clipped(x: Tensor, t: Tensor) -> Tensor:
        x0 = from_velocity(schedule, f(x, t), x, t).x0.clamp(lo, hi)
        return from_x0(schedule, x0, x, t).velocity

    return clipped


def class_edit(f_src: Velocity, f_dst: Velocity, x: Tensor, ts: Tensor, *, solver: Solver, schedule: Schedule,
               first_step: FirstStep = "mirror", **options: Any) -> Tensor:
    """"Change the class, keep the layout": invert x with f_src (the source class) along ts, then
    solve the same grid forward with f_dst (the target class). ts from `strength_grid`: strength 1
    inverts to noise, less only to ts[0] and keeps more of x."""
    z = invert(f_src, x, ts, solver=solver, schedule=schedule, first_step=first_step, **options)
    return x if len(ts) == 1 else solver(f_dst, z, ts, schedule=schedule, **options)


def slerp(z0: Tensor, z1: Tensor, w: Tensor) -> Tensor:
    """Spherical interpolation of two noises (...) at weights w (K,) -> (K, ...): keeps the norm
    statistics of Gaussian noise, which a straight line between them does not (its midpoint has
    about 0.71 of the norm). Falls back to the straight line for (anti)parallel inputs."""
    a, b = z0.flatten().double(), z1.flatten().double()
    cos = (a @ b / (a.norm() * b.norm())).clamp(-1, 1)
    omega = torch.arccos(cos)
    w = w.to(torch.float64).reshape(-1, *([1] * z0.ndim))
    if torch.sin(omega).abs() < 1e-6:
        out = (1 - w) * z0.double() + w * z1.double()
    else:
        out = (torch.sin((1 - w) * omega) * z0.double() + torch.sin(w * omega) * z1.double()) / torch.sin(omega)
    return out.to(z0.dtype)
