"""`python -m analysis verifier RUNS... --out DIR`: the verifier diagnostics of analysis/verifier.py on a sweep, on
their own (every report also writes them). A module of its own because it drives the report's per-setting analysis
(analysis/report.py), which itself writes the verifier figures: the report imports the diagnostics, this imports both.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from analysis import verifier
from analysis.difficulty import parse_pool, parse_thresholds
from analysis.report import analyse_setting, setting_dir, with_roles
from analysis.runs import load_local, load_wandb
from analysis.verifier import processbench_main, summary_lines, write_verifier


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis verifier", description=verifier.__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", help="run directories or folders of runs, or wandb:ENTITY/PROJECT")
    parser.add_argument("--out", required=True, help="folder for figures (PNG + PDF) and tables (CSV)")
    parser.add_argument("--reference-pool", default=None, metavar="VARIANT:N[:SEEDS]")
    parser.add_argument("--absolute-thresholds", default=None, metavar="HIGH,...,LOW")
    parser.add_argument("--aggregation", default="weighted", choices=["naive", "weighted", "maj"])
    parser.add_argument("--cache", default=".wandb_runs")
    parser.add_argument(
        "--processbench",
        default=None,
        metavar="FILE.jsonl",
        help="also score a ProcessBench-format file with the PRM of --prm overrides (conf/dataset/processbench.yaml)",
    )
    parser.add_argument("--prm", action="append", default=[], metavar="OVERRIDE", help="e.g. prm=sim prm.noise=0.5")
    parser.add_argument("--wandb", action="store_true", help="also log the figures and tables to W&B")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        if args.processbench:
            table = processbench_main(args.processbench, [o for spec in args.prm for o in spec.split()])
            table.to_csv(out / "processbench.csv", index=False)
            written.append(out / "processbench.csv")
            for line in summary_lines(
                f"ProcessBench file {args.processbench}", table.assign(ece=math.nan, auroc=math.nan)
            ):
                print(line)
        if not args.runs:
            return 0
        source = args.runs[0]
        sweep = (
            load_wandb(source[len("wandb:") :], {}, args.cache)
            if source.startswith("wandb:")
            else load_local(args.runs)
        )
        pool = parse_pool(args.reference_pool)
        sweep = with_roles(sweep, pool)
        for setting in sweep.settings:
            part = sweep.setting(setting)
            result = analyse_setting(part, pool, absolute_thresholds=parse_thresholds(args.absolute_thresholds))
            if result["refused"]:
                print(f"python -m analysis verifier: {result['refused']}", file=sys.stderr)
            measures, paths = write_verifier(
                part,
                result["problems"],
                result["points"],
                list(result["bins"]),
                setting_dir(out, setting, sweep.settings),
                args.aggregation,
                title=f" - {setting}",
            )
            written += paths
            for line in summary_lines(setting, measures):
                print(line)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"python -m analysis verifier: {error}", file=sys.stderr)
        return 2
    if args.wandb and args.runs:
        from analysis.wandb_report import log_analysis

        log_analysis(sweep, out, written)
    return 0
