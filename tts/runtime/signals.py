"""Stop signals: SIGTERM and SIGINT keep every saved problem, say how many and where, and exit with 128 + the signal."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Optional


class Stopped(SystemExit):
    """The run was stopped by SIGTERM or SIGINT after keeping its saved problems; the exit status is 128 + signal."""


class StopSignal(BaseException):
    """Raised in the main thread by a stop signal; a BaseException so that no `except Exception` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class StopSignals:
    """SIGTERM and SIGINT raise `StopSignal` where the main thread is, except while a batch file is being written
    (`hold`): then it is raised once the file and its index line are in place. Outside the main thread (a handler
    cannot be set there) the signals keep their handlers."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.pending: Optional[int] = None
        self.holding = 0
        self.previous: dict = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            # a submitit job (SLURM launcher) has its own pre-emption handling: on USR2 it checkpoints and requeues
            # the job, and the SIGTERM SLURM then sends must not cut that handler short; the requeued job resumes
            signals = [n for n in self.SIGNALS if not (n == signal.SIGTERM and os.environ.get("SUBMITIT_EXECUTOR"))]
            self.previous = {number: signal.signal(number, self._handle) for number in signals}
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.holding:
            self.pending = signum
            return
        raise StopSignal(signum)

    @contextlib.contextmanager
    def hold(self):
        self.holding += 1
        try:
            yield
        finally:
            self.holding -= 1
        if not self.holding and self.pending is not None:
            raise StopSignal(self.pending)
