"""Grading safety (issue 3): no evaluation of model text, and hard time bounds in any thread or process."""

from __future__ import annotations

import io
import multiprocessing
import os
import threading
import time
import tokenize
from pathlib import Path

import pytest

from tts.grading import AnswerGrader, extract_answer

REPO = Path(__file__).resolve().parent.parent

TIMEOUT = 1.5
# Time a call may take beyond the bound: reading the result, killing the worker. The restart of the worker after a
# kill happens in the background and is waited for by the *next* call, so each case below waits for it first.
MARGIN = 1.0


# -- no evaluation of model text -----------------------------------------------------------------------------------
def _code_completions(target: Path) -> list[str]:
    p = str(target)
    return [
        f"\\boxed{{__import__('os').system('touch {p}')}}",
        f"The final answer is $__import__('os').system('touch {p}')$.",
        f"\\boxed{{eval(\"__import__('os').system('touch {p}')\")}}",
        f"\\boxed{{exec(\"open('{p}', 'w').close()\")}}",
        f"Final Answer: open('{p}', 'w').write('x')",
        f"\\boxed{{(lambda: __import__('subprocess').run(['touch', '{p}']))()}}",
        f"\\boxed{{\\text{{__import__('os').system('touch {p}')}}}}",
        f"\\boxed{{x = __import__('os').system('touch {p}')}}",
        f"\\boxed{{[__import__('pathlib').Path('{p}').touch()]}}",
        f"\\boxed{{{{'a': __import__('os').system('touch {p}')}}}}",
    ]


def test_code_in_answers_is_never_executed(tmp_path, bounded):
    target = tmp_path / "PWNED"
    g = bounded
    texts = _code_completions(target)
    answers = [extract_answer(t) for t in texts]
    assert all(a is not None for a in answers)
    keys = g.keys(answers)
    assert all(k is not None for k in keys)
    verdicts = g.grade_many(answers, ["5"] * len(answers)) + g.grade_many(["5"] * len(answers), answers)
    assert True not in verdicts
    for a in answers:  # single calls too, and pairwise among themselves
        g.grade(a, answers[0])
    time.sleep(0.2)
    assert not target.exists()
    assert not (Path.cwd() / "PWNED").exists()


def test_model_text_never_reaches_python_evaluation(tmp_path, monkeypatch):
    """In-process spy on everything that evaluates Python (builtins eval/exec and sympy's parse_expr) while the
    symbolic layer keys and compares code-bearing answers: no model text reaches them. (latex2sympy turns NUMBER
    tokens of its ANTLR grammar into sympy numbers with ``sympy.Number(text)``, which goes through parse_expr: those
    strings are lexer-validated digits, which is what the assertion on parse_expr's inputs checks.)"""
    import builtins
    import re

    import math_verify.parser
    import sympy.parsing.sympy_parser as sympy_parser

    from tts.grading import normalize_answer, symbolic

    import sympy.physics.units  # noqa: F401  (imported lazily by the LaTeX parser; its set-up parses unit names)

    for warm in ("5", "x+1", "\\frac{1}{2}", "(1,2)", "5\\text{ cm}"):  # lazy imports happen before spying
        symbolic.equivalent(warm, "5")
    seen: list[str] = []
    real_eval, real_exec, real_parse_expr = builtins.eval, builtins.exec, sympy_parser.parse_expr

    def spy(real, name):
        def wrapper(*args, **kwargs):
            seen.append(f"{name}: {args[0] if args and isinstance(args[0], str) else ''}")
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(builtins, "eval", spy(real_eval, "eval"))
    monkeypatch.setattr(builtins, "exec", spy(real_exec, "exec"))
    monkeypatch.setattr(sympy_parser, "parse_expr", spy(real_parse_expr, "parse_expr"))
    monkeypatch.setattr(math_verify.parser, "parse_expr", spy(real_parse_expr, "parse_expr"))
    target = tmp_path / "PWNED"
    answers = [extract_answer(t) for t in _code_completions(target)] + [
        "__import__('os').system('true')", "1+2", "x**2", "os.system('true')", "exec('1')", "getattr(x, 'y')",
    ]
    for a in answers:
        n = normalize_answer(a)
        symbolic.canonical_key(n)
        symbolic.equivalent(n, "5")
        symbolic.equivalent("x+1", n)
    markers = ("import", "system", "touch", "open", "PWNED", "lambda", "subprocess", "getattr", "__", "os.")
    leaked = [s for s in seen if any(m in s for m in markers) and s != "exec: from sympy import *"]
    assert not leaked
    parsed = [s.split(": ", 1)[1] for s in seen if s.startswith("parse_expr")]
    assert all(re.fullmatch(r"[0-9.,]+", p) for p in parsed), parsed
    assert not target.exists()


