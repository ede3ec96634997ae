"""Metrics on pixels and coarse features, for tiny models where network features saturate.

Images are uint8 (N, H, W, 3) arrays, as in sample files. Network-feature FD needs N >= its 1280 or
2048 dimensions and saturates on tiny models; these need no network and few images:

* `block_means`: grid x grid x 3 block averages in [0, 1] (48 dims at grid 4): coarse layout and
  colour, texture and grain averaged away. FD and KID on them (`coarse_fd`, `coarse_kid`) need
  N >> 48 only.
* `layout_predictions` + `balanced_accuracy`: does an image's coarse layout say which class it was
  drawn for? k-NN over labelled reference images in block means; balanced = mean per-class recall,
  so chance is 1 / classes however unbalanced the classes are.
* `in_patch_detail` / `detail_ratio`: high-frequency energy inside P x P patches (squared second
  differences whose three pixels lie in one patch, so seams do not count as detail), relative to
  the data's: 1 as much fine detail as the data, < 1 blur, > 1 grain.
* `detail_features` + `detail_fd`: block means plus the log of each block's in-patch detail energy
  (64 dims at grid 4): FD on them sees layout, colour, blur and grain at once, where FD on block
  means alone is blind to blur (it averages detail away). `detail_part_fd` is the FD of the 16 log
  energies alone (the block-mean part is `coarse_fd`), so the two parts can be read separately.
* `grain`: the noise variance on each image's flat half (finest diagonal wavelet band), in 8-bit
  levels²; `edge_sharpness`: the height of each image's steepest 1% of pixel steps, in levels.
  Grain does not see blur and sharpness barely sees grain: each names one kind of damage.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np

from pixdiff.eval.metrics import frechet_distance, kernel_distance

if TYPE_CHECKING:
    import torch

_CHUNK = 256  # images per step where a float copy of the images is made


def block_means(images: np.ndarray, grid: int) -> np.ndarray:
    """uint8 (N, H, W, 3), H and W multiples of grid -> float64 (N, grid * grid * 3) block means in [0, 1]."""
    n, h, w, c = images.shape
    if h % grid or w % grid:
        raise ValueError(f"{h}x{w} images do not split into a {grid}x{grid} grid of blocks")
    blocks = images.reshape(n, grid, h // grid, grid, w // grid, c)
    return blocks.mean(axis=(2, 4), dtype=np.float64).reshape(n, -1) / 255.0


def coarse_fd(reference: np.ndarray, samples: np.ndarray, grid: int = 4) -> float:
    """Fréchet distance between the Gaussians fitted to the block means of two image sets."""
    return _fd(block_means(reference, grid), block_means(samples, grid))


def coarse_kid(reference: np.ndarray, samples: np.ndarray, grid: int = 4, *, seed: int = 0) -> float:
    """KID (unbiased MMD², cubic kernel, see `kernel_distance`) between the block means of two image sets.

    One subset of all min(N, M) rows (a seeded random subset of the larger set): with 48-d features
    the N x N kernels are cheap, and all pairs give the least noisy estimate.
    """
    a, b = block_means(reference, grid), block_means(samples, grid)
    return kernel_distance(b, a, num_subsets=1, subset_size=min(len(a), len(b)), seed=seed)[0]


def layout_predictions(images: np.ndarray, pool: np.ndarray, pool_labels: np.ndarray, grid: int = 8,
                       k: int = 10) -> np.ndarray:
    """int64 (N,): for each image, the majority label among the k `pool` images nearest in block means.

    Ties go to the smallest label. (A nearest-neighbour distance would reward grey, hedging blobs
    over bold layouts of the wrong class; a vote does not.)
    """
    q, p = block_means(images, grid), block_means(pool, grid)
    d2 = (q * q).sum(1)[:, None] - 2 * q @ p.T + (p * p).sum(1)[None]  # (N, M) squared distances
    nearest = pool_labels[np.argsort(d2, axis=1, kind="stable")[:, :k]]  # (N, k)
    votes = np.stack([(nearest == c).sum(1) for c in range(int(pool_labels.max()) + 1)], 1)  # (N, classes)
    return votes.argmax(1)


def balanced_accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the classes present in `labels` of the fraction of that class predicted right.

    1 for a perfect classifier; exactly 1 / K (K classes present) for one that always says the same.
    """
    classes = np.unique(labels)
    return float(np.mean([(predicted[labels == c] == c).mean() for c in classes]))


