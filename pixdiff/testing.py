"""Conformance checks that every component of an interface must pass, ours or a plugin's.

    check_head(config)      a head config of either scope, "patch" or "image" (see `pixdiff.nn.heads`)
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
The module is stepped at least once either way, and the later checks (patch or image independence)
run on that stepped module, so zero-output heads are tested on outputs that depend on their inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from pixdiff.nn.patches import to_patches

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


def _check_isolation(name: str, prop: str, module: nn.Module, inputs: Sequence[torch.Tensor],
                     perturbed: Sequence[torch.Tensor], moved: Sequence[int], what: str, seed: int, *,
                     must_move: bool = True) -> None:
    """Rows (dim 0) of the output outside `moved` must not change when `inputs` become `perturbed`
    (`what` names the perturbation); with `must_move`, the rows in `moved` must change."""
    for train in (True, False):
        module.train(train)
        mode = "train" if train else "eval"
        with torch.no_grad():
            torch.manual_seed(seed)
            before = module(*inputs)
            torch.manual_seed(seed)
            after = module(*perturbed)
        others = [i for i in range(before.shape[0]) if i not in moved]
        leak = (after[others] - before[others]).abs().max().item()
        scale = 1 + before.abs().max().item()
        _require(leak <= _INDEPENDENCE_RTOL * scale, name, prop,
                 f"({mode} mode) perturbing {what} changed other outputs (rows {others}) by up to {leak:.3g}")
        _require(not must_move or not torch.equal(after[list(moved)], before[list(moved)]), name, prop,
                 f"({mode} mode) perturbing {what} left its own output unchanged")


def _perturb(tensors: Sequence[torch.Tensor], row: int, seed: int) -> list[torch.Tensor]:
    """Copies of `tensors` with random noise added to row `row` of each."""
    g = torch.Generator().manual_seed(seed + 1)
    out = [t.clone() for t in tensors]
    for t in out:
        t[row] += torch.randn(t[row].shape, generator=g)
    return out


def _head_inputs(scope: str, images: int, grid: tuple[int, int], dim: int, channels: int, patch_size: int,
                 seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random (pixels, s, c) in the layout of a head of `scope` (see `pixdiff.nn.heads`)."""
    g = torch.Generator().manual_seed(seed)
    gh, gw = grid
    x = torch.randn(images, channels, gh * patch_size, gw * patch_size, generator=g)  # (B, C, H, W)
    s = torch.randn(images, dim, gh, gw, generator=g)  # (B, D, gh, gw)
    c = torch.randn(images, dim, generator=g)  # (B, D)
    if scope == "image":
        return x, s, c
    return to_patches(x, patch_size), s.flatten(2).transpose(1, 2).flatten(0, 1).contiguous(), c  # s (B*N, D)


def check_head(config: Any, *, dim: int = 32, channels: int = 3, patch_size: int = 8, images: int = 2,
               grid: tuple[int, int] = (2, 3), seed: int = 0) -> None:
    """Checks a head config: declarations `scope` ("patch" | "image") and `reads` ("s" | "tokens"),
    and `config.build(dim, channels, patch_size)` -> a module with the forward of its scope (see
    `pixdiff.nn.heads`), run on `images` images of `grid` (rows, columns) patches:
        "patch":  (patches (B*N, C, P, P), s (B*N, D), c (B, D)) -> (B*N, C, P, P)
        "image":  (x (B, C, H, W), s (B, D, gh, gw), c (B, D)) -> (B, C, H, W)

    Properties: output shape and dtype; seeded determinism (init and output) and repeatable eval
    forwards; bf16 autocast on CPU gives finite output; a meta-device build has the same parameter
    count; gradients reach every parameter (see the module docstring for zero-init layers). Then,
    in train mode (RNG reseeded, so dropout-like noise is identical) and in eval mode:
      "patch"  patches are independent: perturbing patch j's pixels and s_j changes output j and no
               other; perturbing c of one image changes no patch of another image;
      "image"  images are independent: perturbing one image's pixels, s and c changes its output
               and no other image's.
    """
    name = f"check_head({config!r}, dim={dim}, channels={channels}, patch_size={patch_size})"
    scope, reads = getattr(config, "scope", None), getattr(config, "reads", None)
    _require(scope in ("patch", "image"), name, "declarations", f"scope is {scope!r}, not 'patch' or 'image'")
    _require(reads in ("s", "tokens"), name, "declarations", f"reads is {reads!r}, not 's' or 'tokens'")
    _require(images >= 2 and grid[0] * grid[1] >= 2, name, "arguments",
             "independence needs at least 2 images of at least 2 patches")
    inputs = _head_inputs(scope, images, grid, dim, channels, patch_size, seed)

    def build() -> nn.Module:
        return config.build(dim, channels, patch_size)

    def run(m: nn.Module) -> list[torch.Tensor]:
        return [m(*inputs)]

    with torch.random.fork_rng(devices=[]):
        module = _seeded_build(build, seed)
        out = module(*inputs)
        pixels = inputs[0]
        _require(out.shape == pixels.shape, name, "output shape",
                 f"got {tuple(out.shape)}, expected {tuple(pixels.shape)}")
        _require(out.dtype == pixels.dtype, name, "output dtype", f"got {out.dtype}, expected {pixels.dtype}")
        _check_determinism(name, build, run, seed)
        _check_bf16(name, module, run, [out])
        _check_meta(name, build, module)
        if _trainable(module):
            _check_gradients(name, module, run, seed)
        if scope == "image":
            _check_isolation(name, "image independence", module, inputs, _perturb(inputs, 0, seed), [0],
                             "image 0 (pixels, s and c)", seed)
            return
        patches, s, c = inputs
        n = patches.shape[0] // images
        j = n + 1  # a patch of the second image, neither its first nor (for n > 2) its last
        _check_isolation(name, "patch independence", module, inputs, [*_perturb([patches, s], j, seed), c], [j],
                         f"patch {j} (pixels and s)", seed)
        _check_isolation(name, "patch independence", module, inputs, [patches, s, *_perturb([c], 0, seed)],
                         range(n), "c of image 0", seed, must_move=False)


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
