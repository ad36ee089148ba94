"""The simulated policy's token confidence: deterministic arrays, a drop after errors that DeepConf can use, and none
at all with `confidence_signal=0`."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tts.backends.base import GenerationRequest
from tts.backends.sim import SimPolicy, SimPolicyConfig, is_right
from tts.confidence.measures import summarize
from tts.data.synthetic import generate_problems

PROBLEMS = generate_problems(60, seed=11)
MEASURES = ("mean", "lowest_group", "bottom10", "tail", "self_certainty")


def _requests(seed, n=8, k=5, problems=PROBLEMS, **kwargs):
    return [
        GenerationRequest(messages=[{"role": "user", "content": p.problem}], n=n, seed=seed, top_logprobs=k, **kwargs)
        for p in problems
    ]


def _by_correctness(policy, outputs, window=32):
    """Every measure of every output, split into right and wrong traces."""
    right: dict[str, list[float]] = {m: [] for m in MEASURES}
    wrong: dict[str, list[float]] = {m: [] for m in MEASURES}
    for problem, samples in zip(PROBLEMS, outputs):
        plan = policy.plan(problem.problem)
        for output in samples:
            summary = summarize(output.top_logprobs, window=window, tail=window)
            side = right if is_right(plan, output.text) else wrong
            for m in MEASURES:
                side[m].append(float(summary[m]))  # type: ignore[arg-type]
    return right, wrong


def test_arrays_have_the_backend_shape_and_are_deterministic_per_seed_and_sample():
    policy = SimPolicy(SimPolicyConfig())
    a = policy.generate(_requests(0))
    b = SimPolicy(SimPolicyConfig()).generate(_requests(0))
    c = policy.generate(_requests(1))
    for sa, sb in zip(a, b):
        for oa, ob in zip(sa, sb):
            assert oa.top_logprobs.shape == (oa.num_tokens, 5) and oa.top_logprobs.dtype == np.float32
            assert np.all(np.diff(oa.top_logprobs, axis=1) <= 0)  # rows descending
            assert np.all(np.logaddexp.reduce(oa.top_logprobs.astype(np.float64), axis=1) <= 1e-6)  # probabilities
            np.testing.assert_array_equal(oa.top_logprobs, ob.top_logprobs)
    assert any(not np.array_equal(oa.top_logprobs, oc.top_logprobs) for sa, sc in zip(a, c) for oa, oc in zip(sa, sc))
    # samples of one request differ from one another
    assert len({float(o.top_logprobs[0, 1]) for o in a[0]}) == len(a[0])


def test_asking_for_logprobs_changes_no_text_and_none_are_returned_unasked():
    policy = SimPolicy(SimPolicyConfig())
    with_k = policy.generate(_requests(3, k=5))
    without = policy.generate(_requests(3, k=0))
    assert [[o.text for o in s] for s in with_k] == [[o.text for o in s] for s in without]
    assert all(o.top_logprobs is None for s in without for o in s)


def test_truncated_and_greedy_outputs_carry_arrays_of_their_token_count():
    policy = SimPolicy(SimPolicyConfig())
    short = policy.generate(_requests(0, n=2, max_tokens=20))
    assert all(o.finish_reason == "length" and o.top_logprobs.shape == (20, 5) for s in short for o in s)
    greedy = policy.generate(_requests(0, n=2, temperature=0.0))
    for samples in greedy:
        np.testing.assert_array_equal(samples[0].top_logprobs, samples[1].top_logprobs)


def test_review_and_revision_prompts_answer_with_arrays_too():
    policy = SimPolicy(SimPolicyConfig())
    problem = PROBLEMS[0].problem
    revision = GenerationRequest(
        messages=[{"role": "user", "content": f"<problem>{problem}</problem>\n<attempt>x \\boxed{{1}}</attempt>"}],
        n=2,
        top_logprobs=3,
    )
    for output in policy.generate([revision])[0]:
        assert output.top_logprobs.shape == (output.num_tokens, 3)


def test_without_signal_every_row_is_fixed_by_a_draw_the_text_does_not_use():
    """Exact independence by construction: with confidence_signal=0, a policy that writes other solutions (another
    skill, so other traces are right) returns the same row for the same seed, problem and sample index, and every row
    of an output is that one row, so no measure can depend on correctness, length or difficulty."""
    weak = SimPolicy(SimPolicyConfig(confidence_signal=0.0, skill=0.0))
    strong = SimPolicy(SimPolicyConfig(confidence_signal=0.0, skill=3.0))
    a, b = weak.generate(_requests(5)), strong.generate(_requests(5))
    texts_differ = 0
    for sa, sb in zip(a, b):
        for oa, ob in zip(sa, sb):
            assert np.all(oa.top_logprobs == oa.top_logprobs[0]) and np.all(ob.top_logprobs == ob.top_logprobs[0])
            np.testing.assert_array_equal(oa.top_logprobs[0], ob.top_logprobs[0])
            texts_differ += oa.text != ob.text
    assert texts_differ > 100  # the two policies did write different (right and wrong) solutions


def _ks(x: list[float], y: list[float]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic."""
    grid = np.sort(np.concatenate([x, y]))
    fx = np.searchsorted(np.sort(x), grid, side="right") / len(x)
    fy = np.searchsorted(np.sort(y), grid, side="right") / len(y)
    return float(np.max(np.abs(fx - fy)))


