"""Grading/scoring throughput benchmark (issue 3).

Builds ``--problems`` x ``--n`` completions (default 500 x 256 = 128,000) with realistic final answers -- many
repeats, equivalent forms (``\\frac{1}{2}`` / ``0.5`` / ``1/2`` / ``\\dfrac12``), wrong answers, completions without
an answer, junk, and a few pathological strings (power towers, 100-deep ``\\frac``, a 1 MB answer, answers sympy
cannot finish within the bound) -- then, timed:

1. ``extract_answer`` on every completion text;
2. ``AnswerGrader.key`` on every answer (one call per completion, as the pipeline does; ``--batch`` uses
   ``AnswerGrader.keys`` per problem instead);
3. ``AnswerGrader.grade`` of every answer against the gold answer (``--batch``: ``grade_many``);
4. majority / weighted / naive selection on the first n' completions of every problem, n' = 1, 2, 4, ..., n,
   with ``select_majority``, ``select_weighted``, ``select_naive`` from `tts.scoring`.

Prints accuracy per n', the grader's statistics, completions/s and total seconds.

    python benchmarks/scoring.py                 # full size
    python benchmarks/scoring.py --problems 50   # quick
    python benchmarks/scoring.py --reference     # and the reference implementation's score() side by side
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from typing import List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tts.grading import AnswerGrader, extract_answer  # noqa: E402

try:  # the selection rules live in tts.scoring (issue: scoring pipeline)
    from tts.scoring import select_majority, select_naive, select_weighted  # noqa: E402

    SELECTION_SOURCE = "tts.scoring"
except ImportError:  # pragma: no cover - until tts.scoring lands
    SELECTION_SOURCE = "benchmark fallback (tts.scoring.select_* not importable)"

    def select_majority(keys: Sequence[Optional[str]]) -> int:
        counts: dict = {}
        for k in keys:
            if k is not None:
                counts[k] = counts.get(k, 0) + 1
        if not counts:
            return -1
        best = max(counts.values())
        return next(i for i, k in enumerate(keys) if k is not None and counts[k] == best)

    def select_weighted(keys: Sequence[Optional[str]], scores: Sequence[float]) -> int:
        tot: dict = {}
        for k, s in zip(keys, scores):
            if k is not None:
                tot[k] = tot.get(k, 0.0) + s
        if not tot:
            return -1
        best = max(tot.values())
        return next(i for i, k in enumerate(keys) if k is not None and tot[k] == best)

    def select_naive(scores: Sequence[float]) -> int:
        return max(range(len(scores)), key=lambda i: scores[i])


# Gold answers and equivalent ways a model writes them; wrong answers are generated per problem.
GOLDS: List[Tuple[str, List[str]]] = [
    ("\\frac{1}{2}", ["\\frac{1}{2}", "0.5", "1/2", "\\dfrac{1}{2}", "\\frac12", ".5"]),
    ("\\frac{3}{4}", ["\\frac{3}{4}", "0.75", "3/4", "\\dfrac34"]),
    ("-\\frac{2}{3}", ["-\\frac{2}{3}", "\\frac{-2}{3}", "-2/3"]),
    ("2\\sqrt{3}", ["2\\sqrt{3}", "\\sqrt{12}", "2 \\sqrt 3"]),
    ("\\frac{\\sqrt{2}}{2}", ["\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", "\\sqrt{2}/2"]),
    ("4\\pi", ["4\\pi", "4 \\pi", "\\pi \\cdot 4"]),
    ("\\frac{\\pi}{3}", ["\\frac{\\pi}{3}", "\\frac{1}{3}\\pi", "\\pi/3"]),
    ("(2, -1)", ["(2, -1)", "(2,-1)", "\\left(2, -1\\right)"]),
    ("[-2, 5)", ["[-2, 5)", "[-2,5)", "\\left[-2, 5\\right)"]),
    ("(-\\infty, 0) \\cup (1, \\infty)", ["(-\\infty, 0) \\cup (1, \\infty)", "(-\\infty,0)\\cup(1,\\infty)"]),
    ("\\{1, 3\\}", ["\\{1, 3\\}", "1, 3", "3, 1"]),
    ("x^2 + 2x + 1", ["x^2 + 2x + 1", "(x+1)^2", "x^2+2x+1"]),
    ("30^\\circ", ["30^\\circ", "30", "30^{\\circ}"]),
    ("25\\%", ["25\\%", "25", "25%"]),
    ("1{,}000", ["1000", "1{,}000", "1,000"]),
    ("\\text{(C)}", ["C", "(C)", "\\text{(C)}"]),
    ("5\\text{ cm}", ["5", "5\\text{ cm}", "5 cm"]),
    ("\\begin{pmatrix} 1 \\\\ -2 \\end{pmatrix}", ["\\begin{pmatrix} 1 \\\\ -2 \\end{pmatrix}",
                                                  "\\begin{pmatrix}1\\\\-2\\end{pmatrix}"]),
    ("y = 2x + 3", ["y = 2x + 3", "y=2x+3"]),
    ("x = 7", ["7", "x = 7", "x=7"]),
]

PATHOLOGICAL = [
    "10^{10^{10^{10}}}",
    "9^{9^{9^{9}}}",
    "\\frac{" * 100 + "1" + "}{2}" * 100,
    "x" * (1 << 20),
    "\\prod_{n=1}^{10^{9}} n",
    "(x+1)^{100000}",  # sympy cannot expand it within the bound: one kill and restart of the worker
]

JUNK = ["", "}{", "\\frac{", "I don't know", "\\boxed", "???", "$$", "\\text{undefined}"]

TEMPLATES = [
    "Let's think step by step. First we simplify the expression... Therefore the answer is $\\boxed{{{a}}}$.",
    "## Step 1: Set up\nWe have the equation.\n## Step 2: Solve\nSo we get {a}.\n\nThe final answer is: "
    "$\\boxed{{{a}}}$",
    "We compute carefully and obtain \\[ \\boxed{{{a}}} \\] I hope it is correct.",
    "The final answer is ${a}$. I hope it is correct.",
]


def _wrong(rng: random.Random, gold_i: int) -> List[List[str]]:
    """Three to five wrong answers, each with a couple of written forms: numbers, and (about half) symbolic forms
    unique to the problem, so a large share of distinct answers needs the symbolic path."""
    out = []
    for _ in range(rng.randint(3, 5)):
        k, m = rng.randint(2, 60), rng.randint(2, 30)
        kind = rng.random()
        if kind < 0.3:
            out.append([str(k), f"{k}.0"])
        elif kind < 0.45:
            out.append([f"\\frac{{{k}}}{{{k + 1}}}", f"{k}/{k + 1}"])
        elif kind < 0.55:
            out.append([f"{k}\\sqrt{{{m}}}", f"\\sqrt{{{k * k * m}}}"])
        elif kind < 0.65:
            out.append([f"\\frac{{{k}\\pi}}{{{m}}}", f"\\frac{{{k}}}{{{m}}}\\pi"])
        elif kind < 0.75:
            out.append([f"({k}, {-m})", f"\\left({k},{-m}\\right)"])
        elif kind < 0.85:
            out.append([f"x^2 + {k}x + {m}", f"{m} + {k}x + x^2"])
        elif kind < 0.9:
            out.append([f"[{-k}, {m})", f"\\left[{-k},{m}\\right)"])
        else:
            other = GOLDS[(gold_i + rng.randint(1, len(GOLDS) - 1)) % len(GOLDS)][1]
            out.append(other[:2])
    return out


def build(problems: int, n: int, seed: int = 0):
    rng = random.Random(seed)
    data = []
    for p in range(problems):
        gi = rng.randrange(len(GOLDS))
        gold, forms = GOLDS[gi]
        wrong = _wrong(rng, gi)
        p_correct = rng.uniform(0.15, 0.8)
        texts, scores = [], []
        for _ in range(n):
            r = rng.random()
            if r < 0.004:
                a: Optional[str] = rng.choice(PATHOLOGICAL)
                correct = False
            elif r < 0.03:
                a = rng.choice(JUNK)
                correct = False
            elif r < 0.08:
                a = None  # truncated / no answer
                correct = False
            else:
                correct = rng.random() < p_correct
                a = rng.choice(forms) if correct else rng.choice(rng.choice(wrong))
            if a is None:
                texts.append("Let me think about this problem... the computation continues and is cut off")
            else:
                texts.append(rng.choice(TEMPLATES).format(a=a))
            scores.append(min(1.0, max(0.0, rng.gauss(0.65 if correct else 0.45, 0.2))))
        data.append((gold, texts, scores))
    return data


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=500)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--timeout", type=float, default=5.0, help="grading bound per comparison (seconds)")
    ap.add_argument("--batch", action="store_true", help="use AnswerGrader.keys / grade_many per problem")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference", action="store_true",
                    help="also time the reference implementation's score() on the same input (benchmarks/"
                         "reference_score.py, in a child process) and print the ratio")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    data = build(args.problems, args.n, args.seed)
    t_build = time.perf_counter() - t0
    total = args.problems * args.n
    print(f"built {args.problems} problems x {args.n} completions = {total} in {t_build:.2f}s "
          f"(selection from {SELECTION_SOURCE})")

    grader = AnswerGrader(timeout=args.timeout)
    grader.worker.start()  # start-up of the worker process (~1-2 s) is reported separately
    t_start = time.perf_counter() - t0 - t_build

    t1 = time.perf_counter()
    answers = [[extract_answer(t) for t in texts] for _, texts, _ in data]
    t_extract = time.perf_counter() - t1

    t1 = time.perf_counter()
    if args.batch:
        keys = [grader.keys(ans) for ans in answers]
    else:
        keys = [[grader.key(a) for a in ans] for ans in answers]
    t_keys = time.perf_counter() - t1

    t1 = time.perf_counter()
    if args.batch:
        grades = [grader.grade_many(ans, [gold] * len(ans)) for (gold, _, _), ans in zip(data, answers)]
    else:
        grades = [[grader.grade(a, gold) for a in ans] for (gold, _, _), ans in zip(data, answers)]
    t_grade = time.perf_counter() - t1

    t1 = time.perf_counter()
    ns = []
    k = 1
    while k <= args.n:
        ns.append(k)
        k *= 2
    acc = {m: [0, 0, 0] for m in ns}
    for (gold, _, scores), ks, gs in zip(data, keys, grades):
        for m in ns:
            sub_k, sub_s = ks[:m], scores[:m]
            for j, idx in enumerate((select_majority(sub_k), select_weighted(sub_k, sub_s), select_naive(sub_s))):
                acc[m][j] += idx >= 0 and gs[idx] is True  # -1: no completion had an answer
    t_select = time.perf_counter() - t1
    t_total = time.perf_counter() - t0 - t_build - t_start

    print(f"{'n':>5} {'majority':>9} {'weighted':>9} {'naive':>9}")
    for m in ns:
        a = acc[m]
        print(f"{m:>5} {a[0] / args.problems:9.3f} {a[1] / args.problems:9.3f} {a[2] / args.problems:9.3f}")
    n_none = sum(a is None for ans in answers for a in ans)
    n_ung = sum(g is None for gs in grades for g in gs)
    print(f"answers: {total - n_none} extracted, {n_none} without an answer; {n_ung} ungraded")
    print("grader stats:", grader.stats)
    print(f"worker start-up {t_start:.2f}s (not counted)")
    print(f"extract {t_extract:.2f}s | keys {t_keys:.2f}s | grade {t_grade:.2f}s | select {t_select:.2f}s")
    print(f"total {t_total:.2f}s for {total} completions = {total / t_total:,.0f} completions/s "
          f"({t_total + t_start:.2f}s with the worker start-up)")
    grader.close()
    if args.reference:
        ref = _run_reference(data, args.n)
        print(f"reference score(): {ref['seconds']:.2f}s ({ref['distinct_forms']} distinct answers) | ours "
              f"{t_total:.2f}s | ours is {ref['seconds'] / t_total:.1f}x faster")
    return 0


def _run_reference(data, n: int) -> dict:
    import json
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data.json")
        with open(path, "w") as f:
            json.dump({"data": data, "n": n}, f)
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference_score.py")
        out = subprocess.run([sys.executable, script, path], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    raise SystemExit(main())
