"""The paper's figures from the tidy tables (matplotlib, Agg backend).

Every function takes tables (never run directories), writes one PNG and, beside it, the same figure as a vector PDF
(for a paper), and returns the PNG's path, so a notebook can call them on any subset. Colours are fixed per strategy
variant across figures; line styles mark the aggregation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator  # noqa: E402

AGG_LABELS = {"naive": "naive (highest PRM score)", "weighted": "weighted (PRM-weighted vote)", "maj": "majority vote"}
AGG_STYLES = {"naive": ":", "weighted": "-", "maj": "--"}
BIN_TITLES = {
    "oracle_bin": "oracle difficulty bin (pass@1 quintiles of the reference pool; 1 = easiest)",
    "model_bin": "model-predicted difficulty bin (mean PRM score quintiles of the reference pool; 1 = easiest)",
    "absolute_bin": "absolute difficulty bin (reference pool pass@1: 1 = easy > 50%, 2 = medium, 3 = hard < 10%)",
    "level": "MATH level",
}
ABSOLUTE_NAMES = {1: "easy", 2: "medium", 3: "hard"}  # the default absolute bins (Liu et al. 2025)


def bin_label(bin_column: str, value: int, num_bins: int) -> str:
    """A bin's tick label: its number, and easy / medium / hard for the three default absolute bins."""
    if bin_column == "absolute_bin" and num_bins <= 3 and value in ABSOLUTE_NAMES:
        return f"{value} {ABSOLUTE_NAMES[value]}"
    return str(value)


BUDGET_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">")


def grid_shape(panels: int, max_cols: int = 4) -> tuple[int, int]:
    """(rows, cols) for `panels` panels: as few rows as `max_cols` allows, panels spread evenly over them so that no
    row is empty (4 -> 1x4, 5 -> 2x3, 6 -> 2x3, 7 -> 2x4)."""
    rows = max(1, math.ceil(panels / max_cols))
    return rows, max(1, math.ceil(panels / rows))


def colours(variants: Sequence[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10")
    return {v: cmap(i % 10) for i, v in enumerate(sorted(variants))}


def _log2_axis(
    ax, budgets: Sequence[int], label: str = "budget N (completions / beams per problem), log2 scale"
) -> None:
    ax.set_xscale("log", base=2)
    ticks = sorted(set(int(b) for b in budgets))
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(t) for t in ticks])
    ax.set_xlabel(label)


def _references(ax, references: dict[str, float] | None) -> None:
    for i, (name, value) in enumerate((references or {}).items()):
        ax.axhline(value, color="0.35", linestyle=(0, (4, 2 + i)), linewidth=1.2, label=f"{name} ({value:.3f})")


def _legend_below(fig, ax, title: str) -> None:
    """One legend for all panels, under them, so it never hides data."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=min(len(labels), 5),
        fontsize=8.5,
        title=title,
        title_fontsize=8.5,
        frameon=False,
    )


def _save(fig, path: Path) -> Path:
    """PNG at `path` and the same figure as PDF beside it; returns the PNG's path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    fig.savefig(path.with_suffix(".pdf"), bbox_inches="tight")
    plt.close(fig)
    return path


def accuracy_vs_n(acc: pd.DataFrame, path: Path, title: str = "", references: dict[str, float] | None = None) -> Path:
    """One panel per aggregation: accuracy vs N per strategy variant; band = min..max over seeds."""
    aggs = [a for a in AGG_LABELS if a in set(acc.aggregation)]
    palette = colours(acc.variant.unique())
    fig, axes = plt.subplots(1, len(aggs), figsize=(5.2 * len(aggs), 4.4), sharey=True, squeeze=False)
    for ax, agg in zip(axes[0], aggs):
        for variant, part in acc[acc.aggregation == agg].groupby("variant"):
            part = part.sort_values("budget")
            ax.plot(part.budget, part.accuracy, marker="o", markersize=3.5, color=palette[variant], label=variant)
            if (part.seeds > 1).any():
                ax.fill_between(
                    part.budget, part.acc_min, part.acc_max, color=palette[variant], alpha=0.18, linewidth=0
                )
        _references(ax, references)
        _log2_axis(ax, acc.budget.unique())
        ax.set_title(AGG_LABELS[agg])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (expected over K-subsets, mean over seeds)")
    fig.suptitle(title or "Accuracy vs test-time compute")
    fig.tight_layout()
    _legend_below(fig, axes[0][0], "strategy (band: min-max over seeds)")
    return _save(fig, path)


