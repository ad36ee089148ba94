"""Invariants of the tree searches (beam, DVTS, lookahead, REBASE) on the simulated world, with the real config.

The policy and PRM are wrapped to record every backend call, so the tests check what was actually sent: one backend
call and one PRM call per iteration for all problems of a batch, never more than N samples in flight per problem,
and compute records that add up to what the backends spent.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

from conftest import compose_config
from tts.backends import build_policy
from tts.backends.base import PolicyBackend
from tts.config.schema import ConfigError
from tts.config.validate import validate
from tts.data import load_problems
from tts.grading import extract_answer
from tts.pipeline import run
from tts.prms import build_prm
from tts.search import build_strategy
from tts.search.base import RunSpec
from tts.search.base import allocate
from tts.store.writer import RunDirectory

TREE_STRATEGIES = ["beam", "dvts", "lookahead", "rebase", "particle_filtering"]


class RecordingPolicy(PolicyBackend):
    """The sim policy, with a log of every call: [(request, outputs), ...] per call."""

    def __init__(self, inner) -> None:
        super().__init__()
        self.inner = inner
        self.log: list[list[tuple]] = []

    def _generate(self, requests):
        outputs = self.inner._generate(requests)
        self.log.append(list(zip(requests, outputs)))
        return outputs


class CountingPRM:
    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls = 0

    @property
    def stats(self):
        return self.inner.stats

    def score(self, problems, step_lists):
        self.calls += 1
        return self.inner.score(problems, step_lists)


def _search(strategy: str, overrides: list[str] = (), num_problems: int = 6, n: int = 8):
    cfg = compose_config([f"strategy={strategy}", f"n={n}", f"dataset.num_problems={num_problems}", "logger=none",
                          *overrides])
    cfg = validate(cfg)
    problems = load_problems(cfg.dataset)
    policy = RecordingPolicy(build_policy(cfg.model, cfg.seed))
    prm = CountingPRM(build_prm(cfg.prm))
    outputs = build_strategy(cfg.strategy).search(problems, policy, prm, RunSpec.of(cfg))
    return cfg, problems, policy, prm, outputs


@pytest.mark.parametrize("strategy", TREE_STRATEGIES)
def test_exactly_n_finished_completions_and_exact_compute(strategy):
    cfg, problems, policy, prm, outputs = _search(strategy)
    assert len(outputs) == len(problems)
    tokens = defaultdict(int)
    for call in policy.log:
        for request, samples in call:
            tokens[request.problem] += sum(o.num_tokens for o in samples)
    for problem, output in zip(problems, outputs):
        assert len(output.completions) == cfg.n and output.note is None
        for c in output.completions:
            # finished: an answer, or the reason it has none is recorded
            assert extract_answer(c.text) is not None or c.finish_reason in ("truncated", "length"), c
            assert c.finish_reason in ("eos", "stop", "length", "truncated")
            assert len(c.steps) == len(c.step_scores) > 0
            assert all(0.0 <= s <= 1.0 for s in c.step_scores)
        assert output.compute.generated_tokens == tokens[problem.problem]
    assert sum(o.compute.generated_tokens for o in outputs) == policy.stats.generated_tokens
    assert sum(o.compute.prm_tokens for o in outputs) == prm.stats.tokens > 0


@pytest.mark.parametrize("strategy", ["beam", "dvts", "rebase", "particle_filtering"])
@pytest.mark.parametrize("search_batch_size", [None, 2])
def test_one_backend_call_and_one_prm_call_per_iteration(strategy, search_batch_size):
    size = "null" if search_batch_size is None else search_batch_size
    cfg, problems, policy, prm, outputs = _search(strategy, [f"strategy.search_batch_size={size}"])
    chunk = search_batch_size or len(problems)
    chunks = [outputs[i : i + chunk] for i in range(0, len(outputs), chunk)]
    # iterations of a chunk = calls its longest-running problem took part in; one call each, shared by the chunk
    iterations = sum(max(o.compute.backend_calls for o in part) for part in chunks)
    assert policy.stats.calls == len(policy.log) == iterations == prm.calls
    first = {request.problem for request, _ in policy.log[0]}
    assert first == {p.problem for p in problems[:chunk]}  # the first call carries every problem of the chunk
    for call in policy.log:  # never more than N samples in flight per problem
        in_flight = defaultdict(int)
        for request, _ in call:
            in_flight[request.problem] += request.n
        assert max(in_flight.values()) <= cfg.n
        assert len(in_flight) <= chunk


def test_beam_keeps_n_in_flight_and_prunes_to_n_over_m():
    cfg, problems, policy, _, outputs = _search("beam", ["strategy.beam_width=4"], n=16)
    for call in policy.log[1:-1]:  # after the root: N / M survivors, M children each (N in flight)
        per_problem = defaultdict(list)
        for request, _ in call:
            per_problem[request.problem].append(request.n)
        for ns in per_problem.values():
            assert sum(ns) == 16 and len(ns) <= 4
    for output in outputs:  # the best N finished beams, best first
        from tts.scoring import reduce_scores

        scores = [reduce_scores(c.step_scores, cfg.scoring.reduction) for c in output.completions]
        assert scores == sorted(scores, reverse=True)


def test_dvts_subtrees_return_their_finished_siblings():
    cfg, problems, policy, _, outputs = _search("dvts", ["strategy.beam_width=4"], n=16)
    for output in outputs:
        assert len(output.completions) == 16
        assert all(c.finish_reason != "truncated" for c in output.completions)
    # each subtree asks for M candidates per iteration; writing the unfinished siblings out asks for one each
    assert {request.n for call in policy.log for request, _ in call} <= {1, 4}
    # the N / M subtrees all start at the root, yet must not draw the same candidates (each gets its own seed)
    first = defaultdict(list)
    for request, samples in policy.log[0]:
        first[request.problem].append(tuple(o.text for o in samples))
    assert all(len(sets) == 4 for sets in first.values())
    assert any(len(set(sets)) > 1 for sets in first.values())
    assert len({request.seed for request, _ in policy.log[0]}) == 4


class RaggedPolicy(PolicyBackend):
    """Solutions of uneven length (unlike the sim's, whose paths all end at the same depth): a sample boxes an answer
    at the next step with probability 1/2, fixed by (prefix, seed, sample)."""

    def _generate(self, requests):
        from tts.backends.base import GenerationOutput
        from tts.data.synthetic import stable_uniform

        outputs = []
        for request in requests:
            samples = []
            for k in range(request.n):
                depth = request.prefix.count("\n\n")
                if request.stop is None:
                    text = "Finishing the work.\n\nSo $\\boxed{%d}$." % depth
                elif stable_uniform(request.seed, request.prefix, k) < 0.5:
                    text = "The answer is $\\boxed{%d}$." % depth
                else:
                    text = "Step %d: keep going with %d.\n\n" % (depth, k)
                reason = "stop" if request.stop and text.endswith("\n\n") else "eos"
                samples.append(GenerationOutput(text=text, finish_reason=reason, num_tokens=len(text.split())))
            outputs.append(samples)
        return outputs


def test_dvts_writes_unfinished_siblings_to_the_end():
    cfg = validate(compose_config(["strategy=dvts", "n=16", "strategy.beam_width=4", "dataset.num_problems=4",
                                   "logger=none"]))
    problems = load_problems(cfg.dataset)
    policy = RecordingPolicy(RaggedPolicy())
    outputs = build_strategy(cfg.strategy).search(problems, policy, CountingPRM(build_prm(cfg.prm)), RunSpec.of(cfg))
    for output in outputs:
        assert len(output.completions) == 16
        for c in output.completions:  # never a half-written sibling
            assert c.finish_reason in ("eos", "stop") and extract_answer(c.text) is not None, c
    finishing = [request for call in policy.log for request, _ in call if request.stop is None and request.n == 1]
    assert finishing  # siblings were written out, one sample each, in the shared per-iteration call
    assert len(policy.log) < cfg.budget.num_iterations


def test_lookahead_counts_rollout_tokens_and_k0_is_beam_search():
    k = 2
    cfg, problems, policy, prm, outputs = _search("lookahead", [f"strategy.lookahead={k}"])
    rollout = defaultdict(int)
    for call in policy.log:
        for request, samples in call:
            if request.temperature == 0.0:
                rollout[request.problem] += sum(o.num_tokens for o in samples)
    assert sum(rollout.values()) > 0
    for problem, output in zip(problems, outputs):
        assert output.compute.rollout_tokens == rollout[problem.problem]
        # rollout text is compute only: it never ends up in a completion
        assert output.compute.generated_tokens > sum(c.tokens for c in output.completions)
    # 1 + k backend rounds per iteration (the last iteration has no rollout); still one PRM call per iteration
    assert prm.calls < len(policy.log) <= (1 + k) * prm.calls

    beam = _search("beam")[4]
    plain = _search("lookahead", ["strategy.lookahead=0"])[4]
    assert [[c.text for c in o.completions] for o in plain] == [[c.text for c in o.completions] for o in beam]
    assert [o.compute for o in plain] == [o.compute for o in beam]


@pytest.mark.parametrize("strategy", TREE_STRATEGIES)
def test_deterministic_per_seed(strategy):
    def texts(seed):
        return [[c.text for c in o.completions] for o in _search(strategy, [f"seed={seed}"], num_problems=4)[4]]

    assert texts(0) == texts(0)
    assert texts(0) != texts(1)


@pytest.mark.parametrize("strategy", TREE_STRATEGIES)
def test_last_iteration_writes_to_the_end(strategy):
    # two iterations: too few for any synthetic solution step by step, so the second writes every node to the end
    cfg, _, policy, _, outputs = _search(strategy, ["budget.num_iterations=2"], num_problems=4)
    assert all(request.stop is None for request, _ in policy.log[-1])
    for output in outputs:
        assert len(output.completions) == cfg.n
        assert all(extract_answer(c.text) is not None for c in output.completions)


def test_max_tokens_cuts_beams_with_length():
    cfg, _, _, _, outputs = _search("beam", ["budget.max_tokens=40"], num_problems=4)
    reasons = {c.finish_reason for o in outputs for c in o.completions}
    assert "length" in reasons
    assert all(c.tokens <= 40 for o in outputs for c in o.completions)


def test_rebase_temperature_trades_diversity_for_exploitation():
    def distinct(temperature):
        outputs = _search("rebase", [f"strategy.rebase_temperature={temperature}"], n=16)[4]
        return sum(len({c.text for c in o.completions}) for o in outputs)

    assert distinct(0.01) < distinct(100.0)


def test_filter_duplicates_gives_more_distinct_beams():
    def distinct(flag):
        outputs = _search("beam", [f"strategy.filter_duplicates={flag}"], n=16)[4]
        return sum(len({c.text for c in o.completions}) for o in outputs)

    assert distinct("true") >= distinct("false")


@pytest.mark.parametrize("total,weights",
                         [(16, [0.5, 0.3, 0.2]), (7, [1.0, 1.0, 1.0]), (5, [0.0, 0.0]), (3, [1e-9, 1.0])])
def test_allocate_hands_out_exactly_the_budget(total, weights):
    counts = allocate(total, weights)
    assert sum(counts) == total and all(c >= 0 for c in counts)


def test_pipeline_totals_match_records(tmp_path):
    cfg = compose_config(["strategy=lookahead", "n=4", "dataset.num_problems=5", "logger=none"])
    metrics = run(cfg, run_dir=tmp_path)
    records = RunDirectory(tmp_path).records()
    assert all(len(r.completions) == 4 for r in records)
    assert metrics["tokens/generated"] == sum(r.compute["generated_tokens"] for r in records)
    assert metrics["tokens/prm"] == sum(r.compute["prm_tokens"] for r in records) > 0
    # the run's calls: each problem's saved share of them adds up to the total, which is at least the calls any one
    # problem took part in (a problem need not take part in every call of its batch) and at most
    # their sum (every call serves at least one problem)
    calls = [r.compute["backend_calls"] for r in records]
    assert metrics["compute/backend_calls"] == pytest.approx(sum(r.compute["backend_calls_share"] for r in records))
    assert max(calls) <= metrics["compute/backend_calls"] <= sum(calls)


@pytest.mark.parametrize("overrides,key", [
    (["strategy=beam", "n=6", "strategy.beam_width=4"], "strategy.beam_width"),
    (["strategy=dvts", "n=2", "strategy.beam_width=4"], "strategy.beam_width"),
    (["strategy=lookahead", "n=8", "strategy.beam_width=3"], "strategy.beam_width"),
    (["strategy=lookahead", "strategy.lookahead=-1"], "strategy.lookahead"),
    (["strategy=beam", "+strategy.lookahead=2"], "strategy.lookahead"),  # a knob of another strategy
    (["strategy=rebase", "strategy.rebase_temperature=0"], "strategy.rebase_temperature"),
    (["strategy=rebase", "strategy.rebase_temperature=-1.5"], "strategy.rebase_temperature"),
    (["strategy=particle_filtering", "strategy.weight_temperature=0"], "strategy.weight_temperature"),
    (["strategy=particle_filtering", "strategy.resampling=stratified"], "strategy.resampling"),
    (["strategy=particle_filtering", "strategy.reward_transform=exp"], "strategy.reward_transform"),
    (["strategy=particle_filtering", "+strategy.beam_width=4"], "strategy.beam_width"),
])
def test_invalid_search_configs_fail_before_generating(overrides, key, tmp_path):
    cfg = compose_config([*overrides, "logger=none", "dataset.num_problems=2"])
    with pytest.raises(ConfigError, match=f"config key '{key}'"):
        run(cfg, run_dir=tmp_path)
    assert not (tmp_path / "results").exists()
