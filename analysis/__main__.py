"""`python -m analysis RUNS... --out DIR`: every figure and table of a sweep.

    python -m analysis multirun --out figs
    python -m analysis multirun/synthetic/sim_sim/beam multirun/synthetic/sim_sim/best_of_n --out figs
    python -m analysis verifier multirun --out figs/verifier    # the PRM's diagnostics only (analysis/verifier.py)
    python -m analysis wandb:my-team/tts --filter config.dataset.name=math500 --out figs \
        --reference "Llama-3.1-8B=0.5" --reference refs.yaml

Writes, per setting (model/prm/dataset; a subfolder each when the sweep holds several):
  accuracy_vs_n, bins_oracle, bins_model, bins_absolute (with a reference pool), bins_level (when levels are known),
  compute_optimal, accuracy_vs_tokens, verifier_<bins> (each .png and .pdf), and the CSV tables behind them (problems,
  difficulty, accuracy_vs_n, accuracy_by_*, compute_optimal, compute_optimal_selection, verifier, verifier_reliability,
  verifier_gain), plus runs.csv for the whole sweep (one row per run, `role`: reference or candidate).

Difficulty bins come from a reference pool that is never scored (analysis/difficulty.py): by default best-of-N runs
with seed >= 100, e.g. `python tts/main.py -m strategy=best_of_n n=256 seed=100` next to a sweep of seeds 0-4. Without
one, oracle and model bins are refused with a one-line note and the rest (level bins included) is still written.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from analysis.difficulty import assign_roles, parse_pool, parse_thresholds
from analysis.report import parse_references, write_report
from analysis.runs import load_local, load_wandb
from tts.store.readers import RunDamaged


def _filters(specs: list[str]) -> dict:
    filters = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep:
            raise SystemExit(f"--filter {spec!r}: expected KEY=VALUE, e.g. config.strategy.name=beam")
        parsed: str | int | float = value
        for cast in (int, float):
            try:
                parsed = cast(value)
                break
            except ValueError:
                continue
        filters[key] = parsed
    return filters


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "verifier":
        from analysis.verifier_cli import main as verifier_main

        return verifier_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "runs", nargs="+", help="run directories or folders of runs (searched recursively), or wandb:ENTITY/PROJECT"
    )
    parser.add_argument("--out", required=True, help="folder for figures (PNG) and tables (CSV)")
    parser.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="W&B run filter, e.g. config.strategy.name=beam (repeatable)",
    )
    parser.add_argument("--cache", default=".wandb_runs", help="where W&B artifacts are downloaded")
    parser.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="NAME=ACC|FILE.yaml",
        help="horizontal reference line, e.g. 'Llama-3.1-8B=0.5', or a YAML of name: accuracy",
    )
    parser.add_argument(
        "--aggregation",
        default=None,
        help="aggregation of the per-bin bars and of the single-strategy lines in compute_optimal.png: naive, "
        "weighted, maj, or one the runs' confidence reports (deepconf10, self_certainty, borda_sc, ...); default "
        "weighted, or maj when no run has a PRM",
    )
    parser.add_argument(
        "--reference-pool",
        default=None,
        metavar="VARIANT:N[:SEEDS]",
        help="runs whose samples define the oracle/model difficulty bins and are never scored "
        "(default: best_of_n runs with seed >= 100, e.g. "
        "`python tts/main.py -m strategy=best_of_n n=256 seed=100`)",
    )
    parser.add_argument("--bins", type=int, default=5, help="number of difficulty bins (quantiles)")
    parser.add_argument(
        "--ties",
        default="split",
        choices=["split", "group"],
        help="split: equal-size bins, ties ordered by a hash of unique_id; group: ties share a bin",
    )
    parser.add_argument(
        "--absolute-thresholds",
        default=None,
        metavar="HIGH,...,LOW",
        help="pass@1 thresholds of the absolute difficulty bins, highest first (default 0.5,0.1: easy > 50%%, "
        "medium 10-50%%, hard < 10%%, as Liu et al. 2025)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="random two-fold splits averaged in the CV curve")
    parser.add_argument(
        "--no-subsample",
        action="store_true",
        help="read best-of-N only at each run's own n (not at K < n from subsets)",
    )
    parser.add_argument(
        "--skip-damaged",
        action="store_true",
        help="analyse the other runs when a run directory's results do not verify (edited, truncated or foreign "
        "files), listing what was skipped; without it such a directory stops the analysis, naming the file",
    )
    parser.add_argument(
        "--wandb",
        action="store_true",
        help="also log an analysis run (figures, tables) and a W&B Report (see analysis/wandb_report.py)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    started = time.perf_counter()
    wandb_sources = [r for r in args.runs if r.startswith("wandb:")]
    if wandb_sources and len(args.runs) > 1:
        raise SystemExit("give either one wandb:ENTITY/PROJECT or local run folders, not both")
    try:
        sweep = (
            load_wandb(
                wandb_sources[0][len("wandb:") :], _filters(args.filter), args.cache, skip_damaged=args.skip_damaged
            )
            if wandb_sources
            else load_local(args.runs, skip_damaged=args.skip_damaged)
        )
    except RunDamaged as damage:  # one damaged run directory: name its file and the way to go on without it
        print(f"python -m analysis: {damage}; pass --skip-damaged to analyse the other runs", file=sys.stderr)
        return 2
    except (RuntimeError, FileNotFoundError) as error:  # no runs, no key, no server: a message, not a traceback
        raise SystemExit(f"python -m analysis: {error}") from None
    if sweep.skipped:
        print(f"skipped {len(sweep.skipped)} damaged run director{'y' if len(sweep.skipped) == 1 else 'ies'}:")
        for _, why in sweep.skipped:
            print(f"  {why}")
    loaded = time.perf_counter()
    try:
        paths = write_report(
            sweep,
            args.out,
            references=parse_references(args.reference),
            aggregation=args.aggregation,
            reference_pool=parse_pool(args.reference_pool),
            num_bins=args.bins,
            ties=args.ties,
            subsample=not args.no_subsample,
            repeats=args.repeats,
            absolute_thresholds=parse_thresholds(args.absolute_thresholds),
        )
    except ValueError as error:  # a bad --reference / --reference-pool, a sweep with nothing to compare
        print(f"python -m analysis: {error}", file=sys.stderr)
        return 2
    figures = [p for p in paths if p.suffix == ".png"]
    tables = [p for p in paths if p.suffix == ".csv"]
    pool = (assign_roles(sweep.runs, parse_pool(args.reference_pool)) == "reference").sum()
    print(
        f"{len(sweep.runs)} runs ({pool} in the reference pool), {sweep.problems.unique_id.nunique()} problems, "
        f"settings: {', '.join(sweep.settings)}"
    )
    print(
        f"loaded in {loaded - started:.1f} s; wrote {len(figures)} figures (PNG + PDF) and {len(tables)} tables "
        f"to {args.out} in {time.perf_counter() - loaded:.1f} s"
    )
    for path in figures:
        print(f"  {path}")
    if args.wandb:
        from analysis.wandb_report import log_analysis

        log_analysis(sweep, args.out, paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
