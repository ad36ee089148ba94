"""From graded completions to predictions and accuracies: step-score reduction, the aggregations, acc@n', pass@n'.

Pure functions, no I/O. A problem's n completions arrive graded (tts.pipeline.grade_batch): answers extracted and
mapped to canonical keys (equivalent answers share a key), so voting counts keys, never strings.

Each aggregation is one function registered with `@aggregation` (naive, weighted, maj, maj_unfiltered,
deepconf<eta>, self_certainty, borda_sc, final: their docstrings below say each rule), with one signature: a
`SubsetView` of many subsets of a problem's completions in, the winning key id of each subset out. It declares what
it needs (`Need`: the PRM's scores, the policy's confidence on every completion, the strategy's votes or weights);
`score_problem` computes every registered aggregation whose needs the problem meets, and tracking and analysis read
the registry for names, order and labels. A new aggregation is one function, e.g. the shortest completion's answer:

    @aggregation("shortest", label="shortest completion")
    def shortest(view: SubsetView) -> np.ndarray:
        return view.highest(-np.array([c.tokens for c in view.problem.completions], dtype=float))

Ties are broken deterministically, toward the completion (or the key) that comes first among the n. Completions
without an answer never win a vote; if none has one, the prediction is "no answer" (wrong). A prediction is written
as the first completion with the winning key wrote it (of the subset, for an aggregation reported `once`).

Accuracy at n' < n comes from the one run of n samples in two ways:
- prefix: the first n' completions, as the reference implementation does (one draw, high variance);
- expected: the mean correctness over all subsets of size n', with a 95% confidence half-width over problems. It is
  exact for the aggregations that take the completion with the highest of a per-completion value (declared
  `highest`: naive, self_certainty) at every n' (closed form, `selection_probabilities`), for every aggregation at
  n' = 1 (the mean correctness of the n completions: an aggregation of one completion picks it) and at n' = n; for
  the others at 1 < n' < n it is the mean over `draws` random subsets (Monte Carlo: no cheap closed form).
  `metrics.json` reports the expected value under `acc/<aggregation>@K` and the prefix value under
  `acc_prefix/<aggregation>@K`.
pass@n' uses the unbiased estimator 1 - C(n - c, n') / C(n, n') (Chen et al. 2021).

An aggregation declared `once` (final: an adaptive strategy's own answer) is reported once per problem, over the
completions it names, with no n': `metrics.json` has `acc/<aggregation>` over every problem that reports it,
whatever number of completions each one got. An adaptive strategy's acc@n' figures at n' below a problem's own
count are subsets of an adaptively stopped set and say little; compare such runs by `acc/final` against
`tokens/generated_per_problem`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cached_property
from typing import Optional, cast

import numpy as np

from tts.data.records import Completion, ProblemRecord, ProblemSummary, Scores

DEFAULT_ETAS = (10, 90)
# metrics.json: problems prm=sim judged though dataset=synthetic did not generate them (prm.allow_foreign=true)
FOREIGN_PRM_METRIC = "warnings/prm_sim_foreign_problems"


# scoring.reduction -> how a solution's step scores (at least one) become one number
REDUCTIONS: dict[str, Callable[[Sequence[float]], float]] = {
    "last": lambda scores: scores[-1],
    "min": min,
    "prod": math.prod,
    "mean": lambda scores: sum(scores) / len(scores),
}


def reduce_scores(step_scores: Sequence[float], how: str = "last") -> float:
    """One number per solution from its per-step PRM scores. A solution with no steps scores 0."""
    if len(step_scores) == 0:
        return 0.0
    if how not in REDUCTIONS:
        raise ValueError(f"config key 'scoring.reduction': unknown reduction {how!r}; use last, min, prod or mean")
    return float(REDUCTIONS[how](step_scores))


def budgets(n: int) -> list[int]:
    """The n' at which accuracy is reported: 1, 2, 4, ... up to n, and n itself."""
    ks = [1 << i for i in range(n.bit_length()) if 1 << i <= n]
    return ks if ks[-1] == n else ks + [n]


def select_naive(scores: Sequence[float]) -> int:
    """Index of the highest score (first one on ties)."""
    return int(np.argmax(np.asarray(scores, dtype=float)))


