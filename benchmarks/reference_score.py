"""The reference implementation's ``score()`` (search-and-learn, ``sal/utils/score.py``), re-implemented from its
description as the baseline of `benchmarks/scoring.py`: for every n' = 1, 2, 4, ..., n it takes the first n'
completions, extracts each answer again (last ``\\boxed{}``, then a Qwen-style string clean-up), maps every answer to
a canonical form -- ``latex2sympy`` then ``sympy.simplify`` then ``sympy.latex``, memoised in a dict, under a 3 s
``signal.alarm``, the cleaned string on failure -- and picks the majority, the weighted (sum of scores per canonical
form) and the naive (highest score) answer.

Run by `benchmarks/scoring.py --reference` in a child process with the same 4 GiB address-space cap as our grading
worker (a power tower would otherwise exhaust the machine: ``signal.alarm`` cannot interrupt big-integer C code).

    python benchmarks/reference_score.py DATA.json      # prints one JSON line: {"seconds": ..., "maj": [...], ...}
"""

from __future__ import annotations

import json
import re
import resource
import signal
import sys
import time
from typing import Dict, List, Optional


def _last_boxed(text: str) -> Optional[str]:
    k = text.rfind("\\boxed")
    if k < 0:
        return None
    i = text.find("{", k)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


def _strip(s: str) -> str:
    """A Qwen-style clean-up: spacing, \\left/\\right, \\dfrac, degrees, percent, dollars, units text."""
    s = s.replace("\n", "").rstrip(".").replace("\\!", "")
    s = re.sub(r"\\text\{\s*[a-zA-Z ]+\}$", "", s)
    for a, b in (("\\left", ""), ("\\right", ""), ("tfrac", "frac"), ("dfrac", "frac"), ("^{\\circ}", ""),
                 ("^\\circ", ""), ("\\%", ""), ("%", ""), ("\\$", ""), (" ", "")):
        s = s.replace(a, b)
    if s.startswith("."):
        s = "0" + s
    if len(s.split("=")) == 2 and len(s.split("=")[0]) <= 2:
        s = s.split("=")[1]
    return s


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout


_CACHE: Dict[str, str] = {}


def canonical_form(expr: str) -> str:
    if expr in _CACHE:
        return _CACHE[expr]
    import sympy
    from latex2sympy2_extended import latex2sympy

    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(3)
    try:
        out = sympy.latex(sympy.simplify(latex2sympy(expr)))
    except BaseException:  # _Timeout, parse errors, MemoryError under the cap
        out = _strip(expr)
    finally:
        signal.alarm(0)
    _CACHE[expr] = out
    return out


def score(data: List[list], n: int) -> dict:
    subsets = [2**i for i in range(n) if 2**i <= n]
    maj, weighted, naive = [], [], []
    for m in subsets:
        row_maj, row_w, row_n = [], [], []
        for _, texts, scores in data:
            preds = [_strip(a) if (a := _last_boxed(t)) is not None else "" for t in texts[:m]]
            forms = [canonical_form(p) for p in preds]
            counts: Dict[str, int] = {}
            sums: Dict[str, float] = {}
            for f, s in zip(forms, scores[:m]):
                counts[f] = counts.get(f, 0) + 1
                sums[f] = sums.get(f, 0.0) + s
            best_c = max(counts.values())
            best_s = max(sums.values())
            row_maj.append(next(p for p, f in zip(preds, forms) if counts[f] == best_c))
            row_w.append(next(p for p, f in zip(preds, forms) if sums[f] == best_s))
            row_n.append(preds[max(range(m), key=lambda i: scores[i])])
        maj.append(row_maj)
        weighted.append(row_w)
        naive.append(row_n)
    return {"maj": maj, "weighted": weighted, "naive": naive}


def main() -> int:
    limit = 4 << 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    with open(sys.argv[1]) as f:
        payload = json.load(f)
    canonical_form("\\frac{x}{2}")  # import and warm up latex2sympy outside the timing, as our worker start-up is
    t = time.perf_counter()
    score(payload["data"], payload["n"])
    print(json.dumps({"seconds": time.perf_counter() - t, "distinct_forms": len(_CACHE)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
