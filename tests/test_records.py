"""The typed run record (tts/data/records.py): its one JSON writer and reader, a run directory written by the release
before typed records (tests/data/legacy_run: `python tts/main.py strategy=beam n=4 dataset.num_problems=6 batch_size=4
logger=none` at 724c996), keys this version does not know, and the one finder of run directories."""

from __future__ import annotations

import copy
import dataclasses
import gzip
import json
import shutil
from pathlib import Path

import pytest

from tts.data.problem import Problem
from tts.data.records import Completion, ProblemRecord, ProblemSummary, RecordError, Scores
from tts.store.readers import find_run_dirs, run_metrics
from tts.store.writer import RunDirectory
from tts.tracking.tables import completion_rows

LEGACY = Path(__file__).resolve().parent / "data" / "legacy_run"
COMPLETION_FIELDS = ("text", "steps", "step_scores", "finish_reason", "tokens", "answer", "key", "answer_rule",
                     "correct")


def _batch_lines(run_dir: Path) -> list[bytes]:
    """The JSON lines of a run's batch files, in index order, straight from the files."""
    entries = [json.loads(line) for line in (run_dir / "results" / "index.jsonl").read_text().splitlines()]
    return [line for e in entries for line in gzip.decompress((run_dir / "results" / e["file"]).read_bytes()).splitlines()]


def test_a_run_of_the_previous_release_reads_back_into_typed_records_with_its_values():
    raw = [json.loads(line) for line in _batch_lines(LEGACY)]
    records = RunDirectory(LEGACY).records()
    assert len(records) == len(raw) == 6
    for record, data in zip(records, raw):
        assert isinstance(record, ProblemRecord)
        for name in ("unique_id", "problem", "answer", "solution", "subject", "level", "compute", "ungraded_answers"):
            assert getattr(record, name) == data[name], name
        assert record.note is None and "note" not in data and not record.unknown
        assert isinstance(record.scores, Scores)
        assert (record.scores.predictions, record.scores.correct, record.scores.expected, record.scores.ungraded,
                record.scores.pass_at) == tuple(data["scores"][k] for k in
                                                ("predictions", "correct", "expected", "ungraded", "pass"))
        assert len(record.completions) == len(data["completions"]) == 4
        for completion, raw_completion in zip(record.completions, data["completions"]):
            assert isinstance(completion, Completion)
            assert tuple(getattr(completion, k) for k in COMPLETION_FIELDS) == tuple(raw_completion[k]
                                                                                   for k in COMPLETION_FIELDS)
            assert completion.extra == {} and not completion.absent and not completion.unknown
        # the one writer gives back the same object, keys in the same order
        assert json.dumps(record.to_json()) == json.dumps(data)


def test_the_previous_releases_index_reads_into_summaries_that_give_its_metrics():
    index = [json.loads(line) for line in (LEGACY / "results" / "index.jsonl").read_text().splitlines()]
    summaries = RunDirectory(LEGACY).summaries()
    assert all(isinstance(s, ProblemSummary) for s in summaries.values())
    assert [s.to_json() for s in summaries.values()] == [p for entry in index for p in entry["problems"]]
    assert [s.to_json() for s in summaries.values()] == [r.summary().to_json() for r in RunDirectory(LEGACY).records()]
    # accuracies, pass@K and tokens as the previous release computed them, to the last bit
    assert run_metrics(list(summaries.values()), 4) == json.loads((LEGACY / "metrics.json").read_text())


def test_analysis_loads_the_previous_releases_run_with_its_accuracies():
    from analysis.runs import load_local

    sweep = load_local(LEGACY)
    assert len(sweep.runs) == 1 and len(sweep.problems) == 6
    metrics = json.loads((LEGACY / "metrics.json").read_text())
    run = sweep.runs.iloc[0]
    assert (run.strategy, run.n, run.seed) == ("beam", 4, 0)
    for name in ("acc/naive@4", "acc/weighted@4", "acc/maj@2", "pass@4"):
        assert run[name] == metrics[name], name  # one implementation of accuracy: the same float
    by_id = sweep.problems.set_index("unique_id")
    for data in map(json.loads, _batch_lines(LEGACY)):
        assert by_id.loc[data["unique_id"], "weighted@4"] == data["scores"]["expected"]["weighted@4"]
        assert by_id.loc[data["unique_id"], "tokens_generated"] == data["compute"]["generated_tokens"]