def bin_bars(
    points: pd.DataFrame,
    bin_column: str,
    path: Path,
    aggregation: str = "weighted",
    budgets: Sequence[int] | None = None,
    title: str = "",
) -> Path:
    """One panel per budget N: accuracy per difficulty bin, one bar per strategy variant; whiskers over seeds."""
    data = points[(points.aggregation == aggregation) & points[bin_column].notna()]
    budgets = sorted(budgets or data.budget.unique())
    data = data[data.budget.isin(budgets)]
    per_seed = data.groupby(["variant", "budget", bin_column, "seed"], as_index=False).correct.mean()
    summary = per_seed.groupby(["variant", "budget", bin_column]).correct.agg(["mean", "min", "max"]).reset_index()
    variants = sorted(summary.variant.unique())
    palette = colours(points.variant.unique())
    bins = sorted(int(b) for b in summary[bin_column].unique())
    # problems per bin (levels differ in size; quantile bins of a pool can too): shown under each bin
    counts = data.groupby(["budget", bin_column]).unique_id.nunique()
    rows, cols = grid_shape(len(budgets))
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.9 * rows), sharey=True, squeeze=False)
    width = 0.8 / max(len(variants), 1)
    for ax, budget in zip(axes.flat, budgets):
        at = summary[summary.budget == budget]
        for i, variant in enumerate(variants):
            part = at[at.variant == variant].set_index(bin_column).reindex(bins)
            x = np.arange(len(bins)) + (i - (len(variants) - 1) / 2) * width
            err = np.vstack([part["mean"] - part["min"], part["max"] - part["mean"]]).clip(min=0)
            ax.bar(
                x,
                part["mean"],
                width=width,
                color=palette[variant],
                label=variant,
                yerr=err,
                capsize=2,
                error_kw={"elinewidth": 0.8},
            )
        ax.set_xticks(np.arange(len(bins)))
        ax.set_xticklabels(
            [f"{bin_label(bin_column, b, max(bins))}\nn={counts.get((budget, b), 0)}" for b in bins], fontsize=8
        )
        ax.set_xlabel("difficulty bin (n = problems)" if bin_column != "level" else "MATH level (n = problems)")
        ax.set_title(f"N = {budget}")
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes.flat[len(budgets) :]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel(f"accuracy ({AGG_LABELS.get(aggregation, aggregation)})")
    fig.suptitle(title or f"Accuracy per {BIN_TITLES.get(bin_column, bin_column)}")
    fig.tight_layout()
    _legend_below(fig, axes.flat[0], "strategy (whiskers: min-max over seeds)")
    return _save(fig, path)


CURVE_STYLES = {"oracle bins": ("black", "s"), "model bins": ("tab:purple", "D"), "MATH level bins": ("tab:brown", "^")}
CAPTION = (
    "Thin coloured lines: each strategy alone ({aggregation} aggregation), accuracy on all problems. "
    "Solid thick lines: the compute-optimal policy, which picks the best (strategy, aggregation) per difficulty bin "
    "and budget; cross-validated: chosen on one half of each bin's problems and scored on the other half, then the "
    "halves swap. Dotted: the same choice made and scored on all problems (in-sample), an optimistic upper reference. "
    "Dash-dotted grey: one fixed (strategy, aggregation) per budget, cross-validated the same way; it can sit below "
    "the best thin line because the choice is made without the problems it is scored on, and a close runner-up can "
    "win on one half. Bins come from a reference pool of runs that are never scored."
)