def select_weighted(keys: Sequence, scores: Sequence[float]) -> int:
    """Index of the first completion whose key has the largest summed score, ties to the key that came first (the
    totals are kept in that order, and `max` keeps the first of equals); -1 when no completion has an answer."""
    totals: dict = {}
    for key, score in zip(keys, scores):
        if key is not None:
            totals[key] = totals.get(key, 0.0) + score
    if not totals:
        return -1
    return list(keys).index(max(totals, key=totals.__getitem__))


def select_majority(keys: Sequence[str | None]) -> int:
    """Index of the first completion whose key is the most common (-1 when no completion has an answer)."""
    return select_weighted(keys, [1.0] * len(keys))


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


# -- what an aggregation reads --------------------------------------------------------------------------------------


class Need(Enum):
    """What an aggregation needs of a problem's completions: it is reported only where all of its needs are met."""

    PRM = "the PRM scored the completions"  # not with prm=none, where the step scores mean nothing
    CONFIDENCE = "every completion carries the policy's confidence (Completion.confidence)"
    VOTES = "the strategy said which completions may vote (Completion.vote)"
    WEIGHTS = "the strategy weighed the completions for its own answer (Completion.weight)"


@dataclass(frozen=True)
class ScoringSettings:
    """How one problem is scored: the run's `scoring` knobs and the problem's own seed (tts.pipeline.grade_batch)."""

    draws: int = 200  # random subsets per n' of the expected accuracy (scoring.subset_draws)
    seed: int = 0
    reduction: str = "last"  # a completion's step scores -> its PRM score (reduce_scores)
    deepconf_eta: Sequence[int] = DEFAULT_ETAS  # one deepconf<eta> per value, in this order
    deepconf_measure: str = "lowest_group"  # the confidence deepconf keeps and weights by
    borda_power: float = 0.5
    prm_scored: bool = True  # False (prm=none): the step scores mean nothing


class GradedProblem:
    """A problem's n graded completions and the per-completion columns the aggregations read, each built when first
    read (a run without confidence never looks for it)."""

    def __init__(self, completions: Sequence[Completion], settings: ScoringSettings) -> None:
        self.completions = completions
        self.settings = settings
        # keys numbered in order of first appearance (so argmax ties favour the earliest); -1: no answer
        self.key_names = list(dict.fromkeys(c.key for c in completions if c.key is not None))
        ids = {name: i for i, name in enumerate(self.key_names)}
        self.key_ids = np.array([-1 if c.key is None else ids[c.key] for c in completions], dtype=np.int64)
        self.num_keys = len(self.key_names)

    @cached_property
    def met(self) -> frozenset[Need]:
        holds = {
            Need.PRM: self.settings.prm_scored,
            Need.CONFIDENCE: len(self.completions) > 0 and all(c.confidence is not None for c in self.completions),
            Need.VOTES: any(c.vote is not None for c in self.completions),
            Need.WEIGHTS: any(c.weight is not None for c in self.completions),
        }
        return frozenset(need for need, met in holds.items() if met)

    @cached_property
    def outcomes(self) -> np.ndarray:
        """Per key id: 1 correct, 0 wrong, nan ungraded; the last entry (key id -1) is "no answer", wrong."""
        verdicts = {c.key: c.correct for c in self.completions if c.key is not None}  # one verdict per key
        as_float: dict[Optional[bool], float] = {True: 1.0, False: 0.0}
        return np.array([as_float.get(verdicts[name], np.nan) for name in self.key_names] + [0.0])

    @cached_property
    def prm_scores(self) -> np.ndarray:
        return np.array([reduce_scores(c.step_scores, self.settings.reduction) for c in self.completions], dtype=float)

    def _confidence(self, measure: str) -> np.ndarray:
        return np.array([float(cast(dict, c.confidence)[measure]) for c in self.completions])

    @cached_property
    def confidence(self) -> np.ndarray:
        """The measure deepconf keeps and weights by (`scoring.deepconf_measure`)."""
        return self._confidence(self.settings.deepconf_measure)

    @cached_property
    def certainty(self) -> np.ndarray:
        return self._confidence("self_certainty")

    @cached_property
    def votes(self) -> np.ndarray:
        """May it vote? A completion the strategy did not mark may."""
        return np.asarray([True if c.vote is None else c.vote for c in self.completions], dtype=bool)

    @cached_property
    def weights(self) -> np.ndarray:
        return np.array([0.0 if c.weight is None else float(c.weight) for c in self.completions])