def layout_accuracy(images: np.ndarray, labels: np.ndarray, pool: np.ndarray, pool_labels: np.ndarray,
                    grid: int = 8, k: int = 10) -> float:
    """Balanced accuracy of `layout_predictions` for images drawn for `labels`; chance 1 / classes."""
    return balanced_accuracy(layout_predictions(images, pool, pool_labels, grid, k), labels)


def _inside(size: int, patch: int) -> np.ndarray:
    """bool (size - 2,): second-difference centres j whose neighbours j - 1 and j + 1 lie in j's patch."""
    return ~np.isin(np.arange(1, size - 1) % patch, (0, patch - 1))


def _check_patch(h: int, w: int, patch: int) -> None:
    if patch < 3 or h % patch or w % patch:
        raise ValueError(f"in-patch detail needs a patch size >= 3 dividing {h}x{w}, got {patch}")


def in_patch_detail(images: np.ndarray, patch: int) -> float:
    """Mean squared second difference (pixels in [0, 1]) along rows and columns inside P x P patches.

    A second difference x[j-1] - 2 x[j] + x[j+1] passes frequency f with gain 4 sin²(pi f): mostly
    fine detail. Only triples whose three pixels lie in one patch count, so patch borders (seams)
    are not detail. Needs patch >= 3.
    """
    n, h, w, _ = images.shape
    _check_patch(h, w, patch)
    inside_x, inside_y = _inside(w, patch), _inside(h, patch)  # (W-2,), (H-2,)
    total = 0.0
    for start in range(0, n, _CHUNK):
        x = images[start : start + _CHUNK].astype(np.float64) / 255.0  # (B, H, W, 3)
        d2x = x[:, :, :-2] - 2 * x[:, :, 1:-1] + x[:, :, 2:]  # (B, H, W-2, 3)
        d2y = x[:, :-2] - 2 * x[:, 1:-1] + x[:, 2:]  # (B, H-2, W, 3)
        total += np.square(d2x[:, :, inside_x]).sum() + np.square(d2y[:, inside_y]).sum()
    count = n * 3 * (h * int(inside_x.sum()) + w * int(inside_y.sum()))
    return total / count


def detail_ratio(samples: np.ndarray, reference: np.ndarray, patch: int) -> float:
    """in_patch_detail of the samples over that of reference images: 1 = the data's fine detail."""
    return in_patch_detail(samples, patch) / in_patch_detail(reference, patch)


def detail_floor(patch: int) -> float:
    """The block-mean energy (see `detail_features`) that Gaussian noise of std one 8-bit level adds
    to a flat block: 3 channels x 2 directions x 6 (1/255)² per second difference, on the (P - 2)/P
    of centres whose triples lie in one patch. An 8-bit image holds no finer texture than one level
    (rounding leaves 1/12 of this), so flat and rounding-level blocks share the floor, and a 1-level
    dither sits log10(2) above it instead of orders of magnitude (below it, FD mostly counted grain)."""
    return 36 * (patch - 2) / patch / 255**2


