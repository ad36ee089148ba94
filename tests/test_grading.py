"""Grading (issue 3): extraction, the public API, voting keys, caches and statistics."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from tts.grading import AnswerGrader, equivalent, extract_answer, normalize_answer
from tts.grading.fastnum import fast_key


@pytest.fixture(scope="module")
def grader():
    g = AnswerGrader(timeout=10.0)
    yield g
    g.close()


# -- extraction ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,expected",
    [
        ("so $\\boxed{5}$.", "5"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("first \\boxed{1}, then finally \\boxed{2}", "2"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("\\boxed{x^{2}+\\frac{1}{x_{1}}}", "x^{2}+\\frac{1}{x_{1}}"),
        ("\\fbox{7}", "7"),
        ("the answer is \\boxed 5$.", "5"),
        ("\\boxed{\\boxed{3}}", "3"),
        ("\\boxed{1} and a truncated \\boxed{2", "1"),
        ("\\boxed{}", None),
        ("\\boxedfoo{3}", None),
        ("The final answer is $\\frac{3}{4}$. I hope it is correct.", "\\frac{3}{4}"),
        ("Final Answer: 42", "42"),
        ("Final answer: the final answer is 12", "12"),
        ("So the answer is 3.5.", "3.5"),
        ("The answer is: **7**", "7"),
        ("The answer is \\(x = 2\\).", "x = 2"),
        ("Thus the final answer is \\[ \\sqrt{2} \\]", "\\sqrt{2}"),
        ("We conclude. Answer: $(1, 2)$", "(1, 2)"),
        ("no answer here", None),
        ("", None),
        (None, None),
        ("}}}{{{\\boxed{", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "x" * (1 << 20),
        "\\boxed{" * 150_000,
        "{" * (1 << 20) + "\\boxed{4}",
        ("\\boxed{" + "a" * 20_000) * 50,
        "\\boxed{1}" + "\\boxed" * 150_000,
        "final answer is " * 60_000,
        "$" * (1 << 20),
        "\\" * (1 << 20),
    ],
)
def test_extract_answer_adversarial_is_fast_and_never_raises(text):
    t = time.perf_counter()
    out = extract_answer(text)
    assert out is None or isinstance(out, str)
    assert time.perf_counter() - t < 1.0


# -- normalisation ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw,norm",
    [
        ("$\\dfrac{1}{2}$", "\\frac{1}{2}"),
        ("\\left( 1, 2 \\right)", "( 1, 2 )"),
        ("30^\\circ", "30"),
        ("50\\%", "50"),
        ("5\\text{ cm}", "5"),
        ("\\$12.50", "12.50"),
        ("1{,}000", "1000"),
        ("12,345,678", "12345678"),
        ("\\text{(B)}", "B"),
        ("x = 3", "3"),
        ("y = 2x+3", "y = 2x+3"),
        ("\\boxed{7}", "7"),
        ("1\\,000", "1000"),
        ("\\begin{pmatrix}1 \\\\ 2\\end{pmatrix}", "\\begin{pmatrix}1 \\\\ 2\\end{pmatrix}"),
    ],
)
def test_normalize(raw, norm):
    assert normalize_answer(raw) == norm


# -- API ----------------------------------------------------------------------------------------------------------
def test_module_level_equivalent():
    assert equivalent("0.5", "\\frac{1}{2}") is True
    assert equivalent("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt2}") is True
    assert equivalent("3", "4") is False
    assert equivalent(None, "4") is False


def test_grade_none_answer_is_false_and_key_none(grader):
    assert grader.grade(None, "5") is False
    assert grader.key(None) is None
    assert grader.keys([None, "5"])[0] is None


def test_stats_and_caches():
    g = AnswerGrader(timeout=5.0)
    try:
        for k in ("ungraded", "key_cache_hits", "key_calls", "grade_calls", "grade_cache_hits", "worker_restarts"):
            assert k in g.stats
        k1 = g.key("\\frac{1}{2}")
        hits = g.stats["key_cache_hits"]
        assert g.key("\\frac{1}{2}") == k1
        assert g.stats["key_cache_hits"] == hits + 1
        assert g.grade("1/2", "0.5") is True
        assert g.grade("1/2", "0.5") is True
        assert g.stats["grade_cache_hits"] >= 1
        # plain numbers never reach the worker
        assert g.stats["key_symbolic"] == 0 and g.stats["grade_symbolic"] == 0
        assert g._worker is None
    finally:
        g.close()


def test_plain_numbers_use_pure_python_keys():
    g = AnswerGrader()
    keys = g.keys(["\\frac{1}{2}", "0.5", "1/2", "\\dfrac12", ".5", "2/4", "-\\frac{3}{4}", "1{,}000", "30^\\circ"])
    assert len(set(keys[:6])) == 1
    assert keys[6] == "q:-3/4" and keys[7] == "q:1000/1" and keys[8] == "q:30/1"
    assert g._worker is None


def test_radicals_pi_tuples_in_pure_python():
    """Constant LaTeX arithmetic and tuples/intervals of constants get their keys without sympy, and the same keys
    as the worker computes (checked in test_fast_keys_match_worker)."""
    g = AnswerGrader()
    k = g.keys(["\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt2}", "\\sqrt{2}/2", "2\\pi", "\\pi\\cdot 2",
                "(1, \\frac{\\sqrt{3}}{2})", "\\left(1,\\frac{1}{2}\\sqrt{3}\\right)"])
    assert k[0] == k[1] == k[2]
    assert k[3] == k[4]
    assert k[5] == k[6]
    assert g._worker is None


FAST_KEY_SAMPLES = [
    "\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", "2\\sqrt{3}", "\\sqrt{12}", "\\frac{3\\sqrt{5}}{5}", "4\\pi",
    "\\frac{\\pi}{3}", "\\pi^2", "2^{10}", "\\sqrt[3]{16}", "8^{2/3}", "1+\\sqrt{5}", "\\frac{1+\\sqrt{5}}{2}",
    "2-\\sqrt{3}", "\\sqrt{2}\\cdot\\sqrt{2}", "0.5\\sqrt{2}", "(2, -1)", "(1, 2)", "(0, 0)", "[1, 2)",
    "(-\\infty, 3]", "[2, \\infty)", "\\{1, 3\\}", "3, 1", "(1, 2, 3)", "[1, 2, 3]", "(\\frac{1}{2}, -\\frac{\\sqrt{3}}{2})",
    "10^{-3}", "\\frac{10\\pi}{20}", "3^{-1}",
    "x^2+2x+1", "(x+1)(x-1)", "2xy", "\\frac{x}{2}+1", "(x-y)^3", "x(x+1)", "a^{2}b^{3}", "3x-2x", "x-x",
    "\\frac{1}{2}x^2-\\frac{3}{4}", "(2x)^3", "6x-y",
]


def test_fast_keys_match_worker(grader):
    """Whenever the pure-Python fast path keys an answer, the worker (sympy/math_verify) gives the same key."""
    norms = [normalize_answer(s) for s in FAST_KEY_SAMPLES]
    fast = [fast_key(n) for n in norms]
    assert all(k is not None for k in fast), [s for s, k in zip(FAST_KEY_SAMPLES, fast) if k is None]
    slow = [result.value for result in grader.worker.run("key", norms, 10.0)]
    assert fast == slow


# Realistic answers to one problem, including equivalent forms that only sympy / math_verify can relate.
VOTING_SAMPLE = [
    "\\frac{1}{2}", "0.5", "1/2", "\\dfrac12", "\\frac{2}{4}", "\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}",
    "\\sqrt{2}/2", "\\sqrt{0.5}", "0.7071", "x+1", "1+x", "(x+1)", "x-1", "\\frac{x^2-1}{x-1}", "2\\pi",
    "\\pi\\cdot 2", "6.28", "(1,2)", "\\left(1, 2\\right)", "(2,1)", "[1,2]", "\\{1,2\\}", "1,2", "2,1", "30",
    "30^\\circ", "x=30", "A", "(A)", "\\text{(A)}", "B", "1000", "1{,}000", "10^3", "-2", "-\\frac{4}{2}",
    "y=2x+3", "2x+3", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1 \\\\ 2\\end{pmatrix}",
    "(-\\infty,3]", "(-\\infty, 3]", "\\text{Monday}", "Monday", "\\log_2 8", "3", "\\sqrt{9}", "0.1+0.2", "0.3",
    "3\\sqrt{2}", "\\sqrt{18}", "2^{1/2}", "\\sqrt2", "(x+1)^2", "x^2+2x+1", "\\infty", None, "",
]


def test_voting_by_key_matches_pairwise_equivalence(grader):
    """Grouping answers by key gives exactly the equivalence classes of pairwise `grade` (in both directions)."""
    g = grader
    answers = [a for a in VOTING_SAMPLE if a is not None]
    keys = g.keys(answers)
    pairs = list(itertools.permutations(range(len(answers)), 2))
    verdicts = g.grade_many([answers[i] for i, _ in pairs], [answers[j] for _, j in pairs])
    assert None not in verdicts
    mismatches = [
        (answers[i], answers[j], keys[i] == keys[j], v)
        for (i, j), v in zip(pairs, verdicts)
        if (keys[i] == keys[j]) != v and answers[i] and answers[j]
    ]
    assert not mismatches
    # and the groups are the expected ones
    group = {a: k for a, k in zip(answers, keys)}
    assert group["\\frac{1}{2}"] == group["0.5"] == group["\\frac{2}{4}"]
    assert group["\\frac{\\sqrt{2}}{2}"] == group["\\sqrt{0.5}"]
    assert group["2^{1/2}"] == group["\\sqrt2"]
    assert group["y=2x+3"] == group["2x+3"]
    assert group["\\frac{\\sqrt{2}}{2}"] == group["\\frac{1}{\\sqrt{2}}"] == group["\\sqrt{2}/2"]
    assert group["x+1"] == group["1+x"] == group["\\frac{x^2-1}{x-1}"]
    assert group["(1,2)"] == group["\\left(1, 2\\right)"] != group["\\{1,2\\}"]
    assert group["\\{1,2\\}"] == group["1,2"] == group["2,1"]
    assert group["A"] == group["(A)"] == group["\\text{(A)}"]
    assert group["\\log_2 8"] == group["3"] == group["\\sqrt{9}"]
    assert group["0.1+0.2"] == group["0.3"]
    assert group["3\\sqrt{2}"] == group["\\sqrt{18}"]
    assert group["(x+1)^2"] == group["x^2+2x+1"]
    assert group["0.7071"] != group["\\sqrt2"]


def test_batch_and_single_calls_agree(grader):
    a = ["0.5", "\\frac{1}{\\sqrt{2}}", "x+1", "(1,2)", None, "7", "\\{1,2\\}", "\\sin x", "\\cos(x)"]
    gold = ["\\frac12", "\\frac{\\sqrt2}{2}", "1+x", "(1, 2)", "3", "8", "1,2", "\\sin(x)", "\\sin(x)"]
    fresh = AnswerGrader()  # its own caches, sharing the module grader's worker process
    fresh._worker = grader.worker
    expected = [True] * 4 + [False] * 2 + [True, True, False]
    assert fresh.grade_many(a, gold) == expected
    assert [grader.grade(x, y) for x, y in zip(a, gold)] == expected
    assert fresh.keys(a) == [grader.key(x) for x in a]


def test_usable_from_threads(grader):
    """The grader is thread-safe and its bound needs no main thread (no signal.alarm)."""
    g = grader
    results = {}

    def work(i):
        results[i] = (g.grade("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt2}"), g.key(f"x+{i}"), g.grade(str(i), "3"))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[i][0] is True for i in range(6))
    assert [results[i][2] for i in range(6)] == [False, False, False, True, False, False]
    assert len({results[i][1] for i in range(6)}) == 6


def test_timeout_must_be_positive():
    with pytest.raises(ValueError):
        AnswerGrader(timeout=0)
