"""Sample-quality metrics and the reference-statistics cache.

Metric arithmetic works on features from ``pixdiff.eval.features`` (float64 where it matters):

* Fréchet distance (FID with Inception features, FD-EffNet with EfficientNet-lite0 features);
* KID: unbiased MMD² with the cubic polynomial kernel over random subsets (Bińkowski et al. 2018,
  as in clean-fid / torchmetrics / the StyleGAN metrics);
* Inception-style score from class logits (Salimans et al. 2016; 10 splits like the ADM evaluator);
* improved precision/recall (Kynkäänniemi et al. 2019): k-NN manifolds, k=3, chunked distances.

``evaluate`` ties them together. Reference statistics (mu, sigma, and a bounded set of reference
features for KID and precision/recall) are cached in an ``.npz`` marked with ``STATS_FORMAT`` and
keyed by the reference's path, size and mtime plus the extractor's name and weights fingerprint, so
a second evaluation against the same reference skips its feature extraction. Statistics made by a
different extractor are refused, never compared.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixdiff.data.npz import ImageSource, open_images, savez_atomic
from pixdiff.eval.adm import check_resolution, is_adm_batch, read_adm_stats
from pixdiff.eval.features import Extractor, ExtractorSpec, load_extractor
from pixdiff.eval.protocol import protocol
from pixdiff.runtime.paths import cache_home
from pixdiff.runtime.progress import OnProgress

__all__ = [
    "STATS_FORMAT",
    "FeatureStats",
    "frechet_distance",
    "kernel_distance",
    "inception_score",
    "precision_recall",
    "compute_stats",
    "save_stats",
    "load_stats",
    "is_stats_file",
    "reference_stats",
    "default_cache_dir",
    "evaluate",
    "check_reference_resolution",
    "SampleSizeWarning",
]

log = logging.getLogger(__name__)

STATS_FORMAT = "pixdiff-feature-stats-v1"

ImagesLike = np.ndarray | str | os.PathLike | ImageSource


class SampleSizeWarning(UserWarning):
    """Fewer images than feature dimensions: the Fréchet distance is not meaningful."""


@dataclass(frozen=True)
class FeatureStats:
    """Gaussian statistics of a feature set, tagged with the extractor that produced them.

    ``features`` holds (M, F) float32 feature rows for KID and precision/recall: all of them for
    samples, a seeded random subset of at most ``max_features`` for a reference, or None.
    """

    extractor: str
    fingerprint: str
    count: int
    mu: np.ndarray  # (F,) float64
    sigma: np.ndarray  # (F, F) float64, unbiased (N - 1) like np.cov
    features: np.ndarray | None = None
    # sFID's spatial features (extractors with ``has_spatial``): (S,) and (S, S) float64, or None
    spatial_mu: np.ndarray | None = None
    spatial_sigma: np.ndarray | None = None


# --------------------------------------------------------------------------------------------------
# Metric arithmetic


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    *,
    device: str | torch.device = "cpu",
) -> float:
    """``|mu1 - mu2|² + Tr(S1 + S2 - 2 (S1 S2)^½)``, computed in float64 on ``device``.

    Tr((S1 S2)^½) is the sum of square roots of the eigenvalues of the symmetric PSD matrix
    S1^½ S2 S1^½, which has the same spectrum as S1 S2. The reference implementations (pytorch-fid,
    the ADM evaluator) take scipy's ``sqrtm(S1 @ S2)`` and retry with 1e-6·I added to both when it
    fails on near-singular covariances; in this form round-off only produces tiny eigenvalues
    in the null space, which are zeroed, so no regularisation is needed. Where ``sqrtm``
    succeeds the two agree to round-off, and this is several times faster for 2048-d features.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}"
        )
    if not all(np.isfinite(a).all() for a in (mu1, mu2, sigma1, sigma2)):
        raise ValueError("statistics contain NaN or inf")
    s1, s2 = (torch.as_tensor(s, device=device) for s in (sigma1, sigma2))
    root1 = _psd_sqrt(s1)
    tr_covmean = _clip_round_off(torch.linalg.eigvalsh(_symmetric(root1 @ s2 @ root1))).sqrt().sum().item()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def kernel_distance(
    feats1: np.ndarray,
    feats2: np.ndarray,
    *,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[float, float]:
    """KID: unbiased MMD² with kernel ``(x·y / d + 1)³``; (mean, std) over random subsets.

    Subsets of ``min(subset_size, len(feats1), len(feats2))`` rows are drawn without replacement,
    as clean-fid and torchmetrics do (defaults 100 x 1000). Float64 kernels on ``device``.
    """
    feats1, feats2 = np.asarray(feats1), np.asarray(feats2)
    if feats1.ndim != 2 or feats2.ndim != 2 or feats1.shape[1] != feats2.shape[1]:
        raise ValueError(f"feature shapes differ or are not 2-D: {feats1.shape} vs {feats2.shape}")
    m = min(subset_size, len(feats1), len(feats2))
    if m < 2:
        raise ValueError(f"KID needs at least 2 feature rows per set, got {len(feats1)} and {len(feats2)}")
    d = feats1.shape[1]
    rng = np.random.default_rng(seed)
    x_all = torch.as_tensor(feats1, dtype=torch.float64, device=device)
    y_all = torch.as_tensor(feats2, dtype=torch.float64, device=device)
    values = []
    for _ in range(num_subsets):
        x = x_all[torch.from_numpy(rng.choice(len(feats1), m, replace=False)).to(x_all.device)]
        y = y_all[torch.from_numpy(rng.choice(len(feats2), m, replace=False)).to(y_all.device)]
        kxx = (x @ x.T / d + 1.0) ** 3
        kyy = (y @ y.T / d + 1.0) ** 3
        kxy = (x @ y.T / d + 1.0) ** 3
        # Unbiased: the within-set terms leave out the diagonal (k(x, x) pairs).
        within = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        values.append((within - 2.0 * kxy.mean()).item())
    return float(np.mean(values)), float(np.std(values))


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """``exp(E_x KL(p(y|x) || p(y)))`` from class logits; (mean, std) over ``splits`` equal parts."""
    logits = np.asarray(logits, np.float64)
    if logits.ndim != 2 or len(logits) < splits:
        raise ValueError(f"need (N, C) logits with N >= splits={splits}, got {logits.shape}")
    logp = logits - _logsumexp(logits)
    p = np.exp(logp)
    n = len(p)
    scores = []
    for i in range(splits):
        rows = slice(i * n // splits, (i + 1) * n // splits)
        part = p[rows]
        with np.errstate(divide="ignore", invalid="ignore"):  # 0 * log 0 terms are set to 0
            kl = np.where(part > 0, part * (logp[rows] - np.log(part.mean(axis=0))), 0.0)
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def precision_recall(
    real: np.ndarray,
    fake: np.ndarray,
    *,
    k: int = 3,
    device: str | torch.device = "cpu",
    chunk: int = 8192,
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019), as in the ADM evaluator.

    Each set's manifold is the union of balls around its points with radius the distance to the
    k-th nearest other point. Precision: fraction of ``fake`` inside the real manifold; recall:
    fraction of ``real`` inside the fake manifold. Distances are computed in (chunk x chunk)
    float32 blocks on ``device``, so 50k x 50k sets never materialise a full distance matrix.
    """
    if len(real) <= k or len(fake) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} points per set")
    device = torch.device(device)
    r = torch.as_tensor(np.asarray(real, np.float32), device=device)
    f = torch.as_tensor(np.asarray(fake, np.float32), device=device)
    real_radii = _knn_sq_radii(r, k, chunk)
    fake_radii = _knn_sq_radii(f, k, chunk)
    precision = _inside(f, r, real_radii, chunk).double().mean().item()
    recall = _inside(r, f, fake_radii, chunk).double().mean().item()
    return precision, recall


# --------------------------------------------------------------------------------------------------
# Statistics and their cache


def compute_stats(
    images: ImagesLike,
    extractor: Extractor,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    max_features: int | None = None,
    seed: int = 0,
    on_progress: OnProgress | None = None,
) -> FeatureStats:
    """Run ``extractor`` over images (array, ``.npz``, folder) -> mu, sigma and kept feature rows.

    ``max_features``: keep at most this many feature rows (a seeded random subset); None keeps all.
    ``on_progress(done, total)`` is called with the images extracted after each batch.
    """
    stats, _ = _extract(images, extractor, batch_size, device, max_features, seed, want_logits=False,
                        want_spatial=extractor.has_spatial, on_progress=on_progress)
    return stats


def save_stats(path: str | os.PathLike, stats: FeatureStats) -> None:
    """Write statistics as an ``.npz`` with the ``STATS_FORMAT`` marker (atomically)."""
    arrays = dict(
        format=np.array(STATS_FORMAT),
        extractor=np.array(stats.extractor),
        fingerprint=np.array(stats.fingerprint),
        count=np.array(stats.count, np.int64),
        mu=stats.mu,
        sigma=stats.sigma,
    )
    if stats.features is not None:
        arrays["features"] = stats.features.astype(np.float32)
    if stats.spatial_mu is not None:
        arrays["spatial_mu"], arrays["spatial_sigma"] = stats.spatial_mu, stats.spatial_sigma
    savez_atomic(path, **arrays)


def load_stats(path: str | os.PathLike) -> FeatureStats:
    """Read statistics written by ``save_stats``; clear errors for other or damaged files."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such statistics file: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from exc
    with data:
        if "format" not in data.files or str(data["format"]) != STATS_FORMAT:
            raise ValueError(f"{path}: not a pixdiff statistics file (no '{STATS_FORMAT}' marker)")
        try:
            return FeatureStats(
                extractor=str(data["extractor"]),
                fingerprint=str(data["fingerprint"]),
                count=int(data["count"]),
                mu=data["mu"].astype(np.float64),
                sigma=data["sigma"].astype(np.float64),
                features=data["features"] if "features" in data.files else None,
                spatial_mu=data["spatial_mu"] if "spatial_mu" in data.files else None,
                spatial_sigma=data["spatial_sigma"] if "spatial_sigma" in data.files else None,
            )
        except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{path}: damaged statistics file ({exc})") from exc


def is_stats_file(path: str | os.PathLike) -> bool:
    """True if ``path`` is an ``.npz`` carrying the ``STATS_FORMAT`` marker."""
    if not os.path.isfile(path):
        return False
    try:
        with np.load(path, allow_pickle=False) as data:
            return "format" in data.files and str(data["format"]) == STATS_FORMAT
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return False


def default_cache_dir() -> Path:
    """Reference statistics live in the cache home (`pixdiff.runtime.paths.cache_home`) under ref-stats/."""
    return cache_home() / "ref-stats"


def reference_stats(
    ref: ImagesLike | FeatureStats,
    extractor: Extractor,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    max_features: int = 20_000,
    seed: int = 0,
    on_progress: OnProgress | None = None,
) -> FeatureStats:
    """Statistics of a reference: a statistics ``.npz``, an images ``.npz``/folder (cached), or an array.

    Raises ``ValueError`` when the statistics were made by a different extractor or weights.
    ``on_progress`` as in ``compute_stats``, called only when features are extracted (not cached).
    """
    if isinstance(ref, FeatureStats):
        stats, where = ref, "the given reference statistics"
    elif isinstance(ref, np.ndarray):
        stats, where = compute_stats(ref, extractor, batch_size=batch_size, device=device,
                                     max_features=max_features, seed=seed, on_progress=on_progress
                                     ), "the reference array"
    elif not isinstance(ref, ImageSource) and is_stats_file(ref):
        stats, where = load_stats(ref), str(ref)
    else:
        source = ref if isinstance(ref, ImageSource) else open_images(ref)
        where = source.path
        cache_file = None
        if use_cache:
            key = _cache_key(source, extractor, max_features, seed)
            cache_file = Path(cache_dir or default_cache_dir()) / f"ref-{extractor.name}-{key}.npz"
        stats = _load_cached(cache_file) if cache_file is not None else None
        if stats is None:
            log.info("extracting %s features of %d reference images from %s",
                     extractor.name, source.count, where)
            stats = compute_stats(source, extractor, batch_size=batch_size, device=device,
                                  max_features=max_features, seed=seed, on_progress=on_progress)
            if cache_file is not None:
                save_stats(cache_file, stats)
                log.info("cached reference statistics in %s", cache_file)
        else:
            log.info("using cached reference statistics %s", cache_file)
        if extractor.spec.kind == "inception" and is_adm_batch(source.path):
            stats = _with_adm_stats(stats, source.path, extractor)
    _check_compatible(stats, extractor, where)
    return stats


def _with_adm_stats(stats: FeatureStats, path: str | os.PathLike, extractor: Extractor) -> FeatureStats:
    """An ADM reference batch's own mu/sigma (and mu_s/sigma_s where the extractor gives spatial
    features) in place of those of its images' features: what the ADM evaluator's FID and sFID read.
    The feature rows (KID, precision/recall) stay those of its images."""
    adm = read_adm_stats(path)
    if adm.mu.shape != stats.mu.shape:
        raise ValueError(f"{path}: reference batch mu has {len(adm.mu)} dims, the {extractor.name} features "
                         f"{len(stats.mu)}")
    spatial = extractor.has_spatial
    return replace(stats, mu=adm.mu, sigma=adm.sigma, spatial_mu=adm.mu_s if spatial else None,
                   spatial_sigma=adm.sigma_s if spatial else None)


# --------------------------------------------------------------------------------------------------
# Evaluation


def evaluate(
    samples: ImagesLike,
    ref: ImagesLike | FeatureStats,
    *,
    features: str | ExtractorSpec | Extractor = "effnet",
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    max_ref_features: int = 20_000,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    is_splits: int = 10,
    pr_k: int = 3,
    seed: int = 0,
    on_progress: OnProgress | None = None,
    reference_source: ImagesLike | None = None,
) -> dict[str, Any]:
    """Score samples against a reference; keys carry the extractor (``fd_effnet`` ... or ``fid`` ...).

    Returns the Fréchet distance (``fid`` / ``fd_effnet``), ``kid*`` (+ ``_std``), ``is*`` (+ ``_std``),
    ``precision*``, ``recall*`` (KID and precision/recall need reference feature rows, i.e.
    ``max_ref_features > 0``), plus ``extractor``, ``metric`` (its display name), ``num_samples``,
    ``num_ref`` and ``num_ref_features`` (rows used for KID and precision/recall), ``sfid`` where the
    extractor and the reference have spatial statistics, and ``protocol`` (``eval.protocol``).
    An ADM reference batch at another resolution than the samples is refused before any extraction.
    ``reference_source``: the file or folder ``ref`` statistics were computed from, for the record.
    ``on_progress(done, total)`` follows the samples' feature extraction; to follow the reference's
    too, pass ``reference_stats(..., on_progress=...)`` as ``ref``.
    """
    source = ref if reference_source is None else reference_source
    check_reference_resolution(samples, source)
    extractor = features if isinstance(features, Extractor) else load_extractor(features)
    ref_stats = reference_stats(ref, extractor, batch_size=batch_size, device=device, cache_dir=cache_dir,
                                use_cache=use_cache, max_features=max_ref_features, seed=seed)
    sample_stats, logits = _extract(samples, extractor, batch_size, device, None, seed,
                                    want_logits=extractor.has_logits, want_spatial=ref_stats.spatial_mu is not None,
                                    on_progress=on_progress)
    spec, sfx = extractor.spec, extractor.spec.key_suffix
    warn_if_too_few(spec.metric_name, sample_stats.count, ref_stats.count, len(sample_stats.mu))
    ref_rows = 0 if ref_stats.features is None else len(ref_stats.features)
    out: dict[str, Any] = {
        "extractor": extractor.name,
        "metric": spec.metric_name,
        "num_samples": sample_stats.count,
        "num_ref": ref_stats.count,
        "num_ref_features": ref_rows,
        spec.fd_key: frechet_distance(sample_stats.mu, sample_stats.sigma, ref_stats.mu, ref_stats.sigma,
                                      device=device),
    }
    if sample_stats.spatial_mu is not None:  # sFID (Nash et al. 2021), as the ADM evaluator computes it
        out[f"sfid{sfx}"] = frechet_distance(sample_stats.spatial_mu, sample_stats.spatial_sigma,
                                             ref_stats.spatial_mu, ref_stats.spatial_sigma, device=device)
    if ref_stats.features is not None and min(ref_rows, sample_stats.count) > pr_k:
        assert sample_stats.features is not None  # samples keep all their feature rows
        out[f"kid{sfx}"], out[f"kid{sfx}_std"] = kernel_distance(
            sample_stats.features, ref_stats.features, num_subsets=kid_subsets,
            subset_size=kid_subset_size, seed=seed, device=device)
        out[f"precision{sfx}"], out[f"recall{sfx}"] = precision_recall(
            ref_stats.features, sample_stats.features, k=pr_k, device=device)
    if logits is not None and len(logits) >= is_splits:
        out[f"is{sfx}"], out[f"is{sfx}_std"] = inception_score(logits, splits=is_splits)
    out["protocol"] = protocol(samples, source, extractor, num_samples=sample_stats.count, num_ref=ref_stats.count,
                               seed=seed)
    return out


def check_reference_resolution(samples: ImagesLike, ref: ImagesLike | FeatureStats) -> None:
    """One line (ValueError) when ``ref`` is an ADM reference batch of another image size than ``samples``."""
    if isinstance(ref, (str, os.PathLike)) and is_adm_batch(ref):
        hw = samples.shape[1:3] if isinstance(samples, np.ndarray) else (
            samples if isinstance(samples, ImageSource) else open_images(samples)).shape
        check_resolution(open_images(ref).shape, hw, ref)


def warn_if_too_few(metric: str, num_samples: int, num_ref: int, dim: int) -> None:
    """Warn when either side has fewer images than feature dimensions.

    Below that its covariance estimate is rank-deficient: the distance is then dominated by the
    sample size (biased upwards, noisy) and says little about the model. Values at one N can still
    be ranked against each other, never against published numbers."""
    n = min(num_samples, num_ref)
    if n < dim:
        warnings.warn(
            f"{metric} from {num_samples} samples against {num_ref} reference images: fewer than its {dim} "
            f"feature dimensions, so the value is biased upwards and noisy; compare only runs with the same "
            f"N, and use at least {dim} (50,000 for the published protocol)", SampleSizeWarning, stacklevel=3)


# --------------------------------------------------------------------------------------------------
# Helpers


class _Moments:
    """Streaming mean and covariance in float64, accumulated around the first batch's mean so that
    sum-of-squares cancellation stays harmless."""

    def __init__(self) -> None:
        self.shift = self.total = self.outer = None
        self.count = 0

    def add(self, feats: torch.Tensor) -> None:
        feats = feats.double()
        if self.shift is None:
            self.shift = feats.mean(dim=0)
            self.total, self.outer = torch.zeros_like(self.shift), self.shift.new_zeros(len(self.shift), len(self.shift))
        centred = feats - self.shift
        self.total += centred.sum(dim=0)
        self.outer += centred.T @ centred
        self.count += len(feats)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu (F,), unbiased sigma (F, F)) as numpy float64."""
        mean = self.total / self.count
        sigma = (self.outer - self.count * torch.outer(mean, mean)) / (self.count - 1)
        return (self.shift + mean).cpu().numpy(), _symmetric(sigma).cpu().numpy()


def _extract(
    images: ImagesLike,
    extractor: Extractor,
    batch_size: int,
    device: str | torch.device,
    max_features: int | None,
    seed: int,
    *,
    want_logits: bool,
    want_spatial: bool = False,
    on_progress: OnProgress | None = None,
) -> tuple[FeatureStats, np.ndarray | None]:
    """Stream images through the extractor, accumulating mean/covariance (and the spatial features'
    with ``want_spatial``) in float64 on ``device``."""
    count, chunks = _image_chunks(images, batch_size)
    if count < 2:
        raise ValueError(f"need at least 2 images to estimate feature statistics, got {count}")
    keep = None
    if max_features is not None and max_features < count:
        keep = np.sort(np.random.default_rng(seed).choice(count, max_features, replace=False))
    pooled, spatial = _Moments(), _Moments()
    kept, logits, start = [], [], 0
    for feats, batch_logits, batch_spatial in extractor.run(chunks, batch_size=batch_size, device=device,
                                                            want_logits=want_logits, want_spatial=want_spatial):
        pooled.add(feats)
        if batch_spatial is not None:
            spatial.add(batch_spatial)
        rows = slice(None) if keep is None else keep[(keep >= start) & (keep < start + len(feats))] - start
        kept.append(feats[rows].float().cpu().numpy())
        if batch_logits is not None:
            logits.append(batch_logits.double().cpu().numpy())
        start += len(feats)
        if on_progress is not None:
            on_progress(start, count)
    mu, sigma = pooled.result()
    spatial_mu, spatial_sigma = spatial.result() if want_spatial else (None, None)
    stats = FeatureStats(extractor=extractor.name, fingerprint=extractor.fingerprint, count=count, mu=mu,
                         sigma=sigma, features=None if max_features == 0 else np.concatenate(kept),
                         spatial_mu=spatial_mu, spatial_sigma=spatial_sigma)
    return stats, np.concatenate(logits) if logits else None


def _image_chunks(images: ImagesLike, batch_size: int) -> tuple[int, Iterable[np.ndarray]]:
    if isinstance(images, np.ndarray):
        return len(images), [images]
    source = images if isinstance(images, ImageSource) else open_images(images)
    # Chunks of ~256 images bound memory for 512 px sample files; whole batches avoid ragged ones.
    return source.count, source.chunks(batch_size * max(1, 256 // batch_size))


def _cache_key(source: ImageSource, extractor: Extractor, max_features: int, seed: int) -> str:
    """Hash of the reference's identity (path, size, mtime of each file) and the extraction settings."""
    digest = hashlib.sha256()
    digest.update(f"{extractor.name}|{extractor.fingerprint}|{max_features}|{seed}|".encode())
    for file in source.files or (source.path,):
        st = os.stat(file)
        digest.update(f"{os.path.abspath(file)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def _load_cached(path: Path) -> FeatureStats | None:
    if not path.exists():
        return None
    try:
        return load_stats(path)
    except ValueError as exc:  # damaged cache entry: recompute and overwrite it
        log.warning("ignoring unreadable cache entry %s (%s)", path, exc)
        return None


def _check_compatible(stats: FeatureStats, extractor: Extractor, where: str) -> None:
    if stats.extractor != extractor.name:
        raise ValueError(
            f"{where} holds '{stats.extractor}' feature statistics but the samples are scored with "
            f"'{extractor.name}' ({extractor.spec}); recompute the reference statistics with the same "
            "extractor -- distances between different feature spaces are meaningless"
        )
    if stats.fingerprint != extractor.fingerprint:
        raise ValueError(
            f"{where} was computed with different '{stats.extractor}' weights or preprocessing "
            f"(fingerprint {stats.fingerprint}, current {extractor.fingerprint}); recompute it"
        )


def _symmetric(a: torch.Tensor) -> torch.Tensor:
    return (a + a.T) / 2.0


def _psd_sqrt(a: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(_symmetric(a))
    return (v * _clip_round_off(w).sqrt()) @ v.T


def _clip_round_off(eig: torch.Tensor) -> torch.Tensor:
    """Zero the eigenvalues of a PSD matrix that are round-off (negative or below d·eps·max).

    Covariances from fewer samples than dimensions are singular; their null-space eigenvalues
    come out as +-1e-16-sized noise, and the square root would amplify that to ~1e-8 each.
    """
    tol = eig.max().clamp_min(0.0) * len(eig) * torch.finfo(eig.dtype).eps
    return torch.where(eig > tol, eig, torch.zeros_like(eig))


def _logsumexp(x: np.ndarray) -> np.ndarray:
    top = x.max(axis=1, keepdims=True)
    return top + np.log(np.exp(x - top).sum(axis=1, keepdims=True))


def _knn_sq_radii(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Squared distance from each row of x to its k-th nearest other row (self sits at distance 0)."""
    radii = []
    for rows in x.split(chunk):
        best = torch.full((len(rows), k + 1), float("inf"), device=x.device)
        for cols in x.split(chunk):
            block = torch.cat([best, _sq_dists(rows, cols)], dim=1)
            best = block.topk(k + 1, dim=1, largest=False).values
        radii.append(best[:, k])
    return torch.cat(radii)


def _inside(queries: torch.Tensor, points: torch.Tensor, sq_radii: torch.Tensor, chunk: int) -> torch.Tensor:
    """Bool per query row: within the squared radius of at least one point."""
    hits = []
    for q in queries.split(chunk):
        hit = torch.zeros(len(q), dtype=torch.bool, device=queries.device)
        for p, r in zip(points.split(chunk), sq_radii.split(chunk)):
            hit |= (_sq_dists(q, p) <= r[None, :]).any(dim=1)
        hits.append(hit)
    return torch.cat(hits)


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # |a|² + |b|² - 2 a·b: one matmul per block, like the ADM evaluator's DistanceBlock.
    d = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return d.clamp_min_(0.0)
