"""GSM8K: the gold answer is the final answer after `####`, not the worked solution; a gold answer that is still a
solution is refused before generation with one line; `dataset.columns` works as the docs write it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, compose_config, typed_config
from tts.data import DatasetError, check_gold_answer, load_problems

SAMPLE = Path(__file__).resolve().parent / "data" / "gsm8k_sample.jsonl"
ROWS = [json.loads(line) for line in SAMPLE.read_text().splitlines()]


def test_gold_answer_is_the_text_after_the_marker_without_thousands_separators():
    problems = load_problems(typed_config(["dataset=gsm8k", f"dataset.path={SAMPLE}"]).dataset)
    assert [p.problem for p in problems] == [row["question"] for row in ROWS]
    finals = [row["answer"].rsplit("####", 1)[1].strip() for row in ROWS]
    assert any("," in final for final in finals)  # the sample exercises the separator
    assert [p.answer for p in problems] == [final.replace(",", "") for final in finals]
    assert all(p.answer.isdigit() for p in problems)


def test_hub_loads_openai_gsm8k_main_test(monkeypatch):
    calls = []

    def fake_hub(hub_id, hub_config, split, name):
        calls.append((hub_id, hub_config, split))
        return ROWS

    monkeypatch.setattr("tts.data._load_from_hub", fake_hub)
    problems = load_problems(typed_config(["dataset=gsm8k", "dataset.num_problems=2"]).dataset)
    assert calls == [("openai/gsm8k", "main", "test")]
    assert [p.answer for p in problems] == [row["answer"].rsplit("#### ", 1)[1] for row in ROWS[:2]]


def test_raw_solution_as_gold_answer_is_refused_in_one_line_before_generation(tmp_path):
    """The mapping that graded everything wrong (0.000, no message): answer = GSM8K's whole worked solution."""
    result = subprocess.run(
        [sys.executable, "tts/main.py", "dataset=jsonl", f"dataset.path={SAMPLE}", "dataset.columns={problem: question}",
         "logger=none", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert f"{SAMPLE} line 1, column 'answer'" in lines[0] and "answer_transform=gsm8k" in lines[0]
    assert not (tmp_path / "run" / "results").exists()


def test_the_same_file_loads_with_the_transform_on_the_generic_reader():
    cfg = typed_config(["dataset=jsonl", f"dataset.path={SAMPLE}", "dataset.columns={problem: question}",
                        "dataset.answer_transform=gsm8k"])
    gsm8k = load_problems(typed_config(["dataset=gsm8k", f"dataset.path={SAMPLE}"]).dataset)
    assert [p.answer for p in load_problems(cfg.dataset)] == [p.answer for p in gsm8k]


@pytest.mark.parametrize("answer, refused", [
    ("18", False),
    ("\\begin{pmatrix} -1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}", False),  # MATH-500's longest kind of answer
    ("\\left[ \\frac{\\pi^2}{8}, \\frac{5 \\pi^2}{4} \\right]", False),
    ("She has 3 apples.\nSo 3.", True),  # several lines
    ("3 #### 3", True),  # the marker
    ("word " * 50, True),  # prose longer than an answer
])
def test_the_worked_solution_rule(answer, refused):
    assert (check_gold_answer(answer) is not None) is refused


def test_a_transform_that_finds_no_marker_names_the_row_and_key(tmp_path):
    data = tmp_path / "finals.jsonl"
    data.write_text(json.dumps({"question": "1+1?", "answer": "#### 2"}) + "\n"
                    + json.dumps({"question": "2+2?", "answer": "4"}) + "\n")
    with pytest.raises(DatasetError, match=r"^config key 'dataset.answer_transform': .*finals.jsonl line 2, column"):
        load_problems(typed_config(["dataset=gsm8k", f"dataset.path={data}"]).dataset)
    with pytest.raises(DatasetError, match=r"^config key 'dataset.answer_transform': unknown transform 'gsm9k'"):
        load_problems(typed_config(["dataset=gsm8k", f"dataset.path={data}", "dataset.answer_transform=gsm9k"]).dataset)


@pytest.mark.parametrize("dataset", ["jsonl", "math500", "gsm8k"])
def test_columns_override_works_as_documented_without_plus(dataset):
    """`dataset.columns={problem: question, answer: final}` as the YAML comment and docs write it (no `+`)."""
    overrides = [f"dataset={dataset}", "dataset.path=x.jsonl", "dataset.columns={problem: question, answer: final}"]
    assert dict(compose_config(overrides).dataset.columns) == {"problem": "question", "answer": "final"}
    assert dict(typed_config(overrides + ["dataset.columns.unique_id=id"]).dataset.columns)["unique_id"] == "id"
