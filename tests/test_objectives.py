"""Objectives: forward processes, time sampling, conversions and losses against closed forms.

Gaussian data x0 ~ N(mu, sd^2) per dimension makes everything analytic: the exact network
(`gaussian_model`) and its irreducible loss, E_t[ Var(target | x_t) ] per element:
    velocity target (flow matching): sd^2 / (t^2 sd^2 + (1-t)^2)
    eps target (DDPM):               alpha^2 sd^2 / (alpha^2 sd^2 + sigma^2)
    x-prediction, clamped v-loss:    sd^2 sigma^2 / ((alpha^2 sd^2 + sigma^2) max(1-t, t_eps)^2)
"""

from __future__ import annotations

import dataclasses
import math
import typing

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pixdiff.diffusion.objectives import (
    DDPM,
    FlowMatching,
    XPrediction,
    drop_labels,
    from_velocity,
    gaussian_model,
    rand,
    randn,
    time_shift,
)

F64 = torch.float64
MU = torch.tensor([0.3, -0.5, 1.0, 0.0], dtype=F64).view(4, 1, 1)  # (C, H, W) with C = 4 dimensions
SD = torch.tensor([0.5, 1.0, 0.2, 1.5], dtype=F64).view(4, 1, 1)
JIT_512 = XPrediction(loc=-0.8, scale=0.8, noise_scale=2.0)  # JiT's objective at 512 px
OBJECTIVES = [FlowMatching(), DDPM(), DDPM(beta_schedule="cosine"), XPrediction(), JIT_512]
IDS = ["fm", "ddpm-linear", "ddpm-cosine", "xpred", "xpred-jit512"]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def data(n: int, seed: int) -> torch.Tensor:
    """(n, 4, 1, 1) draws of N(MU, SD^2)."""
    return MU + SD * torch.randn(n, 4, 1, 1, generator=gen(seed), dtype=F64)


# ------------------------------------------------------------------ randomness
def test_per_sample_generators_draw_each_row_from_its_own_generator():
    rows = randn((3, 2, 5), [gen(s) for s in (7, 8, 9)])
    for i, s in enumerate((7, 8, 9)):
        assert torch.equal(rows[i], torch.randn(2, 5, generator=gen(s)))
    u = rand((2, 4), [gen(1), gen(2)])
    assert torch.equal(u[1], torch.rand(4, generator=gen(2)))
    with pytest.raises(ValueError, match="one per sample"):
        randn((3, 2), [gen(0), gen(1)])


# ------------------------------------------------------------------ time shift and time sampling
@settings(deadline=None, max_examples=60)
@given(st.floats(0, 1), st.floats(0, 1), st.floats(0.1, 10))
def test_time_shift_is_a_monotone_bijection_of_the_unit_interval(t1, t2, shift):
    a, b = sorted((t1, t2))
    ta, tb = time_shift(torch.tensor([a, b], dtype=F64), shift)
    assert 0 <= ta <= tb + 1e-15 and tb <= 1  # monotone up to one rounding
    assert time_shift(torch.tensor([0.0, 1.0], dtype=F64), shift).tolist() == [0.0, 1.0]
    # shift > 1 moves t towards noise (t = 0), shift < 1 towards data; 1/shift inverts
    assert (ta <= a + 1e-12) if shift >= 1 else (ta >= a - 1e-12)
    assert time_shift(ta, 1 / shift).item() == pytest.approx(a, abs=1e-9)


def test_logit_normal_and_uniform_time_sampling():
    n = 40_000
    t = FlowMatching(loc=-0.4, scale=0.8).sample_t(n, generator=gen(0))
    assert t.dtype == torch.float32 and t.shape == (n,) and 0 < t.min() and t.max() < 1
    logit = torch.logit(t.double())
    # 5 standard errors: sd/sqrt(n) for the mean, sd/sqrt(2n) for the std
    assert abs(logit.mean() - (-0.4)) < 5 * 0.8 / math.sqrt(n)
    assert abs(logit.std() - 0.8) < 5 * 0.8 / math.sqrt(2 * n)
    u = FlowMatching(t_sampling="uniform").sample_t(n, generator=gen(1))
    assert abs(u.mean() - 0.5) < 5 * math.sqrt(1 / 12 / n)
    # shift 3 maps the median 0.5 to 0.25: three quarters of the mass moves below t = 0.5 (noise side)
    shifted = FlowMatching(shift=3.0).sample_t(n, generator=gen(2))
    assert abs(shifted.median() - 0.25) < 0.01
    # the same generator gives the same times
    assert torch.equal(FlowMatching().sample_t(8, generator=gen(3)), FlowMatching().sample_t(8, generator=gen(3)))


