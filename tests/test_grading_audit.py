"""`python -m analysis.grading_audit`: our grader and plain math_verify side by side on a run's answers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tts.pipeline import run
from tts.data.records import Completion, ProblemRecord, Scores
from tts.store.writer import RunDirectory

ROOT = Path(__file__).resolve().parents[1]


def _audit(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "analysis.grading_audit", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_audit_on_a_sim_run(tmp_path, make_cfg):
    run(make_cfg(["n=8", "dataset.num_problems=6", "logger=none"]), run_dir=tmp_path / "sweep" / "run0")
    records = {r.unique_id: r for r in RunDirectory(tmp_path / "sweep" / "run0").iter_records()}
    pairs = {(c.answer, r.answer) for r in records.values() for c in r.completions if c.answer}
    assert all("answer_rule" in c.to_json() for r in records.values() for c in r.completions)
    out = _audit(str(tmp_path / "sweep"))  # a folder of runs
    assert out.returncode == 0, out.stderr
    m = re.search(r"agreement with math_verify: (\d+)/(\d+) pairs", out.stdout)
    assert m, out.stdout
    assert int(m.group(2)) == len(pairs) > 0
    assert "keys merging answers math_verify separates:" in out.stdout


def test_audit_reports_disagreements_by_kind_and_merges(tmp_path):
    """A run whose answers hold the classes math_verify grades otherwise: every disagreement is printed under its
    kind, and answers our keys merge while math_verify separates them are listed."""
    completions = [Completion(text="", steps=[], step_scores=[], finish_reason="stop", tokens=0, answer=a) for a in
                   ["east", "(2+i)(2-i)", "5", "seat", "0.25\\pi", "\\frac{\\pi}{4}"]]

    def record(unique_id, gold, chosen):  # scores and compute as a run directory requires them (the audit reads none)
        return ProblemRecord(unique_id=unique_id, problem="q", answer=gold, solution="", subject=None, level=None,
                             completions=chosen, scores=Scores(correct={}, expected={}, ungraded={}, pass_at={}),
                             compute={})

    records = [record("p0", "seat", completions[:1] + completions[3:4]), record("p1", "5", completions[1:3]),
               record("p2", "\\frac{\\pi}{4}", completions[4:])]
    with RunDirectory(tmp_path / "run") as d:
        d.open({"test": 1})
        d.append(records)
    out = _audit(str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    assert "agreement with math_verify: " in out.stdout
    assert "ours different, math_verify equal; compared as text" in out.stdout  # east vs seat
    assert "answer 'east'  gold 'seat'" in out.stdout
    assert "ours equal, math_verify different; number" in out.stdout  # (2+i)(2-i) vs 5
    assert "'(2+i)(2-i)' and '5' (key 'q:5/1'" in out.stdout  # merged by our key, separate for math_verify


def test_audit_refuses_a_folder_without_runs(tmp_path):
    out = _audit(str(tmp_path))
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and str(tmp_path) in out.stderr


def test_grade_batch_records_the_rule_and_honours_lenient_extraction():
    """`scoring.lenient_extraction` reaches extraction in the pipeline, and each completion says which rule gave
    its answer."""
    from conftest import typed_config
    from tts.data.problem import Problem
    from tts.grading import AnswerGrader
    from tts.pipeline import grade_batch
    from tts.search.base import SearchOutput

    texts = ["So \\boxed{4}.", "The answer is 4.", "We get $x = 4$ here.", "It is 4 apples", "nothing"]
    problem = Problem(unique_id="u0", problem="2+2?", answer="4")
    with AnswerGrader() as grader:
        for lenient, rules in ((False, ["boxed", "phrase", None, None, None]),
                               (True, ["boxed", "phrase", "last_math", "last_number", None])):
            cfg = typed_config(["n=5", f"scoring.lenient_extraction={str(lenient).lower()}"])
            output = SearchOutput([Completion(t, [t], [0.5], "stop", 3) for t in texts])
            record = grade_batch([problem], [output], grader, cfg)[0]
            assert [c.answer_rule for c in record.completions] == rules
            answers = [c.answer for c in record.completions]
            assert answers == (["4", "4", "x = 4", "4", None] if lenient else ["4", "4", None, None, None])
