"""The real PRM families on tiny random checkpoints: exact input format token by token, read-out, memo, batching."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from conftest import compose_config  # noqa: E402
from tests.tiny_models import tiny_dirs, tiny_prm_config  # noqa: E402
from tts.config.schema import ConfigError  # noqa: E402
from tts.config.validate import validate  # noqa: E402
from tts.prms import build_prm  # noqa: E402
from tts.prms.hf_engine import token_budget_batches  # noqa: E402
from tts.prms.skywork import SkyworkConfig  # noqa: E402
from tts.prms.vllm_engine import check_classify_head  # noqa: E402

PROBLEM = "What is 1+2?"
STEPS = ["## Step 1: Add 1 and 2.\n1 + 2 = 3", "So x = 3.", "Therefore, the final answer is: $\\boxed{3}$."]
FAMILIES = {"rlhflow": "rlhflow", "math_shepherd": "math_shepherd", "qwen_prm": "qwen_prm", "skywork": "skywork"}


@pytest.fixture(scope="session")
def dirs(tmp_path_factory):
    return tiny_dirs(tmp_path_factory)


def _prm(dirs, family, *overrides):
    return build_prm(tiny_prm_config(family, dirs[FAMILIES[family]], "prm.engine.device=cpu", *overrides))


@pytest.fixture(scope="module")
def prms(dirs):
    return {family: _prm(dirs, family) for family in FAMILIES}


# ---------------------------------------------------------------------------- input formats, token by token
def test_rlhflow_format(prms):
    prm = prms["rlhflow"]
    tok = prm.tokenizer
    enc = prm.encode(PROBLEM, STEPS)
    turns = "".join(
        f"<|start_header_id|>user<|end_header_id|>\n\n{(PROBLEM + ' ' + s) if k == 0 else s}<|eot_id|>"
        f"<|start_header_id|>assistant<|end_header_id|>\n\n+<|eot_id|>"
        for k, s in enumerate(STEPS)
    )
    expected = tok("<|begin_of_text|>" + turns, add_special_tokens=False)["input_ids"]
    assert enc.ids == expected
    assert enc.ids.count(tok.bos_token_id) == 1
    plus = tok.convert_tokens_to_ids("+")
    header_end = tok.convert_tokens_to_ids("<|end_header_id|>")
    for p in enc.positions:  # read at the token that predicts the assistant "+"
        assert enc.ids[p + 1] == plus and enc.ids[p + 2] == tok.convert_tokens_to_ids("<|eot_id|>")
        assert header_end in enc.ids[p - 2:p + 1]
    assert prm.good_id == plus and tok.convert_ids_to_tokens(prm.bad_id).endswith("-")


def test_math_shepherd_format(prms):
    prm = prms["math_shepherd"]
    tok = prm.tokenizer
    enc = prm.encode(PROBLEM, STEPS)
    text = f"{PROBLEM} {STEPS[0]} ки\nStep 2: {STEPS[1]} ки\nStep 3: {STEPS[2]} ки"  # step 1 has its own header
    assert enc.ids == tok(text)["input_ids"]
    assert enc.ids[0] == tok.convert_tokens_to_ids("<s>")
    assert [tok.convert_ids_to_tokens(enc.ids[p]) for p in enc.positions] == ["ки"] * 3
    plain = prm.encode("Q", ["a", "b"])
    assert tok.decode(plain.ids, skip_special_tokens=True) == "Q Step 1: a ки\nStep 2: b ки"


def test_qwen_prm_format(prms):
    prm = prms["qwen_prm"]
    tok = prm.tokenizer
    enc = prm.encode(PROBLEM, STEPS)
    text = ("<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
            f"<|im_start|>user\n{PROBLEM}<|im_end|>\n"
            f"<|im_start|>assistant\n{'<extra_0>'.join(STEPS)}<extra_0><|im_end|>\n")
    assert enc.ids == tok(text)["input_ids"]
    assert [tok.convert_ids_to_tokens(enc.ids[p]) for p in enc.positions] == ["<extra_0>"] * 3
    assert enc.positions[-1] == len(enc.ids) - 3  # ... <extra_0> <|im_end|> \n


def test_skywork_format(prms):
    prm = prms["skywork"]
    tok = prm.tokenizer
    enc = prm.encode(PROBLEM, STEPS)
    nl = tok.encode("\n", add_special_tokens=False)[-1]
    expected = tok.encode("<|endoftext|>" + PROBLEM + "\n", add_special_tokens=False)
    positions = []
    for step in STEPS:
        expected += tok.encode(step, add_special_tokens=False) + [nl]
        positions.append(len(expected) - 1)
    assert enc.ids == expected and enc.positions == positions


# ---------------------------------------------------------------------------- read-out
@pytest.mark.parametrize("family", list(FAMILIES))
def test_one_score_per_step_in_unit_interval(prms, family):
    prm = prms[family]
    scores = prm.score([PROBLEM, "Q"], [[STEPS, STEPS[:1]], [["a"]]])
    assert [[len(s) for s in per] for per in scores] == [[3, 1], [1]]
    flat = [x for per in scores for s in per for x in s]
    assert all(0.0 < x < 1.0 for x in flat)
    assert scores[0][1][0] == pytest.approx(scores[0][0][0], abs=1e-5)  # a prefix scores like the longer solution's


@pytest.mark.parametrize("family", ["rlhflow", "math_shepherd"])
def test_two_token_read_out_matches_full_logits(prms, family):
    prm = prms[family]
    enc = prm.encode(PROBLEM, STEPS)
    ids = torch.tensor([enc.ids])
    with torch.inference_mode():
        logits = prm.engine.model(input_ids=ids).logits[0]
    expected = [torch.softmax(logits[p, [prm.good_id, prm.bad_id]], -1)[0].item() for p in enc.positions]
    got = prm._score_batch([PROBLEM], [STEPS])[0]
    assert got == pytest.approx(expected, abs=1e-5)


def test_qwen_prm_native_layout_reads_its_own_head(dirs):
    from safetensors import safe_open

    prm = _prm({"qwen_prm": dirs["qwen_prm_native"]}, "qwen_prm")
    enc = prm.encode(PROBLEM, STEPS)
    ids = torch.tensor([enc.ids])
    with torch.inference_mode():
        hidden = prm.engine.model.backbone(input_ids=ids).last_hidden_state[0]
    with safe_open(str(dirs["qwen_prm_native"] / "model.safetensors"), framework="pt") as f:
        w0, b0, w2, b2 = (f.get_tensor(k) for k in ("score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias"))
    logits = torch.relu(hidden @ w0.T + b0) @ w2.T + b2
    expected = [torch.softmax(logits[p], -1)[1].item() for p in enc.positions]
    assert prm._score_batch([PROBLEM], [STEPS])[0] == pytest.approx(expected, abs=1e-5)


def test_qwen_prm_reads_class_one_at_separators(prms):
    prm = prms["qwen_prm"]
    enc = prm.encode(PROBLEM, STEPS)
    with torch.inference_mode():
        logits = prm.engine.model(input_ids=torch.tensor([enc.ids])).logits[0]
    expected = [torch.softmax(logits[p], -1)[1].item() for p in enc.positions]
    assert prm._score_batch([PROBLEM], [STEPS])[0] == pytest.approx(expected, abs=1e-5)


def test_math_shepherd_and_rlhflow_share_one_read_out():
    """The two "+"/"-" families differ only in their input format (tts/prms/two_token.py holds the read-out)."""
    from tts.prms.math_shepherd import MathShepherdPRM
    from tts.prms.rlhflow import RLHFlowPRM
    from tts.prms.two_token import TwoTokenPRM

    for hook in ("token_scores", "cache_module", "vllm_pooling"):
        assert getattr(MathShepherdPRM, hook) is getattr(RLHFlowPRM, hook) is getattr(TwoTokenPRM, hook)


def test_a_family_runs_on_the_engine_it_is_given(prms):
    """An engine built around a model already in memory (benchmarks do) scores as the one the config builds."""
    from tts.prms.hf_engine import HFPRMEngine
    from tts.prms.rlhflow import RLHFlowPRM

    built = prms["rlhflow"]
    engine = HFPRMEngine(built.config.engine, built.engine.model)
    given = RLHFlowPRM(built.config, tokenizer=built.tokenizer, engine=engine)
    assert given.engine is engine
    assert given._score_batch([PROBLEM], [STEPS]) == built._score_batch([PROBLEM], [STEPS])


# ---------------------------------------------------------------------------- memo, budget, tokens
@pytest.mark.parametrize("family", list(FAMILIES))
def test_memo_second_call_encodes_nothing(dirs, family):
    prm = _prm(dirs, family)
    first = prm.score([PROBLEM], [[STEPS]])
    tokens = prm.stats.tokens
    assert tokens == len(prm.encode(PROBLEM, STEPS).ids)
    again = prm.score([PROBLEM], [[STEPS, STEPS[:2]]])  # the prefix was scored with the full solution
    assert again[0][0] == first[0][0]
    assert prm.stats.tokens == tokens and prm.stats.memo_hits == 2
    prm.score([PROBLEM], [[STEPS[:2] + ["New step."]]])
    assert prm.stats.tokens > tokens


@pytest.mark.parametrize("family", list(FAMILIES))
def test_token_budget_batching_gives_the_same_scores(dirs, family):
    solutions = [STEPS[:k] for k in (1, 2, 3)] + [["x = 1", "y = 2"], ["A long step " * 5]]
    # whole-sequence scoring (the candidates share a prefix: tests/test_hf_prm_prefix.py covers scoring on top of it)
    whole = "prm.engine.enable_prefix_caching=false"
    big = _prm(dirs, family, "prm.engine.batch_tokens=100000", whole)
    small = _prm(dirs, family, "prm.engine.batch_tokens=80", whole)
    a = big._score_batch([PROBLEM] * len(solutions), solutions)
    b = small._score_batch([PROBLEM] * len(solutions), solutions)
    assert big.engine.forward_calls == 1 and small.engine.forward_calls > 1
    for x, y in zip(a, b):
        assert x == pytest.approx(y, abs=1e-4)  # padding never changes a score
    assert big.stats.tokens == small.stats.tokens


def test_token_budget_batches():
    assert token_budget_batches([10, 10, 10], 30) == [[0, 1, 2]]
    assert token_budget_batches([10, 10, 10], 25) == [[0, 1], [2]]
    assert token_budget_batches([50, 5, 5], 20) == [[0], [1, 2]]  # too long alone: its own batch
    batches = token_budget_batches([7, 3, 9, 1, 4, 8], 16)
    assert sorted(i for b in batches for i in b) == list(range(6))


def test_empty_step_is_refused(prms):
    with pytest.raises(ValueError, match="empty"):
        prms["rlhflow"].score([PROBLEM], [[["a", "  "]]])


def test_vllm_classify_without_head_tokens_is_refused():
    with pytest.raises(ValueError, match="uninitialised"):
        check_classify_head({"convert": "classify", "runner": "pooling"})
    check_classify_head({"convert": "classify", "hf_overrides": {"classifier_from_token": ["-", "+"],
                                                                 "method": "from_2_way_softmax"}})


def test_skywork_refuses_vllm(dirs):
    cfg = compose_config(["prm=skywork-1.5b", "prm/engine=vllm", f"prm.path={dirs['skywork']}"])
    with pytest.raises(ConfigError, match=r"config key 'prm\.engine': .*hf only"):
        validate(cfg)
    # the same config on hf is accepted: the refusal is about the engine
    cfg = compose_config(["prm=skywork-1.5b", "prm/engine=hf", f"prm.path={dirs['skywork']}"])
    assert isinstance(validate(cfg).prm, SkyworkConfig)
