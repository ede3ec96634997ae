"""The training engine: a recipe in, a trained and resumable run folder out.

One code path for a CPU, one GPU, or many GPUs under `torchrun` (DDP, or FSDP2 when the recipe
asks for it). Determinism is by construction, not by luck: the data order is a function of
(seed, epoch), and every sample's diffusion noise, time and label dropout come from its own
generator seeded by (seed, step, global sample index). A run therefore does not depend on the
number of processes, and a resumed run repeats the uninterrupted one step for step.

Run folder:
    recipe.json          the resolved recipe
    metrics.jsonl        one JSON row per logged step (rank 0)
    checkpoints/         step_XXXXXXXX.pt, written atomically; the newest two are kept
    samples/             EMA sample grids, step_XXXXXXXX.png
    loss.png             loss curve, written at the end
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pixdiff import checkpoint
from pixdiff.config_tree import from_dict, to_dict
from pixdiff.data.stream import BatchStream, class_groups, epoch_order, global_batch_indices  # noqa: F401 (re-exported)
from pixdiff.distributed import Dist, barrier, mean_across
from pixdiff.recipe import Recipe, RepaConfig
from pixdiff.sampling import derive_seed

CKPT_DIR, SAMPLES_DIR = "checkpoints", "samples"
KEEP_CHECKPOINTS = 2


class TrainingError(RuntimeError):
    pass


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    step: int
    last_loss: float
    seconds: float
    checkpoint: Path | None
    sample_grid: Path | None
    main: bool  # whether this process is rank 0 (the one that reports)


# ----------------------------------------------------------------------------- determinism
def step_generators(seed: int, step: int, indices: range, device: torch.device) -> list[torch.Generator]:
    """One generator per sample of the global batch, keyed by (seed, step, position): a sample's
    noise, time and label dropout do not depend on the rank or micro-batch that computes it."""
    return [torch.Generator(device).manual_seed(derive_seed(seed, step, i)) for i in indices]


# ----------------------------------------------------------------------------- pieces
def lr_at(step: int, lr: float, warmup: int) -> float:
    """Constant learning rate after a linear warm-up over `warmup` steps."""
    return lr * min(1.0, (step + 1) / warmup) if warmup > 0 else lr


@torch.no_grad()
def ema_update(ema: list[torch.Tensor], live: list[torch.Tensor], decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * live, in place (plain tensors or FSDP shards alike)."""
    torch._foreach_lerp_(ema, [p.detach().to(e.dtype) for p, e in zip(live, ema)], 1.0 - decay)


def full_state_dict(module: nn.Module, fsdp: bool) -> dict[str, torch.Tensor]:
    """Unsharded CPU copy of `module`'s weights (a collective under FSDP: every rank calls it)."""
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def load_full_state_dict(module: nn.Module, state: dict[str, torch.Tensor], fsdp: bool) -> None:
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True))
    else:
        module.load_state_dict(state)


def split_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


def latest_checkpoint(out_dir: Path) -> Path | None:
    files = sorted((out_dir / CKPT_DIR).glob("step_*.pt"))
    return files[-1] if files else None


def check_resume_compatible(saved: Recipe, given: Recipe) -> None:
    """Resuming may change how long and how often (train.*, sample.*), never what is trained."""
    for section in ("model", "objective", "data"):
        a, b = to_dict(getattr(saved, section)), to_dict(getattr(given, section))
        if a != b:
            raise TrainingError(
                f"--resume: the recipe's {section!r} section differs from the run's recipe.json; "
                f"resume with the same recipe or start a new --out folder")
    if (saved.train.global_batch, saved.train.seed) != (given.train.global_batch, given.train.seed):
        raise TrainingError("--resume: train.global_batch and train.seed must stay as they were")


