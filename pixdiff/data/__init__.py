"""Training data: image sources, the ADM center crop, the preprocessing cache and the stream.

Typical use::

    cache = prepare("emoji", "~/.cache/pixdiff", 64)          # or "openmoji", or an image-folder path
    print(cache.info.summary())
    with BatchStream(cache.images, cache.labels, seed=0, global_batch=32, grad_accum=1, rank=0, world=1,
                     flip=True, balance_classes=False, device=torch.device("cpu"), num_workers=2) as stream:
        batch = next(stream)                                  # MicroBatch: x in [-1, 1], y, positions
"""

from .cache import (
    Cache,
    CacheInfo,
    Skipped,
    build_cache,
    open_cache,
    prepare,
)
from .emoji import EMOJI_CLASSES, emoji_source
from .folder import IMAGE_SUFFIXES, folder_source
from .grid import make_grid, save_grid, save_heatmap, save_png, to_uint8
from .images import DataError, Item, Source, center_crop, load_image, open_image, resize_square, to_rgb
from .openmoji import openmoji_source
from .stream import BatchStream, MicroBatch, StreamError

__all__ = [
    "BatchStream",
    "EMOJI_CLASSES",
    "IMAGE_SUFFIXES",
    "Cache",
    "CacheInfo",
    "DataError",
    "Item",
    "MicroBatch",
    "Skipped",
    "Source",
    "StreamError",
    "build_cache",
    "center_crop",
    "emoji_source",
    "folder_source",
    "load_image",
    "make_grid",
    "open_cache",
    "open_image",
    "openmoji_source",
    "prepare",
    "resize_square",
    "save_grid",
    "save_heatmap",
    "save_png",
    "to_rgb",
    "to_uint8",
]
