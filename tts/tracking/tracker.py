"""Experiment tracking: Weights & Biases (offline by default) or nothing. Tracking never breaks a sweep.

    python tts/main.py n=16                     # offline: <run dir>/wandb/offline-run-*, `wandb sync` later
    python tts/main.py n=16 logger.mode=online logger.entity=my-team
    python tts/main.py n=16 logger=none                      # no tracking

What a W&B run holds (so a researcher can browse a sweep without the run directories):
- name `<strategy>-n<n>-seed<seed>`, group `<model>/<prm>/<dataset>` (or logger.group), tags model, prm, dataset,
  strategy, n=<n>, seed=<seed> (+ logger.tags), job_type logger.job_type; the resolved config with credentials
  redacted (tts/config/redaction.py: environment secrets by value, `api_key`/`password`/... by name; settings such as
  `budget.max_tokens` stay visible). W&B's own record of the command line is redacted the same way;
- live progress, one history row per finished batch against `progress/problems_done`: the running accuracy at n
  (naive, weighted, majority), pass@n, tokens and tokens/s (tts/tracking/live.py); a resumed run continues the curves;
- summary metrics with `/` groups, exactly metrics.json: `acc/weighted@16`, `acc/maj@16`, `pass@16`,
`tokens/generated`...,
  plus `acc_at_n/{naive,weighted,maj,pass}` (the same figures at the run's own n: one key across a sweep, for plots vs
  n);
- `curve/*`: accuracy and pass@K against `curve/K` (K = 1, 2, 4 .. n), W&B's line plot of accuracy vs budget;
- artifact `results-<run id>` of type `results`: results/ (index + batches), config.yaml, metrics.json, run_info.json,
  i.e. a run directory that `analysis.runs.load_wandb` downloads and reads like a local one, and the tables
  `completions.table.json` (one row per completion, within `logger.table_budget`) and `problems.table.json` (one row
  per problem), see tts/tracking/tables.py. W&B refers to these files rather than copying them: one copy, and a rerun
  of a finished run logs nothing (docs/tracking.md). Its metadata is a small
  fixed summary (W&B refuses more than 100 keys; metrics.json holds them all).

Everything W&B writes stays in `<run dir>/wandb/` (tts/tracking/dirs.py).

Every W&B call is guarded: if W&B cannot start (no key, no server, bad entity) or fails mid-run, a warning says why and
the run carries on; the run directory is written whether or not tracking works.
With `mode=online`, a missing API key (neither WANDB_API_KEY nor a netrc entry) or a server that does not accept a TCP
connection within a few seconds is reported at once, without calling wandb.init, instead of hanging.

The W&B run id is derived from the run directory and the config hash (or set with logger.run_id) and used with
`resume=allow`: rerunning the same command (resume after a crash) continues the same W&B run rather than creating a
second one with the same name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import netrc
import os
import re
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Optional
from urllib.parse import urlparse

from tts.config.redaction import redact, redact_argv, redact_text
from tts.data.records import ProblemRecord, ProblemSummary
from tts.scoring import FOREIGN_PRM_METRIC, reported_aggregations
from tts.tracking.dirs import WandbDirs
from tts.tracking.live import RunningFigures
from tts.tracking.tables import (
    COMPLETION_COLUMNS,
    PROBLEM_COLUMNS,
    budgeted_rows,
    completion_rows,
    problem_row,
    wandb_table,
)

if TYPE_CHECKING:
    import wandb

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.wandb.ai"
RUN_FILES = ("config.yaml", "metrics.json", "run_info.json")  # beside the results files (RunDirectory.files())


class Tracker:
    """No tracking (`logger=none`); also the interface the W&B tracker implements."""

    @property
    def wants_records(self) -> bool:
        """Whether log_results needs the whole records (reading them back costs time on huge runs)."""
        return False

    def start(self, config: dict, run_dir: Path, records_done: Sequence[ProblemSummary] = (), total: int = 0) -> None:
        """`records_done`: the summaries of the problems a resumed run found on disk."""

    def log_batch(self, records: list[ProblemRecord]) -> None:
        pass

    def log_results(self, records: list[ProblemRecord], metrics: dict, run_dir) -> None:
        pass

    def finish(self) -> None:
        pass


def scrub(tree):
    """The config as W&B may show it: credentials redacted (see tts/config/redaction.py)."""
    return redact(tree)


def run_id_for(config: dict, run_dir: Path) -> str:
    """A stable W&B id: the same run directory and config give the same id (W&B allows [A-Za-z0-9_-], <= 64 chars)."""
    from tts.store.provenance import config_hash, fingerprint_of

    digest = hashlib.sha256(f"{Path(run_dir).resolve()}|{config_hash(fingerprint_of(config))}".encode()).hexdigest()
    name = redact_text(f"{config['strategy']['name']}-n{config['n']}-s{config['seed']}")
    prefix = re.sub(r"[^A-Za-z0-9_-]", "-", name)
    return f"{prefix[:40]}-{digest[:12]}"


LOGGED = "logged.json"  # in <run dir>/wandb/: what the last complete W&B logging of this run covered


def _logged_state(run_dir: Path, logger_cfg) -> Optional[dict]:
    """The results (the index's digest) and the logger settings a complete logging covers; None without results."""
    index = Path(run_dir) / "results" / "index.jsonl"
    if not index.exists():
        return None
    settings = {
        k: getattr(logger_cfg, k, None)
        for k in ("project", "entity", "mode", "group", "log_table", "log_artifact", "table_budget", "run_id")
    }
    settings["tags"] = list(getattr(logger_cfg, "tags", []) or [])
    # a digest of the settings, not the settings: a tag or group may hold a credential, and nothing writes one
    logger = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    return {"index_sha256": hashlib.sha256(index.read_bytes()).hexdigest(), "logger_sha256": logger}


def logged_already(run_dir: Path, logger_cfg) -> bool:
    """Whether a complete run's results were already logged with these settings: a rerun then logs nothing (it
    would add a second copy of every table and file to W&B's folder, and a rerun of a finished sweep is common)."""
    try:
        recorded = json.loads((Path(run_dir) / "wandb" / LOGGED).read_text())
    except (OSError, ValueError):
        return False
    return recorded == _logged_state(run_dir, logger_cfg)


def mark_logged(run_dir: Path, logger_cfg) -> None:
    state = _logged_state(run_dir, logger_cfg)
    if state is not None:
        (Path(run_dir) / "wandb").mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / "wandb" / LOGGED).write_text(json.dumps(state))


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
        return (
            f"no W&B API key for {host}: set WANDB_API_KEY or run `wandb login` (or use logger.mode=offline and "
            f"`wandb sync` later)"
        )
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as error:
        return (
            f"W&B server {base_url} unreachable within {timeout:.0f} s ({error}); use logger.mode=offline and "
            f"`wandb sync` later"
        )
    return None


