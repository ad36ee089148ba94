"""Load a sweep into tidy pandas tables, from local run directories or from Weights & Biases.

    from analysis.runs import load_sweep
    sweep = load_sweep("multirun")                       # every run dir below (searched for results/)
    sweep = load_sweep(["multirun/a", "multirun/b"])     # explicit run dirs
    sweep = load_sweep("wandb:my-team/tts", filters={"config.strategy.name": "beam"})
    sweep.problems   # one row per (run, problem)
    sweep.runs       # one row per run

There is one parser: a W&B run is pulled back by downloading its `results` artifact (results/ + config.yaml +
metrics.json, as `tts.tracking.tracker` logs it) into a cache folder, which is then read exactly like a local run
directory.

Columns of `problems`:
  run_id, setting, strategy, variant, n, seed, reduction, <trait columns>, <knob columns>, unique_id, level, subject,
  `<agg>@<K>` for agg in naive/weighted/maj and K = 1, 2, 4, ... n  (expected correctness over random K-subsets),
  `pass@<K>`, tokens_generated, tokens_prm, mean_score (mean reduced PRM score of the n completions), completions,
  chain_length (attempts per chain, for runs whose completions form chains; else empty).
The trait columns (needs_prm, independent_samples, sequential, adaptive) are the strategy's declared traits
(`strategy_traits`); analysis selects runs by them, never by a strategy's name.
`setting` is model/prm/dataset (plus any other swept model/prm/dataset field); compute-optimal selection only ever
compares runs of the same setting. `variant` names a strategy with the knobs that vary between its runs
(strategy.*, budget.*, scoring.reduction), e.g. `best_of_n (temperature=1.0)`.

Several directories holding the same configuration (dataset shards, a merged dir next to its shards) are combined into
one run; a problem recorded twice is kept once (the copy from the directory with most records) and a warning says so.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union, cast

import numpy as np
import pandas as pd
import yaml

from tts.config.keys import option_schemas
from tts.config.schema import TRAITS, StrategyConfig
from tts.data.records import Completion, ProblemRecord
from tts.scoring import (
    Need,
    aggregate_metrics,
    budgets,
    find_aggregation,
    reduce_scores,
    registered,
    report_rank,
    reported_aggregations,
)
from tts.store.format import RESULTS
from tts.store.merge import RANGE_KEYS as SHARD_KEYS
from tts.store.merge import identity_of
from tts.store.provenance import _flatten, config_hash
from tts.store.readers import RunDamaged, find_run_dirs
from tts.store.writer import RunDirectory

log = logging.getLogger(__name__)

# Config fields that name a strategy's variant when they differ between its runs; everything else that differs
# (model.*, prm.*, dataset.*) makes a different setting.
KNOB_PREFIXES = ("strategy.", "budget.", "scoring.reduction")
# Fields that never distinguish runs: sharding, bookkeeping, and the sweep axes themselves.
IGNORED_FIELDS = {
    "n",
    "seed",
    *(f"dataset.{k}" for k in SHARD_KEYS),
    "strategy.name",
    "strategy.search_batch_size",
    "scoring.grading_timeout",
    "scoring.subset_draws",
    "batch_size",
    *(f"traits.{name}" for name in TRAITS),  # follow from the strategy, which the setting and variant already name
}
KNOB_ABBREVIATIONS = {"strategy.": "", "budget.": "budget.", "scoring.": ""}


@dataclass
class Sweep:
    problems: pd.DataFrame
    runs: pd.DataFrame
    knobs: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (run dir, why) left out by skip_damaged

    @property
    def settings(self) -> list[str]:
        return sorted(self.problems["setting"].unique())

    def setting(self, name: str) -> Sweep:
        """The part of the sweep that ran under one model/prm/dataset setting."""
        return Sweep(
            self.problems[self.problems.setting == name].copy(),
            self.runs[self.runs.setting == name].copy(),
            self.knobs,
            self.skipped,
        )


# -- reading run directories (found by tts.store.readers.find_run_dirs) ------------------------------------------------


def read_run_dir(path: Path) -> tuple[dict, list[ProblemRecord]]:
    """The resolved config and the records of one run directory (read only; a torn last write is ignored).

    Raises RunDamaged, one line naming the file, when the directory cannot be trusted: no readable config.yaml, or
    results that do not verify against their digests (tts.store.readers)."""
    config_file = Path(path) / "config.yaml"
    try:
        config = yaml.safe_load(config_file.read_text())
    except FileNotFoundError:
        raise RunDamaged(f"{path}: no config.yaml next to {RESULTS}/; is this a tts run directory?") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise RunDamaged(f"{config_file} cannot be read ({type(error).__name__})") from None
    missing = [
        k for k in ("n", "seed", "strategy.name") if k not in _flatten(config if isinstance(config, dict) else {})
    ]
    if missing:
        raise RunDamaged(f"{config_file} is not a run's config (no {', '.join(missing)})")
    return config, RunDirectory(path).records()


def strategy_traits(config: dict) -> dict[str, bool]:
    """A run's strategy traits, as its config records them; a run written before they were recorded gets those its
    strategy's schema declares now (none, for a strategy that no longer exists)."""
    schema = option_schemas("strategy").get(config["strategy"]["name"], StrategyConfig)  # the base declares none
    return {**cast(type[StrategyConfig], schema).traits(), **config.get("traits", {})}


