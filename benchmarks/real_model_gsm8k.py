"""The table and scaling figure of docs/real-model-laptop.md, from the run directory of a real-model GSM8K run.

    python benchmarks/real_model_gsm8k.py RUN_DIR --out docs/real_model_gsm8k.png

Prints, at every n' the run reports (1, 2, 4, ... n): pass@n', maj@n' and the confidence aggregations with their 95%
intervals over problems (metrics.json, the subsets the run itself averaged over); then what the samples were like
(tokens, finish reasons, answers the grader could extract, distinct answers per problem) from the records, and the
search time from main.log, summed over the parts of a run done in several sittings (resume). Draws the accuracies
against n' on one axis.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.plots import agg_label  # noqa: E402
from tts.store.writer import RunDirectory  # noqa: E402

PASS = "pass"
PASS_LABEL = "pass@n (any sample right)"


def budgets(metrics: dict) -> list[int]:
    return sorted(int(k.split("@")[1]) for k in metrics if k.startswith("acc/maj@"))


def aggregations(metrics: dict, n: int) -> list[str]:
    """pass@n, majority vote, then every other aggregation the run reports at its largest n (the confidence ones with
    whatever `scoring.deepconf_eta` the run used), in metrics.json's order."""
    others = [k[len("acc/") : -len(f"@{n}")] for k in metrics if k.startswith("acc/") and k.endswith(f"@{n}")]
    return [PASS, "maj"] + [a for a in others if a != "maj"]


def label(aggregation: str) -> str:
    return PASS_LABEL if aggregation == PASS else agg_label(aggregation)


def title(run_dir: Path, problems: int) -> str:
    """`model (backend) on K dataset problems`, from the run's resolved config."""
    from omegaconf import OmegaConf

    config = OmegaConf.load(run_dir / "config.yaml")
    return f"{config.model.name} ({config.model.backend.name} backend) on {problems} {config.dataset.name} problems"


def search_seconds(run_dir: Path) -> tuple[float, int]:
    """(seconds, sittings): the `searched N problems in S s` lines of main.log, one per sitting."""
    log = run_dir / "main.log"
    found = re.findall(r"searched \d+ problems in ([0-9.]+) s", log.read_text()) if log.exists() else []
    return sum(float(s) for s in found), len(found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, help="the scaling figure (PNG)")
    args = parser.parse_args()

    metrics = json.loads((args.run_dir / "metrics.json").read_text())
    ns = budgets(metrics)
    present = aggregations(metrics, ns[-1])
    print(f"{metrics['problems']} problems; accuracy at n' (95% interval over problems)")
    print("| aggregation | " + " | ".join(f"n={n}" for n in ns) + " |")
    print("|---|" + "---|" * len(ns))
    for prefix in present:
        cells = []
        for n in ns:
            value = metrics[f"{PASS}@{n}" if prefix == PASS else f"acc/{prefix}@{n}"]
            ci = metrics.get(f"acc_ci95/{prefix}@{n}")
            cells.append(f"{value:.3f}" + (f" ± {ci:.3f}" if ci is not None else ""))
        print(f"| {label(prefix)} | " + " | ".join(cells) + " |")

    records = list(RunDirectory(args.run_dir).records())
    completions = [c for r in records for c in r.completions]
    finish = Counter(c.finish_reason for c in completions)
    extracted = sum(c.answer is not None for c in completions)
    right = sum(bool(c.correct) for c in completions)
    solved = sum(any(c.correct for c in r.completions) for r in records)
    distinct = [len({c.key for c in r.completions if c.key is not None}) for r in records]
    seconds, sittings = search_seconds(args.run_dir)
    generated = metrics["tokens/generated"]
    print()
    print(
        f"samples: {len(completions)}; right: {right} ({right / len(completions):.2%}); problems with a right "
        f"sample: {solved}"
    )
    print(
        f"finish reasons: {dict(finish)}; an answer extracted: {extracted} ({extracted / len(completions):.1%}); "
        f"distinct answers per problem: mean {sum(distinct) / len(distinct):.1f}"
    )
    print(
        f"tokens: generated {generated:,.0f} ({metrics['tokens/generated_per_problem']:,.0f} per problem), "
        f"prompt {metrics['tokens/prompt']:,.0f}, prompt computed {metrics['tokens/prompt_computed']:,.0f}"
    )
    if seconds:
        print(f"search time: {seconds:,.0f} s in {sittings} sitting(s), {generated / seconds:.1f} generated tokens/s")

    if args.out:
        from analysis import plots

        plt = plots.plt
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        for prefix in present:
            values = [metrics[f"{PASS}@{n}" if prefix == PASS else f"acc/{prefix}@{n}"] for n in ns]
            style = dict(linestyle="--", color="black") if prefix == PASS else {}
            ax.plot(ns, values, marker="o", markersize=4, label=label(prefix), **style)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns)
        ax.set_xticklabels([str(n) for n in ns])
        ax.set_xlabel("samples per problem n' (subsets of the run's n)")
        ax.set_ylabel("fraction of problems right")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.set_title(title(args.run_dir, metrics["problems"]))
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
        fig.tight_layout()
        fig.savefig(args.out, dpi=130)
        print(f"figure: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
