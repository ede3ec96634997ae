"""The authors' reference state-dict layout <-> pixdiff's DiP model.

Their denoiser keeps the backbone at the top level (`s_embedder.`, `t_embedder.`, `y_embedder.`,
`blocks.N.`) and the Patch Detailer Head under `local_decoder.`; their Lightning checkpoints store it
under `state_dict` with the prefixes `denoiser.` (raw) and `ema_denoiser.` (EMA). pixdiff names the
same tensors `backbone.*` and `head.*`, so conversion is a strict prefix mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

BACKBONE, HEAD = "backbone.", "head."
REFERENCE_HEAD = "local_decoder."
LIGHTNING_PREFIXES = {"ema": "ema_denoiser.", "raw": "denoiser."}


class InteropError(ValueError):
    pass


def reference_denoiser(ckpt: Mapping[str, torch.Tensor], weights: str = "ema") -> dict[str, torch.Tensor]:
    """The denoiser's tensors from a bare reference state dict or a Lightning checkpoint."""
    if "state_dict" in ckpt:
        ckpt = ckpt["state_dict"]
    prefix = LIGHTNING_PREFIXES[weights]
    if any(k.startswith(prefix) for k in ckpt):
        return {k.removeprefix(prefix): v for k, v in ckpt.items() if k.startswith(prefix)}
    if any(k.startswith(p) for p in LIGHTNING_PREFIXES.values() for k in ckpt):
        raise InteropError(f"checkpoint has no {prefix!r} tensors (choose the other weights)")
    return dict(ckpt)


def from_reference(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Reference denoiser keys -> pixdiff DiP keys."""
    return {
        (HEAD + k.removeprefix(REFERENCE_HEAD)) if k.startswith(REFERENCE_HEAD) else BACKBONE + k: v
        for k, v in state.items()
    }


def to_reference(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """pixdiff DiP keys -> reference denoiser keys (post-hoc placement only: the reference has no other)."""
    out = {}
    for k, v in state.items():
        if k.startswith(BACKBONE):
            out[k.removeprefix(BACKBONE)] = v
        elif k.startswith(HEAD):
            out[REFERENCE_HEAD + k.removeprefix(HEAD)] = v
        else:
            raise InteropError(f"{k!r} has no counterpart in the reference layout (only post-hoc DiP converts)")
    return out


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


def load_reference(model: nn.Module, ckpt: Mapping[str, torch.Tensor], weights: str = "ema") -> None:
    """Strictly load a reference checkpoint into `model`: every tensor used, none missing, shapes equal."""
    state = from_reference(reference_denoiser(ckpt, weights))
    check_state(model.state_dict(), state, "reference checkpoint")
    model.load_state_dict(state, strict=True)
