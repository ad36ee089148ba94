"""The transformers policy backend on a tiny random Llama / Qwen2: prompts, stop strings, finish reasons, n, seeds."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.tiny_models import tiny_dirs  # noqa: E402
from tts.backends import GenerationRequest, build_policy  # noqa: E402
from tts.backends.hf import HFPolicyConfig, cut_at_stop, encode_prompt, from_pretrained, render_prompt  # noqa: E402
from tts.config.schema import ModelConfig  # noqa: E402

MESSAGES = [{"role": "system", "content": "Solve it."}, {"role": "user", "content": "What is 1+2?"}]


@pytest.fixture(scope="session")
def dirs(tmp_path_factory):
    return tiny_dirs(tmp_path_factory)


def _policy(path, batch_size=None, **overrides):
    backend = HFPolicyConfig(_target_="tts.backends.hf.build", device="cpu", **({} if batch_size is None else {"batch_size": batch_size}))
    return build_policy(ModelConfig(name="tiny", backend=backend, path=str(path), dtype="float32", **overrides),
                        seed=0)


@pytest.fixture(scope="module")
def llama(dirs):
    return _policy(dirs["llama"], chat_template="llama3", batch_size=4)


def _request(**kw):
    base = dict(messages=MESSAGES, n=1, temperature=0.0, max_tokens=12, stop=None, seed=0)
    base.update(kw)
    return GenerationRequest(**base)


def test_prompt_has_one_bos_and_keeps_the_prefix_blank_line(llama):
    tok = llama.tokenizer
    request = _request(prefix="## Step 1: add\n\n1 + 2 = 3\n\n")
    text = render_prompt(tok, request)
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n## Step 1: add\n\n1 + 2 = 3\n\n")
    ids = encode_prompt(tok, text)
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=False) == text  # nothing stripped, nothing added


def test_max_tokens_gives_length(llama):
    [[out]] = llama.generate([_request(max_tokens=7)])
    assert out.finish_reason == "length" and out.num_tokens == 7


def test_stop_string_is_cut_and_kept(llama):
    [[free]] = llama.generate([_request(max_tokens=16)])
    text = free.text
    # a stop string the greedy continuation certainly produces: a printable character a few tokens in
    stop = next(c for c in text[2:] if c.isascii() and c.isprintable() and not c.isspace())
    [[out]] = llama.generate([_request(max_tokens=16, stop=[stop])])
    assert out.finish_reason == "stop"
    assert out.text == text[: text.index(stop) + len(stop)]
    assert out.text.endswith(stop)
    assert 1 <= out.num_tokens <= free.num_tokens


def test_eos_is_eos_and_counted(llama):
    greedy = _greedy_ids(llama, 3)
    saved = set(llama.eos_token_ids)
    try:
        llama.eos_token_ids = saved | {greedy[-1]}  # make the 3rd greedy token an end of turn
        [[out]] = llama.generate([_request(max_tokens=8)])
    finally:
        llama.eos_token_ids = saved
    assert out.finish_reason == "eos"
    assert out.num_tokens == greedy.index(greedy[-1]) + 1  # the EOS token itself is counted


def _greedy_ids(policy, k):
    from tts.backends.hf import _Row, sample_seed

    prompt = encode_prompt(policy.tokenizer, render_prompt(policy.tokenizer, _request()))
    row = _Row(0, 0, prompt, 0.0, 1.0, k, [], sample_seed(0, 0))
    saved = policy.eos_token_ids
    policy.eos_token_ids = set()
    try:
        policy._decode([row])
    finally:
        policy.eos_token_ids = saved
    return row.generated


def test_n_per_prompt_and_batch_cap(llama, monkeypatch):
    calls = []
    original = type(llama)._decode

    def counting(self, rows):
        calls.append(len(rows))
        return original(self, rows)

    monkeypatch.setattr(type(llama), "_decode", counting)
    outs = llama.generate([_request(n=3, temperature=1.0, max_tokens=5), _request(n=2, temperature=1.0, seed=1)])
    assert [len(o) for o in outs] == [3, 2]
    assert max(calls) <= 4 and sum(calls) == 5  # model.backend.batch_size=4 caps sequences per forward
    assert llama.stats.samples >= 5


def test_seed_determinism_per_request(llama):
    a = _request(n=3, temperature=1.0, max_tokens=6, seed=11)
    b = _request(n=2, temperature=1.0, max_tokens=6, seed=12, prefix="## Step 1:")
    together = llama.generate([a, b])
    again = llama.generate([a, b])
    alone = llama.generate([a])
    assert together == again
    assert [o.text for o in alone[0]] == [o.text for o in together[0]]  # other requests in the batch do not matter
    other_seed = llama.generate([_request(n=3, temperature=1.0, max_tokens=6, seed=99)])
    assert [o.text for o in other_seed[0]] != [o.text for o in together[0]]
    assert len({o.text for o in together[0]}) > 1  # samples of one request differ from each other


def test_temperature_zero_is_greedy_and_top_p_tiny_is_greedy(llama):
    greedy = llama.generate([_request(n=2, temperature=0.0, max_tokens=6)])[0]
    assert (greedy[0].text, greedy[0].token_ids) == (greedy[1].text, greedy[1].token_ids)
    assert [o.prompt_tokens_computed for o in greedy] == [greedy[0].prompt_tokens, 0]  # one prompt evaluation
    nucleus = llama.generate([_request(n=2, temperature=1.0, top_p=1e-6, max_tokens=6, seed=5)])[0]
    assert [o.text for o in nucleus] == [greedy[0].text] * 2


def test_qwen_policy_has_no_bos_and_generates(dirs):
    policy = _policy(dirs["qwen"], batch_size=8)
    text = render_prompt(policy.tokenizer, _request(prefix="Step"))
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\nStep")
    [[a, b]] = policy.generate([_request(n=2, temperature=0.7, max_tokens=5, stop=["\n\n"])])
    assert all(o.finish_reason in ("stop", "eos", "length") for o in (a, b))
    assert all(0 < o.num_tokens <= 5 for o in (a, b))


def test_cut_at_stop_takes_the_earliest():
    assert cut_at_stop("ab\n\ncd\n\n", ["\n\n"]) == ("ab\n\n", True)
    assert cut_at_stop("xyz END abc \n\n", ["\n\n", "END"]) == ("xyz END", True)
    assert cut_at_stop("nothing", ["\n\n"]) == ("nothing", False)


def test_offline_hub_error_names_the_fix():
    from huggingface_hub.errors import LocalEntryNotFoundError

    class Loader:
        @staticmethod
        def from_pretrained(path, **kwargs):
            raise LocalEntryNotFoundError("offline mode is enabled")

    with pytest.raises(OSError, match=r"could not load .* from the hub \(offline\?\); download it and pass "
                                      r"model.path=/local/dir"):
        from_pretrained(Loader, "meta-llama/Llama-3.2-1B-Instruct", what="the policy model", key="model.path")
    with pytest.raises(OSError, match="no such local directory"):
        from_pretrained(Loader, "/no/such/dir", what="the policy model", key="model.path")


def test_decode_uses_the_cache_api_without_deprecation_warnings(llama):
    """The KV cache goes in by the keyword the installed transformers takes (no deprecated `past_key_values`), and
    the cached decode gives the same tokens as re-running the whole sequence without a cache."""
    import warnings

    import torch

    request = _request(max_tokens=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        [[out]] = llama.generate([request])
    ids = encode_prompt(llama.tokenizer, render_prompt(llama.tokenizer, request))
    with torch.inference_mode():  # greedy decode without any cache, one full forward per token
        for _ in range(out.num_tokens):
            logits = llama.model(input_ids=torch.tensor([ids]), use_cache=False).logits
            ids.append(int(logits[0, -1].argmax()))
    assert llama.tokenizer.decode(ids[-out.num_tokens:], skip_special_tokens=True) == out.text


def test_tokens_in_flight_grow_during_a_call_for_progress_lines(llama):
    """A long generate call is visible while it runs: each decoding step adds its tokens; the call's end moves them
    into the stats."""
    seen = []
    hook = llama.model.register_forward_pre_hook(lambda module, args: seen.append(llama.tokens_in_flight))
    try:
        before = llama.stats.generated_tokens
        [[out]] = llama.generate([_request(max_tokens=6)])
    finally:
        hook.remove()
    assert seen == sorted(seen) and seen[0] == 0 and seen[-1] > 0
    assert llama.tokens_in_flight == 0 and llama.stats.generated_tokens - before == out.num_tokens