def trait(table: pd.DataFrame, name: str) -> pd.Series:
    """Whether each row's strategy has trait `name`: the table's trait column (the loader writes one), or, in a
    table made without it, what the row's strategy's schema declares."""
    if name in table.columns:
        return table[name].astype(bool)
    return table.strategy.map(lambda strategy: strategy_traits({"strategy": {"name": strategy}})[name]).astype(bool)


def chain_length(completions: Sequence[Completion]) -> Optional[int]:
    """Attempts per chain when the completions form chains (each records `extra["chain"]`: sequential revisions),
    else None."""
    chains = [c.extra["chain"] for c in completions if "chain" in c.extra]
    return max(chains.count(chain) for chain in set(chains)) if chains else None


def _identity(config: dict) -> str:
    """Runs with the same identity are one experiment, possibly split into shards over several directories."""
    return config_hash(identity_of(config))


# -- per-problem rows -----------------------------------------------------------------------------------------------


def _problem_row(record: ProblemRecord, n: int, reduction: str) -> dict:
    scores = record.scores
    completions = record.completions
    reduced = [reduce_scores(c.step_scores, reduction) for c in completions]
    row = {
        "unique_id": record.unique_id,
        "level": record.level,
        "subject": record.subject,
        "completions": len(completions),
        "tokens_generated": record.compute.get("generated_tokens", sum(c.tokens for c in completions)),
        "tokens_prm": record.compute.get("prm_tokens", 0),
        "mean_score": float(np.mean(reduced)) if reduced else math.nan,
        "chain_length": chain_length(completions),
    }
    # a column in every run for the aggregations any strategy can report (naive and weighted empty without a PRM)
    every_run = [a.name for a in registered() if not (a.once or a.variants) and a.needs <= {Need.PRM}]
    for k in budgets(int(n)):
        for agg in every_run:
            row[f"{agg}@{k}"] = scores.expected.get(f"{agg}@{k}", math.nan)
        row[f"pass@{k}"] = scores.pass_at.get(f"pass@{k}", math.nan)
    row.update(  # those only some runs report (confidence, votes)
        {
            name: value
            for name, value in scores.expected.items()
            if "@" in name and find_aggregation(name.rsplit("@", 1)[0])
        }
    )
    own = [a.name for a in registered() if a.once and a.name in scores.expected]
    for agg in own:  # an adaptive strategy's own answer, from at most n completions
        row[f"{agg}@{n}"] = scores.expected[agg]
    if own:
        for field in ("generated", "stopped", "used"):
            row[f"traces_{field}"] = record.compute.get(f"traces_{field}", math.nan)
    return row