class SubsetView:
    """Subsets of one problem's completions, one per row of `rows` (completion indices, in the problem's order): what
    an aggregation reads. What several aggregations share is computed once per view."""

    def __init__(self, problem: GradedProblem, rows: np.ndarray) -> None:
        self.problem = problem
        self.rows = rows
        self.size = rows.shape[1]  # n' (completions per subset)

    def take(self, column: np.ndarray) -> np.ndarray:
        """A per-completion column, per row."""
        return column[self.rows]

    @cached_property
    def keys(self) -> np.ndarray:
        """Each entry's key id (-1: no answer)."""
        return self.take(self.problem.key_ids)

    @cached_property
    def answered(self) -> np.ndarray:
        return self.keys >= 0

    def highest(self, column: np.ndarray) -> np.ndarray:
        """Per row, the key of the completion with the highest value of `column` (ties to the first)."""
        return self.keys[np.arange(len(self.rows)), np.argmax(self.take(column), axis=1)]

    def tally(self, voters: Optional[np.ndarray] = None, weights: Optional[np.ndarray] = None) -> np.ndarray:
        """Per row and key id: how many answered entries among `voters` (default: every answered one) have that key,
        or the sum of their `weights` (one per entry)."""
        voting = self.answered if voters is None else self.answered & voters
        rows, num_keys = len(self.rows), self.problem.num_keys
        cells = (np.arange(rows)[:, None] * num_keys + np.where(voting, self.keys, 0))[voting]  # (row, key), flat
        tallied = np.bincount(cells, weights=None if weights is None else weights[voting], minlength=rows * num_keys)
        return tallied.reshape(rows, num_keys)

    def winners(self, totals: np.ndarray) -> np.ndarray:
        """Per row, the key id with the largest of `totals` (ties to the key that came first); -1 where no entry of
        the row has an answer. A key no entry voted for can win where every total is below 0."""
        return np.where(self.answered.any(axis=1), np.argmax(totals, axis=1), -1)

    @cached_property
    def confidence_ranks(self) -> np.ndarray:
        """Per row, each entry's rank by confidence (0: the most confident)."""
        return _ranks(self.take(self.problem.confidence))


