"""Long runs can be watched and stopped: SIGTERM / SIGINT keep every saved problem with one line and a non-zero exit,
the rerun resumes to what an uninterrupted run writes; tree searches save each problem as its search ends; a progress
line comes from a timer, whatever the backend is doing."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, compose_config, results_files, typed_config
from tts.backends.sim import SimPolicy
from tts.data import load_problems
from tts.runtime.model_cache import acquire_policy, acquire_prm
from tts.pipeline import run
from tts.runtime.progress import Progress as _Progress
from tts.prms.sim import SimPRM
from tts.search.beam import BeamState
from tts.search.base import RunSpec
from tts.search.tree import run_tree_search
from tts.store.writer import RunDirectory

ARGS = ["n=32", "dataset.num_problems=40", "batch_size=2", "logger=none"]


def _index_lines(run_dir: Path) -> int:
    try:
        return (run_dir / "results" / "index.jsonl").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _stop_mid_run(run_dir: Path, number: int) -> subprocess.CompletedProcess:
    command = [sys.executable, "tts/main.py", *ARGS, f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while _index_lines(run_dir) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(proc.pid, number)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


@pytest.mark.parametrize("number, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_keeps_saved_problems_says_so_in_one_line_and_exits_non_zero(tmp_path, number, status):
    run_dir = tmp_path / "stopped"
    stopped = _stop_mid_run(run_dir, number)
    assert stopped.returncode == status, stopped.stderr[-3000:]
    kept = RunDirectory(run_dir).summaries()
    assert 6 <= len(kept) < 40, "stopped after three batches were saved, before the end"
    said = [line for line in (stopped.stdout + stopped.stderr).splitlines() if "stopped by" in line]
    assert len(said) == 1, stopped.stdout + stopped.stderr
    assert f"stopped by {signal.Signals(number).name}: kept {len(kept)} of 40 problems" in said[0]
    assert str(run_dir / "results") in said[0]
    assert "Traceback" not in stopped.stderr
    assert not (run_dir / "metrics.json").exists()


def test_rerun_after_sigterm_equals_an_uninterrupted_run(tmp_path):
    reference_dir = tmp_path / "uninterrupted"
    reference = run(compose_config(ARGS), run_dir=reference_dir)
    run_dir = tmp_path / "stopped"
    assert _stop_mid_run(run_dir, signal.SIGTERM).returncode == 143
    kept = len(RunDirectory(run_dir).summaries())
    rerun = subprocess.run([sys.executable, "tts/main.py", *ARGS, f"hydra.run.dir={run_dir}"], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"{kept} already recorded" in rerun.stdout + rerun.stderr
    assert RunDirectory(run_dir).records() == RunDirectory(reference_dir).records()
    assert results_files(run_dir) == results_files(reference_dir)
    assert (run_dir / "metrics.json").read_text() == (reference_dir / "metrics.json").read_text()
    assert reference["problems"] == 40


def test_a_tree_search_hands_over_each_problem_as_its_search_ends():
    cfg = typed_config(["strategy=beam", "n=4", "dataset.num_problems=12"])
    problems = load_problems(cfg.dataset)
    policy, prm = acquire_policy(cfg.model, cfg.seed), acquire_prm(cfg.prm)
    assert isinstance(policy, SimPolicy) and isinstance(prm, SimPRM)
    handed: list[tuple[int, object, int]] = []
    results = run_tree_search(problems, policy, prm, cfg.strategy, RunSpec.of(cfg), BeamState,
                              finished=lambda done: handed.extend((i, o, policy.stats.calls) for i, o in done))
    assert sorted(i for i, _, _ in handed) == list(range(len(problems))), "each problem exactly once"
    for i, output, _ in handed:
        assert [c.to_json() for c in output.completions] == [c.to_json() for c in results[i].completions]
        assert output.compute == results[i].compute
    assert min(calls for _, _, calls in handed) < policy.stats.calls, "some problem was handed over mid-search"


def test_problems_saved_as_they_finish_share_the_batchs_calls_exactly(tmp_path):
    """Beam search in one batch saves problems in several files as they finish; the calls still add up: in lockstep
    every call serves all active problems, so the run's calls are the most any problem made."""
    metrics = run(compose_config(["strategy=beam", "n=4", "dataset.num_problems=16", "logger=none"]), tmp_path)
    directory = RunDirectory(tmp_path)
    assert len(list((tmp_path / "results").glob("batch-*.jsonl.gz"))) > 1
    records = directory.records()
    assert metrics["compute/backend_calls"] == max(r.compute["backend_calls"] for r in records)


def test_progress_line_comes_from_a_timer(caplog):
    class Stats:
        generated_tokens = 100

    class Policy:
        stats = Stats()
        tokens_in_flight = 0

    caplog.set_level(logging.INFO, logger="tts.pipeline")
    with _Progress(10, Policy(), every=0.001) as progress:
        Policy.stats.generated_tokens, Policy.tokens_in_flight = 900, 200  # a call in progress counts too
        progress.add(4)
        deadline = time.monotonic() + 30
        while not any("progress: 4/10" in m for m in caplog.messages) and time.monotonic() < deadline:
            time.sleep(0.01)
    line = next(m for m in caplog.messages if "progress: 4/10" in m)
    assert re.fullmatch(r"progress: 4/10 problems saved, 1000 tokens generated \([\d.]+ tokens/s\), \d\d:\d\d elapsed, "
                        r"time left \d\d:\d\d", line), line


@pytest.mark.parametrize("strategy", ["best_of_n", "filter_vote", "revisions"])
def test_chunked_strategies_save_each_chunk_as_it_ends(tmp_path, strategy):
    """With `strategy.search_batch_size=2` a batch of 8 is saved in 4 pieces, and the calls still add up: each
    chunk's calls serve its 2 problems, whose records each count them."""
    metrics = run(compose_config([f"strategy={strategy}", "n=4", "dataset.num_problems=8", "batch_size=8",
                                  "strategy.search_batch_size=2", "logger=none"]), tmp_path)
    assert len(list((tmp_path / "results").glob("batch-*.jsonl.gz"))) == 4
    records = RunDirectory(tmp_path).records()
    assert metrics["compute/backend_calls"] == sum(r.compute["backend_calls"] for r in records) / 2


def test_a_stop_signal_during_a_write_waits_for_its_end():
    """A batch file and its index line are written whole: the signal is raised once the write is done."""
    from tts.runtime.signals import StopSignal as _Signal, StopSignals as _StopSignals

    previous = signal.getsignal(signal.SIGTERM)
    written = []
    with pytest.raises(_Signal) as stop:
        with _StopSignals() as signals:
            with signals.hold():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0)  # the handler has run by now (the main thread runs it between bytecodes)
                written.append("file and index line")
    assert written == ["file and index line"] and stop.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is previous  # the handlers are put back
