"""Experiment tracking: Weights & Biases (offline by default) or nothing. Tracking never breaks a sweep.

Every W&B call is guarded: if W&B cannot start (no key, no server, bad entity) or fails mid-run, a warning says why and
the run carries on; the local run directory is always written first and is the source of truth.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class Tracker:
    """No tracking (`logger=none`); also the interface the W&B tracker implements."""

    def start(self, config: dict, run_dir: Path) -> None:
        pass

    def log_results(self, records: list[dict], metrics: dict, results_path: Path) -> None:
        pass

    def finish(self) -> None:
        pass


def _table_rows(records: list[dict]):
    columns = ["unique_id", "level", "problem", "gold", "completions", "step_scores", "answers",
               "pred_naive", "pred_weighted", "pred_maj", "correct_naive", "correct_weighted", "correct_maj"]
    rows = []
    for r in records:
        n = len(r["completions"])
        rows.append([
            r["unique_id"], r.get("level"), r["problem"], r["answer"],
            "\n\n-----\n\n".join(c["text"] for c in r["completions"]),
            str([c["step_scores"] for c in r["completions"]]),
            str([c["answer"] for c in r["completions"]]),
            r["scores"]["predictions"][f"naive@{n}"], r["scores"]["predictions"][f"weighted@{n}"],
            r["scores"]["predictions"][f"maj@{n}"], r["scores"]["correct"][f"naive@{n}"],
            r["scores"]["correct"][f"weighted@{n}"], r["scores"]["correct"][f"maj@{n}"],
        ])
    return columns, rows


class WandbTracker(Tracker):
    def __init__(self, logger_cfg) -> None:
        self.cfg = logger_cfg
        self.run = None

    def start(self, config: dict, run_dir: Path) -> None:
        try:
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            model, prm, data, strategy = (config["model"]["name"], config["prm"]["name"], config["dataset"]["name"],
                                          config["strategy"]["name"])
            self.run = wandb.init(
                project=self.cfg.project,
                entity=self.cfg.entity,
                mode=self.cfg.mode,
                dir=str(run_dir),
                config=config,
                name=f"{strategy}-n{config['n']}-seed{config['seed']}",
                group=self.cfg.group or f"{model}/{prm}/{data}",
                tags=list(self.cfg.tags) + [model, prm, data, strategy, f"n={config['n']}", f"seed={config['seed']}"],
                job_type=self.cfg.job_type,
                settings=wandb.Settings(init_timeout=self.cfg.init_timeout),
                reinit="finish_previous",
            )
        except Exception as error:  # noqa: BLE001 - tracking must never stop a run
            log.warning("W&B could not start (%s: %s); continuing without tracking. Results are in %s",
                        type(error).__name__, error, run_dir)
            self.run = None

    def log_results(self, records: list[dict], metrics: dict, results_path: Path) -> None:
        if self.run is None:
            return
        try:
            import wandb

            for key, value in metrics.items():
                self.run.summary[key] = value
            if self.cfg.log_table and records:
                columns, rows = _table_rows(records)
                self.run.log({"problems": wandb.Table(columns=columns, data=rows)})
            if self.cfg.log_artifact and results_path.exists():
                artifact = wandb.Artifact(f"results-{self.run.id}", type="results")
                artifact.add_file(str(results_path))
                self.run.log_artifact(artifact)
        except Exception as error:  # noqa: BLE001
            log.warning("W&B logging failed (%s: %s); local results in %s are complete",
                        type(error).__name__, error, results_path.parent)

    def finish(self) -> None:
        if self.run is not None:
            try:
                self.run.finish()
            except Exception as error:  # noqa: BLE001
                log.warning("W&B finish failed (%s: %s)", type(error).__name__, error)
            self.run = None


def build_tracker(logger_cfg) -> Tracker:
    if logger_cfg.name == "none" or logger_cfg.mode == "disabled":
        return Tracker()
    return WandbTracker(logger_cfg)
