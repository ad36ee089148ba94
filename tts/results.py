"""The run directory: per-problem records appended as batches finish, resume, and the files that make a run reproducible.

    <run dir>/
      .hydra/                 Hydra's composed config and overrides
      config.yaml             the resolved config (what actually ran)
      fingerprint.json        the parts of the config that change results; a rerun must match it to resume
      run_info.json           git commit, package versions, seeds, command line, start time
      results.jsonl           one JSON record per problem, appended and fsynced per batch
      metrics.json            run-level accuracies and compute, rewritten at the end of every run
      .lock                   held (flock) by the process writing the directory; the kernel drops it when that process dies

A crash or SIGKILL loses at most the batch in flight: records already appended survive, a half-written last line is
detected and cut off (a last record that is complete but lost its newline is kept), and the same command (same
directory) skips the problems already recorded. Two processes never write one directory at once: the second refuses.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import hashlib
import json
import logging
import os
import socket
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Iterable

from tts.config import ConfigError
from tts.scoring import aggregate_metrics

log = logging.getLogger(__name__)

RESULTS = "results.jsonl"
METRICS = "metrics.json"
FINGERPRINT = "fingerprint.json"
LOCK = ".lock"

# Config sections that do not change a run's results: tracking, and where the files come from.
NOT_FINGERPRINTED = {"logger": None, "batch_size": None}


def fingerprint_of(config: dict) -> dict:
    """The config minus what does not change results (`logger`, batch size, model/PRM/dataset paths)."""
    kept = {k: v for k, v in config.items() if k not in NOT_FINGERPRINTED}
    for group in ("model", "prm", "dataset"):
        if isinstance(kept.get(group), dict):
            kept[group] = {k: v for k, v in kept[group].items() if k != "path"}
    return kept


def _flatten(tree: dict, prefix: str = "") -> dict:
    """Nested config -> {"a.b.c": value}; lists become tuples so that values can be compared and hashed."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return flat


