"""The step loop: micro-batches in, optimizer and EMA updates out, rows and checkpoints on schedule.

Non-finite losses. The loop never asks the device whether a step's loss was finite (that would
be a host sync every step). Instead each step records on the device whether its loss or gradient
norm is non-finite; from the first such step on, the fused AdamW skips its update (the
`found_inf` tensor GradScaler uses) and the EMAs stand still, so the weights stay those of the
last good step. The next step that syncs anyway (a log row, a checkpoint, a sample grid, the end)
reads the flag, saves a checkpoint of the last good step and stops, naming the bad step. A
checkpoint asked for in between (`save_checkpoint`, e.g. by a callback) runs the same check first,
so no file is ever named after a step whose update was skipped.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from pixdiff.checkpoints import store as checkpoint
from pixdiff.checkpoints.loader import model_from_state
from pixdiff.config.tree import to_dict
from pixdiff.data.stream import BatchStream, held_out
from pixdiff.pipelines.generate import OutputError, sample_batch
from pixdiff.recipe import Recipe
from pixdiff.runtime.atomic import WriteFailed, atomic_write, describe
from pixdiff.runtime.distributed import Dist, DistError, barrier, host_group, max_across, mean_across
from pixdiff.runtime.lock import rank0_lock
from pixdiff.runtime.precision import autocast
from pixdiff.train import checkpointing, finetune, parallel
from pixdiff.train.checkpointing import show_change
from pixdiff.train.ema import ema_update
from pixdiff.train.errors import TrainingError
from pixdiff.train.loss import step_generators
from pixdiff.train.metrics import MetricsLog, Progress, Window, accumulate, is_log_step, plot_loss
from pixdiff.train.resume import append_history, check_unfinished
from pixdiff.train.schedule import lr_at
from pixdiff.train.scores import TrainingScores
from pixdiff.train.signals import EXIT_CODES, StopSignals, signal_name

SAMPLES_DIR = "samples"


@dataclass(frozen=True)
class Event:
    """What a callback is told: `kind` "step" (after every step, with its `stats` as 0-d device tensors),
    "log" (a metrics `row` was written), "checkpoint" / "sample" (the file's `path`), "end" (the last
    checkpoint's `path`). `step` is the number of optimizer steps taken so far."""
    kind: Literal["step", "log", "checkpoint", "sample", "end"]
    step: int
    stats: dict[str, torch.Tensor] | None = None
    row: dict[str, Any] | None = None
    path: Path | None = None


# A callback gets the trainer and the event; returning True asks `fit` to stop after this step
# (it then saves a checkpoint as at the end). Eval, early stopping and custom logs are callbacks.
Callback = Callable[["Trainer", Event], Any]


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    step: int  # the step the run is at now
    last_loss: float
    seconds: float
    checkpoint: Path | None
    sample_grid: Path | None
    main: bool  # whether this process is rank 0 (the one that reports)
    stopped_by: int = 0  # the signal that stopped the run early (see pixdiff.train.signals); 0: none
    start_step: int = 0  # the step this session started from (0 for a new run)

    def summary(self) -> str:
        """E.g. "trained steps 400-1200 (800 this session) in 61.2 s, final loss 0.0712"."""
        loss = f"final loss {self.last_loss:.4f}" if math.isfinite(self.last_loss) else "no loss logged this session"
        return (f"trained steps {self.start_step}-{self.step} ({self.step - self.start_step} this session) "
                f"in {self.seconds:.1f} s, {loss}")

    @property
    def exit_code(self) -> int:
        """What the command exits with: 130 after SIGINT, 143 after SIGTERM, else 0 (SIGUSR1 is a requeue)."""
        return EXIT_CODES.get(self.stopped_by, 0)

    def stop_line(self) -> str:
        """One line on a signal stop: which signal, at which step, the checkpoint, what to do next."""
        name = signal_name(self.stopped_by)
        if self.exit_code == 0:
            return (f"stopped by {name} at step {self.step}: checkpoint {self.checkpoint}; "
                    f"requeue the job with --resume to continue")
        return f"interrupted by {name} at step {self.step}: checkpoint {self.checkpoint}; continue with --resume"


def open_data(recipe: Recipe, d: Dist) -> Any:
    """The recipe's image cache: rank 0 builds it once, the others open it after the barrier."""
    from pixdiff.data import prepare

    dc, tc = recipe.data, recipe.train
    if tc.global_batch % (d.world * tc.grad_accum):
        raise TrainingError(f"train.global_batch={tc.global_batch} is not divisible by world size {d.world} "
                            f"x train.grad_accum {tc.grad_accum}")
    def open_cache() -> Any:
        return prepare(dc.source, dc.cache_dir, recipe.resolution, on_error=dc.on_error, small=dc.small)

    cache = open_cache() if d.main else None
    barrier(d)
    if cache is None:
        cache = open_cache()
    if recipe.model.backbone.num_classes and cache.info.num_classes > recipe.model.backbone.num_classes:
        raise TrainingError(f"the data has {cache.info.num_classes} classes but the model "
                            f"{recipe.model.backbone.num_classes}; set model.backbone.num_classes")
    return cache


class Trainer:
    """The live state of one run, for the CLI, experiments and your own code alike:

        trainer = Trainer(recipe, "runs/x")                # or resume=True to continue the folder
        trainer.fit()                                      # to recipe.train.max_steps
        trainer.fit([lambda tr, ev: ev.kind == "log" and ev.row["loss"] < 0.1])   # early stop
        stats = trainer.step()                             # or drive it step by step

    Every path goes through `step`, so the LR schedule, EMA, non-finite stop, metrics rows,
    checkpoints and grids apply to everyone. `global_step` counts the optimizer steps taken.

    `progress` (rank 0): True, a live bar on a terminal and plain lines otherwise (a log file);
    "lines", plain lines always; False, nothing. Shown, a session opens with a header line."""

    def __init__(self, recipe: Recipe, out_dir: str | Path, d: Dist | None = None, *, resume: bool = False,
                 progress: bool | Literal["lines"] = True, console: Any = None, init_from: str | Path | None = None,
                 keep_classes: bool = True):
        d = d or Dist()
        self.recipe, self.out_dir, self.d, self.progress, self.console = recipe, Path(out_dir), d, progress, console
        self._log: MetricsLog | None = None
        self._progress: Progress | None = None
        self._t0 = time.perf_counter()
        self._stop_requested = False
        self._host_group = host_group(d)  # where the ranks agree on a signal stop
        self.last_grid: Path | None = None
        self._lock = ExitStack()  # held until close(): one writer per run folder, before anything is written
        self._lock.enter_context(rank0_lock(self.out_dir, d))
        try:
            self._setup(resume, init_from, keep_classes)
        except BaseException:
            self._lock.close()
            raise

    def _setup(self, resume: bool, init_from: str | Path | None, keep_classes: bool) -> None:
        recipe, d = self.recipe, self.d
        self.scores = TrainingScores(recipe, d.device) if recipe.train.eval_every else None  # checked before the data
        self.cache = open_data(recipe, d)
        self.parts = parallel.build(recipe, d)
        self.net = self.parts.net
        self.global_step, self.lr, self.last_ckpt, self.last_loss = 0, 0.0, None, float("nan")
        self.window = Window(d)
        self.halted = torch.zeros((), device=d.device)  # 1 from the first non-finite step on
        self.bad = torch.full((2,), float("nan"), device=d.device)  # (its step, its loss)
        self.resumed, self.changes = resume, {}
        if d.main:  # the folder is locked: temp files are what a killed writer left
            checkpoint.remove_stale_temps(self.out_dir / checkpointing.CKPT_DIR)
        if resume:
            self._resume()
        else:
            checkpointing.check_fresh(self.out_dir)
            if init_from is not None:  # a fresh run only: a resumed one continues from its own checkpoint
                finetune.initialise(self.parts, init_from, keep_classes=keep_classes)
        self.stream = self._open_stream()  # after a resume: it starts at the step the run continues from
        self.start_step = self.global_step

    def _resume(self) -> None:
        self.last_ckpt, ckpt = checkpointing.restore(self.out_dir, self.recipe, self.parts)
        self.global_step = int(ckpt["step"])
        self.window.load(ckpt.get("metrics_window"))
        self.changes = checkpointing.recipe_changes(checkpoint.run_recipe(self.out_dir), self.recipe)

    def _begin_session(self) -> None:
        """The session's first writes (rank 0), made when training starts, so that a Trainer only
        opened (a resume refused as finished, say) changes nothing in the folder."""
        if not self.d.main:
            return
        if self.resumed:
            checkpointing.forget_metrics_after(self.out_dir / "metrics.jsonl", self.global_step)  # about to redo them
            if self.changes:
                append_history(self.out_dir, self.global_step, self.changes)
        with atomic_write(self.out_dir / "recipe.json", text=True) as f:
            f.write(json.dumps(to_dict(self.recipe), indent=2))

    # ------------------------------------------------------------------ data
    def _open_stream(self) -> BatchStream:
        tc, dc = self.recipe.train, self.recipe.data
        subset = (~held_out(len(self.cache.labels), dc.holdout)).nonzero().flatten() if dc.holdout else None
        return BatchStream(self.cache.images, self.cache.labels, seed=tc.seed, global_batch=tc.global_batch,
                           grad_accum=tc.grad_accum, rank=self.d.rank, world=self.d.world, flip=dc.flip,
                           balance_classes=dc.balance_classes, device=self.d.device, start_step=self.global_step,
                           num_workers=tc.num_workers, subset=subset)

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ one step
    def _gradients(self) -> dict[str, torch.Tensor]:
        """Forward and backward of this step's micro-batches; 0-d statistics, the loss averaged over ranks."""
        tc, p = self.recipe.train, self.parts
        sums: dict[str, torch.Tensor] = {}
        for micro in range(tc.grad_accum):
            mb = next(self.stream)
            gens = step_generators(tc.seed, mb.step, mb.positions, self.d.device)
            with parallel.gradient_sync(p.wrapped, micro == tc.grad_accum - 1), autocast(self.d.device, tc.precision):
                loss, parts = p.wrapped(mb.x, mb.y, gens)
                (loss / tc.grad_accum).backward()
            accumulate(sums, {**parts, "loss": loss}, tc.grad_accum)
        sums["loss"] = mean_across(self.d, sums["loss"])
        return sums

    def _optimizer_step(self) -> dict[str, torch.Tensor]:
        """One optimizer step; returns its statistics as 0-d device tensors (no host sync)."""
        tc, p = self.recipe.train, self.parts
        self.lr = lr_at(self.global_step, tc)
        for group in p.optimizer.param_groups:
            group["lr"] = self.lr
        stats = self._gradients()
        max_norm = tc.grad_clip if tc.grad_clip > 0 else float("inf")
        stats["grad_norm"] = parallel.full(torch.nn.utils.clip_grad_norm_(p.net.parameters(), max_norm)).float()
        self._record_nonfinite(stats["loss"], stats["grad_norm"])
        p.optimizer.found_inf = self.halted  # fused AdamW: skip the update (and its step count) when 1
        p.optimizer.step()
        p.optimizer.zero_grad(set_to_none=True)
        ema_update([[parallel.local(e) for e in ema] for ema in p.emas],
                   [parallel.local(q) for q in p.net.model.parameters()], tc.ema_decays, 1.0 - self.halted)
        self.global_step += 1
        return stats

    def _record_nonfinite(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        first = ~(torch.isfinite(loss) & torch.isfinite(grad_norm)) & (self.halted == 0)
        # new_full: a fill on the device, not a host-to-device copy
        self.bad.copy_(torch.where(first, torch.stack([loss.new_full((), self.global_step + 1.0), loss]), self.bad))
        self.halted.copy_(torch.maximum(self.halted, first.float()))

    def _stop_if_nonfinite(self) -> None:
        """Raise (after saving the last good step) if a step since the last check was non-finite."""
        if not self.halted.item():
            return
        bad_step, bad_loss = self.bad.tolist()
        self.global_step = int(bad_step) - 1  # no update was applied since: the state is that of this step
        self.window = Window(self.d)  # its sums hold the bad values
        if self.global_step > 0 and checkpointing.checkpoint_step(self.last_ckpt) != self.global_step:
            self._save()
        raise TrainingError(f"loss is {bad_loss} at step {int(bad_step)} (or its gradient is not finite); "
                            f"stopped without applying it. Last good checkpoint: "
                            f"{self.last_ckpt or 'none (failed before the first step)'}")

    # ------------------------------------------------------------------ checkpoints and samples
    def save_checkpoint(self) -> Path:
        """Save the current step, after the non-finite check: a step whose update was skipped is
        never saved under its own number (nor can its file push out the last good one)."""
        self._stop_if_nonfinite()
        return self._save()

    def _save(self) -> Path:
        state = checkpointing.run_state(self.recipe, self.parts, self.global_step, self.cache.info.count,
                                        self.window.state())  # collective under FSDP: every rank takes part
        self.last_ckpt = checkpointing.save(self.out_dir, state, self.d)
        return self.last_ckpt

    def ema_model(self, i: int = 0) -> nn.Module | None:
        """EMA `i` (of train.ema_decays) as an eval model on rank 0; None elsewhere (a collective under FSDP)."""
        state = parallel.ema_state(self.parts, i)
        return model_from_state(self.recipe.model, state, f"EMA {i}", self.d.device) if self.d.main else None

    @torch.no_grad()
    def sample_grid(self) -> Path | None:
        """Samples of the first EMA as a PNG grid, written by rank 0 (every rank must call it under FSDP)."""
        from pixdiff.data.grid import save_grid
        from pixdiff.runtime.rng import balanced_labels, seed_generators

        ema = self.ema_model()
        if ema is None:
            return None
        n, classes = self.recipe.sample.grid_images, self._label_classes()
        y = balanced_labels(n, classes, device=self.d.device)
        with autocast(self.d.device, self.recipe.train.precision):
            x = sample_batch(ema, self.recipe, y, seed_generators(range(n), self.d.device))
        by_class = 0 < classes <= 12 and n % classes == 0  # then column k holds class k
        names = self.cache.info.class_names[:classes] if by_class else ()
        grid = save_grid(x, self.out_dir / SAMPLES_DIR / f"step_{self.global_step:08d}.png",
                         nrow=classes if by_class else None, columns=names)
        if self._log is not None:
            self._log.image(self.global_step, grid)
        return grid

    def _label_classes(self) -> int:
        """The classes samples are drawn from: the data's (a model may have more rows); 0: unconditional."""
        return self.cache.info.num_classes if self.recipe.model.backbone.num_classes else 0

    def eval_scores(self) -> dict[str, float]:
        """train.eval_every's FD and KID of the first EMA (`train.scores`) on rank 0; {} elsewhere, and
        when its samples are NaN or flat (one line says so). Every rank must call it under FSDP."""
        ema = self.ema_model()
        if ema is None or self.scores is None:
            return {}
        try:
            return self.scores(ema, self._label_classes())
        except OutputError as e:
            self._progress.say(f"eval at step {self.global_step} failed, no scores logged: {e}")
            return {}

    # ------------------------------------------------------------------ driver
    def step(self, callbacks: Sequence[Callback] = ()) -> dict[str, torch.Tensor]:
        """One optimizer step, then whatever the recipe schedules at it (a metrics row, with the
        train.eval_every scores when due; a checkpoint; a sample grid; each after the non-finite
        check) and the callbacks' events. Returns the step's statistics as 0-d device tensors;
        reading one waits for the step."""
        if self._log is None:
            self._open_logs()
        stats = self._optimizer_step()
        self.window.add(stats)
        tc, s = self.recipe.train, self.global_step
        if is_log_step(s, tc):
            self._stop_if_nonfinite()
            row = {**self.window.row(s, self.lr, tc.global_batch), "time_s": round(time.perf_counter() - self._t0, 3)}
            if self.scores is not None and self.scores.due(s):  # eval_every is a multiple of log_every
                row.update(self.eval_scores())
                self.window.restart_clock()
            self._log.write(row)
            self._progress.update(s, row)
            self.last_loss = row["loss"]
            self._emit(callbacks, Event("log", s, row=row))
        if s % tc.ckpt_every == 0 and s != tc.max_steps:
            self._emit(callbacks, Event("checkpoint", s, path=self.save_checkpoint()))
        if tc.sample_every > 0 and s % tc.sample_every == 0 and s != tc.max_steps:
            self._stop_if_nonfinite()
            self.last_grid = self.sample_grid()
            self._emit(callbacks, Event("sample", s, path=self.last_grid))
        self._emit(callbacks, Event("step", s, stats=stats))
        return stats

    def fit(self, callbacks: Sequence[Callback] = (), *, max_steps: int | None = None) -> TrainResult:
        """Train to `max_steps` (default: recipe.train.max_steps) or until a callback returns True,
        then save a final checkpoint and grid; the data workers and logs are closed on the way out."""
        target = self.recipe.train.max_steps if max_steps is None else max_steps
        try:
            with StopSignals() as signals:
                if self._log is None:
                    self._open_logs()
                stopped_by = 0
                while self.global_step < target and not self._stop_requested and not stopped_by:
                    self.step(callbacks)
                    stopped_by = max_across(self.d, signals.received, self._host_group)  # the same on every rank
                return self._finish(callbacks, stopped_by)
        finally:
            self.close()

    def _finish(self, callbacks: Sequence[Callback], stopped_by: int = 0) -> TrainResult:
        self._stop_if_nonfinite()
        if checkpointing.checkpoint_step(self.last_ckpt) != self.global_step:
            self.save_checkpoint()
        if self.recipe.train.sample_every > 0 and not stopped_by:  # a stop is in a hurry: no grid
            self.last_grid = self.sample_grid()
        self.close()
        if self.d.main:
            plot_loss(self.out_dir / "metrics.jsonl", self.out_dir / "loss.png")
        barrier(self.d)
        self._emit(callbacks, Event("end", self.global_step, path=self.last_ckpt))
        return TrainResult(self.out_dir, self.global_step, self.last_loss, time.perf_counter() - self._t0,
                           self.last_ckpt, self.last_grid, self.d.main, stopped_by, self.start_step)

    def _open_logs(self) -> None:
        tc, d = self.recipe.train, self.d
        self._begin_session()
        self._t0 = time.perf_counter()
        self._log = MetricsLog(self.out_dir, main=d.main, tc=tc, config=to_dict(self.recipe),
                               resumed_at=self.global_step + 1 if self.global_step else None).__enter__()
        self._progress = Progress(tc.max_steps, self.global_step, mode=self._progress_mode(), console=self.console)
        self._progress.say(self.header())
        for key, (old, new) in self.changes.items():
            self._progress.say(f"resume: {show_change(key, old, new)}")
        self._progress.__enter__()

    def _progress_mode(self) -> str:
        if not self.d.main or self.progress is False:
            return "off"
        return "bar" if self.progress is True and sys.stdout.isatty() else "lines"

    def header(self) -> str:
        """One line on what is about to train: where, from which step, on what, with how much."""
        r, info = self.recipe, self.cache.info
        start = f"resumed from step {self.global_step}" if self.global_step else "new run"
        dtype = "bf16 autocast" if self.d.device.type == "cuda" and r.train.precision == "bf16" else "fp32"
        params = sum(p.numel() for p in self.net.model.parameters())
        return (f"train {self.out_dir} ({start}, to step {r.train.max_steps}): {self.d.device} x {self.d.world}, "
                f"{dtype}, {params:,} parameters, data {r.data.source} ({info.count:,} images, {r.resolution} px)")

    def _emit(self, callbacks: Sequence[Callback], event: Event) -> None:
        for cb in callbacks:
            if cb(self, event):
                self._stop_requested = True

    def close(self) -> None:
        """Stop the data stream's workers, close the logs and release the folder (idempotent)."""
        self.stream.close()
        if self._log is not None:
            self._progress.__exit__(None, None, None)
            self._log.__exit__(None, None, None)
            self._log = None
        self._lock.close()


def train(recipe: Recipe, out_dir: str | Path, *, resume: bool = False, device: str | None = None,
          progress: bool = True, init_from: str | Path | None = None, keep_classes: bool = True) -> TrainResult:
    """Train `recipe` into `out_dir` (see `pixdiff.train`); joins torchrun's process group.
    `init_from`: start from that checkpoint's weights (`pixdiff.train.finetune`). `progress=False`
    (the CLI's --no-progress) prints plain lines instead of the live bar."""
    from pixdiff.runtime.distributed import setup, teardown

    try:
        d = setup(device)
    except DistError as e:
        raise TrainingError(str(e)) from None
    trainer = None
    try:
        trainer = Trainer(recipe, Path(out_dir), d, resume=resume, progress=progress or "lines", init_from=init_from,
                          keep_classes=keep_classes)
        with trainer:
            if resume:
                check_unfinished(trainer.global_step, recipe)
            return trainer.fit()
    except OSError as e:
        step = trainer.global_step if trainer else 0
        raise WriteFailed(f"{describe(e)} at step {step}; {checkpointing.last_good(Path(out_dir))}") from None
    finally:
        teardown()
