"""A DiP that trains on a 2-core CPU in under 10 minutes: 32 px emoji (the built-in offline data
set), 8 px patches (16 tokens), a 4-block DiT and a 3-stage U-Net head run over the whole image.
The quick-start job (`make demo`). 4,000 steps, so that `make demo` stays within 10 minutes on a
quiet 2-core machine: on 2026-12-07 a step took 0.133 s there (the first 590 steps of a 5,600-step
run in 78.3 s, two threads), so the 5,600 steps of the previous version would take 12.4 min (6,400
steps had taken 10 min 55 s on the same machine at an earlier date). The 6,400-step run measured
(979 s, one thread, shared CPU): FD-EffNet 135.5 on 900 samples against 151.1 for the previous 4 px
recipe (911 s), seam score 1.18 against 1.74.

Data: `emoji:picked`, nine classes that each look alike (faces, hearts, hands, mammals, fruit,
road vehicles, clocks, shapes, flags; 853 images). On the nine top-level emoji groups (3,773
images, the data of the measurements below) six of nine columns stayed colour blobs after the
full run; on the picked classes at 4,000 steps (463.7 s of training, 7 min 59.6 s for all of
`make demo` on the quiet 2-core machine, 2026-12-07; the grid is
docs/emoji_tiny_samples_step4000.png) faces, hearts, clocks, shapes and fruit are recognisable, flags
rough, and hands, mammals and road vehicles colour blobs.

Departures from the paper's setting, each measured on this budget (docs/demo_results.json holds
the pilots: 600-1,200 steps, FD-EffNet of 900 samples, seam score = border/inner pixel-gradient
ratio against the data's, 1 = no seams):
- x-prediction with a plain x0 MSE (JiT's parameterisation; t_eps=1 turns its velocity weighting
  off) instead of velocity prediction: a v-predicting model this small never learns to remove the
  last few percent of noise (it must output eps from an input where eps has amplitude 1 - t), so
  its samples stay grainy.
- Class-balanced epochs: 60% of the emoji are "People & Body", 4% "Smileys & Emotion"; balancing
  lets the small classes (faces, flags) take shape within the budget.
- Batch 32 at lr 2e-3 and a 16-channel head: at this size the model learns about as much per image
  at batch 32 as at 64, and the narrower head makes each image cheaper, so more are seen.
- The head convolves over the whole image (scope="image", same weights as the per-patch head):
  per patch, the 4 px demo drew a visible patch grid (seam score 2.54 at 600 steps, 1.74 after
  the full run); over the image it is 1.11 at 600 steps, at equal loss and FD.
- s_i reaches every head stage (FiLM, s_injection="every_stage"), not only the bottleneck: at 600
  steps the loss fell from 0.079 to 0.069 and FD-EffNet from 218 to 193.
- 8 px patches (16 tokens) and a 3-stage head instead of 4 px (64 tokens) and 2 stages: at equal
  steps as good (loss 0.079 vs 0.079, FD 212 vs 218) and a step costs half as much, so the budget
  buys 6,400 steps instead of 3,200 (at equal wall time, 1,200 steps at 8 px gave FD 169 against
  193 for 600 steps at 4 px, both with every-stage s_i).
- Not kept: a cosine LR decay (600-step pilot: loss 0.0785 as with a constant rate, FD 222 vs 218).
- Not on by default: torch.compile (`--set train.compile=true`). It measured 0.112 s per step
  instead of 0.146 (1 thread) after 58 s of compiling, about 15% off this run, but it needs a C++
  compiler on a fresh machine, and every test that trains this recipe would compile.
- Sampling with time_shift 3 (more Euler steps near noise, where the layout is decided) gives
  smoother shapes than a uniform grid.
"""

from pixdiff.config import replace
from pixdiff.diffusion import MeanFlow, XPrediction
from pixdiff.nn import ConvUNet, DiTConfig, DiTFinalLayer, ModelConfig
from pixdiff.recipe import DataConfig, Recipe, SampleConfig, TrainConfig


def build() -> Recipe:
    return Recipe(
        name="emoji_tiny",
        model=ModelConfig(
            backbone=DiTConfig(depth=4, dim=128, num_heads=4, patch_size=8, image_size=32, num_classes=9),
            head=ConvUNet(depth=3, width=16, scope="image", s_injection="every_stage"),
        ),
        objective=XPrediction(t_sampling="logit_normal", label_dropout=0.1, t_eps=1.0),
        train=TrainConfig(
            global_batch=32, max_steps=4000, lr=2e-3, warmup_steps=100, weight_decay=0.0, grad_clip=1.0,
            ema_decays=(0.99,), precision="fp32", num_workers=0, log_every=10, ckpt_every=800, sample_every=2000,
        ),
        data=DataConfig(source="emoji:picked", flip=False, balance_classes=True),
        sample=SampleConfig(steps=50, solver="euler", cfg_scale=3.0, cfg_interval=(0.0, 1.0), time_shift=3.0,
                            grid_images=36),
    )


def dit_only() -> Recipe:
    return replace(build(), name="emoji_tiny_dit_only", **{"model.head": DiTFinalLayer()})


def uncond() -> Recipe:
    """Unconditional: num_classes = 0 leaves the label table one (null) row, so there is no label
    dropout and no guidance; the data's labels are ignored. Train it on a folder of your own
    images with `--set data.source=PATH` (a flat folder or one with class sub-folders)."""
    return replace(build(), name="emoji_tiny_uncond", **{
        "model.backbone.num_classes": 0, "objective.label_dropout": 0.0, "sample.cfg_scale": 1.0,
        "data.balance_classes": False,
    })


def meanflow() -> Recipe:
    """MeanFlow (docs/meanflow.md): the same model with the interval embedding, predicting x0 as the
    x-prediction recipe does (pixel MeanFlow's u = (x0 - x_t)/(1 - t)), sampled in 2 steps without
    guidance."""
    return replace(build(), name="emoji_tiny_meanflow", objective=MeanFlow(t_sampling="logit_normal", label_dropout=0.1, prediction="x0"),
                   **{"model.backbone.interval_embed": True, "sample.solver": "meanflow", "sample.steps": 2,
                      "sample.cfg_scale": 1.0, "sample.time_shift": 1.0})
