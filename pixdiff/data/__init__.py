"""Training data: image sources, the ADM center crop, the preprocessing cache and the Dataset.

Typical use::

    cache = prepare("emoji", "~/.cache/pixdiff", 64)          # or an image-folder path
    print(cache.info.summary())
    dataset = CacheDataset(cache, hflip=True, seed=0)         # (x in [-1, 1], label)
"""

from .cache import (
    Cache,
    CacheDataset,
    CacheInfo,
    Skipped,
    build_cache,
    flip_decision,
    open_cache,
    prepare,
)
from .emoji import EMOJI_CLASSES, emoji_source
from .folder import IMAGE_SUFFIXES, folder_source
from .images import DataError, Item, Source, center_crop, load_image, resize_square, to_rgb

__all__ = [
    "EMOJI_CLASSES",
    "IMAGE_SUFFIXES",
    "Cache",
    "CacheDataset",
    "CacheInfo",
    "DataError",
    "Item",
    "Skipped",
    "Source",
    "build_cache",
    "center_crop",
    "emoji_source",
    "flip_decision",
    "folder_source",
    "load_image",
    "open_cache",
    "prepare",
    "resize_square",
    "to_rgb",
]
