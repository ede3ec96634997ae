"""The official checkpoint layouts, one table: `pixdiff convert`, the loader (`loader.open_checkpoint`)
and `--init-from` look a layout up here (its names and origins, for help texts, are
`names.LAYOUT_ORIGINS`). Each converter module offers the same three functions:

    read_official(path) -> the file's content, read weights-only
    pixdiff_checkpoint(official, recipe) -> {"recipe", "model", "ema"[, "ema_extra"]}, strictly checked
    official_checkpoint(pixdiff_ckpt, recipe) -> what `torch.save` writes in the authors' layout
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixdiff.checkpoints import deco, dip, jit, pixeldit, pixnerd
from pixdiff.checkpoints.interop import LIGHTNING_PREFIXES
from pixdiff.checkpoints.names import DEFAULT_LAYOUT, LAYOUT_ORIGINS
from pixdiff.checkpoints.store import CheckpointError


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

# A denoiser name only one layout has (after the Lightning prefixes): the PDH, DeCo's pixel decoder,
# PixNerd's field blocks, PixelDiT's patch and pixel blocks.
MARKERS = (("dip", "local_decoder."), ("deco", "dec_net."), ("pixnerd", ".param_generator1."),
           ("pixeldit", "pixel_blocks."))


def layout_of(names: Iterable[str]) -> str | None:
    """The official layout a file's key names say (top-level keys and its state dict's keys
    together), or None. JiT's files are told by their top level (model, model_ema1, model_ema2),
    the Lightning ones by a denoiser name only that layout has."""
    names = set(names)
    if set(jit.WEIGHTS.values()) <= names:
        return "jit"
    stripped = {n.removeprefix(p) for n in names for p in LIGHTNING_PREFIXES.values() if n.startswith(p)} or names
    found = {layout for layout, marker in MARKERS if any(marker in n for n in stripped)}
    return found.pop() if len(found) == 1 else None


def detect(found: Mapping[str, object], file: Path) -> str:
    """`layout_of` a file's content, or one error line asking for --layout."""
    state = found.get("state_dict", found)
    names = [*found, *(state if isinstance(state, Mapping) else ())]
    layout = layout_of(str(n) for n in names)
    if layout is None:
        raise CheckpointError(f"{file}: its keys ({', '.join(sorted(map(str, names))[:6])} ...) match no official "
                              f"layout; pass --layout ({', '.join(LAYOUTS)})")
    return layout
