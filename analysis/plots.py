"""The paper's figures from the tidy tables (matplotlib, Agg backend).

Every function takes tables (never run directories), writes one PNG and, beside it, the same figure as a vector PDF
(for a paper), and returns the PNG's path, so a notebook can call them on any subset. Colours are fixed per strategy
variant across figures; line styles mark the aggregation.
"""

from __future__ import annotations

import logging
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.legend as mlegend  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.transforms as mtransforms  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator  # noqa: E402

from tts.scoring import aggregation_label, find_aggregation, report_rank  # noqa: E402

log = logging.getLogger(__name__)

# Line styles of the registered aggregations (a family's members share one); any other draws solid.
LineStyle = str | tuple[int, tuple[int, int]]
AGG_STYLES: dict[str, LineStyle] = {
    "naive": ":",
    "weighted": "-",
    "maj": "--",
    "deepconf": "-.",
    "self_certainty": (0, (1, 3)),
    "borda_sc": (0, (5, 1)),
    "final": "-.",
}
agg_label = aggregation_label  # how a figure names an aggregation: its registered label


def agg_style(agg: str) -> LineStyle:
    found = find_aggregation(agg)
    return AGG_STYLES.get(found.name if found else agg, "-")


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


def _legend_below(fig, ax, title: str, handles=None, ncol: int = 5):
    """One legend for all panels, under them, so it never hides data (returns it)."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    else:
        labels = [h.get_label() for h in handles]
    return fig.legend(
        handles,
        labels,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=max(1, min(len(labels), ncol)),
        fontsize=8.5,
        title=title,
        title_fontsize=8.5,
        frameon=False,
    )


def layout_problems(fig) -> list[str]:
    """What a reader would find wrong with the figure's layout, as it is saved (`bbox_inches="tight"`): a legend or
    caption cut off by the saved area, a legend over a panel's plotted area, two legends or a legend and a caption on
    top of each other. Empty when the layout is sound; `save_figure` logs the problems of every figure it writes."""
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    saved = fig.get_tightbbox(renderer)
    legends = list(fig.legends)
    for ax in fig.axes:
        legends += [a for a in [ax.get_legend(), *ax.artists] if isinstance(a, mlegend.Legend) and a not in legends]
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
    texts = [t for t in fig.texts if t.get_text().strip()]
    problems = []
    dpi = fig.dpi
    saved_px = mtransforms.Bbox.from_extents(*(v * dpi for v in saved.extents)).padded(1)
    for i, legend in enumerate(legends):
        box = legend.get_window_extent(renderer)
        if not saved_px.contains(box.x0, box.y0) or not saved_px.contains(box.x1, box.y1):
            problems.append(f"legend {i} is cut off by the saved figure")
        for ax in panels:
            if box.overlaps(ax.get_window_extent(renderer)):
                problems.append(f"legend {i} lies over the plot '{ax.get_title()}'")
        for j, other in enumerate(legends[i + 1 :], start=i + 1):
            if box.overlaps(other.get_window_extent(renderer)):
                problems.append(f"legends {i} and {j} overlap")
        for text in texts:
            if box.overlaps(text.get_window_extent(renderer)):
                problems.append(f"legend {i} overlaps the text '{text.get_text()[:40]}'")
    for text in texts:
        box = text.get_window_extent(renderer)
        if not saved_px.contains(box.x0, box.y0) or not saved_px.contains(box.x1, box.y1):
            problems.append(f"the text '{text.get_text()[:40]}' is cut off by the saved figure")
    return problems


def save_figure(fig, path: Path, check_layout: bool = True) -> Path:
    """PNG at `path` and the same figure as PDF beside it, with a warning for each layout problem (`check_layout`:
    False for figures whose small panels keep their legends inside by design); returns the PNG's path. Every figure
    of analysis/ is written here, so they share one resolution and one cropping."""
    for problem in layout_problems(fig) if check_layout else ():
        log.warning("%s: %s", path.name, problem)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    fig.savefig(path.with_suffix(".pdf"), bbox_inches="tight")
    plt.close(fig)
    return path


def accuracy_vs_n(acc: pd.DataFrame, path: Path, title: str = "", references: dict[str, float] | None = None) -> Path:
    """One panel per aggregation: accuracy vs N per strategy variant; band = min..max over seeds."""
    present = set(acc.aggregation)
    aggs = sorted(sorted(present), key=report_rank)
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
        ax.set_title(agg_label(agg))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (expected over K-subsets, mean over seeds)")
    fig.suptitle(title or "Accuracy vs test-time compute")
    fig.tight_layout()
    _legend_below(fig, axes[0][0], "strategy (band: min-max over seeds)")
    return save_figure(fig, path)


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
        row[0].set_ylabel(f"accuracy ({agg_label(aggregation)})")
    fig.suptitle(title or f"Accuracy per {BIN_TITLES.get(bin_column, bin_column)}")
    fig.tight_layout()
    _legend_below(fig, axes.flat[0], "strategy (whiskers: min-max over seeds)")
    return save_figure(fig, path)


CURVE_STYLES = {
    "oracle bins": ("black", "s"),
    "model bins": ("tab:purple", "D"),
    "absolute bins": ("tab:olive", "v"),
    "MATH level bins": ("tab:brown", "^"),
}


def compute_optimal_caption(curves: pd.DataFrame, aggregations: Sequence[str]) -> str:
    """What the figure shows, said from what was computed: the aggregations of the thin lines, the bins the
    compute-optimal curves choose by, and where those bins came from (oracle and model bins exist only with a
    reference pool, analysis.difficulty; MATH levels come with the dataset)."""
    methods = set(curves.method)
    kinds = [key for key in CURVE_STYLES if any(f"by {key}" in m for m in methods)]
    names = ", ".join(agg_label(a).split(" (")[0] for a in aggregations)
    parts = [
        f"Thin lines: each strategy alone with each aggregation ({names}; line style = aggregation), accuracy on all "
        "problems, so each aggregation's own gain is visible beside the compute-optimal one.",
        f"Thick lines: the compute-optimal policy, which picks the best (strategy, aggregation) per "
        f"{' / '.join(kinds) or 'bin'} and budget; solid: cross-validated (chosen on one half of each bin's problems "
        "and scored on the other half, then the halves swap); dotted: chosen and scored on all problems (in-sample, "
        "an optimistic upper reference).",
    ]
    if any(m.startswith("best single") for m in methods):
        parts.append(
            "Dash-dotted grey: one fixed (strategy, aggregation) per budget, cross-validated the same way; it can sit "
            "below the best thin line because the choice is made without the problems it is scored on."
        )
    if any(k != "MATH level bins" for k in kinds):
        parts.append("Oracle, model and absolute bins come from a reference pool of runs that are never scored.")
    elif kinds:
        parts.append(
            "Bins are the dataset's MATH levels: no reference pool was given, so no oracle, model or absolute bins."
        )
    return " ".join(parts)


def compute_optimal_curve(
    curves: pd.DataFrame,
    acc: pd.DataFrame,
    path: Path,
    aggregation: str = "weighted",
    title: str = "",
    references: dict[str, float] | None = None,
) -> Path:
    """The compute-optimal curves (cross-validated, solid; in-sample, dotted) against every single strategy with every
    aggregation (thin lines, so the gain over each is shown fairly, not only over `aggregation`'s), one legend under
    the axes and a caption generated from what was computed.
    `aggregation` is kept for callers; the thin lines show every aggregation of `acc`."""
    del aggregation
    fig, ax = plt.subplots(figsize=(10.5, 6.0))
    palette = colours(acc.variant.unique())
    present = set(acc.aggregation)
    aggregations = sorted(sorted(present), key=report_rank)
    singles = acc[acc.aggregation.isin(aggregations)]
    for (variant, agg), part in singles.groupby(["variant", "aggregation"]):
        part = part.sort_values("budget")
        ax.plot(
            part.budget,
            part.accuracy,
            marker="o",
            markersize=2.5,
            linewidth=1.0,
            alpha=0.75,
            linestyle=agg_style(agg),
            color=palette[variant],
            label=f"{variant}, {agg_label(agg).split(' (')[0]}",
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
            linewidth=2.4 if line == "-" else 1.8,
            label=method,
        )
    _references(ax, references)
    _log2_axis(ax, sorted(set(curves.budget) | set(singles.budget)))
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.set_title(title or "Compute-optimal scaling: best (strategy, aggregation) per difficulty bin and budget")
    fig.tight_layout()
    legend = _legend_below(fig, ax, "strategy, aggregation (thin) and compute-optimal (thick)", ncol=3)
    caption = "\n".join(textwrap.wrap(compute_optimal_caption(curves, aggregations), 150))
    fig.canvas.draw()
    bottom = legend.get_window_extent().transformed(fig.transFigure.inverted()).y0
    fig.text(0.01, bottom - 0.01, caption, ha="left", va="top", fontsize=7.5, color="0.2")
    return save_figure(fig, path)


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
            linestyle=agg_style(agg),
            linewidth=1.2,
            label=f"{variant}, {agg_label(agg)}",
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
    shapes = [Line2D([], [], color="0.3", marker=markers[b], linestyle="none", label=f"N = {b}") for b in budgets]
    lines, _ = ax.get_legend_handles_labels()
    ax.set_title(title or "Accuracy vs generated tokens")
    fig.tight_layout()
    # one legend under the axes (a second beside it collided with the first once there were many strategies)
    _legend_below(fig, ax, "strategy, aggregation (line) and budget (marker)", handles=lines + shapes, ncol=3)
    return save_figure(fig, path)
