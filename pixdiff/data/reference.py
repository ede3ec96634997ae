"""A training data set as an ADM-layout image file: the reference batch that samples are scored against.

Samples must be compared with the images the model was trained on, decoded exactly as training
decodes them (ADM crop or whole-image resize, alpha composited onto white) at the samples'
resolution. So the reference is read from the training cache (`prepare`), never re-decoded here:

    pixdiff data export emoji ref.npz --resolution 64             # all 3,773 emoji, 64 px
    pixdiff data export emoji half0.npz --resolution 64 --part 0/2  # every other image
    pixdiff eval samples.npz --ref emoji                            # the same, built on the fly

`--part K/M` keeps the images whose cache index i has i % M == K: M disjoint parts that each
cover every class in proportion (the cache is ordered by class). The images are written in a
fixed shuffled order.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from pixdiff.data.npz import save_samples
from pixdiff.runtime.progress import OnProgress

from .cache import Cache, prepare
from .images import DataError

REFERENCE_FILE = "reference.npz"  # kept inside the cache folder it was exported from


def parse_part(text: str | None) -> tuple[int, int] | None:
    """'K/M' -> (K, M) with 0 <= K < M; None stays None."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise DataError(f"--part must be K/M with 0 <= K < M (e.g. 0/2), got {text!r}")
    return int(match[1]), int(match[2])


def cache_images(cache: Cache, part: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The cache's images as uint8 (n, H, W, 3) and labels int64 (n,), optionally one part K/M."""
    index = np.arange(cache.info.count)
    if part is not None:
        index = index[index % part[1] == part[0]]
    if len(index) == 0:
        raise DataError(f"cache {cache.info.path} has no images in part {part}")
    # a fixed shuffle: the cache is sorted by class, and Inception-Score splits of a sorted file
    # would each see only a few classes
    index = index[np.random.default_rng(0).permutation(len(index))]
    images = cache.images.numpy()[index].transpose(0, 2, 3, 1)  # (n, H, W, 3)
    return np.ascontiguousarray(images), cache.labels.numpy()[index]


def export(source: str, out: str | Path, resolution: int, *, cache_dir: str | Path | None = None,
           part: tuple[int, int] | None = None, per_class: int | None = None,
           on_progress: OnProgress | None = None) -> Path:
    """Write `source` (built-in name or class-folder path) at `resolution` as an ADM-layout `.npz`;
    `on_progress` reports the decoding, if the cache has to be built."""
    cache = prepare(source, cache_dir, resolution, limit=per_class, on_progress=on_progress)
    images, labels = cache_images(cache, part)
    meta = {"source": cache.info.source, "resolution": resolution, "part": part, "per_class": per_class,
            "class_names": list(cache.info.class_names)}
    save_samples(out, images, labels, meta)
    return Path(out)


def reference_file(source: str, resolution: int, *, cache_dir: str | Path | None = None,
                   on_progress: OnProgress | None = None) -> Path:
    """The whole of `source` at `resolution` as a reference `.npz`, exported once per cache.

    Kept beside the cache it came from, so `pixdiff eval`'s statistics cache (keyed by file path,
    size and mtime) reuses the extracted features on the next evaluation. `on_progress` follows
    the decoding when the cache is built (see `build_cache`)."""
    cache = prepare(source, cache_dir, resolution, on_progress=on_progress)
    path = cache.info.path / REFERENCE_FILE
    if not path.is_file():
        images, labels = cache_images(cache)
        save_samples(path, images, labels, {"source": cache.info.source, "resolution": resolution})
    return path


def names_training_data(spec: str) -> bool:
    """Whether a `--ref` spec names training data ('emoji', 'data:SOURCE') rather than a path."""
    return spec == "emoji" or spec.startswith("data:")


def reference_source(spec: str, resolution: int, *, cache_dir: str | Path | None = None,
                     on_progress: OnProgress | None = None) -> Path:
    """A `--ref` spec -> the file or folder the metrics read: training data ('emoji', 'data:SOURCE')
    becomes its `reference_file` at `resolution` (`on_progress` follows its decoding when the
    cache is built); anything else is a path (an .npz, an image folder, a statistics file)."""
    if not names_training_data(spec):
        return Path(spec)
    return reference_file(spec.removeprefix("data:"), resolution, cache_dir=cache_dir, on_progress=on_progress)
