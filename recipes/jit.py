"""JiT (Li & He, "Back to Basics: Let Denoising Generative Models Denoise", arXiv 2511.13720) from
pixdiff's parts: a plain ViT on 16 or 32 px patches that predicts the clean image, with no head.

Architectures follow the official code (LTH14/JiT, model_jit.py: JiT_B_16 ... JiT_H_32); JiT-G/16
is not in that file and follows the paper's table (depth 40, width 1664, 16 heads, bottleneck 256).
Training and sampling follow the official scripts (main_jit.py defaults and the README commands):

- AdamW, betas (0.9, 0.95), no weight decay, constant lr 2e-4 after a 5-epoch linear warmup
  (blr 5e-5 x global batch 1024 / 256: 8 GPUs x 128), 600 epochs, no gradient clipping;
- x-prediction, velocity loss with 1 - t clamped at 0.05, t = sigmoid(N(-0.8, 0.8)), noise scale
  1.0 at 256 px and 2.0 at 512 px, label dropout 0.1;
- two EMAs (train.ema_decays): 0.9999, used for sampling, and 0.9996 (`pixdiff sample --ema 0.9996`);
- Heun, 50 steps on a uniform grid (the last step Euler), the velocity from the clamped 1 - t,
  CFG on (0.1, 1.0) at the README's evaluation scales (B 3.0, L 2.4 / 2.5, H 2.2 / 2.3);
- dropout 0.2 in the middle blocks for H (README) and G.

The official adaLN is Sequential(SiLU, Linear) on t_emb + y_emb: pixdiff's blocks take c already
SiLU'd, so `adaLN_modulation.1` there is `adaLN_modulation.0` here (see pixdiff.checkpoints.jit).
    pixdiff train recipes/jit.py:l16 --set data.source=/data/imagenet/train
"""

from pixdiff.config import replace
from pixdiff.diffusion import MeanFlow, XPrediction
from pixdiff.nn import DiTConfig, DiTFinalLayer, ModelConfig
from pixdiff.recipe import DataConfig, Recipe, SampleConfig, TrainConfig

STEPS_PER_EPOCH = 1251  # ImageNet-1k train (1,281,167 images) at global batch 1024, last partial batch dropped


def _jit(name: str, *, depth: int, dim: int, heads: int, bottleneck: int, start: int, patch: int,
         cfg: float, dropout: float = 0.0) -> Recipe:
    size = 256 if patch == 16 else 512  # the paper's pairs: /16 at 256 px, /32 at 512 px (256 tokens)
    return Recipe(
        name=name,
        model=ModelConfig(
            backbone=DiTConfig(
                depth=depth, dim=dim, num_heads=heads, patch_size=patch, image_size=size, num_classes=1000,
                max_period=10000.0, rope="jit", patch_bottleneck=bottleneck, pos_embed="sincos",
                in_context_len=32, in_context_start=start, qkv_bias=True, mlp_bias=True, proj_dropout=dropout,
                init="jit",
            ),
            head=DiTFinalLayer(norm="rmsnorm"),
        ),
        objective=XPrediction(t_sampling="logit_normal", loc=-0.8, scale=0.8, t_eps=0.05,
                              noise_scale=1.0 if size == 256 else 2.0, label_dropout=0.1, clamp_sampling=True),
        train=TrainConfig(
            global_batch=1024, max_steps=600 * STEPS_PER_EPOCH, lr=2e-4, betas=(0.9, 0.95), weight_decay=0.0,
            warmup_steps=5 * STEPS_PER_EPOCH, ema_decays=(0.9999, 0.9996), precision="bf16",
        ),
        data=DataConfig(source="imagenet/train", flip=True),
        sample=SampleConfig(steps=50, solver="heun", cfg_scale=cfg, cfg_interval=(0.1, 1.0)),
    )


def build() -> Recipe:
    """JiT-B/16 at 256 px."""
    return b16()


def b16() -> Recipe:
    return _jit("jit_b16", depth=12, dim=768, heads=12, bottleneck=128, start=4, patch=16, cfg=3.0)


def b16_meanflow() -> Recipe:
    """JiT-B/16 as pixel MeanFlow (pMF) pairs them: the network predicts the clean image and
    u = (x0 - x_t)/(1 - t), with JiT's t distribution, the interval embedding added, 2 meanflow steps
    without sampling-time guidance (docs/meanflow.md; GPU cost in benchmarks/run_gpu.sh)."""
    return replace(b16(), name="jit_b16_meanflow",
                   objective=MeanFlow(t_sampling="logit_normal", loc=-0.8, scale=0.8, label_dropout=0.1, prediction="x0"),
                   **{"model.backbone.interval_embed": True, "sample.solver": "meanflow", "sample.steps": 2,
                      "sample.cfg_scale": 1.0})


def b32() -> Recipe:
    return _jit("jit_b32", depth=12, dim=768, heads=12, bottleneck=128, start=4, patch=32, cfg=3.0)


def l16() -> Recipe:
    return _jit("jit_l16", depth=24, dim=1024, heads=16, bottleneck=128, start=8, patch=16, cfg=2.4)


def l32() -> Recipe:
    return _jit("jit_l32", depth=24, dim=1024, heads=16, bottleneck=128, start=8, patch=32, cfg=2.5)


def h16() -> Recipe:
    return _jit("jit_h16", depth=32, dim=1280, heads=16, bottleneck=256, start=10, patch=16, cfg=2.2, dropout=0.2)


def h32() -> Recipe:
    return _jit("jit_h32", depth=32, dim=1280, heads=16, bottleneck=256, start=10, patch=32, cfg=2.3, dropout=0.2)


def g16() -> Recipe:
    """JiT-G/16: not in the official model file; sized as the paper's table, sampled like H/16."""
    return _jit("jit_g16", depth=40, dim=1664, heads=16, bottleneck=256, start=10, patch=16, cfg=2.2, dropout=0.2)


def tiny() -> Recipe:
    """JiT on the built-in 32 px emoji, for a CPU: 4 px patches (64 tokens, 48 values each through a
    16-wide bottleneck), 4 blocks of width 128 (emoji_tiny's backbone), 4 in-context tokens from
    block 1; JiT's objective and sampler; emoji_tiny's optimisation (batch 32, lr 2e-3, balanced)."""
    return Recipe(
        name="jit_tiny",
        model=ModelConfig(
            backbone=DiTConfig(
                depth=4, dim=128, num_heads=4, patch_size=4, image_size=32, num_classes=9, max_period=10000.0,
                rope="jit", patch_bottleneck=16, pos_embed="sincos", in_context_len=4, in_context_start=1,
                qkv_bias=True, mlp_bias=True, init="jit",
            ),
            head=DiTFinalLayer(norm="rmsnorm"),
        ),
        objective=XPrediction(t_sampling="logit_normal", loc=-0.8, scale=0.8, t_eps=0.05, noise_scale=1.0,
                              label_dropout=0.1, clamp_sampling=True),
        train=TrainConfig(
            global_batch=32, max_steps=3200, lr=2e-3, betas=(0.9, 0.95), warmup_steps=100, weight_decay=0.0,
            grad_clip=1.0, ema_decays=(0.99,), precision="fp32", num_workers=0, log_every=10, ckpt_every=400,
            sample_every=1600,
        ),
        data=DataConfig(source="emoji", flip=False, balance_classes=True),
        sample=SampleConfig(steps=50, solver="heun", cfg_scale=3.0, cfg_interval=(0.1, 1.0), grid_images=36),
    )
