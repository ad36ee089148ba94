"""The per-problem schedule of the tree searches: problems advance independently on a backend that streams, and the
search is the same search as in lockstep.

A stand-in stream answers a random part of what is in flight at each `ready()`, in random order (as an engine that
finishes requests out of order does), over the sim policy. Every strategy must then give the same completions, scores
and generated tokens as the lockstep loop, while a problem's next iteration really is submitted before other problems
have finished theirs, and the PRM is called fewer times than there are problem-iterations.
"""

from __future__ import annotations

import random

import pytest

from conftest import compose_config
from tts.backends import build_policy
from tts.backends.base import GenerationStream
from tts.config.schema import ConfigError
from tts.config.validate import validate
from tts.data import load_problems
from tts.prms import build_prm
from tts.search import build_strategy
from tts.search.base import RunSpec

from test_search import CountingPRM, RecordingPolicy

TREE_STRATEGIES = ["beam", "dvts", "lookahead", "rebase"]


class ShuffledStream(GenerationStream):
    """Streams: each `ready()` generates a random non-empty part of the queue and returns it shuffled."""

    streams = True

    def __init__(self, policy, seed: int) -> None:
        super().__init__(policy)
        self.rng = random.Random(seed)
        self.rounds: dict[int, int] = {}  # problem -> requests rounds submitted so far
        self.interleaved = 0  # submits made while another problem still had an earlier round in flight
        self.closed_with: int | None = None

    def submit(self, tickets) -> None:
        problem = tickets[0][0][0]
        round_ = self.rounds[problem] = self.rounds.get(problem, 0) + 1
        behind = {key[0] for key, _ in self._queued if key[0] != problem and self.rounds[key[0]] < round_}
        self.interleaved += bool(behind)
        super().submit(tickets)

    def ready(self):
        self.rng.shuffle(self._queued)
        take = self.rng.randint(1, len(self._queued))
        tickets, self._queued = self._queued[:take], self._queued[take:]
        outputs = self.policy.generate([request for _, request in tickets])
        return [(key, samples) for (key, _), samples in zip(tickets, outputs)]

    def close(self) -> None:
        self.closed_with = len(self._queued)
        super().close()


class StreamingPolicy(RecordingPolicy):
    def __init__(self, inner, seed: int = 0) -> None:
        super().__init__(inner)
        self.seed = seed
        self.streams: list[ShuffledStream] = []

    def stream(self):
        self.streams.append(ShuffledStream(self, self.seed))
        return self.streams[-1]


def _run(strategy: str, policy_wrapper, overrides=(), num_problems: int = 6, n: int = 8, prm_wrapper=CountingPRM):
    cfg = compose_config([f"strategy={strategy}", f"n={n}", f"dataset.num_problems={num_problems}", "logger=none",
                          "budget.num_iterations=12", *overrides])
    cfg = validate(cfg)
    problems = load_problems(cfg.dataset)
    policy = policy_wrapper(build_policy(cfg.model, cfg.seed))
    prm = prm_wrapper(build_prm(cfg.prm))
    outputs = build_strategy(cfg.strategy).search(problems, policy, prm, RunSpec.of(cfg))
    return policy, prm, outputs


def _answered(policy) -> set[str]:
    """Every text the policy was asked to continue, followed by one of the samples it gave for that request."""
    return {request.prefix + sample.text for call in policy.log for request, samples in call for sample in samples}


def _view(outputs):
    return [([(c.text, c.steps, c.step_scores, c.finish_reason, c.tokens) for c in o.completions],
             {k: v for k, v in o.compute.as_dict().items() if k != "prm_tokens"}) for o in outputs]


@pytest.mark.parametrize("strategy", TREE_STRATEGIES)
@pytest.mark.parametrize("seed", [0, 1])
def test_per_problem_schedule_is_the_lockstep_search(strategy, seed):
    lockstep_policy, lockstep_prm, lockstep = _run(strategy, RecordingPolicy)
    policy, prm, streamed = _run(strategy, lambda inner: StreamingPolicy(inner, seed), ["strategy.schedule=per_problem"])
    assert _view(streamed) == _view(lockstep)
    # each completion is a prefix the search sent plus a sample given for that very request (answers not mixed up)
    for run_policy, run in ((lockstep_policy, lockstep), (policy, streamed)):
        answered = _answered(run_policy)
        assert all(c.text in answered for o in run for c in o.completions)
    assert policy.stats.generated_tokens == lockstep_policy.stats.generated_tokens
    # the PRM read the same candidates; its tokens are shared out per call, so only the total is exact per problem
    assert prm.stats.tokens == lockstep_prm.stats.tokens == sum(o.compute.prm_tokens for o in streamed)
    [stream] = policy.streams
    assert stream.interleaved > 0, "no problem ever ran ahead of another"
    iterations = sum(o.compute.backend_calls for o in lockstep)  # problem-iterations (rollout rounds included)
    assert lockstep_prm.calls <= prm.calls < iterations
    assert stream.closed_with == 0


def test_lockstep_schedule_ignores_streaming():
    policy, prm, outputs = _run("beam", lambda inner: StreamingPolicy(inner, 0), ["strategy.schedule=lockstep"])
    lockstep_policy, lockstep_prm, lockstep = _run("beam", RecordingPolicy)
    assert _view(outputs) == _view(lockstep)
    assert prm.calls == lockstep_prm.calls  # one PRM call per iteration, for every problem at once
    assert policy.stats.calls == lockstep_policy.stats.calls and not policy.streams  # batched calls, no stream


class FailingPRM(CountingPRM):
    def score(self, problems, step_lists):
        if self.calls == 2:
            raise RuntimeError("PRM failed")
        return super().score(problems, step_lists)


def test_a_failed_search_drops_what_is_in_flight():
    holder = {}

    def wrap(inner):
        holder["policy"] = StreamingPolicy(inner, 0)
        return holder["policy"]

    with pytest.raises(RuntimeError, match="PRM failed"):
        _run("beam", wrap, ["strategy.schedule=per_problem"], prm_wrapper=FailingPRM)
    [stream] = holder["policy"].streams
    assert stream.closed_with is not None and stream.closed_with > 0 and stream.in_flight == 0


def test_unknown_schedule_is_refused_naming_the_key():
    cfg = compose_config(["strategy=beam", "strategy.schedule=async"])
    with pytest.raises(ConfigError, match="strategy.schedule"):
        validate(cfg)
