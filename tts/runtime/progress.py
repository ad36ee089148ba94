"""Progress lines while a run generates: one every `progress_every` seconds, from a timer thread, on every backend."""

from __future__ import annotations

import logging
import threading
import time

from tqdm.auto import tqdm

log = logging.getLogger("tts.pipeline")


class Progress:
    """A log line every `every` seconds while generating, from a timer thread: it appears during a long backend call
    too, on every backend (the tqdm bar moves only when problems are saved). Tokens are those of the backend calls
    that have returned, plus what the call in progress has generated where the backend tells (`tokens_in_flight`)."""

    def __init__(self, total: int, policy, every: float) -> None:
        self.total, self.policy, self.every, self.done = total, policy, every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tts-progress", daemon=True)

    def __enter__(self) -> Progress:
        self.started, self.tokens = time.monotonic(), self.policy.stats.generated_tokens
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def add(self, count: int) -> None:
        self.done += count

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            log.info(self.line())

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        tokens = self.policy.stats.generated_tokens + getattr(self.policy, "tokens_in_flight", 0) - self.tokens
        done = self.done
        left = (
            tqdm.format_interval(elapsed / done * (self.total - done)) if done else "unknown until a problem is saved"
        )
        return (
            f"progress: {done}/{self.total} problems saved, {tokens} tokens generated "
            f"({tokens / max(elapsed, 1e-9):.1f} tokens/s), {tqdm.format_interval(elapsed)} elapsed, time left {left}"
        )
