"""The protocol an evaluation ran under, recorded beside its numbers: the same model reads 1.86, 1.90
or 1.97 FID under three pipelines, so a score without these fields cannot be compared.

It names the feature extractor (and its weights' sha256), the reference (file and sha256, and
whether its precomputed statistics or its images' features were used), N, and what the samples
file says about how it was drawn (labels, sampler, EMA, seeds, the weights' digest), as
``pixdiff.pipelines.generate`` writes it into the samples' ``meta``.
"""

from __future__ import annotations

import os
from typing import Any

from pixdiff.data.npz import load_meta
from pixdiff.eval.adm import is_adm_batch
from pixdiff.eval.features import Extractor
from pixdiff.eval.inception import WEIGHTS_SHA256, file_sha256

__all__ = ["SAMPLER_KEYS", "DRAW_KEYS", "protocol"]

# meta fields of a pixdiff samples file, grouped as the record shows them
SAMPLER_KEYS = ("solver", "steps", "cfg_scale", "cfg_interval", "time_shift", "last_step", "dtype")
DRAW_KEYS = ("labels", "num_classes", "classes", "seed", "world_size", "recipe", "checkpoint", "weights", "ema",
             "weights_digest", "digest_algorithm")


def _reference(ref: Any, extractor: Extractor) -> dict[str, Any]:
    if not isinstance(ref, (str, os.PathLike)):
        return {"kind": type(ref).__name__}  # an in-memory array or FeatureStats
    path = os.path.abspath(ref)
    if not os.path.isfile(path):
        return {"kind": "image folder", "path": path}
    if is_adm_batch(path) and extractor.spec.kind == "inception":
        kind = ("ADM reference batch: its precomputed mu/sigma (FID)"
                + (", mu_s/sigma_s (sFID)" if extractor.has_spatial else "")
                + "; features of its arr_0 images (KID, precision/recall)")
    else:
        kind = "features of its images"
    return {"kind": kind, "path": path, "sha256": file_sha256(path)}


def _samples(samples: Any) -> dict[str, Any]:
    if not isinstance(samples, (str, os.PathLike)) or not os.path.isfile(samples):
        return {"path": os.path.abspath(samples) if isinstance(samples, (str, os.PathLike)) else None}
    meta = load_meta(samples)
    out: dict[str, Any] = {"path": os.path.abspath(samples)}
    out.update({k: meta[k] for k in DRAW_KEYS if k in meta})
    sampler = {k: meta[k] for k in SAMPLER_KEYS if k in meta}
    if sampler:
        out["sampler"] = sampler
    if not meta:
        out["note"] = "the samples file records no metadata (labels, sampler, EMA, seeds unknown)"
    return out


def protocol(samples: Any, ref: Any, extractor: Extractor, *, num_samples: int, num_ref: int,
             seed: int) -> dict[str, Any]:
    """The record that goes into every `pixdiff eval` result under "protocol"."""
    named = {"name": extractor.name, "spec": str(extractor.spec), "weights_sha256": extractor.weights_sha256,
             "preprocessing": extractor.fingerprint.partition("/")[2] or "the TorchScript module's own"}
    if extractor.spec.kind == "inception":  # the published FID weights, or other weights in their layout
        named["published_weights"] = extractor.weights_sha256 == WEIGHTS_SHA256
    return {
        "extractor": named,
        "reference": _reference(ref, extractor),
        "samples": _samples(samples),
        "num_samples": num_samples,
        "num_ref": num_ref,
        "metric_seed": seed,  # KID subsets and the reference feature subset
    }
