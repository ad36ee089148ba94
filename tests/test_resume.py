"""Resume: a run killed at any point and started again finishes with every problem exactly once and the same metrics.

The headline test SIGKILLs `python tts/main.py` mid-run (after it has appended some batches), leaves a half-written
line as a kill during a write would, reruns the same command and compares with an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, compose_config
from tts.config import ConfigError
from tts.pipeline import run
from tts.results import RunDirectory


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


KILL_ARGS = ["n=32", "dataset.num_problems=40", "batch_size=2", "logger=none"]


def test_sigkill_mid_run_then_rerun_equals_an_uninterrupted_run(tmp_path):
    reference_dir = tmp_path / "uninterrupted"
    reference = run(compose_config(KILL_ARGS), run_dir=reference_dir)
    expected = _lines(reference_dir / "results.jsonl")

    run_dir = tmp_path / "killed"
    command = [sys.executable, "tts/main.py", *KILL_ARGS, f"hydra.run.dir={run_dir}"]
    results = run_dir / "results.jsonl"
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while _count_lines(results) < 6 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed: make it longer"
    recorded = _count_lines(results)
    assert 6 <= recorded < 40 and recorded % 2 == 0, recorded  # whole batches of 2 (one write + fsync each)
    assert not (run_dir / "metrics.json").exists()
    # The kill may land between batches or inside the batch's write; make the rerun meet the worst case too: the
    # next batch cut short, its first record whole and the second torn half way.
    first, second = (json.dumps(r) for r in expected[recorded : recorded + 2])
    with open(results, "a") as handle:
        handle.write(first + "\n" + second[: len(second) // 2])

    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"{recorded} already recorded" in rerun.stdout + rerun.stderr

    resumed = _lines(results)
    ids = [r["unique_id"] for r in resumed]
    assert len(ids) == len(set(ids)) == 40, "every problem exactly once"
    assert ids == [r["unique_id"] for r in expected]
    assert resumed == expected  # same completions, scores, predictions and compute, record for record
    assert json.loads((run_dir / "metrics.json").read_text()) == reference


def _finished_run(tmp_path: Path, overrides=("n=4", "dataset.num_problems=6", "logger=none", "batch_size=2")):
    cfg = compose_config(list(overrides))
    metrics = run(cfg, run_dir=tmp_path)
    return cfg, metrics, (tmp_path / "results.jsonl").read_bytes()


def test_torn_last_line_is_cut_and_its_problem_redone(tmp_path):
    cfg, metrics, full = _finished_run(tmp_path)
    lines = full.splitlines(keepends=True)
    (tmp_path / "results.jsonl").write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    assert run(cfg, run_dir=tmp_path) == metrics
    assert (tmp_path / "results.jsonl").read_bytes() == full


def test_complete_last_record_without_newline_is_kept(tmp_path):
    cfg, metrics, full = _finished_run(tmp_path)
    (tmp_path / "results.jsonl").write_bytes(full[:-1])  # the write stopped right before the final newline
    assert len(RunDirectory(tmp_path).load()) == 6  # nothing to redo
    assert (tmp_path / "results.jsonl").read_bytes() == full  # the newline is restored, so appends stay line-aligned
    assert run(cfg, run_dir=tmp_path) == metrics


def test_damaged_and_repeated_lines_are_dropped_and_redone(tmp_path):
    cfg, metrics, full = _finished_run(tmp_path)
    lines = full.splitlines(keepends=True)
    damaged = [lines[0], b"{not json at all\n", lines[1], lines[1], b"[1, 2]\n"] + lines[2:3] + lines[4:]
    (tmp_path / "results.jsonl").write_bytes(b"".join(damaged))
    repaired = run(cfg, run_dir=tmp_path)
    records = _lines(tmp_path / "results.jsonl")
    assert sorted(r["unique_id"] for r in records) == sorted(json.loads(line)["unique_id"] for line in lines)
    # Damage outside the crash path (an edited file, a disk fault) is redone in a batch of its own, so only the
    # compute it is charged differs: the batch's calls and PRM tokens are shared out over fewer problems.
    for key, value in metrics.items():
        if not key.startswith(("compute/", "tokens/prm")):
            assert repaired[key] == value, key


def test_a_second_writer_is_refused_while_the_first_holds_the_directory(tmp_path):
    cfg = compose_config(["n=4", "dataset.num_problems=3", "logger=none"])
    first = RunDirectory(tmp_path)
    first.open({"n": 4})  # another job has the directory open (same process here; the lock is per open file)
    try:
        with pytest.raises(ConfigError, match=r"is being written by pid \d+ on .*Wait for it to finish"):
            run(cfg, run_dir=tmp_path)
        assert not (tmp_path / "results.jsonl").exists()
    finally:
        first.close()
    run(cfg, run_dir=tmp_path)  # released: the run goes ahead
    assert len(_lines(tmp_path / "results.jsonl")) == 3


def test_a_second_writer_process_is_refused(tmp_path):
    """Across processes: a job launched twice on one directory (SLURM requeue while the old one lingers, say)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from tts.results import RunDirectory; "
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
    a, b = _lines(tmp_path / "one" / "results.jsonl"), _lines(tmp_path / "all" / "results.jsonl")
    for x, y in zip(a, b):
        assert x["completions"] == y["completions"] and x["scores"] == y["scores"]
        assert x["compute"]["generated_tokens"] == y["compute"]["generated_tokens"]
    for key in one:
        if key.startswith(("acc", "pass", "ungraded", "grading")) or key in ("tokens/generated", "tokens/prm"):
            assert one[key] == all_[key], key
    # Not batch-independent, by design: backend calls (one or more per batch), and the per-problem share of PRM
    # tokens (a batched PRM call's tokens are split in proportion to the text each problem sent; the total is exact).
    assert one["compute/backend_calls"] > all_["compute/backend_calls"]