def _build(run_dirs: Iterable[tuple[Path, str]], skip_damaged: bool = False) -> Sweep:
    """Tables from (run dir, source) pairs. A damaged run directory stops the load with RunDamaged naming its file,
    or, with `skip_damaged`, is left out, warned about and listed in `Sweep.skipped`."""
    groups: dict[str, dict] = {}
    skipped: list[tuple[str, str]] = []
    for path, source in run_dirs:
        try:
            config, records = read_run_dir(path)
        except RunDamaged as damage:
            if not skip_damaged:
                raise
            log.warning("skipped a damaged run directory: %s", damage)
            skipped.append((str(path), str(damage)))
            continue
        identity = _identity(config)
        group = groups.setdefault(identity, {"config": config, "parts": []})
        group["parts"].append((path, source, records))
    if not groups:
        raise FileNotFoundError(
            f"no runs found (no {RESULTS}/ under the given paths)"
            + (f"; {len(skipped)} damaged run directories skipped" if skipped else "")
        )

    flat_configs = {identity: _flatten(g["config"]) for identity, g in groups.items()}
    knobs_by_strategy: dict[str, list[str]] = {}
    setting_fields: set[str] = set()
    every_field = sorted(set().union(*flat_configs.values()))
    for name in every_field:
        if name in IGNORED_FIELDS or name.startswith("logger.") or name.endswith(".path"):
            continue
        values_by_strategy: dict[str, set] = {}
        for flat in flat_configs.values():
            values_by_strategy.setdefault(flat["strategy.name"], set()).add(repr(flat.get(name)))
        if name.startswith(KNOB_PREFIXES):
            for strategy, values in values_by_strategy.items():
                if len(values) > 1:
                    knobs_by_strategy.setdefault(strategy, []).append(name)
        elif len(set().union(*values_by_strategy.values())) > 1:
            setting_fields.add(name)
    base_setting = ("model.name", "prm.name", "dataset.name")
    extra_setting = sorted(setting_fields - set(base_setting))
    all_knobs = sorted({k for ks in knobs_by_strategy.values() for k in ks})

    problem_frames, run_rows = [], []
    for identity, group in groups.items():
        flat = flat_configs[identity]
        strategy = flat["strategy.name"]  # every run's config names its strategy (the schema requires it)
        n, seed = int(flat["n"]), int(flat["seed"])
        reduction = flat.get("scoring.reduction", "last")
        setting = "/".join(str(flat.get(k)) for k in base_setting)
        if extra_setting:
            setting += " [" + ", ".join(f"{k}={flat.get(k)}" for k in extra_setting) + "]"
        knobs = {k: flat.get(k) for k in knobs_by_strategy.get(strategy, [])}
        variant = strategy + (" (" + ", ".join(f"{_short(k)}={v}" for k, v in knobs.items()) + ")" if knobs else "")
        run_id = f"{setting}|{variant}|n={n}|seed={seed}"
        # shards and merged copies: keep each problem once, preferring the directory with most records
        parts = sorted(group["parts"], key=lambda part: -len(part[2]))
        first_copy: dict[str, ProblemRecord] = {}
        for _, _, records in parts:
            for record in records:
                first_copy.setdefault(record.unique_id, record)
        kept = list(first_copy.values())
        dropped = sum(len(records) for _, _, records in parts) - len(kept)
        rows = [_problem_row(record, n, reduction) for record in kept]
        if dropped:
            log.warning(
                "%s: %d problems recorded in more than one of %s; kept one copy each",
                run_id,
                dropped,
                [str(p) for p, _, _ in parts],
            )
        frame = pd.DataFrame(rows)
        meta = {
            "run_id": run_id,
            "setting": setting,
            "strategy": strategy,
            "variant": variant,
            "n": n,
            "seed": seed,
            "reduction": reduction,
            **strategy_traits(group["config"]),
        }
        for knob in all_knobs:
            meta[knob] = flat.get(knob)
        for position, (key, value) in enumerate(meta.items()):
            frame.insert(position, key, [value] * len(frame))
        problem_frames.append(frame)
        run_row = dict(meta)
        run_row.update(
            problems=len(frame), paths=";".join(str(p) for p, _, _ in parts), source=parts[0][1], config_hash=identity
        )
        metrics = aggregate_metrics(kept, n)  # the run's accuracies, computed as for metrics.json
        for k in budgets(int(n)):
            for agg in sorted(_frame_aggregations(frame), key=report_rank):
                if f"{agg}@{k}" in frame:
                    run_row[f"acc/{agg}@{k}"] = metrics.get(f"acc/{agg}@{k}", math.nan)
            run_row[f"pass@{k}"] = metrics.get(f"pass@{k}", math.nan)
        once = [f"{kind}/{a.name}" for a in registered() if a.once for kind in ("acc", "acc_ci95")]
        for name in (*once, "traces/generated", "traces/stopped", "traces/used"):
            if name in metrics:
                run_row[name] = metrics[name]
        run_row["tokens/generated"] = float(frame["tokens_generated"].sum()) if len(frame) else 0.0
        run_row["tokens/generated_per_problem"] = float(frame["tokens_generated"].mean()) if len(frame) else math.nan
        run_rows.append(run_row)

    problems = pd.concat(problem_frames, ignore_index=True)
    runs = pd.DataFrame(run_rows).sort_values(["setting", "strategy", "variant", "n", "seed"]).reset_index(drop=True)
    ordered = [c for c in problems.columns if "@" not in c] + sorted(
        (c for c in problems.columns if "@" in c), key=lambda c: (int(c.split("@")[1]), report_rank(c.split("@")[0]))
    )
    problems = problems[ordered].sort_values(["setting", "variant", "n", "seed", "unique_id"]).reset_index(drop=True)
    return Sweep(problems=problems, runs=runs, knobs=all_knobs, skipped=skipped)


