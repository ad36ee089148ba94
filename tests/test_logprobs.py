"""Token log-probabilities and prompt-token accounting of the policy backends.

- hf: a request's `top_logprobs` equal a separate full forward pass's log-softmax top-k over the prompt and the
  generated ids (greedy and sampled, batched prompts of different lengths: left padding, stop strings, samples of one
  request split over batches); a request's prompt is evaluated once for its n samples.
- vLLM and served: the engine's answers map to sorted (num_tokens, k) arrays (k + 1 entries -> the k highest), cached
  prompt tokens are subtracted, a server without log-probabilities is warned about once. The real engines against
  the hf reference are in tests/test_vllm_cpu.py and tests/test_vllm_served.py (the vllm lane).
- the run: `model.top_logprobs` is validated, reaches every solution request, and metrics.json reports
  `tokens/prompt` (and `tokens/prompt_computed`) as the sum over the records.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import compose_config
from test_vllm_mapping import FakeLLM  # the vLLM engine stand-in the mapping tests use

from tts.backends import GenerationRequest
from tts.backends.base import top_logprobs_array
from tts.backends.vllm import VLLMPolicy, sampling_kwargs
from tts.config.schema import ConfigError
from tts.config.validate import validate

MESSAGES = [{"role": "system", "content": "Solve it."}, {"role": "user", "content": "What is 1+2?"}]
OTHER = [{"role": "user", "content": "A much longer problem statement: how many primes are there below one hundred?"}]
K = 5


def reference_top_logprobs(model, prompt: list[int], generated: list[int], k: int) -> np.ndarray:
    """The model's log-softmax top-k at every generated position, from one full forward pass over prompt + generated
    (no cache, no padding): what a backend's `top_logprobs` must equal."""
    import torch

    ids = torch.tensor([list(prompt) + list(generated)])
    with torch.inference_mode():
        logits = model(input_ids=ids, use_cache=False).logits[0].float()
    positions = logits[len(prompt) - 1 : len(prompt) - 1 + len(generated)]
    return torch.log_softmax(positions, dim=-1).topk(k, dim=-1).values.numpy()


# -- hf -----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_policy(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.tiny_models import tiny_dirs
    from tts.backends import build_policy
    from tts.backends.hf import HFPolicyConfig
    from tts.config.schema import ModelConfig

    path = tiny_dirs(tmp_path_factory)["llama"]
    model = ModelConfig(name="tiny", backend=HFPolicyConfig(_target_="tts.backends.hf.build", device="cpu", batch_size=4), path=str(path),
                        chat_template="llama3", dtype="float32")
    return build_policy(model, seed=0)


def _decoded_rows(policy, monkeypatch) -> list:
    """Every row the hf backend decodes, as it leaves `_decode` (prompt ids and generated ids)."""
    rows: list = []
    original = type(policy)._decode

    def spy(self, batch):
        original(self, batch)
        rows.extend(batch)

    monkeypatch.setattr(type(policy), "_decode", spy)
    return rows


def test_hf_top_logprobs_equal_a_full_forward_pass(hf_policy, monkeypatch):
    rows = _decoded_rows(hf_policy, monkeypatch)
    [[free]] = hf_policy.generate([GenerationRequest(MESSAGES, n=1, temperature=0.0, max_tokens=16)])
    stop = next(c for c in free.text[2:] if c.isascii() and c.isprintable() and not c.isspace())
    requests = [
        GenerationRequest(MESSAGES, n=2, temperature=0.0, max_tokens=16, stop=[stop], top_logprobs=K),  # greedy, stop
        GenerationRequest(OTHER, prefix="## Step 1:", n=3, temperature=1.0, max_tokens=10, seed=3, top_logprobs=K),
        GenerationRequest(MESSAGES, n=1, temperature=0.7, top_p=0.9, max_tokens=7, seed=4, top_logprobs=2),
        GenerationRequest(MESSAGES, n=1, temperature=1.0, max_tokens=5, seed=5),  # asks for none
    ]
    rows.clear()
    outputs = hf_policy.generate(requests)
    assert len(rows) == 7 and len({len(r.prompt_ids) for r in rows}) > 1  # batch_size 4: padding, a request split
    assert outputs[0][0].finish_reason == "stop" and outputs[0][0].text.endswith(stop)
    for row in rows:
        out = outputs[row.request][row.sample]
        k = requests[row.request].top_logprobs
        if not k:
            assert out.top_logprobs is None
            continue
        assert out.top_logprobs.dtype == np.float32 and out.top_logprobs.shape == (out.num_tokens, k)
        assert out.num_tokens == len(row.generated) > 0
        assert np.all(np.diff(out.top_logprobs, axis=1) <= 0)  # each row descending
        want = reference_top_logprobs(hf_policy.model, row.prompt_ids, row.generated, k)
        np.testing.assert_allclose(out.top_logprobs, want, atol=1e-4, rtol=0)
    # greedy: the chosen token is the most likely one, so its log-probability is each row's first entry
    greedy = rows[[r.request for r in rows].index(0)]
    assert np.allclose(outputs[0][0].top_logprobs[:, 0], reference_top_logprobs(
        hf_policy.model, greedy.prompt_ids, greedy.generated, 1)[:, 0], atol=1e-4)


