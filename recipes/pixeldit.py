"""PixelDiT (Yu et al., "PixelDiT: Pixel Diffusion Transformers for Image Generation", CVPR 2026,
arXiv 2511.20645) from pixdiff's parts: DiP's patch-level DiT plus a pixel-level DiT head
(`pixdiff.nn.heads.pixel_dit`), trained with REPA.

The architecture follows the official code (NVlabs/PixelDiT `pixdit_core/pixeldit_c2i.py`, read in
the fork Apache0ne/PixelDiT; see docs/family_pixeldit.md for the commit and the equality figures):
the patch level is exactly pixdiff's backbone (RMSNorm, qk-norm, DiP's 2D RoPE, SwiGLU, adaLN on
c = silu(t_emb + y_emb), timestep max_period 10, a null class row), with adaLN-Zero blocks
(init="zero_adaln"); the pixel level reads s = silu(t_emb + tokens) after the last block.

Training and sampling follow the official `c2i/configs/pix256_xl.yaml` (REPATrainer, LinearScheduler)
and the released checkpoints' model card (the 320-epoch row, FID 1.61):
- flow matching with t = 1 as data, t = sigmoid(N(0, 1)), no time shift, label dropout 0.1;
- AdamW lr 1e-4 constant, betas (0.9, 0.999), no weight decay, gradient clipping at norm 1.0,
  bf16, EMA 0.9999, global batch 256 (8 GPUs x 32), 1.6M steps (320 epochs);
- REPA: cosine alignment (weight 0.5) of an MLP projection (1152 -> 1152 -> 1152 -> 768, SiLU) of
  the 8th patch block's output with DINOv2-B/14 patch tokens, which are pixdiff's RepaConfig
  defaults (block=7 is 0-based). The encoder cannot ship with pixdiff (nothing is downloaded), so
  name yours: `--set train.repa.encoder=dinov2_b14.pt2` (see pixdiff.train.repa). The official
  loss is 1 - cos, pixdiff's -cos: the same gradients, the logged value 1 lower;
- sampling: "ab2" (the official FlowDPMSolverSampler), 100 steps, CFG 2.75 on 0.1 < t < 0.9.
    pixdiff train pixeldit --set data.source=/data/imagenet/train --set train.repa.encoder=dinov2_b14.pt2
"""

from pixdiff.config import replace
from pixdiff.diffusion import FlowMatching
from pixdiff.nn import DiTConfig, ModelConfig, PixelDiTHead
from pixdiff.recipe import DataConfig, Recipe, SampleConfig, TrainConfig


def build() -> Recipe:
    """PixelDiT-XL at 256 px: 26 patch blocks of 1152 (16 heads) on 16 px patches, 4 pixel blocks
    of width 16; 797,383,203 parameters, as the official code counts (model card: 797M)."""
    return Recipe(
        name="pixeldit_xl",
        model=ModelConfig(
            backbone=DiTConfig(depth=26, dim=1152, num_heads=16, patch_size=16, image_size=256, num_classes=1000,
                               init="zero_adaln"),
            head=PixelDiTHead(width=16, depth=4, num_heads=16),
            placement="post",
        ),
        objective=FlowMatching(t_sampling="logit_normal", label_dropout=0.1),
        train=TrainConfig(
            global_batch=256, max_steps=1_600_000, lr=1e-4, betas=(0.9, 0.999), weight_decay=0.0, grad_clip=1.0,
            ema_decays=(0.9999,), precision="bf16",
        ),
        data=DataConfig(source="imagenet/train", flip=True),
        sample=SampleConfig(steps=100, solver="ab2", cfg_scale=2.75, cfg_interval=(0.1, 0.9), time_shift=1.0),
    )


def xl512() -> Recipe:
    """PixelDiT-XL at 512 px (1,024 patch tokens). Training as the official `pix512_xl.yaml`: time
    shift 3 on t, gradient clipping at 0.5, global batch 64 (8 x 8), 4M steps (the released model
    is quoted at 850 epochs, which that file alone does not reach). Sampling as the model card for
    that checkpoint: CFG 3.5 on (0.1, 1.0), time shift 2.0 (FID 1.78 there, 1.81 in the paper)."""
    return replace(build(), name="pixeldit_xl512", **{
        "model.backbone.image_size": 512, "objective.shift": 3.0, "train.grad_clip": 0.5, "train.global_batch": 64,
        "train.max_steps": 4_000_000, "sample.cfg_scale": 3.5, "sample.cfg_interval": (0.1, 1.0),
        "sample.time_shift": 2.0})


def post_modulation() -> Recipe:
    """The official stability variant: pixel blocks modulate their outputs, without gates."""
    return replace(build(), name="pixeldit_xl_post_modulation", **{"model.head.post_modulation": True})


def small() -> Recipe:
    """Not a published size (the official code ships XL only): DiT-B's patch level (12 blocks of
    768, 12 heads) with XL's pixel level, the rest as build(); 239,864,387 parameters."""
    return replace(build(), name="pixeldit_small", **{
        "model.backbone.depth": 12, "model.backbone.dim": 768, "model.backbone.num_heads": 12,
        "model.head.num_heads": 12})


def tiny() -> Recipe:
    """PixelDiT on the built-in 32 px emoji, for a CPU: 8 px patches (16 tokens), 4 patch blocks of
    width 128 (emoji_tiny's backbone), 2 pixel blocks of width 8 compacting each patch into a
    128-wide token; PixelDiT's objective and sampler, emoji_tiny's optimisation (batch 32, lr 2e-3,
    balanced classes). No REPA: there is no encoder to align with (add one with --set)."""
    return Recipe(
        name="pixeldit_tiny",
        model=ModelConfig(
            backbone=DiTConfig(depth=4, dim=128, num_heads=4, patch_size=8, image_size=32, num_classes=9,
                               init="zero_adaln"),
            head=PixelDiTHead(width=8, depth=2, num_heads=4),
        ),
        objective=FlowMatching(t_sampling="logit_normal", label_dropout=0.1),
        train=TrainConfig(
            global_batch=32, max_steps=3200, lr=2e-3, warmup_steps=100, weight_decay=0.0, grad_clip=1.0,
            ema_decays=(0.99,), precision="fp32", num_workers=0, log_every=10, ckpt_every=400, sample_every=1600,
        ),
        data=DataConfig(source="emoji", flip=False, balance_classes=True),
        sample=SampleConfig(steps=50, solver="ab2", cfg_scale=2.75, cfg_interval=(0.1, 0.9), grid_images=36),
    )
