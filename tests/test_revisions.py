"""Sequential revisions: chain layout, context budget, budget fairness, batching, the sim's revisions, run(cfg),
and the analysis figures of issue 8."""

from __future__ import annotations


import pytest
from conftest import compose_config, typed_config

from tts.backends import build_policy
from tts.backends.base import GenerationOutput, GenerationRequest
from tts.backends.sim import SimPolicy
from tts.backends.sim import is_right
from tts.backends.sim import SimPolicyConfig
from tts.config.schema import ConfigError
from tts.config.validate import validate
from tts.data.synthetic import generate_problems
from tts.grading import extract_answer
from tts.pipeline import run
from tts.prms import build_prm
from tts.search import revisions
from tts.search.base import RunSpec
from tts.search.revisions import context, revision_request
from tts.store.writer import RunDirectory

PROBLEMS = generate_problems(12, seed=21)


class Recorder:
    """A policy that records every backend call (the requests of each `generate`) and passes it on."""

    def __init__(self, policy):
        self.policy, self.calls = policy, []

    def generate(self, requests):
        self.calls.append(list(requests))
        return self.policy.generate(requests)


def _records(path):
    return RunDirectory(path).records()


def test_revisions_per_chain_must_divide_n():
    with pytest.raises(ConfigError, match="strategy.revisions_per_chain"):
        validate(compose_config(["strategy=revisions", "n=6", "strategy.revisions_per_chain=4"]))
    validate(compose_config(["strategy=revisions", "n=8", "strategy.revisions_per_chain=4"]))


def test_context_keeps_the_newest_attempts_within_the_budget():
    attempts = [GenerationOutput(f"a{i}", "eos", t) for i, t in enumerate([30, 50, 20, 40])]
    assert [a.text for a in context(attempts, 1000)] == ["a0", "a1", "a2", "a3"]
    assert [a.text for a in context(attempts, 60)] == ["a2", "a3"]      # oldest dropped first, order kept
    assert [a.text for a in context(attempts, 109)] == ["a2", "a3"]     # a1 would overflow: stop there
    assert context(attempts, 39) == []                                  # even the newest does not fit


def test_chains_batching_and_context_budget():
    cfg = typed_config(["strategy=revisions", "n=8", "strategy.revisions_per_chain=4",
                        "strategy.revision_context_tokens=150", "budget.max_tokens=120"])
    policy = Recorder(build_policy(cfg.model, cfg.seed))
    outputs = revisions.Revisions(cfg.strategy).search(PROBLEMS, policy, build_prm(cfg.prm), RunSpec.of(cfg))
    # one backend call per round for all chains of all problems: 1 sampling call + 3 revision rounds
    assert len(policy.calls) == 4
    assert [len(c) for c in policy.calls] == [len(PROBLEMS)] + [2 * len(PROBLEMS)] * 3
    assert all(r.n == 2 for r in policy.calls[0]) and all(r.n == 1 for c in policy.calls[1:] for r in c)
    dropped = 0
    for problem, output in zip(PROBLEMS, outputs):
        completions = output.completions
        assert len(completions) == 8  # n generations in all, never more
        layout = [(c.extra["chain"], c.extra["position"]) for c in completions]
        assert layout == [(chain, position) for chain in range(2) for position in range(4)]
        assert all(c.tokens <= 120 for c in completions)
        assert output.compute.generated_tokens == sum(c.tokens for c in completions)
        assert output.compute.backend_calls == 4
        for c in completions:
            held, tokens = c.extra["context_attempts"], c.extra["context_tokens"]
            assert tokens <= 150 and held <= c.extra["position"]
            chain = [d for d in completions if d.extra["chain"] == c.extra["chain"]]
            shown = chain[c.extra["position"] - held : c.extra["position"]]  # the newest `held` previous attempts
            assert tokens == sum(d.tokens for d in shown)
            dropped += held < c.extra["position"]
    assert dropped  # the budget was tight enough to drop old attempts
    # the prompts hold exactly those attempts, oldest first and newest last
    last_round = policy.calls[3]
    output = outputs[0]
    for chain in range(2):
        prompt = last_round[chain].problem
        attempts = [c for c in output.completions if c.extra["chain"] == chain]
        held = attempts[3].extra["context_attempts"]
        shown = [a.text.strip() for a in attempts[3 - held : 3]]
        positions = [prompt.index(text) for text in shown]
        assert positions == sorted(positions) and prompt.count("<attempt>") == held
        assert PROBLEMS[0].problem in prompt


def test_one_attempt_per_chain_is_best_of_n():
    cfg = typed_config(["strategy=revisions", "n=4", "strategy.revisions_per_chain=1"])
    policy = build_policy(cfg.model, cfg.seed)
    prm = build_prm(cfg.prm)
    chains = revisions.Revisions(cfg.strategy).search(PROBLEMS, policy, prm, RunSpec.of(cfg))
    bon_cfg = typed_config(["strategy=best_of_n", "n=4"])
    from tts.search import best_of_n

    plain = best_of_n.BestOfN(bon_cfg.strategy).search(PROBLEMS, build_policy(bon_cfg.model, 0), build_prm(bon_cfg.prm),
                                                       RunSpec.of(bon_cfg))
    assert [[c.text for c in o.completions] for o in chains] == [[c.text for c in o.completions] for o in plain]


