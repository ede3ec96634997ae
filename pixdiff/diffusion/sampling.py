"""High-level sampling: noise -> guided network -> velocity -> solver -> images in [-1, 1]."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from pixdiff.diffusion.guidance import cfg
from pixdiff.diffusion.objectives import Generators, Model, Objective, prior_std, randn
from pixdiff.diffusion.reuse import Reused, Reuse
from pixdiff.diffusion.solvers import SOLVERS, Callback, Solver, Velocity, shifted_grid
from pixdiff.runtime.precision import DTYPES, Dtype, autocast


@torch.no_grad()
def sample_images(
    model: Model, objective: Objective, y: Tensor, *, shape_chw: tuple[int, int, int], num_classes: int,
    steps: int = 100, solver: str | Solver = "euler", cfg_scale: float = 1.0,
    cfg_interval: tuple[float, float] = (0.1, 1.0), time_shift: float = 1.0, last_step: float = 0.0,
    generators: Generators = None, reuse: Reuse | None = None,
    callback: Callback | None = None, **solver_options: Any,
) -> Tensor:
    """Draw len(y) samples of class y (B,) -> (B, C, H, W) float32 in data space.

    Noise comes from `generators` (use `seed_generators` for per-sample reproducibility; the
    initial x, `prior_std(objective)` * N(0, I), and any solver noise are drawn per sample), on y's device. The grid is
    `shifted_grid(steps, time_shift, last_step=last_step)` (DiP: 100 Euler steps, no shift). Guidance follows
    `guidance.cfg`. The result is clamped to [-1, 1] once, at the end: intermediate states are
    left alone because clamping them would change the ODE. `solver_options` go to the solver
    (eta for ddim, noise_scale for euler_maruyama, method/rtol/atol for odeint). With `reuse`,
    the model's backbone is recomputed on that schedule only (`diffusion.reuse`); None is the plain sampler.
    """
    if isinstance(solver, str) and solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {sorted(SOLVERS)} or pass a function")
    step = SOLVERS[solver] if isinstance(solver, str) else solver
    x = prior_std(objective) * randn((y.shape[0], *shape_chw), generators, device=y.device, dtype=torch.float32)
    ts = shifted_grid(steps, time_shift, last_step=last_step, device=y.device)
    if reuse is not None:
        reuse.check(steps, solver if isinstance(solver, str) else getattr(solver, "__name__", ""))
        model = Reused(model, reuse, ts, samples=y.shape[0])
    velocity = guided_velocity(model, objective, y, cfg_scale=cfg_scale, num_classes=num_classes,
                               cfg_interval=cfg_interval)
    x = step(velocity, x, ts, schedule=objective, generator=generators, callback=callback, **solver_options)
    return x.float().clamp(-1, 1)


def guided_velocity(model: Model, objective: Objective, y: Tensor, *, num_classes: int, cfg_scale: float = 1.0,
                    cfg_interval: tuple[float, float] = (0.1, 1.0)) -> Velocity:
    """The solver's f(x, t): the velocity of `objective` from the CFG-guided network for labels y (B,)."""
    net = cfg(model, cfg_scale, num_classes=num_classes, interval=cfg_interval)

    def velocity(x: Tensor, t: Tensor, r: Tensor | None = None) -> Tensor:
        # r (the `meanflow` solver's interval end): the output is MeanFlow's average velocity, which
        # `predict` (flow matching's velocity parameterisation) passes through as the velocity
        return objective.predict(net(x, t, y, r=r), x, t).velocity

    return velocity


