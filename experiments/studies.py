"""The studies, as lists of `Arm`s at three scales: "cpu" (2 cores, ~2 h for everything), "gpu"
(one H100, the 256 px / P = 16 / XL-width version; never run so far) and "smoke" (seconds, tests).
fig3 and fig10b are empty at "cpu" (see OVERFIT_SIZES and fig10b_arms for the measured reasons).

* fair: DiT-only against DiP (the paper's Table 2 / Fig. 2 question) in the fair regime, 3 seeds
  each, same backbone, data order, step budget and sampler.
* family: DiP, JiT, PixNerd, PixelDiT and DeCo on the same backbone, data, wall-clock budget and
  sampler, each with its own head and objective (the family's comparison table at one budget).
* fig10b (GPU and smoke only): DiT-only on patches half as wide (4x the tokens: 1,024 against
  256 at 256 px, the paper's counts) against the fair study's DiP.
* fig3 (GPU and smoke only): the paper's Fig. 3, overfitting one photo (scikit-image's
  astronaut, public domain, a 256 px resize committed in experiments/data/) with 16 px patches
  into a DiT of XL width 1152 = 1.5 x 768; DiT-only against DiP at equal steps, 3 seeds.

The fair regime, both sides (`scaffold.regime_problem`, `scaffold.head_problem`): backbone width
>= 1.5 x the 3 P² values of a patch, as DiP-XL/16 (1152 = 1.5 x 768), and >= 64 tokens; DiP's
conv U-Net bottleneck >= 2/3 x those values, as DiP-XL/16's head (512 for 768), with s_i joining at
the bottleneck only, as the paper's head. On the CPU: 64 px OpenMoji, P = 8 (64 tokens of 192
values), width 288 = 1.5 x 192, head base width 32 (bottleneck 32 x 2^2 = 128 = 2/3 x 192). The
project's every-stage s_i injection (FiLM) is not the paper's head: `every_stage_variant` makes
it a separately labelled arm. It still probes the paper's mechanism: an 8 x 8 patch of an emoji
holds edges, outlines and colour steps that the DiT's per-token linear output must render value by
value, while DiP's head renders them with shared local convolutions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from experiments.scaffold import Arm, Scale
from pixdiff.config import replace
from pixdiff.diffusion import FlowMatching
from pixdiff.nn import ConvUNet, DiTConfig, DiTFinalLayer, ModelConfig
from pixdiff.recipe import (
    DataConfig,
    Recipe,
    SampleConfig,
    TrainConfig,
    load_recipe,
)

SEEDS = (0, 1, 2)
LAYOUT = "balanced layout accuracy, 10-NN on 8x8 block means"
# the pilot's bar, set before the run: chance is 1/9 = 0.111 (9 OpenMoji groups) and shuffled labels
# scored 0.096-0.123 over 5 splits at N = 300, so 0.2 is far outside what a model blind to the class gets
PILOT_THRESHOLD = 0.2


@dataclass(frozen=True)
class Size:
    image: int
    patch: int
    width: int
    depth: int
    heads: int
    head_width: int  # DiP's conv U-Net: encoder widths head_width * 2^i, log2(P) stages (bottleneck >= 2/3 x 3 P²)
    batch: int
    steps: int  # the fair study's step budget per arm
    family_wall_s: float  # the family study's training budget per arm
    n_eval: int
    sample_steps: int


SIZES: dict[str, Size] = {
    # one 8 x 8 patch = 192 values; one DiP step ~0.67 s and one DiT-only step ~0.42 s at batch 32
    # with one thread each while two arms train side by side (measured on the 2-core machine)
    # (the head's base width was 16 until the head rule: bottleneck 64 for 192 values, 1/3)
    "cpu": Size(64, 8, 288, 3, 6, 32, 32, 2000, 360.0, 300, 25),
    # DiP-XL/16's patch (768 values) and width (1152) at 256 px, 12 blocks instead of 28
    # estimated, never run: ~0.1 s a step -> fair 6 x 1,500 steps ~15 min, family 5 x 300 s = 25 min,
    # fig10b 3 x 1,500 steps at 1,024 tokens (~0.3 s) ~22 min, Fig. 3 ~10 min, sampling 14 x 1,000
    # images ~12 min: ~1.4 H100-hours in all
    "gpu": Size(256, 16, 1152, 12, 16, 64, 64, 1500, 300.0, 1000, 100),
    "smoke": Size(32, 4, 72, 1, 2, 16, 4, 2, 1.0, 12, 2),
}


def fair_base(scale: Scale) -> Recipe:
    """DiP at this scale: the paper's objective (flow matching, v-prediction, logit-normal t) and
    sampler (Euler, CFG 4.0 on (0.1, 1)), per-patch conv U-Net head, balanced OpenMoji groups."""
    z = SIZES[scale]
    return Recipe(
        name=f"fair_dip_{scale}",
        model=ModelConfig(
            backbone=DiTConfig(depth=z.depth, dim=z.width, num_heads=z.heads, patch_size=z.patch, image_size=z.image,
                               num_classes=9),
            head=ConvUNet(depth=z.patch.bit_length() - 1, width=z.head_width, scope="patch"),
        ),
        objective=FlowMatching(t_sampling="logit_normal", label_dropout=0.1),
        train=TrainConfig(global_batch=z.batch, max_steps=z.steps, lr=1e-3, warmup_steps=min(100, z.steps),
                          weight_decay=0.0, grad_clip=1.0, ema_decays=(0.995,),
                          precision="bf16" if scale == "gpu" else "fp32", num_workers=0,
                          log_every=min(50, z.steps), ckpt_every=min(200, z.steps), sample_every=0),
        data=DataConfig(source="openmoji", flip=False, balance_classes=True),
        sample=SampleConfig(steps=z.sample_steps, solver="euler", cfg_scale=4.0, cfg_interval=(0.1, 1.0),
                            grid_images=36),
    )


def fair_arms(scale: Scale) -> list[Arm]:
    """DiP and DiT-only, 3 seeds each: the same backbone, data order (seeded by the arm's seed),
    steps and sampler; only the output module differs."""
    base, n = fair_base(scale), SIZES[scale].n_eval
    dit_only = replace(base, name=f"fair_dit_only_{scale}", **{"model.head": DiTFinalLayer()})
    return [arm for seed in SEEDS for arm in (
        Arm(f"fair-dip-s{seed}", base, "DiP", seed=seed, n_eval=n),
        Arm(f"fair-dit-only-s{seed}", dit_only, "DiT-only", seed=seed, n_eval=n))]


VARIANT = "variant: s_i enters every head stage (the project's FiLM), not only the bottleneck as in the paper"


def every_stage_variant(arm: Arm) -> Arm:
    """A DiP arm with s_i injected at every stage of its conv U-Net head: the project's variant,
    outside the paper's head, so it runs only labelled as such (name and label say so)."""
    recipe = replace(arm.recipe, name=f"{arm.recipe.name}_every_stage", **{"model.head.s_injection": "every_stage"})
    return Arm(f"{arm.name}-every-stage", recipe, f"{arm.label}, every-stage s_i", seed=arm.seed, n_eval=arm.n_eval,
               wall_s=arm.wall_s, contrast=VARIANT, task=arm.task, metric_patch=arm.metric_patch)


def family_recipe(spec: str, scale: Scale) -> Recipe:
    """A family member's head and objective (from its tiny recipe) on the fair study's backbone,
    optimisation, data and sampler; architecture flags of its own backbone (JiT's bottleneck and
    in-context tokens, PixelDiT's initialisation) are kept."""
    base, z = fair_base(scale), SIZES[scale]
    own = load_recipe(spec)
    b = own.model.backbone
    shape = {"depth": z.depth, "dim": z.width, "num_heads": z.heads, "patch_size": z.patch, "image_size": z.image,
             "num_classes": 9}
    head = {}
    if b.patch_bottleneck:  # JiT: 192 values through a bottleneck as JiT-B/16 (768 -> 128): 1/6
        shape |= {"patch_bottleneck": 3 * z.patch**2 // 6, "in_context_start": min(b.in_context_start, z.depth - 1)}
    if spec.startswith("pixeldit"):
        # its pixel level is a second transformer with per-pixel adaLN (Linear(D -> 6 * width * P²) per
        # block): one backbone block fewer and pixel tokens of width 4 keep it within 5% of DiP's count
        shape["depth"] = max(1, z.depth - 1)
        head = {"width": 4, "num_heads": z.heads}
    model = replace(own.model, **{f"backbone.{k}": v for k, v in shape.items()},
                            **{f"head.{k}": v for k, v in head.items()})
    return Recipe(name=f"family_{own.name.removesuffix('_tiny')}_{scale}", model=model, objective=own.objective,
                  train=base.train, data=base.data, sample=base.sample)


FAMILY = (("DiP", "emoji_tiny"), ("JiT", "jit:tiny"), ("PixNerd", "pixnerd:tiny"), ("PixelDiT", "pixeldit:tiny"),
          ("DeCo", "deco:tiny"))


def family_arms(scale: Scale) -> list[Arm]:
    """One arm per family member, each trained for the same wall-clock budget."""
    z = SIZES[scale]
    arms = []
    for label, spec in FAMILY:
        recipe = fair_base(scale) if label == "DiP" else family_recipe(spec, scale)
        recipe = replace(recipe, **{"train.max_steps": 10**9})  # the wall budget ends training
        arms.append(Arm(f"family-{label.lower()}", recipe, label, n_eval=z.n_eval, wall_s=z.family_wall_s))
    return arms


PHOTO = Path(__file__).resolve().parent / "data" / "astronaut"  # a flat folder: one image, one class


@dataclass(frozen=True)
class OverfitSize:
    image: int  # 64 tokens at 128 px: the floor, and a CPU step under a second
    width: int  # 1152: DiP-XL/16's
    depth: int
    batch: int
    steps: int
    n_eval: int
    sample_steps: int


# Not on the CPU (fig3_arms("cpu") is empty): two attempts there drew noise from both models, PSNR
# 7.5-7.8 dB to the photo (docs/experiments/fig3_cpu_attempts.json): 2 blocks, batch 4, 200 steps,
# lr 2e-4, EMA 0.99 (losses 0.41 DiP / 0.23 DiT-only, still falling), then 1 block, batch 2, 300
# steps, lr 5e-4, EMA 0.9 (0.28 / 0.20). Width 1152 and DiP's head (1.1 s a step, 3x the 1-block DiT)
# leave a CPU hours from a memorised photo; the GPU scale trains 12 blocks for 2,000 steps.
OVERFIT_SIZES = {"cpu": OverfitSize(128, 1152, 1, 2, 600, 8, 25), "gpu": OverfitSize(256, 1152, 12, 16, 2000, 16, 100),
                 "smoke": OverfitSize(128, 64, 1, 2, 2, 2, 2)}


def fig3_arms(scale: Scale) -> list[Arm]:
    """DiP-XL/16's patch (16 px, 768 values), width (1152, 16 heads) and head (conv U-Net, 4 stages
    of base width 64), fewer blocks; no label dropout or guidance (one image, one class); the paper's
    objective; Euler sampling from fresh noise, each sample scored against the photo."""
    if scale == "cpu":
        return []
    z = OVERFIT_SIZES[scale]
    dip = Recipe(
        name=f"fig3_dip_{scale}",
        model=ModelConfig(
            backbone=DiTConfig(depth=z.depth, dim=z.width, num_heads=16, patch_size=16, image_size=z.image,
                               num_classes=1),
            head=ConvUNet(depth=4, width=64, scope="patch"),
        ),
        objective=FlowMatching(t_sampling="logit_normal", label_dropout=0.0),
        train=TrainConfig(global_batch=z.batch, max_steps=z.steps, lr=5e-4, warmup_steps=min(50, z.steps),
                          weight_decay=0.0, grad_clip=1.0, ema_decays=(0.9,),
                          precision="bf16" if scale == "gpu" else "fp32", num_workers=0,
                          log_every=min(25, z.steps), ckpt_every=min(100, z.steps), sample_every=0),
        data=DataConfig(source=str(PHOTO), flip=False),
        sample=SampleConfig(steps=z.sample_steps, solver="euler", cfg_scale=1.0, cfg_interval=(0.0, 1.0),
                            grid_images=16),
    )
    dit_only = replace(dip, name=f"fig3_dit_only_{scale}", **{"model.head": DiTFinalLayer()})
    contrast = "smoke: the plumbing only, too narrow to measure anything" if scale == "smoke" else ""
    return [arm for seed in SEEDS for arm in (
        Arm(f"fig3-dip-s{seed}", dip, "DiP", seed=seed, n_eval=z.n_eval, contrast=contrast, task="overfit"),
        Arm(f"fig3-dit-only-s{seed}", dit_only, "DiT-only", seed=seed, n_eval=z.n_eval, contrast=contrast,
            task="overfit"))]


def fig10b_arms(scale: Scale) -> list[Arm]:
    """Fig. 10b's question with its token counts (256 and 1,024): is DiP on large patches as good as a
    DiT-only model on patches half as wide, four times as many tokens? DiT-only at P / 2 against
    the fair study's DiP arms (same seeds, backbone width, steps, sampler). Both sides stay in the
    fair regime (at P / 2 the width is 6 x the patch's values). The paper's own pair is DiP/32 against
    DiT-only/16 at 512 px, width 1152: its DiP/32 is narrower than its 3,072-value patch, outside the
    rule. Not on the CPU: 1,024 tokens cost at least 16x a 64-token step there (estimated, not run)."""
    if scale == "cpu":
        return []
    z = SIZES[scale]
    half = z.patch // 2
    dit = replace(fair_base(scale), name=f"fig10b_dit_only_p{half}_{scale}",
                  **{"model.head": DiTFinalLayer(), "model.backbone.patch_size": half})
    return [Arm(f"fig10b-dit-only-p{half}-s{seed}", dit, f"DiT-only/{half}", seed=seed, n_eval=z.n_eval,
                metric_patch=z.patch) for seed in SEEDS]


STUDIES = {"fair": fair_arms, "family": family_arms, "fig3": fig3_arms, "fig10b": fig10b_arms}
