"""What one training step differentiates: the objective's loss (plus REPA's alignment term)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pixdiff.recipe import RepaConfig
from pixdiff.runtime.rng import derive_seed


def step_generators(seed: int, step: int, indices: range, device: torch.device) -> list[torch.Generator]:
    """One generator per sample of the global batch, keyed by (seed, step, position): a sample's
    noise, time and label dropout do not depend on the rank or micro-batch that computes it."""
    return [torch.Generator(device).manual_seed(derive_seed(seed, step, i)) for i in indices]


class TrainingLoss(nn.Module):
    """Everything a training step differentiates, as one module, so that DDP and FSDP see (and
    synchronise) the denoiser and the optional REPA projector together."""

    def __init__(self, model: nn.Module, objective: Any, num_classes: int, repa: RepaConfig | None):
        super().__init__()
        from pixdiff.train.repa import load_encoder, projector

        self.model, self.objective, self.num_classes, self.repa = model, objective, num_classes, repa
        if repa is not None:
            self.repa_projector = projector(model.backbone.config.dim, repa.proj_dim)
            # a plain attribute, not a submodule: frozen, and kept out of checkpoints and DDP
            self.__dict__["encoder"] = load_encoder(repa.encoder)

    def forward(self, x: torch.Tensor, y: torch.Tensor, generators: list[torch.Generator]
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.num_classes == 0:  # an unconditional model: every image gets the one (null) label row
            y = torch.zeros_like(y)
        if self.repa is None:
            return self.objective.loss(self.model, x, y, num_classes=self.num_classes, generator=generators)
        from pixdiff.train.repa import alignment_loss

        block: dict[str, torch.Tensor] = {}

        def denoiser(x_t: torch.Tensor, t: torch.Tensor, y_: torch.Tensor) -> torch.Tensor:
            out, blocks = self.model(x_t, t, y_, return_blocks=(self.repa.block,))
            block["tokens"] = blocks[self.repa.block]  # (B, N, D)
            return out

        loss, stats = self.objective.loss(denoiser, x, y, num_classes=self.num_classes, generator=generators)
        encoder = self.__dict__["encoder"].to(x.device)
        with torch.no_grad():
            target = encoder(x)  # (B, N, proj_dim)
        align = alignment_loss(self.repa_projector(block["tokens"]), target)
        return loss + self.repa.weight * align, {**stats, "repa": align.detach()}
