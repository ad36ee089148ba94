"""The adaptive strategies without a reward model: DeepConf online and early-stopping self-consistency.

A scripted policy decides every trace's answer and per-step confidence, so each test knows exactly when a strategy
must stop a trace or stop sampling, and can check that every token the policy generated is in the records.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import compose_config, typed_config
from tts.backends import build_policy
from tts.backends.base import GenerationOutput, PolicyBackend
from tts.config.keys import option_schemas
from tts.config.schema import ConfigError
from tts.data import load_problems
from tts.data.problem import Problem
from tts.grading import AnswerGrader
from tts.pipeline import grade_batch, run
from tts.prms import build_prm
from tts.search import build_strategy
from tts.search.base import RunSpec
from tts.search.tree import SEED_STRIDE
from tts.store.writer import RunDirectory

STEPS = 3  # steps before the boxed answer
TOKENS = 3  # tokens per step
K = 4  # top log-probabilities per token
# the strategies that decide their own number of samples and report their own answer (a new one is covered)
ADAPTIVE = sorted(name for name, schema in option_schemas("strategy").items() if schema.adaptive)


class ScriptedPolicy(PolicyBackend):
    """Trace t of a problem (seed offset SEED_STRIDE * s, sample t - s) writes some steps then `\\boxed{answer}`;
    `script(problem, t)` gives (answer, the token confidence of each step, the boxed one last). With a stop string it
    writes one step per request, continuing the prefix. `sizes` logs every request's (problem, n)."""

    def __init__(self, script, seed: int = 0) -> None:
        super().__init__()
        self.script = script
        self.seed = seed
        self.sizes: list[tuple[str, int]] = []

    def _generate(self, requests):
        self.sizes.extend((r.problem, r.n) for r in requests)
        return [[self._write(r, j) for j in range(r.n)] for r in requests]

    def _write(self, request, j):
        trace = (request.seed - self.seed) // SEED_STRIDE + j
        answer, confidences = self.script(request.problem, trace)
        done = request.prefix.count("\n\n")
        steps = len(confidences) - 1
        pieces = [f"Step {i + 1}: some work.\n\n" for i in range(steps)] + [f"So the answer is $\\boxed{{{answer}}}$."]
        todo = pieces[done:] if not request.stop else pieces[done : done + 1]
        rows = [np.full((TOKENS, K), -confidences[done + i], dtype=np.float32) for i in range(len(todo))]
        finished = done + len(todo) == len(pieces)
        return GenerationOutput(
            text="".join(todo),
            finish_reason="eos" if finished else "stop",
            num_tokens=TOKENS * len(todo),
            top_logprobs=np.concatenate(rows) if request.top_logprobs else None,
        )


def problems(count: int = 2) -> list[Problem]:
    return [Problem(unique_id=f"p{i}", problem=f"Problem {i}", answer="7") for i in range(count)]


def search(strategy: str, script, overrides=(), count: int = 2):
    cfg = typed_config([f"strategy={strategy}", "logger=none", *overrides])
    policy = ScriptedPolicy(script, cfg.seed)
    outputs = build_strategy(cfg.strategy).search(problems(count), policy, _NoPRM(), RunSpec.of(cfg))
    return cfg, policy, outputs


class _NoPRM:
    """Scores every step 0.5 and counts nothing (these strategies need no verifier)."""

    class stats:
        tokens = 0

    def score(self, problems, step_lists):
        return [[[0.5] * len(steps) for steps in per] for per in step_lists]


def flat(confidence: float) -> list[float]:
    return [confidence] * (STEPS + 1)


def assert_exact_compute(policy, outputs):
    """Every generated token is in some problem's compute, and in the completion of the trace that wrote it."""
    assert sum(o.compute.generated_tokens for o in outputs) == policy.stats.generated_tokens
    for o in outputs:
        assert o.compute.generated_tokens == sum(c.tokens for c in o.completions)
        assert o.compute.traces_generated == len(o.completions)


