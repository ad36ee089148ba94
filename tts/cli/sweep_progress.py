"""Hydra callback: a sweep says how far it is, `[k/K jobs done]`, with the time spent and an estimate of the time left.

    python tts/main.py -m strategy=beam,dvts n=4,16 seed=0,1
    ... [3/8 jobs done] 00:41 elapsed, about 01:08 left

Finished jobs are counted in `<sweep dir>/.sweep_progress` (one line per job, appended), so jobs that run in other
processes (joblib, SLURM) count too; the file is reset when a sweep starts. A job's time is taken as a + b * n (a fixed
start-up and a part that grows with the completions it samples per problem), fitted to the jobs finished so far
(each job's time: from the previous finish, or the sweep's start). While every finished job has the same n the two
parts cannot be told apart, and the line gives the range between them: all start-up (the mean job's time for each job
left) and all proportional to n. A plain mean over jobs would say minutes where hours are left for a sweep
`n=4,16,64,256`, whose cheap jobs run first. Jobs resumed from a previous attempt finish fast and make it optimistic.
Registered in conf/config.yaml (`hydra.callbacks.sweep_progress`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from tqdm import tqdm

from tts.cli.sweep import sweep_combinations, sweep_overrides

log = logging.getLogger(__name__)
STATE = ".sweep_progress"


def job_weights(overrides: list[str], default_n: int) -> list[float] | None:
    """Each job's share of the sweep's compute, in the order Hydra numbers the jobs: its `n` (None: cannot be told)."""
    try:
        combinations = sweep_combinations(list(overrides))
    except (HydraException, ValueError):
        return None
    weights = []
    for combination in combinations:
        n = next((value for key, _, value in (o.partition("=") for o in combination) if key.lstrip("+~") == "n"), None)
        try:
            weights.append(float(n) if n is not None else float(default_n))
        except ValueError:
            return None
    return weights


def time_left(finished: list[tuple[float, float]], remaining: list[float]) -> tuple[float, float]:
    """(low, high) seconds left, from the finished jobs' (n, seconds) and the n of the jobs left; low == high once
    the finished jobs have two values of n to fit a + b * n to (a, b >= 0)."""
    if not finished:
        return float("nan"), float("nan")
    ns = np.array([n for n, _ in finished], dtype=float)
    seconds = np.array([t for _, t in finished], dtype=float)
    left = np.array(remaining, dtype=float)
    if np.ptp(ns) == 0:  # one n: start-up and per-n time cannot be told apart
        low = float(seconds.mean() * len(left))
        high = float(seconds.mean() / ns[0] * left.sum()) if ns[0] > 0 else low
        return min(low, high), max(low, high)
    b, a = np.polyfit(ns, seconds, 1)
    if b < 0:
        a, b = seconds.mean(), 0.0
    elif a < 0:
        a, b = 0.0, float((seconds * ns).sum() / (ns * ns).sum())
    estimate = float(a * len(left) + b * left.sum())
    return estimate, estimate


def progress_line(done: int, total: int | None, elapsed: float, left: tuple[float, float] | None = None) -> str:
    """`[done/total jobs done]`, the time spent and left (`left`: a range, or None for the mean job's time times the
    jobs left)."""
    if not total:
        return f"[{done} jobs done] {tqdm.format_interval(elapsed)} elapsed"
    if done >= total:
        estimate = "done"
    elif left is not None and math.isfinite(left[0]):
        low, high = left
        if high - low <= 0.1 * high:
            estimate = f"about {tqdm.format_interval(high)} left"
        else:
            estimate = (
                f"between {tqdm.format_interval(low)} and {tqdm.format_interval(high)} left (more jobs tell which)"
            )
    else:
        mean = elapsed / done * (total - done) if done else float("nan")
        estimate = f"about {tqdm.format_interval(mean)} left"
    return f"[{done}/{total} jobs done] {tqdm.format_interval(elapsed)} elapsed, {estimate}"


class SweepProgress(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        basic = "BasicSweeper" in str(config.hydra.sweeper.get("_target_", ""))  # others choose their points as they go
        overrides = sweep_overrides(config)
        weights = job_weights(overrides, int(config.get("n", 1))) if basic else None
        header = {"started": time.time(), "total": len(weights) if weights else None, "weights": weights}
        (sweep_dir / STATE).write_text(json.dumps(header) + "\n")

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        if str(config.hydra.mode) != "RunMode.MULTIRUN":
            return
        path = Path(str(config.hydra.sweep.dir)) / STATE
        try:
            with open(path, "a", encoding="utf-8") as handle:  # one short append per job: atomic across processes
                handle.write(f"{config.hydra.job.num} {time.time():.3f}\n")
            lines = path.read_text().splitlines()
            header = json.loads(lines[0])
            weights = header.get("weights") or []
            ends = sorted((float(end), int(num)) for num, end in (line.split() for line in lines[1:]))
            elapsed = time.time() - header["started"]
            left = None
            if weights:
                starts = [header["started"]] + [end for end, _ in ends[:-1]]
                finished = [(weights[num], end - start) for (end, num), start in zip(ends, starts)]
                done = {num for _, num in ends}
                left = time_left(finished, [w for num, w in enumerate(weights) if num not in done])
            line = progress_line(len(ends), header.get("total"), elapsed, left)
        except (OSError, ValueError, IndexError, KeyError) as error:
            log.debug("sweep progress unavailable (%s)", error)
            return
        print(line, flush=True)
