"""Hard wall-clock bounds for sympy / math_verify work, valid in any thread and any process.

``signal.alarm`` only works on the main thread of the main interpreter, and sympy can spend minutes inside C code
(big-integer powers) where no Python-level check runs. So the symbolic work runs in a *separate OS process*
(`SymbolicWorker`), started with ``subprocess.Popen([sys.executable, "-m", "tts.grading.worker"])`` -- not
``multiprocessing``, whose daemonic pool workers (joblib/loky, submitit, Hydra launchers) may not have children.
The parent talks to it over its stdin/stdout pipes, one JSON line per request and per result, and waits for each
result with ``select`` and a deadline; when the deadline passes it kills the worker (SIGKILL), switches to a standby
process (started in the background once the item has used half of its time, so a kill costs no start-up wait) and
reports a timeout for that item. Nothing here needs the main thread.

Requests are batched: the parent sends a list of items in one line and the worker streams back one line per item,
so a batch of thousands costs one round trip plus the work, while every *item* still has its own deadline (the
items after a timed-out one are resent to the new worker).

The worker limits its own address space (``RLIMIT_AS``, default 4 GiB) so that an answer like ``10^{10^{10}}``
fails with ``MemoryError`` instead of exhausting the machine before the deadline.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from enum import Enum, auto
from typing import Any, NamedTuple

__all__ = ["SymbolicWorker", "Outcome", "ItemResult"]


class Outcome(Enum):
    """How one item of a batch ended."""

    DONE = auto()  # the op returned: `ItemResult.value` is its result
    TIMED_OUT = auto()  # it ran out of time, and the worker was killed
    FAILED = auto()  # it failed for lack of resources (MemoryError under the address-space cap, RecursionError)
    NOT_TRIED = auto()  # the replacement of a killed worker was still loading when the item's time was up


class ItemResult(NamedTuple):
    outcome: Outcome
    value: Any = None  # the op's result when `outcome` is DONE


_STARTUP_TIMEOUT = 120.0
_LIVE: weakref.WeakSet[SymbolicWorker] = weakref.WeakSet()


def _kill_all() -> None:
    for w in list(_LIVE):
        w.close()


atexit.register(_kill_all)


class _Child:
    """One worker process and its read buffer."""

    def __init__(self, memory_limit_bytes: int):
        pkg_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["TTS_GRADING_MEMORY_LIMIT"] = str(memory_limit_bytes)
        env["TTS_GRADING_PARENT_PID"] = str(os.getpid())
        # PR_SET_PDEATHSIG fires when the *thread* that started the child ends, not the process: only ask for it
        # when the main thread starts the worker (the watchdog covers the other cases).
        env["TTS_GRADING_DEATHSIG"] = "1" if threading.current_thread() is threading.main_thread() else "0"
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "tts.grading.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
        self.buf = b""
        self.ready = False
        self.started = time.monotonic()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, deadline: float | None = None) -> bool:
        """Wait until the worker has loaded (at most until ``deadline``: then ``False``, and it keeps loading)."""
        if self.ready:
            return True
        give_up = self.started + _STARTUP_TIMEOUT
        line = self.readline(give_up if deadline is None else min(deadline, give_up))
        if line is None and self.alive() and time.monotonic() < give_up:
            return False
        if line is None or json.loads(line).get("ready") is not True:
            self.kill()
            raise RuntimeError("tts.grading worker failed to start")
        self.ready = True
        return True

    def readline(self, deadline: float) -> bytes | None:
        """One line from the worker, or ``None`` at the deadline / if the worker died."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line, self.buf = self.buf[:nl], self.buf[nl + 1 :]
                return line
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None  # EOF: the worker died (e.g. killed by the OS)
            self.buf += chunk

    def send(self, payload: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(payload)
        self.proc.stdin.flush()

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):  # killed, not yet reaped: the OS reaps it later
            self.proc.wait(timeout=5)
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()


