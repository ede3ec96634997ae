"""PixelDiT (recipes/pixeldit.py): sizes against the official code, the pixel-level head's
conformance and details, the official-layout converter, its sampler, and a tiny end-to-end run."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pixdiff.checkpoints.interop import InteropError, lightning_states
from pixdiff.checkpoints.pixeldit import (
    from_official,
    official_checkpoint,
    pixdiff_checkpoint,
    to_official,
)
from pixdiff.diffusion.solvers import ab2, uniform_grid
from pixdiff.nn.backbone import DiTConfig, sincos_2d
from pixdiff.nn.heads.pixel_dit import PixelDiTHead
from pixdiff.nn.model import ModelConfig
from pixdiff.nn.summary import count_params
from pixdiff.config import replace
from pixdiff.recipe import load_recipe
from pixdiff.testing import check_head, check_model

ROOT = Path(__file__).resolve().parents[1]
LISTING = ROOT / "tests" / "data" / "pixeldit_xl_official_state_dict.tsv"
OFFICIAL_XL = 797_383_203  # the official PixDiT at pix256_xl.yaml, counted from its code (docs/family_pixeldit.md)


def listing() -> dict[str, tuple[int, ...]]:
    rows = [line.split("\t") for line in LISTING.read_text().splitlines() if line and not line.startswith("#")]
    return {k: tuple(int(d) for d in shape.split("x")) for k, shape in rows}


def meta_model(spec: str, *overrides: str):
    with torch.device("meta"):
        return load_recipe(spec, list(overrides)).model.build()


# ------------------------------------------------------------------ sizes and layout
def test_xl_is_the_official_size_and_layout():
    model = meta_model("pixeldit")
    assert count_params(model) == OFFICIAL_XL  # model card: 797M
    assert count_params(model) - count_params(model.backbone) == 172_361_859
    ours = {k: tuple(v.shape) for k, v in to_official(model.state_dict()).items()}
    assert ours == listing() and len(ours) == 392
    assert sum(math.prod(s) for s in listing().values()) == OFFICIAL_XL


def test_other_sizes():
    assert count_params(meta_model("pixeldit:post_modulation")) == 759_601_699  # 4 instead of 6 per-pixel maps
    assert count_params(meta_model("pixeldit:small")) == 239_864_387
    assert count_params(meta_model("pixeldit:xl512")) == OFFICIAL_XL  # positions are computed, not stored


def test_forward_shapes_square_and_not():
    torch.manual_seed(0)
    model = load_recipe("pixeldit:tiny").model.build()
    for h, w in ((32, 32), (16, 40)):
        out = model(torch.randn(2, 3, h, w), torch.rand(2), torch.tensor([0, 9]))
        assert out.shape == (2, 3, h, w)
        assert not out.any()  # zero output layer: a fresh PixelDiT predicts zero


# ------------------------------------------------------------------ the pixel-level head
@pytest.mark.parametrize("config", [PixelDiTHead(width=8, depth=2, num_heads=2),
                                    PixelDiTHead(width=4, depth=1, num_heads=1, attn_dim=16, post_modulation=True),
                                    PixelDiTHead(width=8, depth=1, num_heads=2, pixel_positions=False)])
def test_head_conformance(config):
    check_head(config, dim=32, patch_size=4)


def test_head_on_jits_backbone():
    # compaction and per-pixel adaLN need only s and the patch grid: any backbone's tokens do
    jit = load_recipe("jit:tiny").model.backbone
    check_model(ModelConfig(backbone=replace(jit, depth=2, dim=32, num_heads=2, image_size=16, in_context_len=2),
                            head=PixelDiTHead(width=4, depth=1, num_heads=2)))


def test_pixel_positions_are_the_sincos_table_of_pixel_coordinates():
    head = PixelDiTHead(width=8, depth=1, num_heads=2).build(16, 3, 4)
    with torch.no_grad():
        head.embed.weight.zero_()
        head.embed.bias.zero_()
    seen = {}
    head.blocks[0].register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    head(torch.randn(1, 3, 8, 12), torch.randn(1, 16, 2, 3), torch.randn(1, 16))
    # pixel (row 5, column 6) is pixel (1, 2) of patch (1, 1), the 5th patch in raster order
    torch.testing.assert_close(seen["x"][4, 1 * 4 + 2], sincos_2d(8, 8, 12)[5 * 12 + 6], rtol=0, atol=0)


def test_each_pixel_reads_its_own_modulation_columns():
    # block parameters of pixel j are columns j*6w .. (j+1)*6w (shift, scale, gate, shift, scale, gate)
    w, P, D = 4, 2, 8
    block = PixelDiTHead(width=w, depth=1, num_heads=2).build(D, 3, P).blocks[0]
    with torch.no_grad():
        bias = block.adaLN_modulation[0].bias.view(P * P, 6, w)
        bias[1, 5] = 1.0  # the MLP gate of pixel 1 only
    x = torch.randn(2, P * P, w)
    cos, sin = torch.ones(2, 2), torch.zeros(2, 2)
    out = block(x, torch.zeros(2, D), 1, cos, sin)
    moved = (out - x).abs().amax(dim=(0, 2))  # (P^2,)
    assert moved[1] > 0 and not moved[[0, 2, 3]].any()


def test_fresh_blocks_are_identities_and_zero_adaln_backbone():
    head = PixelDiTHead(width=8, depth=2, num_heads=2).build(16, 3, 4)
    x = torch.randn(6, 16, 8)
    cos, sin = torch.ones(6, 4), torch.zeros(6, 4)  # 6 patch tokens, head dim 8
    assert torch.equal(head.blocks[0](x, torch.randn(6, 16), 1, cos, sin), x)
    dit = DiTConfig(depth=2, dim=32, num_heads=2, patch_size=4, image_size=8, num_classes=3, init="zero_adaln").build()
    assert all(not b.adaLN_modulation[0].weight.any() and not b.adaLN_modulation[0].bias.any() for b in dit.blocks)
    torch.manual_seed(1)
    dip = DiTConfig(depth=2, dim=32, num_heads=2, patch_size=4, image_size=8, num_classes=3).build()
    torch.manual_seed(1)
    zero = DiTConfig(depth=2, dim=32, num_heads=2, patch_size=4, image_size=8, num_classes=3, init="zero_adaln").build()
    same = {k for k, v in dip.state_dict().items() if torch.equal(v, zero.state_dict()[k])}
    assert set(dip.state_dict()) - same == {f"blocks.{i}.adaLN_modulation.0.{p}" for i in range(2)
                                            for p in ("weight", "bias")}  # otherwise DiP's init, draw for draw


def test_head_config_validates():
    with pytest.raises(ValueError, match="width"):
        PixelDiTHead(width=6)
    with pytest.raises(ValueError, match="num_heads"):
        PixelDiTHead(attn_dim=20, num_heads=3)
    with pytest.raises(ValueError, match="num_heads"):
        PixelDiTHead(num_heads=5).build(32, 3, 4)  # 32 / 5: resolved against the backbone width


# ------------------------------------------------------------------ the sampler
def test_ab2_in_closed_form():
    # dx/dt = t: the Euler first step misses h^2/2, every later step of 3/2 d_i - 1/2 d_(i-1) is exact
    n = 8
    h = 1 / n
    out = ab2(lambda x, t: t.view(-1, 1).expand_as(x).to(x.dtype), torch.zeros(3, 1, dtype=torch.float64),
              uniform_grid(n, dtype=torch.float64))
    torch.testing.assert_close(out, torch.full((3, 1), 0.5 - h * h / 2, dtype=torch.float64), rtol=0, atol=1e-15)


# ------------------------------------------------------------------ converter
def tiny_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return load_recipe("pixeldit:tiny").model.build().state_dict()


def test_key_map_round_trip_and_lightning_layout():
    r = load_recipe("pixeldit:tiny")
    ema, raw = tiny_state(0), tiny_state(1)
    official = official_checkpoint({"model": raw, "ema": ema}, r)
    assert all(k.startswith(("denoiser.", "ema_denoiser.")) for k in official["state_dict"])
    back = pixdiff_checkpoint(official, r)
    for key, state in (("model", raw), ("ema", ema)):
        assert back[key].keys() == state.keys() and all(torch.equal(back[key][k], state[k]) for k in state)
    assert from_official(to_official(ema)).keys() == ema.keys()
    # a bare state dict is both weights; a Lightning one with only the EMA serves it as both
    bare = lightning_states(to_official(ema))
    assert bare["raw"] is bare["ema"]
    ema_only = {"state_dict": {k: v for k, v in official["state_dict"].items() if k.startswith("ema_")}}
    assert lightning_states(ema_only)["raw"].keys() == lightning_states(ema_only)["ema"].keys()


def test_key_map_rejects_strays_and_mismatches():
    r = load_recipe("pixeldit:tiny")
    theirs = to_official(tiny_state())
    with pytest.raises(InteropError, match=r"unused: \['extra.weight'\]"):
        from_official({**theirs, "extra.weight": torch.zeros(1)})
    narrow = {**theirs, "pixel_embedder.proj.weight": torch.zeros(4, 3)}
    with pytest.raises(InteropError, match="shape mismatch.*head.embed.weight"):
        pixdiff_checkpoint(narrow, r)
    with pytest.raises(InteropError, match="missing"):
        pixdiff_checkpoint({k: v for k, v in theirs.items() if k != "final_layer.norm.weight"}, r)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pixdiff.cli", *args], cwd=ROOT, capture_output=True, text=True)


def test_convert_cli_both_ways_and_one_line_on_a_mismatch(tmp_path):
    r = load_recipe("pixeldit:tiny")
    official = official_checkpoint({"model": tiny_state(1), "ema": tiny_state(0)}, r)
    src, ours, back = tmp_path / "official.ckpt", tmp_path / "pixdiff.pt", tmp_path / "back.ckpt"
    torch.save({**official, "epoch": 3}, src)
    done = run_cli("convert", str(src), str(ours), "--recipe", "pixeldit:tiny", "--layout", "pixeldit")
    assert done.returncode == 0, done.stderr
    done = run_cli("convert", str(ours), str(back), "--layout", "pixeldit", "--to", "reference")
    assert done.returncode == 0, done.stderr
    again = torch.load(back, weights_only=True)["state_dict"]
    assert again.keys() == official["state_dict"].keys()
    assert all(torch.equal(again[k], v) for k, v in official["state_dict"].items())
    done = run_cli("convert", str(src), str(tmp_path / "x.pt"), "--recipe", "pixeldit:small", "--layout", "pixeldit")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "shape mismatch" in done.stderr
    assert not (tmp_path / "x.pt").exists()


# ------------------------------------------------------------------ end to end
def test_tiny_recipe_trains_two_steps_and_samples(tmp_path):
    sets = ["model.backbone.depth=2", "model.backbone.dim=32", "model.backbone.num_heads=2",
            "model.backbone.image_size=16", "model.head.num_heads=2", "train.global_batch=8", "train.max_steps=2",
            "train.sample_every=2", "sample.steps=2", "sample.grid_images=4", f"data.cache_dir={tmp_path / 'cache'}"]
    run = tmp_path / "run"
    done = run_cli("train", "pixeldit:tiny", "--out", str(run), "--no-progress", *[a for o in sets for a in ("--set", o)])
    assert done.returncode == 0, done.stderr
    assert (run / "samples" / "step_00000002.png").is_file()
    done = run_cli("sample", str(run), "--num", "2", "--steps", "2", "--out", str(tmp_path / "s"))
    assert done.returncode == 0, done.stderr
