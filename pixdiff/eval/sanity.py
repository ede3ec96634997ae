"""Sanity rows: can a metric, at a given N, tell the data from degraded data?

For a data set and N, each of `repeats` seeded splits draws two disjoint random sets A and B of N
images each, and every metric scores candidates against A as reference, one row each:

    halves       m(A, B)                two random draws: the metric's own noise at this N
    balanced     m(A, B'), B' a class-balanced draw of real images outside A with labels
                 i mod K, as the studies sample: what a perfect model scores under balanced sampling
    blurred      Gaussian blur, `blur_sigma` px (gross: detail lost inside patches)
    blur 0.7 px, blur 0.5 px          mild blur, the softness a model's samples show
    noised       Gaussian noise, `noise_std` of the 0..255 range, clipped (gross grain)
    noise 4/255, noise 2/255, noise 1/255   mild grain: noise of 4, 2, 1 8-bit levels
    seamed       each P x P patch shifted by one Gaussian offset, `seam_std` (patch seams)
    shuffled     B with its labels permuted: images that do not show the class they were drawn for

Every degradation is applied to B. Rule: a degradation is *detected* when its row is worse than
the halves row in every split by more than the halves row's spread: the best degraded score over
the splits is worse than the worst halves score. "Worse" is the metric's own direction: higher
for a distance, lower for an accuracy, farther from 1 (|log|) for a ratio to the data's. A metric
*passes* when it detects what it is for: an image-quality metric gross blur and noise; grain every
noise row; edge sharpness every blur row; the layout accuracy, which reads the class from coarse
layout and is blind to pixel degradations by design, shuffled labels; the seam score seams. The
other rows are extra information.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from pixdiff.eval.metrics import kernel_distance, precision_recall
from pixdiff.eval.pixels import (
    coarse_fd,
    coarse_kid,
    detail_fd,
    detail_part_fd,
    detail_ratio,
    edge_sharpness,
    grain,
    layout_accuracy,
)
from pixdiff.eval.seams import seam_score

Better = Literal["lower", "higher", "one"]
MILD_BLUR = (0.7, 0.5)  # px
MILD_NOISE = (4, 2, 1)  # 8-bit levels
ROWS = ("halves", "balanced", "blurred", *(f"blur {s:g} px" for s in MILD_BLUR), "noised",
        *(f"noise {k}/255" for k in MILD_NOISE), "seamed", "shuffled")
QUALITY = ("blurred", "noised")  # what an image-quality metric must detect
GRAINY = ("noised", *(f"noise {k}/255" for k in MILD_NOISE))
BLURRY = ("blurred", *(f"blur {s:g} px" for s in MILD_BLUR))
# (reference, reference labels, samples, sample labels, patch size) -> score
Score = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int], float]


@dataclass(frozen=True)
class Metric:
    name: str
    better: Better
    score: Score
    must_detect: tuple[str, ...] = QUALITY


def _seams(reference: np.ndarray, _rl: np.ndarray, samples: np.ndarray, _sl: np.ndarray, patch: int) -> float:
    return seam_score(torch.from_numpy(samples).permute(0, 3, 1, 2), torch.from_numpy(reference).permute(0, 3, 1, 2),
                      patch)


@functools.cache
def _effnet():  # noqa: ANN202 (an Extractor; loaded once, on first use: the pixel rows need no network)
    from pixdiff.eval.features import load_extractor

    return load_extractor("effnet")


_FEATURES: dict[bytes, np.ndarray] = {}  # KID, precision and recall of one image set share one extraction


def effnet_features(images: np.ndarray) -> np.ndarray:
    """float64 (N, 1280) EfficientNet-lite0 features of uint8 (N, H, W, 3) images, kept by content."""
    key = hashlib.sha1(images.tobytes()).digest() + str(images.shape).encode()
    if key not in _FEATURES:
        if len(_FEATURES) >= 32:
            _FEATURES.clear()
        _FEATURES[key] = _effnet().features(images)
    return _FEATURES[key]


def effnet_kid(reference: np.ndarray, samples: np.ndarray) -> float:
    """KID on EfficientNet-lite0 features, all pairs of min(N, M) rows (one subset)."""
    a, b = effnet_features(reference), effnet_features(samples)
    return kernel_distance(b, a, num_subsets=1, subset_size=min(len(a), len(b)))[0]


def effnet_precision_recall(reference: np.ndarray, samples: np.ndarray) -> tuple[float, float]:
    return precision_recall(effnet_features(reference), effnet_features(samples), k=3)


PIXEL_METRICS: tuple[Metric, ...] = (
    Metric("FD, 4x4 block means (48 dims)", "lower", lambda r, _rl, s, _sl, _p: coarse_fd(r, s)),
    Metric("KID, 4x4 block means", "lower", lambda r, _rl, s, _sl, _p: coarse_kid(r, s)),
    Metric("FD, 4x4 block means + log in-patch detail (64 dims)", "lower",
           lambda r, _rl, s, _sl, p: detail_fd(r, s, p)),
    Metric("FD, log in-patch detail part (16 dims)", "lower", lambda r, _rl, s, _sl, p: detail_part_fd(r, s, p)),
    Metric("balanced layout accuracy, 10-NN on 8x8 block means", "higher",
           lambda r, rl, s, sl, _p: layout_accuracy(s, sl, r, rl), must_detect=("shuffled",)),
    Metric("in-patch detail ratio", "one", lambda r, _rl, s, _sl, p: detail_ratio(s, r, p)),
    Metric("grain excess over the data (8-bit levels²)", "lower", lambda r, _rl, s, _sl, _p: grain(s) - grain(r),
           must_detect=GRAINY),
    Metric("edge sharpness ratio (steepest 1% of steps)", "one",
           lambda r, _rl, s, _sl, _p: edge_sharpness(s) / edge_sharpness(r), must_detect=BLURRY),
    Metric("seam score", "one", _seams, must_detect=("seamed",)),
)
EFFNET_METRICS: tuple[Metric, ...] = (
    Metric("KID, EfficientNet-lite0 features", "lower", lambda r, _rl, s, _sl, _p: effnet_kid(r, s)),
    Metric("precision, EfficientNet-lite0 (k = 3)", "higher",
           lambda r, _rl, s, _sl, _p: effnet_precision_recall(r, s)[0]),
    Metric("recall, EfficientNet-lite0 (k = 3)", "higher",
           lambda r, _rl, s, _sl, _p: effnet_precision_recall(r, s)[1]),
)
METRICS = PIXEL_METRICS + EFFNET_METRICS


@dataclass(frozen=True)
class Degradations:
    """The gross rows' strengths (the mild rows are fixed: `MILD_BLUR`, `MILD_NOISE`)."""

    blur_sigma: float = 1.0  # px
    noise_std: float = 0.1  # fraction of the 0..255 range, per pixel and channel
    seam_std: float = 0.05  # fraction of the range, one offset per patch and channel

    def __post_init__(self) -> None:
        if min(self.blur_sigma, self.noise_std, self.seam_std) <= 0:
            raise ValueError(f"degradation strengths must be > 0, got {self}")


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """uint8 (N, H, W, 3) -> the same, Gaussian-blurred (separable, radius ceil(3 sigma), reflected borders)."""
    radius = int(np.ceil(3 * sigma))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float64) / sigma) ** 2)
    taps = (taps / taps.sum()).expand(3, 1, -1)  # (3, 1, K): one 1-D kernel per channel
    x = torch.from_numpy(images).permute(0, 3, 1, 2).double()  # (N, 3, H, W)
    for dim in (-1, -2):  # rows, then columns
        x = x.transpose(dim, -1)
        shape = x.shape
        x = F.conv1d(F.pad(x.reshape(-1, 3, shape[-1]), (radius, radius), mode="reflect"), taps, groups=3)
        x = x.reshape(shape).transpose(dim, -1)
    return _to_uint8(x.permute(0, 2, 3, 1).numpy())


