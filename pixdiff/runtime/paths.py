"""Where pixdiff keeps what it can rebuild: one cache home for decoded-data caches and reference
statistics alike, so that every folder a command runs from shares them."""

from __future__ import annotations

import os
from pathlib import Path


class CacheHomeError(ValueError):
    """$PIXDIFF_CACHE_DIR is set but empty."""


def cache_home() -> Path:
    """`$PIXDIFF_CACHE_DIR`, else `$XDG_CACHE_HOME/pixdiff`, else `~/.cache/pixdiff` (absolute)."""
    own = os.environ.get("PIXDIFF_CACHE_DIR")
    if own is not None:
        if not own.strip():
            raise CacheHomeError("PIXDIFF_CACHE_DIR is set but empty: unset it or name a folder")
        return Path(own).expanduser().absolute()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")  # XDG: empty = unset
    return (Path(base).expanduser() / "pixdiff").absolute()
