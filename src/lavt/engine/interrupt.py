"""Stopping training cleanly: SIGINT (Ctrl-C) and SIGTERM (what cluster schedulers send before
preemption) are recorded, not acted on mid-step; the trainer finishes the optimizer step, saves a
checkpoint and raises :class:`lavt.errors.TrainingInterrupted`.

A second Ctrl-C aborts at once (the usual KeyboardInterrupt). Further SIGTERMs are ignored:
under torchrun or SLURM the launcher forwards the scheduler's SIGTERM to workers that already got
it, and that copy must not kill a worker in the middle of saving (the scheduler's SIGKILL after
its grace period remains the hard stop)."""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequests:
    """Context manager: while active, the first SIGINT / SIGTERM sets :attr:`signum`; then SIGINT
    gets its previous handler back (a second Ctrl-C raises KeyboardInterrupt) and SIGTERM stays
    recorded-only. Outside the main thread (where Python cannot install handlers) it does nothing."""

    def __init__(self, announce: bool = True) -> None:
        self.signum = 0
        self.announce = announce
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum:  # already stopping (a forwarded SIGTERM): nothing new to do
            return
        self.signum = signum
        if signal.SIGINT in self._previous:
            signal.signal(signal.SIGINT, self._previous.pop(signal.SIGINT))
        if self.announce:
            name = signal.Signals(signum).name
            again = " (Ctrl-C again aborts without saving)" if signum == signal.SIGINT else ""
            print(f"lavt: {name}: stopping after the current step to save a checkpoint{again}", file=sys.stderr,
                  flush=True)

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __exit__(self, *exc: object) -> None:
        self._restore()
