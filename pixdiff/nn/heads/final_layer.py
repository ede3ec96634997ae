"""DiT's final layer: the DiT-only baseline's output, expressed as a head so every variant shares one model.

    FinalLayer.project(tokens (B, N, D), c (B, D)) -> (B, N, C*P*P)

norm(tokens) modulated by adaLN shift/scale from c, then Linear(D -> C*P*P), both zero-initialised
(DiT's final layer; "rmsnorm" is JiT's variant). It reads the **last block's tokens**, as DiT's
final layer does, not DiP's head features s = silu(t_emb + tokens): s adds the timestep embedding
and a SiLU that clips every negative feature before the norm, which is what DiP feeds its Patch
Detailer Head, not what a DiT outputs from. An earlier pixdiff baseline read s; the layers (and so
the parameter count, 628,563,360 for `dip_xl16:dit_only`) are the same, only the input changed.
The layer never looks at the noisy pixels: everything comes from the token, which is exactly the
limitation DiP's head removes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from pixdiff.config.validate import check_fields
from pixdiff.nn.backbone import RMSNorm, modulate
from pixdiff.nn.heads import Reads, Scope

Norm = Literal["layernorm", "rmsnorm"]


@dataclass(frozen=True)
class DiTFinalLayer:
    """`norm`: "layernorm" (DiT: LayerNorm without affine, eps 1e-6) or "rmsnorm" (JiT: RMSNorm with
    a learnable gain, D more parameters)."""

    norm: Norm = "layernorm"
    scope: ClassVar[Scope] = "patch"
    reads: ClassVar[Reads] = "tokens"

    def __post_init__(self) -> None:
        check_fields(self)

    def build(self, dim: int, channels: int, patch_size: int) -> FinalLayer:
        return FinalLayer(dim, channels, patch_size, self.norm)


class FinalLayer(nn.Module):
    def __init__(self, dim: int, channels: int, patch_size: int, norm: Norm):
        super().__init__()
        self.channels, self.patch_size = channels, patch_size
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6) if norm == "layernorm" else RMSNorm(dim)
        # c arrives already SiLU'd, so the modulation is a bare Linear (index 0 kept for DiT's key names)
        self.adaLN_modulation = nn.Sequential(nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, channels * patch_size**2)
        for layer in (self.adaLN_modulation[0], self.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def project(self, tokens: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """tokens (B, N, D), c (B, D) -> (B, N, C*P*P), channel-major as `patchify` orders a patch."""
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)  # (B, D) each
        return self.linear(modulate(self.norm(tokens), shift, scale))  # (B, N, C*P*P)

    def forward(self, patches: torch.Tensor, tokens: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The patch-head interface: patches (B*N, C, P, P) unused, tokens (B*N, D), c (B, D)."""
        out = self.project(tokens.reshape(c.shape[0], -1, tokens.shape[-1]), c)  # (B, N, C*P*P)
        return out.view(-1, self.channels, self.patch_size, self.patch_size)  # (B*N, C, P, P)
