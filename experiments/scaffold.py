"""One scaffold for every experiment: an `Arm` (a recipe, a budget, a seed) is trained with the
public `Trainer`, sampled with its recipe's own sampler (`pixdiff.load(...).sample`) and scored
with exactly the metrics that passed their sanity rows on the same data at the same N.

Work folder (git-ignored by default, runs/experiments/):
    <arm>/            the arm's run folder (a normal pixdiff run: resumable, locked while it trains)
    <arm>/clock.json  seconds spent training, summed over sittings (saved at every checkpoint)
    <arm>/result.json the arm's scores; an arm with this file is done and is never run again
    sanity-<res>px-p<P>.json  the sanity rows of the data at the evaluation N
An interrupted arm resumes from its newest checkpoint, so a study can span sittings: rerun the
same command. Sample grids are written to docs/experiments/ (committed, linked from the page).
"""

from __future__ import annotations

import functools
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from pixdiff.config import replace
from pixdiff.data import prepare, save_grid, to_uint8
from pixdiff.eval import METRICS, denoising_readout, detail_ratio, psnr, run_sanity
from pixdiff.nn import ConvUNet, HeadConfig
from pixdiff.pipelines import load
from pixdiff.recipe import Recipe
from pixdiff.runtime import atomic_write
from pixdiff.train import Trainer, TrainingError, held_out

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
DEFAULT_WORK = REPO / "runs" / "experiments"
PAGE = DOCS / "experiments.md"  # its sample grids go to docs/experiments/ (the page's stem)

SANITY_SPLITS = 5
REFERENCE_SEED = 0  # which N data images are the reference set A (and which N the halves row's B)
SAMPLE_SEED = 1  # image i of every arm is drawn from derive_seed(1, i): the same noise for every arm
GRID_IMAGES = 36
READOUT_SEED = 2  # image i's fixed noise in every readout
OVERFIT_NOISES = 16  # an overfit arm's readout: its one image under this many fixed noises


# The regime where DiP's question arises (the fair comparison of DiP and DiT-only): as DiP-XL/16, whose width 1152 is 1.5x the 768
# values of a 16 px RGB patch, and with enough tokens that one image is not memorised by DiT-only.
REGIME_WIDTH_FACTOR = 1.5
REGIME_MIN_TOKENS = 64
# DiP's side of the same rule: DiP-XL/16's head (4 stages, base width 64) reaches each patch's
# context through 64 x 2^3 = 512 bottleneck channels for its 768 values, a ratio of 2/3 (0.67)
HEAD_CONTEXT_RATIO = (2, 3)


