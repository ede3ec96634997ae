"""Preprocessing cache: decode once (in parallel), train from a memory map (see `pixdiff.data.stream`).

On-disk layout of a cache directory:

    images.u8    raw uint8 (N, 3, H, W), read as a tensordict MemoryMappedTensor
    labels.i64   raw int64 (N,)
    meta.json    format version, resolution, classes, counts, source, skipped files, the source's notes
                 (the data card: attribution, what the source left out)

meta.json is written last and the directory appears by an atomic rename, so a killed or failed
build never leaves something that `open_cache` accepts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tensordict import MemoryMappedTensor

from pixdiff.runtime.paths import CacheHomeError, cache_home
from pixdiff.runtime.progress import OnProgress

from .emoji import LABELS as EMOJI_LABELS
from .emoji import emoji_description, emoji_source
from .folder import folder_source
from .images import DataError, Item, SmallPolicy, Source, load_image
from .openmoji import LABELS, openmoji_description, openmoji_source

ErrorPolicy = Literal["skip", "stop"]

FORMAT = "pixdiff-image-cache"
FORMAT_VERSION = 1
IMAGES_FILE = "images.u8"
LABELS_FILE = "labels.i64"
META_FILE = "meta.json"
_CHUNK = 256  # images decoded per batch of thread-pool work; bounds memory held in flight

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Skipped:
    """A source file left out of the cache, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class CacheInfo:
    """What meta.json records about a cache (plus where it lives)."""

    path: Path
    resolution: int
    count: int
    class_names: tuple[str, ...]
    class_counts: tuple[int, ...]
    source: str
    small: str
    skipped: tuple[Skipped, ...]
    build_seconds: float
    notes: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def summary(self, max_listed: int = 20) -> str:
        """Human-readable report: size, classes, and the skipped files with reasons."""
        lines = [
            f"cache {self.path}: {self.count} images at {self.resolution}px, {self.num_classes} classes, "
            f"from {self.source}"
        ]
        lines += self.notes
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} file(s):")
            lines += [f"  {s.path}: {s.reason}" for s in self.skipped[:max_listed]]
            if len(self.skipped) > max_listed:
                lines.append(f"  ... and {len(self.skipped) - max_listed} more (see {self.path / META_FILE})")
        empty = [n for n, c in zip(self.class_names, self.class_counts) if c == 0]
        if empty:
            lines.append(f"warning: classes with no images after skipping: {', '.join(empty)}")
        return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class Cache:
    """An opened cache: `images` uint8 (N, 3, H, W) memory-mapped read-only, `labels` int64 (N,)."""

    info: CacheInfo
    images: torch.Tensor
    labels: torch.Tensor


def _meta_dict(info: CacheInfo) -> dict:
    n, r = info.count, info.resolution
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "resolution": r,
        "count": n,
        "num_classes": info.num_classes,
        "class_names": list(info.class_names),
        "class_counts": list(info.class_counts),
        "source": info.source,
        "small": info.small,
        "skipped": [{"path": s.path, "reason": s.reason} for s in info.skipped],
        "notes": list(info.notes),
        "build_seconds": round(info.build_seconds, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "tensors": {
            "images": {"file": IMAGES_FILE, "dtype": "uint8", "shape": [n, 3, r, r]},
            "labels": {"file": LABELS_FILE, "dtype": "int64", "shape": [n]},
        },
    }