def detail_features(images: np.ndarray, patch: int, grid: int = 4) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float64 (N, grid * grid * 4): `block_means` (grid x grid x 3), then per
    block log10(`detail_floor(patch)` + the block's mean in-patch squared second difference) (grid x grid).

    The energy is `in_patch_detail`'s, located: a map of squared row and column second differences
    (summed over channels, triples across a patch border left out) averaged over each block. The
    log makes blur (energy down by orders of magnitude) and grain (up) equally visible.
    """
    n, h, w, _ = images.shape
    _check_patch(h, w, patch)
    if h % grid or w % grid:
        raise ValueError(f"{h}x{w} images do not split into a {grid}x{grid} grid of blocks")
    inside_x, inside_y = _inside(w, patch), _inside(h, patch)
    energy = []
    for start in range(0, n, _CHUNK):
        x = images[start : start + _CHUNK].astype(np.float64) / 255.0  # (B, H, W, 3)
        e = np.zeros(x.shape[:3])  # (B, H, W): energy at each second difference's centre pixel
        d2x = np.square(x[:, :, :-2] - 2 * x[:, :, 1:-1] + x[:, :, 2:]).sum(-1)  # (B, H, W-2)
        d2y = np.square(x[:, :-2] - 2 * x[:, 1:-1] + x[:, 2:]).sum(-1)  # (B, H-2, W)
        e[:, :, 1:-1] += d2x * inside_x
        e[:, 1:-1] += d2y * inside_y[:, None]
        energy.append(e.reshape(len(x), grid, h // grid, grid, w // grid).mean(axis=(2, 4)).reshape(len(x), -1))
    return np.concatenate([block_means(images, grid), np.log10(detail_floor(patch) + np.concatenate(energy))], axis=1)


def _fd(a: np.ndarray, b: np.ndarray) -> float:
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def detail_fd(reference: np.ndarray, samples: np.ndarray, patch: int, grid: int = 4) -> float:
    """Fréchet distance between the Gaussians fitted to the `detail_features` of two image sets."""
    return _fd(detail_features(reference, patch, grid), detail_features(samples, patch, grid))


def detail_part_fd(reference: np.ndarray, samples: np.ndarray, patch: int, grid: int = 4) -> float:
    """The Fréchet distance of the grid x grid log detail energies of `detail_features` alone."""
    part = slice(3 * grid * grid, None)
    return _fd(detail_features(reference, patch, grid)[:, part], detail_features(samples, patch, grid)[:, part])


# median |z| of z ~ N(0, 1) and E[z² | |z| < that median]: the Gaussian's share of energy in its quieter half
_MEDIAN = NormalDist().inv_cdf(0.75)
_QUIET_HALF = 1 - 4 * _MEDIAN * math.exp(-_MEDIAN**2 / 2) / math.sqrt(2 * math.pi)


def grain(images: np.ndarray) -> float:
    """Mean over images of the noise variance on each image's flat half, in (8-bit levels)².

    Per 2 x 2 cell and channel, the finest diagonal wavelet coefficient (a - b - c + d) / 2 is 0 on
    flat colour, ramps and horizontal or vertical edges, and has the noise's variance s² under
    i.i.d. noise of std s. The flat half of an image is its half of cells with the smallest |coefficient|;
    the mean square there, divided by the share a Gaussian keeps in its quieter half (0.1426), is s²
    where noise of std s lies on flat colour, and exactly 0 on a clean flat image. H and W even.
    """
    n, h, w, c = images.shape
    if h % 2 or w % 2:
        raise ValueError(f"grain needs even image sides, got {h}x{w}")
    out = 0.0
    for start in range(0, n, _CHUNK):
        x = images[start : start + _CHUNK].astype(np.float64).reshape(-1, h // 2, 2, w // 2, 2, c)
        hh = (x[:, :, 0, :, 0] - x[:, :, 0, :, 1] - x[:, :, 1, :, 0] + x[:, :, 1, :, 1]) / 2  # (B, H/2, W/2, C)
        sq = np.sort(np.square(hh).reshape(len(hh), -1), axis=1)  # (B, cells)
        out += sq[:, : sq.shape[1] // 2].mean(axis=1).sum() / _QUIET_HALF
    return out / n


def edge_sharpness(images: np.ndarray, top: float = 0.01) -> float:
    """Mean over images of the (1 - top) quantile of |row and column first differences| (all
    channels), in 8-bit levels: how tall the steepest steps are. A sharp 0 -> 255 edge scores 255
    where edges make up more than `top` of the steps; a Gaussian blur lowers it to 255 x its kernel's
    centre tap; grain of a few levels barely moves it."""
    n, h, w, c = images.shape
    total = 0.0
    for start in range(0, n, _CHUNK):
        x = images[start : start + _CHUNK].astype(np.float64)
        steps = np.concatenate([np.abs(np.diff(x, axis=2)).reshape(len(x), -1),
                                np.abs(np.diff(x, axis=1)).reshape(len(x), -1)], axis=1)  # (B, steps)
        total += np.quantile(steps, 1 - top, axis=1).sum()
    return total / n


def psnr(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, peak: float = 255.0) -> float:
    """PSNR in dB between two images on one scale, `peak` its maximum (255 for uint8, 2 for [-1, 1]);
    inf where they are equal."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)
