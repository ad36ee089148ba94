"""Does the policy's own confidence buy accuracy or save tokens, and does it stop helping when it carries no signal?

On the simulated world (docs/sim.md#token-confidence), per seed and problem:

- maj@n: n independent samples, plain majority (self-consistency), the fixed-budget reference;
- deepconf@eta offline: the same n samples, the top eta% by lowest group confidence vote, weighted by it (Fu et al.
  2025, offline mode; eta = 10 by default);
- deepconf online (`strategy=deepconf`): warm-up, stopping of low-confidence traces, and a stop once the
  confidence-weighted vote agrees, with the strategy's defaults;
- esc (`strategy=esc`): windows of samples until one window is unanimous, majority of all.

Each is run at `model.backend.confidence_signal` = the sim's default and = 0 (no information). Accuracies are means
over seeds and problems; every interval is 95% over problems of the per-problem mean over seeds (paired with maj@n
for differences), so a difference whose interval excludes 0 is beyond the noise of this problem set.

    python benchmarks/confidence_evidence.py                   # 5 seeds, 40 problems, n=64 (about 5 minutes)
    python benchmarks/confidence_evidence.py --problems 40 --seeds 2 --n 32   # quicker

It prints three checks: (a) with the signal on, deepconf@eta offline beats maj@n; (b) deepconf online reaches maj@n's
accuracy within one point with at least 40% fewer generated tokens; (c) with the signal off, no confidence method
beats maj@n beyond its interval.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tts.backends import build_policy  # noqa: E402
from tts.data import load_problems  # noqa: E402
from tts.grading import AnswerGrader  # noqa: E402
from tts.pipeline import grade_batch  # noqa: E402
from tts.prms import build_prm  # noqa: E402
from tts.search import build_strategy  # noqa: E402
from tts.search.base import RunSpec  # noqa: E402


def typed_config(overrides: list[str]):
    """The typed config `python tts/main.py <overrides>` runs with."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tts.config.validate import validate

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return validate(compose(config_name="config", overrides=overrides))


ONLINE_ETAS = (10.0, 90.0)  # DeepConf-low (aggressive) and DeepConf-high (conservative), the paper's two settings


def evaluate(args, signal: float) -> dict[str, dict[str, np.ndarray]]:
    """method -> {"correct": (seeds, problems), "tokens": (seeds, problems)}. maj@n and deepconf@eta offline are read
    off one best-of-N run (the pipeline's aggregations `maj@n` and `deepconf<eta>@n`), the online methods are runs of
    their strategies on the same problems and seed."""
    figures: dict[str, dict[str, list]] = {}
    grader = AnswerGrader(timeout=5.0)
    offline = {f"maj@{args.n}": f"maj@{args.n}", f"deepconf@{args.eta:g} offline": f"deepconf{args.eta:g}@{args.n}"}
    online = {f"deepconf online eta={eta:g}": ["strategy=deepconf", f"strategy.eta={eta}"] for eta in ONLINE_ETAS}
    online["esc online"] = ["strategy=esc"]
    try:
        for seed in range(args.seeds):
            common = [f"n={args.n}", f"seed={seed}", f"dataset.num_problems={args.problems}", "prm=none",
                      "logger=none", f"model.backend.confidence_signal={signal}", f"scoring.deepconf_eta=[{args.eta:g}]"]
            runs = {}
            for method, overrides in {"best_of_n": ["strategy=best_of_n"], **online}.items():
                cfg = typed_config([*common, *overrides])
                problems = load_problems(cfg.dataset)
                policy, prm = build_policy(cfg.model, cfg.seed), build_prm(cfg.prm)
                outputs = build_strategy(cfg.strategy).search(problems, policy, prm, RunSpec.of(cfg))
                runs[method] = grade_batch(problems, outputs, grader, cfg)
            rows = {m: (runs["best_of_n"], name) for m, name in offline.items()}
            rows.update({m: (runs[m], "final") for m in online})
            for method, (records, name) in rows.items():
                entry = figures.setdefault(method, {"correct": [], "tokens": []})
                entry["correct"].append([r.scores.expected[name] for r in records])
                entry["tokens"].append([r.compute["generated_tokens"] for r in records])
    finally:
        grader.close()
    return {m: {k: np.asarray(v, dtype=float) for k, v in e.items()} for m, e in figures.items()}


def interval(per_problem: np.ndarray) -> float:
    """95% half-width of the mean over problems."""
    return 1.96 * per_problem.std(ddof=1) / math.sqrt(len(per_problem))


def report(figures, n: int, label: str) -> dict[str, tuple[float, float, float, float]]:
    """Prints one table; returns method -> (accuracy, its interval, difference to maj@n, its interval)."""
    reference = figures[f"maj@{n}"]
    ref_correct = reference["correct"].mean(axis=0)
    ref_tokens = reference["tokens"].mean()
    print(f"\n{label}")
    print(f"{'method':<24}{'accuracy':>18}{'vs maj@n':>20}{'tokens/problem':>16}{'saved':>8}")
    out = {}
    for method, entry in figures.items():
        correct = entry["correct"].mean(axis=0)  # per problem, mean over seeds
        diff = correct - ref_correct
        tokens = entry["tokens"].mean()
        out[method] = (correct.mean(), interval(correct), diff.mean(), interval(diff), 1 - tokens / ref_tokens)
        print(
            f"{method:<24}{correct.mean():>10.3f} ± {interval(correct):.3f}"
            f"{diff.mean():>+12.3f} ± {interval(diff):.3f}{tokens:>16.0f}{1 - tokens / ref_tokens:>8.0%}"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--eta", type=int, default=10, help="offline DeepConf keeps the top eta%% of samples")
    parser.add_argument("--signal", type=float, default=None, help="confidence_signal when on (default: the sim's)")
    args = parser.parse_args()
    started = time.perf_counter()
    on = args.signal if args.signal is not None else typed_config([]).model.backend.confidence_signal
    print(f"sim world, {args.problems} problems x {args.seeds} seeds, n={args.n}; intervals 95% over problems")
    with_signal = report(evaluate(args, on), args.n, f"confidence_signal={on}")
    without = report(evaluate(args, 0.0), args.n, "confidence_signal=0 (no information)")
    offline_name, online_name = f"deepconf@{args.eta:g} offline", "deepconf online"
    _, _, gain, gain_ci, _ = with_signal[offline_name]
    print(f"\n(a) {offline_name} - maj@{args.n} with the signal: {gain:+.3f} ± {gain_ci:.3f} "
          f"-> {'beats' if gain - gain_ci > 0 else 'does NOT beat'} majority")
    for eta in ONLINE_ETAS:
        name = f"{online_name} eta={eta:g}"
        _, _, loss, loss_ci, saved = with_signal[name]
        print(f"(b) {name}: {loss:+.3f} ± {loss_ci:.3f} vs maj@{args.n} with {saved:.0%} fewer tokens "
              f"-> {'met' if loss >= -0.01 and saved >= 0.40 else 'NOT met'} (within 1 point, >= 40% fewer)")
    beyond = [m for m, (_, _, d, ci, _) in without.items() if m != "esc online" and d - ci > 0]
    print(f"(c) without the signal, methods above maj@{args.n} beyond their interval: {beyond or 'none'}")
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
