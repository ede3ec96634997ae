"""Solvers against closed forms: Gaussian data x0 ~ N(mu, sd^2) per dimension and the exact network.

For such data the probability-flow ODE is affine per dimension and maps the t = 0 marginal
N(alpha_0 mu, alpha_0^2 sd^2 + sigma_0^2) onto N(mu, sd^2) by keeping the standardised value:
    x_1 = mu + sd (x_0 - alpha_0 mu) / sqrt(alpha_0^2 sd^2 + sigma_0^2).
All tests run in float64 so that discretisation error, not rounding, is what they measure.
"""

from __future__ import annotations

import math

import pytest
import torch

from pixdiff.diffusion.objectives import DDPM, FlowMatching, XPrediction, gaussian_model, time_shift
from pixdiff.diffusion.solvers import (
    ADAPTIVE_METHODS,
    FIXED_GRID_METHODS,
    NFECounter,
    ab2,
    ddim,
    ddpm_ancestral,
    euler,
    euler_maruyama,
    heun,
    odeint,
    shifted_grid,
    uniform_grid,
)

F64 = torch.float64
MU = torch.tensor([0.3, -0.5, 1.0, 0.0], dtype=F64).view(4, 1, 1)  # 4 dimensions as (C, H, W)
SD = torch.tensor([0.5, 1.0, 0.2, 1.5], dtype=F64).view(4, 1, 1)
OBJECTIVES = {
    "fm": FlowMatching(),
    "ddpm-linear": DDPM(),
    "ddpm-cosine": DDPM(beta_schedule="cosine"),
    "xpred": XPrediction(),
}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def velocity_field(obj, mu=MU, sd=SD):
    net = gaussian_model(obj, mu, sd)
    return lambda x, t: obj.predict(net(x, t, None), x, t).velocity


def start_moments(obj, ts):
    """Mean and std (4, 1, 1) of the exact marginal at ts[0]."""
    a, s, _, _ = (c.item() for c in obj.coefficients(ts[:1]))
    return a * MU, torch.sqrt(a * a * SD * SD + s * s)


def exact_endpoint(obj, x0):
    ts = torch.zeros(1, dtype=F64)
    m, s = start_moments(obj, ts)
    return MU + SD * (x0 - m) / s


# ------------------------------------------------------------------ grids
def test_uniform_grid_is_dips_grid():
    for n in (1, 7, 100):
        dip = torch.cat([torch.linspace(0, 1 - 1 / n, n, dtype=F64), torch.ones(1, dtype=F64)])
        grid = uniform_grid(n, dtype=F64)
        assert grid.shape == (n + 1,) and torch.allclose(grid, dip, atol=1e-15)
    assert uniform_grid(100).dtype == torch.float32
    with pytest.raises(ValueError):
        uniform_grid(0)


def test_shifted_grid_spends_more_steps_near_noise():
    base, shifted = uniform_grid(50, dtype=F64), shifted_grid(50, 3.0, dtype=F64)
    assert shifted[0] == 0 and shifted[-1] == 1 and (shifted.diff() > 0).all()
    assert (shifted[1:-1] < base[1:-1]).all()  # shift > 1: every inner point moves towards noise
    assert torch.equal(shifted_grid(50, 1.0, dtype=F64), base)


# ------------------------------------------------------------------ deterministic solvers: exact affine maps
# With the exact network, f(x, t) is affine in x per dimension, so a deterministic solver is an
# affine map x_1 = A + B x_0 per dimension. Two probes (x = 0 and x = 1, in one batch so that an
# adaptive solver takes the same steps for both) give A and B exactly, and the output distribution
# is N(A + B m0, (B s0)^2) for the start marginal N(m0, s0^2): no sampling error at all, so the
# tolerances are the discretisation error alone, C h^p with h = 1/steps and p the solver's order.
# The error constants measured for these (mu, sd) are <= 2.4 for the first-order solvers (we use
# C = 3) and, for Heun, <= 2 on the flow-matching path but ~18 on the linear VP path, whose
# sigma ~ sqrt(1 - t) bends hard near data (we use C = 30). odeint's error is its rtol plus the
# O(h^2) of its final Euler step.
DETERMINISTIC = [  # (name, solver, options, steps, tolerance)
    ("euler", euler, {}, 1000, 3e-3),
    ("ddim", ddim, {"eta": 0.0}, 1000, 3e-3),
    ("heun", heun, {}, 400, 30 / 400**2),
    ("ab2", ab2, {}, 400, 30 / 400**2),
    ("dopri5", odeint, {"rtol": 1e-7, "atol": 1e-7}, 1000, 2e-5),
]


