"""The studies, as lists of `Arm`s at three scales: "cpu" (2 cores, ~4 worker-hours for everything),
"gpu" (one H100, the 256 px / P = 16 / XL-width version; never run so far) and "smoke" (seconds,
tests). Arms that need a best learning rate appear once the sweep has found it (`best_lrs`).

* fair: DiT-only against DiP (the paper's Table 2 / Fig. 2 question) in the fair regime: an lr sweep
  per side (seed 0), then 3 seeds each at its best lr; same backbone, data order, step budget, sampler.
* diagnosis: why DiP's head fits worse, one change to the paper's head per arm (seed 0, DiP's best lr,
  the fair budget): a bottleneck as wide as a patch's values, s_i at every stage, the head over the
  whole image. The rule for reading them is written below (DIAGNOSIS_RULE), before they ran.
* family: DiP, JiT, PixNerd, PixelDiT and DeCo on the same backbone, data, step budget, lr (DiP's
  best) and sampler, each with its own head and objective; DiP's row is the fair study's 3 seeds.
* fig3: the paper's Fig. 3, overfitting one image. On the CPU at the fair study's size (one 64 px
  OpenMoji image, P = 8); on the GPU scikit-image's astronaut (public domain, a 256 px resize in
  experiments/data/) with 16 px patches into a DiT of XL width 1152 = 1.5 x 768. DiT-only against DiP
  at equal steps, 2 seeds, checkpoints read out on the way.
* fig10b (GPU and smoke only; its CPU cost is measured in docs/experiments/fig10b_cost.json):
  DiT-only on patches half as wide (4x the tokens: 1,024 against 256 at 256 px, the paper's counts)
  against the fair study's DiP.

The fair regime, both sides (`scaffold.regime_problem`, `scaffold.head_problem`): backbone width
>= 1.5 x the 3 P² values of a patch, as DiP-XL/16 (1152 = 1.5 x 768), and >= 64 tokens; DiP's
conv U-Net bottleneck >= 2/3 x those values, as DiP-XL/16's head (512 for 768), with s_i joining at
the bottleneck only, as the paper's head. On the CPU: 64 px OpenMoji, P = 8 (64 tokens of 192
values), width 288 = 1.5 x 192, head base width 32 (bottleneck 32 x 2^2 = 128 = 2/3 x 192). The
project's every-stage s_i injection (FiLM) is not the paper's head: the diagnosis runs it as a
separately labelled variant. Whether an 8 x 8 patch of an emoji (edges, outlines, colour steps)
holds enough in-patch detail for the paper's mechanism to show is what the page measures.
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
# The learning-rate rule, fixed before the sweep: each arm (DiP, DiT-only) trains seed 0 at every
# lr of Size.lrs for the study's step budget, and its best lr is the one with the lowest mean
# training loss over the last fifth of the logged steps. Both arms minimise the same MSE on the
# same v-target with the same t draws and data order, so within an arm the loss ranks the lrs; an
# lr whose loss turns non-finite is reported as failed and never chosen.
TAIL = 0.2
HOLDOUT = 10  # data.holdout: every 10th OpenMoji image (394 of 3,944) is never trained on: the readout's images


@dataclass(frozen=True)
class Size:
    image: int
    patch: int
    width: int
    depth: int
    heads: int
    head_width: int  # DiP's conv U-Net: encoder widths head_width * 2^i, log2(P) stages (bottleneck >= 2/3 x 3 P²)
    batch: int
    steps: int  # the fair and family studies' step budget per arm
    lrs: tuple[float, ...]  # the sweep (the previous runs' single lr, 1e-3, in the middle)
    n_eval: int
    sample_steps: int


SIZES: dict[str, Size] = {
    # one 8 x 8 patch = 192 values. One DiP step 1.42 s and one DiT-only step 0.78 s at batch 32, with one
    # thread each while both train side by side (measured 2026-12-07 on the 2-core machine; the head's
    # base width was 16 until the head rule): 500 steps is what the sweep and 2 seeds cost in ~2 h.
    # The sweep ran 3e-4, 1e-3, 3e-3 first; DiP's loss still fell at 3e-3 (0.47, 0.32, 0.245: its best
    # at the grid's edge), so 1e-2 was added for both sides before any seed trained
    "cpu": Size(64, 8, 288, 3, 6, 32, 32, 500, (3e-4, 1e-3, 3e-3, 1e-2), 300, 25),
    # DiP-XL/16's patch (768 values) and width (1152) at 256 px, 12 blocks instead of 28
    # estimated, never run: ~0.1 s a step -> fair 10 x 1,500 steps ~25 min, family 4 x 1,500 ~10 min,
    # fig10b 3 x 1,500 steps at 1,024 tokens (~0.3 s) ~22 min, Fig. 3 ~10 min, sampling 17 x 1,000
    # images ~15 min: ~1.4 H100-hours in all
    "gpu": Size(256, 16, 1152, 12, 16, 64, 64, 1500, (1e-4, 3e-4, 1e-3), 1000, 100),
    "smoke": Size(32, 4, 72, 1, 2, 16, 4, 2, (1e-3, 2e-3), 12, 2),
}


def fair_base(scale: Scale, lr: float = 1e-3) -> Recipe:
    """DiP at this scale: flow matching with v-prediction, as the authors' code trains it (the
    paper's text says the head predicts the noise component; logit-normal t also comes from the
    code), the paper's sampler (Euler, CFG 4.0 on (0.1, 1)), the paper's per-patch conv U-Net
    head, balanced OpenMoji groups with every 10th image held out."""
    z = SIZES[scale]
    return Recipe(
        name=f"fair_dip_{scale}",
        model=ModelConfig(
            backbone=DiTConfig(depth=z.depth, dim=z.width, num_heads=z.heads, patch_size=z.patch, image_size=z.image,
                               num_classes=9),
            head=ConvUNet(depth=z.patch.bit_length() - 1, width=z.head_width, scope="patch"),
        ),
        objective=FlowMatching(t_sampling="logit_normal", label_dropout=0.1),
        train=TrainConfig(global_batch=z.batch, max_steps=z.steps, lr=lr, warmup_steps=min(100, z.steps),
                          weight_decay=0.0, grad_clip=1.0, ema_decays=(0.995,),
                          precision="bf16" if scale == "gpu" else "fp32", num_workers=0,
                          log_every=min(10, z.steps), ckpt_every=min(100, z.steps), sample_every=0),
        data=DataConfig(source="openmoji", flip=False, balance_classes=True, holdout=HOLDOUT),
        sample=SampleConfig(steps=z.sample_steps, solver="euler", cfg_scale=4.0, cfg_interval=(0.1, 1.0),
                            grid_images=36),
    )


def lr_name(lr: float) -> str:
    return f"{lr:.0e}".replace("e-0", "e-")


def fair_arm(scale: Scale, label: str, lr: float, seed: int) -> Arm:
    """DiP or DiT-only at one lr and seed: the same backbone, data order (seeded by the seed), steps
    and sampler; only the output module differs."""
    base = fair_base(scale, lr)
    recipe = base if label == "DiP" else replace(base, name=f"fair_dit_only_{scale}", **{"model.head": DiTFinalLayer()})
    return Arm(f"fair-{'dip' if label == 'DiP' else 'dit-only'}-lr{lr_name(lr)}-s{seed}", recipe, label, seed=seed,
               n_eval=SIZES[scale].n_eval)


FAIR_LABELS = ("DiP", "DiT-only")


def fair_arms(scale: Scale, best: dict[str, float] | None = None) -> list[Arm]:
    """The sweep (seed 0 of both arms at every lr), then, for each arm whose best lr is known (`best`,
    from `best_lrs`), its other seeds at that lr."""
    sweep = [fair_arm(scale, label, lr, SEEDS[0]) for lr in SIZES[scale].lrs for label in FAIR_LABELS]
    return sweep + [fair_arm(scale, label, (best or {})[label], seed) for seed in SEEDS[1:] for label in FAIR_LABELS
                    if label in (best or {})]


def tail_loss(result: dict) -> float:
    """Mean training loss over the last TAIL of the arm's logged steps (nan if it failed)."""
    curve = result.get("curve") or []
    if result.get("failed") or not curve:
        return float("nan")
    last = curve[-1][0]
    tail = [loss for step, loss, _ in curve if step > (1 - TAIL) * last]
    return sum(tail) / len(tail)


