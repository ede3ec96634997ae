"""PixNerd and DeCo in pixdiff: published sizes, the official layouts both ways, their parts in closed form,
and a 2-step train + sample of each tiny recipe.

The official layouts of PixNerd-XL/16 and DeCo-XL/16 are the listings in tests/data (enumerated from the
authors' module definitions, see their headers); docs/family.md has the output equality measured against
re-creations of the official modules (kept outside the repository).
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pixdiff.checkpoints import deco, pixnerd
from pixdiff.checkpoints.interop import InteropError
from pixdiff.diffusion.objectives import (
    JPEG_CHROMINANCE,
    JPEG_LUMINANCE,
    FrequencyAwareFlowMatching,
    block_dct,
    dct_matrix,
    frequency_mse,
    jpeg_frequency_weights,
    jpeg_table,
    rgb_to_ycbcr,
)
from pixdiff.nn.heads.coord_mlp import CoordinateMLP, dct_features
from pixdiff.nn.heads.pixel_decoder import AdaLNPixelDecoder
from pixdiff.nn.model import ModelConfig
from pixdiff.nn.summary import model_summary
from pixdiff.recipe import load_recipe
from pixdiff.testing import check_head, check_model

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {"pixnerd": pixnerd, "deco": deco}


def listing(name: str) -> dict[str, tuple[int, ...]]:
    text = (ROOT / "tests" / "data" / f"{name}_xl16_official_state_dict.tsv").read_text()
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    return {k: tuple(int(d) for d in shape.strip("()").split(",") if d.strip()) for k, shape in rows}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pixdiff.cli", *args], cwd=ROOT, capture_output=True, text=True)


# ------------------------------------------------------------------ sizes
def dit_params(depth: int, D: int, P: int, classes: int = 1000, C: int = 3) -> int:
    """The official FlattenDiTBlock stack with its embedders (no bias in qkv and SwiGLU, 1 null class)."""
    H, hd = int(2 * 4 * D / 3), D // 16
    block = 2 * D + 2 * hd + 3 * D * D + D * D + D + 3 * D * H + 6 * D * D + 6 * D
    return C * P * P * D + D + 256 * D + D + D * D + D + (classes + 1) * D + depth * block


def pixnerd_head(D: int, hx: int = 64, ratio: int = 2, blocks: int = 4, C: int = 3) -> int:
    """NerfEmbedder, NerfBlocks (a generator Linear(D -> 2 hx^2 ratio) and an RMSNorm), NerfFinalLayer."""
    return (C + 64) * hx + hx + blocks * (D * 2 * hx * hx * ratio + 2 * hx * hx * ratio + hx) + hx + hx * C + C


def deco_head(D: int, hx: int = 32, blocks: int = 3, P: int = 16, C: int = 3) -> int:
    """NerfEmbedder and SimpleMLPAdaLN (cond_embed, input_proj, ResBlocks, FinalLayer)."""
    res = 2 * hx + 2 * (hx * hx + hx) + hx * 3 * hx + 3 * hx
    return (C + 64) * hx + hx + D * P * P * hx + P * P * hx + hx * hx + hx + blocks * res + hx * C + C


# recipe -> (official code's count, published count)
SIZES = {
    "pixnerd": (dit_params(26, 1152, 16) + pixnerd_head(1152), 700e6),
    "pixnerd:large": (dit_params(22, 1024, 16) + pixnerd_head(1024, blocks=2), None),
    "deco": (dit_params(28, 1152, 16) + deco_head(1152), 682e6),
    "deco:large": (dit_params(22, 1024, 16) + deco_head(1024), None),
}


@pytest.mark.parametrize("spec", sorted(SIZES))
def test_published_sizes_equal_the_official_code(spec):
    official, paper = SIZES[spec]
    params = model_summary(load_recipe(spec).model)["params"]  # built on the meta device
    assert params == official
    assert paper is None or abs(params - paper) / paper < 0.01


def test_official_counts_written_out():
    # the listings' headers (counted from the official modules) agree with the arithmetic above
    assert SIZES["pixnerd"][0] == 700_589_219 and SIZES["deco"][0] == 682_282_851
    assert sum(math.prod(s) for s in listing("pixnerd").values()) == 700_589_219
    assert sum(math.prod(s) for s in listing("deco").values()) == 682_282_851


@pytest.mark.parametrize("spec", ["pixnerd:small", "pixnerd:tiny", "deco:small", "deco:tiny"])
def test_other_sizes_build(spec):
    s = model_summary(load_recipe(spec).model)
    assert s["params"] > 0 and s["params_head"] > 0


# ------------------------------------------------------------------ heads
@pytest.mark.parametrize("config", [
    CoordinateMLP(hidden=8, mlp_hidden=16, depth=2, top_freq=8.0),
    AdaLNPixelDecoder(hidden=8, depth=2),
    AdaLNPixelDecoder(hidden=8, depth=1, num_freqs=4, top_freq=None),
])
def test_heads_are_conformant(config):
    check_head(config)


def test_new_heads_run_on_jits_backbone():
    bb = dataclasses.replace(load_recipe("jit:tiny").model.backbone, dim=32, num_heads=2, image_size=16)
    for head in (AdaLNPixelDecoder(hidden=8, depth=1), CoordinateMLP(hidden=8, mlp_hidden=16, depth=1, top_freq=8.0)):
        check_model(ModelConfig(backbone=bb, head=head))


def test_pixnerd_coordinate_features_in_closed_form():
    P, F_ = 3, 4
    feats = dct_features(P, F_, top_freq=4.0)  # frequencies 0, 4/3, 8/3, 4
    freqs = [0.0, 4 / 3, 8 / 3, 4.0]
    pos = [0.0, 0.5, 1.0]
    for r in range(P):
        for q in range(P):
            for fy in range(F_):
                for fx in range(F_):
                    expected = (math.cos(math.pi * freqs[fx] * pos[q]) * math.cos(math.pi * freqs[fy] * pos[r])
                                / (1 + freqs[fx] * freqs[fy]))
                    assert feats[r * P + q, fy * F_ + fx].item() == pytest.approx(expected, abs=1e-6)
    # the default stays the integer DCT frequencies
    torch.testing.assert_close(dct_features(P, F_), dct_features(P, F_, top_freq=3.0), rtol=0, atol=1e-6)


def test_generated_weights_follow_pixnerds_convention_after_the_row_map():
    # PixNerd: fc1 = normalize(g[:hm].view(h, m), dim=-2), x @ fc1; fc2 = normalize(g[hm:].view(m, h), dim=-2)
    h, m, D = 4, 6, 5
    head = CoordinateMLP(hidden=h, mlp_hidden=m, depth=1, top_freq=8.0).build(D, 3, 4)
    block = head.blocks[0]
    theirs = torch.nn.Linear(D, 2 * h * m)
    rows = pixnerd.generator_rows(h, m)
    with torch.no_grad():
        block.generator.weight.copy_(theirs.weight[rows])
        block.generator.bias.copy_(theirs.bias[rows])
    s = torch.randn(7, D)
    g1, g2 = theirs(s).chunk(2, dim=-1)
    fc1 = F.normalize(g1.view(-1, h, m), dim=-2)
    fc2 = F.normalize(g2.view(-1, m, h), dim=-2)
    w1, w2 = block.generate_weights(s)  # (BN, m, h), (BN, h, m), nn.Linear layout
    torch.testing.assert_close(w1.transpose(1, 2), fc1)
    torch.testing.assert_close(w2.transpose(1, 2), fc2)


# ------------------------------------------------------------------ frequency-aware loss
def test_dct_matrix_is_orthonormal_dct_ii():
    d = dct_matrix(8).double()
    torch.testing.assert_close(d @ d.T, torch.eye(8, dtype=torch.float64), rtol=0, atol=1e-6)
    assert d[0].tolist() == pytest.approx([math.sqrt(1 / 8)] * 8)
    assert d[3, 5].item() == pytest.approx(0.5 * math.cos(math.pi * 11 * 3 / 16))
    x = torch.randn(2, 3, 16, 24)
    coeffs = block_dct(x)
    assert coeffs.shape == (2, 3, 2, 3, 8, 8)
    # orthonormal: energy is preserved block by block (Parseval)
    torch.testing.assert_close(coeffs.square().sum(), x.square().sum(), rtol=1e-5, atol=0)
    const = block_dct(torch.full((1, 1, 8, 8), 0.5))
    assert const[0, 0, 0, 0, 0, 0].item() == pytest.approx(4.0)  # DC = 8 * value
    assert const.flatten()[1:].abs().max().item() < 1e-6
    assert block_dct(torch.randn(1, 1, 12, 8)).shape == (1, 1, 2, 1, 8, 8)  # reflect-padded to 16 rows


def test_jpeg_tables_and_their_quality_scaling():
    assert JPEG_LUMINANCE[0] == (16, 11, 10, 16, 24, 40, 51, 61) and JPEG_LUMINANCE[7][7] == 99
    assert JPEG_CHROMINANCE[0] == (17, 18, 24, 47, 99, 99, 99, 99) and JPEG_CHROMINANCE[4] == (99,) * 8
    assert torch.equal(jpeg_table(JPEG_LUMINANCE, 50), torch.tensor(JPEG_LUMINANCE, dtype=torch.float32))
    assert torch.equal(jpeg_table(JPEG_LUMINANCE, 100), torch.ones(8, 8))
    # quality 85: scale 30, floor((16 * 30 + 50) / 100) = 5, floor((11 * 30 + 50) / 100) = 3, ...
    assert jpeg_table(JPEG_LUMINANCE, 85)[0].tolist() == [5, 3, 3, 5, 7, 12, 15, 18]
    # quality 10: scale 500, clamped at 255
    assert jpeg_table(JPEG_CHROMINANCE, 10)[7, 7].item() == 255


def test_frequency_weights_are_inverse_quantisation_steps_with_mean_one():
    w = jpeg_frequency_weights(85, 1.0)
    assert w.shape == (3, 8, 8)
    torch.testing.assert_close(w.mean(dim=(1, 2)), torch.ones(3))
    for channel, table in enumerate((JPEG_LUMINANCE, JPEG_CHROMINANCE, JPEG_CHROMINANCE)):
        q = jpeg_table(table, 85)
        product = w[channel] * q  # gamma 1: w proportional to 1 / Q
        torch.testing.assert_close(product, product.flatten()[0].expand(8, 8))
        torch.testing.assert_close(w[channel], (1 / q) / (1 / q).mean())
    w2 = jpeg_frequency_weights(85, 2.0)
    q = jpeg_table(JPEG_LUMINANCE, 85)
    torch.testing.assert_close(w2[0], (q.mean() / q) ** 2 / ((q.mean() / q) ** 2).mean())


def test_frequency_aware_loss_in_closed_form():
    # an error of delta on every RGB value is Y = delta, Cb = Cr = 0: one DC coefficient 8 delta per block,
    # so freq = w_Y[0, 0] * 64 delta^2 / (3 * 64) and the loss is delta^2 (1 + weight * w_Y[0, 0] / 3)
    delta, weight = 0.3, 2.0
    ycc = rgb_to_ycbcr(torch.full((1, 3, 1, 1), delta)).flatten()
    torch.testing.assert_close(ycc, torch.tensor([delta, 0.0, 0.0]), rtol=0, atol=1e-7)
    obj = FrequencyAwareFlowMatching(label_dropout=0.0, freq_weight=weight)
    x, eps = torch.rand(2, 3, 16, 16) * 2 - 1, torch.randn(2, 3, 16, 16)
    t, y = torch.tensor([0.3, 0.8]), torch.tensor([0, 1])

    def model(x_t, t_, y_):
        return x - eps + delta

    loss, logs = obj.loss(model, x, y, num_classes=2, t=t, noise=eps)
    w00 = jpeg_frequency_weights(85, 1.0)[0, 0, 0].item()
    assert logs["fm_loss"].item() == pytest.approx(delta**2, rel=1e-5)
    assert logs["freq_loss"].item() == pytest.approx(w00 * delta**2 / 3, rel=1e-5)
    assert loss.item() == pytest.approx(delta**2 * (1 + weight * w00 / 3), rel=1e-5)
    assert frequency_mse(x, x, jpeg_frequency_weights()).item() == 0.0


# ------------------------------------------------------------------ key maps
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_key_map_gives_the_official_xl_layout(name):
    r = load_recipe(name)
    with torch.device("meta"):
        ours = r.model.build().state_dict()
    official = pixnerd.to_official(ours, r.model, FAMILIES[name].rules)
    assert {k: tuple(v.shape) for k, v in official.items()} == listing(name)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_key_map_round_trips_bit_exact(name):
    r = load_recipe(f"{name}:tiny")
    torch.manual_seed(0)
    state = {k: torch.randn_like(v) for k, v in r.model.build().state_dict().items()}
    rules = FAMILIES[name].rules
    back = pixnerd.from_official(pixnerd.to_official(state, r.model, rules), r.model, rules)
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)


@pytest.mark.parametrize(("name", "other"), [("pixnerd", "deco:tiny"), ("deco", "pixnerd:tiny"),
                                             ("pixnerd", "emoji_tiny"), ("deco", "jit:tiny")])
def test_key_map_refuses_other_models(name, other):
    with pytest.raises(InteropError, match="pick a recipes/"):
        FAMILIES[name].rules(load_recipe(other).model)


def official_pair(name: str) -> tuple[dict, dict, dict]:
    """Random raw and EMA weights of the tiny recipe, and the official Lightning checkpoint holding them."""
    r = load_recipe(f"{name}:tiny")
    torch.manual_seed(0)
    sd = {k: torch.randn_like(v) for k, v in r.model.build().state_dict().items()}
    ema = {k: v + 1 for k, v in sd.items()}
    theirs = FAMILIES[name].official_checkpoint({"model": sd, "ema": ema}, r)
    theirs["state_dict"]["diffusion_trainer.proj.0.0.weight"] = torch.zeros(2, 2)  # REPA projector: not the model's
    return sd, ema, theirs


def test_deco_checkpoints_both_ways_and_a_mismatch():
    sd, ema, theirs = official_pair("deco")
    converted = deco.pixdiff_checkpoint(theirs["state_dict"], load_recipe("deco:tiny"))
    assert all(torch.equal(converted["ema"][k], ema[k]) and torch.equal(converted["model"][k], sd[k]) for k in sd)
    again = deco.official_checkpoint(converted, load_recipe("deco:tiny"))["state_dict"]
    assert all(torch.equal(again[k], v) for k, v in theirs["state_dict"].items() if not k.startswith("diffusion"))
    with pytest.raises(InteropError, match="official DeCo checkpoint .* does not match the recipe's model"):
        deco.pixdiff_checkpoint(theirs["state_dict"], load_recipe("deco:small"))


def test_convert_cli_both_ways_and_one_line_on_a_mismatch(tmp_path):
    sd, ema, theirs = official_pair("pixnerd")
    src, ours, back = tmp_path / "official.ckpt", tmp_path / "pixdiff.pt", tmp_path / "back.ckpt"
    torch.save(theirs, src)
    done = run_cli("convert", str(src), str(ours), "--recipe", "pixnerd:tiny", "--layout", "pixnerd")
    assert done.returncode == 0, done.stderr
    converted = torch.load(ours, weights_only=True)
    assert all(torch.equal(converted["ema"][k], ema[k]) and torch.equal(converted["model"][k], sd[k]) for k in sd)
    done = run_cli("convert", str(ours), str(back), "--layout", "pixnerd", "--to", "reference")
    assert done.returncode == 0, done.stderr
    again = torch.load(back, weights_only=True)["state_dict"]
    assert all(torch.equal(again[k], v) for k, v in theirs["state_dict"].items() if not k.startswith("diffusion"))
    done = run_cli("convert", str(src), str(tmp_path / "x.pt"), "--recipe", "pixnerd:small", "--layout", "pixnerd")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "does not match the recipe's model" in done.stderr
    assert not (tmp_path / "x.pt").exists()


def test_convert_help_names_the_layouts():
    out = run_cli("convert", "--help").stdout
    assert all(layout in out for layout in ("'jit'", "'pixnerd'", "'deco'"))


# ------------------------------------------------------------------ end to end
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_tiny_recipe_trains_two_steps_and_samples(tmp_path, name):
    sets = ["model.backbone.depth=2", "model.backbone.dim=32", "model.backbone.num_heads=2",
            "model.backbone.image_size=16", "train.global_batch=8", "train.max_steps=2", "train.sample_every=2",
            "sample.steps=2", "sample.grid_images=4", f"data.cache_dir={tmp_path / 'cache'}"]
    run = tmp_path / "run"
    done = run_cli("train", f"{name}:tiny", "--out", str(run), "--no-progress", "--device", "cpu",
                   *[a for o in sets for a in ("--set", o)])
    assert done.returncode == 0, done.stderr
    assert (run / "samples" / "step_00000002.png").is_file()
    done = run_cli("sample", str(run), "--num", "2", "--steps", "2", "--out", str(tmp_path / "s"))
    assert done.returncode == 0, done.stderr
