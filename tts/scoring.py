"""From graded completions to predictions and accuracies: step-score reduction, selection, acc@n', pass@n'.

Pure functions, no I/O. A problem's n completions arrive with answers already extracted and mapped to canonical keys
(equivalent answers share a key), so voting counts keys, never strings.

Selection (ties are broken deterministically, always toward the completion that comes first among the n):
- naive: the completion with the highest reduced PRM score;
- weighted: the key with the largest summed reduced score (Snell et al.'s "best-of-N weighted");
- majority: the key with the most completions (self-consistency). When the strategy marks which completions may vote
  (`vote_mask`, e.g. filter-vote keeps those the policy judged correct), "maj" counts only those, falling back to all
  completions of a subset where none of them may vote (Chen et al. 2024), and "maj_unfiltered" reports the plain vote.
Completions without an answer never win a vote; if none has one, the prediction is "no answer" (wrong).

Without a reward model, from the policy's own confidence (`Completion.confidence`, docs/confidence.md), when every
completion of the problem carries it:
- deepconf<eta> (`deepconf10`, `deepconf90`; DeepConf offline, Fu et al. 2025): keep the ceil(eta% of n') most
  confident completions of the subset by `scoring.deepconf_measure` (lowest group confidence by default), then the key
  with the largest summed confidence among them;
- self_certainty: the completion with the highest self-certainty (best-of-N, Kang et al. 2025);
- borda_sc: Borda vote by self-certainty rank: of n', the completion ranked r (1 = most certain) gives its key
  (n' - r + 1) ** `scoring.borda_power` (Kang et al. 2025).
A run without a PRM (`prm=none`) reports neither naive nor weighted.

Accuracy at n' < n comes from the one run of n samples in two ways:
- prefix: the first n' completions, as the reference implementation does (one draw, high variance);
- expected: the mean correctness over all subsets of size n', with a 95% confidence half-width over problems. It is
  exact for naive and self_certainty at every n' (closed form, `selection_probabilities`), for every aggregation at
  n' = 1 (the mean correctness of the n completions) and at n' = n; for the votes at 1 < n' < n it is the mean over
  `draws` random subsets (Monte Carlo: no cheap closed form). `metrics.json` reports the expected value under
  `acc/<aggregation>@K` and the prefix value under `acc_prefix/<aggregation>@K`.
pass@n' uses the unbiased estimator 1 - C(n - c, n') / C(n, n') (Chen et al. 2021).

An adaptive strategy (deepconf, esc) decides itself how many completions to draw and gives each one a vote weight
(`final_weights`, 0 for those that do not vote): its own answer, the weighted vote over all of them, is reported as
"final" (one figure per problem, no n'), and `metrics.json` as `acc/final` over every problem, whatever number of
completions each one got. Its acc@n' figures at n' below a problem's own count are subsets of an adaptively stopped
set and say little; compare such runs by `acc/final` against `tokens/generated_per_problem`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from tts.data.records import ProblemRecord, ProblemSummary, Scores

AGGREGATIONS = ("naive", "weighted", "maj")
EXTRA_AGGREGATIONS = ("maj_unfiltered",)  # reported only by strategies that filter the vote (vote_mask)
PRM_AGGREGATIONS = ("naive", "weighted")  # need a PRM's scores: not reported with prm=none
# from the policy's confidence: reported when every completion carries it (deepconf<eta> for each scoring.deepconf_eta)
CONFIDENCE_AGGREGATIONS = ("self_certainty", "borda_sc")
DEFAULT_ETAS = (10, 90)
# metrics.json: problems prm=sim judged though dataset=synthetic did not generate them (prm.allow_foreign=true)
FOREIGN_PRM_METRIC = "warnings/prm_sim_foreign_problems"


def confidence_aggregations(etas: Sequence[int] = DEFAULT_ETAS) -> tuple[str, ...]:
    """The confidence aggregations' names, in report order, for these deepconf filter percentages."""
    return (*(f"deepconf{int(eta)}" for eta in etas), *CONFIDENCE_AGGREGATIONS)


def is_confidence_aggregation(name: str) -> bool:
    return name in CONFIDENCE_AGGREGATIONS or (name.startswith("deepconf") and name[len("deepconf") :].isdigit())


