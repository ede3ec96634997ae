"""Scores of a trained denoiser beyond FD: detail against the data's, one-step denoising PSNR, spread.

Pure functions over arrays and tensors; the drivers feed them samples, data and models.
"""

from __future__ import annotations

import numpy as np
import torch

from experiments import common


def detail_ratio(samples: np.ndarray, reference: np.ndarray, cutoff: float = 0.25) -> float:
    """Mean high-frequency energy of uint8 samples (N, H, W, 3) over that of reference images (M, H, W, 3).

    Energy: luminance spectral energy above `cutoff` cycles/pixel (`common.high_frequency_energy`).
    1 = as much fine detail as the data; < 1 blur; > 1 grain (noise the sampler left behind).
    """
    def mean_energy(images: np.ndarray) -> float:
        return float(np.mean([common.high_frequency_energy(img, cutoff) for img in images]))

    return mean_energy(samples) / mean_energy(reference)


def layout_accuracy(images: np.ndarray, labels: np.ndarray, pool: np.ndarray, pool_labels: np.ndarray,
                    grid: int = 8, k: int = 10) -> float:
    """Fraction of uint8 images (N, H, W, 3) whose label (N,) is the majority label among the k `pool`
    images nearest to them in grid x grid block means (ties: the smallest label).

    Block means keep shapes and colours and drop texture and grain, so this asks whether an image's
    coarse layout says which class it was drawn for: the global picture, which FD-EffNet at small
    budgets scores less than grain. Chance is about 1 / (number of classes). (A nearest-neighbour
    distance would reward grey, hedging blobs over bold layouts of the wrong class.)
    """
    def coarse(a: np.ndarray) -> np.ndarray:  # (n, H, W, 3) -> (n, grid * grid * 3)
        n, h, w, c = a.shape
        return a.astype(np.float64).reshape(n, grid, h // grid, grid, w // grid, c).mean((2, 4)).reshape(n, -1) / 255

    q, p = coarse(images), coarse(pool)
    d2 = (q * q).sum(1)[:, None] - 2 * q @ p.T + (p * p).sum(1)[None]  # (N, M) squared distances
    nearest = pool_labels[np.argsort(d2, axis=1, kind="stable")[:, :k]]  # (N, k)
    votes = np.stack([(nearest == c).sum(1) for c in range(int(pool_labels.max()) + 1)], 1)  # (N, classes)
    return float((votes.argmax(1) == labels).mean())


@torch.no_grad()
def denoise_psnr(model: torch.nn.Module, objective, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor,
                 t: float) -> float:
    """PSNR (dB, images in [-1, 1] scored on [0, 1]) of the one-step estimate x0_hat of x (B, C, H, W)
    from x_t = t x + (1 - t) eps (t = 1 is data), labels y (B,), over the whole batch."""
    ts = torch.full((x.shape[0],), t, device=x.device)
    x_t = t * x + (1 - t) * eps  # (B, C, H, W)
    x0 = objective.predict(model(x_t, ts, y).float(), x_t, ts).x0.clamp(-1, 1)
    return common.psnr((x0 + 1) / 2, (x + 1) / 2, 1.0)


def spread(values: list[float]) -> dict[str, float | None]:
    """mean, sample std (None for one value), min and max of per-seed figures."""
    v = [float(x) for x in values]
    return {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else None,
            "min": min(v), "max": max(v), "n": len(v)}
