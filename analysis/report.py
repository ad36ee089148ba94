"""Every table and figure of a sweep in one call (what `python -m analysis` runs; notebooks can call it too).

    from analysis.runs import load_sweep
    from analysis.report import write_report
    paths = write_report(load_sweep("multirun"), "figs", references={"Llama-3.1-8B": 0.5})
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Optional, Union

import pandas as pd
import yaml

from analysis import plots
from analysis.compute_optimal import compute_optimal
from analysis.difficulty import problem_difficulty
from analysis.runs import Sweep, accuracy_table, long_points

log = logging.getLogger(__name__)

SEQUENTIAL_STRATEGIES = {"filter_vote", "revisions"}


def parse_references(specs: Optional[list[str]]) -> dict[str, float]:
    """`NAME=VALUE` strings and/or YAML files (a mapping name: accuracy, optionally under `references:`)."""
    references: dict[str, float] = {}
    for spec in specs or []:
        if "=" in spec and not Path(spec).exists():
            name, _, value = spec.rpartition("=")
            try:
                references[name.strip()] = float(value)
            except ValueError:
                raise ValueError(f"--reference {spec!r}: expected NAME=ACCURACY, e.g. 'Llama-3.1-8B=0.5'") from None
            continue
        path = Path(spec)
        if not path.exists():
            raise FileNotFoundError(f"--reference {spec!r}: not NAME=ACCURACY and no such YAML file")
        data = yaml.safe_load(path.read_text()) or {}
        data = data.get("references", data)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of name -> accuracy")
        references.update({str(k): float(v) for k, v in data.items()})
    return references


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")


def write_report(sweep: Sweep, out_dir: Union[str, Path], references: Optional[dict[str, float]] = None,
                 aggregation: str = "weighted", reference_pool: Optional[tuple[str, int]] = None, num_bins: int = 5,
                 ties: str = "split", subsample: bool = True, repeats: int = 1) -> list[Path]:
    """Write CSV tables and PNG figures for every setting of the sweep; returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    settings = sweep.settings
    sweep.runs.to_csv(out_dir / "runs.csv", index=False)
    written.append(out_dir / "runs.csv")
    for setting in settings:
        started = time.perf_counter()
        part = sweep.setting(setting)
        target = out_dir if len(settings) == 1 else out_dir / _slug(setting)
        target.mkdir(parents=True, exist_ok=True)
        difficulty = problem_difficulty(part.problems, reference_pool, num_bins, ties)
        problems = part.problems.merge(difficulty[["setting", "unique_id", "oracle_bin", "model_bin"]],
                                       on=["setting", "unique_id"], how="left")
        points = long_points(problems, subsample=subsample)
        acc = accuracy_table(points)
        bin_columns = ["oracle_bin", "model_bin"] + (["level"] if problems["level"].notna().any() else [])
        curves, selections = compute_optimal(points, bins=bin_columns, repeats=repeats)
        tables = {
            "problems.csv": problems,
            "difficulty.csv": difficulty,
            "accuracy_vs_n.csv": acc,
            "compute_optimal.csv": curves,
            "compute_optimal_selection.csv": selections,
        }
        for bins in bin_columns:
            per_bin = (points.dropna(subset=[bins]).groupby(["variant", "aggregation", "budget", bins, "seed"])
                       .correct.mean().groupby(level=[0, 1, 2, 3]).agg(["mean", "min", "max"]).reset_index())
            tables[f"accuracy_by_{bins}.csv"] = per_bin
        for name, table in tables.items():
            table.to_csv(target / name, index=False)
            written.append(target / name)
        title_suffix = f" - {setting}"
        run_budgets = sorted(part.runs.n.unique())
        written.append(plots.accuracy_vs_n(acc, target / "accuracy_vs_n.png",
                                           title=f"Accuracy vs test-time compute{title_suffix}", references=references))
        for bins in bin_columns:
            written.append(plots.bin_bars(points, bins, target / f"bins_{bins.replace('_bin', '')}.png",
                                          aggregation=aggregation, budgets=run_budgets,
                                          title=f"Accuracy per {plots.BIN_TITLES[bins]}, "
                                                f"{plots.AGG_LABELS.get(aggregation, aggregation)}{title_suffix}"))
        shown = curves[curves.bins.isin(["oracle_bin", "model_bin", "all"])]
        written.append(plots.compute_optimal_curve(
            shown, acc, target / "compute_optimal.png", aggregation=aggregation, references=references,
            title=f"Compute-optimal vs single strategies{title_suffix}"))
        written.append(plots.accuracy_vs_tokens(acc, target / "accuracy_vs_tokens.png",
                                                title=f"Accuracy vs generated tokens{title_suffix}",
                                                references=references))
        if set(part.problems.strategy) & SEQUENTIAL_STRATEGIES:
            written.extend(_sequential_figures(problems, target))
        log.info("%s: %d figures and tables in %.1f s", setting, len(written), time.perf_counter() - started)
    return written


def _sequential_figures(problems: pd.DataFrame, target: Path) -> list[Path]:
    """Figures of the sequential-revision strategies, when their module is installed."""
    try:
        from analysis.sequential import make_figures
    except ImportError as error:
        log.warning("runs of filter_vote/revisions found but analysis.sequential is unavailable (%s)", error)
        return []
    return list(make_figures(problems, target))
