"""Sweeps on a real SLURM cluster through `hydra/launcher=slurm_cpu` (Hydra's submitit launcher, our config).

These tests need a running cluster: `bash scripts/slurm_lane.sh` brings up a one-node cluster on this machine (no
accounting, JobRequeue=0), runs them and stops it. Elsewhere they are skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, results_files

pytestmark = pytest.mark.slurm


def _cluster_up() -> bool:
    if not shutil.which("sinfo"):
        return False
    try:
        return subprocess.run(["sinfo", "--noheader"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.fixture(scope="module", autouse=True)
def cluster():
    if not _cluster_up():
        pytest.skip("no SLURM cluster answers (run these with: bash scripts/slurm_lane.sh)")


# one CPU and 1 GB per job: the lane's node has two CPUs, so two jobs of a sweep run at once
SMALL_JOBS = ["hydra/launcher=slurm_cpu", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
              "hydra.launcher.timeout_min=10"]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"}


def _main(args: list[str], sweep: Path, timeout: float = 300, **popen) -> subprocess.CompletedProcess:
    command = [sys.executable, "tts/main.py", "-m", *args, "logger=none", f"hydra.sweep.dir={sweep}"]
    return subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout, **popen)


def _start(args: list[str], sweep: Path) -> subprocess.Popen:
    command = [sys.executable, "tts/main.py", "-m", *args, "logger=none", f"hydra.sweep.dir={sweep}"]
    return subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _runs(sweep: Path) -> dict[str, Path]:
    """Run directories of a sweep, by their path inside it."""
    return {str(p.parent.parent.relative_to(sweep)): p.parent.parent for p in sweep.rglob("results/index.jsonl")}


def _snapshot(run_dir: Path) -> tuple[dict, str]:
    return results_files(run_dir), (run_dir / "metrics.json").read_text()


def _job_ids(sweep: Path) -> list[str]:
    """SLURM ids of the sweep's jobs (submitit names a folder after each: <array id>_<task>)."""
    folder = sweep / ".submitit"
    return sorted(p.name for p in folder.iterdir() if re.fullmatch(r"\d+(_\d+)?", p.name)) if folder.exists() else []


def _wait_for_batches(sweep: Path, count: int, proc: subprocess.Popen, limit: float = 180) -> Path:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        for index in sweep.rglob("results/index.jsonl"):
            if index.read_bytes().count(b"\n") >= count:
                return index.parent.parent
        time.sleep(0.2)
    raise AssertionError(f"no run under {sweep} wrote {count} batches in {limit} s")


def _squeue_state(job: str) -> str:
    done = subprocess.run(["squeue", "--noheader", "--states=all", "--format=%T", "--jobs", job],
                          capture_output=True, text=True, timeout=30)
    return done.stdout.strip()


def test_a_sweep_on_slurm_leaves_the_same_run_directories_as_the_basic_launcher(tmp_path):
    sweep_args = ["strategy=best_of_n,beam", "n=4", "seed=0,1", "dataset.num_problems=6", "batch_size=2"]
    on_slurm = _main(sweep_args + SMALL_JOBS, tmp_path / "slurm")
    assert on_slurm.returncode == 0, on_slurm.stderr[-3000:]
    tasks = [j for j in _job_ids(tmp_path / "slurm") if "_" in j]
    assert len(tasks) == 4 and len({j.split("_")[0] for j in tasks}) == 1, tasks  # one array of four tasks
    local = _main(sweep_args, tmp_path / "basic")
    assert local.returncode == 0, local.stderr[-3000:]
    slurm_runs, basic_runs = _runs(tmp_path / "slurm"), _runs(tmp_path / "basic")
    assert len(slurm_runs) == 4 and slurm_runs.keys() == basic_runs.keys()
    for name in slurm_runs:
        assert _snapshot(slurm_runs[name]) == _snapshot(basic_runs[name]), name


def test_a_job_preempted_with_usr2_is_requeued_and_resumes_to_the_uninterrupted_result(tmp_path):
    args = ["strategy=best_of_n", "n=64", "dataset.num_problems=240", "batch_size=8"]
    proc = _start(args + SMALL_JOBS, tmp_path / "slurm")
    try:
        run_dir = _wait_for_batches(tmp_path / "slurm", 2, proc)
        (job,) = _job_ids(tmp_path / "slurm")
        # the warning SLURM sends before pre-emption or the time limit (--signal=USR2@...); its own timing is coarse,
        # so the test sends the signal itself
        subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)
        out, err = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    log = "\n".join(p.read_text(errors="replace") for p in (tmp_path / "slurm" / ".submitit").rglob("*_log.*"))
    assert "Caught signal SIGUSR2" in log and "Requeued job" in log, log[-3000:]
    resumed = re.findall(r"(\d+) already recorded", (run_dir / "main.log").read_text())
    assert resumed and int(resumed[-1]) > 0, "the requeued job did not resume from the run directory"
    reference = _main(args, tmp_path / "basic")
    assert reference.returncode == 0, reference.stderr[-3000:]
    (reference_dir,) = _runs(tmp_path / "basic").values()
    assert _snapshot(run_dir) == _snapshot(reference_dir)


def test_a_cancelled_job_fails_the_sweep_with_a_clear_message_in_bounded_time(tmp_path):
    proc = _start(["strategy=best_of_n", "n=64", "dataset.num_problems=2000", "batch_size=8"] + SMALL_JOBS,
                  tmp_path / "slurm")
    try:
        _wait_for_batches(tmp_path / "slurm", 1, proc)
        (job,) = _job_ids(tmp_path / "slurm")
        subprocess.run(["scancel", job], check=True, timeout=30)
        cancelled = time.monotonic()
        out, err = proc.communicate(timeout=180)
        waited = time.monotonic() - cancelled
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "CANCELLED" in err and job in err, err[-3000:]
    assert waited < 120, waited  # the launcher noticed without accounting (sacct fails on this cluster)
    assert "CANCELLED" in _squeue_state(job)


@pytest.mark.parametrize("launcher, message", [
    (["hydra/launcher=slurm"], "Invalid generic resource (gres) specification"),  # a GPU on a node without one
    (["hydra/launcher=slurm_cpu", "hydra.launcher.mem_gb=100000"], "Memory specification can not be satisfied"),
])
def test_an_unsatisfiable_request_fails_at_submission_with_slurms_message(tmp_path, launcher, message):
    started = time.monotonic()
    result = _main(["n=4", "dataset.num_problems=2"] + launcher, tmp_path / "sweep", timeout=120)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-3000:]
    assert time.monotonic() - started < 90
    assert not _runs(tmp_path / "sweep")