def _frame_aggregations(frame: pd.DataFrame) -> list[str]:
    """The aggregations a frame of problem rows reports (a column with a figure; naive and weighted are empty columns
    for a run without a PRM)."""
    return list(
        dict.fromkeys(
            c.split("@")[0] for c in frame.columns if "@" in c and not c.startswith("pass@") and frame[c].notna().any()
        )
    )


def _short(knob: str) -> str:
    for prefix, replacement in KNOB_ABBREVIATIONS.items():
        if knob.startswith(prefix):
            return replacement + knob[len(prefix) :]
    return knob


# -- the two sources ------------------------------------------------------------------------------------------------


def load_local(paths: Union[str, Path, Sequence[Union[str, Path]]], skip_damaged: bool = False) -> Sweep:
    """A sweep from local run directories (a multirun folder, searched recursively, or a list of run folders)."""
    return _build(((p, "local") for p in find_run_dirs(paths)), skip_damaged)


def download_wandb_runs(
    project: str, filters: Optional[dict] = None, cache_dir: Union[str, Path] = ".wandb_runs", api=None
) -> list[Path]:
    """Download the `results` artifact of every run of `entity/project` matching `filters` (W&B's MongoDB-style
    run filters, e.g. {"config.strategy.name": "beam", "state": "finished"}); returns one local run dir per run.

    Artifacts logged by older trackers hold only their results file: config.yaml and metrics.json are then written from
    the run's config and summary, so the same local parser reads every run.
    """
    if api is None:
        import wandb

        from tts.tracking.tracker import online_problem

        problem = online_problem()  # no key or no server: say so now rather than prompt or hang
        if problem:
            raise RuntimeError(
                f"cannot read runs from W&B: {problem}. Local run directories work offline: "
                f"python -m analysis multirun --out figs"
            )
        api = wandb.Api(timeout=30)
    cache = Path(cache_dir)
    dirs = []
    for run in api.runs(project, filters=filters or {}):
        artifacts = [a for a in run.logged_artifacts() if a.type == "results"]
        if not artifacts:
            log.warning("W&B run %s (%s) has no results artifact; skipped", run.id, run.name)
            continue
        target = cache / re.sub(r"[^A-Za-z0-9_.-]", "_", f"{project}_{run.id}")
        artifacts[-1].download(root=str(target))
        if not (target / "config.yaml").exists():
            (target / "config.yaml").write_text(yaml.safe_dump(dict(run.config), sort_keys=False))
        if not (target / "metrics.json").exists():
            summary = {k: v for k, v in dict(run.summary).items() if isinstance(v, (int, float))}
            (target / "metrics.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
        dirs.append(target)
    if not dirs:
        raise FileNotFoundError(f"no W&B runs with a results artifact in {project} (filters={filters})")
    return dirs


def load_wandb(
    project: str,
    filters: Optional[dict] = None,
    cache_dir: Union[str, Path] = ".wandb_runs",
    api=None,
    skip_damaged: bool = False,
) -> Sweep:
    """A sweep from W&B: download each run's `results` artifact, then parse it as a local run directory."""
    return _build(((p, "wandb") for p in download_wandb_runs(project, filters, cache_dir, api)), skip_damaged)


def load_sweep(
    source, filters: Optional[dict] = None, cache_dir: Union[str, Path] = ".wandb_runs", skip_damaged: bool = False
) -> Sweep:
    """`wandb:entity/project` -> W&B; anything else -> local paths. `skip_damaged`: leave out run directories whose
    results do not verify (listed in `Sweep.skipped`) instead of stopping at the first."""
    if isinstance(source, str) and source.startswith("wandb:"):
        return load_wandb(source[len("wandb:") :], filters, cache_dir, skip_damaged=skip_damaged)
    return load_local(source, skip_damaged)


# -- derived views -------------------------------------------------------------------------------------------------


def long_points(problems: pd.DataFrame, subsample: bool = True) -> pd.DataFrame:
    """One row per (run, problem, aggregation, budget): the accuracy of that strategy at that budget.

    Every run gives its own budget N = n. With `subsample`, runs of a strategy with independent samples (best-of-N)
    also give every K < n, read from the run with the smallest n >= K of the same variant and seed (a run made at
    n = K wins over a subsample of a bigger one). Generated tokens at K are scaled by K / n (i.i.d. samples cost the
    same on average).
    """
    frames = []
    # independent samples: the accuracy at K < n (expected over K-subsets) is a valid best-of-K estimate, so one
    # n=64 run also gives the K = 1..32 points; any other strategy is only read at K = n
    independent = trait(problems, "independent_samples").rename("independent")
    runs = problems[["run_id", "setting", "variant", "seed", "n"]].join(independent).drop_duplicates()
    chosen: dict[tuple, tuple[int, str]] = {}  # (setting, variant, seed, K) -> (n, run_id)
    for row in runs.itertuples():
        ks = budgets(int(row.n)) if (subsample and row.independent) else [row.n]
        for k in ks:
            key = (row.setting, row.variant, row.seed, k)
            if key not in chosen or row.n < chosen[key][0]:
                chosen[key] = (row.n, row.run_id)
    by_run = {run_id: frame for run_id, frame in problems.groupby("run_id", sort=False)}
    meta = [c for c in problems.columns if "@" not in c and c not in ("tokens_generated", "tokens_prm")]
    for (_setting, _variant, _seed, k), (n, run_id) in chosen.items():
        frame = by_run[run_id]
        # an adaptive strategy's run gives one point, its own answer at its budget n: its naive / weighted / maj at
        # n would cover only the problems where it spent the whole budget
        adaptive = bool(trait(frame, "adaptive").iloc[0])
        once = [f"{a.name}@{k}" for a in registered() if a.once] if adaptive else []
        own = [name.split("@")[0] for name in once if name in frame and frame[name].notna().any()]
        for agg in own or reported_aggregations(f"{agg}@{k}" for agg in _frame_aggregations(frame)):
            part = frame[meta].copy()
            part["aggregation"] = agg
            part["budget"] = k
            part["correct"] = frame[f"{agg}@{k}"].to_numpy()
            part["tokens"] = frame["tokens_generated"].to_numpy() * k / n
            frames.append(part)
    out = pd.concat(frames, ignore_index=True)
    return out


def accuracy_table(points: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per (setting, variant, aggregation, budget): mean over seeds, min/max over seeds, tokens per problem."""
    per_seed = points.groupby(["setting", "strategy", "variant", "aggregation", "budget", "seed"], as_index=False).agg(
        accuracy=("correct", "mean"), tokens=("tokens", "mean"), problems=("unique_id", "nunique")
    )
    table = per_seed.groupby(["setting", "strategy", "variant", "aggregation", "budget"], as_index=False).agg(
        accuracy=("accuracy", "mean"),
        acc_min=("accuracy", "min"),
        acc_max=("accuracy", "max"),
        seeds=("seed", "nunique"),
        tokens_per_problem=("tokens", "mean"),
        problems=("problems", "max"),
    )
    return table.sort_values(["setting", "variant", "aggregation", "budget"]).reset_index(drop=True)
