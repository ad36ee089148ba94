"""Scoring on hand-built cases: reductions, the three selections and their tie-breaks, acc@n' and pass@n'."""

from __future__ import annotations

import json
import math

import pytest
from graded import graded

from tts.data.records import ProblemSummary
from tts.scoring import (ScoringSettings, aggregate_metrics, budgets, pass_at_k, reduce_scores, score_problem,
                         select_majority, select_naive, select_weighted)


@pytest.mark.parametrize("how,expected", [("last", 0.5), ("min", 0.2), ("prod", 0.9 * 0.2 * 0.5), ("mean", 1.6 / 3)])
def test_reductions(how, expected):
    assert reduce_scores([0.9, 0.2, 0.5], how) == pytest.approx(expected)


def test_reduction_of_no_steps_is_zero_and_unknown_is_an_error():
    assert reduce_scores([], "last") == 0.0
    with pytest.raises(ValueError, match="scoring.reduction"):
        reduce_scores([0.1], "median")


def test_budgets_are_powers_of_two_up_to_n():
    assert budgets(1) == [1]
    assert budgets(16) == [1, 2, 4, 8, 16]
    assert budgets(6) == [1, 2, 4, 6]


def test_naive_weighted_and_majority_disagree_as_designed():
    keys = ["a", "b", "b", "c", "a", "b"]
    scores = [0.95, 0.3, 0.3, 0.1, 0.9, 0.3]
    assert select_naive(scores) == 0               # single best score
    assert keys[select_weighted(keys, scores)] == "a"  # 1.85 for a vs 0.9 for b
    assert keys[select_majority(keys)] == "b"       # three votes


def test_ties_go_to_the_first_completion():
    assert select_naive([0.5, 0.7, 0.7]) == 1
    assert select_majority(["x", "y", "y", "x"]) == 0
    assert select_weighted(["x", "y"], [0.4, 0.4]) == 0


def test_no_answer_never_wins_a_vote():
    assert select_majority([None, None, "z"]) == 2
    assert select_majority([None, None]) == -1


def test_pass_at_k_unbiased():
    assert pass_at_k(4, 0, 2) == 0.0
    assert pass_at_k(4, 4, 1) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(4, 2))
    assert pass_at_k(5, 3, 3) == 1.0


def test_score_problem_prefix_and_expected_estimates():
    keys = ["w", "r", "r", "w"]
    answers = ["1", "2", "2", "1"]
    record = score_problem(graded(keys, answers, {"r": True, "w": False}, [0.2, 0.9, 0.8, 0.1]),
                           ScoringSettings(draws=400, seed=0))
    assert record.predictions["naive@1"] == "1" and record.correct["naive@1"] is False   # first completion
    assert record.correct["naive@4"] is True and record.correct["weighted@4"] is True
    assert record.correct["maj@4"] is False   # 2-2 tie goes to the first seen, "w"
    assert record.expected["naive@1"] == pytest.approx(0.5, abs=0.08)   # half the completions are right
    assert record.expected["naive@4"] == 1.0
    assert record.pass_at["pass@2"] == pytest.approx(1 - 1 / 6)


def test_ungraded_prediction_is_not_counted_as_wrong_silently():
    record = score_problem(graded(["k"], ["10^{10^{10}}"], {"k": None}, [0.5]))
    assert record.correct["maj@1"] is None
    assert record.ungraded["maj@1"] == 1.0


def test_aggregate_metrics_names_and_values():
    good = ProblemSummary("good", score_problem(graded(["r", "r"], ["2", "2"], {"r": True}, [0.9, 0.8])),
                          {"generated_tokens": 10, "prm_tokens": 4})
    bad = ProblemSummary("bad", score_problem(graded(["w", None], ["1", None], {"w": False}, [0.9, 0.1])),
                         {"generated_tokens": 6, "prm_tokens": 2})
    metrics = aggregate_metrics([good, bad], n=2)
    for name in ("acc/naive@2", "acc/weighted@2", "acc/maj@2", "acc/maj@1", "pass@2", "acc_prefix/maj@2"):
        assert metrics[name] == pytest.approx(0.5)
    assert metrics["tokens/generated"] == 16 and metrics["tokens/prm"] == 6


