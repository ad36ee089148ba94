"""Sweeps survive their parts: invalid combinations are reported up front and do not stop the valid jobs, the sweep
ends non-zero naming the failed ones, a killed sweep takes its joblib workers with it, and run directory names built
from many overrides stay under the file-name limit. Real Hydra launchers (basic, joblib) run `python tts/main.py -m`.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from tts.cli.sweep import MAX_NAME_BYTES, short_dirname
from tts.store.readers import find_run_dirs

LAUNCHERS = {"basic": [], "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]}


def _sweep(args: list[str], cwd: Path, timeout: int = 180):
    return subprocess.run([sys.executable, str(REPO / "tts/main.py"), "-m", *args, "logger=none"], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_an_invalid_combination_does_not_stop_the_valid_jobs(tmp_path, launcher):
    result = _sweep([*LAUNCHERS[launcher], "strategy=beam", "n=6,4", "dataset.num_problems=2",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
    said = result.stdout + result.stderr
    assert result.returncode == 2, said[-3000:]
    # reported before any job starts ...
    assert said.index("sweep job #0 (strategy=beam n=6") < said.index("#0 : strategy=beam n=6"), said[-3000:]
    # ... the valid job ran ...
    runs = {p.relative_to(tmp_path / "sweep").parts[3] for p in find_run_dirs(tmp_path / "sweep")}
    assert runs == {"n4_seed0"}
    assert not list((tmp_path / "sweep").rglob("n6_seed0")), "the refused job leaves no directory"
    # ... and the sweep ends naming the failed job
    summary = result.stderr[result.stderr.index("Error: 1 sweep job(s) failed"):]
    assert "#0 (strategy=beam n=6 dataset.num_problems=2" in summary and "beam_width" in summary
    assert not list((tmp_path / "sweep").glob(".failed-jobs-*")), "the sweep's bookkeeping is removed"


def _children(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_killing_a_joblib_sweep_ends_its_workers_and_frees_the_locks(tmp_path):
    sweep = tmp_path / "sweep"
    main = subprocess.Popen([sys.executable, str(REPO / "tts/main.py"), "-m", *LAUNCHERS["joblib"], "seed=0,1",
                             "n=64", "batch_size=4", "logger=none", f"hydra.sweep.dir={sweep}"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while (not sweep.exists() or len(find_run_dirs(sweep)) < 2) and time.time() < deadline:
            time.sleep(0.5)  # both jobs have recorded a batch: the workers are busy searching
        workers = [pid for pid in _children(main.pid) if _alive(pid)]
        assert len(find_run_dirs(sweep)) == 2 and workers, "the sweep did not get going"
        main.send_signal(signal.SIGKILL)
        main.wait()
        deadline = time.time() + 15
        while any(_alive(pid) for pid in workers) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in workers), "a worker outlived its sweep"
        for run_dir in find_run_dirs(sweep):
            with open(run_dir / ".lock") as handle:  # a rerun can take the lock: nobody holds it
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        try:
            os.killpg(main.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# A dozen model/PRM overrides (the default values, so the run is the default one).
MANY_OVERRIDES = ["model.backend.skill=1.2", "model.backend.temperature_sensitivity=1.0", "model.backend.num_wrong_answers=4",
                  "model.backend.wrong_answer_skew=1.0", "model.backend.verify_accuracy=0.8",
                  "model.backend.verify_difficulty_sensitivity=1.0", "model.backend.verify_unparsed_prob=0.02",
                  "model.backend.revision_fix_prob=0.9", "model.backend.revision_break_prob=0.02",
                  "prm.discrimination=1.5", "prm.noise=1.0", "prm.bias=0.5", "prm.length_penalty=0.0"]


def test_many_overrides_give_a_short_deterministic_directory_that_resumes(tmp_path):
    assert len(",".join(MANY_OVERRIDES).encode()) > 255
    args = [sys.executable, str(REPO / "tts/main.py"), *MANY_OVERRIDES, "dataset.num_problems=3", "logger=none"]
    first = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr[-2000:]
    [run_dir] = find_run_dirs(tmp_path / "outputs")
    assert all(len(part.encode()) <= 255 for part in run_dir.relative_to(tmp_path).parts)
    assert "model.backend.skill=1.2" in run_dir.name, "the name stays readable"
    again = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "3 already recorded" in again.stdout + again.stderr


def test_short_dirname_keeps_short_names_and_hashes_long_ones():
    assert short_dirname("n=4,seed=1") == "n=4,seed=1"
    long_a, long_b = ",".join(MANY_OVERRIDES), ",".join(MANY_OVERRIDES[::-1])
    assert len(short_dirname(long_a).encode()) <= MAX_NAME_BYTES
    assert short_dirname(long_a) == short_dirname(long_a) != short_dirname(long_b)
    assert "/" not in short_dirname("x/" + "y" * 300)


def test_a_combination_that_cannot_compose_refuses_the_sweep_before_any_job(tmp_path):
    result = _sweep(["n=2.5,4", "dataset.num_problems=2", f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("Error: 1 sweep job(s) cannot be composed; no job was started")
    assert "#0 (n=2.5 dataset.num_problems=2" in result.stderr and "config key 'n'" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "sweep").exists()
