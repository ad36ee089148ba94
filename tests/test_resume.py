"""Resume: a run killed at any point and started again finishes with every problem exactly once and the same metrics.

The headline test SIGKILLs `python tts/main.py` mid-run (after it has appended some batches), leaves a half-written
line as a kill during a write would, reruns the same command and compares with an uninterrupted run.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, compose_config, results_files
from tts.config.schema import ConfigError
from tts.pipeline import run
from tts.store.format import entry_digest
from tts.store.readers import RunDamaged, find_run_dirs
from tts.store.writer import RunDirectory


def _index_lines(run_dir: Path) -> int:
    try:
        return (run_dir / "results" / "index.jsonl").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


KILL_ARGS = ["n=32", "dataset.num_problems=40", "batch_size=2", "logger=none"]


def test_sigkill_mid_run_then_rerun_equals_an_uninterrupted_run(tmp_path):
    reference_dir = tmp_path / "uninterrupted"
    reference = run(compose_config(KILL_ARGS), run_dir=reference_dir)
    expected = RunDirectory(reference_dir).records()

    run_dir = tmp_path / "killed"
    command = [sys.executable, "tts/main.py", *KILL_ARGS, f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while _index_lines(run_dir) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed: make it longer"
    batches = _index_lines(run_dir)
    assert 3 <= batches < 20, batches
    assert not (run_dir / "metrics.json").exists()
    # The kill may land anywhere in a batch's write; make the rerun meet the worst case too: a batch vouched for in
    # digests.jsonl and renamed into place but with its index line torn, then the next batch's digest line written
    # and its file half written under its temporary name.
    results, reference_results = run_dir / "results", reference_dir / "results"
    digests = reference_results.joinpath("digests.jsonl").read_bytes().splitlines(keepends=True)
    results.joinpath("digests.jsonl").write_bytes(b"".join(digests[: batches + 2]))
    (results / f"batch-{batches:06d}.jsonl.gz").write_bytes(
        (reference_results / f"batch-{batches:06d}.jsonl.gz").read_bytes())
    next_entry = (reference_results / "index.jsonl").read_bytes().splitlines()[batches]
    with open(results / "index.jsonl", "ab") as handle:
        handle.write(next_entry[: len(next_entry) // 2])
    (results / f".batch-{batches + 1:06d}.jsonl.gz.123.tmp").write_bytes(b"\x1f\x8b half a batch")

    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    # the batch whose index line was torn is verified against its digest and kept: only the batch in flight is redone
    assert f"{2 * (batches + 1)} already recorded" in rerun.stdout + rerun.stderr
    assert f"WARNING] - {results}: batch-{batches:06d}.jsonl.gz had no usable index entry" in rerun.stdout

    resumed = RunDirectory(run_dir).records()
    ids = [r.unique_id for r in resumed]
    assert len(ids) == len(set(ids)) == 40, "every problem exactly once"
    assert resumed == expected  # same completions, scores, predictions and compute, record for record
    assert results_files(run_dir) == results_files(reference_dir)  # and the same bytes on disk
    assert json.loads((run_dir / "metrics.json").read_text()) == reference


def _finished_run(tmp_path: Path, overrides=("n=4", "dataset.num_problems=6", "logger=none", "batch_size=2")):
    cfg = compose_config(list(overrides))
    metrics = run(cfg, run_dir=tmp_path)
    return cfg, metrics, results_files(tmp_path)


def _index(tmp_path: Path) -> Path:
    return tmp_path / "results" / "index.jsonl"


def test_torn_last_index_line_is_cut_and_its_batch_redone(tmp_path):
    cfg, metrics, full = _finished_run(tmp_path)
    index = _index(tmp_path).read_bytes()
    _index(tmp_path).write_bytes(index[: len(index) - 40])
    assert run(cfg, run_dir=tmp_path) == metrics
    assert results_files(tmp_path) == full


def test_complete_last_index_line_without_newline_is_kept(tmp_path):
    cfg, metrics, full = _finished_run(tmp_path)
    _index(tmp_path).write_bytes(full["index.jsonl"][:-1])  # the write stopped right before the final newline
    assert len(RunDirectory(tmp_path).open(_container(cfg))) == 6  # nothing to redo
    assert results_files(tmp_path) == full  # the newline is restored, so appends stay line-aligned
    assert run(cfg, run_dir=tmp_path) == metrics


def _container(cfg) -> dict:
    from tts.config.validate import validate
    from tts.pipeline import load_run_config

    return load_run_config(validate(cfg))[1]


def test_damaged_and_repeated_index_lines_are_dropped_and_redone(tmp_path, caplog):
    cfg, metrics, full = _finished_run(tmp_path)
    lines = full["index.jsonl"].splitlines(keepends=True)
    damaged = [lines[0], b"{not json at all\n", lines[0], b"[1, 2]\n", lines[2]]  # batch 1 lost, batch 0 twice
    _index(tmp_path).write_bytes(b"".join(damaged))
    with caplog.at_level(logging.WARNING, logger="tts.store"):
        repaired = run(cfg, run_dir=tmp_path)
    assert "3 damaged batch(es) dropped" in caplog.text and "already recorded by an earlier batch" in caplog.text
    # batch 1 lost its index line, not its file: digests.jsonl vouches for the file, so its entry is rebuilt
    assert "batch-000001.jsonl.gz had no usable index entry" in caplog.text
    assert results_files(tmp_path) == full
    assert repaired == metrics


def _swap_last_batch(run_dir: Path, donor: Path) -> None:
    """Replace run_dir's last batch (file and index line) with donor's last batch, renamed to fit."""
    lines = _index(run_dir).read_bytes().splitlines(keepends=True)
    ours = json.loads(lines[-1])
    theirs = json.loads(_index(donor).read_bytes().splitlines()[-1])
    (run_dir / "results" / ours["file"]).write_bytes((donor / "results" / theirs["file"]).read_bytes())
    theirs["file"] = ours["file"]
    _index(run_dir).write_bytes(b"".join(lines[:-1]) + json.dumps(theirs).encode() + b"\n")


@pytest.mark.parametrize("other", ["seed=1", "prm.noise=0.3"])
def test_a_batch_from_another_configuration_is_dropped_and_redone(tmp_path, caplog, other):
    """A valid batch of another run (other seed, other PRM noise) pasted into the directory would change the
    metrics if it were counted: it carries the other run's config hash, so it is dropped, warned about and redone."""
    base = ["n=4", "dataset.num_problems=6", "logger=none", "batch_size=2"]
    cfg, metrics, full = _finished_run(tmp_path / "run", base)
    _finished_run(tmp_path / "other", base + [other])
    _swap_last_batch(tmp_path / "run", tmp_path / "other")
    with caplog.at_level(logging.WARNING, logger="tts.store"):
        assert run(cfg, run_dir=tmp_path / "run") == metrics
    assert "written by another configuration" in caplog.text
    after = results_files(tmp_path / "run")
    assert "batch-000002.jsonl.gz.damaged" in after  # kept aside for inspection, never read
    assert {k: v for k, v in after.items() if not k.endswith(".damaged")} == full