def test_deepconf_stops_after_the_warmup_when_it_agrees():
    cfg, policy, outputs = search(
        "deepconf", lambda p, t: ("7", flat(2.0)), ["n=32", "strategy.warmup=8", "strategy.tau=0.95"]
    )
    for o in outputs:
        assert len(o.completions) == 8 and o.note and "8 of 32" in o.note
        assert o.compute.traces_used == 8 and o.compute.traces_stopped == 0
    assert policy.stats.calls == 1  # the warm-up call only
    assert_exact_compute(policy, outputs)


def test_deepconf_spends_the_budget_when_the_vote_stays_split():
    cfg, policy, outputs = search(
        "deepconf", lambda p, t: (str(t % 2), flat(2.0)), ["n=12", "strategy.warmup=4", "strategy.wave=3"]
    )
    for o in outputs:
        assert len(o.completions) == 12 and o.note is None
        assert o.compute.traces_stopped == 0 and o.compute.traces_used == 12
        assert [c.extra["deepconf"] for c in o.completions] == ["warmup"] * 4 + ["kept"] * 8
    # online traces go step by step (4 requests each), 3 in flight per problem, both problems in every call: traces
    # 4-6 take rounds 1-4, 7-9 rounds 5-8, 10-11 rounds 9-12, after the one warm-up call
    assert policy.stats.calls == 1 + 12
    assert policy.stats.requests == 2 * (1 + 8 * 4)
    assert_exact_compute(policy, outputs)


