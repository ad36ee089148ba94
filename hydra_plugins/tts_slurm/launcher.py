"""Hydra's submitit SLURM launcher (`hydra/launcher=slurm` and `slurm_cpu`), with job status that works on clusters
without SLURM accounting.

submitit follows its jobs with `sacct`. Where the cluster keeps no accounting database (no slurmdbd), every poll fails
("Bypassing sacct error"), a job's state stays unknown, and a sweep whose job was cancelled or failed before writing
its result waits forever. This launcher asks `squeue` instead when `sacct` does not answer (tts.slurm_status), so such
a sweep ends with submitit's error naming the job and its state. Everything else is Hydra's launcher unchanged.

It lives in the `hydra_plugins` namespace because Hydra only instantiates launchers found there.
"""

from __future__ import annotations

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as _SubmititSlurmLauncher
except ImportError:  # the [launchers] extra is not installed: nothing to extend
    _SubmititSlurmLauncher = None

if _SubmititSlurmLauncher is not None:

    class SlurmLauncher(_SubmititSlurmLauncher):
        def launch(self, job_overrides, initial_job_idx):
            from tts.slurm_status import install_status_watcher

            install_status_watcher()
            return super().launch(job_overrides, initial_job_idx)
