"""The grader on a real model's own GSM8K completions (SmolLM2-135M-Instruct through llama.cpp, n=8, 256 tokens),
each read by a person who recorded the answer a careful reader would take from it and whether it is right
(tests/data/smollm2_gsm8k_graded.jsonl; `note` says why).

A 135M model writes what graders rarely see in MATH-style fixtures: answers cut off mid-number, several conflicting
'####' lines, 'the answer is not ...', an answer phrase followed by an equation. The verdicts must agree everywhere;
the extracted answers disagree on the cases listed in DISAGREES, kept as strict expected failures so that a better
extractor shows up here (and the list shrinks) instead of the fixture being edited to match.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tts.grading.extract import extract_answer
from tts.grading.grader import equivalent

CASES = [json.loads(line) for line in (Path(__file__).parent / "data" / "smollm2_gsm8k_graded.jsonl").open()]
IDS = [f"{c['unique_id']}#{c['sample']}" for c in CASES]

# where the extractor (default, lenient_extraction=false) and the reader differ, and why
DISAGREES = {
    "gsm8k-test-0001#0": "no answer phrase: '2 bolts in total is 4'",
    "gsm8k-test-0001#3": "no answer phrase: the closing sentence states 5",
    "gsm8k-test-0001#4": "no answer phrase: 'the robe takes 8 bolts'",
    "gsm8k-test-0001#6": "no answer phrase: 'the robe is filled with 10 bolts'",
    "gsm8k-test-0002#2": "no answer phrase: 'a profit of 100,000 dollars'",
    "gsm8k-test-0002#3": "takes '$3' from 'the final answer is $3' cut off mid-number",
    "gsm8k-test-0003#0": "no answer phrase: 'runs a total of 320 meters'",
    "gsm8k-test-0003#3": "takes the '####' line (90) over the later 'The correct answer is already given: 60'",
    "gsm8k-test-0004#0": "'400 days is the correct answer': the phrase comes after the number",
    "gsm8k-test-0004#4": "no answer phrase: 'the amount of 1000'",
    "gsm8k-test-0006#1": "'the answer is 2 * 400 = 800 and 800 is two 10s ...': takes 10 from the trailing prose",
    "gsm8k-test-0006#6": "'can be written as 1 + 2 + 20 = 20': not an answer phrase it knows",
}


def test_the_fixture_is_large_enough_and_names_every_disagreement():
    assert len(CASES) >= 50
    assert set(DISAGREES) <= set(IDS)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_verdict_agrees_with_the_reader(case):
    answer = extract_answer(case["text"])
    assert (answer is not None and equivalent(answer, case["gold"])) == case["human_correct"]


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=DISAGREES[i])) if i in DISAGREES else c
        for c, i in zip(CASES, IDS)
    ],
    ids=IDS,
)
def test_the_extracted_answer_agrees_with_the_reader(case):
    answer, human = extract_answer(case["text"]), case["human_answer"]
    assert (answer is None) == (human is None), (answer, human)
    assert human is None or equivalent(answer, human)
