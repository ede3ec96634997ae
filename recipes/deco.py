"""DeCo (Ma et al., "DeCo: Frequency-Decoupled Pixel Diffusion for End-to-End Image Generation",
arXiv 2511.19365) from pixdiff's parts: DiP's DiT backbone for the low frequencies, an attention-free
pixel decoder conditioned by AdaLN from each token (`AdaLNPixelDecoder`) for the high ones, and the
frequency-aware flow-matching loss (`FrequencyAwareFlowMatching`: 8x8 DCT of YCbCr velocities
weighted by JPEG's quantisation tables at quality 85).

Sizes and settings follow the official code (Zehong-Ma/DeCo: configs_c2i/DeCo_{XL,large}.yaml, model
src/models/transformer/dit_c2i_DeCo.py, loss src/diffusion/flow_matching/training_repa_DeCo.py; see
docs/family.md for the commit read):
- DeCo-XL/16: 28 DiT blocks (num_cond_blocks) of width 1152, 16 heads, then num_blocks - 28 = 3
  decoder blocks of width 32 (hidden_size_x): 682,282,851 parameters (paper: 682M); DeCo-L/16: 22
  blocks of 1024, 3 decoder blocks;
- flow matching with the frequency loss (weight 1), logit-normal t, label dropout 0.2 (null_condition_p);
- AdamW lr 1e-4, betas (0.9, 0.999), no weight decay, constant; EMA 0.9999; bf16; batch 32 per GPU,
  global 256; 4M steps (max_steps; 800 ImageNet epochs, the paper's FID 1.62 run);
- REPA with DINOv2-B/14 at block 8 (index 7), weight 0.5: off until --set train.repa.encoder=FILE.pt;
- Euler, 100 steps on linspace(0, 0.99, 100) then 1 (pixdiff's grid), CFG 3.2 on (0.1, 1.0].
    pixdiff train recipes/deco.py --set data.source=/data/imagenet/train
"""

from pixdiff.config import replace
from pixdiff.diffusion import FrequencyAwareFlowMatching
from pixdiff.nn import AdaLNPixelDecoder, DiTConfig, ModelConfig
from pixdiff.recipe import DataConfig, Recipe, SampleConfig, TrainConfig


def _deco(name: str, *, depth: int, dim: int, heads: int) -> Recipe:
    return Recipe(
        name=name,
        model=ModelConfig(
            backbone=DiTConfig(depth=depth, dim=dim, num_heads=heads, patch_size=16, image_size=256, num_classes=1000),
            head=AdaLNPixelDecoder(hidden=32, depth=3, num_freqs=8, top_freq=8.0),
            placement="post",
        ),
        objective=FrequencyAwareFlowMatching(t_sampling="logit_normal", label_dropout=0.2, freq_weight=1.0,
                                             jpeg_quality=85, freq_gamma=1.0),
        train=TrainConfig(
            global_batch=256, max_steps=4_000_000, lr=1e-4, betas=(0.9, 0.999), weight_decay=0.0,
            ema_decays=(0.9999,), precision="bf16",
        ),
        data=DataConfig(source="imagenet/train", flip=True),
        sample=SampleConfig(steps=100, solver="euler", cfg_scale=3.2, cfg_interval=(0.1, 1.0)),
    )


def build() -> Recipe:
    """DeCo-XL/16 at 256 px."""
    return xl()


def xl() -> Recipe:
    return _deco("deco_xl16", depth=28, dim=1152, heads=16)


def large() -> Recipe:
    """DeCo-L/16 (DeCo_large.yaml: 25 blocks, 22 of them DiT blocks)."""
    return _deco("deco_l16", depth=22, dim=1024, heads=16)


def small() -> Recipe:
    """A B/16-sized DeCo (12 DiT blocks of 768, 12 heads, the XL decoder): not an official size."""
    return _deco("deco_b16", depth=12, dim=768, heads=12)


def tiny() -> Recipe:
    """Trains in seconds on a CPU: 32 px emoji, 8 px patches, a 4-block DiT, a 2-block decoder of width 16."""
    r = _deco("deco_tiny", depth=4, dim=128, heads=4)
    return replace(
        r,
        **{"model.backbone": DiTConfig(depth=4, dim=128, num_heads=4, patch_size=8, image_size=32, num_classes=9),
           "model.head.hidden": 16, "model.head.depth": 2,
           "train": TrainConfig(global_batch=32, max_steps=3200, lr=2e-3, warmup_steps=100, weight_decay=0.0,
                                grad_clip=1.0, ema_decays=(0.99,), precision="fp32", num_workers=0, log_every=10,
                                ckpt_every=400, sample_every=1600),
           "data": DataConfig(source="emoji", flip=False, balance_classes=True),
           "sample": SampleConfig(steps=50, solver="euler", cfg_scale=3.0, cfg_interval=(0.1, 1.0), grid_images=36)},
    )
