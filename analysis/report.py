"""Every table and figure of a sweep in one call (what `python -m analysis` runs; notebooks can call it too).

    from analysis.runs import load_sweep
    from analysis.report import write_report
    paths = write_report(load_sweep("multirun"), "figs", references={"Llama-3.1-8B": 0.5})

Runs are split into the reference pool (difficulty bins) and the candidates (everything drawn and selected), see
analysis.difficulty; runs.csv says which each run is (`role`).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from analysis import plots
from analysis.compute_optimal import compute_optimal
from analysis.difficulty import (
    ABSOLUTE_THRESHOLDS,
    CANDIDATE,
    POOL_BINS,
    NoReferencePool,
    add_bins,
    assign_roles,
    problem_difficulty,
)
from analysis.runs import Sweep, accuracy_table, long_points, trait
from analysis.verifier import write_verifier
from tts.cli.sweep import short_dirname

log = logging.getLogger(__name__)


def parse_references(specs: list[str] | None) -> dict[str, float]:
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


def _with_pdf(png: Path) -> list[Path]:
    """A figure's PNG and the vector PDF written beside it."""
    return [png, png.with_suffix(".pdf")]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")


def with_roles(sweep: Sweep, reference_pool: tuple | None = None) -> Sweep:
    """The sweep with a `role` column ("reference" or "candidate") on runs and problems (analysis.difficulty)."""
    runs = sweep.runs.drop(columns=["role"], errors="ignore")
    runs.insert(runs.columns.get_loc("seed") + 1, "role", assign_roles(runs, reference_pool))
    role = runs.set_index("run_id").role
    problems = sweep.problems.assign(role=sweep.problems.run_id.map(role))
    return Sweep(problems=problems, runs=runs, knobs=sweep.knobs)


def setting_dir(out_dir: str | Path, setting: str, settings: list[str]) -> Path:
    """Where one setting's figures and tables go: `out_dir`, or a subfolder per setting when there are several. A
    setting named by many knobs (a served policy's URL and model path beside the sim's) gets a folder name that fits
    the file system's limit: a readable prefix and a hash of the whole name, as run directories do."""
    return Path(out_dir) if len(settings) == 1 else Path(out_dir) / short_dirname(_slug(setting))


def analyse_setting(
    part: Sweep,
    reference_pool: tuple | None = None,
    num_bins: int = 5,
    ties: str = "split",
    subsample: bool = True,
    repeats: int = 1,
    absolute_thresholds: tuple[float, ...] = ABSOLUTE_THRESHOLDS,
) -> dict:
    """Tables of one setting: {"problems", "difficulty", "points", "accuracy", "curves", "selections", "bins",
    "refused"} (refused: the one-line reason oracle/model bins are missing, or None)."""
    problems = part.problems if "role" in part.problems.columns else with_roles(part, reference_pool).problems
    candidates = problems[problems.role == CANDIDATE]
    if candidates.empty:
        raise NoReferencePool(
            f"{problems.setting.iloc[0]}: every run is in the reference pool; there is nothing "
            f"to compare (the pool's runs are never scored)"
        )
    refused = None
    try:
        difficulty = problem_difficulty(problems, reference_pool, num_bins, ties, absolute_thresholds)
        binned = add_bins(problems, reference_pool, difficulty=difficulty)
        bin_columns = list(POOL_BINS)
    except NoReferencePool as error:
        refused, difficulty, binned, bin_columns = str(error), None, candidates.copy(), []
    if binned["level"].notna().any():
        bin_columns.append("level")
    points = long_points(binned, subsample=subsample)
    acc = accuracy_table(points)
    curves, selections = compute_optimal(points, bins=bin_columns, repeats=repeats)
    return {
        "problems": binned,
        "difficulty": difficulty,
        "points": points,
        "accuracy": acc,
        "curves": curves,
        "selections": selections,
        "bins": bin_columns,
        "refused": refused,
    }