def test_ddpm_times_are_the_discrete_steps_drawn_uniformly():
    obj = DDPM(num_steps=10)
    t = obj.sample_t(20_000, generator=gen(0))
    k = torch.round((1 - t.double()) * 10 - 1).long()  # t = 1 - (k + 1)/N
    assert torch.allclose((1 - (k + 1) / 10).double(), t.double(), atol=1e-6)
    counts = torch.bincount(k, minlength=10)
    assert counts.numel() == 10 and counts.min() > 0
    # each count is Binomial(n, 1/10): within 5 standard deviations of n/10
    assert (counts - 2000).abs().max() < 5 * math.sqrt(20_000 * 0.1 * 0.9)


# ------------------------------------------------------------------ schedules
def _discrete_alpha_bar(obj: DDPM) -> torch.Tensor:
    """Textbook alpha_bar_k = prod_{i<=k}(1 - beta_i), written independently of the library."""
    n = obj.num_steps
    if obj.beta_schedule == "linear":
        betas = np.linspace(obj.beta_start, obj.beta_end, n)
    else:
        f = lambda k: np.cos((k / n + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731
        betas = np.minimum(1 - f(np.arange(1, n + 1)) / f(np.arange(n)), 0.999)
    return torch.tensor(np.cumprod(1 - betas))


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_ddpm_continuous_schedule_is_exact_at_the_discrete_steps(schedule):
    obj = DDPM(beta_schedule=schedule)
    k = torch.arange(1000, dtype=F64)
    a, s, _, _ = obj.coefficients(1 - (k + 1) / 1000)
    assert torch.allclose(a**2, _discrete_alpha_bar(obj), rtol=1e-10, atol=1e-300)
    assert torch.allclose(a**2 + s**2, torch.ones(1000, dtype=F64))
    a1, s1, _, _ = obj.coefficients(torch.ones(1, dtype=F64))
    assert a1.item() == 1.0 and s1.item() == 0.0


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_ddpm_interpolation_follows_the_discrete_schedule_between_steps(schedule):
    # alpha at the knots samples a smooth function of t every 1/N: the interpolant's slope at a
    # knot must match the central difference of its neighbours and its midpoints the mean of the
    # two ends, up to curvature terms: O(1/N^2), except near data where beta (and so alpha')
    # changes by ~20% per step; hence the absolute part, 1e-3 of the largest slope
    obj, n = DDPM(beta_schedule=schedule), 1000
    knots = torch.arange(n + 1, dtype=F64) / n
    a, _, da, _ = obj.coefficients(knots)
    central = (a[2:] - a[:-2]) * n / 2
    assert torch.allclose(da[1:-1], central, rtol=1e-3, atol=1e-3 * central.abs().max().item())
    mid, _, _, _ = obj.coefficients((knots[1:] + knots[:-1]) / 2)
    # (not the first two intervals: the cosine schedule's clipped last beta kinks the data there)
    assert torch.allclose(mid[2:], (a[3:] + a[2:-1]) / 2, rtol=1e-4)


@settings(deadline=None, max_examples=60)
@given(st.floats(0.0005, 0.9985), st.sampled_from(["linear", "cosine"]))
def test_ddpm_schedule_is_smooth_monotone_and_variance_preserving(t, schedule):
    obj = DDPM(beta_schedule=schedule)
    h = 1e-6
    ts = torch.tensor([t - h, t, t + h], dtype=F64)
    a, s, da, ds = obj.coefficients(ts)
    assert torch.allclose(a**2 + s**2, torch.ones(3, dtype=F64), atol=1e-12)
    assert a[0] < a[1] < a[2] and da[1] > 0 and ds[1] < 0
    # derivatives match central differences (O(h^2) error; a knot may sit inside [t-h, t+h],
    # where the C1 interpolant's second derivative jumps, hence the relative 1e-4)
    assert (a[2] - a[0]) / (2 * h) == pytest.approx(da[1].item(), rel=1e-4)
    assert (s[2] - s[0]) / (2 * h) == pytest.approx(ds[1].item(), rel=1e-4)


def test_noise_scale_scales_sigma_only():
    t = torch.tensor([0.0, 0.3, 1.0])
    a, s, da, ds = JIT_512.coefficients(t)
    assert torch.equal(a, t) and torch.equal(s, 2 * (1 - t)) and (da == 1).all() and (ds == -2).all()


def test_jit_loss_is_the_official_formula():
    """JiT's training step written out: z = t x + (1 - t) e with e = noise_scale * eps, v and v_pred
    from the clamped 1 - t, per-sample mean then batch mean."""
    x = data(6, 0)
    eps = torch.randn(6, 4, 1, 1, generator=gen(1), dtype=F64)
    t = torch.tensor([0.01, 0.2, 0.5, 0.9, 0.97, 0.999], dtype=F64)
    obj = dataclasses.replace(JIT_512, label_dropout=0.0)
    loss, _ = obj.loss(lambda z, tt, y: torch.tanh(z), x, torch.zeros(6, dtype=torch.long), num_classes=1,
                       t=t, noise=eps)
    tb = t.view(-1, 1, 1, 1)
    z = tb * x + (1 - tb) * (2.0 * eps)
    v = (x - z) / (1 - tb).clamp_min(0.05)
    v_pred = (torch.tanh(z) - z) / (1 - tb).clamp_min(0.05)
    assert loss.item() == pytest.approx(((v - v_pred) ** 2).mean(dim=(1, 2, 3)).mean().item(), rel=1e-12)


def test_clamped_sampling_velocity_matches_jit_near_data_only():
    x_t, out = torch.randn(2, 3, 4, 1, 1, generator=gen(0), dtype=F64)
    t = torch.tensor([0.5, 0.95, 0.98], dtype=F64)
    exact = JIT_512.predict(out, x_t, t)
    clamped = dataclasses.replace(JIT_512, clamp_sampling=True).predict(out, x_t, t)
    expected = (out - x_t) / torch.tensor([0.5, 0.05, 0.05], dtype=F64).view(-1, 1, 1, 1)
    assert torch.allclose(clamped.velocity, expected, rtol=1e-12)
    assert torch.allclose(exact.velocity[:2], expected[:2], rtol=1e-12)  # 1 - t >= t_eps: no change
    assert torch.allclose(exact.velocity[2], (out[2] - x_t[2]) / 0.02, rtol=1e-12)
    assert torch.equal(clamped.x0, exact.x0) and torch.equal(clamped.eps, exact.eps)


def test_flow_matching_path():
    t = torch.tensor([0.0, 0.3, 1.0])
    a, s, da, ds = FlowMatching().coefficients(t)
    assert torch.equal(a, t) and torch.equal(s, 1 - t) and (da == 1).all() and (ds == -1).all()


# ------------------------------------------------------------------ conversions
@settings(deadline=None, max_examples=40)
@given(st.sampled_from(range(len(OBJECTIVES))), st.floats(0.001, 0.995), st.integers(0, 2**31 - 1))
def test_conversions_round_trip(index, t, seed):
    obj = OBJECTIVES[index]
    g = gen(seed)
    x_t, out = torch.randn(2, 3, 2, 2, 2, generator=g, dtype=F64)  # two (3, 2, 2, 2) tensors
    tt = torch.full((3,), t, dtype=F64)
    p = obj.predict(out, x_t, tt)
    a, s, da, ds = (c.view(-1, 1, 1, 1) for c in obj.coefficients(tt))
    assert torch.allclose(a * p.x0 + s * p.eps, x_t, atol=1e-9)  # the forward process
    assert torch.allclose(da * p.x0 + ds * p.eps, p.velocity, rtol=1e-9, atol=1e-9)  # its derivative
    assert torch.allclose(obj.target(p.x0, p.eps, tt), out, rtol=1e-9, atol=1e-9)  # back to the output
    back = from_velocity(obj, p.velocity, x_t, tt)  # what every solver uses
    assert torch.allclose(back.x0, p.x0, rtol=1e-7, atol=1e-7)
    assert torch.allclose(back.eps, p.eps, rtol=1e-7, atol=1e-7)


def test_flow_matching_and_ddpm_predictions_agree_at_matched_snr():
    """The VP point (alpha, sigma) and the flow-matching point t = alpha/(alpha + sigma) have the
    same signal-to-noise ratio, and x_vp = (alpha / t) x_fm: the exact networks of both objectives
    must imply the same x0 and eps there."""
    fm, ddpm = FlowMatching(), DDPM()
    fm_net, ddpm_net = gaussian_model(fm, MU, SD), gaussian_model(ddpm, MU, SD)
    k = torch.tensor([0, 10, 250, 500, 900, 999])
    t_vp = 1 - (k + 1) / 1000
    a, s, _, _ = ddpm.coefficients(t_vp.to(F64))
    t_fm = a / (a + s)
    x_fm = torch.randn(len(k), 4, 1, 1, generator=gen(0), dtype=F64)
    x_vp = x_fm * (a / t_fm).view(-1, 1, 1, 1)
    p_fm = fm.predict(fm_net(x_fm, t_fm, None), x_fm, t_fm)
    p_vp = ddpm.predict(ddpm_net(x_vp, t_vp.to(F64), None), x_vp, t_vp.to(F64))
    assert torch.allclose(p_fm.eps, p_vp.eps, atol=1e-10)
    assert torch.allclose(p_fm.x0, p_vp.x0, atol=1e-8)


# ------------------------------------------------------------------ losses
class Recorder:
    """A model that returns a fixed function of its input and remembers what it was given."""

    def __init__(self):
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def __call__(self, x, t, y):
        self.calls.append((x, t, y))
        return 0.5 * x


@pytest.mark.parametrize("obj", OBJECTIVES, ids=IDS)
def test_loss_wiring_with_explicit_t_and_noise(obj):
    obj = dataclasses.replace(obj, label_dropout=0.0)
    x = data(6, 0)
    eps = torch.randn(6, 4, 1, 1, generator=gen(1), dtype=F64)
    t = torch.tensor([0.0, 0.2, 0.5, 0.9, 0.97, 0.999], dtype=F64)
    y = torch.arange(6)
    model = Recorder()
    loss, stats = obj.loss(model, x, y, num_classes=10, t=t, noise=eps)
    (x_t, t_seen, y_seen), = model.calls
    a, s, _, _ = (c.view(-1, 1, 1, 1) for c in obj.coefficients(t))
    assert torch.allclose(x_t, a * x + s * eps) and torch.equal(t_seen, t) and torch.equal(y_seen, y)
    out = 0.5 * x_t
    if isinstance(obj, XPrediction):  # velocity MSE with 1 - t clamped at t_eps
        expected = ((out - x) / (1 - t).clamp_min(obj.t_eps).view(-1, 1, 1, 1)).square().mean()
    else:
        expected = (out - obj.target(x, eps, t)).square().mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    assert stats["loss"].item() == loss.item() and loss.ndim == 0


def test_label_dropout():
    y = torch.zeros(20_000, dtype=torch.long)
    dropped = drop_labels(y, 0.1, num_classes=1000, generator=gen(0))
    assert set(dropped.unique().tolist()) == {0, 1000}
    rate = (dropped == 1000).double().mean().item()
    assert abs(rate - 0.1) < 5 * math.sqrt(0.1 * 0.9 / 20_000)
    assert torch.equal(dropped, drop_labels(y, 0.1, num_classes=1000, generator=gen(0)))
    assert drop_labels(y, 0.0, num_classes=1000) is y
    # and the loss feeds the dropped labels to the model
    model = Recorder()
    FlowMatching(label_dropout=1.0).loss(model, data(4, 0), torch.arange(4), num_classes=7, generator=gen(0))
    assert (model.calls[0][2] == 7).all()


def _expect_over_t(obj, per_t) -> float:
    """E_t[per_t(t)] under the objective's training distribution, by quadrature."""
    if isinstance(obj, DDPM):
        return float(np.mean(per_t(1 - (np.arange(obj.num_steps) + 1) / obj.num_steps)))
    if obj.t_sampling == "uniform":
        nodes, weights = np.polynomial.legendre.leggauss(400)
        t, w = (nodes + 1) / 2, weights / 2
    else:
        nodes, weights = np.polynomial.hermite_e.hermegauss(200)  # weight exp(-z^2/2)
        t, w = 1 / (1 + np.exp(-(obj.loc + obj.scale * nodes))), weights / math.sqrt(2 * math.pi)
    t = t / (t + (1 - t) * obj.shift)
    return float(np.sum(w * per_t(t)))


def _irreducible_loss(obj) -> float:
    sd2 = SD.flatten().numpy()[None, :] ** 2  # (1, 4)

    def per_t(t):
        t = np.asarray(t, dtype=np.float64)
        a, s, _, _ = (c.numpy()[:, None] for c in obj.coefficients(torch.tensor(t)))  # (T, 1)
        var = a * a * sd2 + s * s  # Var(x_t)
        if isinstance(obj, FlowMatching):
            value = sd2 / var  # Var(x0 - eps | x_t) = sd^2 (sigma + alpha)^2 / var, alpha + sigma = 1
        elif isinstance(obj, DDPM):
            value = a * a * sd2 / var  # Var(eps | x_t)
        else:
            value = sd2 * s * s / var / np.maximum(1 - t, obj.t_eps)[:, None] ** 2  # Var(x0 | x_t) / clamp^2
        return value.mean(axis=1)

    return _expect_over_t(obj, per_t)


@pytest.mark.parametrize(
    "obj",
    [FlowMatching(), FlowMatching(loc=-0.5, shift=3.0), FlowMatching(t_sampling="uniform"),
     DDPM(), DDPM(beta_schedule="cosine"), XPrediction(), JIT_512],
    ids=["fm", "fm-shift3", "fm-uniform", "ddpm-linear", "ddpm-cosine", "xpred", "xpred-jit512"],
)
def test_exact_network_reaches_the_irreducible_loss(obj):
    net = gaussian_model(obj, MU, SD)
    y = torch.zeros(4096, dtype=torch.long)
    # 16 independent batches: their spread gives the standard error of the mean loss; 5 of them
    # leave a ~1e-6 chance of a false failure, and the seeds make the test deterministic anyway
    losses = torch.tensor([obj.loss(net, data(4096, 100 + i), y, num_classes=1, generator=gen(i))[0].item()
                           for i in range(16)])
    se = losses.std().item() / 4
    assert abs(losses.mean().item() - _irreducible_loss(obj)) < 5 * se


# ------------------------------------------------------------------ dataclass contract
@pytest.mark.parametrize("obj", OBJECTIVES, ids=IDS)
def test_objectives_are_frozen_typed_dataclasses(obj):
    with pytest.raises(dataclasses.FrozenInstanceError):
        obj.label_dropout = 0.5
    hints = typing.get_type_hints(type(obj))  # recipe overrides parse values from these
    assert all(f.name in hints for f in dataclasses.fields(obj))
    assert dataclasses.replace(obj, label_dropout=0.2).label_dropout == 0.2


def test_invalid_settings_are_rejected():
    for bad in (dict(t_sampling="beta"), dict(shift=0.0), dict(label_dropout=1.5)):
        with pytest.raises(ValueError):
            FlowMatching(**bad)
    with pytest.raises(ValueError):
        dataclasses.replace(DDPM(), beta_schedule="quadratic")
    with pytest.raises(ValueError):
        XPrediction(t_eps=0.0)
    with pytest.raises(ValueError, match="noise_scale"):
        XPrediction(noise_scale=0.0)
