"""Classifier-free guidance with a guidance interval (Ho & Salimans; Kynkaanniemi et al.)."""

from __future__ import annotations

import torch
from torch import Tensor

from pixdiff.diffusion.objectives import Model


def cfg(model: Model, scale: float, *, num_classes: int, interval: tuple[float, float] = (0.1, 1.0)) -> Model:
    """Wrap `model` so that it returns uncond + scale * (cond - uncond) on all output channels.

    Guidance applies to the samples with lo < t < hi (DiP: 0.1 < t < 1.0, with t = 1 as data), and
    also at t = 0 when lo = 0: the interval is closed at the noise end exactly when it starts there,
    as LTH14/JiT's sampler decides it (`(t < high) & ((low == 0) | (t > low))`), so JiT's (0, 1)
    guides its first step too. The others get the conditional output. The unconditional half uses the null
    class `num_classes` and runs in the same forward as the conditional one, on the concatenated
    batch [uncond(guided samples), cond(all)]: batch 2B when every sample is guided (the sampling
    case, where all samples share t), batch B when none is or when scale == 1 (no unconditional
    forward at all). Pass interval=(-math.inf, math.inf) to guide at every t.

    Deciding which samples need guidance reads t on the host: one device sync per call.
    """
    lo, hi = interval

    def guided(x: Tensor, t: Tensor, y: Tensor, r: Tensor | None = None) -> Tensor:
        if r is not None:  # MeanFlow's average velocity (`solvers.meanflow`): guidance is trained in (objective.cfg_scale)
            if scale != 1.0 and num_classes:
                raise ValueError("classifier-free guidance of a MeanFlow average velocity at sampling time is not "
                                 "supported: use cfg_scale=1 (train it in with objective.cfg_scale)")
            return model(x, t, y, r=r)
        if scale == 1.0 or num_classes == 0:  # an unconditional model has nothing to guide towards
            return model(x, t, y)
        inside = ((t > lo) | (lo == 0)) & (t < hi)  # (B,)
        n = int(inside.sum())
        if n == 0:
            return model(x, t, y)
        # indices of the guided samples; all of them in the common case, without a gather
        idx = None if n == x.shape[0] else inside.nonzero().squeeze(1)
        x_u, t_u = (x, t) if idx is None else (x[idx], t[idx])
        null = torch.full((n,), num_classes, dtype=y.dtype, device=y.device)
        out = model(torch.cat([x_u, x]), torch.cat([t_u, t]), torch.cat([null, y]))
        uncond, cond = out[:n], out[n:]  # (n, ...), (B, ...)
        cond_u = cond if idx is None else cond[idx]
        guided_out = uncond + scale * (cond_u - uncond)
        if idx is None:
            return guided_out
        return cond.index_copy(0, idx, guided_out)

    return guided
