"""Accuracy against budget N of the PRM-guided searches on a sweep: mean over seeds with a 95% interval.

    python tts/main.py -m strategy=beam,dvts,particle_filtering n=4,16,64 seed=0,1,2,3,4 logger=none \
        hydra.sweep.dir=multirun_scaling
    python benchmarks/search_scaling.py multirun_scaling

Reads every run's metrics.json (accuracy at its own N per aggregation, generated and PRM tokens per problem) and
prints one row per (strategy, N): mean over seeds and the half-width of a Student-t 95% interval over seeds (the
spread that reruns with other seeds would show; the problems are the same in every run). The interval of one seed is
the run's own binomial interval over problems (metrics.json's acc_ci95).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import yaml

# two-sided 97.5% quantiles of Student's t by degrees of freedom (1 .. 10); beyond: the normal's
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
AGGREGATIONS = ("weighted", "maj", "naive")


def interval(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return mean, T975.get(len(values) - 1, 1.96) * sd / math.sqrt(len(values))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="a multirun folder (searched for metrics.json)")
    args = parser.parse_args()
    runs: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for metrics_file in sorted(Path(args.sweep).rglob("metrics.json")):
        config = yaml.safe_load((metrics_file.parent / "config.yaml").read_text())
        metrics = json.loads(metrics_file.read_text())
        runs[(config["strategy"]["name"], int(config["n"]))].append(metrics | {"seed": config["seed"]})
    if not runs:
        print(f"no runs (metrics.json) under {args.sweep}", file=sys.stderr)
        return 2
    header = f"{'strategy':20s} {'N':>4s} {'seeds':>5s} " + " ".join(f"{'acc ' + a:>17s}" for a in AGGREGATIONS)
    print(header + f" {'pass@N':>15s} {'gen tok/problem':>16s} {'PRM tok/problem':>16s}")
    for (strategy, n), group in sorted(runs.items()):
        cells = []
        for key in [f"acc/{a}@{n}" for a in AGGREGATIONS] + [f"pass@{n}"]:
            mean, half = interval([m[key] for m in group])
            cells.append(f"{mean:.3f} ± {half:.3f}")
        problems = group[0]["tokens/generated"] / group[0]["tokens/generated_per_problem"]
        generated = interval([m["tokens/generated_per_problem"] for m in group])[0]
        prm = interval([m["tokens/prm"] / problems for m in group])[0]
        print(
            f"{strategy:20s} {n:4d} {len(group):5d} "
            + " ".join(f"{c:>17s}" for c in cells[:-1])
            + f" {cells[-1]:>15s} {generated:16.0f} {prm:16.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
