"""The grading worker process never outlives its parent, however the parent dies (SIGKILL included)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PARENT = textwrap.dedent(
    """
    import sys, threading, time
    from tts.grading.worker import SymbolicWorker

    w = SymbolicWorker()
    if sys.argv[1] == "thread":  # started from a thread that then ends: only the watchdog can see the parent die
        t = threading.Thread(target=w.start)
        t.start()
        t.join()
    else:
        w.start()
    if sys.argv[2] == "busy":  # the worker is inside a long sympy computation when the parent dies
        threading.Thread(target=w.run, args=("key", ["(x+1)^{100000}"], 600.0), daemon=True).start()
    print(w.pid, flush=True)
    time.sleep(600)
    """
)


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")  # a zombie has exited
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("start,state", [("main", "idle"), ("main", "busy"), ("thread", "busy")])
def test_worker_exits_when_its_parent_is_killed(start, state):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    parent = subprocess.Popen([sys.executable, "-c", PARENT, start, state], stdout=subprocess.PIPE, env=env,
                              text=True)
    try:
        worker_pid = int(parent.stdout.readline())
        time.sleep(0.5)
        assert not _gone(worker_pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 5.0
        while not _gone(worker_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(worker_pid), f"worker {worker_pid} outlived its parent by 5 s"
    finally:
        if parent.poll() is None:
            parent.kill()
