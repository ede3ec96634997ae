"""The DiP backbone: a DDT-style Diffusion Transformer on large pixel patches.

Faithful to the authors' layout (parameter names match their state dict, see `pixdiff.checkpoints.dip`):
RMSNorm computed in float32, qk-norm, 2D RoPE on normalised positions, SwiGLU, adaLN on
c = silu(t_emb + y_emb), sinusoidal timestep embedding with max_period 10, a null class row.

The same backbone builds JiT (Li & He, arXiv 2511.13720; `pixdiff.checkpoints.jit` maps the official
layout) through options, each off by default: a bottleneck patch embedding, a fixed 2D sin-cos
position table, JiT's RoPE variant, in-context class tokens from block k, biases in qkv and the
MLP, and dropout in the middle blocks. JiT's adaLN is `Linear(SiLU(t_emb + y_emb))`, i.e. DiP's
bare Linear on the already-SiLU'd c: the two conventions are the same map.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from pixdiff.config.validate import check_fields, positive, require
from pixdiff.nn.patches import check_divisible, patchify

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
    rope_extent: float = 16.0  # "dip" RoPE positions are linspace(0, rope_extent, grid) on both axes
    attention: Literal["sdpa", "xformers"] = "sdpa"
    rope: Literal["dip", "jit"] = "dip"  # see rope_2d and rope_2d_jit
    patch_bottleneck: int = 0  # 0: Linear(C*P*P -> dim); b > 0: Linear(C*P*P -> b, no bias), Linear(b -> dim)
    pos_embed: Literal["none", "sincos"] = "none"  # "sincos": a fixed 2D table added to the patch tokens
    in_context_len: int = 0  # class tokens (y_emb + a learned offset each) prepended before block in_context_start
    in_context_start: int = 0
    qkv_bias: bool = False
    mlp_bias: bool = False
    attn_dropout: float = 0.0  # on the attention weights of the middle blocks (see dropout_blocks)
    proj_dropout: float = 0.0  # after the attention projection and on the MLP hidden units, same blocks
    init: Literal["dip", "jit", "zero_adaln"] = "dip"  # "jit": xavier-uniform Linear weights, zero biases,
    # adaLN-Zero blocks; "zero_adaln": DiP's init with every block's adaLN zeroed (PixelDiT: blocks start as identity)
    interval_embed: bool = False  # MeanFlow's second time: an embedder of the interval r - t added to t_emb
    # (`r_embedder`, its output layer zero-initialised); off, the parameters and state dict are DiP's

    def __post_init__(self) -> None:
        check_fields(self)
        require(self, "num_classes", self.num_classes >= 0, "must be >= 0 (0: unconditional)")
        positive(self, "depth", "dim", "num_heads", "patch_size", "channels", "image_size",
                 "mlp_ratio", "freq_dim", "max_period", "rope_theta", "rope_extent")
        require(self, "dim", self.dim % self.num_heads == 0, f"must be divisible by num_heads={self.num_heads}")
        require(self, "dim", (self.dim // self.num_heads) % 4 == 0,
                f"head dim {self.dim // self.num_heads} must be a multiple of 4 for 2D RoPE")
        require(self, "freq_dim", self.freq_dim % 2 == 0, "must be even (cos and sin halves)")
        require(self, "patch_size", self.image_size % self.patch_size == 0,
                f"image size {self.image_size} is not divisible by the patch size {self.patch_size}")
        require(self, "patch_bottleneck", self.patch_bottleneck >= 0, "must be >= 0 (0 turns it off)")
        require(self, "in_context_len", self.in_context_len >= 0, "must be >= 0 (0 turns it off)")
        require(self, "in_context_start", not self.in_context_len or 0 <= self.in_context_start < self.depth,
                f"must name a block (0..{self.depth - 1})")
        require(self, "dim", self.pos_embed != "sincos" or self.dim % 4 == 0,
                "must be divisible by 4 for the sin-cos position table")
        for name in ("attn_dropout", "proj_dropout"):
            require(self, name, 0 <= getattr(self, name) < 1, "must be in [0, 1)")

    @property
    def dropout_blocks(self) -> range:
        """Blocks that apply dropout: the middle half, depth//4 .. 3*(depth//4) - 1 (JiT's rule)."""
        return range(self.depth // 4, self.depth // 4 * 3)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        return self.grid**2

    def build(self) -> DiT:
        return DiT(self)


def wide(x: torch.Tensor) -> torch.Tensor:
    """x in float32, or float64 if it is (the finite-difference tests of MeanFlow's JVP run the model in
    float64); bf16/fp16/fp32 inputs all compute in float32 as before."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class RMSNorm(nn.Module):
    """RMSNorm computed in float32 whatever the input dtype (bf16 statistics are too coarse)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = wide(x)
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x32 * wide(self.weight)).to(x.dtype)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float) -> torch.Tensor:
    """(B,) times in [0, 1] -> (B, dim) sinusoidal features, cos half first then sin."""
    half = dim // 2
    t = wide(t)
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=t.dtype, device=t.device) / half)
    args = t[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, dim)


