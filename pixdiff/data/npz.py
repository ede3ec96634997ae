"""Sample files in the ADM-evaluator layout, and image loading for evaluation.

A sample file is an uncompressed ``.npz`` whose ``arr_0`` is uint8 (N, H, W, 3) RGB -- the only array
the ADM evaluator (guided-diffusion ``evaluations/evaluator.py``) reads. We add ``labels`` (int64 (N,))
and ``meta`` (a JSON string, e.g. how the labels were drawn and with which sampler settings); both
are ignored by the ADM evaluator. guided-diffusion's own sample files keep labels in ``arr_1``,
which ``load_labels`` also understands.

Images can also come from a folder (recursive, sorted by relative path), decoded to RGB exactly as
training data are (``pixdiff.data.images.to_rgb``: transparency composited onto white).
``open_images`` reads either kind in chunks, so 50k-image files need not fit in memory at once.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from pixdiff.data.images import open_image, to_rgb
from pixdiff.runtime.atomic import atomic_write

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageSource",
    "save_samples",
    "savez_atomic",
    "open_images",
    "load_images",
    "load_labels",
    "load_meta",
]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def savez_atomic(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """``np.savez`` (uncompressed) to ``path`` via a temporary file in the same folder and a rename.

    A crash or a full disk never leaves a truncated file under the final name, which matters for
    multi-GB sample files that other jobs poll for.
    """
    with atomic_write(path) as f:
        np.savez(f, **arrays)  # a file object keeps np.savez from appending ".npz" to the name


def save_samples(
    path: str | os.PathLike, images: np.ndarray, labels: np.ndarray, meta: dict[str, Any] | None = None
) -> None:
    """Write an ADM-evaluator sample file: ``arr_0`` uint8 (N, H, W, 3), ``labels`` int64 (N,), ``meta``.

    ``meta`` (JSON-serialisable) should record how the labels were drawn and the sampler settings.
    """
    _check_image_array(images, str(path))
    labels = np.asarray(labels)
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{path}: labels must be integers of shape ({len(images)},), got {labels.dtype} {labels.shape}"
        )
    try:
        meta_json = json.dumps(meta or {}, sort_keys=True)
    except TypeError as exc:
        raise TypeError(f"{path}: meta must be JSON-serialisable: {exc}") from exc
    # sorted with repeats: a contiguous split sees few classes (one of each class, in order, is fine)
    if 1 < len(np.unique(labels)) < len(labels) and np.all(np.diff(labels) >= 0):
        log.warning(
            "%s: samples are sorted by label; the ADM evaluator computes the Inception Score over "
            "contiguous splits, which then see only a few classes each -- shuffle the sample order",
            path,
        )
    savez_atomic(path, arr_0=images, labels=labels.astype(np.int64), meta=np.array(meta_json))


@dataclass(frozen=True)
class ImageSource:
    """Images on disk: an ``.npz`` (``arr_0``) or an image folder, readable in chunks."""

    path: str
    count: int
    shape: tuple[int, int, int]  # (H, W, 3) of every image
    files: tuple[str, ...] = ()  # image files, for folders only

    def chunks(self, chunk_size: int = 1024) -> Iterator[np.ndarray]:
        """Yield uint8 (<=chunk_size, H, W, 3) arrays in file order."""
        if self.files:
            for start in range(0, self.count, chunk_size):
                yield np.stack([_read_image(f, self.shape) for f in self.files[start : start + chunk_size]])
        else:
            yield from _npz_chunks(self.path, self.count, self.shape, chunk_size)


def open_images(path: str | os.PathLike) -> ImageSource:
    """Inspect an ``.npz`` sample file or an image folder without loading the pixels."""
    path = str(path)
    if os.path.isdir(path):
        return _open_folder(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such sample file or image folder: {path}")
    count, shape = _npz_header(path)
    return ImageSource(path, count, shape)


def load_images(path: str | os.PathLike) -> np.ndarray:
    """Load all images of an ``.npz`` (``arr_0``) or an image folder as uint8 (N, H, W, 3)."""
    source = open_images(path)
    out = np.empty((source.count, *source.shape), np.uint8)
    start = 0
    for chunk in source.chunks():
        out[start : start + len(chunk)] = chunk
        start += len(chunk)
    return out


def load_labels(path: str | os.PathLike) -> np.ndarray | None:
    """Labels of a sample file (``labels``, or guided-diffusion's ``arr_1``); None if it has none."""
    with _open_npz(path) as data:
        for name in ("labels", "arr_1"):
            if name in data.files:
                return data[name].astype(np.int64)
    return None


def load_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of a sample file written by ``save_samples`` ({} if absent)."""
    with _open_npz(path) as data:
        if "meta" not in data.files:
            return {}
        try:
            return json.loads(str(data["meta"]))
        except ValueError as exc:
            raise ValueError(f"{path}: meta is not valid JSON ({exc})") from exc


# --------------------------------------------------------------------------------------------------
# Helpers


def _check_image_array(images: Any, where: str) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise TypeError(f"{where}: images must be uint8, got {getattr(images, 'dtype', type(images))}")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{where}: images must have shape (N, H, W, 3), got {images.shape}")


def _open_npz(path: str | os.PathLike) -> Any:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such sample file: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from exc


def _npz_header(path: str) -> tuple[int, tuple[int, int, int]]:
    """Read (N, (H, W, 3)) from the header of ``arr_0`` without loading it."""
    with _arr0_stream(path) as (_, shape):
        return shape[0], shape[1:]


@contextmanager
def _arr0_stream(path: str) -> Iterator[tuple[IO[bytes], tuple[int, int, int, int]]]:
    """The open ``arr_0.npy`` member of an npz, positioned after its (validated) header."""
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from exc
    with zf:
        names = zf.namelist()
        if "arr_0.npy" not in names:
            if "mu.npy" in names and "sigma.npy" in names:
                raise ValueError(f"{path}: holds feature statistics, not images (no arr_0)")
            raise ValueError(f"{path}: no arr_0 image array (members: {', '.join(names)})")
        with zf.open("arr_0.npy") as member:
            try:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
                else:
                    raise ValueError(f"unsupported .npy format version {version}")
            except (ValueError, OSError, zipfile.BadZipFile) as exc:
                raise ValueError(f"{path}: corrupt arr_0 ({exc})") from exc
            if dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3 or fortran:
                raise ValueError(
                    f"{path}: arr_0 must be C-ordered uint8 (N, H, W, 3) images, got {dtype} {shape}"
                )
            yield member, shape


def _npz_chunks(path: str, count: int, shape: tuple[int, int, int], chunk_size: int) -> Iterator[np.ndarray]:
    with _arr0_stream(path) as (f, _):
        for start in range(0, count, chunk_size):
            out = np.empty((min(chunk_size, count - start), *shape), np.uint8)
            try:
                got = f.readinto(memoryview(out.reshape(-1)))
            except (OSError, zipfile.BadZipFile) as exc:  # e.g. CRC mismatch in a damaged file
                raise ValueError(f"{path}: corrupt arr_0 ({exc})") from exc
            if got != out.nbytes:
                raise ValueError(f"{path}: arr_0 is truncated (expected {count} images)")
            yield out


def _open_folder(path: str) -> ImageSource:
    root = Path(path)
    files = sorted(
        (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not files:
        raise ValueError(f"{path}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)})")
    first = _read_image(str(files[0]), None)
    return ImageSource(path, len(files), first.shape, tuple(str(f) for f in files))


def _read_image(file: str, shape: tuple[int, int, int] | None) -> np.ndarray:
    arr = np.asarray(to_rgb(open_image(file)))  # DataError (a ValueError) names an unreadable file
    if shape is not None and arr.shape != shape:
        raise ValueError(
            f"{file}: size {arr.shape[:2]} differs from the folder's first image {shape[:2]}; "
            "resize/crop the folder to one size first (e.g. the ADM centre crop)"
        )
    return arr
