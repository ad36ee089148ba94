"""Figures for the strategies beyond PRM search: sequential revisions and filter-vote, per difficulty bin.

- `sequential_ratio_<bins>.png` (Snell et al. 2024, Figure 7 style): accuracy at a fixed generation budget n against
  the ratio of sequential to parallel compute, L : n/L (L attempts per chain, n/L chains), one panel per difficulty
  bin and one line per budget. Runs of independent samples (best-of-n) count as L = 1 (all parallel) where no
  revisions run has L = 1.
- `filter_vote_calls_<bins>.png` (Chen et al. 2024 style): accuracy against the number of LM calls per problem for
  majority vote (k samples: k calls) and filter-vote (k samples + k reviews: 2k calls), one panel per bin. The plain
  vote is read from the filter-vote runs' own `maj_unfiltered@K` when the table has it, else from runs of
  independent samples (best-of-n) of the same setting and seed (the same samples: both strategies draw them with the
  same request and seed).

Runs are told apart by their traits and records, not their names: a sequential strategy (`StrategyConfig.sequential`)
whose completions form chains (`chain_length`, from `extra["chain"]`) is drawn as revisions, any other as filter-vote.

Bins: `level`, and `oracle_bin` / `model_bin` / `absolute_bin` when the table has them (analysis.difficulty adds them).

    python -m analysis multirun --out figs     # calls make_figures when runs of sequential strategies are present
    python -c "from analysis.sequential import make_figures; make_figures(['multirun'], 'figs')"
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import plots
from analysis.runs import chain_length, read_run_dir, strategy_traits, trait
from tts.scoring import budgets

LENGTH = "chain_length"  # attempts per chain, L
BIN_COLUMNS = ("level", "oracle_bin", "model_bin", "absolute_bin")
BIN_TITLES = {"level": "level", "oracle_bin": "oracle bin", "model_bin": "model bin", "absolute_bin": "absolute bin"}


def load_runs(paths: str | Path | Sequence[str | Path]) -> pd.DataFrame:
    """A minimal per-problem table straight from run directories: the columns `make_figures` reads, with every
    aggregation a run recorded (including `maj_unfiltered`), the strategy's traits and the chain length."""
    from tts.store.readers import find_run_dirs

    rows = []
    for path in find_run_dirs(paths):
        config, records = read_run_dir(path)
        meta = {
            "setting": "/".join(str(config.get(g, {}).get("name")) for g in ("model", "prm", "dataset")),
            "strategy": config["strategy"]["name"],
            "n": int(config["n"]),
            "seed": int(config["seed"]),
            **strategy_traits(config),
        }
        for record in records:
            row = dict(
                meta, unique_id=record.unique_id, level=record.level, chain_length=chain_length(record.completions)
            )
            row.update(record.scores.expected)
            rows.append(row)
    return pd.DataFrame(rows)


def _bin_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in BIN_COLUMNS if c in table.columns and table[c].notna().any()]


def _bins(part: pd.DataFrame, column: str) -> list[tuple[str, pd.DataFrame]]:
    """("all", everything) then one (label, rows) per bin value, easiest first."""
    groups = [("all problems", part)]
    for value in sorted(part[column].dropna().unique()):
        label = f"{BIN_TITLES[column]} {int(value) if float(value).is_integer() else value}"
        groups.append((label, part[part[column] == value]))
    return groups


def _panels(count: int):
    rows, cols = plots.grid_shape(count)
    fig, axes = plots.plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:count])


def _chained(table: pd.DataFrame) -> pd.Series:
    """Rows of sequential runs whose attempts form chains (revisions); the other sequential runs review each sample
    (filter-vote)."""
    return trait(table, "sequential") & table.get(LENGTH, pd.Series(np.nan, index=table.index)).notna()


def ratio_points(table: pd.DataFrame, aggregation: str = "weighted") -> pd.DataFrame:
    """One row per (problem row, n, L): correctness at K = n of runs of chains of L attempts (revisions), and of
    runs of independent samples (best-of-n) as L = 1."""
    frames = []
    for n, part in table[_chained(table)].groupby("n"):
        column = f"{aggregation}@{n}"
        frames.append(part.assign(L=part[LENGTH].astype(int), correct=part[column]))
    points = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["n", "L", "correct"])
    parallel = table[trait(table, "independent_samples")]
    for n, part in parallel.groupby("n"):
        if not ((points.n == n) & (points.L == 1)).any() and ((points.n == n).any()):
            points = pd.concat([points, part.assign(L=1, correct=part[f"{aggregation}@{n}"])], ignore_index=True)
    points["ratio"] = points.L.astype(float) ** 2 / points.n.astype(float)  # L : n/L
    return points