def compute_optimal_curve(
    curves: pd.DataFrame,
    acc: pd.DataFrame,
    path: Path,
    aggregation: str = "weighted",
    title: str = "",
    references: dict[str, float] | None = None,
) -> Path:
    """The compute-optimal curves (cross-validated, solid; in-sample, dotted) against each single strategy, with a
    caption under the axes that says what each curve is."""
    import textwrap

    fig, ax = plt.subplots(figsize=(10.5, 6.6))
    palette = colours(acc.variant.unique())
    singles = acc[acc.aggregation == aggregation]
    for variant, part in singles.groupby("variant"):
        part = part.sort_values("budget")
        ax.plot(
            part.budget,
            part.accuracy,
            marker="o",
            markersize=3,
            linewidth=1.2,
            alpha=0.85,
            color=palette[variant],
            label=f"{variant}, {aggregation}",
        )
    for method, part in curves.groupby("method", sort=True):
        part = part.sort_values("budget")
        if method.startswith("best single"):
            colour, marker, line = "0.5", "x", "-."
        else:
            colour, marker = next((s for key, s in CURVE_STYLES.items() if f"by {key}" in method), ("tab:red", "o"))
            line = ":" if "in-sample" in method else "-"
        ax.plot(
            part.budget,
            part.accuracy,
            color=colour,
            marker=marker,
            markersize=4.5,
            linestyle=line,
            linewidth=2.2 if line == "-" else 1.6,
            label=method,
        )
    _references(ax, references)
    _log2_axis(ax, sorted(set(curves.budget) | set(singles.budget)))
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(title or "Compute-optimal scaling: best (strategy, aggregation) per difficulty bin and budget")
    fig.tight_layout()
    caption = "\n".join(textwrap.wrap(CAPTION.format(aggregation=aggregation), 150))
    fig.text(0.01, -0.01, caption, ha="left", va="top", fontsize=7.5, color="0.2", transform=fig.transFigure)
    return _save(fig, path)


def accuracy_vs_tokens(
    acc: pd.DataFrame, path: Path, title: str = "", references: dict[str, float] | None = None
) -> Path:
    """Accuracy vs mean generated tokens per problem (log2), one line per (variant, aggregation); the marker shape
    says the budget N (a legend, not per-point labels, so nothing collides however close the points are)."""
    from matplotlib.lines import Line2D

    palette = colours(acc.variant.unique())
    budgets = sorted(int(b) for b in acc.budget.unique())
    markers = {b: BUDGET_MARKERS[i % len(BUDGET_MARKERS)] for i, b in enumerate(budgets)}
    fig, ax = plt.subplots(figsize=(10.5, 5.4))
    for (variant, agg), part in acc.groupby(["variant", "aggregation"]):
        part = part.sort_values("tokens_per_problem")
        ax.plot(
            part.tokens_per_problem,
            part.accuracy,
            color=palette[variant],
            linestyle=AGG_STYLES.get(agg, "-"),
            linewidth=1.2,
            label=f"{variant}, {AGG_LABELS.get(agg, agg)}",
        )
        for budget, point in part.groupby("budget"):
            ax.scatter(
                point.tokens_per_problem,
                point.accuracy,
                marker=markers[int(budget)],
                s=22,
                color=palette[variant],
                zorder=3,
            )
    _references(ax, references)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("generated tokens per problem (mean), log2 scale")
    ax.set_ylabel("accuracy (mean over seeds)")
    ax.grid(alpha=0.3)
    lines = ax.legend(
        fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
        ncol=1 if acc.variant.nunique() < 6 else 2,
        title="strategy, aggregation",
        title_fontsize=8,
    )
    ax.add_artist(lines)
    shapes = [Line2D([], [], color="0.3", marker=markers[b], linestyle="none", label=f"N = {b}") for b in budgets]
    ax.legend(
        handles=shapes,
        fontsize=8,
        loc="lower left",
        bbox_to_anchor=(1.01, 0.0),
        frameon=False,
        title="budget",
        title_fontsize=8,
    )
    ax.set_title(title or "Accuracy vs generated tokens")
    fig.tight_layout()
    return _save(fig, path)
