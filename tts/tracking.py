"""Experiment tracking: Weights & Biases (offline by default) or nothing. Tracking never breaks a sweep.

    python tts/main.py n=16                                  # offline: <run dir>/wandb/offline-run-*, `wandb sync` later
    python tts/main.py n=16 logger.mode=online logger.entity=my-team
    python tts/main.py n=16 logger=none                      # no tracking

What a W&B run holds (so a researcher can browse a sweep without the run directories):
- name `<strategy>-n<n>-seed<seed>`, group `<model>/<prm>/<dataset>` (or logger.group), tags model, prm, dataset,
  strategy, n=<n>, seed=<seed> (+ logger.tags), job_type logger.job_type; the resolved config, minus anything that
  looks like a secret (keys named *key*, *token*, *secret*, *password*);
- summary metrics with `/` groups, exactly metrics.json: `acc/weighted@16`, `acc/maj@16`, `pass@16`, `tokens/generated`...;
- `curve/*`: accuracy and pass@K against `curve/K` (K = 1, 2, 4 .. n), W&B's line plot of accuracy vs budget;
- table `problems`: problem, gold, level, the n completions, their step scores and extracted answers, the three
  predictions and their correctness, pass@n, tokens;
- artifact `results-<run id>` of type `results`: results/ (index + batches), config.yaml, metrics.json, run_info.json,
  i.e. a run directory that `analysis.runs.load_wandb` downloads and reads like a local one.

Every W&B call is guarded: if W&B cannot start (no key, no server, bad entity) or fails mid-run, a warning says why and
the run carries on; the pipeline writes the run directory before tracking starts, so it is always complete.
With `mode=online`, a missing API key (neither WANDB_API_KEY nor a netrc entry) or a server that does not accept a TCP
connection within a few seconds is reported at once, without calling wandb.init, instead of hanging.

The W&B run id is derived from the run directory and the config hash (or set with logger.run_id) and used with
`resume=allow`: rerunning the same command (resume after a crash) continues the same W&B run rather than creating a
second one with the same name.
"""

from __future__ import annotations

import hashlib
import logging
import netrc
import os
import re
import socket
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.wandb.ai"
SECRET = re.compile(r"(api[_-]?key|token|secret|password|passwd|credential)", re.IGNORECASE)
RUN_FILES = ("config.yaml", "metrics.json", "run_info.json")  # beside the results files (RunDirectory.files())
AGGREGATIONS = ("naive", "weighted", "maj")


class Tracker:
    """No tracking (`logger=none`); also the interface the W&B tracker implements."""

    wants_records = False  # whether log_results needs the whole records (reading them back costs time on huge runs)

    def start(self, config: dict, run_dir: Path) -> None:
        pass

    def log_results(self, records: list[dict], metrics: dict, run_dir) -> None:
        pass

    def finish(self) -> None:
        pass


def scrub(tree):
    """The config without values whose key looks like a secret (they must never reach a W&B server)."""
    if isinstance(tree, dict):
        return {k: ("<redacted>" if SECRET.search(str(k)) and v not in (None, "") else scrub(v)) for k, v in tree.items()}
    if isinstance(tree, list):
        return [scrub(v) for v in tree]
    return tree


def run_id_for(config: dict, run_dir: Path) -> str:
    """A stable W&B id: the same run directory and config give the same id (W&B allows [A-Za-z0-9_-], <= 64 chars)."""
    from tts.results import config_hash, fingerprint_of

    digest = hashlib.sha256(f"{Path(run_dir).resolve()}|{config_hash(fingerprint_of(config))}".encode()).hexdigest()
    prefix = re.sub(r"[^A-Za-z0-9_-]", "-", f"{config['strategy']['name']}-n{config['n']}-s{config['seed']}")
    return f"{prefix[:40]}-{digest[:12]}"


def online_problem(base_url: Optional[str] = None, timeout: float = 3.0) -> Optional[str]:
    """Why an online run cannot start (no API key, server unreachable), or None. Takes at most `timeout` seconds."""
    base_url = base_url or os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL
    parsed = urlparse(base_url)
    host = parsed.hostname or ""
    has_key = bool(os.environ.get("WANDB_API_KEY"))
    if not has_key:
        try:
            has_key = netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
        except (FileNotFoundError, netrc.NetrcParseError, OSError):
            has_key = False
    if not has_key:
        return (f"no W&B API key for {host}: set WANDB_API_KEY or run `wandb login` (or use logger.mode=offline and "
                f"`wandb sync` later)")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as error:
        return (f"W&B server {base_url} unreachable within {timeout:.0f} s ({error}); use logger.mode=offline and "
                f"`wandb sync` later")
    return None


