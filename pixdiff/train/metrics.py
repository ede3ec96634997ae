"""What a run reports: window means in metrics.jsonl (and TensorBoard), a progress bar, a loss plot.

A row covers the log window (previous logged step, step]: the mean of each per-step statistic
over those steps and the images per second they took. The sums stay on the device between rows,
so that logging costs one host sync per row, not per step.
"""

from __future__ import annotations

import json
import math
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import torch

from pixdiff.recipe import TrainConfig
from pixdiff.runtime.distributed import Dist, mean_across
from pixdiff.train.errors import TrainingError


def is_log_step(step: int, tc: TrainConfig) -> bool:
    """Steps that get a row: the first, every log_every-th and the last (a function of the step
    alone, so that a resumed run logs the rows the uninterrupted one did)."""
    return step == 1 or step % tc.log_every == 0 or step == tc.max_steps


def accumulate(sums: dict[str, torch.Tensor], stats: dict[str, torch.Tensor], divisor: int = 1) -> None:
    """sums[k] += stats[k] / divisor for each statistic, on the device (fp32)."""
    for k, v in stats.items():
        v = v.detach().float() / divisor
        sums[k] = sums[k] + v if k in sums else v


class Window:
    """Sums of per-step statistics (0-d device tensors) since the last row."""

    def __init__(self, d: Dist):
        self.d = d
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.timed_steps, self.t0 = 0, time.perf_counter()  # this process's steps: throughput

    def add(self, stats: dict[str, torch.Tensor]) -> None:
        accumulate(self.sums, stats)
        self.steps += 1
        self.timed_steps += 1

    def _global_sums(self) -> dict[str, torch.Tensor]:
        """Sums averaged over ranks (a collective): the loss is the same on every rank, other
        statistics (e.g. REPA's term) are per rank."""
        keys = sorted(self.sums)
        if not keys:
            return {}
        return dict(zip(keys, mean_across(self.d, torch.stack([self.sums[k] for k in keys])).unbind()))

    def row(self, step: int, lr: float, global_batch: int) -> dict[str, Any]:
        """The metrics.jsonl row of the window ending at `step` (one host sync), and a new window."""
        sums = self._global_sums()
        means = torch.stack(list(sums.values())).div(self.steps).tolist() if sums else []
        now = time.perf_counter()
        ips = self.timed_steps * global_batch / max(now - self.t0, 1e-9)
        row = {"step": step, **{k: round(v, 6) for k, v in zip(sums, means)}, "lr": lr, "img_per_s": round(ips, 2)}
        self.sums, self.steps, self.timed_steps, self.t0 = {}, 0, 0, now
        return row

    def restart_clock(self) -> None:
        """Start the window's throughput clock now (right after a row): the time the scores took
        between two steps is not training throughput."""
        self.t0 = time.perf_counter()

    def state(self) -> dict[str, Any]:
        """The unfinished window for a checkpoint (a collective, and a host sync)."""
        return {"steps": self.steps, "sums": {k: v.item() for k, v in self._global_sums().items()}}

    def load(self, state: dict[str, Any] | None) -> None:
        state = state or {"steps": 0, "sums": {}}
        self.steps = int(state["steps"])
        self.sums = {k: torch.tensor(v, dtype=torch.float32, device=self.d.device) for k, v in state["sums"].items()}


class MetricsLog:
    """metrics.jsonl rows (rank 0), mirrored as TensorBoard scalars under <run>/tensorboard and/or a
    Weights & Biases run (train.wandb; offline with WANDB_MODE=offline), sample grids as images."""

    def __init__(self, out_dir: Path, *, main: bool, tc: Any, resumed_at: int | None, config: dict | None = None):
        self.path, self.main, self.writer, self.wandb = out_dir / "metrics.jsonl", main, None, None
        if main and tc.tensorboard:
            SummaryWriter = _extra("torch.utils.tensorboard", "tensorboard").SummaryWriter
            # purge_step: a resumed run overwrites the events logged after its checkpoint
            self.writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=resumed_at)
        if main and tc.wandb:
            self.wandb = open_wandb(out_dir, tc.wandb_project, config, resumed_at)

    def write(self, row: dict[str, Any]) -> None:
        if not self.main:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        scalars = {k: v for k, v in row.items() if k not in ("step", "time_s")}
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(k, v, row["step"])
        if self.wandb is not None:
            self.wandb.log(scalars, step=row["step"])

    def image(self, step: int, path: Path) -> None:
        """A sample grid (a PNG written by rank 0) as an image at `step`."""
        if not self.main or path is None:
            return
        if self.writer is not None:
            import numpy as np
            from PIL import Image

            self.writer.add_image("samples", np.asarray(Image.open(path).convert("RGB")), step, dataformats="HWC")
        if self.wandb is not None:
            import wandb

            self.wandb.log({"samples": wandb.Image(str(path))}, step=step)

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()


