"""Datasets are kept exactly as written, refused with one line naming file, row and column, and part of a run's
identity.

The round trip runs `python tts/main.py` as a user would; the format tests call `load_problems` on real files written
by the standard tools (json, csv, pyarrow, `datasets`).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import REPO, compose_config
import tts.config.schema  # noqa: F401 - registers the schemas that compose_config extends
from tts.data import generate_problems, load_problems
from tts.store.writer import RunDirectory

# Gold answers that type inference mangles: a leading zero, 20 digits, a JSON integer, a JSON float, LaTeX.
ANSWERS_JSON = ['"02139"', '"12345678901234567890"', "5", "0.5", '"\\\\frac{1}{2}"']
ANSWERS = ["02139", "12345678901234567890", "5", "0.5", "\\frac{1}{2}"]


def _main(args: list[str], run_dir: Path, timeout: int = 120):
    return subprocess.run([sys.executable, "tts/main.py", *args, "logger=none", f"hydra.run.dir={run_dir}"], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def _synthetic_jsonl(path: Path, answers_json: list[str], offset: int = 0) -> Path:
    """Problems the simulated policy can read (synthetic texts), with the given raw JSON answers."""
    problems = generate_problems(len(answers_json) + offset)[offset:]
    lines = [f'{{"unique_id": {json.dumps(p.unique_id)}, "problem": {json.dumps(p.problem)}, "answer": {a}}}'
             for p, a in zip(problems, answers_json)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _dataset(path: Path, **extra):
    return OmegaConf.merge(compose_config(["dataset=jsonl", f"dataset.path={path}"]).dataset, extra)


@pytest.mark.parametrize("answers_json, answers", [
    (ANSWERS_JSON, ANSWERS),
    (ANSWERS_JSON[:2], ANSWERS[:2]),  # a column of digit strings only: type inference made these 2139.0, 1.23e+19
    (['"007"', '"10"', '"3"'], ["007", "10", "3"]),
], ids=["mixed", "digit strings", "leading zeros"])
def test_gold_answers_round_trip_into_results_exactly(tmp_path, answers_json, answers):
    data = _synthetic_jsonl(tmp_path / "answers.jsonl", answers_json)
    result = _main(["dataset=jsonl", f"dataset.path={data}"], tmp_path / "run")
    assert result.returncode == 0, result.stderr[-2000:]
    records = RunDirectory(tmp_path / "run").records()
    assert [r.answer for r in records] == answers


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_every_file_format_keeps_text_and_numbers_exactly(tmp_path, suffix):
    rows = [{"unique_id": "01", "problem": "  What is $x$?\n", "answer": "02139"},
            {"unique_id": "1", "problem": "Big", "answer": "12345678901234567890123"},
            {"unique_id": "2", "problem": "Half", "answer": "\\frac{1}{2}"}]
    path = tmp_path / f"data{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    elif suffix == ".csv":
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    problems = load_problems(_dataset(path))
    assert [(p.unique_id, p.problem, p.answer) for p in problems] == [
        (r["unique_id"], r["problem"], r["answer"]) for r in rows]


def test_json_numbers_become_their_exact_decimal_text(tmp_path):
    path = tmp_path / "numbers.jsonl"
    path.write_text('{"unique_id": 7, "problem": "a", "answer": 12345678901234567890123}\n'
                    '{"unique_id": 8, "problem": "b", "answer": 5}\n'
                    '{"unique_id": 9, "problem": "c", "answer": 0.50}\n'
                    '{"unique_id": 10, "problem": "d", "answer": -1e-7}\n')
    problems = load_problems(_dataset(path))
    assert [p.answer for p in problems] == ["12345678901234567890123", "5", "0.50", "-1e-7"]
    assert [p.unique_id for p in problems] == ["7", "8", "9", "10"]


def test_parquet_and_hub_columns_keep_their_types_exactly(tmp_path, monkeypatch):
    import datasets

    table = {"unique_id": ["a", "b", "c"], "problem": ["p1", "p2", "p3"], "answer": [5, 12345678901234567, 7]}
    hub = datasets.Dataset.from_dict(table)
    monkeypatch.setattr("tts.data._load_from_hub", lambda *args: list(hub))
    problems = load_problems(compose_config(["dataset=math500"]).dataset)
    assert [p.answer for p in problems] == ["5", "12345678901234567", "7"]
    floats = datasets.Dataset.from_dict({**table, "answer": [0.5, 2.25, 1e-3]})
    monkeypatch.setattr("tts.data._load_from_hub", lambda *args: list(floats))
    assert [p.answer for p in load_problems(compose_config(["dataset=math500"]).dataset)] == ["0.5", "2.25", "0.001"]


def test_ids_are_strings_so_01_and_1_differ(tmp_path):
    path = tmp_path / "ids.jsonl"
    path.write_text('{"unique_id": "01", "problem": "a", "answer": "1"}\n{"unique_id": "1", "problem": "b", '
                    '"answer": "2"}\n')
    assert [p.unique_id for p in load_problems(_dataset(path))] == ["01", "1"]


# (row id, file name, file bytes, what the one-line error must say)
BAD_FILES = [
    ("null answer", "d.jsonl", b'{"unique_id": "a", "problem": "p", "answer": "1"}\n{"unique_id": "b", "problem": "q", '
                               b'"answer": null}\n', ["line 2", "column 'answer'", "missing"]),
    ("empty answer", "d.jsonl", b'{"problem": "p", "answer": ""}\n', ["line 1", "column 'answer'", "missing"]),
    ("no answer in one row", "d.jsonl", b'{"problem": "p", "answer": "1"}\n{"problem": "q"}\n',
     ["line 2", "has no answer (column 'answer')"]),
    ("NaN answer", "d.jsonl", b'{"problem": "p", "answer": NaN}\n', ["line 1", "is not JSON"]),
    ("empty csv cell", "d.csv", b"problem,answer\np,1\nq,\n", ["line 3", "column 'answer'", "missing"]),
    ("blank problem", "d.jsonl", b'{"problem": "  ", "answer": "1"}\n', ["line 1", "column 'problem'", "missing"]),
    ("missing id in one row", "d.jsonl", b'{"unique_id": "a", "problem": "p", "answer": "1"}\n{"problem": "q", '
                                         b'"answer": "2"}\n', ["line 2", "unique_id"]),
    ("null id", "d.jsonl", b'{"unique_id": null, "problem": "p", "answer": "1"}\n',
     ["line 1", "column 'unique_id'", "missing"]),
    ("duplicate id", "d.jsonl", b'{"unique_id": "a", "problem": "p", "answer": "1"}\n{"unique_id": "a", "problem": '
                                b'"q", "answer": "2"}\n', ["line 2", "column 'unique_id'", "already used by", "line 1"]),
    ("latin-1 bytes", "d.jsonl", b'{"problem": "p", "answer": "1"}\n{"problem": "caf\xe9", "answer": "2"}\n',
     ["line 2", "not UTF-8"]),
    ("garbage line", "d.jsonl", b'{"problem": "p", "answer": "1"}\nthis is not json\n', ["line 2", "is not JSON"]),
    ("csv saved as jsonl", "d.jsonl", b"problem,answer\np,1\n", ["line 1", "is not JSON"]),
    ("a list where text is expected", "d.jsonl", b'{"problem": "p", "answer": [1, 2]}\n',
     ["line 1", "column 'answer'", "a list"]),
    ("lone surrogate in a json list", "d.json", b'[{"problem": "p", "answer": "1"}, {"problem": "q\\ud800", "answer": '
                                                b'"2"}]', ["record 2", "column 'problem'", "lone surrogate U+D800"]),
    ("lone surrogate in json lines", "d.jsonl", b'{"problem": "p", "answer": "1\\udfff"}\n',
     ["line 1", "column 'answer'", "lone surrogate U+DFFF at character 2"]),
    ("a json file that is not a list of objects", "d.json", b'[{"problem": "p", "answer": "1"}, 2]', ["list of objects"]),
    ("not a parquet file", "d.parquet", b"problem,answer\n", ["not a readable Parquet file"]),
    ("wrong extension", "d.txt", b"problem,answer\n", ["expected a .jsonl, .json, .csv, .parquet file"]),
]


@pytest.mark.parametrize("name, data", [pytest.param(n, d, id=i) for i, n, d, _ in BAD_FILES])
def test_bad_dataset_files_stop_before_generation_naming_file_row_and_column(tmp_path, name, data):
    expected = next(e for i, n, d, e in BAD_FILES if n == name and d == data)
    path = tmp_path / name
    path.write_bytes(data)
    result = _main(["dataset=jsonl", f"dataset.path={path}"], tmp_path / "run")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr[-2000:]
    for text in expected + [name]:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    assert not (tmp_path / "run").exists(), "a refused job leaves no run directory"


def test_unreadable_file_is_one_line(tmp_path):
    (tmp_path / "folder.jsonl").mkdir()
    result = _main(["dataset=jsonl", f"dataset.path={tmp_path / 'folder.jsonl'}"], tmp_path / "run")
    assert result.returncode == 2 and result.stderr.startswith("Error: config key 'dataset.path': cannot read")
    assert len(result.stderr.strip().splitlines()) == 1


def test_data_is_part_of_the_run_identity(tmp_path):
    """Same settings on another file: refused naming dataset.path; the same file moved elsewhere: resumed."""
    first = _synthetic_jsonl(tmp_path / "a.jsonl", ['"1"', '"2"', '"3"'])
    second = _synthetic_jsonl(tmp_path / "b.jsonl", ['"1"', '"2"', '"3"'], offset=3)
    run_dir = tmp_path / "run"
    assert _main(["dataset=jsonl", f"dataset.path={first}"], run_dir).returncode == 0
    before = (run_dir / "results" / "index.jsonl").read_bytes()
    refused = _main(["dataset=jsonl", f"dataset.path={second}"], run_dir)
    assert refused.returncode == 2
    assert refused.stderr.startswith("Error: config key 'dataset.path':") and "other problems" in refused.stderr
    assert (run_dir / "results" / "index.jsonl").read_bytes() == before
    moved = tmp_path / "elsewhere" / "a_copy.jsonl"
    moved.parent.mkdir()
    moved.write_bytes(first.read_bytes())
    resumed = _main(["dataset=jsonl", f"dataset.path={moved}"], run_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "3 already recorded" in resumed.stdout + resumed.stderr


def test_runs_on_different_data_are_different_settings_in_analysis_and_merge(tmp_path):
    from analysis.runs import load_local
    from tts.store.merge import MergeError, merge

    first = _synthetic_jsonl(tmp_path / "a.jsonl", ['"1"', '"2"'])
    second = _synthetic_jsonl(tmp_path / "b.jsonl", ['"1"', '"2"'], offset=2)
    for name, data, shard in (("a0", first, 0), ("a1", first, 1), ("b0", second, 0), ("b1", second, 1)):
        result = _main(["dataset=jsonl", f"dataset.path={data}", "dataset.num_shards=2", f"dataset.shard={shard}"],
                       tmp_path / "runs" / name)
        assert result.returncode == 0, result.stderr[-2000:]
    runs = load_local(tmp_path / "runs").runs
    assert runs["setting"].nunique() == 2, "runs on two datasets must not be seeds of one setting"
    merge([tmp_path / "runs" / "a0", tmp_path / "runs" / "a1"], tmp_path / "merged")  # shards of one dataset
    with pytest.raises(MergeError, match="problems_sha256"):
        merge([tmp_path / "runs" / "a0", tmp_path / "runs" / "b1"], tmp_path / "mixed")


def test_stable_hash_of_a_unique_id_is_pinned_crc32():
    """Subset draws, particle filtering's resampling, difficulty ties and analysis folds derive from it: its value
    must not change between processes (Python's hash() is salted) or releases."""
    from tts.data.problem import stable_hash

    assert stable_hash("test/precalculus/807.json") == 2068049974
    assert stable_hash(7) == stable_hash("7")
