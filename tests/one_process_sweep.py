"""`tts/main.py` run as a user runs it, in a process of its own, and what its jobs wrote read back: the tests of models
reused across the jobs of a one-process sweep (Hydra's basic launcher) on hf and on vLLM share these."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tts.store.readers import find_run_dirs

from tts.store.writer import RunDirectory

ROOT = Path(__file__).resolve().parents[1]
CACHE_EVENT = re.compile(r"model cache: (.+)$")


def run_main(args: list[str]) -> subprocess.CompletedProcess:
    """`python tts/main.py ARGS` offline, in this interpreter's environment (the vLLM lane's when it runs there)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "tts/main.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def jobs_by_seed(sweep: Path) -> dict[int, Path]:
    """The run directories of a sweep over `seed`, by seed (read from the `n<N>_seed<S>` folder of each)."""
    jobs = {}
    for run_dir in find_run_dirs(sweep):
        for part in run_dir.relative_to(sweep).parts:
            if found := re.fullmatch(r"n\d+_seed(\d+)", part):
                jobs[int(found.group(1))] = run_dir
    return jobs


def comparable_records(run_dir: Path) -> list[dict]:
    """What a job found and spent per problem (completions, their scores, compute), without timings and run ids."""
    [found] = find_run_dirs(run_dir)
    return [{k: getattr(r, k) for k in ("unique_id", "completions", "scores", "compute")}
            for r in RunDirectory(found).records()]


def cache_events(sweep: Path) -> list[str]:
    """The model cache's log lines ("built the policy", "reusing the prm", "closed the prm" ...) from the jobs' logs,
    in the order the jobs ran (each job logs to `main.log` in its run directory; the first line's timestamp orders
    them)."""
    logs = sorted((p.read_text() for p in sweep.rglob("main.log")), key=lambda text: text[:25])
    return [found.group(1) for text in logs for line in text.splitlines() if (found := CACHE_EVENT.search(line))]