def _curve(metrics: dict) -> list[dict]:
    """Per K: accuracy of each aggregation and pass@K, one W&B step each (plotted against curve/K)."""
    ks = sorted({int(k.rsplit("@", 1)[1]) for k in metrics if k.startswith("pass@")})
    return [
        {
            "curve/K": k,
            **{f"curve/acc_{agg}": metrics.get(f"acc/{agg}@{k}") for agg in reported_aggregations(metrics)},
            "curve/pass": metrics.get(f"pass@{k}"),
        }
        for k in ks
    ]


def artifact_metadata(config: dict, metrics: dict) -> dict:
    """The results artifact's metadata: the same few keys at every n (the full metrics are in its metrics.json)."""
    n = config["n"]
    return {
        "n": n,
        "seed": config["seed"],
        "strategy": config["strategy"]["name"],
        "model": config["model"]["name"],
        "prm": config["prm"]["name"],
        "dataset": config["dataset"]["name"],
        "problems": metrics.get("problems"),
        **{f"acc_{agg}": metrics.get(f"acc/{agg}@{n}") for agg in reported_aggregations(metrics)},
        "pass": metrics.get(f"pass@{n}"),
        "tokens_generated": metrics.get("tokens/generated"),
        **({FOREIGN_PRM_METRIC: metrics[FOREIGN_PRM_METRIC]} if FOREIGN_PRM_METRIC in metrics else {}),
    }


def at_own_n(metrics: dict, n: int) -> dict:
    """Summary keys that mean the same in every run of a sweep (`acc_at_n/weighted` = `acc/weighted@<its n>`), so one
    W&B panel can plot accuracy against `n` across the runs."""
    return {
        **{f"acc_at_n/{agg}": metrics.get(f"acc/{agg}@{n}") for agg in reported_aggregations(metrics)},
        "acc_at_n/pass": metrics.get(f"pass@{n}"),
    }


def table_parts(rows_per_problem: list[list], limit: int) -> list[list]:
    """Rows split into whole problems, at most `limit` rows per part (one part unless W&B's limit is exceeded)."""
    parts: list[list] = [[]]
    for rows in rows_per_problem:
        if parts[-1] and len(parts[-1]) + len(rows) > limit:
            parts.append([])
        parts[-1].extend(rows)
    return parts


@contextlib.contextmanager
def _row_limit(rows: int):
    """W&B cuts a logged table to `wandb.Table.MAX_ROWS` (10,000) rows with only a log warning; n=256 on MATH-500 has
    128,000 completions. Run tables are stored as artifacts, which hold up to `MAX_ARTIFACT_ROWS`, so raise the cut to
    the table's size while it is logged (table_parts keeps every table within that)."""
    import wandb

    original = wandb.Table.MAX_ROWS
    wandb.Table.MAX_ROWS = max(original, rows)
    try:
        yield
    finally:
        wandb.Table.MAX_ROWS = original


