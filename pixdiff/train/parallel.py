"""Building the trained parts for one process, and every DDP/FSDP2 difference in one place.

Under FSDP2 (`train.parallel="fsdp"`) each block and the whole `TrainingLoss` are sharded; the
EMAs are fp32 shards of the same layout (updating them needs no communication), and every
full-state read or write is a collective that all ranks enter. Under DDP (or one process) the
live module is replicated and the EMAs are plain fp32 tensors.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from pixdiff.recipe import Recipe
from pixdiff.runtime.distributed import Dist
from pixdiff.train.loss import TrainingLoss


@dataclass(frozen=True)
class Parts:
    net: TrainingLoss  # the unwrapped module: parameter names and checkpoints
    wrapped: nn.Module  # what a step calls: DDP, FSDP2 or `net` itself
    optimizer: torch.optim.Optimizer
    emas: list[list[torch.Tensor]]  # one list per train.ema_decays entry, like net.model.parameters(), fp32
    fsdp: bool


def build(recipe: Recipe, d: Dist) -> Parts:
    """Model (identical initial weights on every rank), its wrapper, AdamW and the EMAs."""
    tc = recipe.train
    torch.manual_seed(tc.seed)
    model = recipe.model.build().to(d.device)
    if tc.compile:
        model.compile()  # in place: parameter names (and checkpoints) stay as they are
    net = TrainingLoss(model, recipe.objective, recipe.model.backbone.num_classes, tc.repa).to(d.device)
    fsdp = tc.parallel == "fsdp"
    wrapped = _wrap(net, d, fsdp)
    emas = [[p.detach().clone().float() for p in model.parameters()] for _ in tc.ema_decays]
    # fused: one kernel per step, and it skips a step on device when given `found_inf` (see loop.py)
    optimizer = torch.optim.AdamW(net.parameters(), lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay,
                                  fused=True)
    return Parts(net, wrapped, optimizer, emas, fsdp)


def _wrap(net: TrainingLoss, d: Dist, fsdp: bool) -> nn.Module:
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for block in net.model.backbone.blocks:
            fully_shard(block)
        return fully_shard(net)
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(net, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    return net


def gradient_sync(wrapped: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """DDP's no_sync on the micro-batches before the last of an accumulation (FSDP2 always syncs)."""
    return contextlib.nullcontext() if sync or not hasattr(wrapped, "no_sync") else wrapped.no_sync()


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of a (possibly sharded) tensor, for element-wise updates."""
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole of a (possibly sharded) tensor (a collective for a shard)."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def full_state_dict(module: nn.Module, fsdp: bool) -> dict[str, torch.Tensor]:
    """Unsharded CPU copy of `module`'s weights (a collective under FSDP: every rank calls it)."""
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def load_full_state_dict(module: nn.Module, state: dict[str, torch.Tensor], fsdp: bool) -> None:
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True))
    else:
        module.load_state_dict(state)


def optimizer_state(p: Parts) -> dict:
    if p.fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(p.net, p.optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return p.optimizer.state_dict()


def load_optimizer_state(p: Parts, state: dict) -> None:
    if p.fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(p.net, p.optimizer, state, options=StateDictOptions(full_state_dict=True))
    else:
        p.optimizer.load_state_dict(state)


def ema_state(p: Parts, i: int) -> dict[str, torch.Tensor]:
    """Full weights of EMA `i` on CPU, keyed like the model's state dict (a collective under FSDP).

    Persistent buffers (e.g. JiT's fixed sin-cos table) are not trained, so the EMA holds the model's."""
    model = p.net.model
    names = [n for n, _ in model.named_parameters()]
    state = {n: full(e).detach().cpu() for n, e in zip(names, p.emas[i])}
    keys = model.state_dict().keys()
    return {**state, **{n: full(b).detach().cpu() for n, b in model.named_buffers() if n in keys}}


@torch.no_grad()
def load_ema_state(p: Parts, i: int, state: dict[str, torch.Tensor]) -> None:
    from torch.distributed.tensor import DTensor, distribute_tensor

    for (name, _), e in zip(p.net.model.named_parameters(), p.emas[i]):
        value = state[name].to(e.device, e.dtype)
        e.copy_(distribute_tensor(value, e.device_mesh, e.placements) if isinstance(e, DTensor) else value)
