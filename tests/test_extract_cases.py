"""Table-driven extraction cases (text, lenient, answer, rule): GSM8K's `#### N` line and its rank, answer phrases
followed by prose, and what the lenient fallbacks must not read."""

from __future__ import annotations

import pytest

from tts.grading import AnswerGrader, extract_answer_with_rule

CASES = [
    # --- GSM8K's final-answer line ----------------------------------------------------------------------------------
    ("She makes 9 * 2 = $18 every day.\n#### 18", False, "18", "hashes"),
    ("#### 1,450,000", False, "1,450,000", "hashes"),
    ("#### -3.5\n", False, "-3.5", "hashes"),
    ("#### $18$", False, "18", "hashes"),
    ("#### **42**", False, "42", "hashes"),
    ("It takes 2/2=<<2/2=1>>1 bolt.\nSo 2+1=<<2+1=3>>3 bolts.\n#### 3", False, "3", "hashes"),
    # a Markdown heading is not an answer; the real final line after it is
    ("#### Step 1: add the eggs\n16 - 3 - 4 = 9\n#### 9", False, "9", "hashes"),
    ("#### Step 1: add the eggs\n16 - 3 - 4 = 9", False, None, None),
    ("##### 5", False, None, None),  # a longer run of '#' is a heading level, not the marker
    # the rank: below the box, above the phrases
    ("The answer is \\boxed{5}.\n#### 6", False, "5", "boxed"),
    ("The answer is 5.\n#### 6", False, "6", "hashes"),
    ("#### Conclusion\nThe answer is 7.", False, "7", "phrase"),
    # --- answer phrases followed by prose -------------------------------------------------------------------------
    ("We check whether the answer is correct or incorrect.", False, None, None),
    ("Let me verify that the answer is correct.", False, None, None),
    ("The answer is not clear from the figure", False, None, None),
    ("Final answer: that depends on the value of k", False, None, None),
    ("The answer is east.", False, "east", "phrase"),  # a short answer in words is still one
    ("The answer is no solution.", False, "no solution", "phrase"),
    ("The answer is 5 apples.", False, "5", "phrase"),
    ("The answer is (B).", False, "(B)", "phrase"),
    ("The answer is correct, it is 12.", False, "12", "phrase"),  # words with math: the math
    # prose after the phrase, nothing else: the lenient fallbacks may still find math earlier
    ("So $x = 4$; the answer is correct.", True, "x = 4", "last_math"),
    # --- lenient fallbacks: digits glued in a name, inline spans across lines --------------------------------------
    ("The code is AZYUK2A", True, None, None),
    ("The code AZYUK2A gives 7", True, "7", "last_number"),
    ("Water is H2O", True, None, None),
    ("a $3$ b $\n4\n$", True, "3", "last_math"),
    ("a \\(3\\) b \\(\n4\n\\)", True, "3", "last_math"),
    ("so\n\\[\n 9\n\\]", True, "9", "last_math"),  # display math may span lines
    ("so\n$$\n9\n$$", True, "9", "last_math"),
    ("the total is 42 apples", True, "42", "last_number"),
    ("that is 5cm", True, "5", "last_number"),  # a unit after the number is fine
]


@pytest.mark.parametrize("text, lenient, answer, rule", CASES, ids=[repr(c[0])[:40] for c in CASES])
def test_extraction(text, lenient, answer, rule):
    assert extract_answer_with_rule(text, lenient) == (answer, rule)


@pytest.mark.parametrize("text", ["$\n9\n$", "\\(\n9\n\\)"])
def test_an_inline_span_across_lines_is_not_read_as_math(text):
    """Stray delimiters around a line: no `last_math` answer (the last-number fallback sees the bare number)."""
    assert extract_answer_with_rule(text, True)[1] != "last_math"
    assert extract_answer_with_rule(text, False) == (None, None)


def test_a_gsm8k_style_completion_grades_right_against_the_transformed_gold():
    grader = AnswerGrader(timeout=10.0)
    try:
        answer, rule = extract_answer_with_rule("So the total is 1,450,000 dollars.\n#### 1,450,000")
        assert rule == "hashes" and grader.grade(answer, "1450000") is True
        assert grader.grade(answer, "1450001") is False
    finally:
        grader.close()