def add_noise(images: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """uint8 images plus Gaussian noise of `std` x 255 per pixel and channel, clipped and rounded."""
    return _to_uint8(images + rng.normal(0.0, std * 255.0, images.shape))


def add_seams(images: np.ndarray, patch: int, std: float, rng: np.random.Generator) -> np.ndarray:
    """uint8 (N, H, W, 3) with every P x P patch shifted by its own Gaussian offset (`std` x 255) per channel."""
    n, h, w, c = images.shape
    offsets = rng.normal(0.0, std * 255.0, (n, h // patch, 1, w // patch, 1, c))
    shifted = images.reshape(n, h // patch, patch, w // patch, patch, c) + offsets
    return _to_uint8(shifted.reshape(images.shape))


@dataclass(frozen=True)
class SanityResult:
    """One metric's scores per row, one per split."""

    metric: str
    better: Better
    scores: dict[str, tuple[float, ...]] = field(default_factory=dict)
    must_detect: tuple[str, ...] = QUALITY

    def badness(self, row: str) -> np.ndarray:
        v = np.asarray(self.scores[row], np.float64)
        if self.better == "one":
            return np.abs(np.log(v))
        return v if self.better == "lower" else -v

    def detects(self, row: str) -> bool:
        """Every split's degraded score is worse than every split's halves score."""
        return bool(self.badness(row).min() > self.badness("halves").max())

    @property
    def passes(self) -> bool:
        return all(self.detects(row) for row in self.must_detect)


def balanced_draw(labels: np.ndarray, outside: np.ndarray, n: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Indices of n images not in `outside` whose labels are i mod K (K = labels.max() + 1), as the
    studies' class-balanced sampling asks for, and those labels; a class too small is refused."""
    want = np.arange(n) % (int(labels.max()) + 1)
    free = np.setdiff1d(np.arange(len(labels)), outside)
    picked = []
    for c, count in zip(*np.unique(want, return_counts=True)):
        pool = free[labels[free] == c]
        if len(pool) < count:
            raise ValueError(f"the balanced row needs {count} images of class {c} outside A, the data have {len(pool)}")
        picked.append(rng.choice(pool, count, replace=False))
    index = np.concatenate(picked)
    return index, labels[index]


def degraded_rows(b: np.ndarray, patch: int, d: Degradations, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The degradation rows of the image set B, in `ROWS` order."""
    return {"blurred": blur(b, d.blur_sigma), **{f"blur {s:g} px": blur(b, s) for s in MILD_BLUR},
            "noised": add_noise(b, d.noise_std, rng),
            **{f"noise {k}/255": add_noise(b, k / 255, rng) for k in MILD_NOISE},
            "seamed": add_seams(b, patch, d.seam_std, rng)}


def run_sanity(images: np.ndarray, labels: np.ndarray, n: int, patch: int, *, repeats: int = 5, seed: int = 0,
           degradations: Degradations = Degradations(), metrics: tuple[Metric, ...] = METRICS
           ) -> list[SanityResult]:
    """The sanity rows of `metrics` for uint8 images (M, H, W, 3) with labels (M,), at N per side."""
    if not 2 <= n <= len(images) // 2:
        raise ValueError(f"N must be in [2, {len(images) // 2}] for two disjoint sets of N from {len(images)} images")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    size = images.shape[1]
    if patch < 3 or size % patch:
        raise ValueError(f"the patch size must be >= 3 and divide the {size} px images, got {patch}")
    scores: dict[str, dict[str, list[float]]] = {m.name: {row: [] for row in ROWS} for m in metrics}
    for split in range(repeats):
        rng = np.random.default_rng([seed, split])
        order = rng.permutation(len(images))
        a, b = np.sort(order[:n]), np.sort(order[n : 2 * n])
        balanced, balanced_labels = balanced_draw(labels, a, n, rng)
        rows = {"halves": images[b], "balanced": images[balanced], **degraded_rows(images[b], patch, degradations, rng),
                "shuffled": images[b]}
        row_labels = {row: labels[b] for row in rows} | {"balanced": balanced_labels,
                                                         "shuffled": rng.permutation(labels[b])}
        for m in metrics:
            for row in ROWS:
                scores[m.name][row].append(m.score(images[a], labels[a], rows[row], row_labels[row], patch))
    return [SanityResult(m.name, m.better, {row: tuple(v) for row, v in scores[m.name].items()}, m.must_detect)
            for m in metrics]


def _cell(values: tuple[float, ...]) -> str:
    v = np.asarray(values)
    return f"{v.mean():.4g} [{v.min():.4g}, {v.max():.4g}]" if len(v) > 1 else f"{v[0]:.4g}"


def format_table(results: list[SanityResult]) -> str:
    """Markdown: one line per metric, each row as mean [min, max] over splits, and the verdicts."""
    better = {"lower": "lower", "higher": "higher", "one": "closer to 1"}
    lines = [f"| metric | better | {' | '.join(ROWS)} | detects | must detect | passes |",
             "|---" * (len(ROWS) + 5) + "|"]
    for r in results:
        found = ", ".join(row for row in ROWS[1:] if r.detects(row)) or "none"
        cells = " | ".join(_cell(r.scores[row]) for row in ROWS)
        lines.append(f"| {r.metric} | {better[r.better]} | {cells} | {found} | {', '.join(r.must_detect)} | "
                     f"{'yes' if r.passes else 'NO'} |")
    return "\n".join(lines)