def reported_aggregations(metric_names: Iterable[str]) -> list[str]:
    """The aggregations a run's summaries show (W&B curves, progress): naive, weighted and majority where present (not
    naive and weighted with prm=none), then the confidence ones present, read off `acc/<agg>@<n'>` metric names or
    `<agg>@<n'>` score names."""
    present = {name.rsplit("@", 1)[0].removeprefix("acc/") for name in metric_names if "@" in name}
    return [a for a in AGGREGATIONS if a in present] + sorted(
        (a for a in present if is_confidence_aggregation(a)), key=confidence_rank
    )


def confidence_rank(name: str) -> tuple[int, int]:
    """deepconf<eta> by eta, then self_certainty, borda_sc."""
    if name in CONFIDENCE_AGGREGATIONS:
        return (1, CONFIDENCE_AGGREGATIONS.index(name))
    return (0, int(name[len("deepconf") :]))


def aggregation_order(names: Sequence[str]) -> list[str]:
    """`names` (distinct), in report order: the PRM and vote aggregations, the filtered vote, then the confidence
    ones in the order given."""
    known = [a for a in AGGREGATIONS + EXTRA_AGGREGATIONS if a in names]
    return known + [a for a in names if a not in known]


def reduce_scores(step_scores: Sequence[float], how: str = "last") -> float:
    """One number per solution from its per-step PRM scores. A solution with no steps scores 0."""
    if len(step_scores) == 0:
        return 0.0
    if how == "last":
        return float(step_scores[-1])
    if how == "min":
        return float(min(step_scores))
    if how == "prod":
        return float(math.prod(step_scores))
    if how == "mean":
        return float(sum(step_scores) / len(step_scores))
    raise ValueError(f"config key 'scoring.reduction': unknown reduction {how!r}; use last, min, prod or mean")


def budgets(n: int) -> list[int]:
    """The n' at which accuracy is reported: 1, 2, 4, ... up to n, and n itself."""
    ks = [1 << i for i in range(n.bit_length()) if 1 << i <= n]
    return ks if ks[-1] == n else ks + [n]


def select_naive(scores: Sequence[float]) -> int:
    """Index of the highest score (first one on ties)."""
    return int(np.argmax(np.asarray(scores, dtype=float)))


def _vote(keys: Sequence[str | None], weights: Sequence[float]) -> int:
    totals: dict[str, float] = {}
    first: dict[str, int] = {}
    for i, (key, weight) in enumerate(zip(keys, weights)):
        if key is None:
            continue
        totals[key] = totals.get(key, 0.0) + weight
        first.setdefault(key, i)
    if not totals:
        return -1
    best = max(totals, key=lambda k: (totals[k], -first[k]))
    return first[best]


def select_weighted(keys: Sequence[str | None], scores: Sequence[float]) -> int:
    """Index of the first completion whose key has the largest summed score (-1 when no completion has an answer)."""
    return _vote(keys, scores)


def select_majority(keys: Sequence[str | None]) -> int:
    """Index of the first completion whose key is the most common (-1 when no completion has an answer)."""
    return _vote(keys, [1.0] * len(keys))


def selection_probabilities(scores: Sequence[float] | np.ndarray, k: int) -> np.ndarray:
    """P(completion i is the naive pick of a uniformly random k-subset of the n completions), exactly.

    The pick is the highest score, ties to the earliest (NaN counts as highest, as in `np.argmax`). With completions
    ranked by that order, i wins exactly when it is in the subset and the r_i completions ranked above it are not:
    C(n - 1 - r_i, k - 1) / C(n, k) of the subsets.
    """
    values = np.asarray(scores, dtype=float)
    n = len(values)
    # NaN first, then by score descending, ties to the earlier index (lexsort's last key is the primary one)
    order = np.lexsort((np.arange(n), -np.nan_to_num(values), ~np.isnan(values)))
    total = math.comb(n, k)
    probabilities = np.zeros(n)
    for rank, i in enumerate(order):
        probabilities[i] = math.comb(n - 1 - rank, k - 1) / total
    return probabilities


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _encode_keys(keys: Sequence[str | None]) -> np.ndarray:
    """Keys -> small integers in order of first appearance (so argmax ties favour the earliest); -1 for no answer."""
    ids: dict[str, int] = {}
    return np.array([-1 if k is None else ids.setdefault(k, len(ids)) for k in keys], dtype=np.int64)