class Network:
    """A model as the sampler calls it at a given precision: the fp32 solver state is cast to the
    weights' dtype (under bf16 autocast on CUDA) and the output back to fp32. For the benchmark's
    FLOP count, each call's batch is recorded (with CFG inside the interval: 2B): in `batches` where
    it runs the backbone (a full forward or `features`), in `heads` where it runs the final head (a
    full forward or `decode`; under reuse a reused step runs only the head), in `firsts` where it runs
    only block 0 (`first_block`), and in `resumed` where a backbone call went on from that block.
    `parts` are the model's reuse split (`features`, `decode`, `probe`, `first_block`, see
    `diffusion.reuse`), run the same way."""

    def __init__(self, net: Callable, device: torch.device, dtype: Dtype, cudagraphs: bool,
                 parts: dict[str, Callable] | None = None, decode_reads_pixels: bool = False):
        self.net, self.device, self.dtype, self.cudagraphs = net, torch.device(device), dtype, cudagraphs
        self.batches: list[int] = []
        self.heads: list[int] = []
        self.firsts: list[int] = []
        self.resumed: list[int] = []
        self.parts = parts or {}
        self.decode_reads_pixels = decode_reads_pixels and {"features", "decode"} <= set(self.parts)

    def _run(self, fn: Callable, x: Tensor, *args: Any, **kwargs: Any) -> Any:
        if self.cudagraphs:
            # under CUDA graphs the next replay overwrites this call's output: mark the step and
            # hand back a copy, so a solver (Heun) or a reuse cache may keep it across calls
            torch.compiler.cudagraph_mark_step_begin()
        with autocast(self.device, self.dtype):
            out = fn(x.to(DTYPES[self.dtype]), *args, **kwargs)
        return _copied(out) if self.cudagraphs else out

    def __call__(self, x: Tensor, t: Tensor, y: Tensor, r: Tensor | None = None, first: Any = None) -> Tensor:
        self._count_backbone(x, first)
        self.heads.append(x.shape[0])
        if first is None:  # the plain call, as it always was (a compiled graph without the keyword)
            return self._run(self.net, x, t, y, r=r).float()
        return self._run(self.net, x, t, y, r=r, first=first).float()

    def features(self, x: Tensor, t: Tensor, y: Tensor, first: Any = None) -> Any:
        self._count_backbone(x, first)
        if first is None:
            return self._run(self.parts["features"], x, t, y)
        return self._run(self.parts["features"], x, t, y, first=first)

    def first_block(self, x: Tensor, t: Tensor, y: Tensor) -> tuple[Any, Tensor]:
        if "first_block" not in self.parts:
            raise ValueError("reuse first-block:T needs a model with a first_block split (pixdiff's DiP class)")
        self.firsts.append(x.shape[0])
        return self._run(self.parts["first_block"], x, t, y)

    def _count_backbone(self, x: Tensor, first: Any) -> None:
        self.batches.append(x.shape[0])
        if first is not None:
            self.resumed.append(x.shape[0])

    def decode(self, x: Tensor, features: Any) -> Tensor:
        self.heads.append(x.shape[0])
        return self._run(self.parts["decode"], x, features).float()

    def clear(self) -> None:
        """Forget the recorded calls (the benchmark clears them before each timed call)."""
        for calls in (self.batches, self.heads, self.firsts, self.resumed):
            calls.clear()

    def probe(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        if "probe" not in self.parts:
            return x
        return self._run(self.parts["probe"], x, t, y).float()


def _copied(out: Any) -> Any:
    """A copy of a tensor, of a (named) tuple of them (`first_block`) or of a dataclass of tensors
    (the features)."""
    if isinstance(out, Tensor):
        return out.clone()
    if isinstance(out, tuple):
        items = [_copied(o) for o in out]
        return type(out)(*items) if hasattr(out, "_fields") else tuple(items)
    return dataclasses.replace(out, **{f.name: getattr(out, f.name).clone() for f in dataclasses.fields(out)
                                       if isinstance(getattr(out, f.name), Tensor)})


CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")  # torch.compile modes that capture CUDA graphs


def default_compile_mode(device: torch.device | str) -> str:
    """CUDA graphs on CUDA (sampling at small batch is launch-bound); inductor's default on the CPU."""
    return "reduce-overhead" if torch.device(device).type == "cuda" else "default"


def inference_network(model: torch.nn.Module, *, dtype: Dtype = "fp32", compile: bool = False,
                      compile_mode: str | None = None) -> Network:
    """The sampling path of `pixdiff sample` and `pixdiff bench`: with "bf16" the model's parameters
    are converted to bf16 in place (buffers such as RoPE tables stay fp32; autocast would re-cast
    every fp32 weight on every forward); with `compile`, `torch.compile(mode, dynamic=False)`
    of the network alone (one graph per batch shape)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be 'bf16' or 'fp32', not {dtype!r}")
    device = next(model.parameters()).device
    if dtype == "bf16":
        for p in model.parameters():
            p.data = p.data.to(torch.bfloat16)
    mode = compile_mode or default_compile_mode(device)
    def compiled(fn: Callable) -> Callable:
        return torch.compile(fn, mode=mode, dynamic=False) if compile else fn

    parts = {name: compiled(getattr(model, name)) for name in REUSE_PARTS if hasattr(model, name)}
    return Network(compiled(model), device, dtype, compile and device.type == "cuda" and mode in CUDAGRAPH_MODES,
                   parts, getattr(model, "decode_reads_pixels", False))


REUSE_PARTS = ("features", "decode", "probe", "first_block")  # the model methods backbone reuse calls (see diffusion.reuse)
