"""Editing against closed forms: data x0 ~ N(m, S^2) per pixel has the exact network
`gaussian_model`, and on the flow-matching path x_t = t x0 + (1 - t) eps its flow map from t to
the data end is affine: x_1 = m + S (x_t - t m) / sqrt(t^2 S^2 + (1 - t)^2)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pixdiff.diffusion.editing import (
    class_edit,
    data_range,
    inpaint,
    invert,
    noised,
    repaint_schedule,
    sdedit,
    slerp,
    strength_grid,
)
from pixdiff.diffusion.objectives import (
    DDPM,
    FlowMatching,
    XPrediction,
    broadcast_coefficients,
    from_velocity,
    from_x0,
    gaussian_model,
    randn,
    time_shift,
)
from pixdiff.diffusion.sampling import guided_velocity, sample_images
from pixdiff.diffusion.solvers import SOLVERS, shifted_grid
from pixdiff.runtime.rng import seed_generators

M, S = 0.3, 0.5


def velocity(objective, model=None, y=None):
    model = model or gaussian_model(objective, torch.tensor(M), torch.tensor(S))
    return lambda x, t: objective.predict(model(x, t, y), x, t).velocity


@settings(deadline=None, max_examples=30)
@given(steps=st.integers(1, 200), shift=st.floats(0.2, 5.0), s=st.floats(0.0, 1.0))
def test_strength_grid_edges_and_shape(steps, shift, s):
    assert torch.equal(strength_grid(1.0, steps, shift), shifted_grid(steps, shift))
    assert strength_grid(0.0, steps, shift).tolist() == [1.0]
    assert len(strength_grid(0.3, 10, shift)) == 4  # 3 steps (0.3 * 10 rounds to 3.0000000000000004)
    ts = strength_grid(s, steps, shift, dtype=torch.float64)
    assert ts[-1] == 1.0 and bool((ts[1:] > ts[:-1]).all())
    assert math.isclose(ts[0], float(time_shift(torch.tensor(1 - s, dtype=torch.float64), shift)), abs_tol=1e-12)


@settings(deadline=None, max_examples=10)
@given(seed=st.integers(0, 2**31), solver=st.sampled_from(["euler", "heun", "ddim"]))
def test_strength_zero_returns_the_image_exactly(seed, solver):
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    obj = XPrediction()
    out = sdedit(velocity(obj), x, torch.randn_like(x), strength_grid(0.0, 10), schedule=obj, solver=SOLVERS[solver])
    assert torch.equal(out, x)


@pytest.mark.parametrize("objective", [FlowMatching(), XPrediction(noise_scale=2.0), DDPM(num_steps=50)])
@pytest.mark.parametrize("solver", ["euler", "heun", "ddim", "euler_maruyama"])
def test_strength_one_is_plain_sampling_with_the_same_noise(objective, solver):
    model = gaussian_model(objective, torch.tensor(M), torch.tensor(S))
    y, shape, steps, shift = torch.zeros(3, dtype=torch.long), (1, 4, 4), 7, 2.0
    plain = sample_images(model, objective, y, shape_chw=shape, num_classes=1, steps=steps, solver=solver,
                   time_shift=shift, generators=seed_generators([1, 2, 3]))
    gens = seed_generators([1, 2, 3])
    eps = randn((3, *shape), gens)
    image = torch.full((3, *shape), 0.7)
    f = guided_velocity(model, objective, y, num_classes=1)
    edit = sdedit(f, image, eps, strength_grid(1.0, steps, shift), schedule=objective, solver=SOLVERS[solver],
                  generator=gens)
    assert torch.equal(edit.clamp(-1, 1), plain)


@pytest.mark.parametrize("strength", [0.3, 0.7])
def test_sdedit_marginal_matches_the_closed_form(strength):
    # a fixed image x: x_t0 ~ N(t0 x, (1 - t0)^2) per pixel, pushed through the affine flow map
    obj, shift, x = FlowMatching(), 2.0, 0.9
    ts = strength_grid(strength, 40, shift, dtype=torch.float64)
    t0 = float(ts[0])
    sd_t = math.sqrt(t0**2 * S**2 + (1 - t0) ** 2)
    want_mean, want_std = M + S * t0 * (x - M) / sd_t, S * (1 - t0) / sd_t
    n = 64 * 16 * 16
    image = torch.full((64, 1, 16, 16), x, dtype=torch.float64)
    eps = torch.randn(image.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = sdedit(velocity(obj), image, eps, ts, schedule=obj, solver=SOLVERS["heun"])
    # 5 standard errors of the sample mean and std; heun's discretisation error at 40 steps is < 1e-4
    assert abs(out.mean().item() - want_mean) < 5 * want_std / math.sqrt(n)
    assert abs(out.std().item() / want_std - 1) < 5 / math.sqrt(2 * n)


def round_trip_errors(objective, solver, first_step, steps=(16, 32, 64)):
    x = M + S * torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    f, errors = velocity(objective), []
    for n in steps:
        ts = shifted_grid(n, 1.0, dtype=torch.float64)
        z = invert(f, x, ts, solver=SOLVERS[solver], schedule=objective, first_step=first_step)
        errors.append((SOLVERS[solver](f, z, ts, schedule=objective) - x).abs().mean().item())
    return errors


@pytest.mark.parametrize("objective", [FlowMatching(), XPrediction()])
@pytest.mark.parametrize("solver,order", [("euler", 1), ("heun", 2)])
def test_inversion_round_trip_error_shrinks_at_the_solvers_order(objective, solver, order):
    # halving the step divides the error by about 2^order (measured: euler 1.83, 1.92; heun 3.45, 3.78)
    e = round_trip_errors(objective, solver, "mirror")
    ratios = [a / b for a, b in zip(e, e[1:])]
    assert all(0.8 * 2**order < r < 1.2 * 2**order for r in ratios[1:]), ratios
    assert ratios[0] > 0.75 * 2**order


def test_inverting_x_prediction_from_the_data_end_needs_the_mirror_step():
    # the x-prediction velocity (x0 - x_t) / (1 - t) is 0/0 at t = 1 where inversion starts
    assert all(math.isnan(e) for e in round_trip_errors(XPrediction(), "euler", "solver", steps=(8,)))
    # flow matching is regular there, and the solver's own first step keeps its order
    e = round_trip_errors(FlowMatching(), "heun", "solver")
    assert all(3.5 < a / b < 4.5 for a, b in zip(e, e[1:]))


def test_inversion_reaches_the_closed_form_noise():
    obj, x = FlowMatching(), M + S * torch.randn(4, 1, 8, 8, dtype=torch.float64)
    z = invert(velocity(obj), x, shifted_grid(64, 1.0, dtype=torch.float64), solver=SOLVERS["heun"], schedule=obj)
    assert (z - (x - M) / S).abs().max() < 1e-3  # the flow map at t = 0 is (x1 - m) / S


def test_class_edit_at_strength_zero_and_with_one_class_is_the_round_trip():
    obj = XPrediction()
    f, x = velocity(obj), M + S * torch.randn(2, 1, 4, 4, dtype=torch.float64)
    assert torch.equal(class_edit(f, f, x, strength_grid(0.0, 8), solver=SOLVERS["euler"], schedule=obj), x)
    ts = strength_grid(0.5, 64, dtype=torch.float64)
    out = class_edit(f, f, x, ts, solver=SOLVERS["heun"], schedule=obj)
    assert (out - x).abs().max() < 1e-3


masks = st.tuples(st.integers(1, 3), st.sampled_from([1, 3]), st.integers(2, 5), st.booleans(), st.integers(0, 2**31))


@settings(deadline=None, max_examples=15)
@given(spec=masks, jumps=st.integers(0, 2), jump_length=st.integers(1, 3),
       solver=st.sampled_from(["euler", "heun", "ddim", "euler_maruyama"]))
def test_inpainting_keeps_known_pixels_exactly(spec, jumps, jump_length, solver):
    b, c, size, per_image, seed = spec
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, size, size, generator=g) * 2 - 1
    mask = torch.rand(b if per_image else 1, c, size, size, generator=g) < 0.5
    obj = XPrediction()
    out = inpaint(velocity(obj), x, mask, shifted_grid(6, 1.0), schedule=obj, solver=SOLVERS[solver],
                  generator=g, jumps=jumps, jump_length=jump_length)
    known = ~mask.expand_as(x)
    assert torch.equal(out[known], x[known]) and out.isfinite().all()


@settings(deadline=None, max_examples=30)
@given(steps=st.integers(1, 30), jumps=st.integers(0, 3), jump_length=st.integers(1, 6))
def test_repaint_schedule_moves_one_step_forward_or_one_jump_back(steps, jumps, jump_length):
    path = repaint_schedule(steps, jumps, jump_length)
    assert path[0] == 0 and path[-1] == steps and path.count(steps) == 1
    moves = [b - a for a, b in zip(path, path[1:])]
    assert set(moves) <= {1, -jump_length}
    assert moves.count(-jump_length) == (jumps * ((steps - 1) // jump_length) if jump_length < steps else 0)


def correlated_model(objective, mu, cov):
    """The exact x0-predicting network for x0 ~ N(mu, cov) over the D = C*H*W pixels."""
    d = mu.numel()

    def model(x, t, y):
        a, s, _, _ = (c.reshape(-1, 1, 1) for c in broadcast_coefficients(objective, t, x))
        k = a * a * cov + s * s * torch.eye(d, dtype=x.dtype)
        flat = x.reshape(x.shape[0], d, 1) - a * mu[:, None]
        return (mu[:, None] + a * cov @ torch.linalg.solve(k, flat)).reshape(x.shape)

    return model


def test_inpainting_samples_the_rest_and_resampling_moves_it_towards_the_conditional():
    obj, n = XPrediction(label_dropout=0.0), 4000
    mu = torch.tensor([0.2, -0.1, 0.3, 0.0], dtype=torch.float64)
    i = torch.arange(4)
    g = torch.Generator().manual_seed(1)
    x = torch.tensor([0.6, 0.0, 0.0, 0.0], dtype=torch.float64).reshape(1, 1, 2, 2).expand(n, 1, 2, 2)
    mask = torch.tensor([[False, True], [True, True]]).reshape(1, 1, 2, 2)
    # independent pixels: the regenerated ones are exact draws of their marginal N(mu, 0.25)
    f = velocity(obj, correlated_model(obj, mu, 0.25 * torch.eye(4, dtype=torch.float64)))
    out = inpaint(f, x, mask, shifted_grid(20, 1.0, dtype=torch.float64), schedule=obj, solver=SOLVERS["heun"],
                  generator=g).reshape(n, 4)
    assert (out[:, 1:].mean(0) - mu[1:]).abs().max() < 5 * 0.5 / math.sqrt(n)
    assert (out[:, 1:].std(0) / 0.5 - 1).abs().max() < 5 / math.sqrt(2 * n)
    # correlated pixels (AR(1), rho = 0.8): replacement alone is biased towards the marginal; RePaint's
    # resampling moves the conditional mean towards its closed form (measured here: largest error of
    # the mean 0.20 without, 0.12 with 5 jumps of 5; the standard error of the mean is about 0.01)
    cov = 0.25 * 0.8 ** (i[:, None] - i[None, :]).abs().double()
    want = mu[1:] + cov[1:, :1] @ torch.linalg.solve(cov[:1, :1], 0.6 - mu[:1])
    f = velocity(obj, correlated_model(obj, mu, cov))
    errors = []
    for jumps in (0, 5):
        out = inpaint(f, x, mask, shifted_grid(30, 1.0, dtype=torch.float64), schedule=obj, solver=SOLVERS["euler"],
                      generator=g, jumps=jumps, jump_length=5).reshape(n, 4)
        errors.append((out[:, 1:].mean(0) - want).abs().max().item())
        if jumps == 0:  # the replaced known pixel still pulls its neighbour (measured: 37% of the way)
            assert out[:, 1].mean() > mu[1] + 0.2 * (want[0] - mu[1])
    assert errors[1] < 0.7 * errors[0], errors


def test_noised_follows_the_objective_path():
    obj, x, eps = XPrediction(noise_scale=2.0), torch.ones(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.5)
    assert torch.allclose(noised(obj, x, eps, 0.25), 0.25 * x + 2.0 * 0.75 * eps)
    assert torch.equal(noised(obj, x, eps, 0.0), 2.0 * eps)


def test_slerp_endpoints_and_norm():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(3, 32, 32, generator=g), torch.randn(3, 32, 32, generator=g)
    frames = slerp(z0, z1, torch.linspace(0, 1, 5))
    assert frames.shape == (5, 3, 32, 32)
    assert torch.allclose(frames[0], z0, atol=1e-6) and torch.allclose(frames[-1], z1, atol=1e-6)
    # nearly orthogonal high-dimensional noises: every frame keeps the norm (a straight line's midpoint
    # would have about 0.71 of it)
    norms = frames.flatten(1).norm(dim=1) / z0.norm()
    assert (norms - 1).abs().max() < 0.05


@pytest.mark.parametrize("objective", [FlowMatching(), XPrediction(noise_scale=2.0), DDPM()],
                         ids=["fm", "xpred", "ddpm"])
def test_data_range_clamps_the_implied_x0_and_is_the_identity_inside_the_range(objective):
    # closed form: a velocity field whose x0 is a known tensor; x0 in [-1, 1] passes unchanged, and
    # outside the range the returned velocity implies exactly the clamped x0 at the same x_t and t
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64), torch.rand(6, generator=g, dtype=torch.float64)
    t = t * 0.9 + 0.05  # away from the ends, where sigma or alpha vanishes
    for scale in (0.5, 3.0):
        x0 = scale * torch.tanh(torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64))

        def f(xt, tt, x0=x0):
            return from_x0(objective, x0, xt, tt).velocity

        v = data_range(f, objective)(x, t)
        implied = from_velocity(objective, v, x, t).x0
        torch.testing.assert_close(implied, x0.clamp(-1, 1), rtol=0, atol=1e-9)
        if scale < 1:
            torch.testing.assert_close(v, f(x, t), rtol=0, atol=1e-9)