def regime_problem(width: int, patch_size: int, image_size: int, channels: int = 3) -> str | None:
    """None when a DiT backbone is in the fair regime, else a one-line reason it is not.

    Fair: width >= 1.5 x C P² (narrower, the per-token linear output is rank-limited and cannot
    express a v- or eps-target: grain for a reason that is not the paper's) and (image / P)² >= 64.
    """
    if patch_size < 1 or image_size % patch_size:
        return f"a {image_size} px image does not split into {patch_size} px patches"
    values, tokens = channels * patch_size**2, (image_size // patch_size) ** 2
    need = REGIME_WIDTH_FACTOR * values
    if width < need:
        return (f"width {width} < {REGIME_WIDTH_FACTOR:g} x {values} values per {patch_size} px patch = {need:g} "
                f"(the per-token output is rank-limited)")
    if tokens < REGIME_MIN_TOKENS:
        return f"{tokens} tokens ({image_size} px / {patch_size} px patches) < {REGIME_MIN_TOKENS}"
    return None


def head_problem(head: HeadConfig, patch_size: int, channels: int = 3) -> str | None:
    """None when a conv U-Net head (DiP's) is sized and fed as the paper's, else a one-line reason.

    Fair: its bottleneck, where s_i joins (width x 2^(depth - 1) channels), has >= 2/3 x C P²
    channels, DiP-XL/16's ratio (512 for 768; a narrower one squeezes each patch's context through
    fewer channels than the paper's head has), and s_i enters at the bottleneck only, as the
    paper's head takes it ("every_stage" is the project's FiLM variant). Other heads: no rule.
    """
    if not isinstance(head, ConvUNet):
        return None
    values, bottleneck = channels * patch_size**2, head.width * 2 ** (head.depth - 1)
    num, den = HEAD_CONTEXT_RATIO
    if den * bottleneck < num * values:
        return (f"head bottleneck {bottleneck} channels < {num}/{den} x {values} values per {patch_size} px patch "
                f"= {num * values / den:g} (DiP-XL/16's head: 512 for 768)")
    if head.s_injection != "bottleneck":
        return f"s_i enters the head at every stage ({head.s_injection!r}), the paper's head takes it at the bottleneck"
    return None


@dataclass(frozen=True)
class Arm:
    """One trained model of a study. The fair-regime rule for both sides is checked here: the
    backbone (`regime_problem`: width >= 1.5 x the 3 P² values of a patch, >= 64 tokens) and DiP's
    head (`head_problem`: bottleneck >= 2/3 x those values, s_i at the bottleneck only). An arm that
    breaks it is refused unless `contrast` says why it is run anyway: a contrast (the deliberate
    narrow-width arm) or a variant (the project's every-stage s_i injection), labelled as such."""

    name: str  # run folder name: unique within a work folder
    recipe: Recipe
    label: str  # what the page calls it
    seed: int = 0  # recipe.train.seed is set to it
    n_eval: int = 300  # images sampled and reference images scored against
    wall_s: float | None = None  # stop once training took this long (else recipe.train.max_steps)
    contrast: str = ""  # why an arm outside the fair rule is run: a contrast or a labelled variant
    # "generate": class-conditional samples scored against the data; "overfit": a model trained on
    # one image (Fig. 3) draws n_eval samples, each scored against that image
    task: Literal["generate", "overfit"] = "generate"
    # the P of the in-patch detail ratio and the seam score (0: the backbone's): arms compared with
    # each other must be scored at one P (Fig. 10b's DiT-only on half-width patches against DiP)
    metric_patch: int = 0
    probes: tuple[int, ...] = ()  # steps whose checkpoints are read out while training (`probe`)

    def __post_init__(self) -> None:
        b = self.recipe.model.backbone
        problem = regime_problem(b.dim, b.patch_size, b.image_size) or head_problem(self.recipe.model.head,
                                                                                    b.patch_size, b.channels)
        if problem and not self.contrast:
            raise ValueError(f"arm {self.name}: not in the fair regime: {problem}; "
                             f"label it a contrast (Arm(contrast=why)) to run it anyway")
        if self.n_eval < 2 or (self.wall_s is not None and self.wall_s <= 0):
            raise ValueError(f"arm {self.name}: n_eval must be >= 2 and wall_s > 0, got {self.n_eval}, {self.wall_s}")

    @property
    def eval_patch(self) -> int:
        return self.metric_patch or self.recipe.model.backbone.patch_size

    @property
    def trained_recipe(self) -> Recipe:
        return replace(self.recipe, **{"train.seed": self.seed})


# ----------------------------------------------------------------------------- data and sanity
@functools.cache
def data(source: str, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """All images of a built-in source as uint8 (M, H, W, 3) and their labels (M,)."""
    cache = prepare(source, None, resolution)
    return cache.images.numpy().transpose(0, 2, 3, 1), cache.labels.numpy()


def reference(arm: Arm) -> tuple[np.ndarray, np.ndarray]:
    """The N data images every arm of this data and N is scored against: sanity split 0's set A."""
    images, labels = data(arm.recipe.data.source, arm.recipe.model.backbone.image_size)
    a = np.sort(np.random.default_rng([REFERENCE_SEED, 0]).permutation(len(images))[: arm.n_eval])
    return images[a], labels[a]


COMMITTED_SANITY = DOCS / "metrics_sanity.json"  # written by experiments.metrics_sanity


def committed_sanity(source: str, image: int, patch: int, n: int) -> list[dict[str, Any]] | None:
    """The committed sanity rows (pixel and EfficientNet parts) if they were measured on this data at
    this size, P and N: the EfficientNet rows cost about an hour a split on 2 CPU cores."""
    if not COMMITTED_SANITY.exists():
        return None
    raw = json.loads(COMMITTED_SANITY.read_text())
    if [raw.get(k) for k in ("source", "image", "patch", "n")] != [source, image, patch, n]:
        return None
    return [{k: r[k] for k in ("metric", "better", "scores", "must_detect", "passes")}
            for part in ("pixel", "effnet") for r in raw.get(part, {}).get("rows", [])]


def sanity_rows(arm: Arm, work: Path) -> list[dict[str, Any]]:
    """The sanity rows of the arm's data at its N and patch size (the committed ones where they match,
    else computed once per work folder)."""
    b = arm.recipe.model.backbone
    source = arm.recipe.data.source.replace(":", "-")
    path = work / f"sanity-{source}-{b.image_size}px-p{arm.eval_patch}-n{arm.n_eval}.json"
    if path.exists():
        return json.loads(path.read_text())
    rows = committed_sanity(arm.recipe.data.source, b.image_size, arm.eval_patch, arm.n_eval)
    if rows is None:
        images, labels = data(arm.recipe.data.source, b.image_size)
        rows = [{"metric": r.metric, "better": r.better, "scores": r.scores, "must_detect": list(r.must_detect),
                 "passes": r.passes}
                for r in run_sanity(images, labels, arm.n_eval, arm.eval_patch, repeats=SANITY_SPLITS,
                                    seed=REFERENCE_SEED)]
    write_json(path, rows)
    return rows


# ----------------------------------------------------------------------------- one arm
class Clock:
    """Training seconds summed over sittings; saved with each checkpoint, so a resumed arm's clock
    matches its checkpoint (steps redone after a kill are timed once, when they are redone)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.total = json.loads(path.read_text())["train_s"] if path.exists() else 0.0
        self.last = time.perf_counter()

    def tick(self) -> None:
        now = time.perf_counter()
        self.total, self.last = self.total + now - self.last, now

    def save(self) -> None:
        write_json(self.path, {"train_s": self.total})


def train(arm: Arm, folder: Path) -> dict[str, Any]:
    """Train (or resume) the arm's run folder to its budget: its step count, training seconds, last
    loss; the checkpoints at `arm.probes` are read out on the way (probes.json, kept across sittings)."""
    recipe = arm.trained_recipe
    resume = any((folder / "checkpoints").glob("step_*.pt"))
    clock = Clock(folder / "clock.json")
    probes_file = folder / "probes.json"
    probes = json.loads(probes_file.read_text()) if probes_file.exists() else {}

    def on_event(_trainer: Any, event: Any) -> bool:
        if event.kind == "step":
            clock.tick()
            return arm.wall_s is not None and clock.total >= arm.wall_s
        if event.kind in ("checkpoint", "end"):
            clock.tick()
            clock.save()
            if event.step in arm.probes and str(event.step) not in probes:
                probes[str(event.step)] = probe(arm, event.path)
                write_json(probes_file, probes)
            clock.last = time.perf_counter()  # a probe's time is not training time
        return False

    with Trainer(recipe, folder, resume=resume, progress=False) as trainer:
        clock.last = time.perf_counter()
        result = trainer.fit([on_event], max_steps=recipe.train.max_steps)
    return {"steps": result.step, "train_s": clock.total, "final_loss": result.last_loss,
            **({"probes": probes} if arm.probes else {})}


def readout_images(arm: Arm) -> tuple[np.ndarray, np.ndarray]:
    """The readout's images: those the arm never trained on (data.holdout), or for an overfit arm
    its one image, OVERFIT_NOISES times (each copy gets its own fixed noise)."""
    images, labels = data(arm.recipe.data.source, arm.recipe.model.backbone.image_size)
    if arm.task == "overfit":
        return np.repeat(images[:1], OVERFIT_NOISES, 0), np.repeat(labels[:1], OVERFIT_NOISES, 0)
    keep = held_out(len(images), arm.recipe.data.holdout).numpy()
    if not keep.any():
        raise ValueError(f"arm {arm.name}: no held-out images (set data.holdout) for the readout")
    return images[keep], labels[keep]


def readout(arm: Arm, run: Any) -> list[dict[str, float]]:
    """The denoising readout (`pixdiff.eval.readout`) of a loaded run on the arm's readout images."""
    images, labels = readout_images(arm)
    dev = next(run.model.parameters()).device
    x0 = torch.from_numpy(images).permute(0, 3, 1, 2).to(dev).float() / 127.5 - 1  # (N, C, H, W) in [-1, 1]
    return denoising_readout(run.model, run.objective, x0, torch.from_numpy(labels).to(dev), arm.eval_patch,
                             seed=READOUT_SEED, num_classes=run.recipe.model.backbone.num_classes)


def probe(arm: Arm, checkpoint: Path) -> dict[str, Any]:
    """One checkpoint of an overfit arm: the readout of its image and its samples' PSNR to it."""
    run = loaded(checkpoint)
    image = data(arm.recipe.data.source, arm.recipe.model.backbone.image_size)[0][0]
    samples = to_uint8(run.sample(np.zeros(arm.n_eval, np.int64), seed=SAMPLE_SEED))
    return {"readout": readout(arm, run), "psnr": [psnr(s, image, 255.0) for s in samples]}


def curve(folder: Path) -> list[list[float]]:
    """[step, loss, grad norm] of every logged row of the run (the window means of metrics.jsonl)."""
    path = folder / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []
    return [[r["step"], r["loss"], r["grad_norm"]] for r in rows if "loss" in r]


def loaded(path: Path) -> Any:
    """The EMA model of a run folder or checkpoint (`pixdiff.load`), on the GPU if there is one."""
    return load(path, device="cuda" if torch.cuda.is_available() else "cpu")


def draw(arm: Arm, run: Any) -> tuple[np.ndarray, np.ndarray, float, int]:
    """n_eval EMA samples of the trained arm (loaded) for class-balanced labels, in one batch:
    (uint8 NHWC, labels, seconds, the model's parameter count)."""
    labels = np.arange(arm.n_eval) % max(run.recipe.model.backbone.num_classes, 1)
    t0 = time.perf_counter()
    images = to_uint8(run.sample(labels, seed=SAMPLE_SEED))
    return images, labels, time.perf_counter() - t0, sum(p.numel() for p in run.model.parameters())


def score(arm: Arm, samples: np.ndarray, labels: np.ndarray, passing: set[str]) -> dict[str, float]:
    """Every metric that passed its sanity rows, of the samples against the reference set; for an
    overfit arm, each sample's PSNR to the one image and the in-patch detail ratio to it."""
    if arm.task == "overfit":
        image = data(arm.recipe.data.source, arm.recipe.model.backbone.image_size)[0][:1]  # (1, H, W, 3)
        return {"PSNR to the image (dB)": float(np.mean([psnr(s, image[0], 255.0) for s in samples])),
                "in-patch detail ratio": detail_ratio(samples, image, arm.eval_patch)}
    ref, ref_labels = reference(arm)
    patch = arm.eval_patch
    return {m.name: float(m.score(ref, ref_labels, samples, labels, patch)) for m in METRICS if m.name in passing}


def run_arm(arm: Arm, work: Path, page: Path = PAGE) -> dict[str, Any]:
    """Train, sample, read out and score one arm (or read its result.json when it is done); its sample
    grid goes beside the page, into the folder named as the page (docs/experiments/). An arm whose
    loss turns non-finite is done as failed: its result says so and holds its curve up to there."""
    folder = work / arm.name
    done = folder / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    passing = {r["metric"] for r in sanity_rows(arm, work) if r["passes"]} if arm.task == "generate" else set()
    head = {"arm": arm.name, "label": arm.label, "seed": arm.seed, "lr": arm.recipe.train.lr, "contrast": arm.contrast,
            "task": arm.task, "n_eval": arm.n_eval}
    try:
        trained = train(arm, folder)
    except TrainingError as e:
        print(f"arm {arm.name} failed: {e}", file=sys.stderr)
        failed = {**head, "failed": str(e), "curve": curve(folder), "environment": environment()}
        write_json(done, failed)
        return failed
    run = loaded(folder)
    samples, labels, sample_s, params = draw(arm, run)
    grid = save_grid(samples[:GRID_IMAGES], page.with_suffix("") / f"{arm.name}.png", nrow=9)
    batch = arm.recipe.train.global_batch
    result = {
        **head, "params": params,
        **trained, "train_img_per_s": trained["steps"] * batch / trained["train_s"],
        "sample_s": sample_s, "sample_img_per_s": arm.n_eval / sample_s,
        "sampler": {k: getattr(arm.recipe.sample, k) for k in ("solver", "steps", "cfg_scale", "cfg_interval",
                                                               "time_shift")},
        "scores": score(arm, samples, labels, passing), "grid": grid.relative_to(page.parent).as_posix(),
        "readout": readout(arm, run),
        "curve": curve(folder), "environment": environment(),
    }
    write_json(done, result)
    return result


def run_arms(arms: list[Arm], work: Path, shard: tuple[int, int] = (0, 1), page: Path = PAGE) -> list[dict[str, Any]]:
    """Run this shard's arms (arm i belongs to shard i mod n), in order; the results of all that are done."""
    index, count = shard
    for i, arm in enumerate(arms):
        if i % count == index:
            run_arm(arm, work, page)
    return finished(arms, work)


def finished(arms: list[Arm], work: Path) -> list[dict[str, Any]]:
    """The results of the arms that are done, in the order given."""
    return [json.loads((work / a.name / "result.json").read_text()) for a in arms
            if (work / a.name / "result.json").exists()]


# ----------------------------------------------------------------------------- records
def environment() -> dict[str, Any]:
    """Where the numbers were measured."""
    cpu = platform.processor() or "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "cpu": cpu,
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def command_line() -> str:
    """The command as typed (module form when run with -m)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    head = ["python", "-m", spec.name.removesuffix(".__main__")] if spec is not None and spec.name else ["python"]
    return " ".join([*head, *sys.argv[1:]] if len(head) == 3 else [*head, *sys.argv])


def write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, text=True) as f:
        f.write(json.dumps(obj, indent=2, default=lambda o: o.item() if isinstance(o, np.generic) else str(o)) + "\n")
    return path


Scale = Literal["cpu", "gpu", "smoke"]
