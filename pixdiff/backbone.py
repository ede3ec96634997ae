"""The DiP backbone: a DDT-style Diffusion Transformer on large pixel patches.

Faithful to the authors' layout (parameter names match their state dict, see `pixdiff.interop`):
RMSNorm computed in float32, qk-norm, 2D RoPE on normalised positions, SwiGLU, adaLN on
c = silu(t_emb + y_emb), sinusoidal timestep embedding with max_period 10, a null class row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from pixdiff.patches import check_divisible, patchify
from pixdiff.validate import check_fields, positive, require

# hook(tokens (B, N, D), t_emb (B, D), c (B, D)) -> tokens (B, N, D)
TokenHook = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class DiTConfig:
    depth: int = 26
    dim: int = 1152
    num_heads: int = 16
    patch_size: int = 16
    channels: int = 3
    num_classes: int = 1000
    image_size: int = 256
    mlp_ratio: float = 4.0
    freq_dim: int = 256
    max_period: float = 10.0
    rope_theta: float = 10000.0
    rope_extent: float = 16.0  # RoPE positions are linspace(0, rope_extent, grid) on both axes
    attention: Literal["sdpa", "xformers"] = "sdpa"

    def __post_init__(self) -> None:
        check_fields(self)
        positive(self, "depth", "dim", "num_heads", "patch_size", "channels", "num_classes", "image_size",
                 "mlp_ratio", "freq_dim", "max_period", "rope_theta", "rope_extent")
        require(self, "dim", self.dim % self.num_heads == 0, f"must be divisible by num_heads={self.num_heads}")
        require(self, "dim", (self.dim // self.num_heads) % 4 == 0,
                f"head dim {self.dim // self.num_heads} must be a multiple of 4 for 2D RoPE")
        require(self, "freq_dim", self.freq_dim % 2 == 0, "must be even (cos and sin halves)")
        require(self, "patch_size", self.image_size % self.patch_size == 0,
                f"image size {self.image_size} is not divisible by the patch size {self.patch_size}")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        return self.grid**2

    def build(self) -> DiT:
        return DiT(self)


class RMSNorm(nn.Module):
    """RMSNorm computed in float32 whatever the input dtype (bf16 statistics are too coarse)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x32 * self.weight.float()).to(x.dtype)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float) -> torch.Tensor:
    """(B,) times in [0, 1] -> (B, dim) sinusoidal features, cos half first then sin."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, dim)


def rope_2d(head_dim: int, grid_h: int, grid_w: int, *, extent: float, theta: float,
            device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (N, head_dim/2) for 2D RoPE; token n = row * grid_w + col.

    Positions are normalised to linspace(0, extent, grid) per axis whatever the grid size, so a
    model trained at one resolution sees the same position range at another. Rotation pair j uses
    the x position for even j and the y position for odd j (x and y interleaved pairwise), with
    head_dim/4 frequencies 1/theta^(4k/head_dim) per axis.
    """
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 4, device=device)[: head_dim // 4].float() / head_dim)
    ys = torch.linspace(0, extent, grid_h, device=device)
    xs = torch.linspace(0, extent, grid_w, device=device)
    y, x = torch.meshgrid(ys, xs, indexing="ij")  # (gh, gw) each
    angle_x = x.reshape(-1, 1) * freqs  # (N, head_dim/4)
    angle_y = y.reshape(-1, 1) * freqs  # (N, head_dim/4)
    angles = torch.stack([angle_x, angle_y], dim=-1).flatten(1)  # (N, head_dim/2)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs of x (B, heads, N, head_dim) by the per-token angles."""
    x32 = x.float().unflatten(-1, (-1, 2))  # (B, h, N, head_dim/2, 2)
    real, imag = x32.unbind(-1)  # (B, h, N, head_dim/2) each
    rotated = torch.stack([real * cos - imag * sin, real * sin + imag * cos], dim=-1)
    return rotated.flatten(-2).to(x.dtype)  # (B, h, N, head_dim)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str) -> torch.Tensor:
    """(B, heads, N, head_dim) x3 -> (B, heads, N, head_dim)."""
    if backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v)
    if not q.is_cuda:
        raise ValueError("the xformers attention backend runs on CUDA only; use attention='sdpa' on CPU")
    from xformers.ops import memory_efficient_attention

    # xformers wants (B, N, heads, head_dim)
    out = memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, backend: str):
        super().__init__()
        self.num_heads = num_heads
        self.backend = backend
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_norm = RMSNorm(head_dim)
        self.k_norm = RMSNorm(head_dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.num_heads, D // self.num_heads)  # (B, N, 3, h, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, h, N, hd) each
        q = apply_rope(self.q_norm(q), cos, sin)  # (B, h, N, hd)
        k = apply_rope(self.k_norm(k), cos, sin)  # (B, h, N, hd)
        out = attention(q, k, v, self.backend)  # (B, h, N, hd)
        return self.proj(out.transpose(1, 2).reshape(B, N, D))  # (B, N, D)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))  # (B, N, D)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x (B, N, D), shift/scale (B, D)."""
    return x * (1 + scale[:, None]) + shift[:, None]


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, backend: str):
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.attn = Attention(dim, num_heads, backend)
        self.norm2 = RMSNorm(dim)
        self.mlp = SwiGLU(dim, int(2 * mlp_ratio * dim / 3))
        # c arrives already SiLU'd, so the modulation is a bare Linear (index 0 kept for the key names)
        self.adaLN_modulation = nn.Sequential(nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=-1)  # (B, D) x6
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1), cos, sin)  # (B, N, D)
        x = x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))  # (B, N, D)
        return x


