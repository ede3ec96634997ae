"""Image decoding and fitting: RGB conversion, the ADM center crop, and the `Source` record.

Everything here is torch-free (PIL + numpy) so that decoding can run in plain worker threads.
"""

from __future__ import annotations

import io
import threading
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from .errors import DataError

SmallPolicy = Literal["upscale", "reject"]
Fit = Literal["center_crop", "resize", "render"]


@dataclass(frozen=True)
class Item:
    """One image file of a source and its class label."""

    path: Path
    label: int


@dataclass(frozen=True)
class Source:
    """A labelled list of image files plus how to fit them to the training resolution.

    `description` identifies the source (it is stored in the cache's meta.json);
    `fit` is "center_crop" (ADM crop, for photos), "resize" (whole square image, for emoji) or
    "render" (SVG files rasterised at the resolution, see `render_svg`). `notes` are lines for the
    data card (the cache's meta.json and summary): attribution, what the listing left out and why.
    """

    description: str
    class_names: tuple[str, ...]
    items: tuple[Item, ...]
    fit: Fit = "center_crop"
    notes: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def take(self, per_class: int | None) -> Source:
        """The first `per_class` items of every class (in source order); all items if None."""
        if per_class is None:
            return self
        if per_class < 1:
            raise ValueError(f"limit must be >= 1, got {per_class}")
        seen = [0] * self.num_classes
        kept = []
        for item in self.items:
            if seen[item.label] < per_class:
                seen[item.label] += 1
                kept.append(item)
        return replace(self, description=f"{self.description}[:{per_class}/class]", items=tuple(kept))


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; transparency (alpha, palette or colour key) goes onto white."""
    if img.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
        # 16-bit grayscale PNGs: PIL's convert("L") clips at 255 instead of rescaling.
        gray = np.asarray(img).astype(np.float64) / 257.0
        img = Image.fromarray(np.clip(np.rint(gray), 0, 255).astype(np.uint8), "L")
    if img.has_transparency_data:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _check_small(img: Image.Image, size: int, small: SmallPolicy) -> None:
    if small not in ("upscale", "reject"):
        raise ValueError(f"small must be 'upscale' or 'reject', got {small!r}")
    if small == "reject" and min(img.size) < size:
        w, h = img.size
        raise DataError(f"image is {w}x{h}, smaller than the resolution {size} (small='reject')")


def center_crop(img: Image.Image, size: int, *, small: SmallPolicy = "upscale") -> np.ndarray:
    """ADM/DiT center crop to a (size, size, 3) uint8 array.

    While the short side is >= 2*size, halve the image with a BOX filter (cheap, alias-free);
    then resize so the short side equals `size` with BICUBIC (this upscales images smaller than
    `size`, as ADM does, unless small="reject" which raises DataError); finally crop the centre.
    The image is converted to RGB first (alpha composited onto white). EXIF orientation is
    ignored, as in ADM, so crops match the reference pipeline.
    """
    img = to_rgb(img)
    _check_small(img, size, small)
    while min(img.size) >= 2 * size:
        img = img.resize((img.width // 2, img.height // 2), resample=Image.Resampling.BOX)
    scale = size / min(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), resample=Image.Resampling.BICUBIC)
    arr = np.asarray(img)
    top = (arr.shape[0] - size) // 2
    left = (arr.shape[1] - size) // 2
    return np.ascontiguousarray(arr[top : top + size, left : left + size])


def resize_square(img: Image.Image, size: int, *, small: SmallPolicy = "upscale") -> np.ndarray:
    """Resize a whole (square) image to (size, size, 3) uint8: area (BOX) filter down, BICUBIC up.

    Used for emoji, whose content touches the borders so that a crop would cut it.
    """
    img = to_rgb(img)
    _check_small(img, size, small)
    if img.size != (size, size):
        down = min(img.size) >= size
        img = img.resize((size, size), resample=Image.Resampling.BOX if down else Image.Resampling.BICUBIC)
    return np.asarray(img).copy()


def render_svg(path: Path, size: int) -> np.ndarray:
    """Rasterise an SVG file with resvg at (size, size), alpha composited onto white -> (size, size, 3) uint8.

    Rendering at the target size (not resizing a larger raster) gives resvg's own anti-aliasing at
    every resolution. System fonts are not loaded: the result cannot depend on the machine's fonts.
    """
    from .demo import demo_module  # here: demo imports this module's DataError

    resvg_py = demo_module("resvg_py", "openmoji")
    png = resvg_py.svg_to_bytes(svg_path=str(path), width=size, height=size, skip_system_fonts=True)
    with Image.open(io.BytesIO(png)) as img:
        return np.asarray(to_rgb(img)).copy()


def load_image(path: Path, size: int, *, fit: Fit = "center_crop", small: SmallPolicy = "upscale") -> np.ndarray:
    """Decode one file and fit it to (size, size, 3) uint8. Raises on unreadable files.

    fit="render" rasterises a vector file at `size` (`small` does not apply)."""
    if fit == "render":
        return render_svg(path, size)
    img = open_image(path)
    if fit == "center_crop":
        return center_crop(img, size, small=small)
    return resize_square(img, size, small=small)


# Warning filters are process-wide: the lock keeps threads decoding in parallel (the cache's pool)
# from restoring each other's filters out of order. Only the header read (where PIL checks the
# size) runs under it; the decode itself stays parallel.
_BOMB_CHECK = threading.Lock()


def open_image(path: str | Path) -> Image.Image:
    """The image file at `path`, fully decoded (a copy, its file closed). Anything that stops it from
    being read -- not an image, truncated, or larger than `Image.MAX_IMAGE_PIXELS` (a possible
    decompression bomb, which PIL only warns about below twice the limit) -- is one DataError line."""
    try:
        with _BOMB_CHECK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            img.load()  # decode fully here so truncated files fail here, not later
            return img.copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning, OSError, ValueError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise DataError(f"cannot read image {path}: {reason}") from err