def test_a_batch_file_changed_after_it_was_written_is_dropped_and_redone(tmp_path, caplog):
    cfg, metrics, full = _finished_run(tmp_path / "run")
    _finished_run(tmp_path / "other", ("n=4", "dataset.num_problems=6", "logger=none", "batch_size=2", "seed=3"))
    (tmp_path / "run" / "results" / "batch-000001.jsonl.gz").write_bytes(
        (tmp_path / "other" / "results" / "batch-000001.jsonl.gz").read_bytes())
    with caplog.at_level(logging.WARNING, logger="tts.store"):
        assert run(cfg, run_dir=tmp_path / "run") == metrics
    assert "batch-000001.jsonl.gz does not match its index entry" in caplog.text
    assert (tmp_path / "run" / "results" / "batch-000001.jsonl.gz.damaged").exists()  # kept aside for inspection
    after = results_files(tmp_path / "run")
    assert after["batch-000003.jsonl.gz"] == full["batch-000001.jsonl.gz"]  # redone as a new batch, same bytes
    assert "batch-000001.jsonl.gz" not in after


def test_a_stub_record_is_dropped_and_redone_never_a_crash(tmp_path, caplog):
    """A stub ({"unique_id": ...} and nothing else) with a matching hash and file: missing fields, so not counted."""
    cfg, metrics, full = _finished_run(tmp_path)
    lines = full["index.jsonl"].splitlines(keepends=True)
    entry = json.loads(lines[-1])
    stub = [{"unique_id": p["unique_id"]} for p in entry["problems"]]
    data = gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in stub), mtime=0)
    (tmp_path / "results" / entry["file"]).write_bytes(data)
    entry.update(problems=stub, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    entry["entry_sha256"] = entry_digest(entry)  # every digest matches: only the fields are missing
    _index(tmp_path).write_bytes(b"".join(lines[:-1]) + json.dumps(entry).encode() + b"\n")
    digests = full["digests.jsonl"].splitlines(keepends=True)[:-1]
    digests.append(json.dumps({k: entry[k] for k in ("file", "bytes", "sha256", "config_hash")}).encode() + b"\n")
    (tmp_path / "results" / "digests.jsonl").write_bytes(b"".join(digests))
    for _ in range(2):  # and every rerun after it
        with caplog.at_level(logging.WARNING, logger="tts.store"):
            assert run(cfg, run_dir=tmp_path) == metrics
    assert "no scores" in caplog.text
    assert len(RunDirectory(tmp_path).records()) == 6


def test_an_old_one_file_run_directory_is_read_but_not_resumed(tmp_path):
    cfg, metrics, _ = _finished_run(tmp_path / "new")
    old = tmp_path / "old"
    old.mkdir()
    for name in ("config.yaml", "fingerprint.json"):
        (old / name).write_bytes((tmp_path / "new" / name).read_bytes())
    records = RunDirectory(tmp_path / "new").records()
    stub = json.dumps({"unique_id": "synthetic/x/0"}) + "\n"  # an old-format stub line: skipped by readers
    (old / "results.jsonl").write_text(stub + "".join(json.dumps(r.to_json()) + "\n" for r in records))
    assert RunDirectory(old).records() == records
    assert list(RunDirectory(old).summaries()) == [r.unique_id for r in records]
    with pytest.raises(ConfigError, match="one-file format of older versions"):
        run(cfg, run_dir=old)


def test_a_second_writer_is_refused_while_the_first_holds_the_directory(tmp_path):
    cfg = compose_config(["n=4", "dataset.num_problems=3", "logger=none"])
    first = RunDirectory(tmp_path)
    first.open({"n": 4})  # another job has the directory open (same process here; the lock is per open file)
    try:
        with pytest.raises(ConfigError, match=r"is being written by pid \d+ on .*Wait for it to finish"):
            run(cfg, run_dir=tmp_path)
        assert not (tmp_path / "results" / "index.jsonl").exists()
    finally:
        first.close()
    run(cfg, run_dir=tmp_path)  # released: the run goes ahead
    assert len(RunDirectory(tmp_path).records()) == 3


def test_a_second_writer_process_is_refused(tmp_path):
    """Across processes: a job launched twice on one directory (SLURM requeue while the old one lingers, say)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from tts.store.writer import RunDirectory; "
         "d = RunDirectory(sys.argv[1]); d.open({}); print('open', flush=True); time.sleep(60)", str(tmp_path)],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(ConfigError, match=f"being written by pid {holder.pid} "):
            RunDirectory(tmp_path).open({})
    finally:
        holder.kill()
        holder.wait()
    RunDirectory(tmp_path).open({})  # the kernel dropped the dead holder's lock: no stale lock to clean up


@pytest.mark.parametrize("strategy", ["best_of_n", "beam", "dvts", "lookahead"])
def test_results_do_not_depend_on_batch_composition(tmp_path, strategy):
    """What a problem gets (completions, scores, predictions) is fixed by (seed, unique_id), not by its batch mates,
    so a resumed run (whose batches start elsewhere) and shards give the same records and accuracies."""
    args = [f"strategy={strategy}", "n=8", "dataset.num_problems=8", "logger=none"]
    one = run(compose_config(args + ["batch_size=1"]), run_dir=tmp_path / "one")
    all_ = run(compose_config(args + ["batch_size=8"]), run_dir=tmp_path / "all")
    # keyed by problem: a tree search saves each problem as its search ends, so a batch's records are in finish order
    a = sorted(RunDirectory(tmp_path / "one").records(), key=lambda r: r.unique_id)
    b = sorted(RunDirectory(tmp_path / "all").records(), key=lambda r: r.unique_id)
    assert [r.unique_id for r in a] == [r.unique_id for r in b]
    for x, y in zip(a, b):
        assert x.completions == y.completions and x.scores == y.scores
        assert x.compute["generated_tokens"] == y.compute["generated_tokens"]
    for key in one:
        if key.startswith(("acc", "pass", "ungraded", "grading")) or key in ("tokens/generated", "tokens/prm"):
            assert one[key] == all_[key], key
    # Not batch-independent, by design: backend calls (one or more per batch), and the per-problem share of PRM
    # tokens (a batched PRM call's tokens are split in proportion to the text each problem sent; the total is exact).
    assert one["compute/backend_calls"] > all_["compute/backend_calls"]


# -- a run store that verifies itself: every stored byte is checked before it is counted ------------------------------


def _edit_first_score(index: Path) -> str:
    """Flip the first problem's weighted@4 in the first index line, keeping the line valid JSON; its batch's name."""
    lines = index.read_bytes().splitlines(keepends=True)
    entry = json.loads(lines[0])
    expected = entry["problems"][0]["scores"]["expected"]
    expected["weighted@4"] = 1.0 - expected["weighted@4"]
    index.write_bytes(json.dumps(entry).encode() + b"\n" + b"".join(lines[1:]))
    return entry["file"]


def test_scores_edited_in_the_index_are_refused_by_readers_and_redone_on_resume(tmp_path, caplog):
    cfg, metrics, full = _finished_run(tmp_path)
    name = _edit_first_score(_index(tmp_path))
    with pytest.raises(RunDamaged, match=rf"index.jsonl line 1 \({name}\): the entry was edited"):
        RunDirectory(tmp_path).summaries()
    with pytest.raises(RunDamaged, match="entry was edited"):
        RunDirectory(tmp_path).records()
    with caplog.at_level(logging.WARNING, logger="tts.store"):
        assert run(cfg, run_dir=tmp_path) == metrics  # the edit never reaches metrics.json
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"{name} (index line 1: its index entry was edited" in warnings[0]
    # the batch file itself is intact and vouched for: its entry is rebuilt from it rather than the problems redone
    assert "rebuilt from the batch file" in warnings[0] and "nothing is searched again" in warnings[0]
    assert results_files(tmp_path) == full
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics


def test_a_deleted_index_is_rebuilt_from_the_batches_and_nothing_is_redone(tmp_path, caplog):
    cfg, metrics, full = _finished_run(tmp_path)
    _index(tmp_path).unlink()
    assert find_run_dirs(tmp_path) == [tmp_path]  # still found, so readers can say what is wrong with it
    with pytest.raises(RunDamaged, match=r"index.jsonl is missing but .* holds 3 batch file\(s\); rerun the command"):
        RunDirectory(tmp_path).summaries()
    with caplog.at_level(logging.INFO):
        assert run(cfg, run_dir=tmp_path) == metrics
    assert "6 problems, 6 already recorded" in caplog.text  # no problem searched again
    assert "batch-000000.jsonl.gz, batch-000001.jsonl.gz, batch-000002.jsonl.gz had no usable index entry" in caplog.text
    assert results_files(tmp_path) == full  # the rebuilt index is the lost one, byte for byte


def test_a_truncated_batch_is_named_by_readers_and_redone_on_resume(tmp_path, caplog):
    cfg, metrics, full = _finished_run(tmp_path)
    batch = tmp_path / "results" / "batch-000001.jsonl.gz"
    batch.write_bytes(full["batch-000001.jsonl.gz"][:-20])
    with pytest.raises(RunDamaged, match=rf"{batch}: \d+ bytes where its index entry says \d+: truncated"):
        RunDirectory(tmp_path).records()  # not a bare EOFError from gzip
    with caplog.at_level(logging.WARNING, logger="tts.store"):
        assert run(cfg, run_dir=tmp_path) == metrics
    assert "batch-000001.jsonl.gz does not match its index entry" in caplog.text
    assert len(RunDirectory(tmp_path).records()) == 6  # redone: the directory verifies again


def test_a_batch_file_nothing_vouches_for_is_set_aside_not_counted_nor_deleted(tmp_path, caplog):
    base = ["n=4", "dataset.num_problems=6", "logger=none", "batch_size=2"]
    cfg, metrics, full = _finished_run(tmp_path / "run", base)
    _finished_run(tmp_path / "other", base + ["seed=1"])
    stray = (tmp_path / "other" / "results" / "batch-000002.jsonl.gz").read_bytes()
    (tmp_path / "run" / "results" / "batch-000003.jsonl.gz").write_bytes(stray)  # no index entry, no digest
    with pytest.raises(RunDamaged, match="batch-000003.jsonl.gz has no entry in index.jsonl"):
        RunDirectory(tmp_path / "run").summaries()
    with caplog.at_level(logging.WARNING, logger="tts.store"):
        assert run(cfg, run_dir=tmp_path / "run") == metrics
    assert "batch-000003.jsonl.gz: no index entry and no line in digests.jsonl" in caplog.text
    after = results_files(tmp_path / "run")
    assert after.pop("batch-000003.jsonl.gz.unverified") == stray
    assert after == full


def test_a_run_written_before_digests_resumes_unverified_and_says_so_once(tmp_path, caplog):
    cfg, metrics, full = _finished_run(tmp_path)
    lines = [json.loads(line) for line in full["index.jsonl"].splitlines()]
    for entry in lines:
        del entry["entry_sha256"]
    _index(tmp_path).write_text("".join(json.dumps(e) + "\n" for e in lines))
    (tmp_path / "results" / "digests.jsonl").unlink()
    with caplog.at_level(logging.WARNING, logger="tts.store"):
        assert len(RunDirectory(tmp_path).summaries()) == 6  # readable
        assert run(cfg, run_dir=tmp_path) == metrics  # and resumable: nothing to redo
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "3 index entries were written before entries carried" in warnings[0]
    assert results_files(tmp_path)["digests.jsonl"] == full["digests.jsonl"]  # the digests are vouched for again


def test_a_run_directory_written_before_confidence_resumes_with_top_logprobs_0(tmp_path):
    """A directory whose fingerprint predates log-probabilities (no top_logprobs, no confidence knobs, no
    allow_foreign) resumes when the rerun asks for none (`model.top_logprobs=0`); with the default (5) its results
    would differ from what it holds, and the refusal names the key."""
    from tts.store.provenance import fingerprint_of

    cfg = compose_config(["n=4", "dataset.num_problems=3", "logger=none", "model.top_logprobs=0"])
    run(cfg, run_dir=tmp_path)
    fingerprint = json.loads((tmp_path / "fingerprint.json").read_text())
    assert "top_logprobs" not in json.dumps(fingerprint) and "confidence_signal" not in json.dumps(fingerprint)
    assert "allow_foreign" not in json.dumps(fingerprint) and "deepconf_eta" not in json.dumps(fingerprint)
    before = results_files(tmp_path)
    assert run(cfg, run_dir=tmp_path)["problems"] == 3  # resumes: nothing to do
    assert results_files(tmp_path) == before
    with pytest.raises(ConfigError, match="resumes with model.top_logprobs=0"):
        run(compose_config(["n=4", "dataset.num_problems=3", "logger=none"]), run_dir=tmp_path)
    # the default's fingerprint keeps every confidence knob: they change its results
    config = {"model": {"top_logprobs": 5, "backend": {"confidence_signal": 0.6}}, "scoring": {"deepconf_eta": [10]}}
    assert fingerprint_of(config) == config
