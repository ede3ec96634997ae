"""The denoising readout: how well a model's one-step clean-image estimate recovers each frequency band.

For held-out images x0 (in [-1, 1]), fixed noise eps and a noise level t, the model sees
x_t = alpha x0 + sigma eps once and `objective.predict` turns its output into the estimate x̂0. No
sampler, no guidance (CFG scale 1: the model is called once, with the images' own labels or with
the null class). The error x̂0 - x0 is split into two orthogonal bands at the model's patch size P:

    low   the per-patch mean of the error, spread over its patch (what the DiT's tokens carry);
    high  the error minus its patch means: the in-patch detail a local head exists to render.

Each band's MSE is the mean over all pixels and channels of that band's squared error, so
mse_low + mse_high = the plain MSE of x̂0 (the bands are orthogonal); PSNR = 10 log10(2² / mse),
peak 2 for the [-1, 1] range, inf where a band's error is zero.

Time convention: the readout's `t` is the **noise level** as the DiP paper and the issue use it
(0 = clean data, 1 = pure noise). pixdiff's objectives put data at t = 1, so the model is called at
pixdiff time 1 - t; on the flow-matching path (alpha = 1 - t, sigma = t here) t is the noise's share.

Noise: image i gets eps_i from a generator seeded with derive_seed(seed, i), and the same eps_i is
used at every t, so the rows differ only in the noise level and a rerun gives the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from pixdiff.diffusion.objectives import Objective, broadcast_coefficients, randn
from pixdiff.runtime.rng import derive_seed, seed_generators

READOUT_TIMES = (0.2, 0.4, 0.6, 0.8, 0.95)  # noise levels (0 = data), the grid
PEAK = 2.0  # the [-1, 1] range
Labels = Literal["class", "null"]
Model = Callable[[Tensor, Tensor, Tensor], Tensor]  # (x (B,C,H,W), t (B,) pixdiff time, y (B,)) -> (B,C,H,W)


def patch_means(x: Tensor, patch: int) -> Tensor:
    """(B, C, H, W) -> the same shape: every P x P patch replaced by its mean (per channel)."""
    B, C, H, W = x.shape
    if patch < 1 or H % patch or W % patch:
        raise ValueError(f"{H}x{W} images do not split into {patch} px patches")
    m = x.reshape(B, C, H // patch, patch, W // patch, patch).mean(dim=(3, 5), keepdim=True)  # (B, C, H/P, 1, W/P, 1)
    return m.expand(B, C, H // patch, patch, W // patch, patch).reshape(B, C, H, W)


def bands(x: Tensor, patch: int) -> tuple[Tensor, Tensor]:
    """(low, high): patch means and the in-patch rest, x = low + high, <low, high> = 0 per patch."""
    low = patch_means(x, patch)
    return low, x - low


def to_psnr(mse: float, peak: float = PEAK) -> float:
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


@dataclass(frozen=True)
class BandError:
    """One noise level's errors of x̂0, summed over images (sums of squares, float64) until `row`."""

    t: float  # noise level, 0 = data
    low: float = 0.0
    high: float = 0.0
    count: int = 0  # elements (images x C x H x W)

    def add(self, error: Tensor, patch: int) -> BandError:
        low, high = bands(error.double(), patch)
        return BandError(self.t, self.low + low.square().sum().item(), self.high + high.square().sum().item(),
                         self.count + error.numel())

    def row(self) -> dict[str, float]:
        mse_low, mse_high = self.low / self.count, self.high / self.count
        return {"t": self.t, "pixdiff_t": 1 - self.t, "mse_low": mse_low, "mse_high": mse_high,
                "mse": mse_low + mse_high, "psnr_low": to_psnr(mse_low), "psnr_high": to_psnr(mse_high),
                "psnr": to_psnr(mse_low + mse_high)}


def check_times(times: Sequence[float]) -> None:
    if not times or not all(0 < t < 1 for t in times):
        raise ValueError(f"noise levels must lie in (0, 1) (0 = data, 1 = noise), got {list(times)}")


@torch.no_grad()
def denoising_readout(model: Model, objective: Objective, images: Tensor, labels: Tensor, patch: int, *,
            times: Sequence[float] = READOUT_TIMES, seed: int = 0, num_classes: int | None = None,
            use_labels: Labels = "class", batch_size: int = 64) -> list[dict[str, float]]:
    """One row per noise level t (see the module doc): mse/psnr of x̂0 in the low and high bands.

    images (N, C, H, W) in [-1, 1] on the model's device, labels (N,); `use_labels="null"` calls
    the model with the null class `num_classes` instead (the unconditional estimate).
    """
    check_times(times)
    if use_labels == "null":
        if num_classes is None:
            raise ValueError("the null class needs num_classes")
        labels = torch.full_like(labels, num_classes)
    errors = [BandError(float(t)) for t in times]
    for start in range(0, len(images), batch_size):
        x0, y = images[start : start + batch_size], labels[start : start + batch_size]
        gens = seed_generators([derive_seed(seed, i) for i in range(start, start + len(x0))], x0.device)
        eps = randn(x0.shape, gens, device=x0.device, dtype=x0.dtype)  # (B, C, H, W): the same at every t
        for k, err in enumerate(errors):
            t = torch.full((len(x0),), 1 - err.t, device=x0.device, dtype=x0.dtype)  # pixdiff time: 1 = data
            a, s, _, _ = broadcast_coefficients(objective, t, x0)
            x_t = a * x0 + s * eps
            x0_hat = objective.predict(model(x_t, t, y).to(x0.dtype), x_t, t).x0
            errors[k] = err.add(x0_hat - x0, patch)
    return [e.row() for e in errors]
