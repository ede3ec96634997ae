"""REPA: align an intermediate block's tokens with a frozen image encoder's patch tokens.

The encoder is the user's: a `torch.export` program (`.pt2`), a TorchScript file, or
`package.module:factory` returning an nn.Module.
It receives the clean training images (B, C, H, W) in [-1, 1] at the recipe's resolution and must
return patch tokens (B, N, proj_dim) with N equal to the DiT's token count (DINOv2-B/14 at 224 px
gives 256 tokens of 768 for 256 px images with 16 px patches); resizing and normalising for the
encoder is the encoder module's job. Nothing is downloaded.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pixdiff.train.errors import TrainingError


def load_encoder(spec: str) -> nn.Module:
    """The frozen encoder named by `spec`, in eval mode, its parameters excluded from autograd. A file
    that is not an exported program (.pt2) or TorchScript, or a factory that fails, is one TrainingError line."""
    try:
        encoder = _open_encoder(spec)
    except TrainingError:
        raise
    except Exception as e:  # noqa: BLE001 - torch explains on many lines; the first says what broke
        reason = (str(e).strip().splitlines() or [""])[0][:160]
        raise TrainingError(f"train.repa.encoder={spec!r} cannot be loaded ({type(e).__name__}: {reason}); "
                            "it takes a TorchScript file, a torch.export .pt2 file or module:factory") from None
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder


def _open_encoder(spec: str) -> nn.Module:
    if Path(spec).suffix == ".pt2" and Path(spec).is_file():
        return torch.export.load(spec).module()
    if Path(spec).is_file():
        return torch.jit.load(spec, map_location="cpu")
    module, sep, attr = spec.partition(":")
    if not sep:
        raise TrainingError(f"train.repa.encoder={spec!r} is neither a file nor `module:factory`")
    # `spec` comes from a recipe file or --set the user names: a stored recipe (a run's recipe.json)
    # naming a factory is refused when loaded (`recipe._no_import_from_a_record`), and checkpoints'
    # recipes are used for the model only, never to build REPA
    return getattr(importlib.import_module(module), attr)()


def projector(dim: int, out_dim: int) -> nn.Sequential:
    """The authors' projection MLP: D -> D -> D -> out_dim with SiLU."""
    return nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, out_dim))


def alignment_loss(tokens: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Negative mean cosine similarity between (B, N, E) projections and encoder tokens."""
    if tokens.shape != target.shape:
        raise ValueError(f"REPA: projected tokens {tuple(tokens.shape)} do not match the encoder's "
                         f"{tuple(target.shape)}")
    return -F.cosine_similarity(tokens.float(), target.float(), dim=-1).mean()
