"""Audit a run's grading: our grader and plain math_verify side by side on the run's own answers.

    python -m analysis.grading_audit outputs/run             # one run directory
    python -m analysis.grading_audit multirun/2024-11-01     # every run directory below a folder

Every distinct (answer, gold) pair of the runs is graded by `AnswerGrader` and by plain ``math_verify`` (both raw
strings in ``$..$``, LaTeX extraction only, its ``verify(gold, answer)``), each under the same wall-clock bound in
the grading worker process. The report prints

* the agreement line: how many pairs both graders decide alike;
* every disagreement, grouped by kind (which grader says equal, and what sort of answer it is);
* every pair of different answers to one problem that our voting keys merge but math_verify tells apart -- a merge
  changes majority and weighted accuracy, so each one deserves a look.

Some disagreements are deliberate (``\\text{east}`` vs ``\\text{seat}``: math_verify reads words as products of
letters; ``(2+i)(2-i)`` vs ``5``: it reads ``i`` as a variable); the report is for a researcher to check a run's
grading before trusting its numbers. Run directories are found with `tts.store.readers.find_run_dirs` and their records
read with `tts.store.writer.RunDirectory` (a `tts.store.readers.RunReader`).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from tts.grading.grader import AnswerGrader
from tts.store.readers import RunDamaged, find_run_dirs
from tts.store.writer import RunDirectory

__all__ = ["collect", "audit", "main"]

#: Distinct answers per (problem, key) group checked pairwise for merges (the pairs grow quadratically).
MAX_GROUP = 12


def collect(runs: Iterable[Path]) -> tuple[list[tuple[str, str]], dict[tuple[str, str], list[str]]]:
    """(distinct (answer, gold) pairs, distinct answers per (run/problem, gold))."""
    pairs: dict[tuple[str, str], None] = {}
    per_problem: dict[tuple[str, str], list[str]] = defaultdict(list)
    for run in runs:
        for record in RunDirectory(run).iter_records():
            gold = record.answer
            if not isinstance(gold, str):
                continue
            seen = per_problem[(f"{run}:{record.unique_id}", gold)]
            for completion in record.completions:
                answer = completion.answer
                if isinstance(answer, str) and answer:
                    pairs[(answer, gold)] = None
                    if answer not in seen:
                        seen.append(answer)
    return list(pairs), dict(per_problem)


def _kind(key: str | None) -> str:
    if key is None:
        return "no answer"
    if key.startswith("s:"):
        return "compared as text (words, times, spaced numbers, unparsed)"
    if key.startswith(("q:", "n:", "c:", "x:")):
        return "number"
    if key.startswith("mc:"):
        return "multiple choice"
    if key.startswith(("p:", "e:")):
        return "expression"
    if key.startswith(("tup(", "int", "uni{", "set", "mat(")):
        return "tuple / interval / set / matrix"
    return "equation or relation"


def _verdict(v: bool | None) -> str:
    return {True: "equal", False: "different", None: "ungraded"}[v]


def audit(paths: Sequence[Path], timeout: float = 5.0, out=sys.stdout) -> dict:
    """Run the audit and print the report to ``out``; returns its figures."""
    runs = find_run_dirs(paths)
    if not runs:
        raise FileNotFoundError(
            f"no run directory (with results/ or results.jsonl) under {', '.join(str(p) for p in paths)}"
        )
    pairs, per_problem = collect(runs)
    with AnswerGrader(timeout=timeout) as grader:
        ours = grader.grade_many([a for a, _ in pairs], [g for _, g in pairs])
        verified = grader.worker.run("mv", [[a, g] for a, g in pairs], timeout)
        theirs = [r.value if isinstance(r.value, bool) else None for r in verified]
        answers = sorted({a for a, _ in pairs})
        key_of = dict(zip(answers, grader.keys(answers)))

        agree = sum(o == t for o, t in zip(ours, theirs))
        total = len(pairs)
        print(f"runs: {len(runs)}; problems: {len(per_problem)}; distinct (answer, gold) pairs: {total}", file=out)
        share = 100.0 * agree / total if total else 100.0
        print(f"agreement with math_verify: {agree}/{total} pairs ({share:.1f}%)", file=out)

        groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for (a, g), o, t in zip(pairs, ours, theirs):
            if o != t:
                groups[f"ours {_verdict(o)}, math_verify {_verdict(t)}; {_kind(key_of.get(a))}"].append((a, g))
        for kind in sorted(groups):
            print(f"\n{kind}: {len(groups[kind])}", file=out)
            for a, g in groups[kind]:
                print(f"  answer {a!r}  gold {g!r}", file=out)

        # answers one key merges, checked pairwise with math_verify
        candidates: list[tuple[str, str, str]] = []
        for (_, _), answers_p in per_problem.items():
            by_key: dict[str, list[str]] = defaultdict(list)
            for a in answers_p:
                k = key_of.get(a)
                if k is not None and len(by_key[k]) < MAX_GROUP:
                    by_key[k].append(a)
            for k, members in by_key.items():
                candidates += [
                    (k, members[i], members[j]) for i in range(len(members)) for j in range(i + 1, len(members))
                ]
        candidates = list(dict.fromkeys(candidates))
        verdicts = [r.value for r in grader.worker.run("mv", [[b, a] for _, a, b in candidates], timeout)]
        merged = [(k, a, b, v) for (k, a, b), v in zip(candidates, verdicts) if v is not True]
        print(
            f"\nkeys merging answers math_verify separates: {len(merged)} of {len(candidates)} merged pairs", file=out
        )
        for k, a, b, v in merged:
            print(
                f"  {a!r} and {b!r} (key {k[:60]!r}; math_verify {_verdict(v if isinstance(v, bool) else None)})",
                file=out,
            )
    return {
        "pairs": total,
        "agree": agree,
        "disagreements": {k: len(v) for k, v in groups.items()},
        "merged": len(merged),
        "merged_checked": len(candidates),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m analysis.grading_audit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("runs", nargs="+", type=Path, help="run directories, or folders holding run directories")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per comparison, for both graders")
    args = ap.parse_args(argv)
    if args.timeout <= 0:
        print(f"--timeout: must be > 0 seconds, got {args.timeout}", file=sys.stderr)
        return 2
    try:
        audit(args.runs, timeout=args.timeout)
    except (FileNotFoundError, RunDamaged) as e:  # no runs, or a run whose results do not verify: one line
        print(str(e), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