def best_lrs(results: list[dict], scale: Scale) -> dict[str, float]:
    """Each arm's best lr by the rule above, for the arms whose whole sweep has finished; an arm none
    of whose lrs trained (every loss non-finite) is left out."""
    lrs, best = SIZES[scale].lrs, {}
    for label in FAIR_LABELS:
        sweep = {r["lr"]: tail_loss(r) for r in results if r["label"] == label and r["seed"] == SEEDS[0]}
        finite = {lr: v for lr, v in sweep.items() if v == v}
        if set(sweep) >= set(lrs) and finite:
            best[label] = min(finite, key=finite.get)
    return best


VARIANT = "variant: s_i enters every head stage (the project's FiLM), not only the bottleneck as in the paper"


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


def family_arms(scale: Scale, best: dict[str, float] | None = None) -> list[Arm]:
    """JiT, PixNerd, PixelDiT and DeCo, one seed each, for the fair study's step budget at DiP's best
    lr (none of theirs is tuned); DiP's rows and their seed spread at that budget are the fair
    study's seeds. Known once DiP's sweep is done."""
    if "DiP" not in (best or {}):
        return []
    lr = best["DiP"]
    return [Arm(f"family-{label.lower()}-lr{lr_name(lr)}", replace(family_recipe(spec, scale), **{"train.lr": lr}),
                label, n_eval=SIZES[scale].n_eval) for label, spec in FAMILY if label != "DiP"]


