"""JiT in pixdiff: the official layout both ways, its parameter counts, and its parts in closed form.

The official layout of JiT-B/16 is the listing in tests/data (enumerated from LTH14/JiT's module
definitions); the parameter counts below are that code's arithmetic, written out in `official_params`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pixdiff.checkpoints.interop import InteropError, check_state
from pixdiff.checkpoints.jit import (
    from_official,
    official_checkpoint,
    pixdiff_checkpoint,
    read_official,
    to_official,
)
from pixdiff.nn.backbone import DiTConfig, apply_rope, rope_2d_jit, sincos_2d, with_prefix
from pixdiff.nn.summary import model_summary
from pixdiff.config import replace
from pixdiff.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
LISTING = ROOT / "tests" / "data" / "jit_b16_official_state_dict.tsv"
# (recipe, depth, width, heads, bottleneck, patch): LTH14/JiT's JiT_*_* definitions (G/16: the paper's table)
SIZES = [("jit:b16", 12, 768, 12, 128, 16), ("jit:b32", 12, 768, 12, 128, 32), ("jit:l16", 24, 1024, 16, 128, 16),
         ("jit:l32", 24, 1024, 16, 128, 32), ("jit:h16", 32, 1280, 16, 256, 16), ("jit:h32", 32, 1280, 16, 256, 32),
         ("jit:g16", 40, 1664, 16, 256, 16)]
PAPER = {"jit:b16": 131e6, "jit:l16": 459e6, "jit:h16": 953e6, "jit:g16": 2e9}  # the paper's table, rounded


def official_params(depth: int, D: int, heads: int, b: int, P: int, L: int = 32, classes: int = 1000) -> int:
    """Trainable parameters of the official JiT (main_jit.py counts requires_grad only: the fixed
    sin-cos pos_embed is excluded), module by module."""
    H, hd, C = int(int(D * 4.0) * 2 / 3), D // heads, 3  # SwiGLUFFN: int(hidden * 2 / 3), hidden = 4D
    t_embedder = 256 * D + D + D * D + D
    y_embedder = (classes + 1) * D  # + the null class
    x_embedder = C * P * P * b + b * D + D  # Conv PxP without bias, Conv 1x1 with bias
    block = (2 * D + 2 * hd  # norm1, norm2, q_norm, k_norm
             + 3 * D * D + 3 * D + D * D + D  # qkv (bias), proj
             + D * 2 * H + 2 * H + H * D + D  # w12, w3 (biases)
             + 6 * D * D + 6 * D)  # adaLN
    final = D + D * C * P * P + C * P * P + 2 * D * D + 2 * D  # RMSNorm, linear, adaLN
    return t_embedder + y_embedder + x_embedder + L * D + depth * block + final


def listing() -> dict[str, tuple[int, ...]]:
    rows = [line.split("\t") for line in LISTING.read_text().splitlines() if line and not line.startswith("#")]
    return {k: tuple(int(d) for d in shape.strip("()").split(",") if d.strip()) for k, shape in rows}


# ------------------------------------------------------------------ layout and parameter parity
def test_b16_layout_is_the_official_one():
    r = load_recipe("jit:b16")
    with torch.device("meta"):
        model = r.model.build()
    ours = {k: tuple(v.shape) for k, v in to_official(model.state_dict(), r.model.backbone).items()}
    assert ours == listing()
    assert len(ours) == 183
    trainable = sum(math.prod(s) for k, s in listing().items() if k != "net.pos_embed")
    assert trainable == official_params(12, 768, 12, 128, 16) == 131_123_712


@pytest.mark.parametrize("spec, depth, dim, heads, bottleneck, patch", SIZES)
def test_parameter_counts_match_the_official_definitions(spec, depth, dim, heads, bottleneck, patch):
    s = model_summary(load_recipe(spec).model)
    assert s["params"] == official_params(depth, dim, heads, bottleneck, patch)
    assert s["tokens"] == 256 and s["resolution"] == (256 if patch == 16 else 512)
    if spec in PAPER:  # the paper quotes three significant figures (G: one)
        digits = 0 if spec == "jit:g16" else 2
        assert float(f"{s['params']:.{digits}e}") == PAPER[spec]


def test_info_cli_reports_b16():
    out = subprocess.run([sys.executable, "-m", "pixdiff.cli", "info", "jit:b16", "--json"], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    s = json.loads(out.stdout)
    assert s["params"] == 131_123_712 and s["recipe"] == "jit_b16"
    assert 20 < s["gflops"] < 60  # ~2 x 131M x 288 tokens ~ 50 GFLOP at batch 1 (attention adds little at N=288)


# ------------------------------------------------------------------ conversion
def official_state(cfg: DiTConfig, seed: int) -> dict[str, torch.Tensor]:
    """Random tensors in the official layout of `cfg` (the B/16 listing scaled to its depth)."""
    g = torch.Generator().manual_seed(seed)
    shapes = {k: s for k, s in listing().items()
              if not k.startswith("net.blocks.") or int(k.split(".")[2]) < cfg.depth}
    return {k: torch.randn(s, generator=g) for k, s in shapes.items()}


REDUCED = {"model.backbone.depth": 2, "model.backbone.in_context_start": 1}  # JiT-B/16 cut to two blocks


def test_official_checkpoint_round_trips_through_pixdiff(tmp_path):
    r = replace(load_recipe("jit:b16"), **REDUCED)
    cfg = r.model.backbone
    raw, ema1, ema2 = (official_state(cfg, s) for s in (0, 1, 2))
    file = tmp_path / "checkpoint-last.pth"
    torch.save({"model": raw, "model_ema1": ema1, "model_ema2": ema2, "optimizer": {}, "epoch": 599,
                "args": argparse.Namespace(model="JiT-B/16", ema_decay1=0.9999)}, file)
    ckpt = read_official(file)  # weights_only, with the Namespace allowed
    ours = pixdiff_checkpoint(ckpt, r)  # the recipe keeps JiT's two EMAs: model_ema2 is ema_extra
    assert list(ours["ema_extra"]) == ["0.9996"]
    model = r.model.build()
    for key, mine in (("model_ema1", ours["ema"]), ("model_ema2", ours["ema_extra"]["0.9996"]), ("model", ours["model"])):
        model.load_state_dict(from_official(ckpt[key], cfg), strict=True)
        assert all(torch.equal(mine[k], v) for k, v in model.state_dict().items())
    back = official_checkpoint(ours, r)
    for key, expected in (("model", raw), ("model_ema1", ema1), ("model_ema2", ema2)):
        assert back[key].keys() == expected.keys()
        for k in expected:
            assert torch.equal(back[key][k], expected[k]), (key, k)
    out = model(torch.randn(1, 3, 256, 256), torch.rand(1), torch.tensor([7]))
    assert out.shape == (1, 3, 256, 256) and torch.isfinite(out).all()


def test_conversions_are_the_official_maps():
    """Patch embedding as JiT's convolutions, SwiGLU as its fused w12, output as its unpatchify."""
    r = replace(load_recipe("jit:b16"), **REDUCED)
    cfg, model = r.model.backbone, r.model.build()
    theirs = to_official(model.state_dict(), cfg)
    x = torch.randn(2, 3, 256, 256)
    conv = F.conv2d(F.conv2d(x, theirs["net.x_embedder.proj1.weight"], stride=16),
                    theirs["net.x_embedder.proj2.weight"], theirs["net.x_embedder.proj2.bias"])
    from pixdiff.nn.patches import patchify, unpatchify

    ours = model.backbone.s_embedder(patchify(x, 16))
    torch.testing.assert_close(ours, conv.flatten(2).transpose(1, 2), rtol=1e-4, atol=1e-4)
    h = torch.randn(5, 768)
    x1, x2 = F.linear(h, theirs["net.blocks.0.mlp.w12.weight"], theirs["net.blocks.0.mlp.w12.bias"]).chunk(2, -1)
    fused = F.linear(F.silu(x1) * x2, theirs["net.blocks.0.mlp.w3.weight"], theirs["net.blocks.0.mlp.w3.bias"])
    torch.testing.assert_close(model.backbone.blocks[0].mlp(h), fused, rtol=1e-5, atol=1e-5)
    tokens = torch.randn(2, 256, 768)
    feats = F.linear(tokens, theirs["net.final_layer.linear.weight"], theirs["net.final_layer.linear.bias"])
    official_image = torch.einsum("nhwpqc->nchpwq", feats.reshape(2, 16, 16, 16, 16, 3)).reshape(2, 3, 256, 256)
    ours_image = unpatchify(F.linear(tokens, model.head.linear.weight, model.head.linear.bias), 16, 256, 256)
    torch.testing.assert_close(ours_image, official_image)