class SymbolicWorker:
    """A persistent child process running `tts.grading.symbolic`, with per-item wall-clock deadlines.

    When an item has used half of its time, a *standby* process starts loading in the background, so that a kill
    at the deadline swaps it in at once instead of waiting ~1-2 s for sympy and math_verify to import. Thread-safe
    (one lock around each batch). `restarts` counts the kills after a timeout."""

    def __init__(self, memory_limit_bytes: int = 4 << 30):
        self.memory_limit_bytes = memory_limit_bytes
        self._cur: _Child | None = None
        self._spare: _Child | None = None
        self._lock = threading.Lock()
        self.restarts = 0
        self.calls = 0
        _LIVE.add(self)

    # -- process management -------------------------------------------------------------------------------------
    def _ensure_ready(self, deadline: float | None = None) -> _Child | None:
        """The current worker once it is ready; ``None`` if a replacement is still loading at ``deadline``."""
        if self._cur is None or not self._cur.alive():
            if self._cur is not None:
                self._cur.kill()
            self._cur = self._take_spare() or _Child(self.memory_limit_bytes)
        return self._cur if self._cur.wait_ready(deadline) else None

    def _take_spare(self) -> _Child | None:
        spare, self._spare = self._spare, None
        if spare is not None and not spare.alive():
            spare.kill()
            return None
        return spare

    def _replace_after_kill(self) -> None:
        """Kill the current process and promote the standby (or start a new process)."""
        if self._cur is not None:
            self._cur.kill()
        self._cur = self._take_spare() or _Child(self.memory_limit_bytes)

    def _kill_all_children(self) -> None:
        for c in (self._cur, self._spare):
            if c is not None:
                c.kill()
        self._cur = self._spare = None

    def close(self) -> None:
        with self._lock:
            self._kill_all_children()

    def start(self) -> None:
        """Start the worker now and wait until it is ready (optional: the first symbolic call starts it)."""
        with self._lock:
            self._ensure_ready()

    @property
    def pid(self) -> int | None:
        """Process id of the current worker (``None`` before the first start)."""
        return None if self._cur is None else self._cur.proc.pid

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self._kill_all_children()
        except Exception:  # noqa: BLE001 - __del__ may run at interpreter shutdown, when anything can fail
            pass

    def run(
        self, op: str, items: Sequence[Any], timeout: float, on_progress: Callable[[int, Any], None] | None = None
    ) -> list[ItemResult]:
        """Run ``op`` on each item; each item gets ``timeout`` seconds. Returns one `ItemResult` per item, in order.

        An op may report progress on an item before its result (``eq`` reports the two keys before it calls
        math_verify); ``on_progress(index, payload)`` receives it, so after a timeout the caller knows which phase
        was slow."""
        results = [ItemResult(Outcome.NOT_TRIED)] * len(items)
        with self._lock:
            i = 0
            while i < len(items):
                # After a kill, waiting for the replacement to load counts against the next item's bound (the
                # first start of all does not: it is the run's set-up, not a grading call).
                child = self._ensure_ready(time.monotonic() + timeout if self.restarts else None)
                if child is None:
                    i += 1  # this item stays NOT_TRIED
                    continue
                pending = list(range(i, len(items)))
                payload = json.dumps({"op": op, "items": [items[j] for j in pending]}) + "\n"
                try:
                    child.send(payload.encode())
                except (BrokenPipeError, OSError):
                    child.kill()
                    self._cur = None
                    continue
                self.calls += 1
                for j in pending:
                    start = time.monotonic()
                    deadline, halfway = start + timeout, start + timeout / 2
                    msg: Any = None
                    while True:
                        line = child.readline(deadline if self._spare is not None else min(deadline, halfway))
                        if line is None:
                            if self._spare is None and time.monotonic() < deadline and child.alive():
                                # this item is slow: get a standby process loading now, so that a kill at the
                                # deadline does not also cost a start-up
                                self._spare = _Child(self.memory_limit_bytes)
                                continue
                            break
                        msg = json.loads(line)
                        if "p" not in msg:
                            break
                        if on_progress is not None:
                            on_progress(j, msg["p"])
                    if line is None:
                        # timed out (or died): kill, mark this item, resend the rest to the next process
                        self._replace_after_kill()
                        self.restarts += 1
                        results[j] = ItemResult(Outcome.TIMED_OUT)
                        i = j + 1
                        break
                    results[j] = ItemResult(Outcome.DONE, msg["r"]) if msg.get("ok") else ItemResult(Outcome.FAILED)
                    i = j + 1
        return results


# -- worker side ---------------------------------------------------------------------------------------------------
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child process
    """Exit when the parent process dies, however it dies (SIGKILL included): the kernel's ``PR_SET_PDEATHSIG``
    on Linux when the parent's main thread started us, and a watchdog thread polling the parent pid everywhere (it
    also catches a parent that died before the ``prctl``). A worker busy in C code holds the GIL, which the watchdog
    waits for; the kernel signal does not."""
    parent = int(os.environ.get("TTS_GRADING_PARENT_PID", "0") or 0)
    if not parent:
        return
    if os.environ.get("TTS_GRADING_DEATHSIG") == "1" and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes
            import signal

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)

    def watch() -> None:
        while True:
            time.sleep(0.25)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _serve() -> None:  # pragma: no cover - runs in the child process
    _die_with_parent()
    limit = int(os.environ.get("TTS_GRADING_MEMORY_LIMIT", "0") or 0)
    if limit > 0:
        with contextlib.suppress(ImportError, ValueError, OSError):
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # Keep fd 1 for the protocol; anything the libraries print goes to stderr.
    proto = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    import logging

    logging.disable(logging.CRITICAL)
    import warnings

    warnings.filterwarnings("ignore")

    import tts.grading.symbolic as symbolic  # the module itself: importing the package name would be a circle

    def progress(payload: Any) -> None:
        proto.write(json.dumps({"p": payload}).encode() + b"\n")

    def eq(item: Sequence[Any]) -> list[Any]:  # [pred_norm, gold_norm, pred_key, gold_key]; the keys may be left out
        pred, gold, pred_key, gold_key = (*item, None, None)[:4]
        return list(symbolic.equivalent(pred, gold, pred_key, gold_key, progress=progress))

    ops: dict[str, Callable[..., Any]] = {
        "key": symbolic.safe_key,
        "eq": eq,
        "mv": lambda item: symbolic.plain_verify(*item),
    }
    # warm up the parser so the first timed item does not pay for ANTLR's start-up
    try:
        symbolic.canonical_key("\\frac{x}{2}")
        symbolic.equivalent("x+1", "1+x")
    except Exception:  # noqa: BLE001 - only a warm-up: a failure here costs time on the first item, nothing else
        pass
    proto.write(b'{"ready": true}\n')
    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline()
        if not line:
            return
        req = json.loads(line)
        fn = ops[req["op"]]
        for item in req["items"]:
            try:
                out = {"ok": True, "r": fn(item)}
            except BaseException:  # noqa: BLE001 - any failure of one item (MemoryError, RecursionError, ...) is its answer
                out = {"ok": False}
            try:
                data = json.dumps(out)
            except (TypeError, ValueError):
                data = '{"ok": false}'
            proto.write(data.encode() + b"\n")


if __name__ == "__main__":  # pragma: no cover
    _serve()
