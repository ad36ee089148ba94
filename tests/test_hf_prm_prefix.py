"""hf PRMs compute a token prefix shared by several candidates of a call once (`prm.engine.enable_prefix_caching`,
the default).

Every family on tiny random checkpoints: beam-search-like calls (a problem's parents, then their children and a fresh
candidate) give the scores of whole-sequence scoring, count the shared prefix as cached, and stay within the token
budget when groups must be split; the KV cache goes in through transformers' current API (no deprecation warning).
"""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.tiny_models import tiny_dirs, tiny_prm_config  # noqa: E402
from tts.prms import build_prm  # noqa: E402
from tts.prms.prefix_groups import PrefixGroup, best_runs, plan_prefix_groups  # noqa: E402

PROBLEM = ("Solve the following math problem efficiently and clearly. Compute the sum of 12 and 30, then subtract 7 "
           "from it. What is the result?")
OTHER = "What is 1+2?"
PARENT_A = ["## Step 1: Compute the sum of 12 and 30.", "12 + 30 = 42."]
PARENT_B = ["Let x = 3 + 4."]
CHILDREN = ["So 42 - 7 = 35.", "Then x - 2 = 5, and we find that the result is 7.",
            "Therefore, the final answer is: $\\boxed{35}$. I hope it is correct."]
# first call: every candidate new (known=0); a parent and its own first step are both there (one is a token prefix
# of the other for most formats); the second call: children of both parents (known>0), a fresh candidate, a lone
# candidate of another problem
FIRST_CALL = ([PROBLEM, OTHER], [[PARENT_A, PARENT_A[:1], PARENT_B], [["x = 1"]]])
SECOND_CALL = ([PROBLEM, OTHER],
               [[PARENT_A + [c] for c in CHILDREN] + [PARENT_B + [c] for c in CHILDREN] + [["A new first step."]],
                [["x = 1", "y = 2"]]])
# (family, tiny checkpoint): qwen_prm as a token-classification model and as backbone + our head module
CHECKPOINTS = {"rlhflow": ("rlhflow", "rlhflow"), "math_shepherd": ("math_shepherd", "math_shepherd"),
               "qwen_prm": ("qwen_prm", "qwen_prm"), "qwen_prm_head": ("qwen_prm", "qwen_prm_native"),
               "skywork": ("skywork", "skywork")}


@pytest.fixture(scope="session")
def dirs(tmp_path_factory):
    return tiny_dirs(tmp_path_factory)


def _prm(dirs, name, *overrides):
    family, checkpoint = CHECKPOINTS[name]
    return build_prm(tiny_prm_config(family, dirs[checkpoint], "prm.engine.device=cpu", *overrides))


