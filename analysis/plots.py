"""The paper's figures from the tidy tables (matplotlib, Agg backend, PNG).

Every function takes tables (never run directories), writes one PNG and returns its path, so a notebook can call them
on any subset. Colours are fixed per strategy variant across figures; line styles mark the aggregation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator  # noqa: E402

AGG_LABELS = {"naive": "naive (highest PRM score)", "weighted": "weighted (PRM-weighted vote)", "maj": "majority vote"}
AGG_STYLES = {"naive": ":", "weighted": "-", "maj": "--"}
BIN_TITLES = {"oracle_bin": "oracle difficulty bins (pass@1 quintiles; 1 = easiest)",
              "model_bin": "model-predicted difficulty bins (mean PRM score quintiles; 1 = easiest)",
              "level": "MATH level"}


def colours(variants: Sequence[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10")
    return {v: cmap(i % 10) for i, v in enumerate(sorted(variants))}


def _log2_axis(ax, budgets: Sequence[int], label: str = "budget N (completions / beams per problem), log2 scale") -> None:
    ax.set_xscale("log", base=2)
    ticks = sorted(set(int(b) for b in budgets))
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(t) for t in ticks])
    ax.set_xlabel(label)


def _references(ax, references: Optional[dict[str, float]]) -> None:
    for i, (name, value) in enumerate((references or {}).items()):
        ax.axhline(value, color="0.35", linestyle=(0, (4, 2 + i)), linewidth=1.2, label=f"{name} ({value:.3f})")


def _legend_below(fig, ax, title: str) -> None:
    """One legend for all panels, under them, so it never hides data."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(labels), 5), fontsize=8.5,
               title=title, title_fontsize=8.5, frameon=False)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


def accuracy_vs_n(acc: pd.DataFrame, path: Path, title: str = "",
                  references: Optional[dict[str, float]] = None) -> Path:
    """One panel per aggregation: accuracy vs N per strategy variant; band = min..max over seeds."""
    aggs = [a for a in AGG_LABELS if a in set(acc.aggregation)]
    palette = colours(acc.variant.unique())
    fig, axes = plt.subplots(1, len(aggs), figsize=(5.2 * len(aggs), 4.4), sharey=True, squeeze=False)
    for ax, agg in zip(axes[0], aggs):
        for variant, part in acc[acc.aggregation == agg].groupby("variant"):
            part = part.sort_values("budget")
            ax.plot(part.budget, part.accuracy, marker="o", markersize=3.5, color=palette[variant], label=variant)
            if (part.seeds > 1).any():
                ax.fill_between(part.budget, part.acc_min, part.acc_max, color=palette[variant], alpha=0.18,
                                linewidth=0)
        _references(ax, references)
        _log2_axis(ax, acc.budget.unique())
        ax.set_title(AGG_LABELS[agg])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (expected over K-subsets, mean over seeds)")
    fig.suptitle(title or "Accuracy vs test-time compute")
    fig.tight_layout()
    _legend_below(fig, axes[0][0], "strategy (band: min-max over seeds)")
    return _save(fig, path)