def test_hf_evaluates_a_prompt_once_for_its_samples(hf_policy, monkeypatch):
    rows = _decoded_rows(hf_policy, monkeypatch)
    requests = [GenerationRequest(MESSAGES, n=3, temperature=1.0, max_tokens=4, seed=1),
                GenerationRequest(OTHER, n=1, temperature=1.0, max_tokens=4, seed=2)]
    before = hf_policy.stats.prompt_tokens, hf_policy.stats.prompt_tokens_computed
    first, second = hf_policy.generate(requests)
    lengths = {r.request: len(r.prompt_ids) for r in rows}
    # batch_size 4: all four rows in one batch, request 0's prompt evaluated once and copied to its three samples
    assert [o.prompt_tokens for o in first] == [lengths[0]] * 3 and second[0].prompt_tokens == lengths[1]
    assert [o.prompt_tokens_computed for o in first] == [lengths[0], 0, 0]
    assert second[0].prompt_tokens_computed == lengths[1]
    assert hf_policy.stats.prompt_tokens - before[0] == 3 * lengths[0] + lengths[1]
    assert hf_policy.stats.prompt_tokens_computed - before[1] == lengths[0] + lengths[1]
    # samples of one request still differ (each row keeps its own random stream after the copy)
    assert len({o.text for o in first}) > 1


def test_hf_split_request_counts_each_evaluation(hf_policy):
    # batch_size 4 and n=6: two batches, the prompt evaluated in each
    [outs] = hf_policy.generate([GenerationRequest(MESSAGES, n=6, temperature=1.0, max_tokens=3, seed=9)])
    assert sum(o.prompt_tokens_computed for o in outs) == 2 * outs[0].prompt_tokens


# -- vLLM mapping (fake engine objects) -----------------------------------------------------------------------------


@dataclass
class FakeCompletion:
    index: int
    text: str
    token_ids: list
    finish_reason: str = "length"
    stop_reason: object = None
    logprobs: list | None = None


@dataclass
class FakeRequestOutput:
    outputs: list
    num_cached_tokens: int | None = None


class FakeTokenizer:
    bos_token = None

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        return "".join(m["content"] for m in messages)

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [ord(c) for c in text]}


def _position(*values):
    """One position of vLLM's sample logprobs: {token id: Logprob}, in no particular order."""
    return {100 + i: SimpleNamespace(logprob=v, rank=None) for i, v in enumerate(values)}


def test_vllm_logprobs_become_the_sorted_top_k_and_cached_prompt_tokens_are_subtracted():
    request = GenerationRequest([{"role": "user", "content": "abcdef"}], n=2, top_logprobs=2)
    assert sampling_kwargs(request)["logprobs"] == 2 and "logprobs" not in sampling_kwargs(GenerationRequest([]))
    # the sampled token, when not among the k most likely, comes as a (k+1)th entry
    first = FakeCompletion(0, "ab", [1, 2], logprobs=[_position(-3.0, -0.5, -1.0), _position(-0.1, -2.5)])
    second = FakeCompletion(1, "c", [3], logprobs=[_position(-0.2, -4.0, -1.5)])
    llm = FakeLLM([FakeRequestOutput([second, first], num_cached_tokens=4)])
    policy = VLLMPolicy(llm, FakeTokenizer(), sampling_params=dict)
    [[a, b]] = policy.generate([request])
    np.testing.assert_array_equal(a.top_logprobs, np.array([[-0.5, -1.0], [-0.1, -2.5]], dtype=np.float32))
    np.testing.assert_array_equal(b.top_logprobs, np.array([[-0.2, -1.5]], dtype=np.float32))
    assert a.top_logprobs.dtype == np.float32
    assert (a.prompt_tokens, b.prompt_tokens) == (6, 6)
    assert (a.prompt_tokens_computed, b.prompt_tokens_computed) == (2, 0)  # 6 - 4 cached, once for both samples
    assert policy.stats.prompt_tokens == 12 and policy.stats.prompt_tokens_computed == 2


def test_an_engine_without_a_cache_count_leaves_computed_unknown():
    llm = FakeLLM([FakeRequestOutput([FakeCompletion(0, "a", [1])])])
    policy = VLLMPolicy(llm, FakeTokenizer(), sampling_params=dict)
    [[out]] = policy.generate([GenerationRequest([{"role": "user", "content": "abc"}])])
    assert out.top_logprobs is None and out.prompt_tokens == 3 and out.prompt_tokens_computed is None
    assert policy.stats.prompt_tokens_computed == 3  # unknown counts in full: the most it can have cost