def _rope_freqs(head_dim: int, theta: float, device: torch.device | None) -> torch.Tensor:
    """(head_dim/4,) frequencies 1/theta^(4k/head_dim), one set per image axis."""
    return 1.0 / theta ** (torch.arange(0, head_dim, 4, device=device)[: head_dim // 4].float() / head_dim)


def rope_2d(head_dim: int, grid_h: int, grid_w: int, *, extent: float, theta: float,
            device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (N, head_dim/2) for 2D RoPE; token n = row * grid_w + col.

    Positions are normalised to linspace(0, extent, grid) per axis whatever the grid size, so a
    model trained at one resolution sees the same position range at another. Rotation pair j uses
    the x position for even j and the y position for odd j (x and y interleaved pairwise), with
    head_dim/4 frequencies 1/theta^(4k/head_dim) per axis.
    """
    freqs = _rope_freqs(head_dim, theta, device)
    ys = torch.linspace(0, extent, grid_h, device=device)
    xs = torch.linspace(0, extent, grid_w, device=device)
    y, x = torch.meshgrid(ys, xs, indexing="ij")  # (gh, gw) each
    angle_x = x.reshape(-1, 1) * freqs  # (N, head_dim/4)
    angle_y = y.reshape(-1, 1) * freqs  # (N, head_dim/4)
    angles = torch.stack([angle_x, angle_y], dim=-1).flatten(1)  # (N, head_dim/2)
    return angles.cos(), angles.sin()


def rope_2d_jit(head_dim: int, grid_h: int, grid_w: int, *, ref_grid: int, theta: float,
                device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """JiT's 2D RoPE (EVA-style): cos and sin tables (N, head_dim/2) in `rope_2d`'s format.

    Positions are patch indices 0..grid-1, rescaled by ref_grid/grid when the grid is not the
    training grid `ref_grid`. The first head_dim/4 rotation pairs turn by the row y, the last
    head_dim/4 by the column x (axes in two halves, not interleaved), frequencies as `rope_2d`.
    """
    freqs = _rope_freqs(head_dim, theta, device)
    ys = torch.arange(grid_h, device=device) / grid_h * ref_grid
    xs = torch.arange(grid_w, device=device) / grid_w * ref_grid
    y, x = torch.meshgrid(ys, xs, indexing="ij")  # (gh, gw) each
    angles = torch.cat([y.reshape(-1, 1) * freqs, x.reshape(-1, 1) * freqs], dim=-1)  # (N, head_dim/2)
    return angles.cos(), angles.sin()


def with_prefix(cos: torch.Tensor, sin: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prepend n tokens that RoPE leaves unrotated (angle 0), e.g. JiT's in-context class tokens."""
    return F.pad(cos, (0, 0, n, 0), value=1.0), F.pad(sin, (0, 0, n, 0), value=0.0)  # (n + N, head_dim/2)


def sincos_2d(dim: int, grid_h: int, grid_w: int, device: torch.device | None = None) -> torch.Tensor:
    """Fixed 2D position table (N, dim), token n = row * grid_w + col, in float64 then float32 (MAE, JiT):

        [sin(x w), cos(x w), sin(y w), cos(y w)],   w_k = 10000^(-k / (dim/4)), k < dim/4,

    with x the column and y the row index.
    """
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64, device=device) / (dim / 4))
    y, x = torch.meshgrid(torch.arange(grid_h, dtype=torch.float64, device=device),
                          torch.arange(grid_w, dtype=torch.float64, device=device), indexing="ij")
    ax, ay = x.reshape(-1, 1) * omega, y.reshape(-1, 1) * omega  # (N, dim/4) each
    return torch.cat([ax.sin(), ax.cos(), ay.sin(), ay.cos()], dim=-1).float()  # (N, dim)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs of x (B, heads, N, head_dim) by the per-token angles."""
    x32 = wide(x).unflatten(-1, (-1, 2))  # (B, h, N, head_dim/2, 2)
    real, imag = x32.unbind(-1)  # (B, h, N, head_dim/2) each
    rotated = torch.stack([real * cos - imag * sin, real * sin + imag * cos], dim=-1)
    return rotated.flatten(-2).to(x.dtype)  # (B, h, N, head_dim)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str, dropout: float = 0.0) -> torch.Tensor:
    """(B, heads, N, head_dim) x3 -> (B, heads, N, head_dim); `dropout` on the attention weights."""
    if backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
    if not q.is_cuda:
        raise ValueError("the xformers attention backend runs on CUDA only; use attention='sdpa' on CPU")
    from xformers.ops import memory_efficient_attention

    # xformers wants (B, N, heads, head_dim)
    out = memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), p=dropout)
    return out.transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, backend: str, *, qkv_bias: bool = False,
                 attn_dropout: float = 0.0, proj_dropout: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.backend = backend
        self.attn_dropout, self.proj_dropout = attn_dropout, proj_dropout
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm = RMSNorm(head_dim)
        self.k_norm = RMSNorm(head_dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.num_heads, D // self.num_heads)  # (B, N, 3, h, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, h, N, hd) each
        q = apply_rope(self.q_norm(q), cos, sin)  # (B, h, N, hd)
        k = apply_rope(self.k_norm(k), cos, sin)  # (B, h, N, hd)
        out = attention(q, k, v, self.backend, self.attn_dropout if self.training else 0.0)  # (B, h, N, hd)
        out = self.proj(out.transpose(1, 2).reshape(B, N, D))  # (B, N, D)
        return F.dropout(out, self.proj_dropout, self.training)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int, *, bias: bool = False, dropout: float = 0.0):
        super().__init__()
        self.dropout = dropout
        self.w1 = nn.Linear(dim, hidden, bias=bias)
        self.w3 = nn.Linear(dim, hidden, bias=bias)
        self.w2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.silu(self.w1(x)) * self.w3(x)  # (B, N, hidden)
        return self.w2(F.dropout(hidden, self.dropout, self.training))  # (B, N, D)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x (B, N, D), shift/scale (B, D)."""
    return x * (1 + scale[:, None]) + shift[:, None]


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, backend: str, *, qkv_bias: bool = False,
                 mlp_bias: bool = False, attn_dropout: float = 0.0, proj_dropout: float = 0.0):
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.attn = Attention(dim, num_heads, backend, qkv_bias=qkv_bias, attn_dropout=attn_dropout,
                              proj_dropout=proj_dropout)
        self.norm2 = RMSNorm(dim)
        self.mlp = SwiGLU(dim, int(2 * mlp_ratio * dim / 3), bias=mlp_bias, dropout=proj_dropout)
        # c arrives already SiLU'd, so the modulation is a bare Linear (index 0 kept for the key names)
        self.adaLN_modulation = nn.Sequential(nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=-1)  # (B, D) x6
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1), cos, sin)  # (B, N, D)
        x = x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))  # (B, N, D)
        return x


