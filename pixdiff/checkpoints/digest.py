"""The content digest a checkpoint carries, so that a loader can tell a damaged file from a good one.

Each tensor is reduced to the sum of its bytes read as little-endian uint64 words, mod 2**64 (plus
its trailing bytes): numpy does this at memory speed, in threads across tensors, several times
faster than torch.load reads a file from the page cache, where blake2b or sha256 over the bytes
take longer than the load itself (measured: docs/drills.md). blake2b then digests every tensor's
path, dtype, shape and sum, and every other leaf (step, recipe fields, optimizer settings) by value.

What it catches: any change confined to 8 contiguous bytes of a tensor (an overwritten word, a
flipped bit; a burst of at most 64 bits changes the sum by a non-zero amount mod 2**64), tensors
renamed, reshaped, swapped or missing, and any changed non-tensor value; other damage with
probability 1 - 2**-64. It guards against accidents (disk, copy, transfer), not against an attacker,
who could forge it; nothing a file holds runs code either way (see `store`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

ALGORITHM = "sum64+blake2b"
_THREADS = min(8, os.cpu_count() or 1)


def _leaves(obj: Any, path: str) -> Iterator[tuple[str, Any]]:
    """(path, leaf) in a fixed order: dict keys sorted by their repr (state dicts mix int and str keys)."""
    if isinstance(obj, dict):
        for k in sorted(obj, key=repr):
            yield from _leaves(obj[k], f"{path}/{k!r}")
    elif isinstance(obj, (list, tuple)):  # a tuple may come back a list through some writers: same digest
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{path}[{i}]")
    else:
        yield path, obj


def _sum64(t: torch.Tensor) -> int:
    """Sum of the tensor's bytes as uint64 words mod 2**64, the tail (< 8 bytes) as one more word."""
    raw = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    body = len(raw) - len(raw) % 8
    total = int(raw[:body].view("<u8").sum(dtype=np.uint64))  # numpy's uint64 sum wraps mod 2**64
    return (total + int.from_bytes(raw[body:].tobytes(), "little")) % 2**64


def digest(obj: Any) -> str:
    """The digest of a nested dict/list of tensors and builtins (hex, 32 characters)."""
    leaves = list(_leaves(obj, ""))
    tensors = [v for _, v in leaves if isinstance(v, torch.Tensor)]
    with ThreadPoolExecutor(_THREADS) as pool:  # numpy releases the GIL while it sums
        sums = iter(list(pool.map(_sum64, tensors)))
    h = hashlib.blake2b(digest_size=16)
    for path, v in leaves:
        if isinstance(v, torch.Tensor):
            h.update(f"{path}:tensor:{v.dtype}:{tuple(v.shape)}:{next(sums)}\n".encode())
        else:
            h.update(f"{path}:{type(v).__name__}:{v!r}\n".encode())
    return h.hexdigest()
