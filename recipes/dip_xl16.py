"""DiP-XL/16 at 256 px on ImageNet (the paper's main model) and its Table 2 / Fig. 5 ablations.

`build()` carries the paper's full training settings (docs/design.md, section 1). Point `data.source` at
an ImageNet train folder (one sub-folder per class), e.g.
    pixdiff train recipes/dip_xl16.py --set data.source=/data/imagenet/train
"""

from pixdiff.config import replace
from pixdiff.diffusion import FlowMatching, MeanFlow
from pixdiff.nn import ConvUNet, CoordinateMLP, DiTConfig, DiTFinalLayer, IntraPatchAttention, ModelConfig, StandardMLP
from pixdiff.recipe import DataConfig, Recipe, SampleConfig, TrainConfig


def build() -> Recipe:
    return Recipe(
        name="dip_xl16",
        model=ModelConfig(
            backbone=DiTConfig(depth=26, dim=1152, num_heads=16, patch_size=16, image_size=256, num_classes=1000),
            head=ConvUNet(depth=4, width=64),
            placement="post",
        ),
        objective=FlowMatching(t_sampling="logit_normal", label_dropout=0.1),
        train=TrainConfig(
            global_batch=256, max_steps=3_000_000, lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-3,
            ema_decays=(0.9999,), precision="bf16",
        ),
        data=DataConfig(source="imagenet/train", flip=True),
        sample=SampleConfig(steps=100, solver="euler", cfg_scale=4.0, cfg_interval=(0.1, 1.0)),
    )


# Table 2, "Scaling up DiT": the DiT alone, with DiT's final layer (on the last block's tokens,
# conditioned on c) instead of a head.
def dit_only() -> Recipe:
    return replace(build(), name="dit_only", **{"model.head": DiTFinalLayer()})


def dit_only_32l() -> Recipe:
    return replace(dit_only(), name="dit_only_32l", **{"model.backbone.depth": 32})


def dit_only_1280() -> Recipe:
    return replace(dit_only(), name="dit_only_1280", **{"model.backbone.dim": 1280})


def dit_only_1536() -> Recipe:
    return replace(dit_only(), name="dit_only_1536", **{"model.backbone.dim": 1536})


# Table 2, "Different Patch Detailer Head".
def mlp_head() -> Recipe:
    return replace(build(), name="mlp_head", **{"model.head": StandardMLP()})


def intra_attn_head() -> Recipe:
    return replace(build(), name="intra_attn_head", **{"model.head": IntraPatchAttention()})


def coord_mlp_head() -> Recipe:
    return replace(build(), name="coord_mlp_head", **{"model.head": CoordinateMLP()})


# Fig. 5 placements: the U-Net head after block 13 of 26 (inject_after is 0-based).
def intermediate() -> Recipe:
    return replace(build(), name="intermediate", **{"model.placement": "intermediate", "model.inject_after": 12})


def hybrid() -> Recipe:
    return replace(build(), name="hybrid", **{"model.placement": "hybrid", "model.inject_after": 12})


# Fig. 10a: the Patch Detailer Head's depth (down/up stages; 4 halves a 16 px patch to 1x1, the
# most P=16 allows) and base width (64 in DiP). The text names the knobs but not the plotted
# values; these cover every depth P=16 allows and widths from half to four times DiP's.
def fig10_depth1() -> Recipe:
    return replace(build(), name="fig10_depth1", **{"model.head.depth": 1})


def fig10_depth2() -> Recipe:
    return replace(build(), name="fig10_depth2", **{"model.head.depth": 2})


def fig10_depth3() -> Recipe:
    return replace(build(), name="fig10_depth3", **{"model.head.depth": 3})


def fig10_width32() -> Recipe:
    return replace(build(), name="fig10_width32", **{"model.head.width": 32})


def fig10_width128() -> Recipe:
    return replace(build(), name="fig10_width128", **{"model.head.width": 128})


def fig10_width256() -> Recipe:
    return replace(build(), name="fig10_width256", **{"model.head.width": 256})


# Fig. 10b: patch size at 512 px, DiP against DiT-only (16 px patches: 1,024 tokens; 32 px: 256).
def fig10_512_p16() -> Recipe:
    return replace(build(), name="fig10_512_p16", **{"model.backbone.image_size": 512})


def fig10_512_p32() -> Recipe:
    return replace(fig10_512_p16(), name="fig10_512_p32", **{"model.backbone.patch_size": 32})


def fig10_512_p16_dit_only() -> Recipe:
    return replace(fig10_512_p16(), name="fig10_512_p16_dit_only", **{"model.head": DiTFinalLayer()})


def fig10_512_p32_dit_only() -> Recipe:
    return replace(fig10_512_p32(), name="fig10_512_p32_dit_only", **{"model.head": DiTFinalLayer()})


def meanflow() -> Recipe:
    """DiP-XL/16 trained with MeanFlow (docs/meanflow.md; not in the DiP paper): the interval
    embedding added, MeanFlow's interval ratio and adaptive weight, sampled in 2 meanflow steps
    without sampling-time guidance (train it in with --set objective.cfg_scale=W). Its GPU cost
    (1 and 2 steps, training with the JVP) is in benchmarks/run_gpu.sh."""
    return replace(build(), name="dip_xl16_meanflow", objective=MeanFlow(t_sampling="logit_normal", label_dropout=0.1),
                   **{"model.backbone.interval_embed": True, "sample.solver": "meanflow", "sample.steps": 2,
                      "sample.cfg_scale": 1.0})