class TrainingLoss(nn.Module):
    """Everything a training step differentiates, as one module, so that DDP and FSDP see (and
    synchronise) the denoiser and the optional REPA projector together."""

    def __init__(self, model: nn.Module, objective: Any, num_classes: int, repa: RepaConfig | None):
        super().__init__()
        from pixdiff.repa import load_encoder, projector

        self.model, self.objective, self.num_classes, self.repa = model, objective, num_classes, repa
        if repa is not None:
            self.repa_projector = projector(model.backbone.config.dim, repa.proj_dim)
            # a plain attribute, not a submodule: frozen, and kept out of checkpoints and DDP
            self.__dict__["encoder"] = load_encoder(repa.encoder)

    def forward(self, x: torch.Tensor, y: torch.Tensor, generators: list[torch.Generator]
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.repa is None:
            return self.objective.loss(self.model, x, y, num_classes=self.num_classes, generator=generators)
        from pixdiff.repa import alignment_loss

        block: dict[str, torch.Tensor] = {}

        def denoiser(x_t: torch.Tensor, t: torch.Tensor, y_: torch.Tensor) -> torch.Tensor:
            out, blocks = self.model(x_t, t, y_, return_blocks=(self.repa.block,))
            block["tokens"] = blocks[self.repa.block]  # (B, N, D)
            return out

        loss, stats = self.objective.loss(denoiser, x, y, num_classes=self.num_classes, generator=generators)
        encoder = self.__dict__["encoder"].to(x.device)
        with torch.no_grad():
            target = encoder(x)  # (B, N, proj_dim)
        align = alignment_loss(self.repa_projector(block["tokens"]), target)
        return loss + self.repa.weight * align, {**stats, "repa": align.detach()}


# ----------------------------------------------------------------------------- the loop
class Trainer:
    """Holds the live state of one run; `run()` trains to recipe.train.max_steps."""

    def __init__(self, recipe: Recipe, out_dir: Path, d: Dist, *, resume: bool = False, progress: bool = True,
                 console: Any = None):
        from pixdiff.data import prepare

        self.recipe, self.out_dir, self.d, self.progress = recipe, Path(out_dir), d, progress
        self.console = console
        tc = recipe.train
        if tc.global_batch % (d.world * tc.grad_accum):
            raise TrainingError(f"train.global_batch={tc.global_batch} is not divisible by world size {d.world} "
                                f"x train.grad_accum {tc.grad_accum}")
        self.fsdp = tc.parallel == "fsdp"
        self.num_classes = recipe.model.backbone.num_classes

        # data: rank 0 builds the cache once, the others open it after the barrier
        dc = recipe.data
        if d.main:
            self.cache = prepare(dc.source, dc.cache_dir, recipe.resolution, on_error=dc.on_error, small=dc.small)
        barrier(d)
        if not d.main:
            self.cache = prepare(dc.source, dc.cache_dir, recipe.resolution, on_error=dc.on_error, small=dc.small)
        if self.cache.info.num_classes > self.num_classes:
            raise TrainingError(f"the data has {self.cache.info.num_classes} classes but the model "
                                f"{self.num_classes}; set model.backbone.num_classes")

        # model, EMA (fp32, never wrapped), optimizer
        torch.manual_seed(tc.seed)  # identical initial weights on every rank
        model = recipe.model.build().to(d.device)
        if tc.compile:
            model.compile()  # in place: parameter names (and checkpoints) stay as they are
        self.net = TrainingLoss(model, recipe.objective, self.num_classes, tc.repa).to(d.device)
        self.wrapped = self._wrap(self.net)
        # EMA in fp32: under FSDP one shard per live shard (no communication to update it);
        # otherwise a full model that sample grids run on
        self.ema_model = None if self.fsdp else recipe.model.build().to(d.device).requires_grad_(False).eval()
        if self.ema_model is not None:
            self.ema_model.load_state_dict(model.state_dict())
        self.ema = [p.detach().clone().float() for p in model.parameters()] if self.fsdp \
            else list(self.ema_model.parameters())
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=tc.lr, betas=tc.betas,
                                           weight_decay=tc.weight_decay, fused=d.device.type == "cuda")
        self.step = 0
        self.last_ckpt: Path | None = None
        if resume:
            if d.main:
                checkpoint.remove_stale_temps(self.out_dir / CKPT_DIR)
            self._resume()
        elif latest_checkpoint(self.out_dir) is not None:
            raise TrainingError(f"{self.out_dir} already holds checkpoints: pass --resume to continue it, "
                                f"or choose another --out")
        self.stream = BatchStream(self.cache.images, self.cache.labels, seed=tc.seed, global_batch=tc.global_batch,
                                  grad_accum=tc.grad_accum, rank=d.rank, world=d.world, flip=dc.flip,
                                  balance_classes=dc.balance_classes, device=d.device, start_step=self.step,
                                  num_workers=tc.num_workers)
        if d.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "recipe.json").write_text(json.dumps(to_dict(recipe), indent=2))

    def _wrap(self, net: TrainingLoss) -> nn.Module:
        if self.fsdp:
            from torch.distributed.fsdp import fully_shard

            for block in net.model.backbone.blocks:
                fully_shard(block)
            return fully_shard(net)
        if self.d.enabled:
            from torch.nn.parallel import DistributedDataParallel

            return DistributedDataParallel(net, device_ids=[self.d.device.index] if self.d.device.type == "cuda" else None)
        return net

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        if self.fsdp:
            optim = get_optimizer_state_dict(self.net, self.optimizer,
                                             options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        else:
            optim = self.optimizer.state_dict()
        net = full_state_dict(self.net, self.fsdp)
        state = {
            "recipe": to_dict(self.recipe),
            "step": self.step,
            "model": split_prefix(net, "model."),
            "ema": self.ema_state(),
            "optimizer": optim,
            "rng": {"torch": torch.get_rng_state()},
            "data": {"samples_seen": self.step * self.recipe.train.global_batch,
                     "dataset_size": self.cache.info.count},
        }
        if self.recipe.train.repa:
            state["repa_projector"] = split_prefix(net, "repa_projector.")
        return state

    def save_checkpoint(self) -> Path:
        state = self._state()  # collective under FSDP: every rank takes part
        path = self.out_dir / CKPT_DIR / f"step_{self.step:08d}.pt"
        if self.d.main:
            checkpoint.save(state, path)
            for old in sorted((self.out_dir / CKPT_DIR).glob("step_*.pt"))[:-KEEP_CHECKPOINTS]:
                old.unlink()
        barrier(self.d)
        self.last_ckpt = path
        return path

    def _resume(self) -> None:
        path = latest_checkpoint(self.out_dir)
        if path is None:
            raise TrainingError(f"--resume: no checkpoint in {self.out_dir / CKPT_DIR}")
        ckpt = checkpoint.load(path, map_location="cpu")
        check_resume_compatible(from_dict(ckpt["recipe"]), self.recipe)
        net = {f"model.{k}": v for k, v in ckpt["model"].items()}
        net.update({f"repa_projector.{k}": v for k, v in ckpt.get("repa_projector", {}).items()})
        load_full_state_dict(self.net, net, self.fsdp)
        self.load_ema(ckpt["ema"])
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(self.net, self.optimizer, ckpt["optimizer"],
                                     options=StateDictOptions(full_state_dict=True))
        else:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        self.step = int(ckpt["step"])
        self.last_ckpt = path
        if self.d.main:  # forget metrics logged after the checkpoint: they are about to be redone
            log = self.out_dir / "metrics.jsonl"
            if log.exists():
                rows = [r for r in log.read_text().splitlines() if r and json.loads(r)["step"] <= self.step]
                log.write_text("".join(r + "\n" for r in rows))

    # ------------------------------------------------------------------ one step
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.d.device.type == "cuda" and self.recipe.train.precision == "bf16":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self) -> dict[str, float]:
        tc = self.recipe.train
        lr = lr_at(self.step, tc.lr, tc.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total = torch.zeros((), device=self.d.device)
        stats: dict[str, float] = {}
        for micro in range(tc.grad_accum):
            batch = next(self.stream)
            x, y = batch.x, batch.y
            gens = step_generators(tc.seed, self.step, batch.positions, self.d.device)
            sync = micro == tc.grad_accum - 1 or not hasattr(self.wrapped, "no_sync")
            with (contextlib.nullcontext() if sync else self.wrapped.no_sync()), self._autocast():
                loss, parts = self.wrapped(x, y, gens)
                (loss / tc.grad_accum).backward()
            total += loss.detach() / tc.grad_accum
            for k, v in parts.items():
                stats[k] = stats.get(k, 0.0) + float(v) / tc.grad_accum
        loss = mean_across(self.d, total)
        if not torch.isfinite(loss):
            self.optimizer.zero_grad(set_to_none=True)
            kept = self.save_checkpoint() if self.step > 0 and self._checkpoint_step() != self.step else self.last_ckpt
            raise TrainingError(f"loss is {loss.item()} at step {self.step + 1}; stopped without applying it. "
                                f"Last good checkpoint: {kept or 'none (failed before the first step)'}")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(),
                                                   tc.grad_clip if tc.grad_clip > 0 else float("inf"))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        ema_update(self.ema, list(self.net.model.parameters()), tc.ema_decay)
        self.step += 1
        stats.update(loss=loss.item(), lr=lr, grad_norm=float(grad_norm))
        return stats

    def ema_state(self) -> dict[str, torch.Tensor]:
        """Full EMA weights on CPU (a collective under FSDP: every rank calls it)."""
        if not self.fsdp:
            return {k: v.detach().cpu() for k, v in self.ema_model.state_dict().items()}
        names = [n for n, _ in self.net.model.named_parameters()]
        return {n: e.full_tensor().cpu() for n, e in zip(names, self.ema)}

    def load_ema(self, state: dict[str, torch.Tensor]) -> None:
        if not self.fsdp:
            self.ema_model.load_state_dict(state)
            return
        from torch.distributed.tensor import distribute_tensor

        with torch.no_grad():
            for (name, _), e in zip(self.net.model.named_parameters(), self.ema):
                e.copy_(distribute_tensor(state[name].to(e.device, e.dtype), e.device_mesh, e.placements))

    def _checkpoint_step(self) -> int:
        return int(self.last_ckpt.stem.split("_")[1]) if self.last_ckpt else -1

    # ------------------------------------------------------------------ samples
    @torch.no_grad()
    def sample_grid(self) -> Path | None:
        """EMA samples as a PNG grid, written by rank 0 (every rank must call it under FSDP)."""
        from pixdiff.grid import make_grid, save_png, to_uint8
        from pixdiff.sampling import balanced_labels, sample, seed_generators

        ema = self.ema_model
        if self.fsdp:
            state = self.ema_state()
            if self.d.main:
                ema = self.recipe.model.build().to(self.d.device).eval()
                ema.load_state_dict(state)
        if not self.d.main:
            return None
        sc, n = self.recipe.sample, self.recipe.sample.grid_images
        classes = self.cache.info.num_classes
        y = balanced_labels(n, classes, device=self.d.device)
        gens = seed_generators(range(n), self.d.device)
        bb = self.recipe.model.backbone
        with self._autocast():
            x = sample(ema, self.recipe.objective, y, shape_chw=(bb.channels, bb.image_size, bb.image_size),
                       steps=sc.steps, solver=sc.solver, cfg_scale=sc.cfg_scale, cfg_interval=sc.cfg_interval,
                       time_shift=sc.time_shift, generators=gens, num_classes=self.num_classes)
        scale = max(1, 128 // bb.image_size)
        return save_png(make_grid(to_uint8(x), nrow=classes if n % classes == 0 and classes <= 12 else None),
                        self.out_dir / SAMPLES_DIR / f"step_{self.step:08d}.png", scale=scale)

    # ------------------------------------------------------------------ driver
    def run(self) -> TrainResult:
        tc, d = self.recipe.train, self.d
        log_path = self.out_dir / "metrics.jsonl"
        start_step, t0, grid = self.step, time.perf_counter(), None
        window_t, window_steps, last = time.perf_counter(), 0, {"loss": float("nan")}
        bar = _ProgressBar(tc.max_steps, self.step, enabled=self.progress and d.main, console=self.console)
        with bar, self.stream:
            while self.step < tc.max_steps:
                last = self.train_step()
                window_steps += 1
                if self.step % tc.log_every == 0 or self.step == tc.max_steps or self.step == start_step + 1:
                    now = time.perf_counter()
                    ips = window_steps * tc.global_batch / max(now - window_t, 1e-9)
                    window_t, window_steps = now, 0
                    row = {"step": self.step, **{k: round(v, 6) for k, v in last.items()},
                           "img_per_s": round(ips, 2), "time_s": round(now - t0, 3)}
                    if d.main:
                        with log_path.open("a") as f:
                            f.write(json.dumps(row) + "\n")
                    bar.update(self.step, last["loss"], ips)
                if self.step % tc.ckpt_every == 0 and self.step != tc.max_steps:
                    self.save_checkpoint()
                if tc.sample_every > 0 and self.step % tc.sample_every == 0 and self.step != tc.max_steps:
                    grid = self.sample_grid()
        if self._checkpoint_step() != self.step:
            self.save_checkpoint()
        if tc.sample_every > 0:
            grid = self.sample_grid()
        if d.main:
            plot_loss(log_path, self.out_dir / "loss.png")
        barrier(d)
        return TrainResult(self.out_dir, self.step, last["loss"], time.perf_counter() - t0, self.last_ckpt, grid,
                           d.main)


class _ProgressBar:
    """rich progress: step, loss, img/s, ETA (rank 0 only)."""

    def __init__(self, total: int, done: int, *, enabled: bool, console: Any = None):
        self.enabled = enabled
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[ips]:.1f} img/s"),
                TimeRemainingColumn(), console=console, transient=False,
            )
            self.task = self.progress.add_task("train", total=total, completed=done, loss=float("nan"), ips=0.0)

    def __enter__(self) -> _ProgressBar:
        if self.enabled:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self.progress.__exit__(*exc)

    def update(self, step: int, loss: float, ips: float) -> None:
        if self.enabled:
            self.progress.update(self.task, completed=step, loss=loss, ips=ips)


def plot_loss(log_path: Path, out: Path) -> Path | None:
    if not log_path.exists():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(r) for r in log_path.read_text().splitlines() if r]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1)
    ax.set(xlabel="step", ylabel="loss", title="training loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def train(recipe: Recipe, out_dir: str | Path, *, resume: bool = False, device: str | None = None,
          progress: bool = True) -> TrainResult:
    """Train `recipe` into `out_dir` (see the module docstring); joins torchrun's process group."""
    from pixdiff.distributed import setup, teardown

    d = setup(device)
    try:
        return Trainer(recipe, Path(out_dir), d, resume=resume, progress=progress).run()
    finally:
        teardown()