@pytest.mark.parametrize("objective", OBJECTIVES, ids=list(OBJECTIVES))
@pytest.mark.parametrize("name,solver,options,steps,tol", DETERMINISTIC, ids=[d[0] for d in DETERMINISTIC])
def test_deterministic_solvers_recover_gaussian_data(objective, name, solver, options, steps, tol):
    obj = OBJECTIVES[objective]
    ts = uniform_grid(steps, dtype=F64)
    probes = torch.stack([torch.zeros(4, 1, 1, dtype=F64), torch.ones(4, 1, 1, dtype=F64)])
    out = solver(velocity_field(obj), probes, ts, schedule=obj, **options)
    a, b = out[0], out[1] - out[0]
    m0, s0 = start_moments(obj, ts)
    assert (a + b * m0 - MU).abs().max() < tol
    assert ((b * s0).abs() - SD).abs().max() < tol


# ------------------------------------------------------------------ stochastic solvers: Monte Carlo
# n draws per dimension: the sample mean has standard error sd/sqrt(n), the sample std
# sd/sqrt(2n); 5 standard errors. On top, the discretisation bias of these weak-order-1 schemes:
# the exact linear-Gaussian recursion of each gives |bias of std| <= 3.2 h for these (mu, sd), we
# allow 4 h. The mean is preserved exactly by the DDIM/ancestral updates (posterior means are
# linear in x); Euler-Maruyama's mean has the same O(h) bias as Euler's.
# Each of the B = 64 samples carries 120 independent draws per dimension (as its H axis; the
# exact network acts per element), in float32 and in 4 independent chunks: tensors stay below
# torch's parallel grain size (32768 elements), as OpenMP threads crawl on a busy 2-core machine.
STOCHASTIC = [  # ancestral sampling with sigma^2 = beta_t keeps the marginals only on a VP path
    (objective, name, solver, options)
    for objective in ("fm", "ddpm-linear", "xpred")
    for name, solver, options in [
        ("ddim-eta1", ddim, {"eta": 1.0}),
        ("ancestral", ddpm_ancestral, {}),
        ("euler-maruyama", euler_maruyama, {}),
        ("euler-maruyama-x3", euler_maruyama, {"noise_scale": 3.0}),
    ]
    if name != "ancestral" or objective == "ddpm-linear"
]


def _monte_carlo(obj, solver, steps, std=SD, **options) -> torch.Tensor:
    """(4, n) final draws per dimension, started from the exact marginal at t = 0."""
    ts = uniform_grid(steps)
    a, s, _, _ = (c.item() for c in obj.coefficients(ts[:1]))
    f = velocity_field(obj, MU, std)
    out = []
    for chunk in range(4):
        noise = torch.randn(64, 4, 120, 1, generator=gen(chunk))
        x = (a * MU + (a * a * std * std + s * s).sqrt() * noise).float()
        out.append(solver(f, x, ts, schedule=obj, generator=gen(100 + chunk), **options))
    return torch.cat(out).transpose(0, 1).reshape(4, -1).double()


@pytest.mark.parametrize("objective,name,solver,options", STOCHASTIC, ids=[f"{s[1]}-{s[0]}" for s in STOCHASTIC])
def test_stochastic_solvers_recover_gaussian_data(objective, name, solver, options):
    steps = 200
    out = _monte_carlo(OBJECTIVES[objective], solver, steps, **options)
    n, mu, sd, bias = out.shape[1], MU.flatten(), SD.flatten(), 4 / steps
    assert ((out.mean(1) - mu).abs() < bias + 5 * sd / math.sqrt(n)).all()
    assert ((out.std(1) - sd).abs() < bias + 5 * sd / math.sqrt(2 * n)).all()