def official_forward(sd: dict[str, torch.Tensor], cfg: DiTConfig, x, t, y) -> torch.Tensor:
    """JiT's forward as LTH14/JiT model_jit.py writes it, on its own state dict: Conv embeddings,
    adaLN = Linear(SiLU(t_emb + y_emb)), fused SwiGLU, EVA RoPE (frequencies repeated per pair,
    rows then columns, rotate_half), class tokens with cos 1 / sin 0, (p, q, c) unpatchify."""
    w = lambda name: sd["net." + name]  # noqa: E731
    lin = lambda v, name: F.linear(v, w(name + ".weight"), w(name + ".bias"))  # noqa: E731
    rms = lambda v, name: v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + 1e-6) * w(name)  # noqa: E731
    B, C, g, P, D = x.shape[0], cfg.channels, cfg.grid, cfg.patch_size, cfg.dim
    L, k = cfg.in_context_len, cfg.in_context_start
    heads, hd = cfg.num_heads, cfg.dim // cfg.num_heads
    half = hd // 2
    freqs = 1.0 / cfg.rope_theta ** (torch.arange(0, half, 2)[: half // 2].float() / half)
    f = torch.outer(torch.arange(g) / g * g, freqs).repeat_interleave(2, dim=-1)  # (g, hd/2)
    f = torch.cat([f[:, None].expand(g, g, half), f[None].expand(g, g, half)], dim=-1).reshape(g * g, hd)
    tables = {False: (f.cos(), f.sin()), True: (F.pad(f.cos(), (0, 0, L, 0), value=1.0), F.pad(f.sin(), (0, 0, L, 0)))}

    def rope(v, ctx):
        cos, sin = tables[ctx]
        pairs = v.unflatten(-1, (-1, 2))
        return v * cos + torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2) * sin

    args = t[:, None] * torch.exp(-math.log(10000) * torch.arange(128) / 128)[None]
    t_emb = lin(F.silu(lin(torch.cat([args.cos(), args.sin()], -1), "t_embedder.mlp.0")), "t_embedder.mlp.2")
    y_emb = w("y_embedder.embedding_table.weight")[y]
    c = t_emb + y_emb
    h = F.conv2d(F.conv2d(x, w("x_embedder.proj1.weight"), stride=P), w("x_embedder.proj2.weight"),
                 w("x_embedder.proj2.bias")).flatten(2).transpose(1, 2) + w("pos_embed")
    for i in range(cfg.depth):
        if i == k:
            h = torch.cat([y_emb[:, None].repeat(1, L, 1) + w("in_context_posemb"), h], dim=1)
        b = f"blocks.{i}."
        s1, sc1, g1, s2, sc2, g2 = (m[:, None] for m in lin(F.silu(c), b + "adaLN_modulation.1").chunk(6, -1))
        q, kk, v = lin(rms(h, b + "norm1.weight") * (1 + sc1) + s1, b + "attn.qkv").reshape(
            B, -1, 3, heads, hd).permute(2, 0, 3, 1, 4)
        q, kk = rope(rms(q, b + "attn.q_norm.weight"), i >= k), rope(rms(kk, b + "attn.k_norm.weight"), i >= k)
        att = torch.softmax(q @ kk.transpose(-2, -1) / math.sqrt(hd), dim=-1) @ v
        h = h + g1 * lin(att.transpose(1, 2).reshape(B, -1, D), b + "attn.proj")
        x1, x2 = lin(rms(h, b + "norm2.weight") * (1 + sc2) + s2, b + "mlp.w12").chunk(2, -1)
        h = h + g2 * lin(F.silu(x1) * x2, b + "mlp.w3")
    shift, scale = lin(F.silu(c), "final_layer.adaLN_modulation.1").chunk(2, -1)
    out = lin(rms(h[:, L:], "final_layer.norm_final.weight") * (1 + scale[:, None]) + shift[:, None],
              "final_layer.linear")
    return torch.einsum("nhwpqc->nchpwq", out.reshape(B, g, g, P, P, C)).reshape(B, C, g * P, g * P)


def test_converted_model_computes_the_official_forward():
    r = replace(load_recipe("jit:tiny"), **{"model.backbone.depth": 3, "model.backbone.in_context_start": 1})
    torch.manual_seed(0)
    model = r.model.build().eval()
    with torch.no_grad():  # random everything: zero-initialised gates and output would hide mistakes
        for p in model.parameters():
            p.normal_(0, 0.2)
    x, t, y = torch.randn(2, 3, 32, 32), torch.rand(2), torch.tensor([1, 9])
    theirs = to_official(model.state_dict(), r.model.backbone)
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, y), official_forward(theirs, r.model.backbone, x, t, y),
                                   rtol=1e-4, atol=1e-4)