def _revise(problem, attempt, k, cfg):
    shown = [GenerationOutput(attempt, "eos", 10)]
    return [revision_request(problem.problem, shown, RunSpec.of(cfg), cfg.strategy, seed_offset=j) for j in range(k)]


def test_sim_revisions_fix_and_break_as_configured():
    problems = generate_problems(40, seed=22)
    cfg = typed_config(["strategy=revisions"])
    # a policy that (almost) never slips on a step: a found error is always fixed, so fixes happen at revision_fix_prob
    policy = SimPolicy(SimPolicyConfig(skill=30.0, revision_fix_prob=0.5, revision_break_prob=0.2))
    plans = [policy.plan(p.problem) for p in problems]
    wrong = ["\n\n".join(plan.steps[:-1] + (policy.wrong_step(plan, plan.steps[-1], 2),)) for plan in plans]
    from_right = policy.generate([r for p in problems for r in _revise(p, p.solution, 25, cfg)])
    from_wrong = policy.generate([r for p, w in zip(problems, wrong) for r in _revise(p, w, 25, cfg)])
    each = [plan for plan in plans for _ in range(25)]
    kept = sum(is_right(plan, o[0].text) for plan, o in zip(each, from_right)) / len(each)
    fixed = [is_right(plan, o[0].text) for plan, o in zip(each, from_wrong)]
    assert kept == pytest.approx(0.8, abs=0.04)
    assert sum(fixed) / len(fixed) == pytest.approx(0.5, abs=0.04)
    # a revision that does not find the error repeats it: the same wrong answer as the attempt it revised
    stuck = [(extract_answer(o[0].text), plan) for o, plan, ok in zip(from_wrong, each, fixed) if not ok]
    assert stuck and all(answer == plan.wrong_answers[2] for answer, plan in stuck)
    for o in from_right:  # a revision is a full solution in the system prompt's format
        assert o[0].text.startswith("## Step 1:") and "\\boxed{" in o[0].text


def test_sim_solves_afresh_when_no_attempt_fits_the_context():
    cfg = typed_config(["strategy=revisions"])
    policy = SimPolicy(SimPolicyConfig())
    empty = [revision_request(p.problem, [], RunSpec.of(cfg), cfg.strategy, seed_offset=5) for p in PROBLEMS]
    fresh = [GenerationRequest(messages=[{"role": "user", "content": p.problem}], seed=cfg.seed + 5) for p in PROBLEMS]
    assert [o[0].text for o in policy.generate(empty)] == [o[0].text for o in policy.generate(fresh)]
    assert all("<attempt>" not in r.problem for r in empty)


def test_sim_fixes_fall_with_difficulty():
    problems = generate_problems(150, seed=23)
    cfg = typed_config(["strategy=revisions"])
    policy = SimPolicy(SimPolicyConfig(revision_fix_prob=0.9))
    hopeless = "## Step 1: no idea\n\n\\boxed{0}"
    outputs = policy.generate([r for p in problems for r in _revise(p, hopeless, 8, cfg)])
    by_level: dict[int, list[bool]] = {}
    for i, p in enumerate(problems):
        plan = policy.plan(p.problem)
        by_level.setdefault(p.level, []).extend(is_right(plan, o[0].text) for o in outputs[8 * i : 8 * i + 8])
    rate = {level: sum(v) / len(v) for level, v in by_level.items()}
    assert rate[1] > rate[5] + 0.3


def test_run_revisions_end_to_end_and_figures(tmp_path):
    common = ["n=8", "dataset.num_problems=30", "logger=none"]
    for length in (1, 2, 8):
        metrics = run(compose_config(common + ["strategy=revisions", f"strategy.revisions_per_chain={length}"]),
                      run_dir=tmp_path / f"rev{length}")
        assert metrics["compute/backend_calls"] == pytest.approx(length)
        for record in _records(tmp_path / f"rev{length}"):
            assert len(record.completions) == 8
            assert max(c.extra["position"] for c in record.completions) == length - 1
            assert {"naive@8", "weighted@8", "maj@8"} <= set(record.scores.correct)
    run(compose_config(common + ["strategy=filter_vote"]), run_dir=tmp_path / "fv")
    run(compose_config(common + ["strategy=best_of_n"]), run_dir=tmp_path / "bon")

    from analysis.runs import load_local
    from analysis.sequential import make_figures, ratio_points, vote_points

    dirs = [tmp_path / name for name in ("rev1", "rev2", "rev8", "fv", "bon")]
    written = make_figures(dirs, tmp_path / "figs")
    assert {p.name for p in written} == {"sequential_ratio_level.png", "filter_vote_calls_level.png"}
    assert all(p.stat().st_size > 10_000 for p in written)
    # the same figures from the analysis package's table (the knob varies, so the loader keeps its column)
    table = load_local(dirs).problems
    assert {p.name for p in make_figures(table, tmp_path / "figs2")} == {p.name for p in written}
    points = ratio_points(table)
    assert sorted(points.L.unique()) == [1, 2, 8] and len(points) == 3 * 30
    # Chen-style curve: filter-vote with k samples costs 2k calls, the plain vote k
    votes = vote_points(table)
    assert set(votes.method) == {"filter-vote", "majority vote"}
    assert (votes[votes.method == "filter-vote"].calls == 2 * votes[votes.method == "filter-vote"].k).all()
