from pathlib import Path

import pytest
import torch

from pixdiff.checkpoints.dip import from_reference, pixdiff_checkpoint, to_reference
from pixdiff.checkpoints.interop import InteropError
from pixdiff.checkpoints.loader import model_from_state
from pixdiff.config import replace
from pixdiff.recipe import load_recipe
from pixdiff.nn.backbone import DiTConfig
from pixdiff.nn.model import ModelConfig

TSV = Path(__file__).resolve().parents[2] / "shared" / "reference" / "dip_xl16_reference_state_dict.tsv"
# reduced width: D=64 (16 heads of 4), SwiGLU hidden int(2/3*256)=170, 2 blocks
SMALL = {1152: 64, 3456: 192, 6912: 384, 3072: 170, 72: 4, 1664: 512 + 64}
SMALL_MODEL = ModelConfig(backbone=DiTConfig(depth=2, dim=64, num_heads=16))


def load_reference(ckpt, weights="ema", model=SMALL_MODEL):
    """The reference checkpoint as the converter and the loader read it."""
    converted = pixdiff_checkpoint(ckpt, replace(load_recipe("dip_xl16"), model=model))
    return model_from_state(model, converted["model" if weights == "raw" else "ema"], "reference weights")


def reference_shapes() -> dict[str, tuple[int, ...]]:
    if not TSV.is_file():
        pytest.skip(f"reference layout not found at {TSV}")
    rows = [line.split("\t") for line in TSV.read_text().splitlines() if line.strip()]
    return {k: tuple(int(d) for d in shape.strip("()").split(",") if d.strip()) for k, shape in rows}


def small_reference(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in reference_shapes().items():
        if k.startswith("blocks.") and int(k.split(".")[1]) >= 2:
            continue
        out[k] = torch.randn(tuple(SMALL.get(d, d) for d in shape), generator=g)
    return out


def test_full_size_layout_matches_reference_exactly():
    shapes = reference_shapes()
    assert len(shapes) == 347
    with torch.device("meta"):
        model = ModelConfig().build()
    ours = {k: tuple(v.shape) for k, v in to_reference(model.state_dict()).items()}
    assert ours == shapes


def test_lightning_checkpoint_loads_strictly_and_exports_back():
    raw, ema = small_reference(0), small_reference(1)
    ckpt = {"state_dict": {**{f"denoiser.{k}": v for k, v in raw.items()},
                           **{f"ema_denoiser.{k}": v for k, v in ema.items()}}, "epoch": 3}
    model = load_reference(ckpt, weights="ema")
    exported = to_reference(model.state_dict())
    assert exported.keys() == ema.keys()
    for k in ema:
        assert torch.equal(exported[k], ema[k]), k
    model = load_reference(ckpt, weights="raw")
    assert torch.equal(model.head.out_conv.weight, raw["local_decoder.out_conv.weight"])
    # the model still runs after loading
    assert model(torch.randn(1, 3, 256, 256), torch.rand(1), torch.tensor([3])).shape == (1, 3, 256, 256)


def test_bare_state_dict_and_strictness_errors():
    ref = small_reference(0)
    load_reference(ref)
    with pytest.raises(InteropError, match="missing: .*local_decoder|missing: .*head.out_conv"):
        load_reference({k: v for k, v in ref.items() if "out_conv" not in k})
    with pytest.raises(InteropError, match="unused"):
        load_reference({**ref, "extra.weight": torch.zeros(1)})
    with pytest.raises(InteropError, match="shape mismatch"):
        load_reference(ref, model=ModelConfig(backbone=DiTConfig(depth=2, dim=128, num_heads=16)))
    assert from_reference({"local_decoder.enc1.0.weight": 1, "blocks.0.norm1.weight": 2}) == {
        "head.enc1.0.weight": 1, "backbone.blocks.0.norm1.weight": 2}
