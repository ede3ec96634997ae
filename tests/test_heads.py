"""Local heads: conformance (pixdiff.testing.check_head), sizes against the paper, head details,
and the checker itself (it must reject heads that mix patches or leave parameters unused)."""

from __future__ import annotations

import importlib.util
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import ClassVar

import pytest
import torch
from torch import nn

from pixdiff.heads import intra_attention
from pixdiff.heads.coord_mlp import CoordinateMLP, dct_features
from pixdiff.heads.intra_attention import IntraPatchAttention
from pixdiff.heads.mlp import StandardMLP
from pixdiff.testing import check_backbone, check_head, check_model

ROOT = Path(__file__).resolve().parents[1]
BACKBONE_PARAMS = 625_021_344  # DiP-XL/16 backbone without any head or output layer (D=1152, P=16)
D = 1152


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # every tensor here is tiny: extra threads only spin against other jobs on a shared CPU
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load_plugin(filename: str) -> ModuleType:
    path = ROOT / "plugins" / filename
    spec = importlib.util.spec_from_file_location(f"pixdiff_test_plugins.{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    # dataclasses resolve string annotations through sys.modules, so register before executing
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def film_plugin() -> ModuleType:
    return load_plugin("film_conv_head.py")


def count(config, patch_size: int = 16) -> int:
    with torch.device("meta"):
        head = config.build(D, 3, patch_size)
    return sum(p.numel() for p in head.parameters())


# ---- conformance -------------------------------------------------------------------------------

@pytest.mark.parametrize("config", [StandardMLP(), IntraPatchAttention(), CoordinateMLP()], ids=repr)
@pytest.mark.parametrize("patch_size", [8, 32])
def test_ablation_heads_conform(config, patch_size: int) -> None:
    check_head(config, patch_size=patch_size)


@pytest.mark.parametrize("patch_size", [8, 32])
def test_plugin_head_conforms(film_plugin: ModuleType, patch_size: int) -> None:
    assert film_plugin.HEADS == {"film_conv": film_plugin.FiLMConvHead}
    check_head(film_plugin.FiLMConvHead(), patch_size=patch_size)


def test_plugin_recipe_swaps_the_head(film_plugin: ModuleType) -> None:
    recipe = film_plugin.RECIPES["dip_xl16_film"]()
    assert recipe.model.head == film_plugin.FiLMConvHead()


def test_conv_unet_conforms() -> None:
    from pixdiff.heads.unet import ConvUNet

    check_head(ConvUNet(), patch_size=16)  # four halvings need P divisible by 16
    check_head(ConvUNet(depth=2, width=8), patch_size=8, channels=1)


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_dit_final_layer_conforms(norm: str) -> None:
    from pixdiff.heads.final_layer import DiTFinalLayer

    check_head(DiTFinalLayer(norm=norm))


def test_check_backbone_and_model_pass_on_small_dip() -> None:
    from pixdiff.backbone import DiTConfig
    from pixdiff.heads.unet import ConvUNet
    from pixdiff.model import ModelConfig

    backbone = DiTConfig(depth=2, dim=64, num_heads=4, patch_size=8, channels=3, num_classes=10, image_size=32)
    check_backbone(backbone)
    check_model(ModelConfig(backbone=backbone, head=ConvUNet(depth=3, width=16)))
    check_model(ModelConfig(backbone=backbone, head=ConvUNet(depth=3, width=16), placement="intermediate",
                            inject_after=0))


# ---- sizes against the paper (Table 2) ----------------------------------------------------------

SIZES = [  # config, head parameters at D=1152, C=3, P=16 and P=32, paper total (P=16)
    (StandardMLP(), 5_082_368, 10_982_912, 630e6),
    (IntraPatchAttention(), 3_102_915, 3_102_915, 630e6),
    (CoordinateMLP(), 75_567_875, 75_567_875, 700e6),
]


@pytest.mark.parametrize(("config", "p16", "p32", "paper"), SIZES, ids=lambda v: type(v).__name__)
def test_head_sizes_match_the_paper(config, p16: int, p32: int, paper: float) -> None:
    assert count(config, 16) == p16
    assert count(config, 32) == p32
    total = BACKBONE_PARAMS + p16
    assert abs(total - paper) / paper <= 0.01, f"{config}: {total:,} vs paper {paper:,.0f}"


# ---- head details ------------------------------------------------------------------------------

@pytest.mark.parametrize(("row", "col"), [(0, 0), (0, 15), (3, 7), (15, 15), (10, 2)])
@pytest.mark.parametrize(("fx", "fy"), [(0, 0), (1, 0), (0, 1), (2, 3), (7, 7)])
def test_dct_features_closed_form(row: int, col: int, fx: int, fy: int) -> None:
    P, F = 16, 8
    feats = dct_features(P, F)  # (P*P, F*F)
    x, y = col / (P - 1), row / (P - 1)  # linspace(0, 1, P)
    expected = math.cos(math.pi * fx * x) * math.cos(math.pi * fy * y) / (1 + fx * fy)
    assert feats.shape == (P * P, F * F)
    assert feats[row * P + col, fy * F + fx].item() == pytest.approx(expected, abs=1e-6)


def test_generated_weights_are_row_normalised() -> None:
    head = CoordinateMLP().build(32, 3, 8)
    s = 50 * torch.randn(5, 32)  # large s: the normalisation must not depend on its scale
    for block in head.blocks:
        w1, w2 = block.generate_weights(s)
        assert w1.shape == (5, 128, 64) and w2.shape == (5, 64, 128)  # (out, in)
        torch.testing.assert_close(w1.norm(dim=-1), torch.ones(5, 128))
        torch.testing.assert_close(w2.norm(dim=-1), torch.ones(5, 64))


def test_coordinate_mlp_starts_at_zero_output() -> None:
    head = CoordinateMLP().build(32, 3, 8)
    out = head(torch.randn(4, 3, 8, 8), torch.randn(4, 32), torch.randn(2, 32))
    assert torch.equal(out, torch.zeros_like(out))


def test_intra_attention_slices_large_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    head = IntraPatchAttention(depth=1).build(32, 3, 4)
    with torch.no_grad():
        for p in head.parameters():  # leave adaLN-Zero so the attention branch contributes
            p.normal_(std=0.1)
    args = torch.randn(5, 3, 4, 4), torch.randn(5, 32), torch.randn(1, 32)
    with torch.no_grad():
        whole = head(*args)
        monkeypatch.setattr(intra_attention, "MAX_ATTENTION_BATCH", 2)
        sliced = head(*args)
    torch.testing.assert_close(sliced, whole)


# ---- the checker rejects broken heads ----------------------------------------------------------

class _ConvFiLM(nn.Module):
    """A healthy minimal head; the subclasses below each add one defect."""

    def __init__(self, dim: int, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.film = nn.Linear(dim, channels)

    def forward(self, patches: torch.Tensor, s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.conv(patches) + self.film(s)[:, :, None, None]  # (BN, C, P, P)


class _MixesPatches(_ConvFiLM):
    def forward(self, patches: torch.Tensor, s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = super().forward(patches, s, c)  # (BN, C, P, P)
        return h - h.mean(dim=0, keepdim=True)  # a batch statistic: every patch sees all others


class _UnusedParameter(_ConvFiLM):
    def __init__(self, dim: int, channels: int):
        super().__init__(dim, channels)
        self.forgotten = nn.Linear(dim, dim)


class _DeadParameter(_ConvFiLM):
    def __init__(self, dim: int, channels: int):
        super().__init__(dim, channels)
        self.gain = nn.Parameter(torch.ones(()))

    def forward(self, patches: torch.Tensor, s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return super().forward(patches, s, c) + 0 * self.gain  # used, but no step can ever move it


@dataclass(frozen=True)
class _Head:
    module: type[nn.Module]
    scope: ClassVar[str] = "patch"
    reads: ClassVar[str] = "s"

    def build(self, dim: int, channels: int, patch_size: int) -> nn.Module:
        return self.module(dim, channels)


def test_check_head_accepts_the_healthy_base() -> None:
    check_head(_Head(_ConvFiLM))


@pytest.mark.parametrize(("module", "message"), [
    (_MixesPatches, "patch independence"),
    (_UnusedParameter, r"no gradient at all .*forgotten"),
    (_DeadParameter, r"still all zero .*gain"),
])
def test_check_head_rejects_broken_heads(module: type[nn.Module], message: str) -> None:
    with pytest.raises(AssertionError, match=message) as err:
        check_head(_Head(module))
    assert module.__name__ in str(err.value)  # the message names the config


# ---- the head interface in the model; DiT's final layer as the DiT-only baseline ---------------

def small_model(head, placement: str = "post"):
    from pixdiff.backbone import DiTConfig
    from pixdiff.model import ModelConfig

    backbone = DiTConfig(depth=2, dim=32, num_heads=4, patch_size=8, channels=3, num_classes=10, image_size=16)
    torch.manual_seed(0)
    return ModelConfig(backbone=backbone, head=head, placement=placement, inject_after=0).build()


def randomise(module: nn.Module) -> None:
    """Overwrite every parameter (zero-initialised layers included) with N(0, 0.1)."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(std=0.1)


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_dit_only_is_dits_final_layer_on_the_last_blocks_tokens(norm: str) -> None:
    from pixdiff.backbone import RMSNorm
    from pixdiff.heads.final_layer import DiTFinalLayer
    from pixdiff.patches import unpatchify

    model = small_model(DiTFinalLayer(norm=norm))
    randomise(model)
    x, t, y = torch.randn(2, 3, 16, 16), torch.rand(2), torch.tensor([1, 10])
    with torch.no_grad():
        out = model.backbone(x, t, y)
        head = model.head
        shift, scale = head.adaLN_modulation[0](out.c).chunk(2, dim=-1)  # (B, D) each
        if norm == "layernorm":
            assert isinstance(head.norm, nn.LayerNorm) and not head.norm.elementwise_affine
            normed = torch.nn.functional.layer_norm(out.tokens, (32,), eps=1e-6)
        else:
            assert isinstance(head.norm, RMSNorm)  # JiT's: with a learnable gain
            normed = head.norm(out.tokens)
        expected = head.linear(normed * (1 + scale[:, None]) + shift[:, None])  # (B, N, C*P*P)
        torch.testing.assert_close(model(x, t, y), unpatchify(expected, 8, 16, 16), rtol=0, atol=1e-6)


def test_dit_final_layer_starts_at_zero_and_rmsnorm_adds_a_gain() -> None:
    from pixdiff.heads.final_layer import DiTFinalLayer

    layer = DiTFinalLayer().build(32, 3, 8)
    assert torch.equal(layer.project(torch.randn(2, 4, 32), torch.randn(2, 32)), torch.zeros(2, 4, 192))
    assert count(DiTFinalLayer(norm="rmsnorm")) - count(DiTFinalLayer()) == D
    with pytest.raises(ValueError, match="norm must be"):
        DiTFinalLayer(norm="batchnorm")


@pytest.mark.parametrize("placement", ["post", "hybrid"])
def test_heads_get_c_once_per_image(placement: str) -> None:
    from pixdiff.heads.unet import ConvUNet

    model = small_model(ConvUNet(depth=2, width=4), placement)
    seen = []
    for head in (model.head, *([model.injection.head] if model.injection else [])):
        head.register_forward_hook(lambda m, args, out: seen.append([tuple(a.shape) for a in args]))
    model(torch.randn(3, 3, 16, 16), torch.rand(3), torch.zeros(3, dtype=torch.long))
    assert seen and all(shapes == [(12, 3, 8, 8), (12, 32), (3, 32)] for shapes in seen)


# ---- the conv U-Net: per-patch mode unchanged, image mode, every-stage s_i ----------------------

FIXTURE = ROOT / "tests" / "data" / "conv_unet_patch_main.safetensors"


@pytest.mark.parametrize(("case", "depth", "width"), [("b2", 2, 8), ("b1", 3, 4)])
def test_conv_unet_patch_mode_is_bit_identical_to_the_recorded_head(case: str, depth: int, width: int) -> None:
    # outputs recorded from main (4dd2c1c) on fixed weights and inputs, before the image mode existed
    from safetensors.torch import load_file

    from pixdiff.heads.unet import ConvUNet

    rec = load_file(FIXTURE)
    head = ConvUNet(depth=depth, width=width).build(16, 3, 8)
    prefix = f"{case}.weights."
    head.load_state_dict({k[len(prefix):]: v for k, v in rec.items() if k.startswith(prefix)}, strict=True)
    with torch.no_grad():
        out = head(rec[f"{case}.patches"], rec[f"{case}.s"], torch.zeros(1, 16))
    assert torch.equal(out, rec[f"{case}.out"])


@pytest.mark.parametrize("s_injection", ["bottleneck", "every_stage"])
@pytest.mark.parametrize("scope", ["patch", "image"])
def test_conv_unet_conforms_in_both_scopes(scope: str, s_injection: str) -> None:
    from pixdiff.heads.unet import ConvUNet

    check_head(ConvUNet(depth=2, width=8, scope=scope, s_injection=s_injection), patch_size=8)
    check_head(ConvUNet(depth=4, width=4, scope=scope, s_injection=s_injection), patch_size=16)