def test_a_record_written_and_read_back_is_the_same_record(tmp_path):
    """record -> disk -> record is the identity: for the previous release's records (whose batch files come out byte
    for byte as they were) and for a record with every optional part (a note, strategy extras, an ungraded answer)."""
    legacy = RunDirectory(LEGACY).records()
    problem = Problem(unique_id="u/1", problem="Löse $x^2 = 4$", answer="2", solution="s", subject="Algebra", level=3)
    completions = [Completion(text="x = 2 ✓", steps=["x = 2 ✓"], step_scores=[0.75], finish_reason="stop", tokens=5,
                              answer="2", key="q:2/1", extra={"verdict": "correct", "review_tokens": 4}, vote=True,
                              weight=0.5, vote_at=1, answer_rule="boxed", correct=True),
                   Completion(text="", steps=[], step_scores=[], finish_reason="truncated", tokens=0, answer=None,
                              key=None, answer_rule=None, correct=False),
                   Completion(text="10^{10^{10}}", steps=["10^{10^{10}}"], step_scores=[0.5], finish_reason="length",
                              tokens=7, answer="10^{10^{10}}", key="e:big", answer_rule="last_math", correct=None)]
    scores = Scores(predictions={"naive@1": "2"}, correct={"naive@1": True}, expected={"naive@1": 1.0},
                    ungraded={"naive@1": 0.0}, pass_at={"pass@1": 1.0})
    full = ProblemRecord.graded(problem, completions, scores, compute={"generated_tokens": 12, "prm_tokens": 3},
                                ungraded_answers=1, note="beam search finished 3 of 4 beams")
    assert ProblemRecord.from_json(json.loads(json.dumps(full.to_json()))) == full

    with RunDirectory(tmp_path) as directory:
        directory.open({"test": 1})
        directory.append(legacy[:4])
        directory.append(legacy[4:] + [full])
    assert RunDirectory(tmp_path).records() == legacy + [full]
    assert _batch_lines(tmp_path)[:6] == _batch_lines(LEGACY)


def test_a_key_this_version_does_not_know_is_kept_not_dropped(tmp_path):
    data = json.loads(_batch_lines(LEGACY)[0])
    old = copy.deepcopy(data)
    old["reviewer"] = {"name": "a later version's field"}
    old["scores"]["calibrated"] = {"naive@1": 0.5}
    old["completions"][0]["logprob"] = -3.25
    record = ProblemRecord.from_json(copy.deepcopy(old))
    assert record.unknown == {"reviewer": {"name": "a later version's field"}}
    assert record.scores.unknown == {"calibrated": {"naive@1": 0.5}}
    assert record.completions[0].unknown == {"logprob": -3.25} and not record.completions[1].unknown
    assert record.unknown["reviewer"] == {"name": "a later version's field"}  # kept beside the known fields
    assert json.dumps(record.to_json()) == json.dumps(old)  # written back where they were: after the known keys

    # through a run directory of the one-file format of older versions, and written again into a new one
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.jsonl").write_text(json.dumps(old) + "\n")
    [read] = RunDirectory(tmp_path / "old").records()
    assert read == record
    with RunDirectory(tmp_path / "new") as directory:
        directory.open({"test": 1})
        directory.append([read])
    assert [json.loads(line) for line in _batch_lines(tmp_path / "new")] == [old]


def test_completions_from_before_per_completion_verdicts_are_written_back_as_they_were():
    data = json.loads(_batch_lines(LEGACY)[0])
    for completion in data["completions"]:
        del completion["answer_rule"], completion["correct"]
    record = ProblemRecord.from_json(copy.deepcopy(data))
    assert all(c.absent == {"answer_rule", "correct"} and c.correct is None for c in record.completions)
    assert json.dumps(record.to_json()) == json.dumps(data)
    # the W&B completions table falls back to the verdicts of the predictions, as for records of that age
    rows = completion_rows(record, 4, "last")
    assert [row[4] for row in rows] == [True] * 4


@pytest.mark.parametrize("extra", [
    {"deepconf": "kept", "confidence": 1.5, "vote": True, "weight": 1.5},  # deepconf and esc: after their own keys
    {"verdict": "wrong", "vote": False, "review_tokens": 9, "review": "..."},  # filter-vote: after the verdict
    {"vote": True},
])
def test_a_strategys_vote_and_weight_are_typed_fields_written_where_extra_always_had_them(extra):
    data = {"text": "t", "steps": ["t"], "step_scores": [0.5], "finish_reason": "stop", "tokens": 1, "answer": "1",
            "key": "k", "extra": extra, "answer_rule": "boxed", "correct": True}
    completion = Completion.from_json(copy.deepcopy(data))
    assert (completion.vote, completion.weight) == (extra.get("vote"), extra.get("weight"))
    assert "vote" not in completion.extra and "weight" not in completion.extra
    assert json.dumps(completion.to_json()) == json.dumps(data)  # the same keys, in the same order


