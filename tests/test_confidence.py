"""Confidence measures and the aggregations built on them, on hand-made cases (docs/confidence.md)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from graded import graded

from tts.confidence.measures import (
    completion_confidence,
    for_record,
    group_confidence,
    lowest_group,
    self_certainty,
    step_lowest_groups,
    step_token_lengths,
    summarize,
    token_confidence,
)
from tts.scoring import ScoringSettings, aggregate_metrics, score_problem, selection_probabilities


def _rows(confidences, k=4):
    """(tokens, k) log-probabilities whose token confidence is each of `confidences`: k equal-ish values."""
    return np.array([[-c] * k for c in confidences], dtype=np.float32)


# -- measures ---------------------------------------------------------------------------------------------------------


def test_token_confidence_and_self_certainty_rise_as_the_distribution_peaks():
    flat = np.log(np.full((3, 4), 0.25))
    peaked = np.log(np.array([[0.97, 0.01, 0.01, 0.01]] * 3))
    assert token_confidence(peaked).mean() > token_confidence(flat).mean()
    assert self_certainty(flat) == pytest.approx(0.0, abs=1e-12)  # uniform over the k tokens: no divergence
    assert self_certainty(peaked) > 1.0


def test_step_lowest_uses_the_groups_of_group_confidence():
    rng = np.random.default_rng(0)
    confidence = rng.random(50)
    steps = [7, 13, 10, 20]
    window = 16
    lowest = step_lowest_groups(confidence, steps, window)
    ends = np.cumsum(steps)
    # a step ending before the first full window holds the one group of the trace cut there: its mean so far
    assert lowest[0] == pytest.approx(confidence[:7].mean())
    # the steps where full windows end hold their lowest, and together the trace's lowest group
    assert min(v for v, end in zip(lowest, ends) if end >= window) == pytest.approx(
        lowest_group(group_confidence(confidence, window))
    )
    assert lowest[3] == pytest.approx(group_confidence(confidence, window)[ends[2] - window + 1 :].min())
    # a trace shorter than the window: its last step holds the trace's one group (its mean)
    short = step_lowest_groups(confidence[:12], [5, 7], window)
    assert short == pytest.approx([confidence[:5].mean(), confidence[:12].mean()])
    assert step_lowest_groups(confidence[:3], [3, 0], window)[1] is None


@pytest.mark.parametrize("tokens", [10, 16, 60])
def test_summarize_agrees_with_the_measures_for_short_and_long_traces(tokens):
    rng = np.random.default_rng(tokens)
    top = np.sort(np.log(rng.dirichlet(np.ones(4), size=tokens)), axis=1)[:, ::-1]
    confidence = token_confidence(top)
    groups = group_confidence(confidence, 16)
    summary = summarize(top, [tokens // 2, tokens - tokens // 2], window=16, tail=8)
    assert summary["mean"] == pytest.approx(confidence.mean())
    assert summary["lowest_group"] == pytest.approx(groups.min())
    assert summary["bottom10"] == pytest.approx(np.sort(groups)[: max(1, len(groups) // 10)].mean())
    assert summary["tail"] == pytest.approx(confidence[-8:].mean())
    assert summary["self_certainty"] == pytest.approx(self_certainty(top))
    assert summary["step_lowest"][-1] >= summary["lowest_group"] - 1e-12


def test_step_token_lengths_are_exact_at_output_boundaries_and_proportional_inside():
    # two outputs, the first holds two steps: its 10 tokens are split by characters (8 and 12 chars of 20)
    pieces = [("aaaaaa\n\nbbbbbbbbbb\n\n", 10), ("cccc", 3)]
    assert step_token_lengths(pieces, ["aaaaaa", "bbbbbbbbbb", "cccc"]) == [4, 6, 3]
    assert sum(step_token_lengths([("x y z", 7)], ["x y z"])) == 7


def test_completion_confidence_concatenates_outputs_and_rounds_for_the_record():
    a, b = _rows([1.0, 1.0, 1.0]), _rows([2.0, 2.0])
    summary = completion_confidence([("s1\n\n", a), ("s2", b)], ["s1", "s2"], window=2048, tail=2048)
    assert summary is not None
    assert summary["mean"] == pytest.approx(1.4)
    assert summary["step_lowest"] == pytest.approx([1.0, 1.4])
    assert completion_confidence([("s1", a), ("s2", None)], ["s1", "s2"], 2048, 2048) is None
    assert completion_confidence([("s1", a), ("s2", _rows([1.0], k=2))], ["s1", "s2"], 2048, 2048) is None
    full = summarize(_rows([1 / 3, 2 / 3]), [2])
    assert for_record(full)["mean"] == 0.5 and for_record({"x": 1 / 3})["x"] == 0.33333


def test_a_record_keeps_a_summary_whose_size_grows_with_steps_not_tokens():
    """What a completion's record gains does not grow with its tokens (the arrays are never kept), only with its steps
    (benchmarks/confidence_cost.py prints the bytes at n=256)."""
    rng = np.random.default_rng(0)

    def size(tokens, steps):
        top = np.sort(np.log(rng.dirichlet(np.ones(5), size=tokens)), axis=1)[:, ::-1]
        summary = completion_confidence([("step\n\n" * steps, top)], ["step"] * steps, 2048, 2048)
        return len(json.dumps(summary))

    assert abs(size(100, 6) - size(5000, 6)) <= 12  # rounding may drop a trailing digit here and there
    assert size(100, 12) > size(100, 6) + 6 * 5


# -- aggregations -----------------------------------------------------------------------------------------------------


def _confidence(lowest, certainty):
    return [{"lowest_group": c, "self_certainty": s, "mean": c} for c, s in zip(lowest, certainty)]


def _score(keys, correct, lowest, certainty, **settings):
    return score_problem(graded(keys, keys, correct, [0.5] * len(keys), confidence=_confidence(lowest, certainty)),
                         ScoringSettings(**settings))


def test_deepconf_keeps_the_most_confident_traces_then_weights_their_votes():
    # ten traces: "b" has the majority, "a" the two most confident traces
    keys = ["a", "a", "b", "b", "b", "b", "b", "b", "c", "c"]
    lowest = [3.0, 2.9, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5]
    correct = {"a": True, "b": False, "c": False}
    scores = _score(keys, correct, lowest, [0.0] * 10, deepconf_eta=(10, 20, 90))
    assert scores.predictions["maj@10"] == "b"
    assert scores.predictions["deepconf10@10"] == "a"  # keeps ceil(1.0) = 1 trace
    assert scores.predictions["deepconf20@10"] == "a"  # keeps 2: both "a"
    assert scores.predictions["deepconf90@10"] == "b"  # keeps 9: 6.0 for "b" against 5.9 for "a"
    assert scores.expected["deepconf10@10"] == 1.0 and scores.expected["maj@10"] == 0.0
    # at n' = 1 every aggregation is the sample itself
    assert scores.expected["deepconf10@1"] == pytest.approx(0.2)


def test_deepconf_weights_by_confidence_among_the_kept():
    # all four kept (eta 90 of 4 = ceil 3.6): two confident "a" outweigh three unsure "b"? 2 * 2.0 > 3 * 1.0
    keys = ["b", "a", "b", "a", "b"]
    scores = _score(keys, {"a": True, "b": False}, [1.0, 2.0, 1.0, 2.0, 0.1], [0.0] * 5, deepconf_eta=(90,))
    assert scores.predictions["deepconf90@5"] == "a" and scores.predictions["maj@5"] == "b"


def test_kept_traces_vote_even_at_zero_confidence_and_others_never_do():
    # the kept trace (top 10% of 10: one) has confidence 0 (a certain top-1 token everywhere): its answer still wins
    keys = ["a", "b", "b", "b", "b", "b", "b", "b", "b", "b"]
    scores = _score(keys, {"a": True, "b": False}, [0.0] + [-1.0] * 9, [0.0] * 10)
    assert scores.predictions["deepconf10@10"] == "a"


def test_self_certainty_picks_the_most_certain_trace_exactly_at_every_n():
    keys = ["a", "b", "b", "c"]
    certainty = [0.2, 0.9, 0.1, 0.5]
    correct = {"a": True, "b": False, "c": True}
    scores = _score(keys, correct, [1.0] * 4, certainty)
    assert scores.predictions["self_certainty@4"] == "b"
    for k in (2, 4):  # expected accuracy: the closed form over all k-subsets
        exact = float(np.dot(selection_probabilities(certainty, k), [1.0, 0.0, 0.0, 1.0]))
        assert scores.expected[f"self_certainty@{k}"] == pytest.approx(exact)


@pytest.mark.parametrize("power,winner", [(0.5, "b"), (2.0, "a")])
def test_borda_votes_by_self_certainty_rank(power, winner):
    # a is most certain (rank 1 of 3: 3 ** p), b ranks 2 and 3 (2 ** p + 1): p = 0.5 gives b 2.41 > 1.73, p = 2 a 9 > 5
    keys = ["a", "b", "b"]
    scores = _score(keys, {"a": True, "b": False}, [1.0] * 3, [0.9, 0.5, 0.1], borda_power=power)
    assert scores.predictions["borda_sc@3"] == winner


def test_confidence_aggregations_need_every_completion_to_carry_confidence_and_change_nothing_else():
    keys = ["a", "b", "b", "a", None, "c", "a", "b"]
    correct = {"a": True, "b": False, "c": False}
    scores = [0.3, 0.8, 0.1, 0.7, 0.9, 0.2, 0.4, 0.6]
    plain = score_problem(graded(keys, keys, correct, scores), ScoringSettings(seed=3))
    confidence = _confidence(np.linspace(1, 2, 8), np.linspace(2, 1, 8))
    with_conf = score_problem(graded(keys, keys, correct, scores, confidence=confidence), ScoringSettings(seed=3))
    for name, value in plain.expected.items():
        assert with_conf.expected[name] == value  # the same subsets, the same figures
    assert {name.split("@")[0] for name in with_conf.expected} == {
        "naive", "weighted", "maj", "deepconf10", "deepconf90", "self_certainty", "borda_sc"
    }
    partial = score_problem(graded(keys, keys, correct, [0.5] * 8, confidence=[*confidence[:7], None]),
                            ScoringSettings(seed=3))
    assert set(partial.expected) == set(plain.expected)


def test_without_a_prm_naive_and_weighted_are_not_reported():
    keys = ["a", "b", "b"]
    scores = score_problem(graded(keys, keys, {"a": True, "b": False}, [0.0] * 3), ScoringSettings(prm_scored=False))
    assert {name.split("@")[0] for name in scores.expected} == {"maj"}
    metrics = aggregate_metrics([_record(scores)], 3)
    assert "acc/maj@3" in metrics and not any("naive" in m or "weighted" in m for m in metrics)


def test_metrics_report_confidence_aggregations_beside_the_others():
    keys = ["a", "b", "b", "a"]
    scores = _score(keys, {"a": True, "b": False}, [2.0, 1.0, 1.0, 2.0], [1.0, 0.0, 0.0, 1.0])
    metrics = aggregate_metrics([_record(scores)], 4)
    names = [m for m in metrics if m.startswith("acc/") and m.endswith("@4")]
    assert names == [f"acc/{a}@4" for a in ("naive", "weighted", "maj", "deepconf10", "deepconf90", "self_certainty",
                                             "borda_sc")]
    assert metrics["acc/deepconf10@4"] == 1.0 and math.isfinite(metrics["acc_ci95/borda_sc@4"])


def _record(scores):
    from tts.data.records import ProblemSummary

    return ProblemSummary(unique_id="p", scores=scores, compute={})


# -- records ----------------------------------------------------------------------------------------------------------


def test_records_round_trip_byte_for_byte_with_and_without_confidence(tmp_path):
    import gzip

    from tts.data.problem import Problem
    from tts.data.records import Completion, ProblemRecord, Scores
    from tts.store.writer import RunDirectory

    summary = {"mean": 1.5, "lowest_group": 1.25, "bottom10": 1.25, "tail": 1.5, "self_certainty": 0.75,
               "step_lowest": [1.25, None]}
    completions = [Completion(text="a\n\nb", steps=["a", "b"], step_scores=[0.5, 0.25], finish_reason="eos", tokens=3,
                              answer="b", key="b", answer_rule="boxed", correct=True, confidence=summary),
                   Completion(text="c", steps=["c"], step_scores=[0.5], finish_reason="eos", tokens=1)]
    assert "confidence" not in completions[1].to_json()  # written only when present: older records stay as they were
    assert list(completions[0].to_json())[-1] == "confidence"
    scores = Scores(predictions={"maj@1": "b"}, correct={"maj@1": True}, expected={"maj@1": 1.0},
                    ungraded={"maj@1": 0.0}, pass_at={"pass@1": 1.0})
    problem = Problem(unique_id="u/1", problem="p", answer="b", solution="s", subject="Algebra", level=1)
    record = ProblemRecord.graded(problem, completions, scores, compute={"generated_tokens": 4}, ungraded_answers=0)
    for name in ("first", "second"):
        with RunDirectory(tmp_path / name) as directory:
            directory.open({"test": 1})
            directory.append([record] if name == "first" else RunDirectory(tmp_path / "first").records())
    read = RunDirectory(tmp_path / "second").records()
    assert read == [record] and read[0].completions[0].confidence == summary and read[0].completions[1].confidence is None

    def batches(path):
        return [gzip.decompress(p.read_bytes()) for p in sorted((path / "results").glob("batch-*.jsonl.gz"))]

    assert batches(tmp_path / "first") == batches(tmp_path / "second")


@pytest.mark.parametrize("override,key", [
    ("scoring.deepconf_eta=[0,90]", "scoring.deepconf_eta"),
    ("scoring.deepconf_eta=[10,10]", "scoring.deepconf_eta"),
    ("scoring.deepconf_measure=median", "scoring.deepconf_measure"),
    ("scoring.confidence_window=0", "scoring.confidence_window"),
    ("scoring.confidence_tail=-5", "scoring.confidence_tail"),
    ("scoring.borda_power=-1", "scoring.borda_power"),
])
def test_bad_confidence_knobs_are_refused_naming_the_key(override, key):
    from conftest import typed_config

    from tts.config.schema import ConfigError

    with pytest.raises(ConfigError, match=f"config key '{key}'"):
        typed_config([override])
