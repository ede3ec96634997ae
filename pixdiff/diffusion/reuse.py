"""Backbone reuse: recompute the expensive part of the network only at some sampling steps.

Training-free (DeepCache, DDT's encoder sharing, TeaCache, FirstBlockCache). A model that offers
the split `features(x, t, y)` + `decode(x, features)` (DiP: the DiT's output, and the head that
reads the current noisy pixels) keeps its last features and runs `decode` on the new pixels at every
step. Any other model, and a model whose decode never reads the pixels (JiT's final layer), reuses
its residual instead: output = x + (output - x) from the last recomputed step.

A schedule says at which grid points of the sampler the features are recomputed (the grid index of
t, so Heun's two evaluations at one grid time decide alike):

    every:K        indices 0, K, 2K, ...
    steps:0,1,5    the listed indices
    adaptive:T     when the relative L1 change of a cheap signal (`probe(x, t, y)` where the model
                   has one, else x), summed since the last recompute, reaches T (TeaCache's rule)
    first-block:T  block 0 runs at every step; the rest recomputes when the relative L1 distance of
                   block 0's residual (output - input) to its value at the last recompute reaches T
                   (FirstBlockCache's rule); a recompute goes on from block 0's output, so the
                   signal costs one block per step and nothing more

Index 0 always computes, and so does any call whose batch differs from the cached one (guidance
switching on at the start of its interval). One decision covers a sample's conditional and
unconditional rows together, so the two halves of a CFG batch are recomputed or reused as a pair;
adaptive and first-block decisions are per sample (each from its own rows), so a sample's image does not depend on
its batch-mates; when any sample recomputes, the whole batch runs the backbone and only the
deciding samples take the new features.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

Kind = Literal["every", "steps", "adaptive", "first-block"]
SIGNALLED = ("adaptive", "first-block")  # the kinds that decide from a signal and a threshold
FORMS = "every:K, steps:I,J,..., adaptive:T or first-block:T"
GRIDLESS_SOLVERS = ("odeint",)  # torchdiffeq picks its own times: no grid index to schedule by


@dataclass(frozen=True)
class Reuse:
    kind: Kind
    every: int = 1
    steps: tuple[int, ...] = ()
    threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("every", "steps", *SIGNALLED):
            raise ValueError(f"reuse schedule must be {FORMS}, not {self.kind!r}")
        if self.kind == "every" and self.every < 1:
            raise ValueError(f"reuse every:{self.every} never recomputes; K must be >= 1")
        if self.kind == "steps" and (not self.steps or min(self.steps) < 0):
            raise ValueError("reuse steps: needs a non-empty list of step indices >= 0")
        if self.kind in SIGNALLED and not (math.isfinite(self.threshold) and self.threshold >= 0):
            raise ValueError(f"reuse {self.kind} threshold must be finite and >= 0, not {self.threshold}")

    @property
    def spec(self) -> str:
        """The string `parse_reuse` reads back."""
        if self.kind == "every":
            return f"every:{self.every}"
        if self.kind == "steps":
            return "steps:" + ",".join(map(str, self.steps))
        return f"{self.kind}:{self.threshold:g}"

    def check(self, steps: int, solver: str) -> None:
        """Refuse a schedule that cannot work on this sampler (ValueError, one line)."""
        if solver in GRIDLESS_SOLVERS:
            raise ValueError(f"reuse needs a fixed-grid solver; {solver} chooses its own times")
        if solver == "meanflow":  # its 1-4 jumps each move far: a stale backbone has nothing to share
            raise ValueError("reuse does not apply to the meanflow solver (1-4 steps, each a long jump)")
        if self.kind == "steps" and max(self.steps) >= steps:
            raise ValueError(f"reuse steps: index {max(self.steps)} is out of range for {steps} steps (0..{steps - 1})")
        if steps > 1 and self.kind == "every" and self.every >= steps:
            raise ValueError(f"reuse every:{self.every} never recomputes after step 0 in {steps} steps")
        if steps > 1 and self.kind == "steps" and max(self.steps) == 0:
            raise ValueError(f"reuse steps: never recomputes after step 0 in {steps} steps")

    def scheduled(self, index: int) -> bool:
        """Whether a fixed schedule recomputes at grid index `index` (0 always does)."""
        return index == 0 or (index % self.every == 0 if self.kind == "every" else index in self.steps)


def parse_reuse(spec: str) -> Reuse | None:
    """'off' (or '') -> None; 'every:2', 'steps:0,1,5', 'adaptive:0.1', 'first-block:0.1' -> Reuse.
    ValueError otherwise."""
    text = spec.strip()
    if text in ("", "off"):
        return None
    kind, _, arg = text.partition(":")
    try:
        if kind == "every":
            return Reuse("every", every=_number(int, arg, spec))
        if kind == "steps":
            return Reuse("steps", steps=tuple(sorted({_number(int, i, spec) for i in arg.split(",")})))
        if kind in SIGNALLED:
            return Reuse(kind, threshold=_number(float, arg, spec))
    except _Unreadable:
        pass
    raise ValueError(f"reuse must be off, {FORMS}, not {spec!r}")


def reuse_problem(spec: str, steps: int, solver: str) -> str | None:
    """Why `spec` cannot run `steps` steps of `solver` (one line), or None when it can: what the
    recipe's SampleConfig and the CLI both check before anything is drawn or written."""
    try:
        schedule = parse_reuse(spec)
        if schedule is not None:
            schedule.check(steps, solver)
    except ValueError as e:
        return str(e)
    return None


