"""What a strategy is given: its own config and a frozen run spec (no run config), and what it returns as compute: a
typed record whose dict is the run record's `compute`, with only the counters the strategy keeps, in a fixed order.
"""

from __future__ import annotations

import dataclasses

import pytest

from conftest import typed_config
from tts.backends import build_policy
from tts.backends.base import GenerationOutput
from tts.backends.sim import SimPolicy, SimPolicyConfig
from tts.data.synthetic import generate_problems
from tts.prms import build_prm
from tts.prms.sim import SimPRM, SimPRMConfig
from tts.search import build_strategy
from tts.search.base import Compute, RunSpec
from tts.search.beam import BeamConfig, BeamSearch
from tts.search.best_of_n import BestOfN, BestOfNConfig

SPEC = RunSpec(n=4, seed=3, max_tokens=512, num_iterations=10, system_prompt="", top_logprobs=5, reduction="last",
               confidence_window=2048, confidence_tail=2048)


def test_run_spec_is_frozen():
    spec = RunSpec.of(typed_config(["n=8", "seed=2", "budget.max_tokens=300"]))
    assert (spec.n, spec.seed, spec.max_tokens) == (8, 2, 300)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.n = 16  # type: ignore[misc]


@pytest.mark.parametrize("strategy", [BestOfN(BestOfNConfig()), BeamSearch(BeamConfig(beam_width=2))],
                         ids=["best_of_n", "beam"])
def test_a_strategy_runs_from_its_config_and_a_spec_alone(strategy):
    problems = generate_problems(3, seed=5)
    outputs = strategy.search(problems, SimPolicy(SimPolicyConfig(), seed=SPEC.seed), SimPRM(SimPRMConfig()), SPEC)
    assert [len(o.completions) for o in outputs] == [SPEC.n] * len(problems)
    assert all(c.tokens <= SPEC.max_tokens and c.confidence is not None for o in outputs for c in o.completions)
    assert all(o.compute.generated_tokens > 0 and o.compute.prm_tokens > 0 for o in outputs)
    # the spec is all the search reads of a run: the pipeline's spec of the same run gives the same completions
    knobs = ["strategy.beam_width=2"] if isinstance(strategy, BeamSearch) else []
    cfg = typed_config([f"strategy={strategy.config.name}", f"n={SPEC.n}", f"seed={SPEC.seed}", "budget.max_tokens=512",
                        "budget.num_iterations=10", "model.prompt.system=''", *knobs])
    assert RunSpec.of(cfg) == SPEC
    composed = build_strategy(cfg.strategy).search(problems, build_policy(cfg.model, cfg.seed), build_prm(cfg.prm),
                                                   RunSpec.of(cfg))
    assert [[c.text for c in o.completions] for o in composed] == [[c.text for c in o.completions] for o in outputs]


def test_compute_keeps_the_counters_a_strategy_keeps_in_the_records_order():
    assert Compute().as_dict() == {"generated_tokens": 0, "prm_tokens": 0, "backend_calls": 0}
    review = Compute(generated_tokens=9, review_tokens=4, prm_tokens=2, backend_calls=2)
    review.count_prompts([GenerationOutput("a", "eos", 5, prompt_tokens=10, prompt_tokens_computed=3),
                          GenerationOutput("b", "eos", 4, prompt_tokens=10)])  # cannot tell: counts in full
    assert review.as_dict() == {"generated_tokens": 9, "review_tokens": 4, "prm_tokens": 2, "backend_calls": 2,
                                "prompt_tokens": 20, "prompt_tokens_computed": 13}
    assert list(review.as_dict()) == ["generated_tokens", "review_tokens", "prm_tokens", "backend_calls",
                                      "prompt_tokens", "prompt_tokens_computed"]
    rollout = Compute(prompt_tokens=0, prompt_tokens_computed=0, rollout_tokens=0)
    rollout.count_prompts([])
    assert list(rollout.as_dict()) == ["generated_tokens", "prm_tokens", "backend_calls", "prompt_tokens",
                                       "prompt_tokens_computed", "rollout_tokens"]
    adaptive = Compute(backend_calls=3, traces_generated=5, traces_stopped=1, traces_used=4)
    adaptive.count_prompts([])
    assert list(adaptive.as_dict()) == ["generated_tokens", "prm_tokens", "backend_calls", "traces_generated",
                                        "traces_stopped", "traces_used", "prompt_tokens", "prompt_tokens_computed"]
