"""Accuracy vs N per search strategy, on easy vs hard problems: the simulated world's version of the papers' figure.

Snell et al. (2024) and Beeching, Tunstall & Rush (2024) find that PRM-guided search (beam search, DVTS) beats
best-of-N at small N on hard problems, while best-of-N (or DVTS) catches up or wins at large N on easy ones. This
script runs (or reads) a sweep on the embedded sim and plots accuracy against N per strategy for easy (levels 1-2)
and hard (levels 4-5) problems, so the claim can be checked on the sim.

    python benchmarks/sim_findings.py --sweep                    # run the sweep into multirun/, then plot
    python benchmarks/sim_findings.py --runs multirun/synthetic  # plot runs already on disk
    python benchmarks/sim_findings.py --runs multirun --aggregation maj --out /tmp/maj.png

Accuracy per problem is the run's expected accuracy@N (`scores.expected`, exact at N) under `--aggregation`
(weighted best-of-N voting by default, as in the blog post), averaged over problems and seeds; error bars are 95%
(Student t) intervals over seeds, or over problems when there is one seed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tts.store.run_dir import RunDirectory, find_run_dirs  # noqa: E402

T_975 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}  # two-sided 95%, by df
BINS = {"easy (levels 1-2)": (1, 2), "medium (level 3)": (3,), "hard (levels 4-5)": (4, 5)}
STYLE = {"best_of_n": ("tab:gray", "o"), "beam": ("tab:blue", "s"), "dvts": ("tab:orange", "^"),
         "lookahead": ("tab:green", "D"), "rebase": ("tab:red", "v")}


def run_sweep(strategies: list[str], ns: list[int], seeds: list[int], num_problems: int, sweep_dir: Path,
              extra: list[str]) -> None:
    """One Hydra multirun per strategy (the sweep the figure needs), sequentially on this machine."""
    for strategy in strategies:
        command = [sys.executable, str(REPO / "tts" / "main.py"), "-m", f"strategy={strategy}",
                   "n=" + ",".join(map(str, ns)), "seed=" + ",".join(map(str, seeds)), "logger=none",
                   f"dataset.num_problems={num_problems}", f"hydra.sweep.dir={sweep_dir}", *extra]
        print(" ".join(command[1:]), flush=True)
        subprocess.run(command, check=True, cwd=REPO)


def load_runs(roots: list[Path]) -> dict:
    """(strategy, n, seed) -> run directory, for every sim run directory under `roots`."""
    runs: dict = {}
    for run_dir in find_run_dirs(roots):
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        if config["model"]["name"] != "sim" or config["prm"]["name"] != "sim":
            continue
        runs[(config["strategy"]["name"], int(config["n"]), int(config["seed"]))] = run_dir
    return runs


def accuracies(path: Path, n: int, aggregation: str) -> dict[str, list[float]]:
    per_bin: dict[str, list[float]] = defaultdict(list)
    for record in RunDirectory(path).iter_records():
        value = record.scores.expected[f"{aggregation}@{n}"]
        for name, levels in BINS.items():
            if record.level in levels:
                per_bin[name].append(value)
    return per_bin


def summarise(runs: dict, aggregation: str) -> dict:
    """strategy -> bin -> n -> (mean, ci95, seeds)."""
    by_point: dict = defaultdict(lambda: defaultdict(list))  # (strategy, bin, n) -> per-seed means / per-problem values
    for (strategy, n, seed), path in sorted(runs.items()):
        for name, values in accuracies(path, n, aggregation).items():
            by_point[(strategy, name, n)]["seeds"].append(float(np.mean(values)))
            by_point[(strategy, name, n)]["problems"].extend(values)
    table: dict = defaultdict(lambda: defaultdict(dict))
    for (strategy, name, n), point in by_point.items():
        seeds = np.array(point["seeds"])
        if len(seeds) > 1:  # Student t: a sweep has a handful of seeds
            ci = T_975.get(len(seeds) - 1, 1.96) * seeds.std(ddof=1) / np.sqrt(len(seeds))
        else:
            problems = np.array(point["problems"])
            ci = 1.96 * problems.std(ddof=1) / np.sqrt(len(problems)) if len(problems) > 1 else 0.0
        table[strategy][name][n] = (float(seeds.mean()), float(ci), len(seeds))
    return table


def plot(table: dict, out: Path, aggregation: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(BINS), figsize=(5 * len(BINS), 4.2), sharey=False)
    order = [s for s in STYLE if s in table] + sorted(s for s in table if s not in STYLE)
    for ax, name in zip(axes, BINS):
        for strategy in order:
            points = table[strategy].get(name)
            if not points:
                continue
            ns = sorted(points)
            mean = [points[n][0] for n in ns]
            ci = [points[n][1] for n in ns]
            color, marker = STYLE.get(strategy, (None, "o"))
            seeds = max(points[n][2] for n in ns)
            label = f"{strategy} ({seeds} seed{'s' if seeds > 1 else ''})"
            ax.errorbar(ns, mean, yerr=ci, label=label, color=color, marker=marker, capsize=3)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("N (samples / beams per problem)")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"accuracy ({aggregation})")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    fig.suptitle("Simulated world (model=sim prm=sim dataset=synthetic): accuracy vs N by difficulty; "
                 "bars: 95% CI over seeds")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", action="store_true", help="run the sweep first (into --sweep-dir)")
    parser.add_argument("--sweep-dir", type=Path, default=REPO / "multirun" / "sim_findings")
    parser.add_argument("--runs", type=Path, nargs="*", default=None, help="directories to read runs from")
    parser.add_argument("--strategies", default="best_of_n,beam,dvts,rebase")
    parser.add_argument("--n", default="4,16,64,256")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--num-problems", type=int, default=500)
    parser.add_argument("--aggregation", default="weighted", choices=["weighted", "maj", "naive"])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "sim_findings.png")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for the sweep (e.g. prm.noise=1.5)")
    args = parser.parse_args()
    strategies = args.strategies.split(",")
    if args.sweep:
        run_sweep(strategies, [int(x) for x in args.n.split(",")], [int(x) for x in args.seeds.split(",")],
                  args.num_problems, args.sweep_dir, args.overrides)
    roots = args.runs or [args.sweep_dir]
    runs = {k: v for k, v in load_runs(roots).items() if k[0] in strategies}
    if not runs:
        sys.exit(f"no sim runs under {roots}")
    table = summarise(runs, args.aggregation)
    for strategy in table:
        for name in BINS:
            row = "  ".join(f"N={n}: {m:.3f}±{c:.3f}" for n, (m, c, _) in sorted(table[strategy][name].items()))
            print(f"{strategy:10s} {name:18s} {row}")
    plot(table, args.out, args.aggregation)


if __name__ == "__main__":
    main()