class _Unreadable(Exception):
    pass


def _number(kind: type, text: str, spec: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise _Unreadable(spec) from None


def _select(take: Tensor, new: Any, old: Any) -> Any:
    """new where take (R,) is True, else old, row-wise; for a tensor or a dataclass of tensors."""
    if isinstance(new, Tensor):
        return torch.where(take.view(-1, *[1] * (new.dim() - 1)), new, old)
    return dataclasses.replace(new, **{f.name: _select(take, getattr(new, f.name), getattr(old, f.name))
                                       for f in dataclasses.fields(new) if isinstance(getattr(new, f.name), Tensor)})


def _relative_l1(now: Tensor, before: Tensor, samples: int) -> Tensor:
    """Per sample (its rows pooled: CFG's [uncond, cond] halves) mean |now - before| / mean |before| -> (samples,)."""
    rows = now.shape[0]
    diff = (now - before).abs().float().reshape(rows // samples, samples, -1).mean(dim=(0, 2))
    return diff / before.abs().float().reshape(rows // samples, samples, -1).mean(dim=(0, 2)).clamp_min(1e-12)


class Reused:
    """model(x, t, y) with the backbone reused between recomputes (a Model for `guidance.cfg`).

    One object per trajectory: `sampling.sample_images` builds it with the grid `ts` and the number
    of samples, so the solvers stay pure functions of f. `evaluations` counts backbone forwards,
    `recomputed` the per-sample recomputes (equal unless adaptive decisions differ between samples).
    """

    def __init__(self, model: Any, reuse: Reuse, ts: Tensor, samples: int):
        self.reuse, self.samples = reuse, samples
        self.grid = [float(t) for t in ts]
        self.split = hasattr(model, "features") and getattr(model, "decode_reads_pixels", False)
        self.model = model
        self.probe: Callable[..., Tensor] = getattr(model, "probe", lambda x, t, y: x)
        if reuse.kind == "first-block" and not hasattr(model, "first_block"):
            raise ValueError("reuse first-block:T needs a model with a first_block split (pixdiff's DiP class)")
        self.cache: Any = None
        self.signal: Tensor | None = None
        self.change = torch.zeros(samples)
        self.evaluations, self.recomputed = 0, 0

    def _decide(self, x: Tensor, t: Tensor, y: Tensor, residual: Tensor | None) -> Tensor:
        """Which samples recompute now -> (samples,) bool. `residual`: block 0's, for first-block."""
        time = float(t[0])
        if time not in self.grid:
            raise ValueError(f"reuse is scheduled on the sampling grid; t = {time} is not on it")
        index = self.grid.index(time)
        fresh = self.cache is None or index == 0 or _rows(self.cache) != x.shape[0]
        if self.reuse.kind not in SIGNALLED:
            return torch.full((self.samples,), fresh or self.reuse.scheduled(index))
        signal = self.probe(x, t, y) if residual is None else residual
        if fresh or self.signal is None or self.signal.shape != signal.shape:
            self.change.zero_()
            self.signal = signal
            return torch.ones(self.samples, dtype=torch.bool)
        if self.reuse.kind == "adaptive":  # TeaCache: step-to-step changes, summed since the last recompute
            self.change += _relative_l1(signal, self.signal, self.samples).cpu()
            take = self.change >= self.reuse.threshold
            self.change[take] = 0.0
            self.signal = signal
            return take
        # FirstBlockCache: the distance to the residual of the sample's last recompute
        take = _relative_l1(signal, self.signal, self.samples).cpu() >= self.reuse.threshold
        self.signal = _select(take.repeat(x.shape[0] // self.samples).to(x.device), signal, self.signal)
        return take

    def _backbone(self, x: Tensor, t: Tensor, y: Tensor, first: Any) -> Any:
        """The features (split models) or the whole output, going on from `first_block`'s `first`."""
        run = self.model.features if self.split else self.model
        return run(x, t, y) if first is None else run(x, t, y, first=first)

    def __call__(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        if x.shape[0] % self.samples:
            raise ValueError(f"reuse needs whole CFG halves: {x.shape[0]} rows for {self.samples} samples")
        first, residual = self.model.first_block(x, t, y) if self.reuse.kind == "first-block" else (None, None)
        take = self._decide(x, t, y, residual)
        rows = take.repeat(x.shape[0] // self.samples).to(x.device)  # (R,): rows are [uncond, cond] x samples
        every = bool(take.all())
        out = None
        if bool(take.any()):
            self.evaluations += 1
            self.recomputed += int(take.sum())
            new = out = self._backbone(x, t, y, first)
            if not self.split:
                new = out - x
            self.cache = new if every else _select(rows, new, self.cache)
        if self.split:
            return self.model.decode(x, self.cache)
        if every:  # the output itself, not x + (out - x): with every:1 this is the plain sampler bit for bit
            return out
        reused = x + self.cache
        return reused if out is None else _select(rows, out, reused)


def _rows(cache: Any) -> int:
    """The batch (rows) the cached features were computed for."""
    if isinstance(cache, Tensor):
        return cache.shape[0]
    return next(getattr(cache, f.name) for f in dataclasses.fields(cache)
                if isinstance(getattr(cache, f.name), Tensor)).shape[0]