def _extra(module: str, extra: str) -> Any:
    """An optional logger's module, or one line naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise TrainingError(f"train.{extra}=true needs the {extra} package: pip install 'pixdiff[{extra}]'") from None


def open_wandb(out_dir: Path, project: str, config: dict | None, resumed_at: int | None) -> Any:
    """A W&B run for this run folder: its id is kept in <run>/wandb_id, so a resumed run continues the
    same W&B run (W&B drops rows at steps it already has); its files go under <run>/wandb."""
    import secrets

    wandb = _extra("wandb", "wandb")
    id_file = out_dir / "wandb_id"
    run_id = id_file.read_text().strip() if resumed_at and id_file.is_file() else secrets.token_hex(8)
    id_file.write_text(run_id)
    try:
        return wandb.init(project=project, id=run_id, name=out_dir.name, dir=str(out_dir), config=config,
                          resume="allow")
    except Exception as e:  # noqa: BLE001 - no account, no network, a bad project name: one line
        reason = (str(e).strip().splitlines() or [""])[0][:160]
        raise TrainingError(f"train.wandb: W&B could not start ({type(e).__name__}: {reason}); "
                            "WANDB_MODE=offline logs without an account") from None


class Progress:
    """What rank 0 shows while training: "bar", a live rich bar (for a terminal); "lines", one plain
    flushed line per metrics row (for a log file or a pipe); "off", nothing."""

    def __init__(self, total: int, done: int, *, mode: Literal["bar", "lines", "off"], console: Any = None):
        self.mode, self.total, self.done, self.t0 = mode, total, done, time.perf_counter()
        if mode == "bar":
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[ips]:.1f} img/s"),
                TimeRemainingColumn(), console=console, transient=False,
            )
            # "-" until the first row: a loss of nan before any step would look like a diverged run
            self.task = self.progress.add_task("train", total=total, completed=done, loss="-", ips=0.0)

    def say(self, line: str) -> None:
        """A line before the bar starts (the run's header)."""
        if self.mode != "off":
            print(line, flush=True)

    def __enter__(self) -> Progress:
        if self.mode == "bar":
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.mode == "bar":
            self.progress.__exit__(*exc)

    def update(self, step: int, row: dict[str, Any]) -> None:
        if self.mode == "bar":
            self.progress.update(self.task, completed=step, loss=f"{row['loss']:.4f}", ips=row["img_per_s"])
        elif self.mode == "lines":
            print(progress_line(step, self.total, row, self.eta(step)), flush=True)

    def eta(self, step: int) -> float:
        """Seconds to `total` at this session's pace so far."""
        done = step - self.done
        return (time.perf_counter() - self.t0) / done * (self.total - step) if done > 0 else float("nan")


def progress_line(step: int, total: int, row: dict[str, Any], eta_s: float) -> str:
    eta = str(timedelta(seconds=round(eta_s))) if math.isfinite(eta_s) else "?"
    scores = f"  eval FD {row['eval/fd']:.2f} KID {row['eval/kid']:.4f}" if "eval/fd" in row else ""
    return (f"step {step}/{total}  loss {row['loss']:.4f}  lr {row['lr']:.3g}  {row['img_per_s']:.1f} img/s  "
            f"ETA {eta}{scores}")


def plot_loss(log_path: Path, out: Path) -> Path | None:
    if not log_path.exists():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pixdiff.runtime.atomic import atomic_write

    rows = [json.loads(r) for r in log_path.read_text().splitlines() if r]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1)
    ax.set(xlabel="step", ylabel="loss (window mean)", title="training loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_write(out) as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return out
