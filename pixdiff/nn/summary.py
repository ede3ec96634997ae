"""Size and cost of a recipe's model, measured on the meta device (no memory, no weights)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from pixdiff.nn.model import ModelConfig


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def forward_flops(model: torch.nn.Module, config: ModelConfig, batch: int = 1) -> int:
    """FLOPs of one forward (multiply-add = 2) at the recipe's resolution, counted by torch's
    FlopCounterMode on tensors of the model's device (meta works)."""
    return sum(split_flops(model, config, batch))


def split_flops(model: torch.nn.Module, config: ModelConfig, batch: int = 1) -> tuple[int, int]:
    """(backbone, final head) FLOPs of one forward: `features` and `decode` counted apart where the
    model has that split (what backbone reuse skips and what it still runs), else (all, 0)."""
    x, t, y = _inputs(model, config, batch)
    with torch.no_grad():
        if not hasattr(model, "features"):
            with FlopCounterMode(display=False) as counter:
                model(x, t, y)
            return counter.get_total_flops(), 0
        with FlopCounterMode(display=False) as counter:
            out = model.features(x, t, y)
        with FlopCounterMode(display=False) as head:
            model.decode(x, out)
    return counter.get_total_flops(), head.get_total_flops()


def first_block_flops(model: torch.nn.Module, config: ModelConfig, batch: int = 1) -> int:
    """FLOPs of `first_block` (embeddings and block 0): what first-block reuse runs at every step,
    and what a backbone call that goes on from it does not run again."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.first_block(*_inputs(model, config, batch))
    return counter.get_total_flops()


def _inputs(model: torch.nn.Module, config: ModelConfig, batch: int) -> tuple[torch.Tensor, ...]:
    """x, t, y of `batch` images at the recipe's resolution, on the model's device (meta works)."""
    bb = config.backbone
    device = next(model.parameters()).device
    return (torch.zeros(batch, bb.channels, bb.image_size, bb.image_size, device=device),
            torch.zeros(batch, device=device), torch.zeros(batch, dtype=torch.long, device=device))


def model_summary(config: ModelConfig) -> dict:
    with torch.device("meta"):
        model = config.build()
    bb = config.backbone
    return {
        "params": count_params(model),
        "params_backbone": count_params(model.backbone),
        "params_head": count_params(model) - count_params(model.backbone),
        "head": type(config.head).__name__,
        "placement": config.placement,
        "tokens": bb.num_tokens,
        "patch_size": bb.patch_size,
        "resolution": bb.image_size,
        "depth": bb.depth,
        "dim": bb.dim,
        "gflops": forward_flops(model, config) / 1e9,
    }
