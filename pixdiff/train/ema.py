"""Exponential moving averages of the weights, several decays at once."""

from __future__ import annotations

import torch


@torch.no_grad()
def ema_update(emas: list[list[torch.Tensor]], live: list[torch.Tensor], decays: tuple[float, ...],
               keep: torch.Tensor) -> None:
    """ema <- ema + keep * (1 - decay) * (live - ema), in place, for each (ema, decay).

    `keep` is a 0-d float tensor, 1 or 0: 0 leaves every EMA as it is without a host sync (a step
    whose update was skipped on device). Works on plain tensors and local FSDP shards alike."""
    live = [p.detach() for p in live]
    for ema, decay in zip(emas, decays):
        weight = keep * (1.0 - decay)
        torch._foreach_lerp_(ema, [p.to(e.dtype) for p, e in zip(live, ema)], [weight] * len(ema))