def test_ancestral_is_exact_for_unit_variance_data_on_a_vp_path():
    """Ho et al.: sigma^2 = beta_t is the true reverse variance when the data has unit variance,
    so even 20 coarse steps keep the marginals, apart from the noise-free last step, which leaves
    the variance short by 1 - alpha(t_{N-1})^2 (~0.01 at N = 20)."""
    obj = DDPM()
    out = _monte_carlo(obj, ddpm_ancestral, 20, std=torch.ones_like(SD))
    n, std = out.shape[1], obj.coefficients(uniform_grid(20)[-2:-1])[0].item()  # sqrt(1 - (1 - alpha^2))
    assert ((out.mean(1) - MU.flatten()).abs() < 5 / math.sqrt(n)).all()
    assert ((out.std(1) - std).abs() < 5 / math.sqrt(2 * n)).all()


# ------------------------------------------------------------------ orders of accuracy
def _final_errors(obj, solver, steps_list):
    x0 = torch.randn(64, 4, 1, 1, generator=gen(0), dtype=F64)
    exact = exact_endpoint(obj, x0)
    f = velocity_field(obj)
    return [(solver(f, x0, uniform_grid(n, dtype=F64)) - exact).abs().max().item() for n in steps_list]


@pytest.mark.parametrize(
    "objective,solver,steps,low,high",
    [
        ("fm", euler, (16, 32, 64), 1.7, 2.3),
        ("ddpm-linear", euler, (32, 64, 128), 1.7, 2.3),
        ("fm", heun, (8, 16, 32), 3.3, 4.7),
        ("ddpm-linear", heun, (64, 128, 256), 3.3, 4.7),
    ],
    ids=["euler-fm", "euler-ddpm", "heun-fm", "heun-ddpm"],
)
def test_halving_the_step_shrinks_the_error_by_2_to_the_order(objective, solver, steps, low, high):
    errors = _final_errors(OBJECTIVES[objective], solver, steps)
    ratios = [errors[i] / errors[i + 1] for i in range(len(errors) - 1)]
    assert all(low < r < high for r in ratios), ratios


@pytest.mark.parametrize("objective,tol", [("fm", 2e-6), ("ddpm-cosine", 2e-5)])
def test_dopri5_agrees_with_a_fine_heun_run(objective, tol):
    # both end with the same Euler step into t = 1; Heun's global error at 2000 steps is ~2e-6 on
    # the flow-matching path and ~1e-5 on the VP path (sigma ~ sqrt(1 - t) bends hard near data)
    obj = OBJECTIVES[objective]
    ts = uniform_grid(2000, dtype=F64)
    x0 = torch.randn(16, 4, 1, 1, generator=gen(0), dtype=F64)
    f = NFECounter(velocity_field(obj))
    fine = heun(f, x0, ts)
    assert f.nfe == 2 * 2000 - 1  # no corrector evaluation on the last step
    f.nfe = 0
    adaptive = odeint(f, x0, ts, rtol=1e-8, atol=1e-8)
    assert (adaptive - fine).abs().max() < tol
    assert 0 < f.nfe < 400  # adaptive steps, far fewer than Heun's 3999


# ------------------------------------------------------------------ discrete samplers
def _alpha_bar_at_knots(obj: DDPM) -> torch.Tensor:
    betas = torch.linspace(obj.beta_start, obj.beta_end, obj.num_steps, dtype=F64)
    return torch.cumprod(1 - betas, 0)


def _toy_eps_network(x, t, y):
    return torch.tanh(x) * (1 + t.view(-1, 1, 1, 1)) - 0.3 * x