def test_mismatches_are_one_clear_error(tmp_path):
    r = replace(load_recipe("jit:b16"), **REDUCED)
    cfg, model = r.model.backbone, r.model.build()
    good = official_state(cfg, 0)
    with pytest.raises(InteropError, match=r"missing: \['final_layer.linear.bias'\]"):
        from_official({k: v for k, v in good.items() if k != "net.final_layer.linear.bias"}, cfg)
    with pytest.raises(InteropError, match=r"unused: \['blocks.2.norm1.weight'\]"):
        from_official({**good, "net.blocks.2.norm1.weight": torch.ones(768)}, cfg)
    with pytest.raises(InteropError, match="only 'net.' tensors"):
        from_official({**good, "ema_params": torch.ones(1)}, cfg)
    bad = {**good, "net.pos_embed": torch.zeros(1, 64, 768)}
    with pytest.raises(InteropError, match=r"shape mismatch: \['backbone.pos_embed: \(1, 64, 768\) vs"):
        check_state(model.state_dict(), from_official(bad, cfg), "official JiT checkpoint (model_ema1)")
    with pytest.raises(InteropError, match="not JiT's"):
        from_official(good, load_recipe("dip_xl16").model.backbone)
    junk = tmp_path / "junk.pth"
    torch.save({"model": good}, junk)
    with pytest.raises(InteropError, match="not an official JiT checkpoint"):
        read_official(junk)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pixdiff.cli", *args], cwd=ROOT, capture_output=True, text=True)