def test_deepconf_stops_low_confidence_traces_at_the_first_step_boundary():
    # even traces are unsure (confidence 1) and answer 1; odd ones are sure (5) and split between 2 and 3, so the
    # vote never agrees (tau = 1) and every online trace is checked
    def script(problem, t):
        return ("1", flat(1.0)) if t % 2 == 0 else (str(2 + (t // 2) % 2), flat(5.0))

    cfg, policy, outputs = search(
        "deepconf", script, ["n=16", "strategy.warmup=8", "strategy.eta=50", "strategy.tau=1.0"]
    )
    for o in outputs:
        assert len(o.completions) == 16
        online = o.completions[8:]
        stopped = [c for c in online if c.extra["deepconf"] == "stopped"]
        assert len(stopped) == 4 and o.compute.traces_stopped == 4
        assert all(c.tokens == TOKENS and not c.vote for c in stopped)  # one step, then cut
        # the threshold (median of 1 and 5) keeps the sure warm-up traces and drops the unsure ones from the vote
        assert [c.vote for c in o.completions[:8]] == [False, True] * 4
        assert o.compute.traces_used == 8
    assert_exact_compute(policy, outputs)


def test_deepconf_window_catches_a_dip_inside_a_trace():
    # warm-up traces are flat at 2 (the threshold); online traces are surer but dip in their second step: with a
    # one-step window the dip is a group of its own (0.5) and they stop right after it; with a window longer than the
    # trace the group is the running mean (2.75 after the dip), above the threshold, and they finish
    def script(problem, t):
        return (str(t % 2), flat(2.0) if t < 4 else [5.0, 0.5, 5.0, 5.0])

    base = ["n=8", "strategy.warmup=4", "strategy.eta=90", "strategy.tau=1.0"]
    _, policy, outputs = search("deepconf", script, [*base, f"scoring.confidence_window={TOKENS}"])
    for o in outputs:
        assert [c.extra["deepconf"] for c in o.completions[4:]] == ["stopped"] * 4
        assert all(c.tokens == 2 * TOKENS for c in o.completions[4:])
    assert_exact_compute(policy, outputs)
    _, _, outputs = search("deepconf", script, [*base, "scoring.confidence_window=2048"])
    assert all(c.extra["deepconf"] == "kept" for o in outputs for c in o.completions[4:])


def test_deepconf_cancels_traces_in_flight_when_the_vote_agrees():
    # warm-up split 2-2 with low confidence; online traces answer 7 with high confidence. Trace 4 answers at once
    # (9 of 13: not yet 0.8), trace 8 takes its place; when traces 5-7 finish (36 of 40) the vote agrees with trace 8
    # three steps in: it is cut, its tokens counted, and no further trace starts
    def script(problem, t):
        if t < 4:
            return str(t % 2), flat(1.0)
        return "7", [9.0] if t == 4 else flat(9.0)

    _, policy, outputs = search("deepconf", script, ["n=32", "strategy.warmup=4", "strategy.wave=4", "strategy.tau=0.8"])
    for o in outputs:
        assert [c.extra["deepconf"] for c in o.completions] == ["warmup"] * 4 + ["kept"] * 4 + ["cancelled"]
        assert o.completions[-1].tokens == 3 * TOKENS and not o.completions[-1].vote
        assert len(o.completions) == 9 and o.note and "agreed" in o.note
        assert o.compute.traces_used == 8 and o.compute.traces_stopped == 0
    assert_exact_compute(policy, outputs)


def test_esc_stops_at_the_first_unanimous_window():
    # problem 0: every sample agrees -> one window; problem 1: answers differ in every window -> the whole budget
    def script(problem, t):
        return ("7", flat(1.0)) if problem == "Problem 0" else (str(t % 3), flat(1.0))

    cfg, policy, outputs = search("esc", script, ["n=12", "strategy.window=4"])
    agreed, split = outputs
    assert len(agreed.completions) == 4 and "window 1 agreed after 4 of 12" in agreed.note
    assert len(split.completions) == 12 and split.note is None
    assert [c.extra["esc_window"] for c in split.completions] == [0] * 4 + [1] * 4 + [2] * 4
    assert policy.stats.calls == 3  # one call per round, both problems in the first
    assert_exact_compute(policy, outputs)


def test_esc_last_window_is_cut_to_the_budget():
    _, policy, outputs = search("esc", lambda p, t: (str(t % 2), flat(1.0)), ["n=10", "strategy.window=4"], count=1)
    assert len(outputs[0].completions) == 10 and outputs[0].note is None
    assert [n for _, n in policy.sizes] == [4, 4, 2]


@pytest.mark.parametrize("strategy", ADAPTIVE)
def test_runs_end_to_end_on_the_embedded_default(strategy, tmp_path):
    cfg = compose_config([f"strategy={strategy}", "prm=none", "n=8", "dataset.num_problems=6", "logger=none"])
    metrics = run(cfg, run_dir=tmp_path)
    records = RunDirectory(tmp_path).records()
    assert 0.0 <= metrics["acc/final"] <= 1.0
    assert metrics["tokens/generated"] == sum(r.compute["generated_tokens"] for r in records)
    assert metrics["traces/generated"] == np.mean([len(r.completions) for r in records])
    assert metrics["tokens/prm"] == 0 and "acc/weighted@8" not in metrics  # prm=none: nothing scored
    for r in records:
        assert (len(r.completions) < 8) == bool(r.note)
        assert "final" in r.scores.expected
        assert all(c.confidence is not None for c in r.completions)  # the sim's log-probabilities, summarised


def _final_and_majority(signal: float, problems: int = 30, n: int = 32, seeds=(0, 1)):
    """Per problem, mean over seeds: deepconf's own answer (defaults) and maj@n of best-of-N on the same problems."""
    grader = AnswerGrader(timeout=5.0)
    final, majority = [], []
    try:
        for seed in seeds:
            common = [f"n={n}", f"seed={seed}", f"dataset.num_problems={problems}", "prm=none", "logger=none",
                      f"model.backend.confidence_signal={signal}"]
            graded = {}
            for strategy in ("deepconf", "best_of_n"):
                cfg = typed_config([*common, f"strategy={strategy}"])
                chosen = load_problems(cfg.dataset)
                outputs = build_strategy(cfg.strategy).search(
                    chosen, build_policy(cfg.model, cfg.seed), build_prm(cfg.prm), RunSpec.of(cfg)
                )
                graded[strategy] = grade_batch(chosen, outputs, grader, cfg)
            final.append([r.scores.expected["final"] for r in graded["deepconf"]])
            majority.append([r.scores.expected[f"maj@{n}"] for r in graded["best_of_n"]])
    finally:
        grader.close()
    return np.mean(final, axis=0), np.mean(majority, axis=0)


@pytest.mark.parametrize("signal,gains", [(0.0, False), (2.0, True)])
def test_deepconf_beats_majority_only_when_confidence_carries_signal(signal, gains):
    # the null: with confidence_signal=0 the sim's confidence says nothing about correctness, and deepconf's accuracy
    # must not be above majority's beyond the 95% interval of the paired difference; the control (a strong signal)
    # shows the same comparison can detect a gain
    final, majority = _final_and_majority(signal)
    difference = final - majority
    half_width = 1.96 * difference.std(ddof=1) / math.sqrt(len(difference))
    assert (difference.mean() - half_width > 0) == gains, (difference.mean(), half_width)


@pytest.mark.parametrize("override,key", [
    ("strategy.eta=0", "strategy.eta"),
    ("strategy.tau=1.5", "strategy.tau"),
    ("strategy.warmup=0", "strategy.warmup"),
    ("strategy.wave=0", "strategy.wave"),
    ("model.top_logprobs=0", "model.top_logprobs"),
])
def test_invalid_deepconf_configs_fail_before_generating(override, key):
    with pytest.raises(ConfigError, match=f"config key '{key}'"):
        typed_config(["strategy=deepconf", override])


def test_analysis_compares_own_answers_with_majority_by_tokens(tmp_path):
    from analysis import plots
    from analysis.runs import accuracy_table, load_local, long_points

    metrics = {}
    for strategy in (*ADAPTIVE, "best_of_n"):
        cfg = compose_config([f"strategy={strategy}", "n=8", "dataset.num_problems=6", "logger=none"])
        metrics[strategy] = run(cfg, run_dir=tmp_path / strategy)
    table = accuracy_table(long_points(load_local(tmp_path).problems))
    for strategy in ADAPTIVE:
        rows = table[table.strategy == strategy]
        # one point each, at the run's budget, with the tokens it actually generated and its own answer's accuracy
        assert list(rows.aggregation) == ["final"] and list(rows.budget) == [8]
        assert rows.tokens_per_problem.iloc[0] == pytest.approx(metrics[strategy]["tokens/generated_per_problem"])
        assert rows.accuracy.iloc[0] == pytest.approx(metrics[strategy]["acc/final"])
    majority = table[(table.strategy == "best_of_n") & (table.aggregation == "maj")]
    assert sorted(majority.budget) == [1, 2, 4, 8]  # fixed-n majority at every budget, to compare against
    assert plots.accuracy_vs_tokens(table, tmp_path / "accuracy_vs_tokens.png").exists()


def test_final_is_the_weighted_vote_of_the_completions_that_vote():
    from graded import graded

    from tts.scoring import score_problem

    keys = ["a", "b", "b", "a"]
    correct = {"a": False, "b": True}

    def final(weights):
        scores = score_problem(graded(keys, keys, correct, [0.0] * 4, weight=weights))
        return scores.predictions["final"], scores.expected["final"]

    assert final([3.0, 1.0, 1.0, 0.0]) == ("a", 0.0)  # 3 against 2
    assert final([1.0, 1.0, 1.0, 0.0]) == ("b", 1.0)  # the fourth does not vote: 1 against 2
    assert final([0.0, 0.0, 0.0, 0.0]) == (None, 0.0)  # nobody votes: no answer
