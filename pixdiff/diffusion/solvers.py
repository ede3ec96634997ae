"""Solvers: pure functions that integrate from noise (t ~ 0) to data (t = 1) over an explicit grid.

Every solver has the signature (k-diffusion style)

    solver(f, x, ts, *, schedule=None, generator=None, callback=None, **options) -> x

    f          f(x (B, ...), t (B,)) -> velocity dx/dt (B, ...); build it from a network with
               `objective.predict(model(x, t, y), x, t).velocity`
    x          (B, ...) the state at ts[0] (noise)
    ts         (T,) increasing times, ts[-1] = 1 for a full run; T - 1 steps (editing.invert passes
               decreasing grids, towards noise: euler, heun, ddim and odeint integrate either way)
    schedule   the objective (its alpha/sigma); needed by ddim, ddpm_ancestral and euler_maruyama,
               accepted and unused by the ODE solvers so that all take the same arguments
    generator  one torch.Generator or a list of B (one per sample, see `objectives.randn`)
    callback   callback(i, t, x) after step i with the new state x at time t = ts[i + 1]; it may
               update x in place and the solver continues from it (editing.inpaint does)

No solver evaluates f at the last grid point: the final step into ts[-1] is an Euler step (or the
DDIM/ancestral jump onto x0). The velocity is singular at t = 1 for VP schedules (sigma' = -inf)
and for x-prediction (division by 1 - t), and on the flow-matching path the Euler step from t into
1 lands exactly on the network's x0 prediction x_t + (1 - t) v. Count evaluations with NFECounter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
import torchdiffeq
from torch import Tensor

from pixdiff.diffusion.names import SOLVER_NAMES
from pixdiff.diffusion.objectives import (
    Generators,
    Prediction,
    Schedule,
    broadcast_coefficients,
    from_velocity,
    randn,
    time_shift,
)

Velocity = Callable[[Tensor, Tensor], Tensor]  # f(x (B, ...), t (B,)) -> dx/dt (B, ...)
# `meanflow` also passes r (B,): f(x, t, r=r) -> the average velocity over [t, r] (sampling.guided_velocity)
Callback = Callable[[int, Tensor, Tensor], None]  # (step i, t_{i+1} (0-d), x_{i+1} (B, ...))


class Solver(Protocol):
    """The solver signature (see the module docstring); solver-specific options are keywords."""

    def __call__(
        self, f: Velocity, x: Tensor, ts: Tensor, *, schedule: Schedule | None = None,
        generator: Generators = None, callback: Callback | None = None, **options: Any,
    ) -> Tensor: ...


def uniform_grid(steps: int, *, last_step: float = 0.0, device=None, dtype: torch.dtype = torch.float32) -> Tensor:
    """DiP's grid, linspace(0, 1 - 1/N, N) followed by 1.0: (N + 1,) points j/N for N steps. With
    `last_step` > 0, linspace(0, 1 - last_step, N) followed by 1.0: the final step has that length
    (PixNerd's sampler: 0.04 at N = 100)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    if not 0 <= last_step < 1:
        raise ValueError(f"last_step must be in [0, 1), not {last_step}")
    if not last_step:
        return (torch.arange(steps + 1, dtype=torch.float64) / steps).to(device=device, dtype=dtype)
    grid = torch.cat([torch.linspace(0, 1 - last_step, steps, dtype=torch.float64), torch.ones(1, dtype=torch.float64)])
    return grid.to(device=device, dtype=dtype)


def shifted_grid(steps: int, shift: float, *, last_step: float = 0.0, device=None,
                 dtype: torch.dtype = torch.float32) -> Tensor:
    """uniform_grid through `time_shift`; shift > 1 spends more of the steps near noise."""
    grid = uniform_grid(steps, last_step=last_step, dtype=torch.float64)
    return time_shift(grid, shift).to(device=device, dtype=dtype)


class NFECounter:
    """Wraps any callable and counts its calls: `f = NFECounter(f); solver(f, ...); f.nfe`."""

    def __init__(self, fn: Callable[..., Tensor]):
        self.fn = fn
        self.nfe = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor:
        self.nfe += 1
        return self.fn(*args, **kwargs)


def _at(t: Tensor, x: Tensor) -> Tensor:
    """A grid time (0-d) as the per-sample time vector (B,) that f and the network take."""
    return t.expand(x.shape[0])


def _noise(x: Tensor, generator: Generators) -> Tensor:
    return randn(x.shape, generator, device=x.device, dtype=x.dtype)


def _alpha_sigma(schedule: Schedule, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """alpha(t), sigma(t) at a grid time (0-d), as (1, 1, ..., 1) in x's dtype: the samples share t,
    so the schedule is evaluated once rather than per sample."""
    a, s, _, _ = broadcast_coefficients(schedule, t.reshape(1), x)
    return a, s


def _split(schedule: Schedule, v: Tensor, x: Tensor, t: Tensor) -> Prediction:
    """x0 and eps from the velocity at a grid time (0-d)."""
    return from_velocity(schedule, v, x, t.reshape(1))


def euler(
    f: Velocity, x: Tensor, ts: Tensor, *, schedule: Schedule | None = None,
    generator: Generators = None, callback: Callback | None = None,
) -> Tensor:
    """First order; one evaluation per step (DiP's sampler)."""
    for i in range(len(ts) - 1):
        x = x + (ts[i + 1] - ts[i]) * f(x, _at(ts[i], x))
        if callback is not None:
            callback(i, ts[i + 1], x)
    return x


def meanflow(
    f: Velocity, x: Tensor, ts: Tensor, *, schedule: Schedule | None = None,
    generator: Generators = None, callback: Callback | None = None,
) -> Tensor:
    """MeanFlow's few-step sampler: x_{i+1} = x_i + (t_{i+1} - t_i) u(x_i, t_i, r=t_{i+1}), one
    evaluation per step of a model trained with `objectives.MeanFlow` (1 step: noise to data)."""
    for i in range(len(ts) - 1):
        x = x + (ts[i + 1] - ts[i]) * f(x, _at(ts[i], x), r=_at(ts[i + 1], x))
        if callback is not None:
            callback(i, ts[i + 1], x)
    return x


def heun(
    f: Velocity, x: Tensor, ts: Tensor, *, schedule: Schedule | None = None,
    generator: Generators = None, callback: Callback | None = None,
) -> Tensor:
    """Second order (explicit trapezoid): 2 evaluations per step, 2(T-1) - 1 in all.

    The last step is plain Euler: its corrector would evaluate f at t = 1 (singular for VP and
    x-prediction, see the module docstring), and for a velocity smooth up to t = 1 one Euler step
    only adds a local O(h^2) error, so the global error stays O(h^2).
    """
    last = len(ts) - 2
    for i in range(last + 1):
        h = ts[i + 1] - ts[i]
        d = f(x, _at(ts[i], x))
        x_euler = x + h * d
        x = x_euler if i == last else x + 0.5 * h * (d + f(x_euler, _at(ts[i + 1], x)))
        if callback is not None:
            callback(i, ts[i + 1], x)
    return x


def ab2(
    f: Velocity, x: Tensor, ts: Tensor, *, schedule: Schedule | None = None,
    generator: Generators = None, callback: Callback | None = None,
) -> Tensor:
    """Two-step Adams-Bashforth with the constant coefficients of a uniform grid, one evaluation
    per step: an Euler first step, then x += h (3/2 d_i - 1/2 d_(i-1)). PixelDiT's sampler (its
    official "FlowDPMSolverSampler") as written: it keeps 3/2, -1/2 on a shifted grid too, where
    variable-step AB2 would weight by the step ratio; on the uniform grid the two are the same.
    """
    previous = None
    for i in range(len(ts) - 1):
        d = f(x, _at(ts[i], x))
        x = x + (ts[i + 1] - ts[i]) * (d if previous is None else 1.5 * d - 0.5 * previous)
        previous = d
        if callback is not None:
            callback(i, ts[i + 1], x)
    return x


def ddim(
    f: Velocity, x: Tensor, ts: Tensor, *, schedule: Schedule, eta: float = 0.0,
    generator: Generators = None, callback: Callback | None = None,
) -> Tensor:
    """DDIM (Song et al.) for any Gaussian path: from t to s > t,

        x_s = alpha_s x0 + sqrt(sigma_s^2 - c^2) eps + c z,
        c = eta * sigma_s * sqrt(1 - (alpha_t sigma_s / (alpha_s sigma_t))^2),

    with x0, eps recovered from the velocity. eta = 0 is deterministic; eta = 1 samples the exact
    posterior q(x_s | x_t, x0) at the predicted x0, i.e. DDPM ancestral sampling with the
    posterior variance beta_tilde. The step into t = 1 (sigma_s = 0) returns the x0 prediction.
    """
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        pred = _split(schedule, f(x, _at(t, x)), x, t)
        a_t, s_t = _alpha_sigma(schedule, t, x)
        a_s, s_s = _alpha_sigma(schedule, s, x)
        c = eta * s_s * (1 - (a_t * s_s / (a_s * s_t)) ** 2).clamp_min(0).sqrt()
        x = a_s * pred.x0 + (s_s**2 - c**2).clamp_min(0).sqrt() * pred.eps
        if eta > 0 and i < len(ts) - 2:
            x = x + c * _noise(x, generator)
        if callback is not None:
            callback(i, s, x)
    return x


def ddpm_ancestral(
    f: Velocity, x: Tensor, ts: Tensor, *, schedule: Schedule,
    generator: Generators = None, callback: Callback | None = None,
) -> Tensor:
    """DDPM ancestral sampling (Ho et al. Alg. 2) with the 'large' variance sigma^2 = beta_t.

    From t to s > t: the posterior mean of q(x_s | x_t, x0) at the predicted x0, plus noise with
    the forward transition variance sigma_t^2 - (alpha_t/alpha_s)^2 sigma_s^2 (beta_t for adjacent
    DDPM steps; on a VP path this is the exact reverse variance when the data has unit variance).
    The last step adds no noise, as in DDPM. For sigma^2 = beta_tilde use ddim(eta=1).
    """
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        pred = _split(schedule, f(x, _at(t, x)), x, t)
        a_t, s_t = _alpha_sigma(schedule, t, x)
        a_s, s_s = _alpha_sigma(schedule, s, x)
        r = a_t / a_s
        x = a_s * pred.x0 + (r * s_s**2 / s_t) * pred.eps
        if i < len(ts) - 2:
            x = x + (s_t**2 - (r * s_s) ** 2).clamp_min(0).sqrt() * _noise(x, generator)
        if callback is not None:
            callback(i, s, x)
    return x


def euler_maruyama(
    f: Velocity, x: Tensor, ts: Tensor, *, schedule: Schedule, noise_scale: float = 1.0,
    generator: Generators = None, callback: Callback | None = None,
) -> Tensor:
    """Euler-Maruyama on the SDE with the path's marginals (weak order 1):

        dx = [v - (g^2 / 2) E[eps | x] / sigma] dt + g dW,     g(t) = sqrt(noise_scale) sigma(t).

    Any g gives the same marginals as the ODE dx = v dt (the score is -E[eps | x]/sigma). This g
    is Langevin noise proportional to the current noise level: bounded, vanishing at the data end,
    unlike the time reversal of the forward SDE (g^2 = sigma^2 d/dt log SNR, infinite at t = 0 on
    the flow-matching path). noise_scale = 0 is Euler. The last step is a deterministic Euler step
    so that no fresh noise lands in the output.
    """
    for i in range(len(ts) - 1):
        t, h = ts[i], ts[i + 1] - ts[i]
        v = f(x, _at(t, x))
        if i == len(ts) - 2:
            x = x + h * v
        else:
            _, s_t = _alpha_sigma(schedule, t, x)
            eps = _split(schedule, v, x, t).eps
            drift = v - 0.5 * noise_scale * s_t * eps
            x = x + h * drift + (noise_scale * h) ** 0.5 * s_t * _noise(x, generator)
        if callback is not None:
            callback(i, ts[i + 1], x)
    return x


# torchdiffeq's methods by kind (its public API takes the name only; tests check the lists against it):
# fixed-grid methods step on a grid we hand them, adaptive ones are told to land on ts[-2].
FIXED_GRID_METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams",
                      "fixed_adams")
ADAPTIVE_METHODS = ("dopri8", "dopri5", "bosh3", "fehlberg2", "adaptive_heun")


def odeint(
    f: Velocity, x: Tensor, ts: Tensor, *, method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
    options: dict[str, Any] | None = None, schedule: Schedule | None = None,
    generator: Generators = None, callback: Callback | None = None,
) -> Tensor:
    """Any torchdiffeq method (adaptive dopri5 by default) from ts[0] to ts[-2], then an Euler step
    into ts[-1] (see the module docstring).

    Adaptive methods choose their own steps but are made to land exactly on ts[-2] (torchdiffeq
    otherwise steps past the end and interpolates, evaluating f beyond it, up to t >= 1); fixed-grid
    methods (euler, midpoint, rk4, ...) step on ts[:-1] unless `options` sets step_size. The
    callback runs for the last two grid points only; wrap f in NFECounter to count evaluations.
    `options` go to torchdiffeq. An adaptive step size is shared by the whole batch, so unlike
    the fixed-grid solvers its samples depend (slightly) on their batch-mates.
    """
    if len(ts) < 3:
        raise ValueError("odeint needs a grid of at least 3 points (an ODE part and the final step)")
    opts = dict(options or {})
    if method in FIXED_GRID_METHODS:
        if "step_size" not in opts:
            opts.setdefault("grid_constructor", lambda func, y0, t: ts[:-1].to(t))
    elif method in ADAPTIVE_METHODS:
        opts.setdefault("step_t", ts[-2:-1])

    def rhs(t: Tensor, y: Tensor) -> Tensor:  # torchdiffeq passes t as a 0-d tensor
        return f(y, _at(t.to(ts.dtype), y))

    x = torchdiffeq.odeint(rhs, x, ts[[0, -2]], rtol=rtol, atol=atol, method=method, options=opts)[-1]
    if callback is not None:
        callback(len(ts) - 3, ts[-2], x)
    x = x + (ts[-1] - ts[-2]) * f(x, _at(ts[-2], x))
    if callback is not None:
        callback(len(ts) - 2, ts[-1], x)
    return x


# The CLI takes a solver by name; `sample_images` also accepts any function with the Solver signature.
SOLVERS: dict[str, Solver] = {name: globals()[name] for name in SOLVER_NAMES}  # each name is its function's
