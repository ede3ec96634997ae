"""Checkpoint files: plain tensors and builtins (loadable with `weights_only=True`), written atomically.

A checkpoint is a dict with at least
    format   "pixdiff-1"
    recipe   the resolved recipe as `config_tree.to_dict` gives it
    model    the raw weights' state dict
    ema      the EMA weights' state dict (what sampling uses by default)
Training adds `step`, `optimizer`, `rng`, `data`; a converted or exported file may have only the above.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "pixdiff-1"


class CheckpointError(ValueError):
    pass


def save(obj: dict[str, Any], path: str | Path) -> None:
    """Write to a temp file in the same folder, fsync, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **obj}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temp files of writes that were killed before their rename (SIGKILL skips cleanup)."""
    stale = sorted(Path(folder).glob(".*.tmp")) if Path(folder).is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} is unreadable or corrupt: {type(e).__name__}: {e}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pixdiff checkpoint (convert the authors' files with `pixdiff convert`)")
    return ckpt