@pytest.mark.parametrize("signal", [0.0, 0.6])
def test_right_and_wrong_measures_have_one_distribution_only_without_signal(signal):
    policy = SimPolicy(SimPolicyConfig(confidence_signal=signal))
    right: dict[str, list[float]] = {m: [] for m in MEASURES}
    wrong: dict[str, list[float]] = {m: [] for m in MEASURES}
    for seed in range(3):
        r, w = _by_correctness(policy, policy.generate(_requests(seed, n=16)))
        for m in MEASURES:
            right[m] += r[m]
            wrong[m] += w[m]
    n, m_ = len(right["mean"]), len(wrong["mean"])
    assert n > 300 and m_ > 300
    # KS critical value at alpha = 0.001: 1.95 sqrt((n + m) / (n m))
    critical = 1.95 * math.sqrt((n + m_) / (n * m_))
    for measure in MEASURES:
        statistic = _ks(right[measure], wrong[measure])
        if signal == 0.0:
            assert statistic < critical, (measure, statistic, critical)
        else:
            assert statistic > 2 * critical and np.mean(right[measure]) > np.mean(wrong[measure]), measure


def test_signal_must_not_be_negative():
    from tts.config.schema import ConfigError

    with pytest.raises(ConfigError, match="confidence_signal"):
        SimPolicyConfig(confidence_signal=-0.1).check(None)  # type: ignore[arg-type]


def test_with_the_default_signal_deepconf_beats_majority_at_16(tmp_path):
    """The default world, end to end over three seeds: DeepConf's filtered, confidence-weighted vote beats plain
    majority (on average, and never loses in one seed); with the signal off, keeping the most confident 10% is no
    better than one sample and loses to majority."""
    from conftest import compose_config

    from tts.pipeline import run

    on, off = [], []
    for seed in range(3):
        base = ["n=16", "dataset.num_problems=120", f"seed={seed}", "logger=none"]
        on.append(run(compose_config(base), run_dir=tmp_path / f"on{seed}"))
        off.append(run(compose_config([*base, "model.backend.confidence_signal=0"]), run_dir=tmp_path / f"off{seed}"))
    for eta in (10, 90):
        gains = [m[f"acc/deepconf{eta}@16"] - m["acc/maj@16"] for m in on]
        assert min(gains) >= 0 and np.mean(gains) > 0.02, (eta, gains)
    for with_signal, without in zip(on, off):
        assert without["acc/maj@16"] == with_signal["acc/maj@16"]  # the texts are the same: only the arrays changed
        assert without["acc/deepconf10@16"] < without["acc/maj@16"]


@pytest.mark.parametrize("strategy", ["beam", "dvts", "rebase"])
def test_tree_completions_carry_the_confidence_of_the_outputs_they_are_made_of(tmp_path, strategy):
    """A tree search's completion is one output per step: its step figures are each output's own (exact), and with
    windows longer than the trace its last step holds the trace's mean."""
    from conftest import compose_config

    from tts.pipeline import run
    from tts.store.writer import RunDirectory

    run(compose_config([f"strategy={strategy}", "n=4", "dataset.num_problems=3", "logger=none"]), run_dir=tmp_path)
    completions = [c for r in RunDirectory(tmp_path).records() for c in r.completions]
    assert completions and all(c.confidence is not None for c in completions)
    for c in completions:
        assert len(c.confidence["step_lowest"]) == len(c.steps)
        assert c.confidence["step_lowest"][-1] == pytest.approx(c.confidence["mean"], abs=2e-5)
    # outputs of different steps have their own sharpness: a completion's steps differ in confidence
    assert any(len(set(c.confidence["step_lowest"])) > 1 for c in completions)