def _vote_of(view: SubsetView, voters: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per row, the key with the largest summed `weights` among the answered `voters` (ties to the key that came
    first); -1 where no answered entry votes. Unlike `winners(tally(...))`, a key nobody voted for never wins, even
    where every total is 0 or below."""
    voted = view.tally(voters) > 0
    return np.where(voted.any(axis=1), np.argmax(np.where(voted, view.tally(voters, weights), -np.inf), axis=1), -1)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Per row, each entry's rank by value, 0 for the highest (ties to the earlier entry)."""
    order = np.argsort(-values, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(values.shape[1])[None, :].repeat(len(values), axis=0), axis=1)
    return ranks


# -- the registry ---------------------------------------------------------------------------------------------------

Rule = Callable[[SubsetView], np.ndarray]  # the winning key id per row of the view (-1: no answer)


@dataclass(frozen=True)
class Aggregation:
    """One registered rule (`rule`, a function of a SubsetView; of a view and a value for a family) and what
    scoring, tracking and analysis need to know of it."""

    name: str
    rule: Callable[..., np.ndarray]
    needs: frozenset[Need] = frozenset()
    label: str = ""  # how figures name it; "{}" stands for a family member's value
    # the per-completion value the rule takes the highest of, when it does: its expected accuracy is then exact
    highest: Optional[Callable[[GradedProblem], np.ndarray]] = None
    # a family (deepconf<eta>): one aggregation per value, named name + value, the value the rule's second argument
    variants: Optional[Callable[[ScoringSettings], Sequence[int]]] = None
    # reported once per problem (no n'), over the completions this names (final: those the strategy weighed)
    once: Optional[Callable[[GradedProblem], np.ndarray]] = None
    summary: bool = True  # False: a diagnostic, left out of the run's summaries and figures (maj_unfiltered)

    def members(self, settings: ScoringSettings) -> list[tuple[str, Rule]]:
        """(reported name, rule of a view) for each aggregation this registers under `settings`."""
        if self.variants is None:
            return [(self.name, self.rule)]
        return [(f"{self.name}{int(value)}", self._member(value)) for value in self.variants(settings)]

    def _member(self, value: int) -> Rule:
        return lambda view: self.rule(view, value)


_REGISTRY: dict[str, Aggregation] = {}  # in report order


def aggregation(
    name: str,
    *,
    needs: Iterable[Need] = (),
    label: str = "",
    highest: Optional[Callable[[GradedProblem], np.ndarray]] = None,
    variants: Optional[Callable[[ScoringSettings], Sequence[int]]] = None,
    once: Optional[Callable[[GradedProblem], np.ndarray]] = None,
    summary: bool = True,
) -> Callable[[Callable[..., np.ndarray]], Callable[..., np.ndarray]]:
    """Register the decorated rule as aggregation `name` (see Aggregation); it is reported after those registered
    before it."""
    if name in _REGISTRY or not name.isidentifier() or name == "pass":
        raise ValueError(f"aggregation {name!r}: already registered, or not a name metrics can carry")

    def register(rule: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        _REGISTRY[name] = Aggregation(name, rule, frozenset(needs), label or name, highest, variants, once, summary)
        return rule

    return register


def unregister(name: str) -> None:
    del _REGISTRY[name]


def registered() -> list[Aggregation]:
    """Every registered aggregation, in report order."""
    return list(_REGISTRY.values())


def find_aggregation(name: str) -> Optional[Aggregation]:
    """The registered aggregation a reported name belongs to (deepconf90: the deepconf family), or None."""
    if name in _REGISTRY and _REGISTRY[name].variants is None:
        return _REGISTRY[name]
    return next((a for a in _REGISTRY.values() if a.variants is not None and _value(a, name) is not None), None)


def _value(family: Aggregation, name: str) -> Optional[int]:
    suffix = name[len(family.name) :]
    return int(suffix) if name.startswith(family.name) and suffix.isdigit() else None


def report_rank(name: str) -> tuple[int, int]:
    """Where a reported aggregation sorts (`sorted(names, key=report_rank)`): in registration order, a family's
    members by value, unknown names last (in the order given: the sort is stable)."""
    found = find_aggregation(name)
    if found is None:
        return (len(_REGISTRY), 0)
    return (list(_REGISTRY).index(found.name), _value(found, name) or 0)


def aggregation_label(name: str) -> str:
    """How figures name a reported aggregation (its registered label; an unknown name as it is)."""
    found = find_aggregation(name)
    if found is None:
        return name
    return found.label.format(_value(found, name)) if found.variants else found.label


def reported_aggregations(metric_names: Iterable[str]) -> list[str]:
    """The aggregations a run's summaries show (console line, W&B curves and progress, analysis points), read off
    `acc/<agg>@<n'>` metric names or `<agg>@<n'>` score names, in report order: the registered ones present, less
    diagnostics (maj_unfiltered) and those reported once (final, shown apart)."""
    present = {name.rsplit("@", 1)[0].removeprefix("acc/") for name in metric_names if "@" in name}
    shown = [a for a in present if (found := find_aggregation(a)) is not None and found.summary and found.once is None]
    return sorted(shown, key=report_rank)


# -- the aggregations, in report order ------------------------------------------------------------------------------


@aggregation("naive", needs={Need.PRM}, highest=lambda problem: problem.prm_scores, label="naive (highest PRM score)")
def naive(view: SubsetView) -> np.ndarray:
    """The completion with the highest reduced PRM score."""
    return view.highest(view.problem.prm_scores)


@aggregation("weighted", needs={Need.PRM}, label="weighted (PRM-weighted vote)")
def weighted(view: SubsetView) -> np.ndarray:
    """The key with the largest summed reduced PRM score (Snell et al.'s "best-of-N weighted")."""
    return view.winners(view.tally(weights=view.take(view.problem.prm_scores)))


@aggregation("maj", label="majority vote")
def maj(view: SubsetView) -> np.ndarray:
    """The key with the most completions (self-consistency). When the strategy marks which completions may vote
    (`Completion.vote`; filter-vote keeps those the policy judged correct), only those count, all completions of a
    subset where none of them may (Chen et al. 2024); "maj_unfiltered" then reports the plain vote."""
    voters = view.answered & view.take(view.problem.votes)  # every answered one, where the strategy marked none
    voters = np.where(voters.any(axis=1)[:, None], voters, view.answered)  # nobody may vote: everybody votes
    return view.winners(view.tally(voters))


@aggregation("maj_unfiltered", needs={Need.VOTES}, label="majority vote, every completion", summary=False)
def maj_unfiltered(view: SubsetView) -> np.ndarray:
    """The plain majority vote beside a filtered "maj" (a diagnostic: not in the run's summaries)."""
    return view.winners(view.tally())


@aggregation(
    "deepconf",
    needs={Need.CONFIDENCE},
    variants=lambda settings: settings.deepconf_eta,
    label="DeepConf vote, top {}% confident",
)
def deepconf(view: SubsetView, eta: float) -> np.ndarray:
    """deepconf<eta>, one per `scoring.deepconf_eta` (DeepConf offline, Fu et al. 2025): keep the ceil(eta% of n')
    most confident completions of the subset by `scoring.deepconf_measure` (lowest group confidence by default),
    then the key with the largest summed confidence among them."""
    kept = view.confidence_ranks < max(1, math.ceil(view.size * eta / 100))
    return _vote_of(view, kept, view.take(view.problem.confidence))


@aggregation(
    "self_certainty",
    needs={Need.CONFIDENCE},
    highest=lambda problem: problem.certainty,
    label="self-certainty (most certain trace)",
)
def self_certainty(view: SubsetView) -> np.ndarray:
    """The completion with the highest self-certainty (best-of-N, Kang et al. 2025)."""
    return view.highest(view.problem.certainty)


@aggregation("borda_sc", needs={Need.CONFIDENCE}, label="Borda vote by self-certainty")
def borda_sc(view: SubsetView) -> np.ndarray:
    """Borda vote by self-certainty rank (Kang et al. 2025): of n', the completion ranked r (1 = most certain) gives
    its key (n' - r + 1) ** `scoring.borda_power`."""
    ranks = _ranks(view.take(view.problem.certainty))
    borda = (view.size - ranks).astype(float) ** view.problem.settings.borda_power
    return _vote_of(view, view.answered, borda)


@aggregation(
    "final",
    needs={Need.WEIGHTS},
    once=lambda problem: np.flatnonzero(problem.weights > 0),
    label="own answer (adaptive strategies)",
)
def final(view: SubsetView) -> np.ndarray:
    """An adaptive strategy's own answer (deepconf, esc decide how many completions to draw): the vote of the
    completions it weighed above 0, each with its `Completion.weight`, ties to the key that came first among them.
    One figure per problem, whatever number of completions it got."""
    keys = [int(key) if key >= 0 else None for key in view.keys[0]]
    first = select_weighted(keys, view.take(view.problem.weights)[0].tolist())
    return np.array([keys[first] if first >= 0 else -1])


# -- scoring a problem, and a run -----------------------------------------------------------------------------------


def _winners(rule: Rule, view: SubsetView) -> np.ndarray:
    """The rule's winning key ids; with no answer in the whole problem nobody wins, whatever the rule."""
    return rule(view) if view.problem.num_keys else np.full(len(view.rows), -1)


def _predict(scores: Scores, name: str, view: SubsetView, winner: int) -> float:
    """Record the prediction of the view's first row and whether it is correct; returns its outcome (1, 0, nan)."""
    problem = view.problem
    value = float(problem.outcomes[winner])
    answer = None
    if winner >= 0:  # in the spelling of the row's first completion with the key (the problem's, if none has it)
        in_row = np.flatnonzero(view.keys[0] == winner)
        first = view.rows[0][in_row[0]] if len(in_row) else np.flatnonzero(problem.key_ids == winner)[0]
        answer = problem.completions[int(first)].answer
    assert scores.predictions is not None
    scores.predictions[name] = answer
    scores.correct[name] = None if np.isnan(value) else bool(value)
    return value


def score_problem(completions: Sequence[Completion], settings: ScoringSettings = ScoringSettings()) -> Scores:
    """Predictions and correctness of one problem's graded completions (`key`, `answer`, `correct`: True / False /
    None, None: the grader timed out, "ungraded") at every n', for every registered aggregation whose needs the
    problem meets (see the module docstring).

    Returns the Scores: `predictions`, `correct` (prefix estimate; None where ungraded), `expected` (mean
    correctness over random subsets), `ungraded` (fraction of subsets whose prediction could not be graded) and
    `pass_at` (unbiased pass@n').
    """
    problem = GradedProblem(completions, settings)
    n = len(completions)
    applicable = [a for a in _REGISTRY.values() if a.needs <= problem.met]
    per_budget = [(a, name, rule) for a in applicable if a.once is None for name, rule in a.members(settings)]
    completion_outcomes = problem.outcomes[problem.key_ids]  # each completion's own correctness
    num_correct = int(np.sum(completion_outcomes == 1.0))
    rng = np.random.default_rng(settings.seed)
    result = Scores(predictions={}, correct={}, expected={}, ungraded={}, pass_at={})
    for k in budgets(n):
        prefix = SubsetView(problem, np.arange(k)[None, :])
        # `draws` random k-subsets, drawn at every k < n whether a vote reads them or not
        sampled = prefix if k == n else SubsetView(problem, np.argsort(rng.random((settings.draws, n)), axis=1)[:, :k])
        for aggregation_, name, rule in per_budget:
            first_rows = _winners(rule, prefix)
            _predict(result, f"{name}@{k}", prefix, int(first_rows[0]))
            highest = aggregation_.highest
            if k == 1 or highest is not None:
                # exact: a K-subset's highest-value pick has a closed form, and at K = 1 every aggregation is the sample
                weights = selection_probabilities(highest(problem), k) if highest and k > 1 else np.full(n, 1.0 / n)
                values = completion_outcomes
            else:  # votes at 1 < K < n: the mean over `draws` random subsets
                weights = np.full(len(sampled.rows), 1.0 / len(sampled.rows))
                values = problem.outcomes[first_rows if sampled is prefix else _winners(rule, sampled)]
            result.ungraded[f"{name}@{k}"] = float(np.dot(weights, np.isnan(values)))
            result.expected[f"{name}@{k}"] = float(np.dot(weights, np.nan_to_num(values, nan=0.0)))
        result.pass_at[f"pass@{k}"] = pass_at_k(n, num_correct, k)
    for aggregation_, once in [(a, a.once) for a in applicable if a.once is not None]:  # reported once per problem
        view = SubsetView(problem, once(problem)[None, :])
        for name, rule in aggregation_.members(settings):
            value = _predict(result, name, view, int(_winners(rule, view)[0]))
            result.expected[name] = float(np.nan_to_num(value, nan=0.0))
            result.ungraded[name] = float(np.isnan(value))
    return result


def aggregate_metrics(records: Sequence[ProblemRecord | ProblemSummary], n: int) -> dict[str, float]:
    """Run-level metrics from per-problem records (or their summaries): accuracies (expected, prefix, CI), pass@n',
    token totals. The one implementation of a run's accuracy: metrics.json, merged shards and analysis all call it.

    Each figure at n' is the mean over the problems that report it. Every problem of a run normally reports every n'
    up to n; one whose search finished short (fewer completions, with a `note`) has no figures above its own count and
    is left out of those means, as are problems of strategies that do not report an aggregation (`maj_unfiltered`).
    An aggregation reported once per problem (final: no "@n'") gives `acc/<aggregation>` over the problems that
    report it.
    """
    metrics: dict[str, float] = {"problems": len(records)}
    if not records:
        return metrics
    names = list(dict.fromkeys(name for r in records for name in r.scores.expected))
    reported = sorted(dict.fromkeys(name.rsplit("@", 1)[0] for name in names if "@" in name), key=report_rank)
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
    for agg in (name for name in names if "@" not in name):  # reported once per problem, over every problem
        values = np.array([r.scores.expected[agg] for r in records if agg in r.scores.expected])
        metrics[f"acc/{agg}"] = float(values.mean())
        metrics[f"acc_ci95/{agg}"] = (
            float(1.96 * values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0
        )
        metrics[f"ungraded/{agg}"] = float(sum(r.scores.ungraded.get(agg, 0.0) for r in records))
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
