"""Accuracy vs N per search strategy, on easy vs hard problems: the simulated world's version of the papers' figure.

Snell et al. (2024) and Beeching, Tunstall & Rush (2024) find that PRM-guided search (beam search, DVTS) beats
best-of-N at small N on hard problems, while best-of-N (or DVTS) catches up or wins at large N on easy ones. This
script runs (or reads) a sweep on the embedded sim and plots accuracy against N per strategy for easy (levels 1-2)
and hard (levels 4-5) problems, so the claim can be checked on the sim.

    python benchmarks/sim_findings.py --sweep                    # run the sweep into multirun/, then plot
    python benchmarks/sim_findings.py --runs multirun/synthetic  # plot runs already on disk
    python benchmarks/sim_findings.py --runs multirun --aggregation maj --out /tmp/maj.png
    python benchmarks/sim_findings.py --findings                 # the papers' findings table, measured in-process

`--findings` runs the strategies in this process (no run directories; the same search, grading and scoring code as
`tts/main.py`) on the first `--num-problems` problems (100 by default) for every seed of `--seeds` (0-4 by default):
best-of-N once at N=256 (smaller N from its subsets, as the analysis does), beam search and DVTS at each N of
`--search-n` (4, 16, 64 by default). It prints one Markdown table, each published finding beside what the sim gives
(a difference of two accuracies, mean over seeds with its 95% Student-t interval), and draws the figure from the same
numbers. The intervals are over seeds on one problem set: they say how sure the sim's own answer is, not how a new
problem set would come out.

Accuracy per problem is the run's expected accuracy@N (`scores.expected`, exact at N) under `--aggregation`
(weighted best-of-N voting by default, as in the blog post), averaged over problems and seeds; error bars are 95%
(Student t) intervals over seeds, or over problems when there is one seed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tts.store.readers import find_run_dirs  # noqa: E402

from tts.store.writer import RunDirectory  # noqa: E402

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


def bars_caption(seed_counts: set) -> str:
    """What the error bars are, from how many seeds the points had (summarise: Student t over seeds when a point has
    several, else the normal interval over problems)."""
    if seed_counts and min(seed_counts) > 1:
        return "bars: 95% interval over seeds (Student t), cut at 0 and 1"
    if seed_counts and max(seed_counts) > 1:
        return "bars: 95% interval over seeds where a point has several, else over problems; cut at 0 and 1"
    return "bars: 95% interval over problems (one seed), cut at 0 and 1"


def plot(table: dict, out: Path, aggregation: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(BINS), figsize=(5 * len(BINS), 4.2), sharey=False)
    order = [s for s in STYLE if s in table] + sorted(s for s in table if s not in STYLE)
    counts: set = set()
    for ax, name in zip(axes, BINS):
        for strategy in order:
            points = table[strategy].get(name)
            if not points:
                continue
            ns = sorted(points)
            mean = np.array([points[n][0] for n in ns])
            ci = np.array([points[n][1] for n in ns])
            counts.update(points[n][2] for n in ns)
            # an accuracy's interval is cut at 0 and 1: a bar beyond them would claim what cannot be
            below, above = np.minimum(ci, mean), np.minimum(ci, 1.0 - mean)
            color, marker = STYLE.get(strategy, (None, "o"))
            seeds = max(points[n][2] for n in ns)
            label = f"{strategy} ({seeds} seed{'s' if seeds > 1 else ''})"
            ax.errorbar(ns, mean, yerr=[below, above], label=label, color=color, marker=marker, capsize=3)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("N (samples / beams per problem)")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"accuracy ({aggregation})")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    fig.suptitle("Simulated world (model=sim prm=sim dataset=synthetic): accuracy vs N by difficulty; "
                 + bars_caption(counts))
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


# -- the findings table (--findings) -------------------------------------------------------------------------------

ALL = "all levels"
EASY, HARD = "easy (levels 1-2)", "hard (levels 4-5)"


def measure(seeds: list[int], num_problems: int, search_ns: list[int], bon_n: int, overrides: list[str]) -> dict:
    """seed -> (strategy, aggregation, bin, N) -> mean expected accuracy, from runs made in this process."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tts.backends import build_policy
    from tts.config.validate import validate
    from tts.data import load_problems
    from tts.grading import AnswerGrader
    from tts.pipeline import grade_batch
    from tts.prms import build_prm
    from tts.search import build_strategy
    from tts.search.base import RunSpec

    def records(strategy: str, n: int, seed: int) -> list:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = validate(compose(config_name="config", overrides=[
                f"strategy={strategy}", f"n={n}", f"seed={seed}", f"dataset.num_problems={num_problems}",
                "logger=none", *overrides]))
        problems = load_problems(cfg.dataset)
        policy, prm, search = build_policy(cfg.model, cfg.seed), build_prm(cfg.prm), build_strategy(cfg.strategy)
        found = []
        for start in range(0, len(problems), cfg.batch_size):
            batch = problems[start : start + cfg.batch_size]
            found += grade_batch(batch, search.search(batch, policy, prm, RunSpec.of(cfg)), grader, cfg)
        return found

    bins = {ALL: (1, 2, 3, 4, 5), **BINS}
    results: dict = {}
    grader = AnswerGrader()
    try:
        for seed in seeds:
            acc: dict = {}
            runs = [("best_of_n", bon_n)] + [(s, n) for s in ("beam", "dvts") for n in search_ns]
            for strategy, n in runs:
                found = records(strategy, n, seed)
                ks = [k for k in (1, 4, 16, 64, 256) if k <= n] if strategy == "best_of_n" else [n]
                for name, levels in bins.items():
                    chosen = [r for r in found if r.level in levels]
                    for k in ks:
                        for agg in ("naive", "weighted", "maj"):
                            acc[(strategy, agg, name, k)] = float(np.mean([r.scores.expected[f"{agg}@{k}"]
                                                                           for r in chosen]))
            results[seed] = acc
            print(f"seed {seed} done", file=sys.stderr, flush=True)
    finally:
        grader.close()
    return results


def interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval over seeds."""
    a = np.asarray(values, dtype=float)
    half = T_975.get(len(a) - 1, 1.96) * a.std(ddof=1) / np.sqrt(len(a)) if len(a) > 1 else 0.0
    return float(a.mean()), float(a.mean() - half), float(a.mean() + half)


# (finding, what the papers report, [(label, (strategy, agg, bin, N) minus (strategy, agg, bin, N), rule)]). Rules for
# a difference's 95% interval: "beats" holds when it is above 0 ("reversed" below 0, "not resolved" across 0); "not
# behind" and "not ahead" hold also when it spans 0 (a tie); "plateau" holds when the mean gain is under 0.01. Every
# strategy's answer is its weighted vote unless the row names another aggregation; BoN is best-of-N.
def findings(search_ns: list[int]) -> list[tuple]:
    small, large = min(search_ns), max(search_ns)
    bon = "best_of_n"
    return [
        ("Weighted best-of-N beats naive best-of-N, most at large N",
         "Beeching et al., best-of-N figure: weighted BoN consistently above vanilla BoN, the gap widest at large N",
         [(f"N={k}", (bon, "weighted", ALL, k), (bon, "naive", ALL, k), "beats") for k in (4, 16, 64, 256)]),
        ("Naive best-of-N stops improving at large N",
         "Beeching et al.: best-of-N starts to plateau at N=256",
         [("N=256 minus N=64", (bon, "naive", ALL, 256), (bon, "naive", ALL, 64), "plateau")]),
        ("Majority voting beats one sample",
         "Beeching et al., majority-voting figure: accuracy rises with N, then levels off",
         [("maj@256 minus N=1", (bon, "maj", ALL, 256), (bon, "maj", ALL, 1), "beats")]),
        ("Beam search beats best-of-N at small budgets",
         "Snell et al. Fig. 3 (left) and Beeching et al., beam-search figure: beam ahead at low N",
         [(f"N={k}", ("beam", "weighted", ALL, k), (bon, "weighted", ALL, k), "beats") for k in search_ns[:2]]),
        ("Beam search beats best-of-N on hard problems",
         "Snell et al. Fig. 3 (right), Beeching et al., per-level figure: search helps most on harder problems",
         [(f"N={k}", ("beam", "weighted", HARD, k), (bon, "weighted", HARD, k), "beats") for k in search_ns]),
        ("Best-of-N matches or beats beam search on easy problems at large budgets",
         "Snell et al. Fig. 3 (right): on levels 1-2 beam search falls behind best-of-N at high budgets",
         [(f"N={large}", (bon, "weighted", EASY, large), ("beam", "weighted", EASY, large), "not behind")]),
        ("DVTS beats beam search at large N, not at small N",
         "Beeching et al., DVTS figure: DVTS ahead at large N, beam search at small N",
         [(f"N={small}", ("dvts", "weighted", ALL, small), ("beam", "weighted", ALL, small), "not ahead"),
          (f"N={large}", ("dvts", "weighted", ALL, large), ("beam", "weighted", ALL, large), "beats")]),
    ]


NOT_SHOWN = [
    ("Small models with compute-optimal search beat larger ones (1B beats 8B, 3B beats 70B)",
     "Beeching et al., opening figure", "cannot show: the sim has one policy, no larger model to compare with"),
    ("The best sequential-to-parallel revision ratio depends on difficulty",
     "Snell et al., revisions figures", "not shown (measured with the defaults before this calibration, see below)"),
    ("Lookahead search falls behind beam search at equal generation budget",
     "Snell et al. Fig. 3 (left)", "not measured by this command (lookahead at N=64 costs minutes per seed)"),
]


def verdict(rule: str, mean: float, lo: float, hi: float) -> str:
    """One difference's outcome under its rule (see `findings`)."""
    if rule == "plateau":
        return "holds" if mean < 0.01 else "does not hold"
    if lo > 0:
        return "does not hold" if rule == "not ahead" else "holds"
    if hi < 0:
        return "holds" if rule == "not ahead" else ("reversed" if rule == "beats" else "does not hold")
    return "not resolved" if rule == "beats" else "holds (a tie)"


