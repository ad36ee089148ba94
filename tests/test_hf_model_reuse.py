"""Models load once per process: a 3-job sweep on Hydra's basic launcher (one process) builds the hf policy and the hf
PRM once, and every job's results equal those of the same job run on its own."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.one_process_sweep import cache_events, comparable_records, jobs_by_seed, run_main  # noqa: E402
from tests.tiny_models import tiny_dirs  # noqa: E402


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    return tiny_dirs(tmp_path_factory)


def _args(dirs) -> list[str]:
    return [
        "model=llama-3.2-1b", f"model.path={dirs['llama']}", "model/backend=hf", "model.backend.device=cpu",
        "model.dtype=float32", "prm=rlhflow-8b", f"prm.path={dirs['rlhflow']}", "prm/engine=hf",
        "prm.engine.device=cpu", "prm.dtype=float32", "strategy=beam", "n=4", "dataset.num_problems=2",
        "budget.max_tokens=16", "budget.num_iterations=2", "logger=none",
    ]


def test_basic_launcher_sweep_builds_each_model_once_and_matches_separate_runs(dirs, tmp_path):
    sweep = tmp_path / "sweep"
    run_main(["-m", "hydra/launcher=basic", "seed=0,1,2", *_args(dirs), f"hydra.sweep.dir={sweep}"])
    jobs = jobs_by_seed(sweep)
    assert sorted(jobs) == [0, 1, 2]
    events = cache_events(sweep)
    assert events.count("built the policy") == 1 and events.count("built the prm") == 1
    assert events.count("reusing the policy") == 2 and events.count("reusing the prm") == 2
    # the last job ran on models two jobs had used before it: its results are those of the job run on its own
    alone = tmp_path / "alone"
    run_main(["seed=2", *_args(dirs), f"hydra.run.dir={alone}"])
    assert comparable_records(jobs[2]) == comparable_records(alone)
    assert comparable_records(jobs[1]) != comparable_records(jobs[2])  # the seeds differ: the above is not vacuous
