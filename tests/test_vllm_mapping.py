"""The vLLM policy's request/response mapping, with fake vLLM objects (no vllm needed)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tts.backends import GenerationOutput, GenerationRequest
from tts.backends.vllm import VLLMPolicy, engine_kwargs, map_finish_reason, sampling_kwargs


@dataclass
class FakeCompletion:
    index: int
    text: str
    token_ids: list
    finish_reason: str
    stop_reason: object = None


@dataclass
class FakeRequestOutput:
    outputs: list


@dataclass
class FakeLLM:
    replies: list
    seen: list = field(default_factory=list)

    def generate(self, prompts, params, use_tqdm=True):
        self.seen.append((prompts, params))
        return self.replies


class FakeTokenizer:
    bos_token = "<bos>"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        text = "<bos>" + "".join(f"[{m['role']}]{m['content']}" for m in messages)
        return text + ("[assistant]" if add_generation_prompt else "")

    # one multi-character token, as real vocabularies have ("\n\nThe"): a stop string can end inside it
    MERGED = {1000: "\n\nX"}

    def __call__(self, text, add_special_tokens=True):
        ids = [ord(c) for c in text]
        return {"input_ids": ([0] if add_special_tokens else []) + ids}

    def encode(self, text, add_special_tokens=True):
        return self(text, add_special_tokens=add_special_tokens)["input_ids"]

    def decode(self, ids):
        return "".join(self.MERGED.get(i, chr(i)) for i in ids if i != 0)


def test_finish_reasons():
    assert map_finish_reason("length", None) == "length"
    assert map_finish_reason("stop", "\n\n") == "stop"  # a stop string
    assert map_finish_reason("stop", None) == "eos"  # EOS: vLLM says stop with no stop_reason
    assert map_finish_reason("stop", 128009) == "eos"  # a stop token id is an end of turn too
    with pytest.raises(RuntimeError):
        map_finish_reason("abort", None)


def test_sampling_params_keep_the_stop_string():
    request = GenerationRequest(messages=[], n=4, temperature=0.8, top_p=0.9, max_tokens=99, stop=["\n\n"], seed=7)
    kw = sampling_kwargs(request)
    assert kw == dict(n=4, temperature=0.8, top_p=0.9, max_tokens=99, stop=["\n\n"], include_stop_str_in_output=True,
                      skip_special_tokens=True, seed=7)
    assert sampling_kwargs(GenerationRequest(messages=[]))["stop"] is None


def test_generate_maps_requests_and_outputs():
    messages = [{"role": "user", "content": "1+1?"}]
    requests = [GenerationRequest(messages, prefix="## Step 1: two\n\n", n=2, stop=["\n\n"], seed=3),
                GenerationRequest(messages, n=1, seed=4)]
    llm = FakeLLM([
        FakeRequestOutput([FakeCompletion(1, "b\n\n", [98, 10, 10], "stop", "\n\n"),
                           FakeCompletion(0, "a", [5], "stop", None)]),
        FakeRequestOutput([FakeCompletion(0, "long", [1] * 9, "length")]),
    ])
    policy = VLLMPolicy(llm, FakeTokenizer(), sampling_params=dict)
    outs = policy.generate(requests)
    prompts, params = llm.seen[0]
    lengths = [len(p["prompt_token_ids"]) for p in prompts]
    assert outs == [[GenerationOutput("a", "eos", 1, prompt_tokens=lengths[0]),
                     GenerationOutput("b\n\n", "stop", 3, token_ids=(98, 10, 10), prompt_tokens=lengths[0])],
                    [GenerationOutput("long", "length", 9, prompt_tokens=lengths[1])]]
    assert policy.stats.prompt_tokens == 2 * lengths[0] + lengths[1]  # every sample continued its prompt
    first = "".join(chr(i) for i in prompts[0]["prompt_token_ids"])
    assert first == "<bos>[user]1+1?[assistant]## Step 1: two\n\n"  # prefix appended raw, blank line kept
    assert prompts[0]["prompt_token_ids"][0] != 0  # the template wrote BOS: no second one from the tokenizer
    assert params[0]["seed"] == 3 and params[0]["n"] == 2 and params[1]["seed"] == 4
    assert policy.stats.generated_tokens == 13 and policy.stats.samples == 3


def test_a_step_keeps_its_sampled_ids_and_the_next_prompt_continues_them():
    messages = [{"role": "user", "content": "1+1?"}]
    llm = FakeLLM([FakeRequestOutput([FakeCompletion(0, "b\n\n", [98, 1000], "stop", "\n\n"),
                                      FakeCompletion(1, "c\n\n", [7, 99], "stop", "\n\n")])])
    policy = VLLMPolicy(llm, FakeTokenizer(), sampling_params=dict)
    [[cut, unknown]] = policy.generate([GenerationRequest(messages, n=2, stop=["\n\n"])])
    # the stop string ended inside the last token ("\n\nX"): the ids before it, then the cut tail encoded
    assert cut.token_ids == (98, 10, 10) and unknown.token_ids is None  # ids that decode to the text, or none
    # the next request continues the kept ids, not a re-encoding of the text
    prompt = policy.prompt(GenerationRequest(messages, prefix="b\n\n", prefix_ids=(98, 1000)))["prompt_token_ids"]
    opened = policy.prompt(GenerationRequest(messages))["prompt_token_ids"]
    assert prompt == opened + [98, 1000]
    assert policy.prompt(GenerationRequest(messages, prefix="b\n\n"))["prompt_token_ids"] == opened + [98, 10, 10]


def test_wrong_sample_count_is_an_error():
    llm = FakeLLM([FakeRequestOutput([FakeCompletion(0, "a", [1], "length")])])
    policy = VLLMPolicy(llm, FakeTokenizer(), sampling_params=dict)
    with pytest.raises(RuntimeError):
        policy.generate([GenerationRequest([{"role": "user", "content": "x"}], n=2)])


def test_engine_kwargs_from_config():
    from tts.backends.vllm import VLLMPolicyConfig
    from tts.config.schema import ModelConfig

    backend = VLLMPolicyConfig(_target_="tts.backends.vllm.build", gpu_memory_utilization=0.45, tensor_parallel_size=2, max_model_len=4096)
    model = ModelConfig(name="m", backend=backend, path="/models/llama", dtype="bfloat16")
    kw = engine_kwargs(backend, model, seed=5)
    assert kw["seed"] == 5 and kw["enable_prefix_caching"] is True and kw["max_model_len"] == 4096
    assert kw["gpu_memory_utilization"] == 0.45 and kw["tensor_parallel_size"] == 2 and kw["dtype"] == "bfloat16"


def test_vllm_is_not_imported_by_the_mapping():
    import sys

    assert "tts.backends.vllm" in sys.modules
    # importing the module (above) must not have imported vllm itself
    import tts.backends.vllm as module

    assert "vllm" not in module.__dict__