def test_top_logprobs_array_pads_short_positions():
    table = top_logprobs_array([[-1.0], [], [-0.5, -0.25, -3.0]], 2)
    assert table.shape == (3, 2) and table[0, 1] == -np.inf and np.isinf(table[1]).all()
    assert table[2].tolist() == [-0.25, -0.5]
    assert top_logprobs_array([], 3).shape == (0, 3)


# -- served (a scripted OpenAI-compatible server) -------------------------------------------------------------------


@pytest.fixture
def served(tmp_path_factory):
    pytest.importorskip("openai")
    pytest.importorskip("transformers")
    from tests.test_openai_backend import Server, _policy
    from tests.tiny_models import tiny_dirs

    server = Server()
    policy = _policy(tiny_dirs(tmp_path_factory), server.url)
    yield server, policy
    policy.close()
    server.close()


def test_served_logprobs_are_asked_for_and_parsed(served):
    from tests.test_openai_backend import choice, completion

    server, policy = served
    positions = [{"token_id:5": -0.7, "token_id:6": -0.9, "token_id:7": -2.0}, {"token_id:8": -0.01, "token_id:9": -5.0}]
    answer = completion([{**choice(0, "ab", "length", None, [5, 8]), "logprobs": {"top_logprobs": positions}},
                         {**choice(1, "cd", "length", None, [6, 9]), "logprobs": {"top_logprobs": positions}}])
    answer["usage"]["prompt_tokens_details"] = {"cached_tokens": 3}
    server.plan = [(200, answer)]
    request = GenerationRequest(MESSAGES, n=2, max_tokens=2, top_logprobs=2)
    [[a, b]] = policy.generate([request])
    [body] = server.seen
    assert body["logprobs"] == 2 and body["return_tokens_as_token_ids"] is True
    np.testing.assert_array_equal(a.top_logprobs, np.array([[-0.7, -0.9], [-0.01, -5.0]], dtype=np.float32))
    assert a.prompt_tokens == b.prompt_tokens == len(body["prompt"])
    assert (a.prompt_tokens_computed, b.prompt_tokens_computed) == (len(body["prompt"]) - 3, 0)


def test_served_without_logprobs_warns_once_and_leaves_none(served, caplog):
    server, policy = served
    request = GenerationRequest(MESSAGES, n=2, max_tokens=2, top_logprobs=K)
    with caplog.at_level(logging.WARNING, logger="tts.backends.openai"):
        first = policy.generate([request])[0]
        second = policy.generate([request])[0]
    assert all(o.top_logprobs is None for o in first + second)
    assert sum("no log-probabilities" in r.getMessage() for r in caplog.records) == 1
    assert all(o.prompt_tokens_computed is None for o in first)  # no cached_tokens in the usage: unknown
    asked = [body for body in server.seen if "logprobs" in body]
    assert len(asked) == 2 and GenerationRequest(MESSAGES).top_logprobs == 0


# -- the run ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-1, 21])
def test_top_logprobs_is_validated(value):
    with pytest.raises(ConfigError, match="'model.top_logprobs'"):
        validate(compose_config([f"model.top_logprobs={value}"]))


def test_every_solution_request_asks_for_the_configured_top_logprobs():
    from tts.data.problem import Problem
    from tts.search.base import RunSpec, make_request

    cfg = validate(compose_config(["model.top_logprobs=7"]))
    problem = Problem(problem="1+1?", answer="2", unique_id="p")
    assert make_request(problem, RunSpec.of(cfg), cfg.strategy).top_logprobs == 7
    quiet = validate(compose_config(["model.top_logprobs=0"]))
    assert make_request(problem, RunSpec.of(quiet), quiet.strategy).top_logprobs == 0


@pytest.mark.parametrize("strategy", ["best_of_n", "beam", "filter_vote", "revisions", "lookahead"])
def test_metrics_report_prompt_tokens_as_the_sum_over_records(strategy, tmp_path):
    from tts.pipeline import run
    from tts.store.writer import RunDirectory

    cfg = compose_config([f"strategy={strategy}", "n=4", "dataset.num_problems=3", "logger=none",
                          "budget.num_iterations=3"])
    metrics = run(cfg, run_dir=tmp_path)
    records = RunDirectory(tmp_path).records()
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert metrics["tokens/prompt"] > 0
    assert metrics["tokens/prompt"] == sum(r.compute["prompt_tokens"] for r in records)
    assert metrics["tokens/prompt_computed"] == sum(r.compute["prompt_tokens_computed"] for r in records)
    assert all(r.compute["prompt_tokens"] > 0 for r in records)