def _style(ax, title: str, xlabel: str, ylabel: str, has_lines: int) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if has_lines:
        ax.legend(fontsize=7)


def _ratio_label(L: int, n: int) -> str:
    return f"{L}:{n // L}"


def sequential_ratio_figure(table: pd.DataFrame, bins: str, path: Path, aggregation: str = "weighted") -> Path:
    points = ratio_points(table, aggregation)
    groups = _bins(points, bins) if len(points) else [("all problems", points)]
    fig, axes = _panels(len(groups))
    for ax, (label, part) in zip(axes, groups):
        for n, curve in part.groupby("n"):
            acc = curve.groupby("L").agg(ratio=("ratio", "first"), accuracy=("correct", "mean")).reset_index()
            ax.plot(np.log2(acc.ratio), acc.accuracy, marker="o", label=f"n={n}")
            for row in acc.itertuples():
                ax.annotate(
                    _ratio_label(int(row.L), int(n)),
                    (math.log2(row.ratio), row.accuracy),
                    fontsize=6,
                    textcoords="offset points",
                    xytext=(0, 4),
                    ha="center",
                )
        _style(ax, label, "log2 sequential / parallel (L : n/L)", f"accuracy ({aggregation}@n)", part.n.nunique())
    fig.suptitle(f"Sequential revisions vs parallel sampling at fixed budgets, per {BIN_TITLES[bins]}")
    fig.tight_layout()
    return plots.save_figure(fig, path, check_layout=False)  # a legend in each panel


def vote_points(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (problem row, method, k): correctness of majority vote and filter-vote with k samples, and calls."""
    rows = []
    filtered = table[trait(table, "sequential") & ~_chained(table)]
    plain = table[trait(table, "independent_samples")]
    keep = ["setting", "seed", "unique_id"] + [c for c in BIN_COLUMNS if c in table.columns]
    for n, part in filtered.groupby("n"):
        for k in budgets(int(n)):
            rows.append(part[keep].assign(method="filter-vote", k=k, calls=2 * k, correct=part[f"maj@{k}"]))
            column = f"maj_unfiltered@{k}"
            if column in part.columns and part[column].notna().all():
                rows.append(part[keep].assign(method="majority vote", k=k, calls=k, correct=part[column]))
    have_plain = any((r.method == "majority vote").any() for r in rows)
    if not have_plain and len(filtered):
        ids = set(zip(filtered.setting, filtered.seed)) if "setting" in filtered.columns else None
        for n, part in plain.groupby("n"):
            if ids is not None:
                part = part[[pair in ids for pair in zip(part.setting, part.seed)]]
            for k in budgets(int(n)):
                rows.append(part[keep].assign(method="majority vote", k=k, calls=k, correct=part[f"maj@{k}"]))
    if not rows:
        return pd.DataFrame(columns=keep + ["method", "k", "calls", "correct"])
    return pd.concat(rows, ignore_index=True)


def filter_vote_figure(table: pd.DataFrame, bins: str, path: Path) -> Path:
    points = vote_points(table)
    groups = _bins(points, bins) if len(points) else [("all problems", points)]
    fig, axes = _panels(len(groups))
    for ax, (label, part) in zip(axes, groups):
        for method, curve in part.groupby("method"):
            # several runs (n) give the same k: the run with the largest n has the most subsets behind each point
            acc = curve.groupby("calls").correct.mean().reset_index()
            ax.plot(acc.calls, acc.correct, marker="o", label=method)
        ax.set_xscale("log", base=2)
        _style(ax, label, "LM calls per problem", "accuracy", part.method.nunique())
    fig.suptitle(f"Majority vote vs filter-vote against LM calls, per {BIN_TITLES[bins]}")
    fig.tight_layout()
    return plots.save_figure(fig, path, check_layout=False)  # a legend in each panel


def make_figures(
    table: pd.DataFrame | str | Path | Sequence[str | Path], out_dir: str | Path, aggregation: str = "weighted"
) -> list[Path]:
    """Write the revisions and filter-vote figures for every bin column the table has; returns their paths.

    `table` is the per-problem table of `analysis.runs` (`sweep.problems`, with bin columns added) or run
    directories / folders of runs, loaded with `load_runs`."""
    if not isinstance(table, pd.DataFrame):
        table = load_runs(table)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if table.empty:
        return written
    chained = _chained(table)
    reviewed = trait(table, "sequential") & ~chained
    for bins in _bin_columns(table) or ["level"]:
        suffix = bins.replace("_bin", "")
        if chained.any():
            written.append(sequential_ratio_figure(table, bins, out / f"sequential_ratio_{suffix}.png", aggregation))
        if reviewed.any():
            written.append(filter_vote_figure(table, bins, out / f"filter_vote_calls_{suffix}.png"))
    return written