def write_meta(directory: Path, info: CacheInfo) -> None:
    """Write meta.json for the images.u8 and labels.i64 already in `directory` (last: it marks a complete cache)."""
    with open(directory / META_FILE, "w", encoding="utf-8") as f:
        json.dump(_meta_dict(info), f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def _decode(item: Item, resolution: int, fit: str, small: SmallPolicy) -> np.ndarray | str:
    """The fitted (H, W, 3) array, or the reason the file cannot be used."""
    try:
        return load_image(item.path, resolution, fit=fit, small=small)
    except Exception as err:  # noqa: BLE001 - per-file boundary: PIL raises many types on corrupt files
        return f"{type(err).__name__}: {err}"


def _decoded(source: Source, resolution: int, small: SmallPolicy, workers: int | None
             ) -> Iterator[tuple[Item, np.ndarray | str]]:
    """Decode the source in order; with workers > 1 (default: one per CPU core), in threads (PIL
    releases the GIL while decoding and resizing), the same bytes in the same order as one thread."""

    def run(item: Item) -> np.ndarray | str:
        return _decode(item, resolution, source.fit, small)

    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers <= 1:
        for item in source.items:
            yield item, run(item)
        return
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(source.items), _CHUNK):
            chunk = source.items[start : start + _CHUNK]
            yield from zip(chunk, pool.map(run, chunk))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def build_cache(
    source: Source,
    out_dir: str | Path,
    resolution: int,
    *,
    on_error: ErrorPolicy = "skip",
    small: SmallPolicy = "upscale",
    limit: int | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    on_progress: OnProgress | None = None,
) -> CacheInfo:
    """Decode every image of `source` once into a memory-mappable cache at `out_dir`.

    on_error="skip" leaves out unreadable/corrupt/rejected files and lists them (path + reason)
    in the result and meta.json; "stop" raises DataError naming the first such file.
    small: see `center_crop`. limit: first n images per class. workers: decoding threads
    (default: one per CPU core).
    on_progress(done, total) is called as images are decoded. The build writes into a temporary
    sibling directory and renames it into place; an existing `out_dir` is replaced only if
    `overwrite`. Raises DataError if no image could be used.
    """
    if on_error not in ("skip", "stop"):
        raise ValueError(f"on_error must be 'skip' or 'stop', got {on_error!r}")
    if small not in ("upscale", "reject"):
        raise ValueError(f"small must be 'upscale' or 'reject', got {small!r}")
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    out_dir = Path(out_dir).expanduser().absolute()
    if out_dir.exists() and not overwrite:
        raise DataError(f"{out_dir} already exists (pass overwrite=True to rebuild it)")
    source = source.take(limit)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # mkdir (not tempfile.mkdtemp, which forces mode 0700) so the cache gets the usual umask.
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    tmp.mkdir()
    start = time.perf_counter()
    log.info("building %s from %s (%d files, %dpx)", out_dir, source.description, len(source.items), resolution)
    try:
        labels: list[int] = []
        skipped: list[Skipped] = []
        with open(tmp / IMAGES_FILE, "wb") as f:
            for done, (item, result) in enumerate(_decoded(source, resolution, small, workers), 1):
                if isinstance(result, str):
                    if on_error == "stop":
                        raise DataError(f"cannot use image {item.path}: {result}")
                    skipped.append(Skipped(str(item.path), result))
                else:
                    f.write(result.transpose(2, 0, 1).tobytes())  # HWC -> CHW
                    labels.append(item.label)
                if on_progress is not None:
                    on_progress(done, len(source.items))
            f.flush()
            os.fsync(f.fileno())
        if not labels:
            first = f"; first error: {skipped[0].path}: {skipped[0].reason}" if skipped else ""
            raise DataError(f"no usable image in {source.description}{first}")
        label_arr = np.asarray(labels, dtype=np.int64)
        with open(tmp / LABELS_FILE, "wb") as f:
            f.write(label_arr.tobytes())
            os.fsync(f.fileno())
        info = CacheInfo(
            path=out_dir,
            resolution=resolution,
            count=len(labels),
            class_names=source.class_names,
            class_counts=tuple(np.bincount(label_arr, minlength=source.num_classes).tolist()),
            source=source.description,
            small=small,
            skipped=tuple(skipped),
            build_seconds=time.perf_counter() - start,
            notes=source.notes,
        )
        write_meta(tmp, info)
        _fsync_dir(tmp)
        _move_into_place(tmp, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if skipped:
        log.warning("skipped %d unusable file(s) while building %s; see its meta.json", len(skipped), out_dir)
    return info


def _move_into_place(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    old = out_dir.with_name(f".{out_dir.name}.old-{secrets.token_hex(4)}")
    if overwrite and out_dir.exists():
        os.rename(out_dir, old)
    try:
        os.rename(tmp, out_dir)
    except OSError as err:
        if old.exists():
            os.rename(old, out_dir)  # put the previous cache back rather than lose it
        elif (out_dir / META_FILE).is_file():
            # another process finished the same build first (two trainings started together): the
            # folder name is a digest of the inputs and builds are deterministic, so theirs is ours
            shutil.rmtree(tmp, ignore_errors=True)
            return
        raise DataError(f"cannot move the finished cache to {out_dir} (did another process create it?): {err}") from err
    _fsync_dir(out_dir.parent)
    shutil.rmtree(old, ignore_errors=True)


def _read_meta(path: Path) -> dict:
    meta_file = path / META_FILE
    if not path.is_dir():
        raise DataError(f"no cache directory at {path}")
    if not meta_file.is_file():
        raise DataError(f"{path} is not a complete pixdiff cache: {META_FILE} is missing (interrupted build?)")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"corrupt cache metadata {meta_file}: {err}") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{meta_file} is not pixdiff cache metadata")
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"cache {path} has format version {meta.get('format_version')}, this pixdiff reads {FORMAT_VERSION}; rebuild it"
        )
    return meta


