"""Difficulty bins, as in Snell et al. (2024) section 3: problems grouped by how hard they are for this policy.

- oracle bins: quintiles of each problem's pass@1, estimated from a reference pool of samples (needs the gold answers);
- model bins: quintiles of each problem's mean reduced PRM score over the same pool (no gold answers: what a deployed
  system could compute);
- absolute bins: fixed pass@1 thresholds on the same pooled pass@1, as Liu et al. (2025, "Can 1B LLM Surpass 405B
  LLM? Rethinking Compute-Optimal Test-Time Scaling", arXiv 2502.06703): easy (pass@1 > 50%), medium (10-50%), hard
  (< 10%). Quantile bins always hold a fifth of the problems each, so "bin 5" of an easy dataset is not hard in any
  absolute sense; absolute bins say how hard a problem is for the policy whatever the other problems are, and may
  be unequal or empty. Thresholds are configurable (`absolute_thresholds`, highest first: a value above the first
  is bin 1, below the last is the last bin, and a value equal to a threshold falls in the bin between);
- `level`: MATH's own 1-5 annotation, when the dataset has one.

Bin 1 is the easiest (highest pass@1 / highest mean score), bin 5 (absolute: 3) the hardest, matching MATH's level
numbering.

The reference pool is never scored. Binning problems by the very samples a curve then scores leaks their luck into the
bins (a problem a run happened to solve lands in an easy bin, where that run is then chosen), and no cross-validation
of the selection undoes that. So every run is either a *reference* (its samples define the bins) or a *candidate*
(a strategy the compute-optimal selection may choose), never both:
- default: the runs with seed >= 100 (REFERENCE_SEED) of a strategy with independent samples (best-of-N: their c/n
  estimates pass@1, a search's would not) are the pool, everything else is a candidate; the papers' sweeps use
  seeds 0-4, so `python tts/main.py -m strategy=best_of_n n=256 seed=100` adds a pool beside them;
- `reference=("VARIANT", N)` (CLI `--reference-pool VARIANT:N`, optionally `VARIANT:N:SEED,SEED`): those runs are the
  pool, whatever their seed, and are no longer candidates.
Within the pool the variant with the largest n is used, its seeds pooled (each seed's pass@1 is c/n, so pooling equal-n
seeds is the mean over seeds). With no pool, oracle and model bins are refused (`NoReferencePool`); MATH level bins
need none.

Ties. Many problems share pass@1 = 0 or 1, so quantile edges often fall inside a group of equal values. Two rules:
- ties="split" (default): equal-size bins (sizes differ by at most one). Problems are ranked by value, and equal values
  are ordered by a stable hash of unique_id (crc32), so a tie group on an edge is split between the two bins the same
  way on every run and independent of the row order or of how ids are named.
- ties="group": equal values always share a bin: the bin that holds the tie group's average rank. Bins can then be
  unequal, or empty when one value covers more than a fifth of the problems.

    from analysis.difficulty import add_bins
    problems = add_bins(sweep.problems)   # candidate rows with oracle_bin, model_bin (and level)
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from analysis.runs import trait
from tts.data.problem import stable_hash

log = logging.getLogger(__name__)

BIN_COLUMNS = {"oracle": "oracle_bin", "model": "model_bin", "absolute": "absolute_bin", "level": "level"}
POOL_BINS = ("oracle_bin", "model_bin", "absolute_bin")  # the bins a reference pool defines
# Liu et al. 2025 (arXiv 2502.06703): easy pass@1 > 50%, medium 10-50%, hard < 10%
ABSOLUTE_THRESHOLDS = (0.5, 0.1)
REFERENCE_SEED = 100  # runs of independent samples with a seed at least this are the default reference pool
POOL_COMMAND = f"python tts/main.py -m strategy=best_of_n n=256 seed={REFERENCE_SEED}"  # -m: into the sweep folder
REFERENCE, CANDIDATE = "reference", "candidate"


class NoReferencePool(ValueError):
    """Oracle / model bins were asked for, but no run is kept apart as the reference pool."""


def parse_pool(spec: str | None) -> tuple | None:
    """`VARIANT:N` or `VARIANT:N:SEED,SEED` -> (variant, n) or (variant, n, seeds); None -> None (the default rule)."""
    if not spec:
        return None
    parts = spec.split(":")
    try:
        if (
            len(parts) >= 3
            and all(x.strip().lstrip("-").isdigit() for x in parts[-1].split(","))
            and parts[-2].strip().isdigit()
        ):
            return ":".join(parts[:-2]), int(parts[-2]), tuple(int(x) for x in parts[-1].split(","))
        return ":".join(parts[:-1]), int(parts[-1])
    except ValueError:
        raise ValueError(
            f"--reference-pool {spec!r}: expected VARIANT:N or VARIANT:N:SEED,SEED, "
            f"e.g. best_of_n:256 or best_of_n:256:100"
        ) from None


def assign_roles(runs: pd.DataFrame, reference: tuple | None = None) -> pd.Series:
    """ "reference" or "candidate" per row of `runs` (any table with variant, strategy, n, seed columns).

    `reference` None: runs of independent samples (best-of-N) with seed >= REFERENCE_SEED; else (variant, n) or
    (variant, n, seeds)."""
    if reference is None:
        is_reference = trait(runs, "independent_samples") & (runs.seed >= REFERENCE_SEED)
    else:
        variant, n, *seeds = reference
        is_reference = (runs.variant == variant) & (runs.n == int(n))
        if seeds:
            is_reference &= runs.seed.isin(seeds[0])
    return pd.Series(np.where(is_reference, REFERENCE, CANDIDATE), index=runs.index)


def no_pool_message(setting: str) -> str:
    return (
        f"{setting}: no oracle/model difficulty bins: they need a reference pool of runs that no curve scores "
        f"(best-of-N with seed >= {REFERENCE_SEED}); make one with `{POOL_COMMAND}` plus the sweep's "
        f"model/prm/dataset overrides, or name one with --reference-pool VARIANT:N (level bins need none)"
    )


def parse_thresholds(spec: str | None) -> tuple[float, ...]:
    """`0.5,0.1` -> (0.5, 0.1): absolute-bin pass@1 thresholds, highest first, each in [0, 1]; None -> the default."""
    if not spec:
        return ABSOLUTE_THRESHOLDS
    try:
        values = tuple(float(x) for x in spec.split(","))
    except ValueError:
        values = ()
    if not values or any(not 0.0 <= v <= 1.0 for v in values) or list(values) != sorted(set(values), reverse=True):
        raise ValueError(
            f"--absolute-thresholds {spec!r}: expected distinct pass@1 values in [0, 1], highest first, e.g. 0.5,0.1"
        )
    return values


def absolute_bins(pass1: pd.Series, thresholds: tuple[float, ...] = ABSOLUTE_THRESHOLDS) -> pd.Series:
    """Bin 1 .. len(thresholds) + 1 by fixed pass@1 thresholds (highest first; 1 = easiest). Above the first threshold
    is bin 1, below the last is the last bin, a value equal to a threshold falls in the bin between (with the default
    (0.5, 0.1): easy > 0.5, medium 0.1-0.5 inclusive, hard < 0.1). NaN gets no bin."""
    values = np.asarray(pass1, dtype=float)
    result = pd.Series(pd.NA, index=pass1.index, dtype="Int64")
    ok = ~np.isnan(values)
    bins = np.ones(len(values), dtype=int)
    for t in thresholds[:-1]:
        bins += values <= t
    bins += values < thresholds[-1]
    result[ok] = bins[ok]
    return result


def quantile_bins(
    values: pd.Series, ids: pd.Series, num_bins: int = 5, ties: str = "split", higher_is_easier: bool = True
) -> pd.Series:
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
    order = pd.DataFrame(
        {"d": difficulty.to_numpy(), "h": [stable_hash(i) for i in ids[ok]], "id": ids[ok].astype(str).to_numpy()},
        index=difficulty.index,
    )
    order = order.sort_values(["d", "h", "id"], kind="mergesort")
    position = pd.Series(np.arange(m, dtype=float), index=order.index)
    if ties == "group":
        position = position.groupby(order["d"]).transform("mean")
    # bin k holds positions [k*m/B, (k+1)*m/B); floor(B*pos/m) gives sizes that differ by at most one
    bins = np.floor(num_bins * position.to_numpy() / m).astype(int) + 1
    result.loc[position.index] = np.clip(bins, 1, num_bins)
    return result


def reference_pool(problems: pd.DataFrame, reference: tuple | None = None) -> pd.DataFrame:
    """The pool's rows: the reference runs (a `role` column, or `assign_roles(problems, reference)`), of the variant
    with the largest n, seeds pooled. Raises NoReferencePool when there are none."""
    roles = problems["role"] if "role" in problems.columns else assign_roles(problems, reference)
    pool = problems[roles == REFERENCE]
    if pool.empty:
        setting = problems.setting.iloc[0] if len(problems) else "this sweep"
        if reference is not None:
            raise NoReferencePool(f"{setting}: reference pool {reference}: no runs of that variant and n")
        raise NoReferencePool(no_pool_message(setting))
    largest = pool[pool.n == pool.n.max()]
    # several variants at that n (e.g. temperatures): the one with most seeds, then the first by name
    seeds = largest.groupby("variant").seed.nunique()
    variant = sorted(seeds[seeds == seeds.max()].index)[0]
    return largest[largest.variant == variant]


def problem_difficulty(
    problems: pd.DataFrame,
    reference: tuple | None = None,
    num_bins: int = 5,
    ties: str = "split",
    thresholds: tuple[float, ...] = ABSOLUTE_THRESHOLDS,
) -> pd.DataFrame:
    """One row per (setting, unique_id) of the pool: pooled pass@1, mean PRM score, oracle_bin, model_bin,
    absolute_bin."""
    frames = []
    for setting, part in problems.groupby("setting", sort=True):
        pool = reference_pool(part, reference)
        per_problem = pool.groupby("unique_id", as_index=False).agg(
            pass1=("pass@1", "mean"), mean_score=("mean_score", "mean"), samples=("completions", "sum")
        )
        per_problem.insert(0, "setting", setting)
        per_problem["reference"] = f"{pool.variant.iloc[0]} n={pool.n.iloc[0]} x{pool.seed.nunique()} seeds"
        per_problem["oracle_bin"] = quantile_bins(per_problem.pass1, per_problem.unique_id, num_bins, ties).to_numpy()
        per_problem["model_bin"] = quantile_bins(
            per_problem.mean_score, per_problem.unique_id, num_bins, ties
        ).to_numpy()
        per_problem["absolute_bin"] = absolute_bins(per_problem.pass1, thresholds).to_numpy()
        frames.append(per_problem)
    return pd.concat(frames, ignore_index=True)


def add_bins(
    problems: pd.DataFrame,
    reference: tuple | None = None,
    num_bins: int = 5,
    ties: str = "split",
    difficulty: pd.DataFrame | None = None,
    thresholds: tuple[float, ...] = ABSOLUTE_THRESHOLDS,
) -> pd.DataFrame:
    """The candidate rows of `problems` with oracle_bin, model_bin and absolute_bin columns from the reference pool (a
    candidate problem the pool never saw gets no bin, and a warning says how many)."""
    roles = problems["role"] if "role" in problems.columns else assign_roles(problems, reference)
    if difficulty is None:
        difficulty = problem_difficulty(problems.assign(role=roles), reference, num_bins, ties, thresholds)
    candidates = problems[roles == CANDIDATE].assign(role=CANDIDATE)
    columns = ["setting", "unique_id", *POOL_BINS]
    merged = candidates.drop(columns=[c for c in POOL_BINS if c in candidates.columns])
    merged = merged.merge(difficulty[columns], on=["setting", "unique_id"], how="left")
    unbinned = merged.loc[merged.oracle_bin.isna(), "unique_id"].nunique()
    if unbinned:
        log.warning(
            "%d candidate problems are not in the reference pool: they get no oracle/model/absolute bin and are "
            "left out of the curves by those bins",
            unbinned,
        )
    return merged
