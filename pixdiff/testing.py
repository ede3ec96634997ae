"""Conformance checks that every component of an interface must pass, ours or a plugin's.

    check_head(config)      a local head config (`build(dim, channels, patch_size)`)
    check_backbone(config)  a backbone config (`build()` -> `backbone(x, t, y) -> BackboneOutput`)
    check_model(config)     a denoiser config (`build()` -> `model(x_t, t, y) -> (B, C, H, W)`)

Each runs small CPU forwards and raises AssertionError naming the failed property and the config.
They restore the global RNG state when done, so they can run inside any test.

Zero-initialised layers (DiT's adaLN-Zero gates, a zero output layer) legitimately block every
gradient upstream of them at initialisation. The gradient check therefore asks two things:
  1. after one backward every trainable parameter has a gradient (None means it is unused);
  2. a parameter whose gradient is all zero must receive a non-zero one within a few (3) SGD
     steps on the same loss, i.e. once the zero layers in front of it have moved, as happens in
     the first training steps. Each step wakes one more zero layer of a chain: in the intermediate
     placement the injected head sits behind two (the zero output layer, the zero projection).
A parameter that is used but can never matter (multiplied by a constant zero) still fails.
The module is stepped at least once either way, and the later checks (patch independence) run
on that stepped module, so zero-output heads are tested on outputs that depend on their inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

# SGD steps (and their learning rate) allowed to wake chains of zero-initialised layers
_WAKE_STEPS = 3
_WAKE_LR = 1e-2
# independence tolerance: outputs of unperturbed patches may move by this much (relative)
_INDEPENDENCE_RTOL = 1e-5

Run = Callable[[nn.Module], Sequence[torch.Tensor]]


def _require(ok: bool, name: str, prop: str, detail: str) -> None:
    if not ok:
        raise AssertionError(f"{name}: {prop} failed: {detail}")


def _seeded_build(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build()


def _trainable(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in module.named_parameters() if p.requires_grad]


def _random_loss(outputs: Sequence[torch.Tensor], seed: int) -> torch.Tensor:
    """sum(out * r) with fixed random r: every output element gets its own non-zero weight."""
    g = torch.Generator().manual_seed(seed)
    return sum((o.float() * torch.randn(o.shape, generator=g)).sum() for o in outputs)


def _backward(module: nn.Module, run: Run, seed: int) -> None:
    module.zero_grad(set_to_none=True)
    _random_loss(run(module), seed).backward()


def _check_gradients(name: str, module: nn.Module, run: Run, seed: int) -> None:
    """Checks gradients reach every trainable parameter; leaves `module` trained a step or more."""
    module.train()
    params = _trainable(module)
    _backward(module, run, seed)
    unused = [n for n, p in params if p.grad is None]
    _require(not unused, name, "gradients reach every parameter", f"no gradient at all (unused?): {unused}")
    zero = {n for n, p in params if not p.grad.any()}
    for _ in range(_WAKE_STEPS):
        with torch.no_grad():
            for _, p in params:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-_WAKE_LR)
        if not zero:
            break
        _backward(module, run, seed)
        zero = {n for n, p in params if n in zero and not p.grad.any()}
    _require(not zero, name, "gradients reach every parameter",
             f"gradient still all zero after {_WAKE_STEPS} SGD steps: {sorted(zero)}")
    module.zero_grad(set_to_none=True)


def _check_determinism(name: str, build: Callable[[], nn.Module], run: Run, seed: int) -> None:
    a, b = _seeded_build(build, seed), _seeded_build(build, seed)
    sa, sb = a.state_dict(), b.state_dict()
    differing = [k for k in sa if not torch.equal(sa[k], sb[k])]
    _require(not differing, name, "seeded determinism", f"same seed, different init of {differing}")
    a.eval()
    b.eval()
    with torch.no_grad():
        out_a, out_b, out_a2 = run(a), run(b), run(a)
    _require(all(torch.equal(x, y) for x, y in zip(out_a, out_b)), name, "seeded determinism",
             "two modules built with the same seed give different outputs")
    _require(all(torch.equal(x, y) for x, y in zip(out_a, out_a2)), name, "seeded determinism",
             "two eval forwards of one module on the same input differ")


def _check_bf16(name: str, module: nn.Module, run: Run, expected: Sequence[torch.Tensor]) -> None:
    module.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        outs = run(module)
    for i, (o, ref) in enumerate(zip(outs, expected)):
        _require(o.shape == ref.shape, name, "bf16 autocast", f"output {i} has shape {tuple(o.shape)}, "
                 f"expected {tuple(ref.shape)}")
        _require(bool(torch.isfinite(o).all()), name, "bf16 autocast", f"output {i} is not finite")


def _check_meta(name: str, build: Callable[[], nn.Module], reference: nn.Module) -> None:
    with torch.device("meta"):
        meta = build()
    off_meta = [n for n, t in [*meta.named_parameters(), *meta.named_buffers()] if not t.is_meta]
    _require(not off_meta, name, "meta-device build", f"tensors created off the meta device: {off_meta}")
    n_meta = sum(p.numel() for p in meta.parameters())
    n_ref = sum(p.numel() for p in reference.parameters())
    _require(n_meta == n_ref, name, "meta-device build", f"{n_meta} parameters on meta, {n_ref} on CPU")


def _check_independence(name: str, module: nn.Module, patches: torch.Tensor, s: torch.Tensor,
                        c: torch.Tensor, seed: int) -> None:
    j = patches.shape[0] // 2
    others = [i for i in range(patches.shape[0]) if i != j]
    g = torch.Generator().manual_seed(seed + 1)
    patches2, s2, c2 = patches.clone(), s.clone(), c.clone()
    patches2[j] += torch.randn(patches2[j].shape, generator=g)
    s2[j] += torch.randn(s2[j].shape, generator=g)
    c2[j] += torch.randn(c2[j].shape, generator=g)
    for train in (True, False):
        module.train(train)
        mode = "train" if train else "eval"
        with torch.no_grad():
            torch.manual_seed(seed)
            before = module(patches, s, c)  # (BN, C, P, P)
            torch.manual_seed(seed)
            after = module(patches2, s2, c2)  # (BN, C, P, P)
        leak = (after[others] - before[others]).abs().max().item()
        scale = 1 + before.abs().max().item()
        _require(leak <= _INDEPENDENCE_RTOL * scale, name, "patch independence",
                 f"({mode} mode) perturbing patch {j} changed the outputs of other patches by up to {leak:.3g}")
        _require(not torch.equal(after[j], before[j]), name, "patch independence",
                 f"({mode} mode) perturbing patch {j}'s pixels, s and c left its own output unchanged")


def check_head(config: Any, *, dim: int = 32, channels: int = 3, patch_size: int = 8, batch: int = 6,
               seed: int = 0) -> None:
    """Checks a head config: `config.build(dim, channels, patch_size)` -> module mapping
    (patches (batch, C, P, P), s (batch, D), c (batch, D)) -> (batch, C, P, P).

    Properties: output shape and dtype; seeded determinism (init and output) and repeatable eval
    forwards; bf16 autocast on CPU gives finite output; a meta-device build has the same parameter
    count; gradients reach every parameter (see the module docstring for zero-init layers); and
    patches are processed independently: perturbing patch j (its pixels, s_j and c_j) changes
    output j and no other, in train mode (with the RNG reseeded, so dropout-like noise is
    identical) and in eval mode.
    """
    name = f"check_head({config!r}, dim={dim}, channels={channels}, patch_size={patch_size})"
    _require(batch >= 2, name, "arguments", "batch must be >= 2 to test patch independence")
    g = torch.Generator().manual_seed(seed)
    patches = torch.randn(batch, channels, patch_size, patch_size, generator=g)  # (BN, C, P, P)
    s = torch.randn(batch, dim, generator=g)  # (BN, D)
    c = torch.randn(batch, dim, generator=g)  # (BN, D)

    def build() -> nn.Module:
        return config.build(dim, channels, patch_size)

    def run(m: nn.Module) -> list[torch.Tensor]:
        return [m(patches, s, c)]

    with torch.random.fork_rng(devices=[]):
        module = _seeded_build(build, seed)
        out = module(patches, s, c)
        _require(out.shape == patches.shape, name, "output shape",
                 f"got {tuple(out.shape)}, expected {tuple(patches.shape)}")
        _require(out.dtype == patches.dtype, name, "output dtype", f"got {out.dtype}, expected {patches.dtype}")
        _check_determinism(name, build, run, seed)
        _check_bf16(name, module, run, [out])
        _check_meta(name, build, module)
        if _trainable(module):
            _check_gradients(name, module, run, seed)
        _check_independence(name, module, patches, s, c, seed)


def check_backbone(config: Any, *, batch: int = 2, seed: int = 0) -> None:
    """Checks a backbone config with `build()` and fields channels, image_size, num_classes, dim,
    patch_size; the module maps (x (B, C, H, W), t (B,), y (B,)) -> BackboneOutput with tokens and
    s (B, N, D), c (B, D) and a `blocks` dict.

    Properties: output shapes and dtype; seeded determinism; bf16 autocast gives finite outputs;
    meta-device build; gradients of tokens, s and c reach every parameter.
    """
    name = f"check_backbone({config!r})"
    C, H, D = config.channels, config.image_size, config.dim
    N = (H // config.patch_size) ** 2
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, C, H, H, generator=g)  # (B, C, H, W)
    t = torch.rand(batch, generator=g)  # (B,)
    y = torch.randint(0, config.num_classes + 1, (batch,), generator=g)  # (B,), null class included

    def run(m: nn.Module) -> list[torch.Tensor]:
        out = m(x, t, y)
        return [out.tokens, out.s, out.c]

    with torch.random.fork_rng(devices=[]):
        module = _seeded_build(config.build, seed)
        out = module(x, t, y)
        expected = {"tokens": (batch, N, D), "s": (batch, N, D), "c": (batch, D)}
        for key, shape in expected.items():
            got = getattr(out, key)
            _require(tuple(got.shape) == shape, name, "output shape",
                     f"{key} is {tuple(got.shape)}, expected {shape}")
            _require(got.dtype == x.dtype, name, "output dtype", f"{key} is {got.dtype}, expected {x.dtype}")
        _require(isinstance(out.blocks, dict), name, "output type",
                 f"blocks is {type(out.blocks).__name__}, not dict")
        _check_determinism(name, config.build, run, seed)
        _check_bf16(name, module, run, [out.tokens, out.s, out.c])
        _check_meta(name, config.build, module)
        _check_gradients(name, module, run, seed)


def check_model(config: Any, *, batch: int = 2, seed: int = 0) -> None:
    """Checks a denoiser config with `build()` and a `backbone` field (channels, image_size,
    num_classes); the module maps (x_t (B, C, H, W), t (B,), y (B,)) -> (B, C, H, W).

    Properties: output shape and dtype; seeded determinism; bf16 autocast; meta-device build;
    gradients reach every parameter.
    """
    name = f"check_model({config!r})"
    bb = config.backbone
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, bb.channels, bb.image_size, bb.image_size, generator=g)  # (B, C, H, W)
    t = torch.rand(batch, generator=g)  # (B,)
    y = torch.randint(0, bb.num_classes + 1, (batch,), generator=g)  # (B,)

    def run(m: nn.Module) -> list[torch.Tensor]:
        return [m(x, t, y)]

    with torch.random.fork_rng(devices=[]):
        module = _seeded_build(config.build, seed)
        out = module(x, t, y)
        _require(out.shape == x.shape, name, "output shape", f"got {tuple(out.shape)}, expected {tuple(x.shape)}")
        _require(out.dtype == x.dtype, name, "output dtype", f"got {out.dtype}, expected {x.dtype}")
        _check_determinism(name, config.build, run, seed)
        _check_bf16(name, module, run, [out])
        _check_meta(name, config.build, module)
        _check_gradients(name, module, run, seed)
