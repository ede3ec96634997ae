"""FD and KID of small sample sets against one reference: what a sweep scores each cell with and
what training logs every train.eval_every steps.

The reference's statistics are computed once (and cached on disk as `pixdiff eval` caches them);
each set is then scored in memory. Small N gives biased, noisy Frechet distances (see
`eval.metrics.warn_if_too_few`): values rank settings at one N, they never compare with 50k numbers.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pixdiff.data.reference import reference_source
from pixdiff.eval.features import Extractor, load_extractor
from pixdiff.eval.metrics import FeatureStats, SampleSizeWarning, evaluate, reference_stats
from pixdiff.pipelines.generate import OutputError
from pixdiff.runtime.progress import OnProgress

KID_MIN = 4  # evaluate() computes KID from more than its k = 3 nearest neighbours' worth of rows


@dataclass(frozen=True)
class Scorer:
    """An extractor with the reference statistics it scores against."""
    extractor: Extractor
    reference: FeatureStats
    ref: str  # the spec it was opened from, for the record
    device: str
    batch_size: int = 64


@dataclass(frozen=True)
class Score:
    metric: str  # the Frechet distance's name: "FD-EffNet" or "FID"
    fd: float
    kid: float
    kid_std: float


def open_scorer(ref: str, features: str, resolution: int, *, device: str, batch_size: int = 64,
                cache_dir: str | Path | None = None, on_progress: OnProgress | None = None) -> Scorer:
    """The extractor `features` ('effnet', 'inception:PATH') and the statistics of `ref` (as
    `pixdiff eval --ref` takes it: training data at `resolution`, or a path); `on_progress` follows
    the reference's feature extraction when it is not cached yet."""
    extractor = load_extractor(features)
    path = reference_source(ref, resolution, cache_dir=cache_dir)
    stats = reference_stats(path, extractor, batch_size=batch_size, device=device, on_progress=on_progress)
    rows = 0 if stats.features is None else len(stats.features)
    if rows < KID_MIN:
        raise ValueError(f"reference {ref}: {rows} feature rows; KID needs at least {KID_MIN} images")
    return Scorer(extractor, stats, ref, device, batch_size)


def score_images(images: np.ndarray, scorer: Scorer) -> Score:
    """FD and KID of uint8 (N, H, W, 3) images, N >= KID_MIN; a non-finite score is an OutputError
    (degenerate features: the images say nothing), never a number."""
    if len(images) < KID_MIN:
        raise ValueError(f"{len(images)} images: KID needs at least {KID_MIN}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SampleSizeWarning)  # small N is the point here; the docs say what it means
        result = evaluate(images, scorer.reference, features=scorer.extractor, batch_size=scorer.batch_size,
                          device=scorer.device)
    spec = scorer.extractor.spec
    score = Score(str(result["metric"]), float(result[spec.fd_key]), float(result[f"kid{spec.key_suffix}"]),
                  float(result[f"kid{spec.key_suffix}_std"]))
    if not (math.isfinite(score.fd) and math.isfinite(score.kid)):
        raise OutputError(f"the scores are not finite ({score.metric} {score.fd}, KID {score.kid})")
    return score
