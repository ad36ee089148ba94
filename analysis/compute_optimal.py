"""The compute-optimal strategy (Snell et al. 2024, section 3.1): at each budget N, pick the best
(strategy variant, aggregation) separately for each difficulty bin, and report the accuracy of that adaptive policy.

Selecting and scoring on the same problems overstates the gain (the best of many noisy candidates looks better than
it is), so the headline curve is two-fold cross-validated, as in the paper: the problems of each bin are split in two
halves; the candidate that is best on one half is scored on the other, then the halves swap; every problem is thus
scored by a choice made without it, and the curve is the mean over problems. The split is balanced within each bin
and reproducible (problems ordered by a salted crc32 of unique_id, alternately assigned); `repeats` > 1 averages
several such splits. The in-sample selection (choose and score on all problems) is also returned, labelled
"in-sample", as the optimistic upper reference it is. Cross-validating the selection does not help when the bins
themselves were made from the samples being scored: the bins come from a reference pool (analysis.difficulty).

    from analysis.compute_optimal import compute_optimal
    curves, selections = compute_optimal(points_with_bins, bins="oracle_bin")
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np
import pandas as pd

from tts.data.problem import stable_hash

CV = "cross-validated"
IN_SAMPLE = "in-sample, optimistic"
BIN_LABELS = {
    "oracle_bin": "oracle bins",
    "model_bin": "model bins",
    "absolute_bin": "absolute bins",
    "level": "MATH level bins",
}
BEST_SINGLE = f"best single strategy ({CV})"


def method_name(bins: str, kind: str) -> str:
    """The curve's name in tables and legends, e.g. "compute-optimal by oracle bins (cross-validated)"."""
    return f"compute-optimal by {BIN_LABELS.get(bins, bins)} ({kind})"


def candidate_matrix(points: pd.DataFrame, budget: int) -> pd.DataFrame:
    """Problems x candidates ("variant | aggregation") at one budget: accuracy averaged over seeds."""
    at = points[points.budget == budget]
    table = at.assign(candidate=at.variant + " | " + at.aggregation).pivot_table(
        index="unique_id", columns="candidate", values="correct", aggfunc="mean"
    )
    return table.sort_index(axis=1)


def fold_assignment(ids: pd.Series, bins: pd.Series, salt: int = 0) -> pd.Series:
    """0/1 per problem, balanced within each bin: order by crc32(salt:id), then alternate."""
    frame = pd.DataFrame({"id": ids.astype(str).to_numpy(), "bin": bins.to_numpy()}, index=ids.index)
    frame["h"] = [stable_hash(f"{salt}:{i}") for i in frame.id]
    frame = frame.sort_values(["bin", "h", "id"], kind="mergesort")
    frame["fold"] = frame.groupby("bin").cumcount() % 2
    return frame["fold"].reindex(ids.index)


def _best(values: np.ndarray, rows: np.ndarray, names: list[str]) -> int | None:
    """Column with the highest mean over `rows` (first in column order on ties); None if no data."""
    if not rows.any():
        return None
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(values[rows], axis=0)
    if np.isnan(means).all():
        return None
    return int(np.nanargmax(means))