class PatchEmbed(nn.Module):
    """Linear(C*P*P -> D) on channel-major patches, or through a bottleneck b: Linear(C*P*P -> b,
    no bias) then Linear(b -> D), which is JiT's Conv(PxP, stride P) + Conv(1x1) written on tokens."""

    def __init__(self, in_dim: int, dim: int, bottleneck: int = 0):
        super().__init__()
        self.bottleneck = bottleneck
        if bottleneck:
            self.proj1 = nn.Linear(in_dim, bottleneck, bias=False)
            self.proj2 = nn.Linear(bottleneck, dim)
        else:
            self.proj = nn.Linear(in_dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.bottleneck:
            return self.proj2(self.proj1(tokens))  # (B, N, D)
        return self.proj(tokens)  # (B, N, D)


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
    """num_classes + 1 rows: the last one is the null class used for classifier-free guidance (and
    the only one of an unconditional model, num_classes = 0)."""

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


class BlockInputs(NamedTuple):
    tokens: torch.Tensor  # (B, N, D) patch tokens with any fixed position table
    t_emb: torch.Tensor  # (B, D), with MeanFlow's interval embedding where the backbone has one
    y_emb: torch.Tensor  # (B, D)
    c: torch.Tensor  # (B, D) silu(t_emb + y_emb)
    cos: torch.Tensor  # (N, hd/2) RoPE tables of the image grid
    sin: torch.Tensor


class FirstBlock(NamedTuple):
    """Block 0 run ahead of the rest (`DiT.first_block`): what `DiT.forward(first=)` goes on from."""
    inputs: BlockInputs
    before: torch.Tensor  # (B, n_ctx + N, D) block 0's input stream
    after: torch.Tensor  # (B, n_ctx + N, D) its output
    cos: torch.Tensor  # the stream's RoPE tables (n_ctx + N, hd/2)
    sin: torch.Tensor


class DiT(nn.Module):
    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        cfg = config
        self.s_embedder = PatchEmbed(cfg.channels * cfg.patch_size**2, cfg.dim, cfg.patch_bottleneck)
        self.t_embedder = TimestepEmbedder(cfg.dim, cfg.freq_dim, cfg.max_period)
        self.y_embedder = LabelEmbedder(cfg.num_classes, cfg.dim)
        if cfg.interval_embed:
            self.r_embedder = TimestepEmbedder(cfg.dim, cfg.freq_dim, cfg.max_period)
        self.blocks = nn.ModuleList(
            Block(cfg.dim, cfg.num_heads, cfg.mlp_ratio, cfg.attention, qkv_bias=cfg.qkv_bias, mlp_bias=cfg.mlp_bias,
                  attn_dropout=cfg.attn_dropout if i in cfg.dropout_blocks else 0.0,
                  proj_dropout=cfg.proj_dropout if i in cfg.dropout_blocks else 0.0)
            for i in range(cfg.depth)
        )
        if cfg.pos_embed == "sincos":
            # a fixed table, kept in the state dict (as JiT does) so its checkpoints map one to one
            self.register_buffer("pos_embed", sincos_2d(cfg.dim, cfg.grid, cfg.grid)[None])  # (1, N, D)
        if cfg.in_context_len:
            self.in_context_posemb = nn.Parameter(torch.empty(1, cfg.in_context_len, cfg.dim))  # (1, L, D)
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
        self.rope_cos, self.rope_sin = self.rope(cfg.grid, cfg.grid, self.y_embedder.embedding_table.weight.device,
                                                 cached=False)

    def reset_parameters(self) -> None:
        if self.config.init == "jit":  # JiT's initialize_weights; its final layer is zero as DiT's
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.xavier_uniform_(module.weight)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)
        if self.config.init in ("jit", "zero_adaln"):
            for block in self.blocks:
                nn.init.zeros_(block.adaLN_modulation[0].weight)
                nn.init.zeros_(block.adaLN_modulation[0].bias)
        # Linear-style init for the patch embedding; N(0, 0.02) for label and timestep tables (DiT)
        for layer in self.s_embedder.children():
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        if self.config.interval_embed:
            # zero output: a fresh or fine-tuned (--init-from a flow-matching run) model starts as
            # the model without it, and the first layer's features still give the output a gradient
            nn.init.normal_(self.r_embedder.mlp[0].weight, std=0.02)
            nn.init.zeros_(self.r_embedder.mlp[2].weight)
            nn.init.zeros_(self.r_embedder.mlp[2].bias)
        if self.config.in_context_len:
            nn.init.normal_(self.in_context_posemb, std=0.02)

    def rope(self, grid_h: int, grid_w: int, device: torch.device, *,
             cached: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin tables (N, head_dim/2) of the configured RoPE variant for a grid_h x grid_w grid."""
        cfg = self.config
        if cached and grid_h == grid_w == cfg.grid:
            return self.rope_cos, self.rope_sin
        head_dim = cfg.dim // cfg.num_heads
        if cfg.rope == "jit":
            return rope_2d_jit(head_dim, grid_h, grid_w, ref_grid=cfg.grid, theta=cfg.rope_theta, device=device)
        return rope_2d(head_dim, grid_h, grid_w, extent=cfg.rope_extent, theta=cfg.rope_theta, device=device)

    def positions(self, grid_h: int, grid_w: int, device: torch.device) -> torch.Tensor:
        """The fixed position table (1, N, D) for a grid_h x grid_w grid."""
        if grid_h == grid_w == self.config.grid:
            return self.pos_embed
        return sincos_2d(self.config.dim, grid_h, grid_w, device=device)[None]

    def embed(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, r: torch.Tensor | None) -> BlockInputs:
        """What every block reads: the patch tokens, the embeddings and the RoPE tables (see `forward`)."""
        cfg = self.config
        P = cfg.patch_size
        B, C, H, W = x.shape
        check_divisible(H, W, P)
        cos, sin = self.rope(H // P, W // P, x.device)  # (N, hd/2) each
        tokens = self.s_embedder(patchify(x, P))  # (B, N, D)
        if cfg.pos_embed == "sincos":
            # the fixed table stays fp32 where parameters are cast to bf16 (bench, sampling)
            tokens = tokens + self.positions(H // P, W // P, x.device).to(tokens.dtype)  # (B, N, D)
        t_emb = self.t_embedder(t)  # (B, D)
        if cfg.interval_embed:
            t_emb = t_emb + self.r_embedder(torch.zeros_like(t) if r is None else r - t)  # (B, D)
        elif r is not None:
            raise ValueError("this backbone has no interval embedding (model.backbone.interval_embed=false): "
                             "it cannot take r")
        y_emb = self.y_embedder(y)  # (B, D)
        return BlockInputs(tokens, t_emb, y_emb, F.silu(t_emb + y_emb), cos, sin)

    def _with_context(self, i: int, tokens: torch.Tensor, inp: BlockInputs, cos: torch.Tensor, sin: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Before block i: the stream with the in-context class tokens prepended where they enter."""
        cfg = self.config
        if not (cfg.in_context_len and i == cfg.in_context_start):
            return tokens, cos, sin
        tokens = torch.cat([inp.y_emb[:, None] + self.in_context_posemb, tokens], dim=1)  # (B, L + N, D)
        return (tokens, *with_prefix(cos, sin, cfg.in_context_len))  # RoPE tables (L + N, hd/2) each

    def first_block(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, *, r: torch.Tensor | None = None
                    ) -> FirstBlock:
        """The embeddings and block 0 alone: FirstBlockCache's signal is block 0's residual
        (after - before), and `forward(first=)` goes on from block 1 without running either again."""
        inp = self.embed(x, t, y, r)
        tokens, cos, sin = self._with_context(0, inp.tokens, inp, inp.cos, inp.sin)
        return FirstBlock(inp, tokens, self.blocks[0](tokens, inp.c, cos, sin), cos, sin)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor,
        *,
        r: torch.Tensor | None = None,
        hooks: Mapping[int, TokenHook] | None = None,
        return_blocks: Sequence[int] = (),
        first: FirstBlock | None = None,
    ) -> BackboneOutput:
        """x (B, C, H, W), t (B,) in [0, 1] with 1 = data, y (B,) labels (num_classes = null); r (B,)
        the end of MeanFlow's interval [t, r] (None: r = t, the instantaneous velocity), which only a
        backbone with `interval_embed` takes; `first` the embeddings and block 0 from `first_block`
        on the same inputs (None: compute them here).

        `hooks[k]` rewrites the token stream after block k (placements inject heads this way);
        `return_blocks` lists block indices whose outputs are returned (e.g. for REPA). Both see
        the image tokens only: in-context class tokens (prepended before block in_context_start)
        stay out of them and are dropped after the last block.
        """
        cfg = self.config
        inp = self.embed(x, t, y, r) if first is None else first.inputs
        tokens, cos, sin, c = inp.tokens, inp.cos, inp.sin, inp.c
        hooks = hooks or {}
        blocks: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.blocks):
            if i == 0 and first is not None:
                tokens, cos, sin = first.after, first.cos, first.sin
            else:
                tokens, cos, sin = self._with_context(i, tokens, inp, cos, sin)
                tokens = block(tokens, c, cos, sin)  # (B, n_ctx + N, D)
            n_ctx = tokens.shape[1] - inp.tokens.shape[1]  # in-context tokens at the front of the stream
            if i in hooks:
                image = hooks[i](tokens[:, n_ctx:], inp.t_emb, c)  # (B, N, D)
                tokens = torch.cat([tokens[:, :n_ctx], image], dim=1) if n_ctx else image
            if i in return_blocks:
                blocks[i] = tokens[:, n_ctx:]
        tokens = tokens[:, n_ctx:]  # (B, N, D)
        s = F.silu(inp.t_emb[:, None] + tokens)  # (B, N, D)
        return BackboneOutput(tokens=tokens, s=s, c=c, t_emb=inp.t_emb, blocks=blocks)