_FORBIDDEN_ANYWHERE = {"sympify", "parse_expr"}
_FORBIDDEN_CALLS = {"eval", "exec"}  # as builtins: `model.eval()` (torch) and `def eval(self)` are not


def _forbidden_uses(path: Path) -> list[str]:
    src = path.read_text(encoding="utf-8")
    toks = [t for t in tokenize.generate_tokens(io.StringIO(src).readline)
            if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)]
    found = []
    for i, t in enumerate(toks):
        if t.type != tokenize.NAME:
            continue
        prev = toks[i - 1].string if i else ""
        nxt = toks[i + 1].string if i + 1 < len(toks) else ""
        if t.string in _FORBIDDEN_ANYWHERE:
            found.append(f"{path.relative_to(REPO)}:{t.start[0]}: {t.string}")
        elif t.string in _FORBIDDEN_CALLS and nxt == "(" and prev not in (".", "def"):
            found.append(f"{path.relative_to(REPO)}:{t.start[0]}: {t.string}(")
    return found


def test_source_tree_has_no_eval_exec_sympify_parse_expr():
    """Code (not comments or strings/docstrings) under tts/ never calls eval/exec or uses sympify/parse_expr."""
    files = sorted((REPO / "tts").rglob("*.py"))
    assert files
    found = [f for p in files for f in _forbidden_uses(p)]
    assert not found, "forbidden constructs:\n" + "\n".join(found)


