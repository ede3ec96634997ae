"""Progress of a long command, on stderr (stdout stays the command's result, e.g. its --json).

    with progress("sample", "images", enabled=not quiet and d.main) as on_progress:
        write_samples(..., on_progress=on_progress)

Library functions take `on_progress: OnProgress | None` and call it with (done, total) as work
completes; they know the total (a data source is listed, a reference found cached, inside them).
On a terminal this draws a rich bar; elsewhere (nohup, SLURM, CI logs) it prints a plain flushed
line every ~10% or 30 s, whichever comes first, and a final one, never carriage returns:

    sample: 128/256 images (50%), 12.3 images/s, ETA 10 s

Nothing shows until the first report, so work that turns out not to be needed (a cached
reference, an error before the first batch) leaves no line. Disabled (--quiet, ranks other than
0: the caller decides), `progress` yields None and the library stays silent.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO

OnProgress = Callable[[int, int], None]  # (done, total), called as work completes


@dataclass(frozen=True)
class Snapshot:
    """Where the work stands `seconds` after the tracker started."""

    done: int
    total: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def line(self, what: str, unit: str) -> str:
        """`what: done/total unit (pct%), rate unit/s, ETA t` (the total time once done)."""
        pct = f" ({100 * self.done // self.total}%)" if self.total else ""
        finished = self.done >= self.total
        when = f"{duration(self.seconds)}" if finished else (
            f"ETA {duration((self.total - self.done) / self.rate)}" if self.rate else "ETA ?")
        return f"{what}: {self.done}/{self.total} {unit}{pct}, {self.rate:.1f} {unit}/s, {when}"


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class Lines:
    """Plain lines for logs: one per `fraction` of the total or per `seconds`, and a final one."""

    def __init__(self, what: str, unit: str, stream: TextIO, fraction: float = 0.1, seconds: float = 30.0):
        self.what, self.unit, self.stream, self.fraction, self.seconds = what, unit, stream, fraction, seconds
        self.start = self.printed_at = time.monotonic()
        self.last: Snapshot | None = None  # the latest report
        self.shown: Snapshot | None = None  # the latest line printed

    def update(self, done: int, total: int) -> None:
        now = time.monotonic()
        self.last = Snapshot(done, total, now - self.start)
        step = max(1.0, self.fraction * total)
        crossed = done // step > (self.shown.done if self.shown else 0) // step  # into the next `fraction` of the total
        if done >= total or crossed or now - self.printed_at >= self.seconds:
            self._print(self.last, now)

    def close(self) -> None:  # where the work stopped, if that line is not out yet (an error, Ctrl-C)
        if self.last is not None and self.last != self.shown:
            self._print(self.last, time.monotonic())

    def _print(self, snap: Snapshot, now: float) -> None:
        print(snap.line(self.what, self.unit), file=self.stream, flush=True)
        self.shown, self.printed_at = snap, now


class Bar:
    """rich's bar on a terminal, in the look of the training bar; started at the first report.
    Redrawn at each report, not by rich's refresh thread, which would take the GIL from the work
    (from `bench`'s timed calls)."""

    def __init__(self, what: str, unit: str, stream: TextIO):
        self.what, self.unit, self.stream = what, unit, stream
        self.start = time.monotonic()
        self.bar: Any = None

    def update(self, done: int, total: int) -> None:
        if self.bar is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn(self.what), BarColumn(), MofNCompleteColumn(), TextColumn(self.unit),
                                TextColumn(f"{{task.fields[rate]:.1f}} {self.unit}/s"), TimeRemainingColumn(),
                                console=Console(file=self.stream), transient=False, auto_refresh=False)
            self.task = self.bar.add_task(self.what, total=total, rate=0.0)
            self.bar.start()
        rate = Snapshot(done, total, time.monotonic() - self.start).rate
        self.bar.update(self.task, completed=done, total=total, rate=rate, refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


@contextmanager
def progress(what: str, unit: str = "images", *, enabled: bool = True, stream: TextIO | None = None
             ) -> Iterator[OnProgress | None]:
    """An `on_progress(done, total)` callback reporting to `stream` (default stderr) while the
    block runs, or None when not `enabled`."""
    if not enabled:
        yield None
        return
    stream = sys.stderr if stream is None else stream
    tracker = Bar(what, unit, stream) if stream.isatty() else Lines(what, unit, stream)
    try:
        yield tracker.update
    finally:
        tracker.close()