class RunDirectory:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.results_path = self.path / RESULTS
        self.metrics_path = self.path / METRICS

    # -- opening and resuming ---------------------------------------------------------------------------------

    def open(self, config: dict) -> dict[str, dict]:
        """Create or reopen the directory for `config`; return the records already there, by unique_id.

        Refuses (ConfigError) when the directory holds results of a different configuration.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock()
        fingerprint = fingerprint_of(config)
        stored_path = self.path / FINGERPRINT
        has_results = self.results_path.exists() and self.results_path.stat().st_size > 0
        if has_results and not stored_path.exists():
            self.close()
            raise ConfigError(
                f"config key 'hydra.run.dir': {self.results_path} exists but {FINGERPRINT} does not, so it cannot be "
                f"told whether those results come from this configuration. Refusing to mix them. Choose another "
                f"directory with hydra.run.dir=..., or move {self.results_path} away to start over."
            )
        if stored_path.exists():
            stored = json.loads(stored_path.read_text())
            if stored != fingerprint and self.results_path.exists() and self.results_path.stat().st_size > 0:
                ours, theirs = _flatten(fingerprint), _flatten(stored)
                changed = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
                details = ", ".join(f"{k}: {theirs.get(k)!r} -> {ours.get(k)!r}" for k in changed[:8])
                key = changed[0] if changed else "?"
                if key == "dataset.problems_sha256":  # the same settings on other problems: name the file to check
                    key, details = "dataset.path", ("other problems: the loaded problems (ids, texts, answers) have "
                                                    "another hash; another file, or the file changed")
                self.close()
                raise ConfigError(
                    f"config key '{key}': the run directory {self.path} holds results of a "
                    f"different configuration ({details}). Refusing to mix them. Rerun with the original settings to "
                    f"resume, choose another directory (hydra.run.dir=..., or hydra.sweep.dir=... with -m), or delete "
                    f"{self.results_path} to start over."
                )
        _atomic_write(stored_path, json.dumps(fingerprint, indent=2, sort_keys=True))
        return self.load()

    def load(self) -> dict[str, dict]:
        """Records on disk, by unique_id (the first copy wins); repairs the file so that the next append is safe.

        Only the last line can be torn by a crash (one write per batch, then fsync): it is cut off, unless it is a
        complete record that only lost its newline, which is then restored. A damaged line elsewhere (an edited file,
        a disk fault) is dropped with a warning and its problem is searched again.
        """
        if not self.results_path.exists():
            return {}
        raw = self.results_path.read_bytes()
        records: dict[str, dict] = {}
        kept: list[bytes] = []
        dropped = duplicates = 0
        lines = raw.splitlines(keepends=True)
        for number, line in enumerate(lines, start=1):
            record = _parse_record(line)
            if record is None:
                if number < len(lines) or line.endswith(b"\n"):
                    dropped += 1
                continue  # a torn last line: the batch in flight when the process died
            if record["unique_id"] in records:
                duplicates += 1
                continue
            records[record["unique_id"]] = record
            kept.append(line if line.endswith(b"\n") else line + b"\n")
        partial = _partial_last_batch([r for r in records.values()])
        if partial:
            # A batch is all or nothing: redone whole, a problem's record is the same as in an uninterrupted run
            # (its share of the batch's backend calls and PRM tokens depends on its batch mates).
            log.info("%s: the last batch was cut short; its %d recorded problem(s) are redone", self.results_path,
                     len(partial))
            for uid in partial:
                del records[uid]
            kept = kept[: len(kept) - len(partial)]
        repaired = b"".join(kept)
        if repaired != raw:
            if dropped or duplicates:
                log.warning("%s: dropped %d damaged line(s) and %d repeated record(s); those problems are redone",
                            self.results_path, dropped, duplicates)
            if raw.startswith(repaired):
                with open(self.results_path, "r+b") as handle:  # the common case: cut a torn tail in place
                    handle.truncate(len(repaired))
                    os.fsync(handle.fileno())
            else:
                _atomic_write_bytes(self.results_path, repaired)
        return records

    # -- writing ------------------------------------------------------------------------------------------------

    def append(self, records: Iterable[dict]) -> None:
        """Append one batch of records durably (a single write, then fsync)."""
        records = list(records)
        if not records:
            return
        batch = {"first": records[0]["unique_id"], "size": len(records)}  # lets load() spot a batch cut short
        for record in records:
            record.setdefault("batch", batch)
        payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        with open(self.results_path, "a", encoding="utf-8") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())

    def write_metrics(self, metrics: dict) -> None:
        _atomic_write(self.metrics_path, json.dumps(metrics, indent=2, sort_keys=True))

    def write_config(self, config_yaml: str, run_info: dict) -> None:
        _atomic_write(self.path / "config.yaml", config_yaml)
        _atomic_write(self.path / "run_info.json", json.dumps(run_info, indent=2, sort_keys=True))

    # -- one writer at a time -----------------------------------------------------------------------------------

    def _lock(self) -> None:
        """Take the directory's lock, or refuse: two jobs appending to one results file would duplicate problems.

        The lock is an flock on `.lock`, so the kernel releases it when the holder dies (SIGKILL, pre-emption): a
        resumed job never waits for a stale lock. It is held until `close()`.
        """
        if getattr(self, "_lock_handle", None) is not None:
            return
        handle = open(self.path / LOCK, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP):  # a file system without locks
                log.warning("cannot lock %s (%s); make sure only one job writes this run directory", self.path, error)
                handle.close()
                return
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ConfigError(
                f"config key 'hydra.run.dir': {self.path} is being written by {holder}. Two jobs writing one run "
                f"directory would record problems twice. Wait for it to finish (or stop it), then rerun the same "
                f"command to resume; or choose another directory with hydra.run.dir=..."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self._lock_handle = handle

    def close(self) -> None:
        """Release the directory's lock (also released by the kernel if the process dies)."""
        handle = getattr(self, "_lock_handle", None)
        if handle is not None:
            self._lock_handle = None
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            handle.close()

    def __enter__(self) -> "RunDirectory":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _partial_last_batch(records: list[dict]) -> list[str]:
    """unique_ids of the trailing records if they are an incomplete batch (the writer died mid-batch), else []."""
    if not records or not isinstance(records[-1].get("batch"), dict):
        return []
    batch = records[-1]["batch"]
    tail = []
    for record in reversed(records):
        if record.get("batch") != batch:
            break
        tail.append(record["unique_id"])
    return tail if len(tail) < batch.get("size", 0) else []


def _parse_record(line: bytes):
    """A results line as a record, or None when it is not one complete JSON object with a unique_id."""
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) and "unique_id" in record else None


def _atomic_write(path: Path, text: str) -> None:
    _atomic_write_bytes(path, text.encode("utf-8"))


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a whole file so that a reader (or a crash) sees the old or the new version, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def run_info(seed: int, config_hash: str) -> dict:
    """What reproduces this run: code version, packages, seeds, command (never the environment: it holds secrets)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    versions = {}
    for package in ("tts", "hydra-core", "omegaconf", "wandb", "math-verify", "latex2sympy2_extended", "sympy",
                    "numpy", "transformers", "torch", "vllm"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return {
        "git_commit": commit,
        "python": platform.python_version(),
        "packages": versions,
        "seed": seed,
        "argv": sys.argv,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "config_hash": config_hash,
    }


def run_metrics(records: list[dict], n: int) -> dict:
    """metrics.json of a run (or of merged shards): accuracies and tokens, plus the backend calls spent."""
    metrics = aggregate_metrics(records, n)
    metrics["compute/backend_calls"] = round(sum(r["compute"].get("backend_calls_share", 0.0) for r in records), 3)
    return metrics


def config_hash(fingerprint: dict) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]
