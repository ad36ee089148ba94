"""The vLLM engine of a PRM with a stand-in `vllm` module (no vllm needed): the engine it builds from the family's
read-out and the engine knobs, and step-by-step scoring (one request per new step, cut after its read-out token) that
reads what a whole-sequence pass reads. tests/test_vllm_prm_prefix.py checks the same on a real vLLM engine."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.tiny_models import PRM_OPTIONS, llama_tokenizer  # noqa: E402
from tts.prms import build_prm  # noqa: E402
from tts.prms.vllm_engine import VLLMPRMEngine  # noqa: E402

PROBLEM = "What is 1+2?"
STEPS = ["## Step 1: Add 1 and 2.\n1 + 2 = 3", "So x = 3.", "Therefore, the final answer is: $\\boxed{3}$."]


@dataclass
class Pooled:
    data: object


@dataclass
class Output:
    outputs: Pooled
    num_cached_tokens: int


@dataclass
class FakeLLM:
    """A pooling engine whose score at a token is a function of the tokens up to it (as a causal model's is), and
    whose prefix cache holds every sequence it has seen."""

    kwargs: dict
    requests: list = field(default_factory=list)
    seen: set = field(default_factory=set)

    def __init__(self, **kwargs) -> None:
        self.kwargs, self.requests, self.seen = kwargs, [], set()

    @staticmethod
    def score(ids) -> float:
        return (sum(ids) % 997) / 997

    def encode(self, prompts, pooling_params=None, pooling_task="", use_tqdm=False):
        self.requests.append((pooling_task, [p["prompt_token_ids"] for p in prompts]))
        outputs = []
        for prompt in prompts:
            ids = prompt["prompt_token_ids"]
            cached = max((k for k in range(len(ids)) if tuple(ids[:k]) in self.seen), default=0)
            self.seen.update(tuple(ids[:k]) for k in range(1, len(ids) + 1))
            rows = [[1 - self.score(ids[: i + 1]), self.score(ids[: i + 1])] for i in range(len(ids))]
            data = torch.tensor(rows[-1] if pooling_task == "classify" else rows)
            outputs.append(Output(Pooled(data), cached))
        return outputs

    def reset_prefix_cache(self) -> None:
        self.seen.clear()


@pytest.fixture
def fake_vllm(monkeypatch):
    vllm = types.ModuleType("vllm")
    vllm.LLM = FakeLLM
    vllm.PoolingParams = lambda **kwargs: kwargs
    config = types.ModuleType("vllm.config")
    config.PoolerConfig = lambda **kwargs: kwargs
    vllm.config = config
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.config", config)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("rlhflow_tokenizer")
    llama_tokenizer().save_pretrained(path)
    return path


def _prm(tokenizer_dir, *overrides):
    from conftest import typed_config

    run = typed_config([f"prm={PRM_OPTIONS['rlhflow']}", f"prm.path={tokenizer_dir}", "prm/engine=vllm", *overrides])
    return build_prm(run.prm)


def test_the_engine_is_built_from_the_family_read_out_and_the_engine_knobs(fake_vllm, tokenizer_dir):
    prm = _prm(tokenizer_dir, "prm.engine.max_length=512", "prm.engine.block_size=32", "prm.dtype=float32")
    assert isinstance(prm.engine, VLLMPRMEngine)
    kwargs = prm.engine.llm.kwargs
    assert kwargs["model"] == kwargs["tokenizer"] == str(tokenizer_dir) and kwargs["dtype"] == "float32"
    assert (kwargs["max_model_len"], kwargs["block_size"], kwargs["gpu_memory_utilization"]) == (512, 32, 0.4)
    assert kwargs["runner"] == "pooling" and kwargs["convert"] == "classify" and kwargs["enable_prefix_caching"]
    assert kwargs["hf_overrides"]["method"] == "from_2_way_softmax"  # the two-token read-out as a classifier
    assert kwargs["pooler_config"] == {"task": "classify", "seq_pooling_type": "LAST"}
    assert "native_head" not in kwargs
    whole = _prm(tokenizer_dir, "prm.engine.enable_prefix_caching=false")
    assert whole.engine.llm.kwargs["pooler_config"] == {"task": "token_classify", "tok_pooling_type": "ALL"}


def test_steps_scored_alone_read_what_a_whole_pass_reads(fake_vllm, tokenizer_dir):
    whole, stepwise = _prm(tokenizer_dir, "prm.engine.enable_prefix_caching=false"), _prm(tokenizer_dir)
    beams = [STEPS[:2] + [last] for last in (STEPS[2], "Then x = 4.")]
    expected = whole.score([PROBLEM], [beams])[0]
    assert whole.engine.llm.requests[0][0] == "token_classify" and whole.stats.cached_tokens == 0
    stepwise.score([PROBLEM], [[STEPS[:1]]])  # as beam search asks: the first step, then the children
    got = stepwise.score([PROBLEM], [beams])[0]
    for have, want in zip(got, expected):
        assert have == pytest.approx(want)
    task, sent = stepwise.engine.llm.requests[-1]
    # the memo held step 1: one request per distinct new cut (step 2 is shared by both beams), never a whole solution
    assert task == "classify" and len(sent) == 3 and stepwise.engine.forward_calls == 2
    assert stepwise.stats.cached_tokens > 0 and stepwise.stats.tokens == sum(
        len(ids) for _, requests in stepwise.engine.llm.requests for ids in requests
    )
    stepwise.reset_prefix_cache()
    assert not stepwise.engine.llm.seen
