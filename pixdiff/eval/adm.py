"""The ADM evaluator's reference batches (openai/guided-diffusion ``evaluations/``), e.g.
``VIRTUAL_imagenet256_labeled.npz``: ``arr_0`` uint8 (N, H, W, 3) images plus the precomputed
Inception statistics ``mu``/``sigma`` (pool_3, 2048) and ``mu_s``/``sigma_s`` (mixed_6/conv's first
7 channels, 2023), which its FID and sFID read instead of the images' features. Its precision and
recall use the features of ``arr_0``.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass

import numpy as np

__all__ = ["ADM_KEYS", "AdmStats", "is_adm_batch", "read_adm_stats", "check_resolution"]

ADM_KEYS = ("arr_0", "mu", "sigma", "mu_s", "sigma_s")


@dataclass(frozen=True)
class AdmStats:
    """The precomputed statistics of a reference batch (float64)."""

    mu: np.ndarray  # (2048,)
    sigma: np.ndarray  # (2048, 2048)
    mu_s: np.ndarray  # (2023,)
    sigma_s: np.ndarray  # (2023, 2023)


def _files(path: str | os.PathLike) -> list[str]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return list(data.files)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return []


def is_adm_batch(path: str | os.PathLike) -> bool:
    """True for an ``.npz`` holding the images and both precomputed statistics pairs."""
    return os.path.isfile(path) and set(ADM_KEYS) <= set(_files(path))


def read_adm_stats(path: str | os.PathLike) -> AdmStats:
    """The four statistics arrays, shape-checked against each other (one line when they disagree)."""
    with np.load(path, allow_pickle=False) as data:
        stats = AdmStats(*(np.asarray(data[k], np.float64) for k in ADM_KEYS[1:]))
    for mu, sigma, what in ((stats.mu, stats.sigma, "mu/sigma"), (stats.mu_s, stats.sigma_s, "mu_s/sigma_s")):
        if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
            raise ValueError(f"{path}: reference batch {what} have shapes {mu.shape} and {sigma.shape}, "
                             "not (D,) and (D, D)")
    return stats


def check_resolution(ref_hw: tuple[int, ...], samples_hw: tuple[int, ...], ref: object) -> None:
    """Refuse a reference batch whose images (H, W) are not the samples' size: its precomputed
    statistics describe images at that resolution, so a score against other-sized samples means nothing."""
    if tuple(ref_hw[:2]) != tuple(samples_hw[:2]):
        raise ValueError(f"reference batch {ref} holds {ref_hw[0]}x{ref_hw[1]} images but the samples are "
                         f"{samples_hw[0]}x{samples_hw[1]}: use the reference batch of the samples' "
                         "resolution (e.g. VIRTUAL_imagenet256_labeled.npz for 256 px)")