def test_convert_cli_both_ways_on_the_tiny_recipe(tmp_path):
    r = load_recipe("jit:tiny")
    model = r.model.build()
    sd = model.state_dict()
    theirs = official_checkpoint({"model": sd, "ema": sd, "ema_extra": {}}, r)
    theirs["model_ema1"] = {k: v + 1 for k, v in theirs["model_ema1"].items()}
    src, ours, back = tmp_path / "official.pth", tmp_path / "pixdiff.pt", tmp_path / "back.pth"
    torch.save({**theirs, "args": argparse.Namespace(model="tiny")}, src)
    done = run_cli("convert", str(src), str(ours), "--recipe", "jit:tiny", "--layout", "jit")
    assert done.returncode == 0, done.stderr
    done = run_cli("convert", str(ours), str(back), "--recipe", "jit:tiny", "--layout", "jit", "--to", "reference")
    assert done.returncode == 0, done.stderr
    again = torch.load(back, weights_only=True)
    for key in ("model", "model_ema1"):
        assert again[key].keys() == theirs[key].keys()
        assert all(torch.equal(again[key][k], theirs[key][k]) for k in theirs[key])
    broken = {**theirs, "model_ema1": {k: v for k, v in theirs["model_ema1"].items() if "pos_embed" not in k}}
    torch.save(broken, src)
    done = run_cli("convert", str(src), str(tmp_path / "x.pt"), "--recipe", "jit:tiny", "--layout", "jit")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "missing: ['pos_embed']" in done.stderr
    assert not (tmp_path / "x.pt").exists()