def open_cache(path: str | Path, *, resolution: int | None = None) -> Cache:
    """Re-open a built cache without copying it: images are memory-mapped read-only (copy-on-write).

    Validates meta.json and the file sizes; with `resolution`, also that the cache has it.
    Raises DataError with the path on any problem.
    """
    path = Path(path).expanduser().absolute()
    meta = _read_meta(path)
    try:
        n, r = int(meta["count"]), int(meta["resolution"])
        info = CacheInfo(
            path=path,
            resolution=r,
            count=n,
            class_names=tuple(meta["class_names"]),
            class_counts=tuple(int(c) for c in meta["class_counts"]),
            source=str(meta["source"]),
            small=str(meta["small"]),
            skipped=tuple(Skipped(s["path"], s["reason"]) for s in meta["skipped"]),
            build_seconds=float(meta["build_seconds"]),
            notes=tuple(str(n) for n in meta.get("notes", ())),  # caches built before notes existed have none
        )
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"corrupt cache metadata {path / META_FILE}: {err!r}") from err
    if resolution is not None and r != resolution:
        raise DataError(f"cache {path} is {r}px but {resolution}px was asked for")
    for name, expected in ((IMAGES_FILE, n * 3 * r * r), (LABELS_FILE, n * 8)):
        file = path / name
        size = file.stat().st_size if file.is_file() else None
        if size != expected:
            raise DataError(f"cache file {file} has {size} bytes, meta.json implies {expected}; rebuild the cache")
    labels = torch.from_numpy(np.fromfile(path / LABELS_FILE, dtype=np.int64))
    if n and (int(labels.min()) < 0 or int(labels.max()) >= info.num_classes):
        raise DataError(f"cache {path} has labels outside 0..{info.num_classes - 1}; rebuild the cache")
    images = MemoryMappedTensor.from_filename(str(path / IMAGES_FILE), torch.uint8, (n, 3, r, r), mode="r")
    return Cache(info, images, labels)


def _builtin(spec: str) -> tuple[Callable[[], str], Callable[[], Source]] | None:
    """(identity, listing) of a built-in source spec, 'emoji[:LABELS]' or 'openmoji[:LABELS]'; else None."""
    name, colon, labels = spec.partition(":")
    builtins = {"emoji": (EMOJI_LABELS, "emoji:picked", emoji_description, emoji_source),
                "openmoji": (LABELS, "openmoji:subgroup", openmoji_description, openmoji_source)}
    if name not in builtins:
        return None
    known, example, describe, listing = builtins[name]
    labels = labels if colon else "group"
    if labels not in known:
        raise DataError(f"unknown source {spec!r}: {name} labels are {', '.join(known)} (e.g. {example})")
    return partial(describe, labels), partial(listing, labels)


