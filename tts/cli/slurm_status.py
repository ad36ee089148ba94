"""SLURM job status for submitit with or without accounting: `sacct` where it answers, `squeue` where it does not.

submitit's SlurmInfoWatcher polls `sacct`; on a cluster without slurmdbd that command fails on every poll, so a job
that ends without a result (cancelled, killed, failed at start) is never seen to end and the launcher waits forever.
`squeue --states=all` lists every job the controller still holds (finished ones for MinJobAge, 300 s by default) in
the same JobID|State|NodeList shape, so the same parser reads it.

`SlurmStatus` is a Hydra callback (conf/config.yaml, `hydra.callbacks.slurm_status`): at the start of a multirun
whose launcher is submitit's SLURM launcher (`hydra/launcher=slurm` or `slurm_cpu`), it installs the watcher in the
launching process; with any other launcher it does nothing and imports nothing.
"""

from __future__ import annotations

import logging
import subprocess
from typing import Any

from hydra.experimental.callback import Callback

log = logging.getLogger(__name__)

# submitit polls at 2, 4, 8 ... s after the last submission, then every delay_s; its default (600 s) would leave a
# cancelled job unnoticed for up to ten minutes.
POLL_DELAY_S = 30


def accounting_available(timeout: float = 20.0) -> bool:
    """Whether `sacct` answers on this cluster (it exits non-zero when accounting storage is disabled)."""
    try:
        done = subprocess.run(["sacct", "--noheader", "-X", "-j", "1"], capture_output=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _watcher_class():
    from submitit.slurm.slurm import SlurmInfoWatcher

    class StatusWatcher(SlurmInfoWatcher):
        """SlurmInfoWatcher that falls back to squeue when sacct does not answer."""

        def __init__(self, delay_s: int = POLL_DELAY_S) -> None:
            super().__init__(delay_s=delay_s)
            self.accounting: bool | None = None

        def _make_command(self):
            command = super()._make_command()
            if command is None:
                return None
            if self.accounting is None:
                self.accounting = accounting_available()
                if not self.accounting:
                    log.info("sacct does not answer on this cluster (no accounting); following jobs with squeue")
            if self.accounting:
                return command
            jobs = sorted({x.split("_")[0] for x in self._registered - self._finished})
            return ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T|%N", "--jobs", ",".join(jobs)]

        def read_info(self, string: bytes | str):
            if not self.accounting:
                text = string.decode() if isinstance(string, bytes) else string
                string = "JobID|State|NodeList\n" + text
            return super().read_info(string)

    return StatusWatcher


def install_status_watcher() -> None:
    """Make every submitit SLURM job of this process follow its status through StatusWatcher (idempotent)."""
    from submitit.slurm.slurm import SlurmJob

    watcher_class = _watcher_class()
    if type(SlurmJob.watcher).__name__ != watcher_class.__name__:
        SlurmJob.watcher = watcher_class()


class SlurmStatus(Callback):
    """Hydra callback: SLURM sweeps follow their jobs without accounting too (see the module docstring)."""

    def on_multirun_start(self, config, **kwargs: Any) -> None:
        target = str(config.hydra.launcher.get("_target_", ""))
        if "submitit" in target and target.endswith("SlurmLauncher"):
            install_status_watcher()