def _select_batch(
    subsets: np.ndarray, key_ids: np.ndarray, scores: np.ndarray, num_keys: int, vote_mask: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Vectorised selection over many subsets at once (rows of completion indices) -> winning key id per row."""
    draws, k = subsets.shape
    chosen_keys = key_ids[subsets]
    chosen_scores = scores[subsets]
    naive = chosen_keys[np.arange(draws), np.argmax(chosen_scores, axis=1)]
    result = {"naive": naive}
    if num_keys == 0:
        result["weighted"] = result["maj"] = result["maj_unfiltered"] = np.full(draws, -1)
        return result
    valid = chosen_keys >= 0
    flat = (np.arange(draws)[:, None] * num_keys + np.where(valid, chosen_keys, 0))[valid]
    counts = np.bincount(flat, minlength=draws * num_keys).reshape(draws, num_keys)
    sums = np.bincount(flat, weights=chosen_scores[valid], minlength=draws * num_keys).reshape(draws, num_keys)
    has_answer = valid.any(axis=1)
    result["maj"] = np.where(has_answer, np.argmax(counts, axis=1), -1)
    result["weighted"] = np.where(has_answer, np.argmax(sums, axis=1), -1)
    if vote_mask is not None:
        voters = valid & vote_mask[subsets]
        voters = np.where(voters.any(axis=1)[:, None], voters, valid)  # nobody may vote: everybody votes
        flat_voters = (np.arange(draws)[:, None] * num_keys + np.where(voters, chosen_keys, 0))[voters]
        filtered = np.bincount(flat_voters, minlength=draws * num_keys).reshape(draws, num_keys)
        result["maj_unfiltered"] = result["maj"]
        result["maj"] = np.where(has_answer, np.argmax(filtered, axis=1), -1)
    return result


def _vote_rows(chosen_keys: np.ndarray, weights: np.ndarray, num_keys: int, voting: np.ndarray) -> np.ndarray:
    """Per row (a subset's keys, vote weights and who may vote), the key id with the largest summed weight among the
    voting completions that have an answer (ties to the key that appeared first); -1 where no such completion."""
    draws = len(chosen_keys)
    voters = (chosen_keys >= 0) & voting
    flat = (np.arange(draws)[:, None] * num_keys + np.where(voters, chosen_keys, 0))[voters]
    sums = np.bincount(flat, weights=weights[voters], minlength=draws * num_keys).reshape(draws, num_keys)
    counts = np.bincount(flat, minlength=draws * num_keys).reshape(draws, num_keys)
    sums = np.where(counts > 0, sums, -np.inf)  # a key nobody voted for never wins, even over zero weights
    return np.where(voters.any(axis=1), np.argmax(sums, axis=1), -1)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Per row, each entry's rank by value, 0 for the highest (ties to the earlier entry)."""
    order = np.argsort(-values, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(values.shape[1])[None, :].repeat(len(values), axis=0), axis=1)
    return ranks


def _select_confidence(
    subsets: np.ndarray,
    key_ids: np.ndarray,
    num_keys: int,
    confidence: np.ndarray,
    certainty: np.ndarray,
    etas: Sequence[int],
    borda_power: float,
) -> dict[str, np.ndarray]:
    """The confidence aggregations over many subsets at once (rows of completion indices) -> winning key id per row."""
    draws, k = subsets.shape
    chosen_keys = key_ids[subsets]
    chosen_conf = confidence[subsets]
    chosen_sc = certainty[subsets]
    result = {"self_certainty": chosen_keys[np.arange(draws), np.argmax(chosen_sc, axis=1)]}
    if num_keys == 0:
        for name in confidence_aggregations(etas):
            result.setdefault(name, np.full(draws, -1))
        return result
    conf_ranks = _ranks(chosen_conf)
    for eta in etas:
        kept = conf_ranks < max(1, math.ceil(k * eta / 100))
        result[f"deepconf{int(eta)}"] = _vote_rows(chosen_keys, chosen_conf, num_keys, kept)
    borda = (k - _ranks(chosen_sc)).astype(float) ** borda_power  # rank r (1-based) votes (k - r + 1) ** p
    result["borda_sc"] = _vote_rows(chosen_keys, borda, num_keys, np.ones_like(borda, dtype=bool))
    return result


def score_problem(
    keys: Sequence[str | None],
    answers: Sequence[str | None],
    key_correct: dict[str, bool | None],
    scores: Sequence[float],
    draws: int = 200,
    seed: int = 0,
    vote_mask: Sequence[bool] | None = None,
    confidence: Sequence[dict | None] | None = None,
    deepconf_eta: Sequence[int] = DEFAULT_ETAS,
    deepconf_measure: str = "lowest_group",
    borda_power: float = 0.5,
    prm_scored: bool = True,
    final_weights: Sequence[float] | None = None,
) -> Scores:
    """Predictions and correctness of one problem at every n' (see the module docstring).

    `key_correct` maps each key to True / False / None (None: the grader timed out, "ungraded"). Returns the Scores:
    `predictions`, `correct` (prefix estimate; None where ungraded), `expected` (mean correctness over random subsets),
    `ungraded` (fraction of subsets whose prediction could not be graded) and `pass_at` (unbiased pass@n').
    `vote_mask` (one bool per completion: may it vote?) filters the "maj" vote and adds "maj_unfiltered".
    `confidence` (each completion's `Completion.confidence`) adds the confidence aggregations when every completion
    has one; `prm_scored` False (no PRM: `scores` mean nothing) leaves out naive and weighted.
    `final_weights` (one vote weight per completion) adds "final": the weighted vote, over completions of weight > 0.
    """
    n = len(keys)
    mask = None if vote_mask is None else np.asarray(vote_mask, dtype=bool)
    aggregations: tuple[str, ...] = AGGREGATIONS if mask is None else AGGREGATIONS + EXTRA_AGGREGATIONS
    if not prm_scored:
        aggregations = tuple(a for a in aggregations if a not in PRM_AGGREGATIONS)
    summaries = [c for c in confidence or () if c is not None]
    with_confidence = n > 0 and len(summaries) == n
    exact: dict[str, np.ndarray] = {"naive": np.asarray(scores, dtype=float)}  # max-score picks: closed form
    conf_arr = np.zeros(n)
    if with_confidence:
        aggregations = aggregations + confidence_aggregations(deepconf_eta)
        conf_arr = np.array([float(c[deepconf_measure]) for c in summaries])
        exact["self_certainty"] = np.array([float(c["self_certainty"]) for c in summaries])
    key_ids = _encode_keys(keys)
    names = [k for k in dict.fromkeys(k for k in keys if k is not None)]
    score_arr = exact["naive"]
    # per key id: 1 correct, 0 wrong, nan ungraded; index num_keys is "no answer" (wrong)
    as_float: dict[bool | None, float] = {True: 1.0, False: 0.0}
    outcome = np.array([as_float.get(key_correct.get(name), np.nan) for name in names] + [0.0])
    rng = np.random.default_rng(seed)
    num_correct = sum(1 for key in keys if key is not None and key_correct.get(key) is True)
    predictions: dict[str, str | None] = {}
    result = Scores(predictions=predictions, correct={}, expected={}, ungraded={}, pass_at={})
    completion_outcomes = outcome[np.where(key_ids >= 0, key_ids, len(names))]  # each completion's own correctness

    def select(rows: np.ndarray) -> dict[str, np.ndarray]:
        chosen = _select_batch(rows, key_ids, score_arr, len(names), mask)
        if with_confidence:
            chosen.update(
                _select_confidence(
                    rows, key_ids, len(names), conf_arr, exact["self_certainty"], deepconf_eta, borda_power
                )
            )
        return chosen

    for k in budgets(n):
        prefix = select(np.arange(k)[None, :])
        if k == n:
            subsets = np.arange(n)[None, :]
        else:
            subsets = np.argsort(rng.random((draws, n)), axis=1)[:, :k]
        sampled = select(subsets)
        for agg in aggregations:
            winner = int(prefix[agg][0])
            answer = answers[int(np.flatnonzero(key_ids == winner)[0])] if winner >= 0 else None
            value = outcome[winner] if winner >= 0 else 0.0
            predictions[f"{agg}@{k}"] = answer
            result.correct[f"{agg}@{k}"] = None if np.isnan(value) else bool(value)
            if k == 1 or agg in exact:
                # exact: a K-subset's best-score winner has a closed form, and at K = 1 every aggregation is the sample
                weights = selection_probabilities(exact[agg], k) if k > 1 else np.full(n, 1.0 / n)
                values = completion_outcomes
            else:  # votes at 1 < K < n: the mean over `draws` random subsets
                weights = np.full(len(subsets), 1.0 / len(subsets))
                values = outcome[np.where(sampled[agg] >= 0, sampled[agg], len(names))]
            result.ungraded[f"{agg}@{k}"] = float(np.dot(weights, np.isnan(values)))
            result.expected[f"{agg}@{k}"] = float(np.dot(weights, np.nan_to_num(values, nan=0.0)))
        result.pass_at[f"pass@{k}"] = pass_at_k(n, num_correct, k)
    if final_weights is not None:
        voting = [key if weight > 0 else None for key, weight in zip(keys, final_weights)]
        winner = _vote(voting, final_weights)
        value = outcome[int(key_ids[winner])] if winner >= 0 else 0.0
        predictions["final"] = answers[winner] if winner >= 0 else None
        result.correct["final"] = None if np.isnan(value) else bool(value)
        result.expected["final"] = float(np.nan_to_num(value, nan=0.0))
        result.ungraded["final"] = float(np.isnan(value))
    return result


def aggregate_metrics(records: Sequence[ProblemRecord | ProblemSummary], n: int) -> dict[str, float]:
    """Run-level metrics from per-problem records (or their summaries): accuracies (expected, prefix, CI), pass@n',
    token totals. The one implementation of a run's accuracy: metrics.json, merged shards and analysis all call it.

    Each figure at n' is the mean over the problems that report it. Every problem of a run normally reports every n'
    up to n; one whose search finished short (fewer completions, with a `note`) has no figures above its own count and
    is left out of those means, as are problems of strategies that do not report an aggregation (`maj_unfiltered`).
    """
    metrics: dict[str, float] = {"problems": len(records)}
    if not records:
        return metrics
    reported = aggregation_order(
        list(dict.fromkeys(name.rsplit("@", 1)[0] for r in records for name in r.scores.expected))
    )
    for k in budgets(n):
        for agg in reported:
            name = f"{agg}@{k}"
            scores = [r.scores for r in records if name in r.scores.expected]
            if not scores:
                continue
            m = len(scores)
            expected = np.array([s.expected[name] for s in scores])
            metrics[f"acc/{name}"] = float(expected.mean())
            metrics[f"acc_ci95/{name}"] = float(1.96 * expected.std(ddof=1) / math.sqrt(m)) if m > 1 else 0.0
            metrics[f"acc_prefix/{name}"] = float(np.mean([bool(s.correct[name]) for s in scores]))
            metrics[f"ungraded/{name}"] = float(np.sum([s.ungraded[name] for s in scores]))
        passes = [r.scores.pass_at[f"pass@{k}"] for r in records if f"pass@{k}" in r.scores.pass_at]
        if passes:
            metrics[f"pass@{k}"] = float(np.mean(passes))
    finals = np.array([r.scores.expected["final"] for r in records if "final" in r.scores.expected])
    if len(finals):  # an adaptive strategy's own answer, over every problem
        metrics["acc/final"] = float(finals.mean())
        metrics["acc_ci95/final"] = (
            float(1.96 * finals.std(ddof=1) / math.sqrt(len(finals))) if len(finals) > 1 else 0.0
        )
        metrics["ungraded/final"] = float(sum(r.scores.ungraded.get("final", 0.0) for r in records))
    for field in ("generated", "stopped", "used"):  # per problem, as the adaptive strategy counted them
        counts = [r.compute[f"traces_{field}"] for r in records if f"traces_{field}" in r.compute]
        if counts:
            metrics[f"traces/{field}"] = float(np.mean(counts))
    for field in ("generated", "prm", "prompt", "rollout", "review", "prm_cached"):
        metrics[f"tokens/{field}"] = float(sum(r.compute.get(f"{field}_tokens", 0) for r in records))
    # tokens/prm: given to the PRM; of which served from vLLM's prefix cache (prm_cached) or computed (prm_computed)
    metrics["tokens/prm_computed"] = metrics["tokens/prm"] - metrics["tokens/prm_cached"]
    # tokens/prompt: prompt tokens the policy's samples continued, as without reuse; of which evaluated after KV/prefix
    # reuse (prompt_computed). Records of versions that did not count them have no prompt_computed: not reported, as
    # unknown, rather than as 0 (and a finished older run's metrics.json stays what it was)
    if any("prompt_tokens_computed" in r.compute for r in records):
        metrics["tokens/prompt_computed"] = float(sum(r.compute.get("prompt_tokens_computed", 0) for r in records))
    metrics["tokens/generated_per_problem"] = metrics["tokens/generated"] / len(records)
    metrics["grading/ungraded_answers"] = float(sum(r.ungraded_answers or 0 for r in records))
    return metrics