# -- the registry of aggregations -------------------------------------------------------------------------------------


def test_a_new_aggregation_is_one_registered_function_reported_by_scoring_tracking_and_analysis(tmp_path, capsys):
    """Registering a rule is all it takes: the pipeline scores it, metrics.json, the console line, the W&B summaries
    and the analysis tables carry it, and figures name it by its label."""
    import numpy as np

    from analysis.plots import agg_label
    from analysis.runs import accuracy_table, load_local, long_points
    from conftest import compose_config
    from tts.pipeline import run
    from tts.scoring import SubsetView, aggregation, unregister
    from tts.store.writer import RunDirectory
    from tts.tracking.live import RunningFigures
    from tts.tracking.tracker import artifact_metadata, at_own_n

    @aggregation("shortest", label="shortest completion (fewest tokens)")
    def shortest(view: SubsetView) -> np.ndarray:
        """The answer of the completion with the fewest generated tokens."""
        return view.highest(-np.array([c.tokens for c in view.problem.completions], dtype=float))

    try:
        metrics = run(compose_config(["n=4", "dataset.num_problems=6", "logger=none"]), run_dir=tmp_path / "run")
        on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
        assert on_disk["acc/shortest@4"] == metrics["acc/shortest@4"]
        assert {"acc/shortest@1", "acc/shortest@2", "acc_prefix/shortest@4"} <= set(metrics)
        assert "shortest " in capsys.readouterr().out  # the run's one-line summary
        records = RunDirectory(tmp_path / "run").records()
        for record in records:
            fewest = min(record.completions, key=lambda c: c.tokens)
            first = next(c for c in record.completions if c.key == fewest.key)
            assert record.scores.predictions["shortest@4"] == first.answer
        assert at_own_n(metrics, 4)["acc_at_n/shortest"] == metrics["acc/shortest@4"]
        config = {"n": 4, "seed": 0, **{part: {"name": "x"} for part in ("strategy", "model", "prm", "dataset")}}
        assert artifact_metadata(config, metrics)["acc_shortest"] == metrics["acc/shortest@4"]
        figures = RunningFigures(4, len(records))
        figures.add(records)
        assert figures.row()["progress/acc_shortest@4"] == pytest.approx(metrics["acc/shortest@4"])
        sweep = load_local([str(tmp_path / "run")])
        assert sweep.runs["acc/shortest@4"].iloc[0] == pytest.approx(metrics["acc/shortest@4"])
        table = accuracy_table(long_points(sweep.problems))
        assert set(table[table.aggregation == "shortest"].budget) == {1, 2, 4}
        assert agg_label("shortest") == "shortest completion (fewest tokens)"
    finally:
        unregister("shortest")


def test_the_registry_orders_names_and_labels_families():
    from tts.scoring import aggregation_label, find_aggregation, report_rank, reported_aggregations

    assert find_aggregation("deepconf37").name == "deepconf" and find_aggregation("deepconf") is None
    assert aggregation_label("deepconf37") == "DeepConf vote, top 37% confident"
    assert sorted(["borda_sc", "mine", "deepconf90", "maj", "deepconf10", "final"], key=report_rank) == [
        "maj", "deepconf10", "deepconf90", "borda_sc", "final", "mine"]
    # summaries show neither the diagnostic unfiltered vote nor what is reported once (final) or unknown
    names = ["acc/maj_unfiltered@4", "acc/maj@4", "acc/final", "acc/mine@4", "acc/deepconf10@4", "acc/naive@4"]
    assert reported_aggregations(names) == ["naive", "maj", "deepconf10"]
