"""Classifier-free guidance: one batched forward, the interval, and agreement with the naive form."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pixdiff.diffusion.guidance import cfg

NUM_CLASSES = 5


class Net(nn.Module):
    """A small conditional conv net with the model signature; records each call's batch size."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.label = nn.Embedding(NUM_CLASSES + 1, 3)  # last row: the null class
        self.batches: list[int] = []

    def forward(self, x, t, y):
        self.batches.append(x.shape[0])
        return self.conv(x) * (1 + t.view(-1, 1, 1, 1)) + self.label(y).view(-1, 3, 1, 1)


def inputs(b: int, t: float | list[float]):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, 3, 4, 4, generator=g)
    t = torch.full((b,), t) if isinstance(t, float) else torch.tensor(t)
    return x, t, torch.randint(0, NUM_CLASSES, (b,), generator=g)


def naive(net, scale, x, t, y):
    """Two separate forwards, guidance everywhere."""
    cond = net(x, t, y)
    uncond = net(x, t, torch.full_like(y, NUM_CLASSES))
    return uncond + scale * (cond - uncond)


@torch.no_grad()
def test_scale_one_is_exactly_the_conditional_model_in_one_forward_of_batch_b():
    net = Net()
    x, t, y = inputs(6, 0.5)
    out = cfg(net, 1.0, num_classes=NUM_CLASSES)(x, t, y)
    assert net.batches == [6]
    assert torch.equal(out, net(x, t, y))


@torch.no_grad()
@pytest.mark.parametrize("t", [0.0, 0.05, 0.1, 1.0])  # (0.1, 1.0) is open at both ends
def test_outside_the_interval_the_output_is_unguided(t):
    net = Net()
    x, t, y = inputs(6, t)
    out = cfg(net, 4.0, num_classes=NUM_CLASSES, interval=(0.1, 1.0))(x, t, y)
    assert net.batches == [6]
    assert torch.equal(out, net(x, t, y))


def jit_interval_mask(t: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """LTH14/JiT's rule, written as its sampler states it (denoiser.py, _forward_sample)."""
    return (t < high) & ((low == 0) | (t > low))


@torch.no_grad()
@pytest.mark.parametrize("interval", [(0.0, 1.0), (0.0, 0.5), (0.1, 1.0), (0.1, 0.7), (0.3, 0.3)])
def test_the_interval_guides_exactly_where_jit_does_at_both_ends(interval):
    # the ends themselves and their neighbours, per sample in one batch
    lo, hi = interval
    ts = [0.0, lo, lo + 1e-3, 0.5, hi - 1e-3, hi, 1.0]
    net = Net()
    x, t, y = inputs(len(ts), ts)
    out = cfg(net, 3.0, num_classes=NUM_CLASSES, interval=interval)(x, t, y)
    expected = torch.where(jit_interval_mask(t, lo, hi).view(-1, 1, 1, 1), naive(net, 3.0, x, t, y), net(x, t, y))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


@torch.no_grad()
def test_an_interval_from_zero_guides_the_first_step_at_t_zero():
    # closed form: at t = 0 the guided output is uncond + w (cond - uncond), not the conditional one
    net = Net()
    x, t, y = inputs(4, 0.0)
    out = cfg(net, 4.0, num_classes=NUM_CLASSES, interval=(0.0, 1.0))(x, t, y)
    assert net.batches == [8]  # [uncond, cond] in one forward
    torch.testing.assert_close(out, naive(net, 4.0, x, t, y), rtol=0, atol=1e-6)
    assert not torch.allclose(out, net(x, t, y))


@torch.no_grad()
def test_inside_the_interval_one_concatenated_forward_matches_two_naive_calls():
    net = Net()
    x, t, y = inputs(6, 0.5)
    out = cfg(net, 4.0, num_classes=NUM_CLASSES)(x, t, y)
    assert net.batches == [12]  # [uncond, cond] in one batch
    # batching may change a conv's last bits: agreement to float32 rounding, scaled by w
    assert torch.allclose(out, naive(net, 4.0, x, t, y), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_per_sample_times_guide_only_the_samples_inside_the_interval():
    net = Net()
    times = [0.0, 0.3, 0.1, 0.95, 1.0, 0.5]
    x, t, y = inputs(6, times)
    out = cfg(net, 3.0, num_classes=NUM_CLASSES, interval=(0.1, 1.0))(x, t, y)
    assert net.batches == [6 + 3]  # the unconditional half only for the 3 guided samples
    inside = torch.tensor([0.1 < v < 1.0 for v in times])
    assert torch.allclose(out[inside], naive(net, 3.0, x, t, y)[inside], atol=1e-5, rtol=1e-5)
    assert torch.allclose(out[~inside], net(x, t, y)[~inside], atol=1e-6)


@torch.no_grad()
def test_guidance_applies_to_all_channels_and_infinite_interval_guides_everywhere():
    def model(x, t, y):  # output channel c: (c + 1) * label, so guidance scales every channel
        return (y.float() + 1).view(-1, 1, 1, 1) * torch.arange(1.0, 4.0).view(1, 3, 1, 1).expand(len(y), 3, 2, 2)

    x, _, y = inputs(4, 0.0)
    t = torch.tensor([0.0, 0.05, 0.5, 1.0])
    out = cfg(model, 2.0, num_classes=NUM_CLASSES, interval=(-math.inf, math.inf))(x[..., :2, :2], t, y)
    cond, uncond = model(None, None, y), model(None, None, torch.full_like(y, NUM_CLASSES))
    assert torch.equal(out, uncond + 2.0 * (cond - uncond))
