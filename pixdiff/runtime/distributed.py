"""torch.distributed setup for commands launched by `torchrun` (or as one plain process).

Collectives time out: a rank that stalls (a hung GPU, a dead node) ends the job after
PIXDIFF_DIST_TIMEOUT seconds (default 600) instead of leaving the others waiting forever.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


class DeviceError(ValueError):
    """The --device asked for does not exist on this machine."""


def check_device(name: str | None) -> None:
    """Raise DeviceError (one line) when `name` ('cuda' or 'cuda:N'; None and 'cpu' always pass)
    names a CUDA device this process cannot use."""
    found = re.fullmatch(r"cuda(?::(\d+))?", str(name or ""))
    if found is None:
        return
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU"
        version = torch.__version__.split("+")[0]
        raise DeviceError(f"--device {name}: no CUDA device is available (torch {version} built for {build}); "
                          "use --device cpu")
    count = torch.cuda.device_count()
    if found[1] is not None and int(found[1]) >= count:
        raise DeviceError(f"--device {name}: this machine has {count} CUDA device{'s' * (count != 1)} "
                          f"(cuda:0 to cuda:{count - 1})")


def pick_device(device: str | None = None) -> torch.device:
    """`device` ("cpu", "cuda", "cuda:N") once checked, or by default CUDA when available."""
    check_device(device)
    return torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")


DEFAULT_TIMEOUT_S = 600


class DistError(RuntimeError):
    """The process group cannot be set up as asked (a bad PIXDIFF_DIST_TIMEOUT)."""


def collective_timeout() -> timedelta:
    """How long a collective may wait for the other ranks: $PIXDIFF_DIST_TIMEOUT seconds, default 600."""
    text = os.environ.get("PIXDIFF_DIST_TIMEOUT", "").strip() or str(DEFAULT_TIMEOUT_S)
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise DistError(f"PIXDIFF_DIST_TIMEOUT={text!r} must be a positive number of seconds")
    return timedelta(seconds=seconds)


def setup(device: str | None = None) -> Dist:
    """Join the process group torchrun describes through WORLD_SIZE/RANK/LOCAL_RANK.

    NCCL on CUDA, gloo on CPU. `device` forces "cpu" or "cuda"; by default CUDA when available.
    A CUDA device that is not there is a DeviceError (`check_device`).
    Collectives time out after `collective_timeout()`.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = pick_device(device).type == "cuda"
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    timeout = collective_timeout()  # checked on one process too: a typo fails before a 64-GPU launch
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", device_id=dev if use_cuda else None,
                                timeout=timeout)
    return Dist(rank=rank, world=world, local_rank=local_rank, device=dev)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def mean_across(d: Dist, value: torch.Tensor) -> torch.Tensor:
    """Average a tensor over ranks (a no-op on one process)."""
    if d.enabled:
        value = value.detach().clone()
        dist.all_reduce(value)  # SUM: gloo has no AVG
        value /= d.world
    return value


def host_group(d: Dist) -> dist.ProcessGroup | None:
    """A gloo group for agreeing on host-side flags without a device sync (None: the default
    group is gloo already, or there is one process). Every rank must call it."""
    if not d.enabled or dist.get_backend() == "gloo":
        return None
    return dist.new_group(backend="gloo")


def max_across(d: Dist, value: int, group: dist.ProcessGroup | None = None) -> int:
    """The largest of each rank's `value` (a collective over CPU tensors; the value itself on one process)."""
    if not d.enabled:
        return value
    t = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return int(t.item())
