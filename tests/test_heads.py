"""Local heads: conformance (pixdiff.testing.check_head), sizes against the paper, head details,
and the checker itself (it must reject heads that mix patches or leave parameters unused)."""

from __future__ import annotations

import importlib.util
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

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


def test_linear_out_conforms() -> None:
    from pixdiff.heads.linear import LinearOut

    check_head(LinearOut())


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
    out = head(torch.randn(4, 3, 8, 8), torch.randn(4, 32), torch.randn(4, 32))
    assert torch.equal(out, torch.zeros_like(out))


def test_intra_attention_slices_large_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    head = IntraPatchAttention(depth=1).build(32, 3, 4)
    with torch.no_grad():
        for p in head.parameters():  # leave adaLN-Zero so the attention branch contributes
            p.normal_(std=0.1)
    args = torch.randn(5, 3, 4, 4), torch.randn(5, 32), torch.randn(5, 32)
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
