"""What every official-layout converter shares: the error type, the strict state check, and the
Lightning checkpoint plumbing that DiP's, PixNerd's, DeCo's and PixelDiT's authors all use.

Their Lightning checkpoints keep the denoiser under `state_dict` with the prefixes `denoiser.` (raw)
and `ema_denoiser.` (EMA); a bare state dict (no prefix) is read as both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

LIGHTNING_PREFIXES = {"ema": "ema_denoiser.", "raw": "denoiser."}


class InteropError(ValueError):
    pass


def lightning_states(ckpt: Mapping[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
    """{"raw", "ema"} denoiser state dicts (prefixes removed) of a Lightning checkpoint, one found
    alone serving as both, or of a bare state dict (both)."""
    state = ckpt.get("state_dict", ckpt)
    if not isinstance(state, Mapping):
        raise InteropError(f"the checkpoint's state_dict is a {type(state).__name__}, not a dict of tensors")
    found = {weights: {k.removeprefix(p): v for k, v in state.items() if k.startswith(p)}
             for weights, p in LIGHTNING_PREFIXES.items()}
    if not any(found.values()):
        bare = dict(state)
        return {"raw": bare, "ema": bare}
    return {"raw": found["raw"] or found["ema"], "ema": found["ema"] or found["raw"]}


def check_state(own: Mapping[str, torch.Tensor], state: Mapping[str, Any], what: str) -> None:
    """Raise InteropError (one line) unless `state` has exactly `own`'s tensors, shapes equal."""
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InteropError(f"{what} holds values that are not tensors")
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                  for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        lines = [f"missing: {missing[:8]}{' ...' if len(missing) > 8 else ''}" if missing else "",
                 f"unused: {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}" if unexpected else "",
                 f"shape mismatch: {mismatched[:8]}" if mismatched else ""]
        raise InteropError(f"{what} does not match the recipe's model; " + "; ".join(line for line in lines if line))