class PatchEmbed(nn.Module):
    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(tokens)


class TimestepEmbedder(nn.Module):
    def __init__(self, dim: int, freq_dim: int, max_period: float):
        super().__init__()
        self.freq_dim = freq_dim
        self.max_period = max_period
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(t, self.freq_dim, self.max_period)  # (B, freq_dim)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))  # (B, D)


class LabelEmbedder(nn.Module):
    """num_classes + 1 rows: the last one is the null class used for classifier-free guidance."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, dim)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(y)


@dataclass(frozen=True)
class BackboneOutput:
    tokens: torch.Tensor  # (B, N, D) last block's output
    s: torch.Tensor  # (B, N, D) silu(t_emb + tokens): the token features heads consume
    c: torch.Tensor  # (B, D) silu(t_emb + y_emb): the conditioning vector
    t_emb: torch.Tensor  # (B, D)
    blocks: dict[int, torch.Tensor] = field(default_factory=dict)  # block index -> (B, N, D)


class DiT(nn.Module):
    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        cfg = config
        self.s_embedder = PatchEmbed(cfg.channels * cfg.patch_size**2, cfg.dim)
        self.t_embedder = TimestepEmbedder(cfg.dim, cfg.freq_dim, cfg.max_period)
        self.y_embedder = LabelEmbedder(cfg.num_classes, cfg.dim)
        self.blocks = nn.ModuleList(
            Block(cfg.dim, cfg.num_heads, cfg.mlp_ratio, cfg.attention) for _ in range(cfg.depth)
        )
        if cfg.attention == "xformers":
            import xformers.ops  # noqa: F401  (fail at build time, not mid-training)
        self.register_buffer("rope_cos", torch.empty(0), persistent=False)
        self.register_buffer("rope_sin", torch.empty(0), persistent=False)
        self.reset_rope()
        self.reset_parameters()

    def reset_rope(self) -> None:
        """(Re)compute the RoPE tables; needed after `to_empty()` on a meta-built model, since
        non-persistent buffers are not restored by `load_state_dict`."""
        cfg = self.config
        device = self.s_embedder.proj.weight.device
        self.rope_cos, self.rope_sin = rope_2d(cfg.dim // cfg.num_heads, cfg.grid, cfg.grid, extent=cfg.rope_extent,
                                               theta=cfg.rope_theta, device=device)

    def reset_parameters(self) -> None:
        # Linear-style init for the patch embedding; N(0, 0.02) for label and timestep tables (DiT)
        nn.init.xavier_uniform_(self.s_embedder.proj.weight)
        nn.init.zeros_(self.s_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)

    def rope(self, grid_h: int, grid_w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if grid_h == grid_w == self.config.grid:
            return self.rope_cos, self.rope_sin
        cfg = self.config
        return rope_2d(cfg.dim // cfg.num_heads, grid_h, grid_w, extent=cfg.rope_extent, theta=cfg.rope_theta,
                       device=device)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor,
        *,
        hooks: Mapping[int, TokenHook] | None = None,
        return_blocks: Sequence[int] = (),
    ) -> BackboneOutput:
        """x (B, C, H, W), t (B,) in [0, 1] with 1 = data, y (B,) labels (num_classes = null).

        `hooks[k]` rewrites the token stream after block k (placements inject heads this way);
        `return_blocks` lists block indices whose outputs are returned (e.g. for REPA).
        """
        P = self.config.patch_size
        B, C, H, W = x.shape
        check_divisible(H, W, P)
        cos, sin = self.rope(H // P, W // P, x.device)  # (N, hd/2) each
        tokens = self.s_embedder(patchify(x, P))  # (B, N, D)
        t_emb = self.t_embedder(t)  # (B, D)
        c = F.silu(t_emb + self.y_embedder(y))  # (B, D)
        hooks = hooks or {}
        blocks: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.blocks):
            tokens = block(tokens, c, cos, sin)  # (B, N, D)
            if i in hooks:
                tokens = hooks[i](tokens, t_emb, c)  # (B, N, D)
            if i in return_blocks:
                blocks[i] = tokens
        s = F.silu(t_emb[:, None] + tokens)  # (B, N, D)
        return BackboneOutput(tokens=tokens, s=s, c=c, t_emb=t_emb, blocks=blocks)
