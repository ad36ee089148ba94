"""Hydra callback: a sweep says how far it is, `[k/K jobs done]`, with the time spent and an estimate of the time left.

    python tts/main.py -m strategy=beam,dvts n=4,16 seed=0,1
    ... [3/8 jobs done] 41 s elapsed, about 68 s left

Finished jobs are counted in `<sweep dir>/.sweep_progress` (one line per job, appended), so jobs that run in other
processes (joblib, SLURM) count too; the file is reset when a sweep starts. The estimate weighs each job by its `n`
(a job's compute grows with the completions it samples per problem): the time left is the time per unit of n spent
so far times the n still to run. A plain mean over jobs would be far too low for a sweep `n=4,16,64,256`, whose cheap
jobs run first. Jobs resumed from a previous attempt finish fast and still make it optimistic.
Registered in conf/config.yaml (`hydra.callbacks.sweep_progress`).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from tts.launch.sweep import sweep_combinations, sweep_overrides

log = logging.getLogger(__name__)
STATE = ".sweep_progress"


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


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


def progress_line(
    done: int, total: int | None, elapsed: float, weight_done: float = 0.0, weight_total: float = 0.0
) -> str:
    """`[done/total jobs done]`, the time spent and left; with job weights (their n), the time left is the time per
    unit of weight so far times the weight still to run, else the mean job's time times the jobs left."""
    if not total:
        return f"[{done} jobs done] {format_seconds(elapsed)} elapsed"
    if weight_done > 0 and weight_total >= weight_done:
        left = elapsed / weight_done * (weight_total - weight_done)
    else:
        left = elapsed / done * (total - done) if done else float("nan")
    estimate = "done" if done >= total else f"about {format_seconds(left)} left"
    return f"[{done}/{total} jobs done] {format_seconds(elapsed)} elapsed, {estimate}"


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
                handle.write(f"{config.hydra.job.num}\n")
            lines = path.read_text().splitlines()
            header = json.loads(lines[0])
            weights = header.get("weights") or []
            finished = [int(num) for num in lines[1:]]
            done_weight = sum(weights[num] for num in finished if 0 <= num < len(weights)) if weights else 0.0
            line = progress_line(
                len(finished), header.get("total"), time.time() - header["started"], done_weight, sum(weights)
            )
        except (OSError, ValueError, IndexError, KeyError) as error:
            log.debug("sweep progress unavailable (%s)", error)
            return
        print(line, flush=True)
