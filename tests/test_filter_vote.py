"""Filter-vote: verdict parsing, the filtered majority in scoring, the sim's reviews, budget accounting, run(cfg)."""

from __future__ import annotations

import collections

import pytest
from conftest import compose_config, typed_config
from graded import graded

from tts.backends.base import GenerationRequest
from tts.backends.sim import SimPolicy
from tts.backends.sim import is_right
from tts.backends.sim import SimPolicyConfig
from tts.config.schema import ConfigError
from tts.config.validate import validate
from tts.data.synthetic import generate_problems
from tts.pipeline import run
from tts.scoring import ScoringSettings, score_problem
from tts.search.filter_vote import fill, parse_verdict, review_request
from tts.search.base import RunSpec
from tts.store.writer import RunDirectory

REVIEW = typed_config(["strategy=filter_vote"])


@pytest.mark.parametrize("text, verdict", [
    ("The steps hold.\n\nVerdict: [[correct]]", "correct"),
    ("I found a mistake.\n\nVerdict: [[wrong]]", "wrong"),
    ("Verdict: [[ Correct ]]", "correct"),                       # case and spaces inside the brackets
    ("[[WRONG]] ... so, once more: [[wrong]]", "wrong"),         # the same verdict twice is still one verdict
    ("", "unparsed"),                                            # none
    ("The solution looks fine to me.", "unparsed"),              # none: no brackets
    ("correct", "unparsed"),                                     # a bare word is not a verdict
    ("Verdict: [[correct]] or [[wrong]]", "unparsed"),           # both
    ("Verdict: [[corect]]", "unparsed"),                         # garbled
    ("Verdict: [[incorrect]]", "unparsed"),                      # not one of the two asked for
    ("Verdict: [correct]", "unparsed"),                          # single brackets
    ("Verdict: [[correct]", "unparsed"),                         # cut off
])
def test_verdict_parsing(text, verdict):
    assert parse_verdict(text) == verdict


def test_fill_keeps_latex_braces_and_never_substitutes_inside_values():
    out = fill("P: {problem} S: {solution} \\boxed{x} {other}", problem="$\\frac{1}{2}$ {solution}", solution="s")
    assert out == "P: $\\frac{1}{2}$ {solution} S: s \\boxed{x} {other}"


def test_filtered_majority_votes_only_answers_judged_correct_and_falls_back_to_all():
    keys = ["a", "b", "b", "b", "a"]
    answers = ["A", "B", "B", "B", "A"]
    truth = {"a": True, "b": False}
    draws = ScoringSettings(draws=50)
    plain = score_problem(graded(keys, answers, truth, [0.5] * 5), draws)
    assert plain.correct["maj@5"] is False and "maj_unfiltered@5" not in plain.correct
    filtered = score_problem(graded(keys, answers, truth, [0.5] * 5, vote=[True, False, False, False, True]), draws)
    assert filtered.correct["maj@5"] is True and filtered.correct["maj_unfiltered@5"] is False
    assert filtered.correct["weighted@5"] is False  # the PRM's selections do not look at verdicts
    nobody = score_problem(graded(keys, answers, truth, [0.5] * 5, vote=[False] * 5), draws)
    assert nobody.correct["maj@5"] is False and nobody.expected["maj@5"] == plain.expected["maj@5"]
    # a completion judged correct without an answer cannot vote: the subset falls back to everybody
    no_answer = score_problem(graded([None, "b", "b"], [None, "B", "B"], {"b": True}, [0.1] * 3,
                                     vote=[True, False, False]))
    assert no_answer.correct["maj@3"] is True
    # at K < n the fallback is per subset: K=1 subsets are their own vote whatever the verdict
    assert filtered.expected["maj@1"] == pytest.approx(filtered.expected["maj_unfiltered@1"])


def _solutions(policy, problems, n):
    requests = [GenerationRequest(messages=[{"role": "user", "content": p.problem}], n=n, seed=3) for p in problems]
    return policy.generate(requests)


def _reviews(policy, problems, solutions, cfg):
    requests = [review_request(p.problem, o.text, RunSpec.of(cfg), cfg.strategy, seed_offset=j)
                for p, samples in zip(problems, solutions) for j, o in enumerate(samples)]
    return [r[0].text for r in policy.generate(requests)]