# The diagnosis's rule, written before its arms ran: DiP's tail loss at its best lr is above every
# DiT-only seed's. A change to the paper's head (one per arm, seed 0, same lr and budget) *explains
# part of the gap* if its tail loss is below every DiP seed's (outside DiP's seed spread), and
# *closes it* if it is also at or below the highest DiT-only seed's; otherwise it is not the cause.
# The held-out readout at t = 0.95 (where DiP trails most) is read the same way.
DIAGNOSES = (
    ("wide bottleneck", "the bottleneck as wide as a patch's 3 P² values (CPU: head base width 48, 192 channels) "
                        "instead of 2/3 of them",
     lambda z: {"model.head.width": 3 * z.patch**2 // 2 ** (z.patch.bit_length() - 2)}),
    ("every-stage s_i", VARIANT, lambda z: {"model.head.s_injection": "every_stage"}),
    ("image-scope head", "variant: the head's convolutions run over the whole image, seeing across patch borders "
                         "(the paper's head pads each patch with zeros)", lambda z: {"model.head.scope": "image"}),
)


def diagnosis_arms(scale: Scale, best: dict[str, float] | None = None) -> list[Arm]:
    """DiP at its best lr, seed 0, with one change to the paper's head each (DIAGNOSES); the arms
    outside the paper's head carry their reason as `contrast`. Known once DiP's sweep is done."""
    if "DiP" not in (best or {}):
        return []
    base = fair_base(scale, best["DiP"])
    arms = []
    for label, why, change in DIAGNOSES:
        recipe = replace(base, name=f"{base.name}_{label.replace(' ', '_')}", **change(SIZES[scale]))
        contrast = why if why.startswith("variant") else ""
        arms.append(Arm(f"diagnosis-{label.split()[0].lower()}-s{SEEDS[0]}", recipe, f"DiP, {label}", seed=SEEDS[0],
                        n_eval=SIZES[scale].n_eval, contrast=contrast))
    return arms


PHOTO = Path(__file__).resolve().parent / "data" / "astronaut"  # a flat folder: one image, one class
# the CPU's image: the 64 px OpenMoji image with the most in-patch high-pass energy (its README says how chosen)
EMOJI = Path(__file__).resolve().parent / "data" / "fig3-openmoji"
# where the CPU's Fig. 3 reads out its checkpoints. The first sitting stopped at 2,000 steps (the
# machine was slow that day); the next resumed every arm from its 2,000-step checkpoint to 3,000
# (constant lr after warm-up, so the same run as 3,000 steps in one go)
PROBE_STEPS = (250, 500, 1000, 2000, 3000)


@dataclass(frozen=True)
class OverfitSize:
    source: Path
    image: int
    patch: int
    width: int
    depth: int
    heads: int
    head_width: int  # conv U-Net of log2(P) stages, bottleneck head_width * P / 2 (>= 2/3 x 3 P²)
    batch: int
    steps: int
    lr: float
    ema: float
    n_eval: int
    sample_steps: int
    probes: tuple[int, ...] = ()  # steps whose checkpoints are read out (readout bands and sample PSNR)


# "cpu" is the fair study's size (64 px, P = 8, width 288, 3 blocks, head base width 32) on one
# OpenMoji image, batch 4.
# The 256 px / P = 16 / width-1152 version needs a GPU: two CPU attempts at width 1152 drew noise from
# both models after 200 and 300 steps (docs/experiments/fig3_cpu_attempts.json).
OVERFIT_SIZES = {
    "cpu": OverfitSize(EMOJI, 64, 8, 288, 3, 6, 32, 4, 3000, 1e-3, 0.99, 8, 25, PROBE_STEPS),
    "gpu": OverfitSize(PHOTO, 256, 16, 1152, 12, 16, 64, 16, 2000, 5e-4, 0.9, 16, 100, (250, 500, 1000, 2000)),
    "smoke": OverfitSize(EMOJI, 32, 4, 72, 1, 2, 16, 2, 2, 1e-3, 0.9, 2, 2, (1, 2)),
}
FIG3_SEEDS = (0, 1)
# Fig. 3's decision rule, written before the run: the mechanism is reproduced if at every probed
# checkpoint from 1,000 steps on (a) at every noise level t >= 0.6 each DiP seed's high-band
# (in-patch) MSE of the one-step estimate is below each DiT-only seed's, and (b) each DiP seed's mean
# sample PSNR to the image is above each DiT-only seed's; otherwise the page says the effect is
# absent at this scale (and which part failed where).
FIG3_FROM_STEP, FIG3_MIN_T = 1000, 0.6


def fig3_arms(scale: Scale, best: dict[str, float] | None = None) -> list[Arm]:
    """Overfit one image (Fig. 3): DiP against DiT-only on the same backbone, steps and lr; no label
    dropout or guidance (one image, one class); Euler sampling from fresh noise, each sample scored
    against the image; at the CPU size, checkpoints are read out at PROBE_STEPS."""
    z = OVERFIT_SIZES[scale]
    dip = Recipe(
        name=f"fig3_dip_{scale}",
        model=ModelConfig(
            backbone=DiTConfig(depth=z.depth, dim=z.width, num_heads=z.heads, patch_size=z.patch, image_size=z.image,
                               num_classes=1),
            head=ConvUNet(depth=z.patch.bit_length() - 1, width=z.head_width, scope="patch"),
        ),
        objective=FlowMatching(t_sampling="logit_normal", label_dropout=0.0),
        train=TrainConfig(global_batch=z.batch, max_steps=z.steps, lr=z.lr, warmup_steps=min(50, z.steps),
                          weight_decay=0.0, grad_clip=1.0, ema_decays=(z.ema,),
                          precision="bf16" if scale == "gpu" else "fp32", num_workers=0,
                          log_every=min(25, z.steps), ckpt_every=min(250, z.steps), sample_every=0),
        data=DataConfig(source=str(z.source), flip=False),
        sample=SampleConfig(steps=z.sample_steps, solver="euler", cfg_scale=1.0, cfg_interval=(0.0, 1.0),
                            grid_images=16),
    )
    dit_only = replace(dip, name=f"fig3_dit_only_{scale}", **{"model.head": DiTFinalLayer()})
    contrast = "smoke: the plumbing only, too narrow to measure anything" if scale == "smoke" else ""
    return [arm for seed in FIG3_SEEDS for arm in (
        Arm(f"fig3-dip-s{seed}", dip, "DiP", seed=seed, n_eval=z.n_eval, contrast=contrast, task="overfit",
            probes=z.probes),
        Arm(f"fig3-dit-only-s{seed}", dit_only, "DiT-only", seed=seed, n_eval=z.n_eval, contrast=contrast,
            task="overfit", probes=z.probes))]


def fig10b_arms(scale: Scale, best: dict[str, float] | None = None) -> list[Arm]:
    """Fig. 10b's question with its token counts (256 and 1,024): is DiP on large patches as good as a
    DiT-only model on patches half as wide, four times as many tokens? DiT-only at P / 2 against
    the fair study's DiP arms (same seeds, backbone width, steps, sampler). Both sides stay in the
    fair regime (at P / 2 the width is 6 x the patch's values). The paper's own pair is DiP/32 against
    DiT-only/16 at 512 px, width 1152: its DiP/32 is narrower than its 3,072-value patch, outside the
    rule. Not on the CPU: 256 tokens cost 3.8x a 64-token step there (benchmarks/fig10b_cost.py), ~2
    worker-hours for 3 seeds. Known once DiT-only's sweep is done."""
    if scale == "cpu" or "DiT-only" not in (best or {}):
        return []
    z = SIZES[scale]
    half = z.patch // 2
    dit = replace(fair_base(scale, best["DiT-only"]), name=f"fig10b_dit_only_p{half}_{scale}",
                  **{"model.head": DiTFinalLayer(), "model.backbone.patch_size": half})
    return [Arm(f"fig10b-dit-only-p{half}-s{seed}", dit, f"DiT-only/{half}", seed=seed, n_eval=z.n_eval,
                metric_patch=z.patch) for seed in SEEDS]


STUDIES = {"fair": fair_arms, "diagnosis": diagnosis_arms, "family": family_arms, "fig3": fig3_arms,
           "fig10b": fig10b_arms}
