"""acc/naive@K is exact (closed form over all K-subsets), and every aggregation at K = 1 is the mean correctness."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest
from graded import graded

from tts.scoring import ScoringSettings, score_problem, selection_probabilities


def _brute_force_naive(scores, correct, k):
    """Mean over every K-subset of the correctness of its highest-scored completion (first on ties)."""
    subsets = list(itertools.combinations(range(len(scores)), k))
    wins = sum(correct[max(s, key=lambda i: (scores[i], -i))] for s in subsets)
    return Fraction(wins, len(subsets))


def _problem(scores, correct, draws=200, seed=0, mask=None):
    keys = [f"k{i}" for i in range(len(scores))]  # every answer distinct: votes cannot hide the naive pick
    verdicts = {key: bool(c) for key, c in zip(keys, correct)}
    return score_problem(graded(keys, keys, verdicts, scores, vote=mask), ScoringSettings(draws=draws, seed=seed))


@pytest.mark.parametrize("seed", range(5))
def test_naive_at_every_k_equals_the_brute_force_mean_over_all_subsets(seed):
    rng = np.random.default_rng(seed)
    n = 8
    scores = list(rng.choice([0.1, 0.5, 0.9], size=n))  # ties on purpose
    correct = list(rng.integers(0, 2, size=n))
    record = _problem(scores, correct, draws=3, seed=seed)  # few draws: a Monte Carlo value would be far off
    for k in (1, 2, 4, 8):
        assert record.expected[f"naive@{k}"] == pytest.approx(float(_brute_force_naive(scores, correct, k)),
                                                                abs=1e-12)


def test_a_value_monte_carlo_cannot_hit_exactly():
    # scores 0.9 0.8 0.2 0.1, only the 0.8 and 0.1 completions right: naive@2 = P(0.8 wins) = 2/6 = 1/3
    record = _problem([0.9, 0.8, 0.1, 0.2], [0, 1, 1, 0])
    assert record.expected["naive@2"] == pytest.approx(1 / 3, abs=1e-15)


def test_every_aggregation_at_k1_is_the_mean_correctness():
    scores, correct = [0.3, -0.7, 0.9, 0.2, 0.5], [1, 1, 0, 0, 1]  # a negative score once broke the weighted vote
    record = _problem(scores, correct, draws=7, mask=[True, False, True, False, True])
    for aggregation in ("naive", "weighted", "maj", "maj_unfiltered"):
        assert record.expected[f"{aggregation}@1"] == pytest.approx(3 / 5, abs=1e-15), aggregation


def test_selection_probabilities_sum_to_one_and_follow_the_ranking():
    probabilities = selection_probabilities([0.2, 0.9, 0.9, 0.1], 2)
    assert probabilities.sum() == pytest.approx(1.0)
    # ranking: index 1 (0.9, first), index 2 (0.9), index 0 (0.2), index 3 (0.1); C(3-r, 1) / C(4, 2)
    assert list(probabilities) == pytest.approx([1 / 6, 3 / 6, 2 / 6, 0.0])
