"""Hard wall-clock bounds for sympy / math_verify work, valid in any thread and any process.

``signal.alarm`` only works on the main thread of the main interpreter, and sympy can spend minutes inside C code
(big-integer powers) where no Python-level check runs. So the symbolic work runs in a *separate OS process*
(`SymbolicWorker`), started with ``subprocess.Popen([sys.executable, "-m", "tts.grading.worker"])`` -- not
``multiprocessing``, whose daemonic pool workers (joblib/loky, submitit, Hydra launchers) may not have children.
The parent talks to it over its stdin/stdout pipes, one JSON line per request and per result, and waits for each
result with ``select`` and a deadline; when the deadline passes it kills the worker (SIGKILL), starts a fresh one
and reports a timeout for that item. Nothing here needs the main thread.

Requests are batched: the parent sends a list of items in one line and the worker streams back one line per item,
so a batch of thousands costs one round trip plus the work, while every *item* still has its own deadline (the
items after a timed-out one are resent to the new worker).

The worker limits its own address space (``RLIMIT_AS``, default 4 GiB) so that an answer like ``10^{10^{10}}``
fails with ``MemoryError`` instead of exhausting the machine before the deadline.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time
import weakref
from typing import Any, Callable, List, Optional, Sequence, Tuple

__all__ = ["SymbolicWorker", "TIMEOUT", "ERROR"]

#: Result markers for items that did not finish.
TIMEOUT = "__timeout__"
ERROR = "__error__"

_STARTUP_TIMEOUT = 120.0
_LIVE: "weakref.WeakSet[SymbolicWorker]" = weakref.WeakSet()


def _kill_all() -> None:
    for w in list(_LIVE):
        w.close()


atexit.register(_kill_all)


class SymbolicWorker:
    """A persistent child process running `tts.grading.symbolic`, with per-item wall-clock deadlines.

    Thread-safe (one lock around each batch). `restarts` counts the kills after a timeout."""

    def __init__(self, memory_limit_bytes: int = 4 << 30):
        self.memory_limit_bytes = memory_limit_bytes
        self._proc: Optional[subprocess.Popen] = None
        self._buf = b""
        self._ready = False
        self._lock = threading.Lock()
        self.restarts = 0
        self.calls = 0
        _LIVE.add(self)

    # -- process management -------------------------------------------------------------------------------------
    def _spawn(self) -> None:
        """Start a worker without waiting for it (after a kill, the new one loads while the caller goes on)."""
        pkg_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["TTS_GRADING_MEMORY_LIMIT"] = str(self.memory_limit_bytes)
        env.setdefault("PYTHONHASHSEED", "0")
        self._proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "tts.grading.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
        self._buf = b""
        self._ready = False

    def _ensure_ready(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            self._kill()
            self._spawn()
        if self._ready:
            return
        line = self._readline(time.monotonic() + _STARTUP_TIMEOUT)
        if line is None or json.loads(line).get("ready") is not True:
            self._kill()
            raise RuntimeError("tts.grading worker failed to start")
        self._ready = True

    def _kill(self) -> None:
        p, self._proc = self._proc, None
        if p is None:
            return
        try:
            p.kill()
        except OSError:
            pass
        try:
            p.wait(timeout=5)
        except Exception:
            pass
        for f in (p.stdin, p.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass

    def close(self) -> None:
        with self._lock:
            self._kill()

    def start(self) -> None:
        """Start the worker now (optional: the first symbolic call starts it)."""
        with self._lock:
            self._ensure_ready()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self._kill()
        except Exception:
            pass

    # -- I/O ------------------------------------------------------------------------------------------------------
    def _readline(self, deadline: float) -> Optional[bytes]:
        """One line from the worker, or ``None`` at the deadline / if the worker died."""
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line, self._buf = self._buf[:nl], self._buf[nl + 1 :]
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
            self._buf += chunk

    def run(self, op: str, items: Sequence[Any], timeout: float) -> List[Any]:
        """Run ``op`` on each item; each item gets ``timeout`` seconds. Returns results in order, with
        `TIMEOUT` for items that ran out of time and `ERROR` for items that raised in the worker."""
        results: List[Any] = [None] * len(items)
        with self._lock:
            i = 0
            while i < len(items):
                self._ensure_ready()
                pending = list(range(i, len(items)))
                payload = json.dumps({"op": op, "items": [items[j] for j in pending]}) + "\n"
                try:
                    assert self._proc is not None and self._proc.stdin is not None
                    self._proc.stdin.write(payload.encode())
                    self._proc.stdin.flush()
                except (BrokenPipeError, OSError):
                    self._kill()
                    continue
                self.calls += 1
                for j in pending:
                    line = self._readline(time.monotonic() + timeout)
                    if line is None:
                        # timed out (or died): kill, mark this item, resend the rest to a new worker
                        self._kill()
                        self._spawn()
                        self.restarts += 1
                        results[j] = TIMEOUT
                        i = j + 1
                        break
                    msg = json.loads(line)
                    results[j] = msg["r"] if msg.get("ok") else ERROR
                    i = j + 1
        return results


# -- worker side ---------------------------------------------------------------------------------------------------
def _serve() -> None:  # pragma: no cover - runs in the child process
    limit = int(os.environ.get("TTS_GRADING_MEMORY_LIMIT", "0") or 0)
    if limit > 0:
        try:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ImportError, ValueError, OSError):
            pass
    # Keep fd 1 for the protocol; anything the libraries print goes to stderr.
    proto = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    import logging

    logging.disable(logging.CRITICAL)
    import warnings

    warnings.filterwarnings("ignore")

    from tts.grading import symbolic

    ops: dict[str, Callable[..., Any]] = {
        "key": lambda item: symbolic.canonical_key(item),
        "eq": lambda item: list(symbolic.equivalent(*item)),
    }
    # warm up the parser so the first timed item does not pay for ANTLR's start-up
    try:
        symbolic.canonical_key("\\frac{x}{2}")
        symbolic.equivalent("x+1", "1+x")
    except Exception:
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
            except BaseException:  # includes MemoryError, RecursionError
                out = {"ok": False}
            try:
                data = json.dumps(out)
            except (TypeError, ValueError):
                data = '{"ok": false}'
            proto.write(data.encode() + b"\n")


if __name__ == "__main__":  # pragma: no cover
    _serve()
