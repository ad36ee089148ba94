"""Verifier diagnostics: how good the PRM is, per difficulty bin, beside what PRM-guided search gains there.

    python -m analysis verifier multirun --out figs/verifier
    python -m analysis verifier multirun --out figs/verifier --processbench tests/data/processbench_sample.jsonl

A search can only be as good as the verifier that guides it, and a verifier that separates right from wrong solutions
on easy problems may be no better than chance on hard ones. Three measures, per difficulty bin (every bin scheme the
report has: oracle, model, absolute, level; bins from the reference pool, never from the scored runs):

- ProcessBench (Zheng et al. 2024, "ProcessBench: Identifying Process Errors in Mathematical Reasoning", arXiv
  2412.06559): the predicted earliest error is the first step whose score falls below a threshold (none below: the
  solution is judged correct). Accuracy on erroneous solutions (predicted step == the true earliest wrong step), on
  correct ones (no step flagged), and their harmonic mean F1. The threshold is chosen two ways, both reported:
  *held out* (chosen on one half of the problems, scored on the other, and the other way round: an honest estimate)
  and *swept* (the best F1 over a grid of thresholds on all of them: optimistic). Ground truth: a completion's
  `extra["first_wrong_step"]` when a run recorded it, else, on the synthetic dataset, the simulated world's own
  reading of the steps (the steps that agree with a correct solution, as the simulated PRM checks them; the index of
  the first that does not, -1 when all do). Without either, ProcessBench columns are empty.
  A ProcessBench-format file (JSON lines: problem, steps, label = index of the earliest wrong step or -1), read through
  `conf/dataset/processbench.yaml`'s columns and scored by the configured PRM (`--prm`), is measured the same way;
- calibration of the reduced score (`scoring.reduction`) against final correctness: a reliability diagram (ten
  equal-width score bins) and the expected calibration error (ECE: the count-weighted mean gap between a bin's mean
  score and its accuracy);
- discrimination: AUROC of the reduced score for final correctness (the chance a right solution outscores a wrong one).

The completions measured are the candidate runs' independent samples (a strategy that declares them, such as
best-of-N) when the sweep has any (not chosen by the PRM: a search keeps what the PRM over-rates, which would flatter
it), else every candidate completion. Beside them, per bin: the accuracy gain of each other strategy (beam, DVTS,
particle filtering, ...) over the best run of independent samples at the same budget and aggregation (the `best_of_n`
column).
"""

from __future__ import annotations

import functools
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.compute_optimal import fold_assignment
from analysis.difficulty import CANDIDATE
from analysis.runs import Sweep, trait
from tts.scoring import reduce_scores
from tts.store.writer import RunDirectory

THRESHOLDS = np.round(np.arange(0.01, 1.0, 0.01), 2)  # the grid a threshold is chosen from
CALIBRATION_BINS = 10

log = logging.getLogger(__name__)


# -- ground truth -------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _plan(problem: str):
    from tts.data.synthetic import solve

    return solve(problem)


def sim_first_wrong_step(problem: str, steps: list[str]) -> int | None:
    """The index of the first of `steps` that no correct solution of this synthetic problem would write (-1: none);
    None when the problem is not one the simulated world can read."""
    from tts.data.synthetic import right_prefix

    plan = _plan(problem)
    if not plan or not steps:
        return None
    right = right_prefix(plan, list(steps))[0]
    return -1 if right >= len(steps) else int(right)


# -- loading completions ------------------------------------------------------------------------------------------


