"""PixNerd (Wang et al., "PixNerd: Pixel Neural Field Diffusion", arXiv 2507.23268) from pixdiff's parts:
DiP's DiT backbone (PixNerd's `FlattenDiTBlock`s are the same block) with a per-patch neural-field
head whose MLP weights are generated from each token (`CoordinateMLP`, PixNerd's frequencies).

Sizes and settings follow the official configs (MCG-NJU/PixNerd, configs_c2i/pix256std1_repa_pixnerd_{xl,large}.yaml,
model `src/models/transformer/pixnerd_c2i.py`, see docs/family.md for the commits read):
- PixNerd-XL/16: 26 DiT blocks (num_cond_blocks) of width 1152, 16 heads, then num_blocks - 26 = 4
  neural-field blocks of width 64 with generated 64x128 / 128x64 weights (nerf_mlpratio 2): 700,589,219
  parameters (README: 700M); PixNerd-L/16: 22 blocks of 1024, 2 field blocks;
- flow matching (t = 1 data, v = x - eps, plain MSE), logit-normal t, label dropout 0.1;
- AdamW lr 1e-4, betas (0.9, 0.999), no weight decay, constant; EMA 0.9999; bf16; batch 32 per GPU,
  global 256 (the released "epoch=319-step=1600000" checkpoint: 320 ImageNet epochs in 1.6M steps);
- REPA with DINOv2-B/14 at block 8 (index 7), weight 0.5, projector D -> D -> D -> 768 (SiLU): pixdiff's
  RepaConfig, off until an encoder is given: --set train.repa.encoder=FILE.pt;
- Euler, 100 steps on linspace(0, 0.99, 100) then 1 (pixdiff's default grid j/N), CFG 3.5 on (0.1, 1.0):
  FID 1.93 (1.6M steps). The XL config of MCG-NJU/PixNerd @ 0969ace ended its grid with a 0.04 step
  (`last_step: 0.04`); the authors removed it in 6909d5d ("sampling wo laststep0.04"; the large config
  in ef0b333), so the sampler's own default, last_step = 1/steps, holds now (read at HEAD 6da060b).
    pixdiff train recipes/pixnerd.py --set data.source=/data/imagenet/train
"""

from pixdiff.config import replace
from pixdiff.diffusion import FlowMatching
from pixdiff.nn import CoordinateMLP, DiTConfig, ModelConfig
from pixdiff.recipe import DataConfig, Recipe, SampleConfig, TrainConfig


def _pixnerd(name: str, *, depth: int, dim: int, heads: int, field_blocks: int) -> Recipe:
    return Recipe(
        name=name,
        model=ModelConfig(
            backbone=DiTConfig(depth=depth, dim=dim, num_heads=heads, patch_size=16, image_size=256, num_classes=1000),
            head=CoordinateMLP(hidden=64, mlp_hidden=128, depth=field_blocks, num_freqs=8, top_freq=8.0),
            placement="post",
        ),
        objective=FlowMatching(t_sampling="logit_normal", label_dropout=0.1),
        train=TrainConfig(
            global_batch=256, max_steps=1_600_000, lr=1e-4, betas=(0.9, 0.999), weight_decay=0.0,
            ema_decays=(0.9999,), precision="bf16",
        ),
        data=DataConfig(source="imagenet/train", flip=True),
        sample=SampleConfig(steps=100, solver="euler", cfg_scale=3.5, cfg_interval=(0.1, 1.0)),
    )


def build() -> Recipe:
    """PixNerd-XL/16 at 256 px."""
    return xl()


def xl() -> Recipe:
    return _pixnerd("pixnerd_xl16", depth=26, dim=1152, heads=16, field_blocks=4)


def large() -> Recipe:
    """PixNerd-L/16 (pix256std1_repa_pixnerd_large.yaml: 24 blocks, 22 of them DiT blocks)."""
    return _pixnerd("pixnerd_l16", depth=22, dim=1024, heads=16, field_blocks=2)


def small() -> Recipe:
    """A B/16-sized PixNerd (12 DiT blocks of 768, 12 heads, the XL head): not an official size."""
    return _pixnerd("pixnerd_b16", depth=12, dim=768, heads=12, field_blocks=4)


def tiny() -> Recipe:
    """Trains in seconds on a CPU: 32 px emoji, 8 px patches, a 4-block DiT, a 2-block field of width 16."""
    r = _pixnerd("pixnerd_tiny", depth=4, dim=128, heads=4, field_blocks=2)
    return replace(
        r,
        **{"model.backbone": DiTConfig(depth=4, dim=128, num_heads=4, patch_size=8, image_size=32, num_classes=9),
           "model.head.hidden": 16, "model.head.mlp_hidden": 32,
           "train": TrainConfig(global_batch=32, max_steps=3200, lr=2e-3, warmup_steps=100, weight_decay=0.0,
                                grad_clip=1.0, ema_decays=(0.99,), precision="fp32", num_workers=0, log_every=10,
                                ckpt_every=400, sample_every=1600),
           "data": DataConfig(source="emoji", flip=False, balance_classes=True),
           "sample": SampleConfig(steps=50, solver="euler", cfg_scale=3.0, cfg_interval=(0.1, 1.0), grid_images=36)},
    )