def bin_bars(points: pd.DataFrame, bin_column: str, path: Path, aggregation: str = "weighted",
             budgets: Optional[Sequence[int]] = None, title: str = "") -> Path:
    """One panel per budget N: accuracy per difficulty bin, one bar per strategy variant; whiskers over seeds."""
    data = points[(points.aggregation == aggregation) & points[bin_column].notna()]
    budgets = sorted(budgets or data.budget.unique())
    data = data[data.budget.isin(budgets)]
    per_seed = (data.groupby(["variant", "budget", bin_column, "seed"], as_index=False).correct.mean())
    summary = per_seed.groupby(["variant", "budget", bin_column]).correct.agg(["mean", "min", "max"]).reset_index()
    variants = sorted(summary.variant.unique())
    palette = colours(points.variant.unique())
    bins = sorted(int(b) for b in summary[bin_column].unique())
    cols = min(len(budgets), 3)
    rows = int(np.ceil(len(budgets) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5.0 * cols, 3.8 * rows), sharey=True, squeeze=False)
    width = 0.8 / max(len(variants), 1)
    for ax, budget in zip(axes.flat, budgets):
        at = summary[summary.budget == budget]
        for i, variant in enumerate(variants):
            part = at[at.variant == variant].set_index(bin_column).reindex(bins)
            x = np.arange(len(bins)) + (i - (len(variants) - 1) / 2) * width
            err = np.vstack([part["mean"] - part["min"], part["max"] - part["mean"]]).clip(min=0)
            ax.bar(x, part["mean"], width=width, color=palette[variant], label=variant, yerr=err, capsize=2,
                   error_kw={"elinewidth": 0.8})
        ax.set_xticks(np.arange(len(bins)))
        ax.set_xticklabels([str(b) for b in bins])
        ax.set_xlabel("difficulty bin" if bin_column != "level" else "MATH level")
        ax.set_title(f"N = {budget}")
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes.flat[len(budgets):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel(f"accuracy ({AGG_LABELS.get(aggregation, aggregation)})")
    fig.suptitle(title or f"Accuracy per {BIN_TITLES.get(bin_column, bin_column)}")
    fig.tight_layout()
    _legend_below(fig, axes.flat[0], "strategy (whiskers: min-max over seeds)")
    return _save(fig, path)


def compute_optimal_curve(curves: pd.DataFrame, acc: pd.DataFrame, path: Path, aggregation: str = "weighted",
                          title: str = "", references: Optional[dict[str, float]] = None) -> Path:
    """The compute-optimal curves (cross-validated, solid; in-sample, dotted) against each single strategy."""
    fig, ax = plt.subplots(figsize=(10.5, 5.4))
    palette = colours(acc.variant.unique())
    singles = acc[acc.aggregation == aggregation]
    for variant, part in singles.groupby("variant"):
        part = part.sort_values("budget")
        ax.plot(part.budget, part.accuracy, marker="o", markersize=3, linewidth=1.2, alpha=0.85,
                color=palette[variant], label=f"{variant}, {aggregation}")
    styles = {"oracle bins": ("black", "s"), "model bins": ("tab:purple", "D"), "level bins": ("tab:brown", "^")}
    for method, part in curves.groupby("method", sort=True):
        part = part.sort_values("budget")
        if method.startswith("best single"):
            colour, marker, line = "0.5", "x", "-."
        else:
            colour, marker = next((s for key, s in styles.items() if key in method), ("tab:red", "o"))
            line = ":" if "in-sample" in method else "-"
        ax.plot(part.budget, part.accuracy, color=colour, marker=marker, markersize=4.5, linestyle=line,
                linewidth=2.2 if line == "-" else 1.6, label=method)
    _references(ax, references)
    _log2_axis(ax, sorted(set(curves.budget) | set(singles.budget)))
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(title or "Compute-optimal scaling: best (strategy, aggregation) per difficulty bin and budget")
    fig.tight_layout()
    return _save(fig, path)


def accuracy_vs_tokens(acc: pd.DataFrame, path: Path, title: str = "",
                       references: Optional[dict[str, float]] = None) -> Path:
    """Accuracy vs mean generated tokens per problem (log2), one line per (variant, aggregation), labelled by N."""
    palette = colours(acc.variant.unique())
    fig, ax = plt.subplots(figsize=(10.5, 5.4))
    for (variant, agg), part in acc.groupby(["variant", "aggregation"]):
        part = part.sort_values("tokens_per_problem")
        ax.plot(part.tokens_per_problem, part.accuracy, marker="o", markersize=3, color=palette[variant],
                linestyle=AGG_STYLES.get(agg, "-"), label=f"{variant}, {AGG_LABELS.get(agg, agg)}")
        if agg == "weighted":
            for x, y, n in zip(part.tokens_per_problem, part.accuracy, part.budget):
                ax.annotate(f"N={n}", (x, y), textcoords="offset points", xytext=(3, -9), fontsize=6.5,
                            color=palette[variant])
    _references(ax, references)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("generated tokens per problem (mean), log2 scale")
    ax.set_ylabel("accuracy (mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
              ncol=1 if acc.variant.nunique() < 6 else 2)
    ax.set_title(title or "Accuracy vs generated tokens")
    fig.tight_layout()
    return _save(fig, path)
