"""The run directory: per-problem records appended as batches finish, resume, and the files that make a run reproducible.

    <run dir>/
      .hydra/                 Hydra's composed config and overrides
      config.yaml             the resolved config (what actually ran)
      fingerprint.json        the parts of the config that change results; a rerun must match it to resume
      run_info.json           git commit, package versions, seeds, command line, start time
      results.jsonl           one JSON record per problem, appended and fsynced per batch
      metrics.json            run-level accuracies and compute, rewritten at the end of every run

A crash or SIGKILL loses at most the batch in flight: records already appended survive, a half-written last line is
detected and cut off, and the same command (same directory) skips the problems already recorded.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Iterable

from tts.config import ConfigError

RESULTS = "results.jsonl"
METRICS = "metrics.json"
FINGERPRINT = "fingerprint.json"

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
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
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
        fingerprint = fingerprint_of(config)
        stored_path = self.path / FINGERPRINT
        if stored_path.exists():
            stored = json.loads(stored_path.read_text())
            if stored != fingerprint and self.results_path.exists() and self.results_path.stat().st_size > 0:
                ours, theirs = _flatten(fingerprint), _flatten(stored)
                changed = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
                details = ", ".join(f"{k}: {theirs.get(k)!r} -> {ours.get(k)!r}" for k in changed[:8])
                raise ConfigError(
                    f"config key '{changed[0] if changed else '?'}': the run directory {self.path} holds results of a "
                    f"different configuration ({details}). Refusing to mix them. Choose another directory with "
                    f"hydra.run.dir=..., or delete {self.results_path} to start over."
                )
        _atomic_write(stored_path, json.dumps(fingerprint, indent=2, sort_keys=True))
        return self.load()

    def load(self) -> dict[str, dict]:
        """Records on disk, by unique_id; a torn last line (crash mid-write) is cut off the file."""
        if not self.results_path.exists():
            return {}
        records: dict[str, dict] = {}
        raw = self.results_path.read_bytes()
        good_end = 0
        for line in raw.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # a line the writer never finished
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break
            records.setdefault(record["unique_id"], record)
            good_end += len(line)
        if good_end < len(raw):
            with open(self.results_path, "r+b") as handle:
                handle.truncate(good_end)
        return records

    # -- writing ------------------------------------------------------------------------------------------------

    def append(self, records: Iterable[dict]) -> None:
        """Append one batch of records durably (a single write, then fsync)."""
        payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        if not payload:
            return
        with open(self.results_path, "a", encoding="utf-8") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())

    def write_metrics(self, metrics: dict) -> None:
        _atomic_write(self.metrics_path, json.dumps(metrics, indent=2, sort_keys=True))

    def write_config(self, config_yaml: str, run_info: dict) -> None:
        _atomic_write(self.path / "config.yaml", config_yaml)
        _atomic_write(self.path / "run_info.json", json.dumps(run_info, indent=2, sort_keys=True))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def run_info(seed: int) -> dict:
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
        "config_hash": None,
    }


def config_hash(fingerprint: dict) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]