def test_forbidden_use_detector_works(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import sympy\nx = eval('1')\ny = sympy.sympify('2')\n# eval( in a comment\n'exec(' \nm.eval()\n")
    bad = bad.rename(REPO / "tests" / f"_tmp_forbidden_{os.getpid()}.py")
    try:
        found = _forbidden_uses(bad)
    finally:
        bad.unlink()
    assert [f.split(": ")[1] for f in found] == ["eval(", "sympify"]


# -- hard time bounds ----------------------------------------------------------------------------------------------
PATHOLOGICAL = [
    "10^{10^{10^{10}}}",
    "9^{9^{9^{9}}}",
    "2^{2^{2^{2^{2^{2}}}}}",
    "\\frac{" * 100 + "1" + "}{2}" * 100,
    "\\frac{1}{" * 100 + "2" + "}" * 100,
    "\\sqrt{" * 100 + "2" + "}" * 100,
    "x" * (1 << 20),
    "1" * (1 << 20),
    "(x+1)^{100000}",
    "\\prod_{n=1}^{10^{9}} n",
    "\\sum_{k=1}^{10^{12}} k^{k}",
    "(10^{1000000})!",
    "1000000!",
    "x^{x^{x^{x^{x^{x}}}}} - (x+1)^{50}",
    "{" * 5000 + "}" * 5000,
    "\\left(" * 500 + "1" + "\\right)" * 500,
]


@pytest.fixture(scope="module")
def bounded():
    g = AnswerGrader(timeout=TIMEOUT)
    g.worker.start()
    yield g
    g.close()


@pytest.mark.parametrize("answer", PATHOLOGICAL, ids=[f"p{i}" for i in range(len(PATHOLOGICAL))])
def test_pathological_answers_are_bounded(bounded, answer):
    """Each pathological answer costs at most the bound, for its key and for its grade; the result is a key / a
    correct verdict or ungraded (None) -- never a crash, and never "wrong" because time ran out."""
    g = bounded
    for gold, correct in (("5", False), ("\\frac{\\sqrt{2}}{2}", False), ("x+1", False)):
        g.worker.start()  # a restart after a previous kill is not this answer's cost
        t = time.perf_counter()
        r = g.grade(answer, gold)
        dt = time.perf_counter() - t
        assert dt < TIMEOUT + MARGIN, (answer[:40], gold, dt)
        assert r is None or r is correct
    g.worker.start()
    t = time.perf_counter()
    k = g.key(answer)
    assert time.perf_counter() - t < TIMEOUT + MARGIN
    assert isinstance(k, str) and k


def test_timeout_is_reported_as_ungraded_not_wrong(bounded):
    g = bounded
    g.worker.start()
    before, restarts = g.stats["ungraded"], g.stats["worker_restarts"]
    t = time.perf_counter()
    r = g.grade("\\sum_{k=1}^{10^{13}} k^{k}", "x+1")
    assert time.perf_counter() - t < TIMEOUT + MARGIN
    assert r is None
    assert g.stats["ungraded"] == before + 1 and g.stats["worker_restarts"] == restarts + 1
    # the same answer again: ungraded at once, the bound is not spent twice
    t = time.perf_counter()
    assert g.grade("\\sum_{k=1}^{10^{13}} k^{k}", "7") is None
    assert time.perf_counter() - t < 0.5
    # the grader keeps working after the worker was killed
    assert g.grade("\\frac{1}{\\sqrt{3}}", "\\frac{\\sqrt3}{3}") is True


def test_each_item_of_a_worker_batch_says_how_it_ended(bounded):
    """One result per item, in order, with its outcome: done (with the op's value), timed out, failed in the worker
    (an exception there, here a call with too many arguments)."""
    from tts.grading.worker import ItemResult, Outcome

    worker = bounded.worker
    worker.start()
    results = worker.run("key", ["\\frac{1}{2}", "\\sum_{k=1}^{10^{13}} k^{k}"], TIMEOUT)
    assert results == [ItemResult(Outcome.DONE, "q:1/2"), ItemResult(Outcome.TIMED_OUT)]
    worker.start()
    assert worker.run("mv", [["1", "1", "too many"]], TIMEOUT) == [ItemResult(Outcome.FAILED)]


def test_bound_holds_outside_the_main_thread(bounded):
    """No signal.alarm: the bound works in a worker thread."""
    g = bounded
    out = {}

    def work():
        t = time.perf_counter()
        out["r"] = g.grade("\\sum_{k=1}^{10^{14}} k^{k}", "x+1")
        out["dt"] = time.perf_counter() - t
        out["ok"] = g.grade("\\sqrt{8}", "2\\sqrt2")

    g.worker.start()
    th = threading.Thread(target=work)
    th.start()
    th.join(60)
    assert out["dt"] < TIMEOUT + MARGIN
    assert out["r"] is None and out["ok"] is True


def _grade_in_daemon_process(_):
    g = AnswerGrader(timeout=TIMEOUT)
    try:
        g.worker.start()
        t = time.perf_counter()
        slow = g.grade("\\sum_{k=1}^{10^{15}} k^{k}", "x+1")
        dt = time.perf_counter() - t
        ok = g.grade("\\frac{1}{\\sqrt2}", "\\frac{\\sqrt2}{2}")
        return slow, dt, ok
    finally:
        g.close()


def test_bound_holds_in_a_daemonic_pool_worker():
    """Like Hydra's joblib (loky) / submitit launchers: a daemonic process, which multiprocessing forbids to have
    children; the grading worker is a plain subprocess, so it works there."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        slow, dt, ok = pool.map(_grade_in_daemon_process, [0])[0]
    assert slow is None and dt < TIMEOUT + MARGIN and ok is True
