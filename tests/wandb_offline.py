"""Read an offline W&B run back the way a researcher would, with W&B's own reader: `wandb leet inspect --json`."""

from __future__ import annotations

import glob
import json
import subprocess
import sys
import time
from pathlib import Path


def offline_runs(wandb_parent: Path) -> list[Path]:
    """The .wandb transaction logs under `<wandb_parent>/wandb/offline-run-*`, oldest first."""
    return sorted(Path(p) for p in glob.glob(str(wandb_parent / "wandb" / "offline-run-*" / "run-*.wandb")))


def inspect(path: Path, timeout: float = 30.0) -> list[dict]:
    """Every record of a .wandb log as JSON, once the log holds the run's exit record (wandb-core may still flush)."""
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(path)],
                             capture_output=True, text=True, timeout=120, check=True).stdout
        records = [json.loads(line) for line in out.splitlines() if line.strip()]
        if any(r["type"] == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.3)


def of_type(records: list[dict], kind: str) -> list[dict]:
    return [r[kind] for r in records if r["type"] == kind]


def run_info(records: list[dict]) -> dict:
    (info,) = of_type(records, "run")
    return info


def summary(records: list[dict]) -> dict:
    merged: dict = {}
    for update in of_type(records, "summary"):
        merged.update(update.get("update", {}))
    return merged


def history(records: list[dict], prefix: str = "") -> list[dict]:
    """History rows that hold a key starting with `prefix`."""
    rows = [h["item"] for h in of_type(records, "history")]
    return [row for row in rows if any(k.startswith(prefix) for k in row)]


def table(run_file: Path, name: str) -> tuple[list[str], list[list]]:
    """A table of the run's results artifact (`<name>.table.json`), read from the file its manifest names."""
    artifacts = [a for a in of_type(inspect(run_file), "artifact") if a["type"] in ("results", "tables")]
    (content,) = [c for a in artifacts for c in a["manifest"]["contents"] if c["path"] == f"{name}.table.json"]
    data = json.loads(Path(content["local_path"]).read_text())
    return data["columns"], data["data"]
