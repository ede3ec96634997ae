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

from pixdiff.nn.heads import intra_attention
from pixdiff.nn.heads.coord_mlp import CoordinateMLP, dct_features
from pixdiff.nn.heads.intra_attention import IntraPatchAttention
from pixdiff.nn.heads.mlp import StandardMLP
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
    from pixdiff.nn.heads.unet import ConvUNet

    check_head(ConvUNet(), patch_size=16)  # four halvings need P divisible by 16
    check_head(ConvUNet(depth=2, width=8), patch_size=8, channels=1)


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_dit_final_layer_conforms(norm: str) -> None:
    from pixdiff.nn.heads.final_layer import DiTFinalLayer

    check_head(DiTFinalLayer(norm=norm))


def test_check_backbone_and_model_pass_on_small_dip() -> None:
    from pixdiff.nn.backbone import DiTConfig
    from pixdiff.nn.heads.unet import ConvUNet
    from pixdiff.nn.model import ModelConfig

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


class _LeaksConditioning(_ConvFiLM):
    def forward(self, patches: torch.Tensor, s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return super().forward(patches, s, c) + c.mean()  # every image's c reaches every patch


class _ImageConvFiLM(nn.Module):
    """A healthy minimal image head: a 3x3 conv over the whole image plus s_i over its patch."""

    def __init__(self, dim: int, channels: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.film = nn.Conv2d(dim, channels, 1)

    def forward(self, x: torch.Tensor, s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        s_map = self.film(s).repeat_interleave(self.patch_size, 2).repeat_interleave(self.patch_size, 3)
        return self.conv(x) + s_map  # (B, C, H, W)


class _MixesImages(_ImageConvFiLM):
    def forward(self, x: torch.Tensor, s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = super().forward(x, s, c)  # (B, C, H, W)
        return h - h.mean(dim=0, keepdim=True)


@dataclass(frozen=True)
class _Head:
    module: type[nn.Module]
    scope: ClassVar[str] = "patch"
    reads: ClassVar[str] = "s"

    def build(self, dim: int, channels: int, patch_size: int) -> nn.Module:
        return self.module(dim, channels)


@dataclass(frozen=True)
class _ImageHead:
    module: type[nn.Module]
    scope: ClassVar[str] = "image"
    reads: ClassVar[str] = "s"

    def build(self, dim: int, channels: int, patch_size: int) -> nn.Module:
        return self.module(dim, channels, patch_size)


@dataclass(frozen=True)
class _Undeclared:
    module: type[nn.Module]
    reads: ClassVar[str] = "s"

    def build(self, dim: int, channels: int, patch_size: int) -> nn.Module:
        return self.module(dim, channels)


def test_check_head_accepts_the_healthy_bases() -> None:
    check_head(_Head(_ConvFiLM))
    check_head(_ImageHead(_ImageConvFiLM))


@pytest.mark.parametrize(("config", "message"), [
    (_Head(_MixesPatches), "patch independence"),
    (_Head(_LeaksConditioning), r"patch independence.*c of image 0"),
    (_Head(_UnusedParameter), r"no gradient at all .*forgotten"),
    (_Head(_DeadParameter), r"still all zero .*gain"),
    (_ImageHead(_MixesImages), "image independence"),
    (_Undeclared(_ConvFiLM), r"declarations.*scope is None"),
], ids=lambda v: v.module.__name__ if isinstance(v, (_Head, _ImageHead, _Undeclared)) else None)
def test_check_head_rejects_broken_heads(config, message: str) -> None:
    with pytest.raises(AssertionError, match=message) as err:
        check_head(config)
    assert config.module.__name__ in str(err.value)  # the message names the config


# ---- the head interface in the model; DiT's final layer as the DiT-only baseline ---------------

def small_model(head, placement: str = "post"):
    from pixdiff.nn.backbone import DiTConfig
    from pixdiff.nn.model import ModelConfig

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
    from pixdiff.nn.backbone import RMSNorm
    from pixdiff.nn.heads.final_layer import DiTFinalLayer
    from pixdiff.nn.patches import unpatchify

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
    from pixdiff.nn.heads.final_layer import DiTFinalLayer

    layer = DiTFinalLayer().build(32, 3, 8)
    assert torch.equal(layer.project(torch.randn(2, 4, 32), torch.randn(2, 32)), torch.zeros(2, 4, 192))
    assert count(DiTFinalLayer(norm="rmsnorm")) - count(DiTFinalLayer()) == D
    with pytest.raises(ValueError, match="norm=.batchnorm.: not one of"):
        DiTFinalLayer(norm="batchnorm")


@pytest.mark.parametrize("placement", ["post", "hybrid"])
def test_heads_get_c_once_per_image(placement: str) -> None:
    from pixdiff.nn.heads.unet import ConvUNet

    model = small_model(ConvUNet(depth=2, width=4), placement)
    seen = []
    for head in (model.head, *([model.injection.head] if model.injection else [])):
        head.register_forward_hook(lambda m, args, out: seen.append([tuple(a.shape) for a in args]))
    model(torch.randn(3, 3, 16, 16), torch.rand(3), torch.zeros(3, dtype=torch.long))
    assert seen and all(shapes == [(12, 3, 8, 8), (12, 32), (3, 32)] for shapes in seen)


# ---- the conv U-Net: per-patch mode unchanged, image mode, every-stage s_i ----------------------

FIXTURE = ROOT / "tests" / "data" / "conv_unet_patch_main.safetensors"


@pytest.mark.parametrize(("case", "depth", "width"), [("b2", 2, 8), ("b1", 3, 4)])
def test_conv_unet_patch_mode_matches_the_recorded_head_to_float_rounding(case: str, depth: int, width: int) -> None:
    # outputs recorded from main (4dd2c1c) on fixed weights and inputs, before the image mode existed
    from safetensors.torch import load_file

    from pixdiff.nn.heads.unet import ConvUNet

    rec = load_file(FIXTURE)
    head = ConvUNet(depth=depth, width=width).build(16, 3, 8)
    prefix = f"{case}.weights."
    head.load_state_dict({k[len(prefix):]: v for k, v in rec.items() if k.startswith(prefix)}, strict=True)
    with torch.no_grad():
        out = head(rec[f"{case}.patches"], rec[f"{case}.s"], torch.zeros(1, 16))
    # Recorded on another CPU: its kernels (oneDNN's AVX2 vs AVX-512 paths, other blockings) sum each
    # convolution's up to 9*C products in another order, so every layer may differ by a few fp32 ulps
    # (eps 1.2e-7) and a 2*depth+1 layer chain compounds them; observed 6e-8 across an Intel and an AMD
    # CPU. 1e-5 of the output's scale is ~100 ulps, while a changed weight or wiring moves it by >1e-2.
    expected = rec[f"{case}.out"]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5 * expected.abs().max().item())


@pytest.mark.parametrize("s_injection", ["bottleneck", "every_stage"])
@pytest.mark.parametrize("scope", ["patch", "image"])
def test_conv_unet_conforms_in_both_scopes(scope: str, s_injection: str) -> None:
    from pixdiff.nn.heads.unet import ConvUNet

    check_head(ConvUNet(depth=2, width=8, scope=scope, s_injection=s_injection), patch_size=8)
    check_head(ConvUNet(depth=4, width=4, scope=scope, s_injection=s_injection), patch_size=16)


def unet_pair(depth: int, width: int, patch_size: int, dim: int = 16, **kw):
    """The same randomly initialised conv U-Net weights in a patch-scope and an image-scope head."""
    from pixdiff.nn.heads.unet import ConvUNet

    torch.manual_seed(0)
    per_patch = ConvUNet(depth=depth, width=width, scope="patch", **kw).build(dim, 3, patch_size)
    whole = ConvUNet(depth=depth, width=width, scope="image", **kw).build(dim, 3, patch_size)
    whole.load_state_dict(per_patch.state_dict(), strict=True)
    return per_patch, whole


def run_per_patch(head: nn.Module, x: torch.Tensor, s_grid: torch.Tensor, patch_size: int) -> torch.Tensor:
    """A patch-scope head on an image: x (B, C, H, W), s_grid (B, D, gh, gw) -> (B, C, H, W)."""
    from pixdiff.nn.patches import from_patches, to_patches

    s = s_grid.flatten(2).transpose(1, 2).flatten(0, 1)  # (B*N, D), raster order
    return from_patches(head(to_patches(x, patch_size), s, s_grid[:, :, 0, 0]), *x.shape[-2:])


def test_conv_unet_image_scope_crosses_patch_borders_and_patch_scope_does_not() -> None:
    per_patch, whole = unet_pair(depth=2, width=8, patch_size=8)
    g = torch.Generator().manual_seed(0)
    x, s = torch.randn(1, 3, 16, 24, generator=g), torch.randn(1, 16, 2, 3, generator=g)
    x2 = x.clone()
    x2[:, :, :8, :8] += torch.randn(1, 3, 8, 8, generator=g)  # patch (0, 0) only
    with torch.no_grad():
        for head, run in ((per_patch, lambda h, x: run_per_patch(h, x, s, 8)), (whole, lambda h, x: h(x, s, None))):
            moved = (run(head, x2) - run(head, x)).abs()  # (1, 3, 16, 24)
            assert moved[..., :8, :8].max() > 0
            right_neighbour, lower_neighbour, far = moved[..., :8, 8:16], moved[..., 8:, :8], moved[..., 16:]
            if head is per_patch:
                assert right_neighbour.max() == lower_neighbour.max() == far.max() == 0
            else:  # the 3x3 convolutions see across the border; 2 stages reach 7 px past it, not 9
                assert right_neighbour.max() > 0 and lower_neighbour.max() > 0 and far.max() == 0


@pytest.mark.parametrize(("depth", "s_injection"), [(3, "bottleneck"), (2, "every_stage")])
def test_conv_unet_image_scope_on_a_single_patch_is_the_patch_head(depth: int, s_injection: str) -> None:
    # zero padding at the image border is zero padding at the patch border when the image is one patch
    per_patch, whole = unet_pair(depth=depth, width=4, patch_size=8, s_injection=s_injection)
    with torch.no_grad():
        for name, p in whole.named_parameters():
            if name.startswith("film_"):  # FiLM starts at zero: make it matter
                p.normal_(std=0.1)
    per_patch.load_state_dict(whole.state_dict())
    x, s = torch.randn(5, 3, 8, 8), torch.randn(5, 16)
    with torch.no_grad():
        assert torch.equal(whole(x, s[:, :, None, None], None), per_patch(x, s, None))


@pytest.mark.parametrize(("depth", "cell"), [(3, 1), (2, 2)])
def test_conv_unet_image_scope_puts_s_i_in_its_patchs_bottleneck_cell(depth: int, cell: int) -> None:
    _, whole = unet_pair(depth=depth, width=4, patch_size=8)
    seen = []
    whole.bottleneck.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    s = torch.randn(2, 16, 2, 3)  # (B, D, gh, gw)
    whole(torch.randn(2, 3, 16, 24), s, None)
    s_part = seen[0][:, -16:]  # (B, D, gh*cell, gw*cell): the channels concatenated after the features
    assert torch.equal(s_part, s.repeat_interleave(cell, 2).repeat_interleave(cell, 3))


@pytest.mark.parametrize("scope", ["patch", "image"])
def test_every_stage_starts_as_the_papers_head_and_then_uses_s_everywhere(scope: str) -> None:
    from pixdiff.nn.heads.unet import ConvUNet

    torch.manual_seed(0)
    film = ConvUNet(depth=2, width=4, scope=scope, s_injection="every_stage").build(16, 3, 8)
    paper = ConvUNet(depth=2, width=4, scope=scope).build(16, 3, 8)
    shared = {k: v for k, v in film.state_dict().items() if not k.startswith("film_")}
    assert set(shared) == set(paper.state_dict())
    paper.load_state_dict(shared, strict=True)
    x, s = (torch.randn(2, 3, 8, 8), torch.randn(2, 16)) if scope == "patch" else \
        (torch.randn(1, 3, 16, 16), torch.randn(1, 16, 2, 2))
    with torch.no_grad():
        assert torch.equal(film(x, s, None), paper(x, s, None))  # zero FiLM: h * (1 + 0) + 0 == h
        for head in (film, paper):
            head.bottleneck[0].weight[:, -16:] = 0  # cut s out of the bottleneck
        for name, p in film.named_parameters():
            if name.startswith("film_"):
                p.normal_(std=0.1)
        assert torch.equal(paper(x, s, None), paper(x, 2 * s, None))
        assert not torch.equal(film(x, s, None), film(x, 2 * s, None))


def test_conv_unet_checkpoints_load_across_scopes() -> None:
    for kw in ({}, {"s_injection": "every_stage"}):
        per_patch, whole = unet_pair(depth=2, width=4, patch_size=8, **kw)
        assert per_patch.state_dict().keys() == whole.state_dict().keys()
        per_patch.load_state_dict(whole.state_dict(), strict=True)  # and back (unet_pair loaded the other way)
    from pixdiff.nn.heads.unet import ConvUNet

    with torch.device("meta"):
        paper = ConvUNet(scope="image").build(D, 3, 16)
    assert sum(p.numel() for p in paper.parameters()) == 6_968_067  # the paper's head, whatever the scope


@pytest.mark.parametrize("placement", ["post", "hybrid"])
def test_check_model_passes_with_an_image_scope_head(placement: str) -> None:
    from pixdiff.nn.backbone import DiTConfig
    from pixdiff.nn.heads.unet import ConvUNet
    from pixdiff.nn.model import ModelConfig

    backbone = DiTConfig(depth=2, dim=32, num_heads=4, patch_size=8, channels=3, num_classes=10, image_size=16)
    check_model(ModelConfig(backbone=backbone, head=ConvUNet(depth=2, width=4, scope="image",
                                                             s_injection="every_stage"),
                            placement=placement, inject_after=0))