def test_tiny_recipe_trains_from_the_cli_and_its_ema_samples(tmp_path):
    # the sin-cos table is a buffer, not trained: the EMA state must still carry it, or the grid drawn
    # during training (and `pixdiff sample` on the run) cannot load the EMA model
    sets = ["model.backbone.depth=2", "model.backbone.dim=32", "model.backbone.num_heads=2",
            "model.backbone.image_size=16", "train.global_batch=8", "train.max_steps=2", "train.sample_every=2",
            "sample.steps=2", "sample.grid_images=9", f"data.cache_dir={tmp_path / 'cache'}"]
    run = tmp_path / "run"
    done = run_cli("train", "jit:tiny", "--out", str(run), "--no-progress", *[a for o in sets for a in ("--set", o)])
    assert done.returncode == 0, done.stderr
    assert (run / "samples" / "step_00000002.png").is_file()
    assert "backbone.pos_embed" in torch.load(run / "checkpoints" / "step_00000002.pt", weights_only=True)["ema"]
    done = run_cli("sample", str(run), "--num", "2", "--steps", "2", "--out", str(tmp_path / "s"))
    assert done.returncode == 0, done.stderr

# ------------------------------------------------------------------ parts in closed form
def test_sincos_table_matches_its_formula():
    dim, gh, gw = 16, 3, 5
    table = sincos_2d(dim, gh, gw)
    assert table.shape == (15, 16) and table.dtype == torch.float32
    for n in range(15):
        y, x = divmod(n, gw)
        w = [10000 ** (-k / 4) for k in range(4)]
        expected = ([math.sin(x * v) for v in w] + [math.cos(x * v) for v in w]
                    + [math.sin(y * v) for v in w] + [math.cos(y * v) for v in w])
        torch.testing.assert_close(table[n], torch.tensor(expected), rtol=0, atol=1e-7)


def test_jit_rope_rotates_rows_then_columns_and_leaves_the_prefix_alone():
    # 2 frequencies per axis, 1 and 100^(-1/2); a 2-row grid of a model trained on 3 x 3 steps rows by 3/2
    cos, sin = rope_2d_jit(8, 2, 3, ref_grid=3, theta=100.0)
    f = [1.0, 0.1]
    for n in range(6):
        row, x = divmod(n, 3)
        y = row * 1.5
        angles = torch.tensor([y * f[0], y * f[1], x * f[0], x * f[1]])
        torch.testing.assert_close(cos[n], angles.cos())
        torch.testing.assert_close(sin[n], angles.sin())
    cos6, sin6 = rope_2d_jit(8, 1, 6, ref_grid=3, theta=100.0)
    torch.testing.assert_close(torch.atan2(sin6, cos6)[:, 2], torch.arange(6) / 2)
    pc, ps = with_prefix(cos, sin, 4)
    q = torch.randn(1, 1, 10, 8)
    rotated = apply_rope(q, pc, ps)
    assert torch.equal(rotated[:, :, :4], q[:, :, :4])
    torch.testing.assert_close(rotated[:, :, 4:], apply_rope(q[:, :, 4:], cos, sin))


def test_in_context_tokens_enter_at_block_k_and_leave_before_the_final_layer():
    r = load_recipe("jit:tiny")
    torch.manual_seed(0)
    dit = r.model.build().backbone.eval()
    with torch.no_grad():  # adaLN-Zero blocks start as identities: give them something to do
        for p in dit.parameters():
            p.normal_(0, 0.2)
    cfg = dit.config  # 4 blocks, 4 in-context tokens from block 1, 64 image tokens
    seen: list[torch.Tensor] = []
    handles = [b.register_forward_pre_hook(lambda m, args: seen.append(args[0])) for b in dit.blocks]
    x, t, y = torch.randn(2, 3, 32, 32), torch.rand(2), torch.tensor([3, 9])
    hooked: list[int] = []
    out = dit(x, t, y, hooks={2: lambda tok, t_emb, c: (hooked.append(tok.shape[1]), tok)[1]}, return_blocks=(3,))
    for h in handles:
        h.remove()
    assert [s.shape[1] for s in seen] == [64, 68, 68, 68]
    y_emb = dit.y_embedder(y)
    torch.testing.assert_close(seen[1][:, :4], y_emb[:, None] + dit.in_context_posemb)
    assert out.tokens.shape == (2, 64, 128) and out.blocks[3].shape == (2, 64, 128) and hooked == [64]
    # the final image tokens are the last 64 of the stream after the last block
    last = dit.blocks[-1](seen[-1], out.c, *with_prefix(dit.rope_cos, dit.rope_sin, 4))  # (B, 4 + 64, D)
    torch.testing.assert_close(out.tokens, last[:, 4:])
    # and the class tokens matter: changing only their offsets changes the output
    with torch.no_grad():
        dit.in_context_posemb.add_(1.0)
    assert not torch.allclose(dit(x, t, y).tokens, out.tokens)
    assert cfg.in_context_start == 1 and cfg.in_context_len == 4


