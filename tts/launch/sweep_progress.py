"""Hydra callback: a sweep says how far it is, `[k/K jobs done]`, with the time spent and an estimate of the time left.

    python tts/main.py -m strategy=beam,dvts n=4,16 seed=0,1
    ... [3/8 jobs done] 41 s elapsed, about 68 s left

Finished jobs are counted in `<sweep dir>/.sweep_progress` (one line per job, appended), so jobs that run in other
processes (joblib, SLURM) count too; the file is reset when a sweep starts. The estimate assumes the remaining jobs take
as long as the finished ones did on average (jobs resumed from a previous attempt finish fast and make it optimistic).
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


def count_jobs(overrides: list[str]) -> int | None:
    """The number of jobs Hydra's basic sweeper makes of these overrides (its params first, then the command line's),
    or None when it cannot be told."""
    try:
        return len(sweep_combinations(list(overrides)))
    except (HydraException, ValueError):  # an interval sweep (optuna) has no fixed job count; a parse error is Hydra's
        return None


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def progress_line(done: int, total: int | None, elapsed: float) -> str:
    if not total:
        return f"[{done} jobs done] {format_seconds(elapsed)} elapsed"
    left = elapsed / done * (total - done) if done else float("nan")
    estimate = "done" if done >= total else f"about {format_seconds(left)} left"
    return f"[{done}/{total} jobs done] {format_seconds(elapsed)} elapsed, {estimate}"


class SweepProgress(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        basic = "BasicSweeper" in str(config.hydra.sweeper.get("_target_", ""))  # others choose their points as they go
        header = {"started": time.time(), "total": count_jobs(sweep_overrides(config)) if basic else None}
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
            line = progress_line(len(lines) - 1, header.get("total"), time.time() - header["started"])
        except (OSError, ValueError, IndexError, KeyError) as error:
            log.debug("sweep progress unavailable (%s)", error)
            return
        print(line, flush=True)