def findings_table(results: dict, search_ns: list[int]) -> str:
    seeds = sorted(results)
    lines = [f"| finding | the papers | the sim ({len(seeds)} seeds, mean [95% interval]) | holds? |",
             "|---|---|---|---|"]
    for name, paper, diffs in findings(search_ns):
        cells, outcomes = [], []
        for label, a, b, rule in diffs:
            mean, lo, hi = interval([results[s][a] - results[s][b] for s in seeds])
            cells.append(f"{label}: {mean:+.3f} [{lo:+.3f}, {hi:+.3f}]")
            outcomes.append((label, verdict(rule, mean, lo, hi)))
        a, b = diffs[0][1], diffs[0][2]
        what = f"{a[0]} {a[1]} minus {b[0]} {b[1]}, {a[2]}" if a[:3] != b[:3] else f"{a[0]} {a[1]}, {a[2]}"
        if len({o for _, o in outcomes}) == 1:
            decision = outcomes[0][1]
        else:
            decision = "; ".join(f"{o} at {label}" for label, o in outcomes)
        lines.append(f"| {name} | {paper} | {what}: {'; '.join(cells)} | {decision} |")
    for name, paper, why in NOT_SHOWN:
        lines.append(f"| {name} | {paper} | {why} | not shown |")
    return "\n".join(lines)


def figure_table(results: dict) -> dict:
    """The plot's table (strategy -> bin -> N -> (mean, ci95, seeds)) from the in-process results."""
    table: dict = defaultdict(lambda: defaultdict(dict))
    keys = {k for acc in results.values() for k in acc if k[1] == "weighted" and k[2] in BINS and k[3] >= 4}
    for strategy, agg, name, n in keys:
        mean, lo, _ = interval([results[s][(strategy, agg, name, n)] for s in results])
        table[strategy][name][n] = (mean, mean - lo, len(results))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", action="store_true", help="run the sweep first (into --sweep-dir)")
    parser.add_argument("--findings", action="store_true",
                        help="measure the papers' findings in this process, print their table and draw the figure")
    parser.add_argument("--search-n", default="4,16,64", help="--findings: N of the beam search and DVTS runs")
    parser.add_argument("--results", type=Path, default=None,
                        help="--findings: write the measured accuracies here (JSON); if the file exists, read them "
                             "from it instead of measuring (to redraw the table and figure)")
    parser.add_argument("--sweep-dir", type=Path, default=REPO / "multirun" / "sim_findings")
    parser.add_argument("--runs", type=Path, nargs="*", default=None, help="directories to read runs from")
    parser.add_argument("--strategies", default="best_of_n,beam,dvts,rebase")
    parser.add_argument("--n", default="4,16,64,256")
    parser.add_argument("--seeds", default=None, help="default 0 (0,1,2,3,4 with --findings)")
    parser.add_argument("--num-problems", type=int, default=None, help="default 500 (100 with --findings)")
    parser.add_argument("--aggregation", default="weighted", choices=["weighted", "maj", "naive"])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "sim_findings.png")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for the sweep (e.g. prm.noise=1.5)")
    args = parser.parse_args()
    strategies = args.strategies.split(",")
    if args.findings:
        search_ns = [int(x) for x in args.search_n.split(",")]
        if args.results and args.results.exists():
            saved = json.loads(args.results.read_text())
            results = {int(seed): {tuple(k.split("|")[:3]) + (int(k.split("|")[3]),): v for k, v in acc.items()}
                       for seed, acc in saved.items()}
        else:
            results = measure([int(x) for x in (args.seeds or "0,1,2,3,4").split(",")], args.num_problems or 100,
                              search_ns, 256, args.overrides)
            if args.results:
                args.results.write_text(json.dumps(
                    {seed: {"|".join(map(str, k)): v for k, v in acc.items()} for seed, acc in results.items()},
                    indent=1))
        print(findings_table(results, search_ns))
        plot(figure_table(results), args.out, "weighted")
        return
    args.seeds, args.num_problems = args.seeds or "0", args.num_problems or 500
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
