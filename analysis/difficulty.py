"""Difficulty bins, as in Snell et al. (2024) section 3: problems grouped by how hard they are for this policy.

- oracle bins: quintiles of each problem's pass@1, estimated from a reference pool of samples (needs the gold answers);
- model bins: quintiles of each problem's mean reduced PRM score over the same pool (no gold answers: what a deployed
  system could compute);
- `level`: MATH's own 1-5 annotation, when the dataset has one.

Bin 1 is the easiest (highest pass@1 / highest mean score), bin 5 the hardest, matching MATH's level numbering.

The reference pool is by default the best-of-N variant with the largest n, all its seeds pooled (each seed's pass@1 is
c/n, so pooling equal-n seeds is the mean over seeds). Pass another pool with `reference=("best_of_n", 256)`.

Ties. Many problems share pass@1 = 0 or 1, so quantile edges often fall inside a group of equal values. Two rules:
- ties="split" (default): equal-size bins (sizes differ by at most one). Problems are ranked by value, and equal values
  are ordered by a stable hash of unique_id (crc32), so a tie group on an edge is split between the two bins the same
  way on every run and independent of the row order or of how ids are named.
- ties="group": equal values always share a bin: the bin that holds the tie group's average rank. Bins can then be
  unequal, or empty when one value covers more than a fifth of the problems.

    from analysis.difficulty import add_bins
    problems = add_bins(sweep.problems)   # adds oracle_bin, model_bin (and keeps level)
"""

from __future__ import annotations

import logging
import zlib
from typing import Optional

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

BIN_COLUMNS = {"oracle": "oracle_bin", "model": "model_bin", "level": "level"}


def stable_hash(unique_id: str) -> int:
    return zlib.crc32(str(unique_id).encode())


def quantile_bins(values: pd.Series, ids: pd.Series, num_bins: int = 5, ties: str = "split",
                  higher_is_easier: bool = True) -> pd.Series:
    """Bin 1 .. num_bins for each value (1 = easiest). NaN values get no bin. See the module docstring for ties."""
    if ties not in ("split", "group"):
        raise ValueError(f"ties must be 'split' or 'group', got {ties!r}")
    values = pd.Series(np.asarray(values, dtype=float), index=values.index)
    ok = values.notna()
    result = pd.Series(pd.NA, index=values.index, dtype="Int64")
    m = int(ok.sum())
    if m == 0:
        return result
    difficulty = -values[ok] if higher_is_easier else values[ok]
    order = pd.DataFrame({"d": difficulty.to_numpy(), "h": [stable_hash(i) for i in ids[ok]],
                          "id": ids[ok].astype(str).to_numpy()}, index=difficulty.index)
    order = order.sort_values(["d", "h", "id"], kind="mergesort")
    position = pd.Series(np.arange(m, dtype=float), index=order.index)
    if ties == "group":
        position = position.groupby(order["d"]).transform("mean")
    # bin k holds positions [k*m/B, (k+1)*m/B); floor(B*pos/m) gives sizes that differ by at most one
    bins = np.floor(num_bins * position.to_numpy() / m).astype(int) + 1
    result.loc[position.index] = np.clip(bins, 1, num_bins)
    return result


def reference_pool(problems: pd.DataFrame, reference: Optional[tuple[str, int]] = None) -> pd.DataFrame:
    """Rows of the reference runs: `reference` = (variant, n), or the best-of-N variant with the largest n."""
    if reference is not None:
        variant, n = reference
        pool = problems[(problems.variant == variant) & (problems.n == int(n))]
        if pool.empty:
            raise ValueError(f"reference pool {reference}: no runs of variant {variant!r} with n={n}")
        return pool
    candidates = problems[problems.strategy == "best_of_n"]
    if candidates.empty:
        log.warning("no best_of_n runs: difficulty bins use the largest-n runs of any strategy")
        candidates = problems
    n_max = candidates.n.max()
    largest = candidates[candidates.n == n_max]
    # several variants at that n (e.g. temperatures): the one with most seeds, then the first by name
    seeds = largest.groupby("variant").seed.nunique()
    variant = sorted(seeds[seeds == seeds.max()].index)[0]
    return largest[largest.variant == variant]


def problem_difficulty(problems: pd.DataFrame, reference: Optional[tuple[str, int]] = None, num_bins: int = 5,
                       ties: str = "split") -> pd.DataFrame:
    """One row per (setting, unique_id): pooled pass@1, mean PRM score, oracle_bin, model_bin, level."""
    frames = []
    for setting, part in problems.groupby("setting", sort=True):
        pool = reference_pool(part, reference)
        per_problem = (pool.groupby("unique_id", as_index=False)
                       .agg(pass1=("pass@1", "mean"), mean_score=("mean_score", "mean"), samples=("completions", "sum")))
        per_problem.insert(0, "setting", setting)
        per_problem["reference"] = f"{pool.variant.iloc[0]} n={pool.n.iloc[0]} x{pool.seed.nunique()} seeds"
        per_problem["oracle_bin"] = quantile_bins(per_problem.pass1, per_problem.unique_id, num_bins, ties).to_numpy()
        per_problem["model_bin"] = quantile_bins(per_problem.mean_score, per_problem.unique_id, num_bins,
                                                 ties).to_numpy()
        frames.append(per_problem)
    return pd.concat(frames, ignore_index=True)


def add_bins(problems: pd.DataFrame, reference: Optional[tuple[str, int]] = None, num_bins: int = 5,
             ties: str = "split", difficulty: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """`problems` with oracle_bin and model_bin columns (problems outside the reference pool get no bin)."""
    if difficulty is None:
        difficulty = problem_difficulty(problems, reference, num_bins, ties)
    columns = ["setting", "unique_id", "oracle_bin", "model_bin"]
    merged = problems.drop(columns=[c for c in ("oracle_bin", "model_bin") if c in problems.columns])
    return merged.merge(difficulty[columns], on=["setting", "unique_id"], how="left")