@pytest.mark.parametrize("eta", [0.0, 1.0, 0.5])
def test_ddim_on_ddpm_knots_is_textbook_ddim(eta):
    """Every 100th DDPM step, as in Song et al. (eq. 12, 16):
    x_prev = sqrt(ab_prev) x0 + sqrt(1 - ab_prev - s^2) eps + s z,
    s = eta sqrt((1 - ab_prev)/(1 - ab)) sqrt(1 - ab/ab_prev), with x0 from eps."""
    obj = DDPM()
    ab = _alpha_bar_at_knots(obj)
    ks = list(range(999, -1, -100))  # 999, 899, ..., 99
    ts = torch.tensor([1 - (k + 1) / 1000 for k in ks] + [1.0], dtype=F64)
    x = torch.randn(4, 3, 2, 2, generator=gen(0), dtype=F64)
    f = lambda x, t: obj.predict(_toy_eps_network(x, t, None), x, t).velocity  # noqa: E731
    ours = ddim(f, x, ts, schedule=obj, eta=eta, generator=gen(1))
    ref, g = x, gen(1)
    for i, k in enumerate(ks):
        eps = _toy_eps_network(ref, ts[i].expand(4), None)
        x0 = (ref - (1 - ab[k]).sqrt() * eps) / ab[k].sqrt()
        ab_prev = ab[ks[i + 1]] if i + 1 < len(ks) else torch.tensor(1.0, dtype=F64)
        s = eta * ((1 - ab_prev) / (1 - ab[k]) * (1 - ab[k] / ab_prev)).sqrt()
        ref = ab_prev.sqrt() * x0 + (1 - ab_prev - s**2).sqrt() * eps
        if eta > 0 and i + 1 < len(ks):
            ref = ref + s * torch.randn(ref.shape, generator=g, dtype=F64)
    assert torch.allclose(ours, ref, atol=1e-9)


def test_ancestral_on_ddpm_knots_is_ho_et_al_algorithm_2():
    """The last 30 DDPM steps: x_{k-1} = (x_k - beta_k / sqrt(1 - ab_k) eps) / sqrt(1 - beta_k) + sqrt(beta_k) z."""
    obj = DDPM()
    ab = _alpha_bar_at_knots(obj)
    betas = torch.linspace(obj.beta_start, obj.beta_end, 1000, dtype=F64)
    ks = list(range(29, -1, -1))
    ts = torch.tensor([1 - (k + 1) / 1000 for k in ks] + [1.0], dtype=F64)
    x = torch.randn(4, 3, 2, 2, generator=gen(0), dtype=F64)
    ours = ddpm_ancestral(lambda x, t: obj.predict(_toy_eps_network(x, t, None), x, t).velocity,
                          x, ts, schedule=obj, generator=gen(1))
    ref, g = x, gen(1)
    for i, k in enumerate(ks):
        eps = _toy_eps_network(ref, ts[i].expand(4), None)
        ref = (ref - betas[k] / (1 - ab[k]).sqrt() * eps) / (1 - betas[k]).sqrt()
        if k > 0:  # no noise on the last step
            ref = ref + betas[k].sqrt() * torch.randn(ref.shape, generator=g, dtype=F64)
    assert torch.allclose(ours, ref, atol=1e-9)


def test_ddim_is_invariant_between_ddpm_and_flow_matching_at_matched_snr():
    """A DDPM eps-network and the flow-matching velocity network it implies (x_vp = (alpha/t) x_fm
    at t_fm = alpha/(alpha + sigma)) describe one probability flow: DDIM on matched grids gives
    the same samples (DDIM is Euler in the scale-free variables x/alpha and sigma/alpha)."""
    ddpm, fm = DDPM(), FlowMatching()
    ts_vp = uniform_grid(50, dtype=F64)
    a, s, _, _ = ddpm.coefficients(ts_vp)
    ts_fm = a / (a + s)  # increasing, ends at 1

    def fm_velocity(x, t):
        # the DDPM network at the matched point; its eps and x0 = (x - (1 - t) eps)/t give v = x0 - eps
        i = int(torch.searchsorted(ts_fm, t[0]))
        eps = _toy_eps_network(x * a[i] / t[0], ts_vp[i].expand(len(x)), None)
        return (x - (1 - t[0]) * eps) / t[0] - eps

    x_vp = torch.randn(4, 3, 2, 2, generator=gen(0), dtype=F64)
    vp = ddim(lambda x, t: ddpm.predict(_toy_eps_network(x, t, None), x, t).velocity, x_vp, ts_vp, schedule=ddpm)
    flow = ddim(fm_velocity, x_vp * ts_fm[0] / a[0], ts_fm, schedule=fm)
    assert torch.allclose(vp, flow, atol=1e-9)


# ------------------------------------------------------------------ solver contract
ALL = [
    ("euler", euler, {}),
    ("heun", heun, {}),
    ("ab2", ab2, {}),
    ("ddim", ddim, {"eta": 0.5}),
    ("ancestral", ddpm_ancestral, {}),
    ("euler-maruyama", euler_maruyama, {}),
    ("dopri5", odeint, {}),
    ("rk4-on-grid", odeint, {"method": "rk4"}),
]


