"""The official checkpoint layouts, one table: `pixdiff convert`, the loader (`loader.open_checkpoint`)
and `--init-from` look a layout up here (its names and origins, for help texts, are
`names.LAYOUT_ORIGINS`). Each converter module offers the same three functions:

    read_official(path) -> the file's content, read weights-only
    pixdiff_checkpoint(official, recipe) -> {"recipe", "model", "ema"[, "ema_extra"]}, strictly checked
    official_checkpoint(pixdiff_ckpt, recipe) -> what `torch.save` writes in the authors' layout
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixdiff.checkpoints import deco, dip, jit, pixeldit, pixnerd
from pixdiff.checkpoints.names import DEFAULT_LAYOUT, LAYOUT_ORIGINS


@dataclass(frozen=True)
class Layout:
    name: str
    origin: str  # whose files these are, for help texts
    read: Callable[[Path], Mapping[str, Any]]
    to_pixdiff: Callable[..., dict[str, Any]]
    to_official: Callable[..., dict[str, Any]]


MODULES = {"dip": dip, "jit": jit, "pixeldit": pixeldit, "pixnerd": pixnerd, "deco": deco}
LAYOUTS = {name: Layout(name, origin, MODULES[name].read_official, MODULES[name].pixdiff_checkpoint,
                        MODULES[name].official_checkpoint) for name, origin in LAYOUT_ORIGINS.items()}
DEFAULT = DEFAULT_LAYOUT