def load_completions(sweep: Sweep, problems: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per completion of the candidate runs (only their runs of independent samples, when there are any):
    run_id, variant, strategy, n, seed, unique_id, score (reduced), step_scores, correct, label (earliest wrong step,
    -1 none, NaN unknown), and the bin columns of `problems` (the report's binned candidate table) when given."""
    runs = sweep.runs
    if "role" in runs.columns:
        runs = runs[runs.role == CANDIDATE]
    independent = trait(runs, "independent_samples")
    if independent.any():  # not chosen by the PRM
        runs = runs[independent]
    rows = []
    for run in runs.itertuples(index=False):
        seen: set[str] = set()
        for path in str(run.paths).split(";"):
            for record in RunDirectory(Path(path)).records():
                if record.unique_id in seen:
                    continue
                seen.add(record.unique_id)
                for c in record.completions:
                    label = c.extra.get("first_wrong_step") if c.extra else None
                    if label is None:
                        label = sim_first_wrong_step(record.problem, c.steps)
                    rows.append(
                        {
                            "run_id": run.run_id,
                            "setting": run.setting,
                            "variant": run.variant,
                            "strategy": run.strategy,
                            "n": run.n,
                            "seed": run.seed,
                            "unique_id": record.unique_id,
                            "score": reduce_scores(c.step_scores, run.reduction) if c.step_scores else math.nan,
                            "step_scores": list(c.step_scores),
                            "correct": c.correct,
                            "label": math.nan if label is None else int(label),
                        }
                    )
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    if problems is not None:
        bins = [c for c in ("oracle_bin", "model_bin", "absolute_bin", "level") if c in problems.columns]
        per_problem = problems.drop_duplicates(["setting", "unique_id"])[["setting", "unique_id", *bins]]
        table = table.merge(per_problem, on=["setting", "unique_id"], how="left")
    return table


# -- ProcessBench ---------------------------------------------------------------------------------------------------


def _intervals(step_scores: list[list[float]], labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per solution, the thresholds t at which "first step scored below t" is the right answer: lo < t <= hi.

    Erroneous (label L): step L must fall below t and no step before it: lo = score of step L, hi = min of the scores
    before it (1 + anything when L = 0). Correct (label -1): no step below t: lo = -inf, hi = min of all scores."""
    lo = np.full(len(labels), np.nan)
    hi = np.full(len(labels), np.nan)
    for i, (scores, label) in enumerate(zip(step_scores, labels)):
        if np.isnan(label) or not len(scores):
            continue
        label = int(label)
        if label < 0:
            lo[i], hi[i] = -np.inf, min(scores)
        elif label < len(scores):
            lo[i], hi[i] = scores[label], (min(scores[:label]) if label else np.inf)
    return lo, hi


def processbench_scores(lo, hi, erroneous, thresholds) -> dict[str, np.ndarray]:
    """Accuracy on erroneous and on correct solutions and F1, at each threshold (arrays over `thresholds`)."""
    t = np.asarray(thresholds, dtype=float)[:, None]
    right = (lo[None, :] < t) & (t <= hi[None, :])
    err = erroneous.astype(bool)
    acc_err = right[:, err].mean(axis=1) if err.any() else np.full(len(t), np.nan)
    acc_ok = right[:, ~err].mean(axis=1) if (~err).any() else np.full(len(t), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(acc_err + acc_ok > 0, 2 * acc_err * acc_ok / (acc_err + acc_ok), 0.0)
    return {"acc_erroneous": acc_err, "acc_correct": acc_ok, "f1": f1}


def _best_threshold(lo, hi, erroneous) -> float:
    f1 = processbench_scores(lo, hi, erroneous, THRESHOLDS)["f1"]
    f1 = np.nan_to_num(f1, nan=-1.0)
    return float(THRESHOLDS[int(np.argmax(f1))])  # ties: the lowest threshold


def processbench_thresholds(table: pd.DataFrame) -> pd.DataFrame:
    """`table` (completions with a label) with lo, hi, fold, threshold_heldout (chosen on the other half of the
    problems) and threshold_swept (best F1 on all of them)."""
    table = table[table.label.notna()].copy()
    if table.empty:
        return table.assign(lo=[], hi=[], fold=[], threshold_heldout=[], threshold_swept=[])
    table["lo"], table["hi"] = _intervals(list(table.step_scores), table.label.to_numpy(dtype=float))
    table = table[table.hi.notna()]
    erroneous = table.label.to_numpy() >= 0
    ids = table.unique_id.drop_duplicates()
    folds = fold_assignment(ids, pd.Series(0, index=ids.index)).set_axis(ids.to_numpy())
    table["fold"] = table.unique_id.map(folds).to_numpy()
    lo, hi = table.lo.to_numpy(), table.hi.to_numpy()
    table["threshold_swept"] = _best_threshold(lo, hi, erroneous)
    for fold in (0, 1):
        train, test = (table.fold != fold).to_numpy(), (table.fold == fold).to_numpy()
        if train.any():
            table.loc[test, "threshold_heldout"] = _best_threshold(lo[train], hi[train], erroneous[train])
        else:  # one problem only: nothing to hold out
            table.loc[test, "threshold_heldout"] = table.threshold_swept[test]
    return table


def _processbench_row(part: pd.DataFrame) -> dict:
    if part.empty:
        return {}
    lo, hi, err = part.lo.to_numpy(), part.hi.to_numpy(), part.label.to_numpy() >= 0
    row: dict = {"erroneous": int(err.sum()), "correct_solutions": int((~err).sum())}
    for how in ("heldout", "swept"):
        t = part[f"threshold_{how}"].to_numpy()
        right = (lo < t) & (t <= hi)
        acc_err = right[err].mean() if err.any() else math.nan
        acc_ok = right[~err].mean() if (~err).any() else math.nan
        total = acc_err + acc_ok
        row[f"acc_erroneous_{how}"] = acc_err
        row[f"acc_correct_{how}"] = acc_ok
        row[f"f1_{how}"] = 2 * acc_err * acc_ok / total if total > 0 else (0.0 if total == 0 else math.nan)
    row["threshold_swept"] = float(part.threshold_swept.iloc[0])
    row["threshold_heldout"] = "/".join(f"{t:.2f}" for t in sorted(part.threshold_heldout.unique()))
    return row


# -- calibration and discrimination --------------------------------------------------------------------------------


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(a positive outscores a negative), ties counting one half (the Mann-Whitney statistic); NaN without both."""
    positive = positive.astype(bool)
    pos, neg = int(positive.sum()), int((~positive).sum())
    if not pos or not neg:
        return math.nan
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    return float((ranks[positive].sum() - pos * (pos + 1) / 2) / (pos * neg))


def reliability(scores: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS) -> pd.DataFrame:
    """Per equal-width score bin: mean score, accuracy, count (empty bins left out)."""
    index = np.clip((np.asarray(scores) * bins).astype(int), 0, bins - 1)
    frame = pd.DataFrame({"bin": index, "score": scores, "correct": correct.astype(float)})
    table = frame.groupby("bin").agg(score=("score", "mean"), accuracy=("correct", "mean"), count=("score", "size"))
    return table.reset_index()


def ece(scores: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    if not len(scores):
        return math.nan
    table = reliability(scores, correct, bins)
    return float((table["count"] * (table.score - table.accuracy).abs()).sum() / table["count"].sum())


# -- per bin ------------------------------------------------------------------------------------------------------


def _groups(table: pd.DataFrame, schemes: list[str]):
    yield "all", "all", table
    for scheme in schemes:
        for value in sorted(table[scheme].dropna().unique()):
            yield scheme, str(int(value)), table[table[scheme] == value]


def diagnose(completions: pd.DataFrame, schemes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(measures per (bins, bin), reliability diagram per (bins, bin))."""
    graded = completions[completions.correct.notna() & completions.score.notna()]
    labelled = processbench_thresholds(completions)
    rows, diagrams = [], []
    for scheme, value, part in _groups(graded, schemes):
        scores, correct = part.score.to_numpy(dtype=float), part.correct.to_numpy(dtype=bool)
        row = {
            "bins": scheme,
            "bin": value,
            "completions": len(part),
            "problems": part.unique_id.nunique(),
            "accuracy": float(correct.mean()) if len(part) else math.nan,
            "mean_score": float(scores.mean()) if len(part) else math.nan,
            "auroc": auroc(scores, correct),
            "ece": ece(scores, correct),
        }
        pb = labelled if scheme == "all" else labelled[labelled[scheme] == float(value)]
        row.update(_processbench_row(pb))
        rows.append(row)
        if len(part):
            diagrams.append(reliability(scores, correct).assign(bins=scheme, bin=value))
    measures = pd.DataFrame(rows)
    diagram = pd.concat(diagrams, ignore_index=True) if diagrams else pd.DataFrame()
    return measures, diagram


def search_gain(points: pd.DataFrame, measures: pd.DataFrame, schemes: list[str]) -> pd.DataFrame:
    """Per (bins, bin, search variant, aggregation, budget): its accuracy, the best accuracy of independent samples
    (best-of-N) at the same budget and aggregation, the gain, and the PRM's AUROC in that bin."""
    if points.empty or not trait(points, "independent_samples").any():
        return pd.DataFrame()
    rows = []
    for scheme, value, part in _groups(points, schemes):
        part = part.assign(baseline=trait(part, "independent_samples"))
        accuracy = part.groupby(["variant", "baseline", "aggregation", "budget"]).correct.mean().reset_index()
        base = accuracy[accuracy.baseline].groupby(["aggregation", "budget"]).correct.max()
        for r in accuracy[~accuracy.baseline].itertuples(index=False):
            if (r.aggregation, r.budget) not in base.index:
                continue
            baseline = float(base[(r.aggregation, r.budget)])
            rows.append(
                {
                    "bins": scheme,
                    "bin": value,
                    "variant": r.variant,
                    "aggregation": r.aggregation,
                    "budget": int(r.budget),
                    "accuracy": float(r.correct),
                    "best_of_n": baseline,
                    "gain": float(r.correct) - baseline,
                }
            )
    gain = pd.DataFrame(rows)
    if gain.empty:
        return gain
    discrimination = measures[["bins", "bin", "auroc"]].rename(columns={"auroc": "prm_auroc"})
    return gain.merge(discrimination, on=["bins", "bin"], how="left")


# -- figures ------------------------------------------------------------------------------------------------------


def plot_scheme(
    scheme: str,
    measures: pd.DataFrame,
    diagram: pd.DataFrame,
    gain: pd.DataFrame,
    path: Path,
    aggregation: str = "weighted",
    title: str = "",
) -> Path:
    """Reliability diagram per bin | AUROC, ECE, ProcessBench F1 per bin | search gain over best-of-N per bin."""
    from analysis import plots

    plt = plots.plt
    m = measures[measures.bins.isin([scheme, "all"])]
    labels = list(m.bin)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    ax = axes[0]
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1)
    cmap = plt.get_cmap("viridis")
    for i, label in enumerate(labels):
        d = diagram[(diagram.bins.isin([scheme, "all"])) & (diagram.bin == label)]
        colour = "black" if label == "all" else cmap(i / max(len(labels) - 1, 1))
        ax.plot(d.score, d.accuracy, marker="o", markersize=3, color=colour, label=f"bin {label}")
    ax.set_xlabel("reduced PRM score (mean in each tenth)")
    ax.set_ylabel("fraction of solutions correct")
    ax.set_title("reliability diagram")
    # legends under their panels, never over the points and bars (analysis.plots.layout_problems checks it)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=min(len(labels), 4), frameon=False)
    ax.grid(alpha=0.3)

    ax = axes[1]
    x = np.arange(len(labels))
    for k, (column, name) in enumerate(
        [("auroc", "AUROC"), ("ece", "ECE"), ("f1_heldout", "ProcessBench F1 (held-out threshold)")]
    ):
        values = m[column] if column in m else pd.Series(np.nan, index=m.index)
        ax.bar(x + (k - 1) * 0.27, values.astype(float), width=0.27, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(labels)
    ax.set_xlabel(f"{plots.BIN_TITLES.get(scheme, scheme)}" if scheme != "all" else "all problems")
    ax.set_ylim(0, 1.25)
    ax.set_title("verifier quality per bin")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1, frameon=False)
    ax.grid(axis="y", alpha=0.3)

    ax = axes[2]
    g = gain[(gain.bins.isin([scheme, "all"])) & (gain.aggregation == aggregation)] if not gain.empty else gain
    if not g.empty:
        budget = int(g.budget.max())
        g = g[g.budget == budget]
        variants = sorted(g.variant.unique())
        palette = plots.colours(variants)
        width = 0.8 / max(len(variants), 1)
        for i, variant in enumerate(variants):
            part = g[g.variant == variant].set_index("bin").reindex(labels)
            ax.bar(
                x + (i - (len(variants) - 1) / 2) * width, part.gain, width=width, color=palette[variant], label=variant
            )
        twin = ax.twinx()
        twin.plot(x, m.auroc.astype(float), color="black", marker="o", label="PRM AUROC")
        twin.set_ylim(0.4, 1.0)
        twin.set_ylabel("PRM AUROC (line)")
        ax.set_title(f"gain over best-of-N at N = {budget} ({aggregation})")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=min(len(variants), 3), frameon=False)
    else:
        ax.set_title("gain over best-of-N: no best-of-N and search runs to compare")
    ax.axhline(0, color="0.4", linewidth=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(labels)
    ax.set_ylabel("accuracy gain (bars)")
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title or "Verifier diagnostics")
    fig.tight_layout()
    return plots.save_figure(fig, path)


# -- one setting ----------------------------------------------------------------------------------------------------


def write_verifier(
    part: Sweep,
    problems: pd.DataFrame,
    points: pd.DataFrame,
    schemes: list[str],
    target: Path,
    aggregation: str = "weighted",
    title: str = "",
) -> tuple[pd.DataFrame, list[Path]]:
    """The verifier tables and figures of one setting into `target`; returns (measures per bin, paths written).
    `problems` and `points`: the report's binned candidate tables (analysis.report.analyse_setting)."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    completions = load_completions(part, problems)
    if completions.empty:
        return pd.DataFrame(), []
    if completions.score.isna().all():  # prm=none: no step was scored, there is no verifier to diagnose
        log.info("verifier diagnostics%s: no completion has PRM scores (prm=none); none written", title)
        return pd.DataFrame(), []
    schemes = [s for s in schemes if s in completions.columns and completions[s].notna().any()]
    measures, diagram = diagnose(completions, schemes)
    gain = search_gain(points, measures, schemes)
    written = []
    for name, table in (("verifier.csv", measures), ("verifier_reliability.csv", diagram), ("verifier_gain.csv", gain)):
        if table.empty:  # e.g. no search runs beside best-of-N: no gain table (an empty CSV has no columns to read)
            continue
        table.to_csv(target / name, index=False)
        written.append(target / name)
    for scheme in schemes or ["all"]:
        png = plot_scheme(
            scheme,
            measures,
            diagram,
            gain,
            target / f"verifier_{scheme.replace('_bin', '')}.png",
            aggregation,
            title=f"Verifier diagnostics by {scheme.replace('_', ' ')}{title}",
        )
        written += [png, png.with_suffix(".pdf")]
    return measures, written


def summary_lines(setting: str, measures: pd.DataFrame) -> list[str]:
    """One line per bin: F1 (held-out and swept threshold), ECE, AUROC."""
    lines = [f"{setting}: verifier per bin (F1 held-out / swept threshold, ECE, AUROC)"]
    for r in measures.itertuples(index=False):
        f1 = getattr(r, "f1_heldout", math.nan)
        swept = getattr(r, "f1_swept", math.nan)
        lines.append(
            f"  {r.bins:>12s} {r.bin:>3s}  n={r.completions:<6d} F1 {f1:.3f} / {swept:.3f}  ECE {r.ece:.3f}  "
            f"AUROC {r.auroc:.3f}"
        )
    return lines


# -- a ProcessBench-format file ------------------------------------------------------------------------------------


def load_processbench(path: str | Path, columns: dict[str, str] | None = None) -> pd.DataFrame:
    """Rows of a ProcessBench-format JSON lines file: problem, steps (a list of strings), label (the index of the
    earliest wrong step, -1 when all are right). `columns` maps these names to the file's own. A malformed row is
    refused with one line naming the file, row and column."""
    fields = ("problem", "steps", "label")
    columns = {**{f: f for f in fields}, **{k: v for k, v in (columns or {}).items() if k in fields}}
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}: row {number}: not JSON ({error.msg})") from None
            for name, column in columns.items():
                if column not in data:
                    raise ValueError(f"{path}: row {number}: no column {column!r} ({name})")
            steps, label = data[columns["steps"]], data[columns["label"]]
            if not isinstance(steps, list) or not steps or not all(isinstance(s, str) for s in steps):
                raise ValueError(
                    f"{path}: row {number}: column {columns['steps']!r} must be a non-empty list of strings"
                )
            if isinstance(label, bool) or not isinstance(label, int) or not -1 <= label < len(steps):
                raise ValueError(
                    f"{path}: row {number}: column {columns['label']!r} must be -1 or a step index < {len(steps)}, "
                    f"got {label!r}"
                )
            rows.append(
                {
                    "unique_id": str(data.get("id", number)),
                    "problem": str(data[columns["problem"]]),
                    "steps": steps,
                    "label": label,
                }
            )
    if not rows:
        raise ValueError(f"{path}: no rows")
    return pd.DataFrame(rows)


def score_processbench(rows: pd.DataFrame, prm) -> pd.DataFrame:
    """The rows with the PRM's step scores (one PRM call) and the ProcessBench thresholds and intervals."""
    scores = prm.score(list(rows.problem), [[list(steps)] for steps in rows.steps])
    return processbench_thresholds(rows.assign(step_scores=[per[0] for per in scores]))


def processbench_main(path: str, overrides: list[str]) -> pd.DataFrame:
    """Score a ProcessBench-format file with the PRM the (Hydra) overrides configure; one row: its measures."""
    from tts.config.validate import validate
    from tts.prms import build_prm

    cfg = validate(_compose([f"dataset.path={path}", "dataset=processbench", "logger=none", *overrides]))
    rows = load_processbench(cfg.dataset.path or path, cfg.dataset.columns)
    table = score_processbench(rows, build_prm(cfg.prm))
    return pd.DataFrame([{"bins": "all", "bin": "all", "completions": len(table), **_processbench_row(table)}])


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import tts.registry  # noqa: F401  # registers the schemas

    conf = Path(__file__).resolve().parent.parent / "conf"
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)
