"""Precision names ("bf16", "fp32") and the one autocast helper."""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

Dtype = Literal["bf16", "fp32"]
DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp32": torch.float32}


def autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when `dtype` is "bf16"; nothing otherwise (CPU autocast is slow, and
    CPU runs stay fp32 unless weights are cast explicitly)."""
    if torch.device(device).type == "cuda" and dtype == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
