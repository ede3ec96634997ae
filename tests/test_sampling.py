"""`sample`: per-sample reproducibility, guidance wiring, clamping, and the solver lookup."""

from __future__ import annotations

import math

import pytest
import torch

from pixdiff.diffusion.objectives import DDPM, FlowMatching, XPrediction, gaussian_model
from pixdiff.diffusion.sampling import sample_images
from pixdiff.diffusion.solvers import SOLVERS, NFECounter, euler, shifted_grid
from pixdiff.runtime.rng import seed_generators

NUM_CLASSES = 10
SHAPE = (3, 4, 4)


class ToyModel:
    """Acts on each sample on its own, element by element (no matmul, no reduction), so its output
    for sample i is bit-identical whatever else is in the batch. A real network's CPU/GPU matmuls
    may pick different kernels or reduction orders for different batch sizes and differ in the last
    bits; samples then agree only to rounding (not bit for bit), which an ODE can amplify slightly
    over many steps. The per-sample noise itself is identical either way."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.scale = torch.rand(NUM_CLASSES + 1, *SHAPE, generator=g) + 0.5  # null class: last row
        self.shift = torch.randn(NUM_CLASSES + 1, *SHAPE, generator=g) * 0.3
        self.batches: list[int] = []

    def __call__(self, x, t, y):
        self.batches.append(x.shape[0])
        return torch.tanh(x) * self.scale[y] + self.shift[y] * t.view(-1, 1, 1, 1) - 0.5 * x


SOLVER_CASES = [
    ("euler", FlowMatching(), {}),
    ("heun", XPrediction(), {}),
    ("ddim", DDPM(), {"eta": 1.0}),
    ("ddpm_ancestral", DDPM(), {}),
    ("euler_maruyama", FlowMatching(), {"noise_scale": 2.0}),
]


@pytest.mark.parametrize("solver,objective,options", SOLVER_CASES, ids=[c[0] for c in SOLVER_CASES])
def test_samples_are_bit_identical_for_batch_sizes_1_and_8(solver, objective, options):
    # (adaptive odeint is the exception: one step size serves the whole batch, so its samples
    # depend on their batch-mates; use it where batch invariance does not matter)
    model, seeds = ToyModel(), list(range(100, 108))
    y = torch.arange(8) % NUM_CLASSES

    def run(idx):
        return sample_images(model, objective, y[idx], shape_chw=SHAPE, num_classes=NUM_CLASSES, steps=12,
                      solver=solver, cfg_scale=4.0, generators=seed_generators([seeds[i] for i in idx]),
                      **options)

    batch = run(list(range(8)))
    for i in range(8):
        assert torch.equal(run([i]), batch[i : i + 1])
    assert not torch.equal(batch[0], batch[1])


def test_seed_generators_reproduce_their_seeds():
    a, b = seed_generators([3, 4]), seed_generators([3, 5])
    assert torch.equal(torch.randn(5, generator=a[0]), torch.randn(5, generator=b[0]))
    assert not torch.equal(torch.randn(5, generator=a[1]), torch.randn(5, generator=b[1]))


def test_guidance_runs_one_forward_per_step_with_the_unconditional_half_inside_the_interval():
    model = NFECounter(ToyModel())
    y = torch.tensor([1, 2])
    sample_images(model, FlowMatching(), y, shape_chw=SHAPE, num_classes=NUM_CLASSES, steps=10, cfg_scale=4.0,
           cfg_interval=(0.1, 1.0), generators=seed_generators([0, 1]))
    assert model.nfe == 10
    # grid 0, 0.1, ..., 0.9: t = 0 and t = 0.1 lie outside the open interval (0.1, 1.0)
    assert model.fn.batches == [2, 2] + [4] * 8


def test_callback_sees_the_shifted_grid_and_the_result_is_clamped_once():
    steps, seen = 8, []

    def exploding(x, t, y):  # velocity 10: the state leaves [-1, 1] long before the end
        return torch.full_like(x, 10.0)

    out = sample_images(exploding, FlowMatching(), torch.zeros(2, dtype=torch.long), shape_chw=SHAPE,
                 num_classes=NUM_CLASSES, steps=steps, time_shift=3.0, generators=seed_generators([0, 1]),
                 callback=lambda i, t, x: seen.append((i, t.item(), x.max().item())))
    assert [i for i, _, _ in seen] == list(range(steps))
    assert [t for _, t, _ in seen] == pytest.approx(shifted_grid(steps, 3.0)[1:].tolist())
    assert seen[-1][2] > 1  # intermediate states are not clamped ...
    assert out.dtype == torch.float32 and out.shape == (2, *SHAPE) and (out == 1).all()  # ... the output is


def test_solver_lookup():
    assert set(SOLVERS) == {"euler", "heun", "ddim", "ddpm_ancestral", "euler_maruyama", "odeint", "ab2", "meanflow"}
    y = torch.zeros(1, dtype=torch.long)
    with pytest.raises(ValueError, match="unknown solver"):
        sample_images(ToyModel(), FlowMatching(), y, shape_chw=SHAPE, num_classes=NUM_CLASSES, solver="rk45")
    calls = []

    def my_solver(f, x, ts, **kwargs):  # any function with the solver signature works
        calls.append(sorted(kwargs))
        return euler(f, x, ts)

    sample_images(ToyModel(), FlowMatching(), y, shape_chw=SHAPE, num_classes=NUM_CLASSES, steps=4, solver=my_solver)
    assert calls == [["callback", "generator", "schedule"]]


def test_sample_draws_from_the_data_distribution_with_the_exact_network():
    """End to end through `sample`: the exact network for N(mu, sd^2), 200 Euler steps."""
    mu = torch.tensor([0.3, -0.4, 0.0]).view(3, 1, 1)
    sd = torch.tensor([0.12, 0.1, 0.18]).view(3, 1, 1)  # mu +- 5 sd inside [-1, 1]: clamping is inactive
    n, steps = 64 * 16 * 8, 200
    out = sample_images(gaussian_model(FlowMatching(), mu, sd), FlowMatching(), torch.zeros(64, dtype=torch.long),
                 shape_chw=(3, 16, 8), num_classes=NUM_CLASSES, steps=steps, generators=seed_generators(range(64)))
    draws = out.transpose(0, 1).reshape(3, -1).double()
    # Euler keeps the mean exactly on this path; its std error is <= 2.4 h (tests/test_solvers.py)
    assert ((draws.mean(1) - mu.flatten()).abs() < 5 * sd.flatten() / math.sqrt(n)).all()
    assert ((draws.std(1) - sd.flatten()).abs() < 3 / steps + 5 * sd.flatten() / math.sqrt(2 * n)).all()
