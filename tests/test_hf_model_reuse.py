"""Models load once per process: a 3-job sweep on Hydra's basic launcher (one process) builds the hf policy and the hf
PRM once, and every job's results equal those of the same job run on its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.tiny_models import tiny_dirs  # noqa: E402
from tts.results import RunDirectory, run_dirs_under  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    return tiny_dirs(tmp_path_factory)


def _args(dirs) -> list[str]:
    return [
        "model=llama-3.2-1b", f"model.path={dirs['llama']}", "model.backend=hf", "model.device=cpu",
        "model.dtype=float32", "prm=rlhflow-8b", f"prm.path={dirs['rlhflow']}", "prm.backend=hf", "prm.device=cpu",
        "prm.dtype=float32", "strategy=beam", "n=4", "dataset.num_problems=2", "budget.max_tokens=16",
        "budget.num_iterations=2", "logger=none",
    ]


def _main(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "tts/main.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _records(run_dir: Path) -> list[dict]:
    [found] = run_dirs_under(run_dir)
    records = RunDirectory(found).records()
    return [{k: r[k] for k in ("unique_id", "completions", "scores", "compute")} for r in records]


def test_basic_launcher_sweep_builds_each_model_once_and_matches_separate_runs(dirs, tmp_path):
    sweep = tmp_path / "sweep"
    _main(["-m", "hydra/launcher=basic", "seed=0,1,2", *_args(dirs), f"hydra.sweep.dir={sweep}"])
    jobs = {int(part.split("_seed")[1]): p for p in run_dirs_under(sweep)
            for part in p.relative_to(sweep).parts if part.startswith("n4_seed")}
    assert sorted(jobs) == [0, 1, 2]
    logs = "".join(p.read_text() for p in sweep.rglob("*.log"))
    assert logs.count("model cache: built the policy") == 1 and logs.count("model cache: built the prm") == 1
    assert logs.count("model cache: reusing the policy") == 2 and logs.count("model cache: reusing the prm") == 2
    # the last job ran on models two jobs had used before it: its results are those of the job run on its own
    alone = tmp_path / "alone"
    _main(["seed=2", *_args(dirs), f"hydra.run.dir={alone}"])
    assert _records(jobs[2]) == _records(alone)
    assert _records(jobs[1]) != _records(jobs[2])  # the seeds differ, so the comparison above is not vacuous
