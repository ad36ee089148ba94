"""Launchers: a real 4-job sweep through submitit (local executor), the SLURM config as sbatch would receive it, and
SLURM job status without accounting. The named sweeps (conf/experiment/, multirun.sh): tests/test_experiments.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

import tts.config.schema  # noqa: F401 - registers the schemas the YAML files extend
from conftest import CONF, REPO
from tts.store.writer import RunDirectory

SECRET = "sk-test-SECRET123"


def _run_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("metrics.json") if "wandb" not in p.parts)


def test_submitit_local_sweep_of_four_jobs(tmp_path):
    env = dict(os.environ, WANDB_API_KEY=SECRET)  # must stay in the environment, out of every file of the sweep
    result = subprocess.run(
        [sys.executable, "tts/main.py", "-m", "hydra/launcher=submitit_local", "n=4,8", "seed=0,1",
         "dataset.num_problems=5", "logger=none", f"hydra.sweep.dir={tmp_path}", "hydra.launcher.timeout_min=10"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    runs = _run_dirs(tmp_path)
    assert {str(p.relative_to(tmp_path)) for p in runs} == {
        f"synthetic/sim_sim/best_of_n/n{n}_seed{s}/dataset.num_problems=5" for n in (4, 8) for s in (0, 1)}
    for run_dir in runs:
        records = RunDirectory(run_dir).records()
        n = int(run_dir.parent.name.split("_")[0][1:])
        assert len(records) == 5 and all(len(r.completions) == n for r in records)
        assert json.loads((run_dir / "metrics.json").read_text())["problems"] == 5
        assert (run_dir / "config.yaml").exists()
    # every job ran in its own submitit process, with its logs in the sweep dir
    assert len(list((tmp_path / ".submitit").rglob("*_result.pkl"))) == 4
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert not leaked


def _with_hydra(overrides: list[str]):
    """The composed config including its `hydra` section (the launcher's settings)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def _sbatch_script(overrides: list[str]) -> str:
    """The sbatch script submitit writes for our SLURM config, made as hydra's SlurmLauncher makes it."""
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from submitit import AutoExecutor

    cfg = _with_hydra(["hydra/launcher=slurm", *overrides])
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert params.pop("_target_").endswith("SlurmLauncher")
    params.pop("submitit_folder"), params.pop("name")
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor = AutoExecutor(folder="/tmp/sweep/.submitit/%j", cluster="slurm",
                            slurm_max_num_timeout=params.pop("max_num_timeout"))
    executor.update_parameters(name="main", **{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    return executor._executor._make_submission_file_text("python -u -m submitit.core._submit /tmp/x", "uid")


def test_slurm_config_asks_for_a_gpu_and_leaves_the_cluster_to_the_user(tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")  # submitit only checks that it is on a SLURM machine
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    script = _sbatch_script(["hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=600",
                             "hydra.launcher.account=lab"])
    for line in ("#SBATCH --gpus-per-node=1", "#SBATCH --partition=gpu", "#SBATCH --time=600",
                 "#SBATCH --account=lab", "#SBATCH --cpus-per-task=8", "#SBATCH --signal=USR2@120",
                 "#SBATCH --requeue"):  # without it, clusters with JobRequeue=0 refuse submitit's requeue
        assert line in script, script
    assert SECRET not in script
    default = _sbatch_script([])
    assert "--partition" not in default and "--account" not in default  # the cluster's defaults unless given
    cfg = _with_hydra(["hydra/launcher=slurm"])
    assert cfg.hydra.launcher.max_num_timeout > 0  # a timed-out job is requeued and resumes


def test_slurm_sweeps_follow_jobs_with_squeue_where_sacct_has_no_accounting(monkeypatch):
    """The callback installs the watcher for submitit's SLURM launcher only; without accounting it reads squeue's
    output (as `squeue --array --states=all --format=%i|%T|%N` prints it). The real cluster test: tests/test_slurm.py."""
    from hydra.utils import instantiate
    from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

    from tts.cli import slurm_status

    monkeypatch.setattr(SlurmJob, "watcher", SlurmInfoWatcher(delay_s=600))
    for launcher in ("basic", "joblib"):
        cfg = _with_hydra([f"hydra/launcher={launcher}"])
        instantiate(cfg.hydra.callbacks.slurm_status).on_multirun_start(cfg)
        assert type(SlurmJob.watcher) is SlurmInfoWatcher
    cfg = _with_hydra(["hydra/launcher=slurm_cpu"])
    instantiate(cfg.hydra.callbacks.slurm_status).on_multirun_start(cfg)
    watcher = SlurmJob.watcher
    assert type(watcher).__name__ == "StatusWatcher" and watcher._delay_s == slurm_status.POLL_DELAY_S
    monkeypatch.setattr(slurm_status, "accounting_available", lambda timeout=20.0: False)
    watcher.register_job("7_0")
    watcher.register_job("7_1")
    assert watcher._make_command()[:1] == ["squeue"] and watcher._make_command()[-1] == "7"
    info = watcher.read_info(b"7_0|CANCELLED|vm\n7_1|RUNNING|vm\n")
    assert info["7_0"]["State"] == "CANCELLED" and info["7_1"]["State"] == "RUNNING"
