"""Stopping a run on a signal, at a step boundary, with a checkpoint.

SIGINT (Ctrl-C), SIGTERM (a scheduler's or torchrun's stop) and SIGUSR1 (SLURM's `--signal`
before a time limit, to requeue) only set a flag: the step under way finishes, `Trainer.fit`
saves a checkpoint and returns. Nothing happens inside the handler, so a signal that arrives
during a checkpoint's write cannot leave it half-written. A second SIGINT while the stop is
pending aborts at once (KeyboardInterrupt; atomic writes then remove their temp files).

Under torchrun a signal may reach some ranks only; the ranks agree after every step (`any_across`,
one int over gloo, no device sync) so that all of them stop at the same step.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
# the shell's convention for "ended by signal N" is 128 + N; SIGUSR1 asks for a requeue, not a failure
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGUSR1: 0}


class StopSignals:
    """`with StopSignals() as stop:` ... `stop.received` is the first stop signal's number (0: none).

    Handlers are installed only in the main thread (Python allows no other) and the previous
    ones are put back on exit, so a library caller's own handlers survive `fit`."""

    def __init__(self) -> None:
        self.received = 0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.received and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: do not wait for the step
        self.received = self.received or signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self._previous.items():  # None: a handler not set from Python, i.e. the default
            signal.signal(sig, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name