@contextlib.contextmanager
def _redacted_argv():
    """W&B records the command line in its run metadata (and the offline .wandb file): let it read a redacted one."""
    original = sys.argv
    sys.argv = redact_argv(original)
    try:
        yield
    finally:
        sys.argv = original


class WandbTracker(Tracker):
    def __init__(self, logger_cfg) -> None:
        self.cfg = logger_cfg
        self.run: Optional[wandb.Run] = None
        self.run_dir: Optional[Path] = None
        self.config: dict = {}
        self.dirs: Optional[WandbDirs] = None
        self.figures: Optional[RunningFigures] = None
        self._logged = (
            False  # the results were logged: finish() records it, so a rerun of the same results logs nothing
        )

    @property
    def wants_records(self) -> bool:
        return self.run is not None and bool(self.cfg.log_table)

    def start(self, config: dict, run_dir: Path, records_done: Sequence[ProblemSummary] = (), total: int = 0) -> None:
        self.run_dir = Path(run_dir)
        self._logged = False
        if total and len(records_done) >= total and logged_already(self.run_dir, logger_cfg=self.cfg):
            log.info(
                "W&B: nothing new since this run was logged (same results, same logger settings); not logged again"
            )
            return
        # what W&B is given of the config, everywhere (config, names, tags, artifact metadata): credentials redacted
        self.config = scrub(config)
        if self.cfg.mode == "online":
            problem = online_problem(os.environ.get("WANDB_BASE_URL"))
            if problem:
                log.warning("W&B not started: %s. Continuing without tracking; results are in %s", problem, run_dir)
                return
        try:
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            self.dirs = WandbDirs(self.run_dir / "wandb")
            self.dirs.enter()
            shown = self.config
            model, prm, data, strategy = (
                shown["model"]["name"],
                shown["prm"]["name"],
                shown["dataset"]["name"],
                shown["strategy"]["name"],
            )
            n, seed = shown["n"], shown["seed"]
            # every field W&B writes (into the offline .wandb file too) passes the same redaction as the config: a
            # credential from the environment given as a tag, group, project or name is never written
            fields = redact(
                {
                    "project": self.cfg.project,
                    "entity": self.cfg.entity,
                    "name": f"{strategy}-n{n}-seed{seed}",
                    "group": self.cfg.group or f"{model}/{prm}/{data}",
                    "tags": list(dict.fromkeys([*self.cfg.tags, model, prm, data, strategy, f"n={n}", f"seed={seed}"])),
                    "job_type": self.cfg.job_type,
                }
            )
            with _redacted_argv():
                self.run = wandb.init(
                    **fields,
                    mode=self.cfg.mode,
                    dir=str(run_dir),
                    id=self.cfg.run_id or run_id_for(config, run_dir),
                    resume=self.cfg.resume,
                    config=shown,
                    settings=wandb.Settings(init_timeout=self.cfg.init_timeout),
                    reinit="finish_previous",
                )
            sync_dir = getattr(self.run.settings, "sync_dir", None)
            if sync_dir:
                self.dirs.stage_in(Path(sync_dir) / "staging")
            self.run.define_metric("progress/problems_done")
            self.run.define_metric("progress/*", step_metric="progress/problems_done")
            self.figures = RunningFigures(n, total)
            if records_done:  # a resumed run: its curves continue from the problems already on disk
                self.figures.add(records_done, this_session=False)
                self.run.log(self.figures.row())
        except Exception as error:  # noqa: BLE001 - tracking must never stop a run
            log.warning(
                "W&B could not start (%s: %s); continuing without tracking. Results are in %s",
                type(error).__name__,
                error,
                run_dir,
            )
            self.run = None
            self._release()

    def log_batch(self, records: list[ProblemRecord]) -> None:
        if self.run is None or self.figures is None:
            return
        try:
            self.figures.add(records)
            self.run.log(self.figures.row())
        except Exception as error:  # noqa: BLE001 - tracking must never stop a run
            log.warning("W&B progress logging failed (%s: %s)", type(error).__name__, error)

    def log_results(self, records: list[ProblemRecord], metrics: dict, run_dir) -> None:
        """`run_dir`: the RunDirectory whose files go into the results artifact."""
        if self.run is None:
            return
        try:
            import wandb

            self.run.define_metric("curve/K")
            self.run.define_metric("curve/*", step_metric="curve/K")
            for point in _curve(metrics):
                self.run.log(point)
            # summary first among the results: it is what the runs table shows, and it must be metrics.json
            self.run.summary.update(dict(metrics))
            self.run.summary.update(at_own_n(metrics, self.config["n"]))
            with_tables = bool(self.cfg.log_table and records)
            with_results = bool(self.cfg.log_artifact and run_dir.files())
            if with_tables or with_results:
                kind = "results" if with_results else "tables"  # analysis reads only `results` artifacts as runs
                artifact = wandb.Artifact(
                    f"{kind}-{self.run.id}", type=kind, metadata=artifact_metadata(self.config, metrics)
                )
                if with_tables:
                    for name, path in self._write_tables(records, run_dir, artifact).items():
                        artifact.add_file(str(path), name=f"{name}.table.json", policy="immutable")
                if with_results:
                    # the results files are never rewritten once a run is complete: W&B reads them from the run
                    # directory when it uploads instead of keeping a copy (policy "immutable"); the small run files
                    # are copied
                    for path in run_dir.files():
                        name = path.relative_to(run_dir.path).as_posix()
                        artifact.add_file(str(path), name=name, policy="immutable")
                    for name in RUN_FILES:
                        if (run_dir.path / name).exists():
                            artifact.add_file(str(run_dir.path / name), name=name)
                self.run.log_artifact(artifact)
            self._logged = True
        except Exception as error:  # noqa: BLE001 - tracking must never stop a run; the results are on disk
            log.warning(
                "W&B logging failed (%s: %s); local results in %s are complete",
                type(error).__name__,
                error,
                run_dir.path,
            )

    def _write_tables(self, records: list[ProblemRecord], run_dir, artifact) -> dict[str, Path]:
        """The `problems` table and the `completions` table (within its byte budget; parts beyond W&B's row limit)
        as `.table.json` files in the run's wandb/ folder, W&B's one copy of them: the artifact refers to the files
        instead of staging a copy, and `run.log` of a table would keep three (media file and two staged copies)."""
        import wandb

        n, reduction = self.config["n"], self.config["scoring"]["reduction"]
        problems = [problem_row(r, n) for r in records]
        # both tables together within the budget: the problems table (one short row a problem) is kept whole
        budget = self.cfg.table_budget * sum(path.stat().st_size for path in run_dir.files())
        budget -= sum(len(json.dumps(row, default=str)) + 2 for row in problems)
        rows = budgeted_rows([completion_rows(r, n, reduction) for r in records], budget)
        kept, total = sum(map(len, rows)), sum(min(len(r.completions), n) for r in records)
        if kept < total:
            log.info(
                "W&B completions table: %d of %d completions (logger.table_budget=%g x the results' bytes; the "
                "selected ones first); all of them are in the results artifact",
                kept,
                total,
                self.cfg.table_budget,
            )
        tables = {"problems": problems}
        parts = table_parts(rows, wandb.Table.MAX_ARTIFACT_ROWS)
        for i, part in enumerate(parts):
            tables["completions" if len(parts) == 1 else f"completions_part{i + 1}"] = part
        folder = Path(self.run_dir or run_dir.path) / "wandb" / "tables"
        folder.mkdir(parents=True, exist_ok=True)
        written = {}
        for name, table_rows in tables.items():
            columns = PROBLEM_COLUMNS if name == "problems" else COMPLETION_COLUMNS
            with _row_limit(len(table_rows)):
                data = wandb_table(columns, table_rows).to_json(artifact)
            written[name] = folder / f"{name}.table.json"
            written[name].write_text(json.dumps(data))
        return written

    def finish(self) -> None:
        if self.run is None:
            self._release()
            return
        try:
            offline = self.run.settings.mode == "offline" if hasattr(self.run.settings, "mode") else False
            directory = getattr(self.run.settings, "sync_dir", None)
            self.run.finish()
            if self._logged and self.run_dir is not None:
                mark_logged(self.run_dir, self.cfg)
            if offline and directory:
                log.info("W&B offline run written to %s; upload it with `wandb sync %s`", directory, directory)
        except Exception as error:  # noqa: BLE001 - tracking must never stop a run
            log.warning("W&B finish failed (%s: %s)", type(error).__name__, error)
        self.run = None
        self._release()

    def _release(self) -> None:
        """Stop W&B's background service (it keeps its log open in this run's cache) and restore W&B's folders."""
        if self.dirs is None:
            return
        try:
            import wandb

            wandb.teardown()
        except Exception as error:  # noqa: BLE001 - tracking must never stop a run
            log.warning("W&B teardown failed (%s: %s)", type(error).__name__, error)
        self.dirs.exit()
        self.dirs = None


def build_tracker(logger_cfg) -> Tracker:
    if logger_cfg.name == "none" or logger_cfg.mode == "disabled":
        return Tracker()
    return WandbTracker(logger_cfg)
