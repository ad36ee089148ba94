"""Fuzzing with a fixed seed (nesting, size, unicode): every grading call stays within its bound + 1 s, and the
work done in the parent process is linear (8,000 nested boxes, 1 MB of `$`)."""

from __future__ import annotations

import random
import time

import pytest

from tts.grading import AnswerGrader, extract_answer

BOUND = 2.0
MARGIN = 1.0

_OPENERS = ["\\boxed{", "\\frac{", "(", "{", "\\sqrt{", "x^{", "\\left(", "[", "\\text{", "$", "\\{", "2^{"]
_CLOSERS = {"\\boxed{": "}", "\\frac{": "}{2}", "(": ")", "{": "}", "\\sqrt{": "}", "x^{": "}",
            "\\left(": "\\right)", "[": "]", "\\text{": "}", "$": "$", "\\{": "\\}", "2^{": "}"}
_UNICODE = ["π", "√", "½", "٣", "５", "𝟕", "é", "\u0301", "\u202e", "😀", "∞", "−", "×", "÷", "°", "\u200b", "ß", "ﬁ"]
_ATOMS = ["1", "x", "\\pi", "0.5", "i", "e", "y", "12,345", ":", " ", "-", "+", "\\cdot", "^", "_", "!", ","]


def _fuzz_answer(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.4:  # nesting
        opener = rng.choice(_OPENERS)
        depth = rng.choice([5, 30, 100, 500, 2000])
        closing = depth if rng.random() < 0.7 else depth // 2  # some unbalanced
        return opener * depth + rng.choice(_ATOMS[:4]) + _CLOSERS[opener] * closing
    if kind < 0.7:  # size
        size = rng.choice([100, 1000, 20_000, 200_000])
        return "".join(rng.choice(_ATOMS) for _ in range(size // 2))
    return "".join(rng.choice(_UNICODE + _ATOMS) for _ in range(rng.randint(1, 300)))  # unicode


@pytest.fixture(scope="module")
def grader():
    g = AnswerGrader(timeout=BOUND)
    g.worker.start()
    yield g
    g.close()


def test_fuzzed_answers_are_bounded(grader):
    rng = random.Random(12)
    golds = ["5", "\\frac{\\sqrt{2}}{2}", "x+1", "(1, 2)", "\\text{east}"]
    for _ in range(40):
        answer = _fuzz_answer(rng)
        t = time.perf_counter()
        extract_answer("Thus \\boxed{" + answer + "}", lenient=True)
        extract_answer(answer, lenient=True)
        assert time.perf_counter() - t < MARGIN, answer[:60]
        t = time.perf_counter()
        k = grader.key(answer)
        assert time.perf_counter() - t < BOUND + MARGIN, answer[:60]
        assert isinstance(k, str) and k
        gold = rng.choice(golds)
        t = time.perf_counter()
        r = grader.grade(answer, gold)
        assert time.perf_counter() - t < BOUND + MARGIN, (answer[:60], gold)
        assert r in (True, False, None)


@pytest.mark.parametrize(
    "answer",
    ["\\boxed{" * 8000 + "1" + "}" * 8000, "$" * (1 << 20), "\\text{" * 8000 + "x", "(" * 20_000 + "1"],
    ids=["nested-boxes", "dollars", "nested-text", "open-parens"],
)
def test_parent_work_is_linear(grader, answer):
    """Keys of huge answers are computed in the parent without the worker, in time linear in their length: twice
    the input costs about twice the time, and the full size costs well under a second."""
    before = grader.stats["key_symbolic"]
    fresh = AnswerGrader(timeout=BOUND)  # no cache hits
    fresh._worker = grader.worker
    t = time.perf_counter()
    fresh.key(answer[: len(answer) // 2] + "7")
    half = time.perf_counter() - t
    t = time.perf_counter()
    k = fresh.key(answer)
    full = time.perf_counter() - t
    assert k.startswith("s:") and grader.stats["key_symbolic"] == before
    assert full < 1.0, full
    assert full < 3 * half + 0.05, (half, full)  # linear: ~2x the half-size time; quadratic: ~4x
    t = time.perf_counter()
    extract_answer(answer, lenient=True)
    assert time.perf_counter() - t < 1.0


def test_long_text_command_search_matches_str_methods():
    """The backslash walks used on long texts find exactly what ``str.rfind`` / ``str.find`` find."""
    from tts.grading.extract import _find_cmd, _rfind_cmd

    rng = random.Random(7)
    pieces = ["\\boxed{", "\\boxed", "\\fbox", "\\frac", "\\", "x" * 3000, "{", "}", " ", "a"]
    for _ in range(60):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 400)))
        for cmd in ("\\boxed{", "\\boxed", "\\fbox"):
            a, b = sorted(rng.randint(0, len(text)) for _ in range(2))
            assert _rfind_cmd(text, cmd, a, b) == text.rfind(cmd, a, b)
            assert _find_cmd(text, cmd, a, b) == text.find(cmd, a, b)