def _cache_dir(source_spec: str | Path, cache_root: Path, resolution: int, small: str, limit: int | None
               ) -> tuple[Path, Callable[[], Source]]:
    """Where `prepare` keeps the cache for these settings, and how to list the source if it must build."""
    builtin = _builtin(str(source_spec))
    if builtin is not None:
        describe, listing = builtin
        identity, slug = describe(), str(source_spec)
    else:
        folder = Path(source_spec).expanduser().resolve()
        identity, slug = f"folder:{folder}", folder.name
        listing = partial(folder_source, folder)
    key = json.dumps([identity, resolution, small, limit, FORMAT_VERSION])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", slug).strip("._") or "data"
    return cache_root / f"{slug}-{resolution}px-{digest}", listing


def _cache_root(cache_root: str | Path | None) -> Path:
    """The folder caches live under: `cache_root`, or the cache home (DataError if it has none)."""
    try:
        return cache_home() if cache_root is None else Path(cache_root).expanduser().absolute()
    except CacheHomeError as e:
        raise DataError(str(e)) from None


def cached_class_names(source_spec: str | Path, cache_root: str | Path | None, resolution: int, *,
                       small: SmallPolicy = "upscale") -> tuple[str, ...]:
    """The class names of the cache `prepare` would open for these settings, if it is already built
    here; () if not (nothing is listed, decoded or downloaded): for labels only, e.g. a sample grid's
    rows, where a missing name falls back to the class number."""
    try:
        out_dir, _ = _cache_dir(source_spec, _cache_root(cache_root), resolution, small, None)
        return tuple(str(n) for n in _read_meta(out_dir)["class_names"]) if out_dir.is_dir() else ()
    except (DataError, OSError, KeyError, TypeError):
        return ()


def prepare(
    source_spec: str | Path,
    cache_root: str | Path | None,
    resolution: int,
    *,
    on_error: ErrorPolicy = "skip",
    small: SmallPolicy = "upscale",
    limit: int | None = None,
    workers: int | None = None,
    rebuild: bool = False,
    on_progress: OnProgress | None = None,
) -> Cache:
    """Open the cache for (source, resolution, small, limit) under `cache_root`, building it if needed.

    `source_spec` is a built-in source, "emoji" (Twemoji PNGs by Unicode group), "emoji:picked"
    (nine look-alike classes), "openmoji" (OpenMoji SVGs by Unicode group) or "openmoji:subgroup",
    or else an image-folder path (write "./emoji" for a
    folder of that name). A folder is not re-listed when its cache exists: pass rebuild=True
    after changing its files. With on_error="stop", a reused cache that skipped files raises.
    Build on one process (e.g. rank 0) and let the others call it after a barrier. `cache_root`
    None: the cache home (`pixdiff.runtime.paths.cache_home`). `on_progress`: see `build_cache`
    (called only when the cache is built).
    """
    out_dir, listing = _cache_dir(source_spec, _cache_root(cache_root), resolution, small, limit)
    if out_dir.exists() and not rebuild:
        try:
            cache = open_cache(out_dir, resolution=resolution)
        except DataError as err:
            log.warning("rebuilding unusable cache: %s", err)
        else:
            if on_error == "stop" and cache.info.skipped:
                first = cache.info.skipped[0]
                raise DataError(
                    f"cache {out_dir} was built skipping {len(cache.info.skipped)} file(s), e.g. "
                    f"{first.path}: {first.reason} (on_error='stop')"
                )
            log.info("using cache %s", out_dir)
            return cache
    build_cache(
        listing(), out_dir, resolution, on_error=on_error, small=small, limit=limit, workers=workers,
        overwrite=True, on_progress=on_progress,
    )
    return open_cache(out_dir, resolution=resolution)
