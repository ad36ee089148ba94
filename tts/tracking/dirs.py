"""Where W&B may write: inside the run directory only, never `~/.cache/wandb` or `~/.local/share/wandb`.

W&B defaults its cache (wandb-core's debug logs, downloaded artifacts) to `~/.cache/wandb` and its artifact staging (a
copy of every file of every logged artifact and table) to `~/.local/share/wandb/artifacts/staging`; an offline sweep
never uploads, so staging only grows (about 1.9 GB over the headline sweep) and fills a cluster home quota. While a run
is tracked the variables below point into `<run dir>/wandb/`; staging moves into the offline run's own folder once it
exists, so `wandb sync` finds the files it uploads and `wandb sync --clean` removes them with the run. The cache is
deleted when the run finishes. W&B's settings folder (`~/.config/wandb`, where `wandb login --host` keeps the server)
is only read.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional

VARIABLES = ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR")


class WandbDirs:
    """Points W&B's folders into `root` (`<run dir>/wandb`) between `enter()` and `exit()`, then restores them."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.cache = self.root / "cache"
        self._saved: dict[str, Optional[str]] = {}

    def enter(self) -> None:
        folders = {
            "WANDB_DIR": self.root.parent,
            "WANDB_CACHE_DIR": self.cache,
            "WANDB_DATA_DIR": self.root / "data",
            "WANDB_ARTIFACT_DIR": self.root / "artifacts",
        }
        self._saved = {name: os.environ.get(name) for name in VARIABLES}
        for name, folder in folders.items():
            Path(folder).mkdir(parents=True, exist_ok=True)
            os.environ[name] = str(Path(folder).resolve())

    def stage_in(self, folder: Path) -> None:
        """Stage artifact files from now on in `folder` (the offline run's own folder, synced and cleaned with it)."""
        os.environ["WANDB_DATA_DIR"] = str(Path(folder).resolve())

    def exit(self) -> None:
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved = {}
        shutil.rmtree(self.cache, ignore_errors=True)
        for empty in (self.root / "data", self.root / "artifacts"):
            try:
                empty.rmdir()  # only when nothing was staged there
            except OSError:
                pass