def write_setting(
    part: Sweep,
    target: str | Path,
    references: dict[str, float] | None = None,
    aggregation: str = "weighted",
    reference_pool: tuple | None = None,
    num_bins: int = 5,
    ties: str = "split",
    subsample: bool = True,
    repeats: int = 1,
    absolute_thresholds: tuple[float, ...] = ABSOLUTE_THRESHOLDS,
) -> tuple[dict, list[Path]]:
    """Tables (CSV) and figures (PNG, and PDF beside each) of one setting into `target`; returns (tables, paths)."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    result = analyse_setting(part, reference_pool, num_bins, ties, subsample, repeats, absolute_thresholds)
    if result["refused"]:
        print(f"python -m analysis: {result['refused']}", file=sys.stderr)
    problems, points, acc, curves = result["problems"], result["points"], result["accuracy"], result["curves"]
    tables = {
        "problems.csv": problems.dropna(axis=1, how="all"),  # budgets no run reached have no column
        "accuracy_vs_n.csv": acc,
        "compute_optimal.csv": curves,
        "compute_optimal_selection.csv": result["selections"],
    }
    if result["difficulty"] is not None:
        tables["difficulty.csv"] = result["difficulty"]
    for bins in result["bins"]:
        per_bin = (
            points.dropna(subset=[bins])
            .groupby(["variant", "aggregation", "budget", bins, "seed"])
            .correct.mean()
            .groupby(level=[0, 1, 2, 3])
            .agg(["mean", "min", "max"])
            .reset_index()
        )
        counts = points.dropna(subset=[bins]).groupby(["variant", "aggregation", "budget", bins]).unique_id.nunique()
        tables[f"accuracy_by_{bins}.csv"] = per_bin.merge(
            counts.rename("problems").reset_index(), on=["variant", "aggregation", "budget", bins]
        )
    written: list[Path] = []
    for name, table in tables.items():
        table.to_csv(target / name, index=False)
        written.append(target / name)
    setting = part.settings[0]
    suffix = f" - {setting}"
    run_budgets = sorted(part.runs[part.runs.run_id.isin(problems.run_id)].n.unique())
    written += _with_pdf(
        plots.accuracy_vs_n(
            acc, target / "accuracy_vs_n.png", title=f"Accuracy vs test-time compute{suffix}", references=references
        )
    )
    for bins in result["bins"]:
        written += _with_pdf(
            plots.bin_bars(
                points,
                bins,
                target / f"bins_{bins.replace('_bin', '')}.png",
                aggregation=aggregation,
                budgets=run_budgets,
                title=f"Accuracy per {plots.BIN_TITLES[bins]}, {plots.agg_label(aggregation)}{suffix}",
            )
        )
    if not curves.empty:
        written += _with_pdf(
            plots.compute_optimal_curve(
                curves,
                acc,
                target / "compute_optimal.png",
                aggregation=aggregation,
                references=references,
                title=f"Compute-optimal vs single strategies{suffix}",
            )
        )
    written += _with_pdf(
        plots.accuracy_vs_tokens(
            acc, target / "accuracy_vs_tokens.png", title=f"Accuracy vs generated tokens{suffix}", references=references
        )
    )
    result["verifier"], paths = write_verifier(
        part, problems, points, result["bins"], target, aggregation, title=suffix
    )
    written += paths
    if trait(problems, "sequential").any():
        for path in _sequential_figures(problems, target):
            written += _with_pdf(path)
    return result, written


def write_runs_csv(runs: pd.DataFrame, out_dir: Path) -> Path:
    """`runs.csv` with each run's directories relative to the folder the table is written into: the table names no
    path of the machine that wrote it, and it still leads to the runs when the two folders move together."""
    table = runs.copy()
    if "paths" in table:
        table["paths"] = [
            ";".join(os.path.relpath(p, out_dir) for p in str(paths).split(";") if p) for paths in table["paths"]
        ]
    path = Path(out_dir) / "runs.csv"
    table.to_csv(path, index=False)
    return path


def write_report(
    sweep: Sweep,
    out_dir: str | Path,
    references: dict[str, float] | None = None,
    aggregation: str | None = None,
    reference_pool: tuple | None = None,
    num_bins: int = 5,
    ties: str = "split",
    subsample: bool = True,
    repeats: int = 1,
    absolute_thresholds: tuple[float, ...] = ABSOLUTE_THRESHOLDS,
) -> list[Path]:
    """Write CSV tables and figures (PNG + PDF) for every setting of the sweep; returns the paths written.

    `aggregation` (of the per-bin bars and single-strategy lines) defaults to weighted, or majority when no run
    reports weighted (runs without a PRM); one that no run reports is a ValueError naming it."""
    reported = [c.split("@")[0] for c in sweep.problems.columns if "@" in c and sweep.problems[c].notna().any()]
    if aggregation is None:
        aggregation = "weighted" if "weighted" in reported else "maj"
    elif aggregation not in reported:
        available = ", ".join(dict.fromkeys(a for a in reported if a != "pass"))
        raise ValueError(
            f"--aggregation {aggregation}: no run of this sweep reports it (runs with prm=none report neither naive "
            f"nor weighted); choose one of {available}"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sweep = with_roles(sweep, reference_pool)
    written: list[Path] = [write_runs_csv(sweep.runs, out_dir)]
    settings = sweep.settings
    for setting in settings:
        started = time.perf_counter()
        _, paths = write_setting(
            sweep.setting(setting),
            setting_dir(out_dir, setting, settings),
            references,
            aggregation,
            reference_pool,
            num_bins,
            ties,
            subsample,
            repeats,
            absolute_thresholds,
        )
        written += paths
        log.info("%s: %d figures and tables in %.1f s", setting, len(paths), time.perf_counter() - started)
    return written


def _sequential_figures(problems: pd.DataFrame, target: Path) -> list[Path]:
    """Figures of the sequential-revision strategies, when their module is installed."""
    try:
        from analysis.sequential import make_figures
    except ImportError as error:
        log.warning("runs of sequential strategies found but analysis.sequential is unavailable (%s)", error)
        return []
    return list(make_figures(problems, target))