def _table(records: list[dict]):
    columns = ["unique_id", "level", "subject", "problem", "gold", "completions", "step_scores", "answers",
               "pred_naive", "pred_weighted", "pred_maj", "correct_naive", "correct_weighted", "correct_maj",
               "pass", "tokens"]
    rows = []
    for r in records:
        n = len(r["completions"])
        predictions, correct = r["scores"]["predictions"], r["scores"]["correct"]
        rows.append([
            r["unique_id"], r.get("level"), r.get("subject"), r["problem"], r["answer"],
            "\n\n-----\n\n".join(c["text"] for c in r["completions"]),
            "\n".join(" ".join(f"{s:.3f}" for s in c["step_scores"]) for c in r["completions"]),
            "\n".join(str(c.get("answer")) for c in r["completions"]),
            *(predictions.get(f"{agg}@{n}") for agg in AGGREGATIONS),
            *(correct.get(f"{agg}@{n}") for agg in AGGREGATIONS),
            r["scores"]["pass"].get(f"pass@{n}"),
            r.get("compute", {}).get("generated_tokens"),
        ])
    return columns, rows


def _curve(metrics: dict) -> list[dict]:
    """Per K: accuracy of each aggregation and pass@K, one W&B step each (plotted against curve/K)."""
    ks = sorted({int(k.rsplit("@", 1)[1]) for k in metrics if k.startswith("pass@")})
    return [{"curve/K": k, **{f"curve/acc_{agg}": metrics.get(f"acc/{agg}@{k}") for agg in AGGREGATIONS},
             "curve/pass": metrics.get(f"pass@{k}")} for k in ks]


class WandbTracker(Tracker):
    def __init__(self, logger_cfg) -> None:
        self.cfg = logger_cfg
        self.run = None
        self.run_dir: Optional[Path] = None

    @property
    def wants_records(self) -> bool:
        return self.run is not None and bool(self.cfg.log_table)

    def start(self, config: dict, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        if self.cfg.mode == "online":
            problem = online_problem(os.environ.get("WANDB_BASE_URL"))
            if problem:
                log.warning("W&B not started: %s. Continuing without tracking; results are in %s", problem, run_dir)
                return
        try:
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            model, prm, data, strategy = (config["model"]["name"], config["prm"]["name"], config["dataset"]["name"],
                                          config["strategy"]["name"])
            n, seed = config["n"], config["seed"]
            self.run = wandb.init(
                project=self.cfg.project,
                entity=self.cfg.entity,
                mode=self.cfg.mode,
                dir=str(run_dir),
                id=self.cfg.get("run_id") or run_id_for(config, run_dir),
                resume=self.cfg.get("resume", "allow"),
                config=scrub(config),
                name=f"{strategy}-n{n}-seed{seed}",
                group=self.cfg.group or f"{model}/{prm}/{data}",
                tags=list(dict.fromkeys([*self.cfg.tags, model, prm, data, strategy, f"n={n}", f"seed={seed}"])),
                job_type=self.cfg.job_type,
                settings=wandb.Settings(init_timeout=self.cfg.init_timeout),
                reinit="finish_previous",
            )
        except Exception as error:  # noqa: BLE001 - tracking must never stop a run
            log.warning("W&B could not start (%s: %s); continuing without tracking. Results are in %s",
                        type(error).__name__, error, run_dir)
            self.run = None

    def log_results(self, records: list[dict], metrics: dict, run_dir) -> None:
        """`run_dir`: the RunDirectory whose files go into the results artifact."""
        if self.run is None:
            return
        try:
            import wandb

            self.run.define_metric("curve/K")
            self.run.define_metric("curve/*", step_metric="curve/K")
            for point in _curve(metrics):
                self.run.log(point)
            if self.cfg.log_table and records:
                columns, rows = _table(records)
                self.run.log({"problems": wandb.Table(columns=columns, data=rows)})
            # summary last: it is what the runs table shows, and it must be metrics.json, not the last curve point
            self.run.summary.update(dict(metrics))
            if self.cfg.log_artifact and run_dir.files():
                artifact = wandb.Artifact(f"results-{self.run.id}", type="results",
                                          metadata={k: metrics[k] for k in metrics if "@" in k or "/" in k})
                for path in run_dir.files():
                    artifact.add_file(str(path), name=path.relative_to(run_dir.path).as_posix())
                for name in RUN_FILES:
                    if (run_dir.path / name).exists():
                        artifact.add_file(str(run_dir.path / name), name=name)
                self.run.log_artifact(artifact)
        except Exception as error:  # noqa: BLE001
            log.warning("W&B logging failed (%s: %s); local results in %s are complete",
                        type(error).__name__, error, run_dir.path)

    def finish(self) -> None:
        if self.run is None:
            return
        try:
            offline = self.run.settings.mode == "offline" if hasattr(self.run.settings, "mode") else False
            directory = getattr(self.run.settings, "sync_dir", None)
            self.run.finish()
            if offline and directory:
                log.info("W&B offline run written to %s; upload it with `wandb sync %s`", directory, directory)
        except Exception as error:  # noqa: BLE001
            log.warning("W&B finish failed (%s: %s)", type(error).__name__, error)
        self.run = None


def build_tracker(logger_cfg) -> Tracker:
    if logger_cfg.name == "none" or logger_cfg.mode == "disabled":
        return Tracker()
    return WandbTracker(logger_cfg)