def test_dropout_only_in_the_middle_blocks_and_only_in_training():
    cfg = DiTConfig(depth=8, dim=32, num_heads=2, patch_size=4, image_size=16, num_classes=3, proj_dropout=0.5,
                    attn_dropout=0.5)
    dit = cfg.build()
    assert [b.attn.proj_dropout for b in dit.blocks] == [0, 0, 0.5, 0.5, 0.5, 0.5, 0, 0]
    assert [b.mlp.dropout for b in dit.blocks] == [0, 0, 0.5, 0.5, 0.5, 0.5, 0, 0]
    x, t, y = torch.randn(2, 3, 16, 16), torch.rand(2), torch.tensor([0, 1])
    dit.eval()
    assert torch.equal(dit(x, t, y).tokens, dit(x, t, y).tokens)
    dit.train()
    assert not torch.equal(dit(x, t, y).tokens, dit(x, t, y).tokens)


def test_jit_options_validate():
    for bad, message in ((dict(in_context_len=4, in_context_start=3), "must name a block"),
                         (dict(proj_dropout=1.0), "proj_dropout"), (dict(patch_bottleneck=-1), "patch_bottleneck")):
        with pytest.raises(ValueError, match=message):
            DiTConfig(depth=3, dim=64, num_heads=4, patch_size=4, image_size=16, **bad)


def test_backbone_conformance_with_every_jit_option():
    from pixdiff.testing import check_backbone, check_model

    check_backbone(dataclasses.replace(load_recipe("jit:tiny").model.backbone, depth=3, in_context_start=1))
    check_model(replace(load_recipe("jit:tiny"), **{"model.backbone.depth": 3,
                                                    "model.backbone.in_context_start": 1}).model)


def test_jit_init_is_adaln_zero_with_xavier_linears():
    torch.manual_seed(0)
    dit = load_recipe("jit:tiny").model.build().backbone
    for block in dit.blocks:
        assert not block.adaLN_modulation[0].weight.any() and not block.adaLN_modulation[0].bias.any()
        w = block.attn.qkv.weight  # xavier-uniform: |w| <= sqrt(6 / (fan_in + fan_out))
        assert w.abs().max() <= math.sqrt(6 / sum(w.shape)) and not block.attn.qkv.bias.any()
    assert not dit.t_embedder.mlp[0].bias.any() and dit.t_embedder.mlp[0].weight.std() < 0.03
    x, t, y = torch.randn(2, 3, 32, 32), torch.rand(2), torch.tensor([0, 1])
    # adaLN-Zero: every block starts as the identity, so the blocks leave the embedded tokens alone
    out = dit(x, t, y)
    from pixdiff.nn.patches import patchify

    torch.testing.assert_close(out.tokens, dit.s_embedder(patchify(x, 4)) + dit.pos_embed)


def test_bf16_parameters_with_the_fp32_position_table():
    """Sampling and benchmarks cast parameters (not buffers) to bf16: the table must follow the tokens."""
    model = load_recipe("jit:tiny").model.build().eval()
    for p in model.parameters():
        p.data = p.data.bfloat16()
    assert model.backbone.pos_embed.dtype == torch.float32
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32).bfloat16(), torch.rand(2), torch.tensor([0, 1]))
    assert out.dtype == torch.bfloat16 and out.shape == (2, 3, 32, 32)