@pytest.mark.parametrize("name,solver,options", ALL, ids=[a[0] for a in ALL])
@pytest.mark.parametrize("objective", ["ddpm-linear", "xpred"])
def test_solvers_never_evaluate_at_t_1_and_report_every_step(name, solver, options, objective):
    obj = OBJECTIVES[objective]
    seen = []

    def f(x, t):
        assert t.shape == (x.shape[0],)
        seen.append(t[0].item())
        return velocity_field(obj)(x, t)

    ts = uniform_grid(10, dtype=F64)
    steps = []
    x = torch.randn(3, 4, 1, 1, generator=gen(0), dtype=F64)
    out = solver(f, x, ts, schedule=obj, generator=gen(1),
                 callback=lambda i, t, x: steps.append((i, t.item(), x)), **options)
    assert max(seen) < 1 and torch.isfinite(out).all()
    expected = range(10) if name not in ("dopri5", "rk4-on-grid") else (8, 9)  # odeint: its last two points
    assert [i for i, _, _ in steps] == list(expected)
    assert [t for _, t, _ in steps] == [ts[i + 1].item() for i in expected]
    assert torch.equal(steps[-1][2], out)
    if name == "rk4-on-grid":  # fixed-grid torchdiffeq methods step on the given grid
        assert set(ts[:-1].tolist()) <= set(seen)


# ------------------------------------------------------------------ odeint's method lists
@pytest.mark.parametrize("method", FIXED_GRID_METHODS + ADAPTIVE_METHODS)
def test_odeint_methods_keep_to_the_grid_as_their_kind_promises(method):
    # fixed-grid methods step exactly on ts[:-1] (so they start every step on a grid point); adaptive
    # ones are told to land on ts[-2], so no evaluation ever lies beyond it (torchdiffeq would
    # otherwise step past the end and interpolate); both end with one Euler step into ts[-1]
    ts = uniform_grid(6, dtype=F64)
    seen: list[float] = []

    def f(x, t):
        seen.append(float(t.flatten()[0]))
        return -x

    x = odeint(f, torch.ones(2, 1, 1, 1, dtype=F64), ts, method=method, rtol=1e-6, atol=1e-6)
    ode_part, last = seen[:-1], seen[-1]
    assert last == float(ts[-2]) and max(ode_part) <= float(ts[-2]) + 1e-12
    if method in FIXED_GRID_METHODS and method != "implicit_adams":  # implicit: corrector evaluations
        starts = {round(float(t), 12) for t in ts[:-2]}
        assert starts <= {round(s, 12) for s in ode_part}
    # the exact answer of dx/dt = -x over the ODE part, then the Euler step's factor (1 - h)
    h = float(ts[-1] - ts[-2])
    expected = math.exp(-float(ts[-2] - ts[0])) * (1 - h)
    # Euler, the crudest method, is off by (1 - h)^4 / e^{-4h} - 1 = -8.6% at h = 0.2
    assert abs(float(x[0, 0, 0, 0]) - expected) < 0.1 * expected


def test_last_step_sets_the_final_step_pixnerds_grid():
    grid = uniform_grid(100, last_step=0.04, dtype=F64)
    assert grid.shape == (101,) and grid[-1].item() == 1.0
    torch.testing.assert_close(grid[:-1], torch.linspace(0, 0.96, 100, dtype=F64), rtol=0, atol=0)
    assert (grid[-1] - grid[-2]).item() == pytest.approx(0.04)
    assert torch.equal(uniform_grid(100, last_step=0.0), uniform_grid(100))  # 0: DiP's grid, unchanged
    torch.testing.assert_close(uniform_grid(10, last_step=0.1, dtype=F64), uniform_grid(10, dtype=F64))
    torch.testing.assert_close(shifted_grid(10, 3.0, last_step=0.2, dtype=F64),
                               time_shift(uniform_grid(10, last_step=0.2, dtype=F64), 3.0))
    with pytest.raises(ValueError, match="last_step"):
        uniform_grid(10, last_step=1.0)