def test_sim_verdicts_are_right_as_often_as_configured():
    problems = generate_problems(150, seed=11)
    policy = SimPolicy(SimPolicyConfig(verify_accuracy=0.75, verify_difficulty_sensitivity=0.0,
                                       verify_unparsed_prob=0.1))
    solutions = _solutions(policy, problems, 8)
    verdicts = [parse_verdict(t) for t in _reviews(policy, problems, solutions, REVIEW)]
    truths = [is_right(policy.plan(p.problem), o.text) for p, samples in zip(problems, solutions) for o in samples]
    assert 0.3 < sum(truths) / len(truths) < 0.95  # both kinds of solution are reviewed
    parsed = [(v == "correct") == t for v, t in zip(verdicts, truths) if v != "unparsed"]
    assert sum(parsed) / len(parsed) == pytest.approx(0.75, abs=0.03)
    assert verdicts.count("unparsed") / len(verdicts) == pytest.approx(0.1, abs=0.02)
    # right and wrong solutions alike: verdict accuracy does not depend on which one was reviewed
    on_right = [(v == "correct") for v, t in zip(verdicts, truths) if v != "unparsed" and t]
    on_wrong = [(v == "wrong") for v, t in zip(verdicts, truths) if v != "unparsed" and not t]
    assert abs(sum(on_right) / len(on_right) - sum(on_wrong) / len(on_wrong)) < 0.07


def test_sim_verdicts_fall_towards_chance_on_hard_problems():
    problems = generate_problems(200, seed=12)
    policy = SimPolicy(SimPolicyConfig(verify_accuracy=0.95, verify_difficulty_sensitivity=1.0,
                                       verify_unparsed_prob=0.0))
    solutions = _solutions(policy, problems, 6)
    verdicts = iter(parse_verdict(t) for t in _reviews(policy, problems, solutions, REVIEW))
    by_level = collections.defaultdict(list)
    for p, samples in zip(problems, solutions):
        for o in samples:
            by_level[p.level].append((next(verdicts) == "correct") == is_right(policy.plan(p.problem), o.text))
    accuracy = {level: sum(v) / len(v) for level, v in by_level.items()}
    assert accuracy[1] > 0.85 and accuracy[5] < accuracy[1] - 0.1


def test_sim_reads_the_solution_from_the_prompt_text():
    problem = generate_problems(1, seed=13)[0]
    policy = SimPolicy(SimPolicyConfig(verify_accuracy=1.0, verify_difficulty_sensitivity=0.0,
                                       verify_unparsed_prob=0.0))
    right = review_request(problem.problem, problem.solution, RunSpec.of(REVIEW), REVIEW.strategy, 0)
    wrong_solution = problem.solution.replace(problem.answer, problem.answer + "1")
    wrong = review_request(problem.problem, wrong_solution, RunSpec.of(REVIEW), REVIEW.strategy, 0)
    outputs = policy.generate([right, wrong])
    assert [parse_verdict(o[0].text) for o in outputs] == ["correct", "wrong"]


def test_review_prompt_must_have_both_placeholders():
    with pytest.raises(ConfigError, match="strategy.review_prompt"):
        validate(compose_config(["strategy=filter_vote", "strategy.review_prompt='check {problem}'"]))


def test_run_filter_vote_counts_review_tokens_and_votes_only_accepted_answers(tmp_path):
    common = ["n=8", "dataset.num_problems=24", "logger=none", "model.backend.verify_unparsed_prob=0.1"]
    metrics = run(compose_config(common + ["strategy=filter_vote"]), run_dir=tmp_path / "fv")
    run(compose_config(common + ["strategy=best_of_n"]), run_dir=tmp_path / "bon")
    records = RunDirectory(tmp_path / "fv").records()
    plain = RunDirectory(tmp_path / "bon").records()
    verdicts = collections.Counter()
    for record, baseline in zip(records, plain):
        completions = record.completions
        assert len(completions) == 8
        # the samples are best-of-n's (same request and seed); the reviews come on top of them
        assert [c.text for c in completions] == [c.text for c in baseline.completions]
        review_tokens = sum(c.extra["review_tokens"] for c in completions)
        assert review_tokens > 0 and record.compute["review_tokens"] == review_tokens
        assert record.compute["generated_tokens"] == sum(c.tokens for c in completions) + review_tokens
        for c in completions:
            verdicts[c.extra["verdict"]] += 1
            assert c.vote == (c.extra["verdict"] == "correct")
            assert ("review" in c.extra) == (c.extra["verdict"] == "unparsed")
        # the recorded maj@8 is the vote among accepted answers (all when none is accepted)
        voters = [c for c in completions if c.vote and c.key is not None] or \
                 [c for c in completions if c.key is not None]
        counts = collections.Counter(c.key for c in voters)
        best = max(counts.values())
        winners = {c.key for c in voters if counts[c.key] == best}
        # the prediction is written as the first completion with the winning key wrote it (voter or not)
        predicted = next(c.key for c in completions if c.answer == record.scores.predictions["maj@8"])
        assert predicted in winners
        assert record.scores.predictions["maj_unfiltered@8"] == baseline.scores.predictions["maj@8"]
    assert verdicts["correct"] and verdicts["wrong"] and verdicts["unparsed"]
    assert metrics["compute/backend_calls"] == pytest.approx(2.0)  # one batch: one sampling call, one review call
    assert "acc/maj_unfiltered@8" in metrics
    assert metrics["tokens/generated"] > sum(r.compute["generated_tokens"] for r in plain)