def _score_without_deprecations(prm, call):
    """`prm.score(*call)` with transformers' deprecation warnings (FutureWarning, DeprecationWarning) as errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        return prm.score(*call)


def _distinct_prefix_tokens(sequences) -> int:
    """Positions of the token trie of `sequences`: no scorer can compute fewer tokens and read them all."""
    return len({tuple(ids[:k]) for ids in sequences for k in range(1, len(ids) + 1)})


def _new_ids(prm, call):
    """Token ids of the candidates of `call` the memo does not hold yet (what the next score call encodes)."""
    return [prm.encode(problem, steps).ids for problem, solutions in zip(*call) for steps in solutions
            if (problem, tuple(steps)) not in prm._memo]


def _record_passes(prm) -> list[tuple[int, int, int]]:
    """Watch `prm`'s forward passes: per pass (rows, attention width: cached prefix + new tokens, tokens computed:
    the new tokens that are not padding)."""
    passes = []
    token_scores = prm.token_scores

    def recording(model, inputs):
        mask, new = inputs["attention_mask"], inputs["input_ids"].shape[1]
        passes.append((mask.shape[0], mask.shape[1], int(mask[:, -new:].sum())))
        return token_scores(model, inputs)

    prm.token_scores = recording
    return passes


def _assert_close(got, expected):
    for got_problem, expected_problem in zip(got, expected):
        for got_steps, expected_steps in zip(got_problem, expected_problem):
            assert got_steps == pytest.approx(expected_steps, abs=1e-4)


# ---------------------------------------------------------------------------- scores and accounting, every family
@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_shared_prefix_scores_equal_whole_sequence_scores(dirs, name):
    whole = _prm(dirs, name, "prm.engine.enable_prefix_caching=false")
    shared = _prm(dirs, name)  # the default: on
    passes = _record_passes(shared)
    for call in (FIRST_CALL, SECOND_CALL):
        new_ids = _new_ids(shared, call)
        given, cached = shared.stats.tokens, shared.stats.cached_tokens
        passes.clear()
        _assert_close(_score_without_deprecations(shared, call), whole.score(*call))
        computed = (shared.stats.tokens - given) - (shared.stats.cached_tokens - cached)
        assert computed == sum(tokens for _, _, tokens in passes)  # computed_tokens: what the passes really ran
        assert shared.stats.tokens - given == sum(len(ids) for ids in new_ids)  # tokens given: whole candidates
        assert shared.stats.cached_tokens > cached  # each call shares the prompt, the second also the parents
        assert _distinct_prefix_tokens(new_ids) <= computed < sum(len(ids) for ids in new_ids)
    assert shared.stats.tokens == whole.stats.tokens and whole.stats.cached_tokens == 0


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_split_groups_give_the_same_scores_within_the_budget(dirs, name):
    """A budget so small that a group's members (and the groups' prefixes) need several passes: same scores, the
    prefix still computed once (same cached tokens), every pass within the budget unless a sequence is alone."""
    roomy = _prm(dirs, name)
    longest = max(len(ids) for ids in _new_ids(roomy, SECOND_CALL))
    tight = _prm(dirs, name, f"prm.engine.batch_tokens={longest + 8}")
    passes = _record_passes(tight)
    for call in (FIRST_CALL, SECOND_CALL):
        _assert_close(_score_without_deprecations(tight, call), roomy.score(*call))
    assert tight.engine.forward_calls > roomy.engine.forward_calls
    assert tight.stats.cached_tokens == roomy.stats.cached_tokens > 0
    assert all(rows == 1 or rows * width <= tight.engine.config.batch_tokens for rows, width, _ in passes)


# ---------------------------------------------------------------------------- the plan
def test_plan_groups_children_by_parent_and_keeps_problems_apart():
    prompt = list(range(100, 120))
    parent_a, parent_b = prompt + list(range(30)), prompt + list(range(50, 80))  # longer than the prompt
    sequences = [parent_a + [10], parent_b + [11, 12], parent_a + [13, 14], parent_b + [15], prompt + [9], [5, 6]]
    groups = plan_prefix_groups(["p"] * 5 + ["q"], sequences, min_shared=4)
    by_members = {tuple(sorted(g.members)): g.shared for g in groups}
    assert by_members == {(0, 2): len(parent_a), (1, 3): len(parent_b), (4,): 0, (5,): 0}


def test_plan_takes_the_prompt_when_parents_are_short():
    """Many candidates with tiny parents save more by sharing the prompt across all of them."""
    prompt = list(range(100, 140))
    sequences = [prompt + [p, c] for p in (1, 2) for c in (3, 4, 5)]
    [group] = plan_prefix_groups(["p"] * 6, sequences, min_shared=4)
    assert sorted(group.members) == list(range(6)) and group.shared == len(prompt)


def test_plan_leaves_short_shared_prefixes_alone_and_keeps_whole_prefixes():
    assert [g.shared for g in best_runs([[1, 2, 3], [1, 2, 4]], min_shared=3)] == [0, 0]
    # a candidate that is itself the shared prefix of another is a member with nothing of its own left
    assert best_runs([[1, 2, 3, 4], [1, 2, 3]], min_shared=2) == [PrefixGroup([1, 0], 3)]
    assert best_runs([], min_shared=1) == []