def select_per_bin(matrix: pd.DataFrame, bins: pd.Series, repeats: int = 1) -> tuple[pd.Series, pd.Series, list[dict]]:
    """Cross-validated and in-sample accuracy per problem under per-bin selection.

    `matrix`: problems x candidates; `bins`: bin per problem (same index). Returns (cv accuracy per problem,
    in-sample accuracy per problem, selection records).
    """
    bins = bins.reindex(matrix.index)
    keep = bins.notna().to_numpy()
    matrix, bins = matrix[keep], bins[keep]
    values, names, groups = matrix.to_numpy(dtype=float), [str(c) for c in matrix.columns], bins.to_numpy()
    cv = np.zeros(len(matrix))
    in_sample = np.full(len(matrix), np.nan)
    selections: list[dict] = []

    def mean(rows, column):
        return float(np.nanmean(values[rows, column])) if rows.any() and column is not None else np.nan

    for b in sorted(set(groups)):
        members = groups == b
        choice = _best(values, members, names)
        if choice is not None:
            in_sample[members] = values[members, choice]
        selections.append(
            {
                "bin": int(b),
                "fold": "all",
                "repeat": None,
                "selected": names[choice] if choice is not None else None,
                "selected_on": int(members.sum()),
                "selection_accuracy": mean(members, choice),
                "heldout_accuracy": np.nan,
            }
        )
    ids = pd.Series(matrix.index, index=matrix.index)
    for repeat in range(repeats):
        folds = fold_assignment(ids, bins, salt=repeat).to_numpy()
        for b in sorted(set(groups)):
            for fold in (0, 1):
                train = (groups == b) & (folds == fold)
                test = (groups == b) & (folds == 1 - fold)
                if not test.any():
                    continue
                # a one-problem bin has an empty half: fall back to the choice made on all other problems
                choice = _best(values, train, names) if train.any() else _best(values, ~test, names)
                if choice is None:
                    cv[test] = np.nan
                    continue
                cv[test] += values[test, choice] / repeats
                selections.append(
                    {
                        "bin": int(b),
                        "fold": "AB"[fold],
                        "repeat": repeat,
                        "selected": names[choice],
                        "selected_on": int(train.sum()),
                        "selection_accuracy": mean(train, choice),
                        "heldout_accuracy": mean(test, choice),
                    }
                )
    return pd.Series(cv, index=matrix.index), pd.Series(in_sample, index=matrix.index), selections


def shared_budgets(points: pd.DataFrame) -> list[int]:
    """Budgets at which every strategy of the sweep has results (all budgets if there are none such).

    A budget only best-of-N reaches by subsampling (N = 8 in a sweep of n = 4, 16, 64) would make the curve zig-zag
    between "choose among all strategies" and "best-of-N only"."""
    per_strategy = [set(part.budget) for _, part in points.groupby("strategy")]
    shared = set.intersection(*per_strategy) if per_strategy else set()
    return sorted(shared or set(points.budget))


def compute_optimal(
    points: pd.DataFrame,
    bins: Iterable[str] = ("oracle_bin", "model_bin", "absolute_bin"),
    repeats: int = 1,
    budgets: Iterable[int] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Compute-optimal curves per setting and budget.

    `points`: long table (analysis.runs.long_points) with bin columns (analysis.difficulty.add_bins).
    Budgets: `budgets`, or those every strategy reached (`shared_budgets`). Returns (curves, selections). `curves`
    has one row per (setting, method, budget) with accuracy and, per bin,
    `bin_<b>` accuracies; methods are "compute-optimal by <bins> (cross-validated)", "compute-optimal by <bins>
    (in-sample, optimistic)" and "best single strategy (cross-validated)" (one bin: the best fixed (strategy,
    aggregation) per N, chosen on one half of the problems and scored on the other).
    """
    curve_rows, selection_rows = [], []
    for setting, part in points.groupby("setting", sort=True):
        per_problem_bins = part.drop_duplicates("unique_id").set_index("unique_id")
        for budget in sorted(budgets or shared_budgets(part)):
            matrix = candidate_matrix(part, budget)
            if matrix.empty:
                continue
            schemes = list(bins) + ["all"]
            for scheme in schemes:
                if scheme == "all":
                    groups = pd.Series(1, index=matrix.index)
                elif scheme in per_problem_bins.columns:
                    groups = per_problem_bins[scheme].reindex(matrix.index)
                else:
                    continue
                if groups.notna().sum() == 0:
                    continue
                cv, in_sample, selections = select_per_bin(matrix, groups.astype("float"), repeats)
                methods = (
                    {BEST_SINGLE: cv}
                    if scheme == "all"
                    else {method_name(scheme, CV): cv, method_name(scheme, IN_SAMPLE): in_sample}
                )
                valid = groups.reindex(cv.index)
                for method, values in methods.items():
                    row = {
                        "setting": setting,
                        "method": method,
                        "bins": scheme,
                        "budget": int(budget),
                        "accuracy": float(values.mean()),
                        "problems": int(values.notna().sum()),
                    }
                    if scheme != "all":
                        for b, members in values.groupby(valid):
                            row[f"bin_{int(b)}"] = float(members.mean())
                    curve_rows.append(row)
                for selection in selections:
                    selection_rows.append({"setting": setting, "bins": scheme, "budget": int(budget), **selection})
    curves = pd.DataFrame(curve_rows)
    selections = pd.DataFrame(selection_rows)
    return curves, selections