def test_unreadable_records_say_why(tmp_path):
    data = json.loads(_batch_lines(LEGACY)[0])
    with pytest.raises(RecordError, match="no unique_id"):
        ProblemRecord.from_json({"problem": "q"})
    with pytest.raises(RecordError, match="no completions"):
        ProblemRecord.from_json({"unique_id": "x"})
    with pytest.raises(RecordError, match="no scores"):
        ProblemRecord.from_json(dict(data, scores={"expected": {}}))
    with pytest.raises(RecordError, match="without 'text'"):
        ProblemRecord.from_json(dict(data, completions=[{"steps": []}]))
    with RunDirectory(tmp_path) as directory:
        directory.open({"test": 1})
        with pytest.raises(TypeError, match="ProblemRecords"):
            directory.append([data])  # a record as a dict: refused before anything is written
    assert not list((tmp_path / "results").iterdir())


def test_a_record_has_the_fields_of_a_problem_first():
    """`ProblemRecord.graded` passes every field of the Problem on: a field added there needs one in the record."""
    names = [f.name for f in dataclasses.fields(ProblemRecord)]
    assert names[: len(dataclasses.fields(Problem))] == [f.name for f in dataclasses.fields(Problem)]


def test_one_finder_finds_run_directories_in_either_format_and_skips_copies(tmp_path):
    assert find_run_dirs(LEGACY) == [LEGACY]
    assert LEGACY in find_run_dirs(LEGACY.parent)
    sweep = tmp_path / "sweep"
    shutil.copytree(LEGACY, sweep / "b" / "n4_seed0")
    shutil.copytree(LEGACY / "results", sweep / "b" / "n4_seed0" / "wandb" / "offline-run-1" / "files" / "results")
    shutil.copytree(LEGACY / "results", sweep / ".merged.merging-123" / "results")  # an interrupted merge
    (sweep / "a").mkdir(parents=True)
    (sweep / "a" / "results.jsonl").write_text(json.dumps(json.loads(_batch_lines(LEGACY)[0])) + "\n")
    assert find_run_dirs(sweep) == [sweep / "a", sweep / "b" / "n4_seed0"]
    assert find_run_dirs([sweep / "b" / "n4_seed0", sweep]) == [sweep / "b" / "n4_seed0", sweep / "a"]
    assert find_run_dirs(str(sweep / "a")) == [sweep / "a"]
    with pytest.raises(FileNotFoundError, match="neither a run directory"):
        find_run_dirs(tmp_path / "typo")


def test_a_run_of_the_release_before_is_refused_for_resume_and_left_as_it_was(tmp_path):
    """Its config is of the layout before typed components: rerunning its command into it stops with one line naming
    hydra.run.dir (before anything is generated), and its files stay byte for byte."""
    import subprocess
    import sys

    run_dir = tmp_path / "legacy"
    shutil.copytree(LEGACY, run_dir)
    before = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, str(repo / "tts/main.py"), "strategy=beam", "n=4", "dataset.num_problems=6", "batch_size=4",
         "logger=none", f"hydra.run.dir={run_dir}"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith("Error: config key 'hydra.run.dir':") and "before typed component configs" in (
        result.stderr) and len(result.stderr.strip().splitlines()) == 1
    after = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == {k: v for k, v in before.items() if k.name != ".lock"}


def test_a_fingerprint_whose_prm_named_its_engine_is_of_the_layout_before():
    """`prm.backend: hf|vllm` was the PRM's engine before it became the nested component `prm.engine`: such a run is
    refused for resume with the one line above, not with a list of every moved knob."""
    from tts.store.provenance import before_typed_components

    assert before_typed_components({"prm": {"_target_": "tts.prms.rlhflow.build", "backend": "hf", "device": "auto"}})
    assert not before_typed_components({"prm": {"_target_": "x", "engine": {"_target_": "y", "device": "auto"}}})
    assert not before_typed_components({"prm": {"_target_": "tts.prms.sim.SimPRM", "noise": 0.2}})
