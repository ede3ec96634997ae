"""Checkpoint files: plain tensors and builtins (loadable with `weights_only=True`), written atomically.

A checkpoint is a dict with at least
    format   "pixdiff-1"
    recipe   the resolved recipe as `config_tree.to_dict` gives it
    model    the raw weights' state dict
    ema      the EMA weights' state dict (what sampling uses by default)
    ema_extra  {str(decay): state dict} of further EMAs (train.ema_decays[1:]), possibly empty
Training adds `step`, `optimizer`, `rng`, `data`; a converted or exported file may have only the above.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pixdiff.atomic import atomic_write

FORMAT = "pixdiff-1"


class CheckpointError(ValueError):
    pass


def save(obj: dict[str, Any], path: str | Path) -> None:
    """Write atomically (`pixdiff.atomic`): a crash never leaves half a file under `path`."""
    with atomic_write(path) as f:
        torch.save({"format": FORMAT, **obj}, f)


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


def model_from_state(config: Any, state: dict[str, torch.Tensor],
                     device: torch.device | str = "cpu") -> torch.nn.Module:
    """An eval-mode, frozen model of `config` (a ModelConfig) holding `state`; built on the meta
    device, so nothing is initialised twice and no random numbers are drawn."""
    with torch.device("meta"):
        model = config.build()
    model = model.to_empty(device="cpu")
    model.load_state_dict(state, strict=True)
    model.backbone.reset_rope()  # non-persistent buffers were left empty by the meta build
    return model.to(device).eval().requires_grad_(False)


def ema_weights(ckpt: dict[str, Any]) -> dict[float, dict[str, torch.Tensor]]:
    """{decay: weights} of every EMA a checkpoint holds: "ema" is its recipe's first
    train.ema_decays entry, "ema_extra" the others."""
    first = ckpt["recipe"]["train"]["ema_decays"][0]
    return {float(first): ckpt["ema"], **{float(k): v for k, v in ckpt.get("ema_extra", {}).items()}}


def pick_ema(ckpt: dict[str, Any], decay: float | None) -> dict[str, torch.Tensor]:
    """The weights of the EMA with `decay` (None: the first, what sampling uses by default)."""
    if decay is None:
        return ckpt["ema"]
    emas = ema_weights(ckpt)
    if float(decay) not in emas:
        raise CheckpointError(f"no EMA with decay {decay} in this checkpoint; it has {', '.join(map(str, emas))}")
    return emas[float(decay)]
