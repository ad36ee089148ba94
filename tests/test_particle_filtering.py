"""Particle filtering: its resampling draws, what it does with finished particles, that it is reproducible however
problems are batched, and that it gains nothing over best-of-N when the PRM carries no information.

The invariants it shares with the other tree searches (exactly N finished completions, exact compute, one backend
and one PRM call per iteration, determinism per seed, config refusals) are in tests/test_search.py."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import compose_config
from test_search import CountingPRM, RaggedPolicy, RecordingPolicy, _search
from tts.config.validate import validate
from tts.data import load_problems
from tts.data.problem import Problem
from tts.pipeline import run
from tts.prms import build_prm
from tts.search import build_strategy
from tts.search.base import RunSpec
from tts.search.particle_filtering import ParticleState, log_weights, normalized, resample
from tts.search.tree import Expansion, Node

WEIGHTS = np.array([0.5, 0.25, 0.15, 0.07, 0.03])


@pytest.mark.parametrize("method", ["multinomial", "systematic"])
def test_resampling_is_unbiased(method):
    rng = np.random.default_rng(0)
    k, draws = 8, 4000
    counts = np.stack([np.bincount(resample(WEIGHTS, k, method, rng), minlength=len(WEIGHTS)) for _ in range(draws)])
    assert (counts.sum(axis=1) == k).all()
    # expected copies of particle i: k * w_i, within 4 standard errors of the mean over the draws
    sem = counts.std(axis=0) / np.sqrt(draws) + 1e-9
    assert np.all(np.abs(counts.mean(axis=0) - k * WEIGHTS) < 4 * sem + 1e-3)


def test_systematic_resampling_has_lower_variance():
    rng = np.random.default_rng(1)
    k = 8

    def counts(method):
        return np.stack([np.bincount(resample(WEIGHTS, k, method, rng), minlength=len(WEIGHTS)) for _ in range(2000)])

    systematic, multinomial = counts("systematic"), counts("multinomial")
    # each systematic count is the floor or the ceiling of k * w: never further from the expectation than 1
    assert np.all(np.abs(systematic - k * WEIGHTS) < 1.0)
    assert (systematic.var(axis=0) < multinomial.var(axis=0)).all()


def test_weights_follow_the_reward_transform_and_temperature():
    rewards = np.array([0.9, 0.5, 0.1])
    logit = normalized(log_weights(rewards, "logit", 1.0))
    assert logit == pytest.approx([9 / 10.111, 1 / 10.111, (1 / 9) / 10.111], rel=1e-3)  # proportional to r / (1-r)
    assert normalized(log_weights(rewards, "identity", 1.0)) == pytest.approx(np.exp(rewards) / np.exp(rewards).sum())
    hot = normalized(log_weights(rewards, "logit", 1e6))
    cold = normalized(log_weights(rewards, "logit", 1e-3))
    assert hot == pytest.approx(np.full(3, 1 / 3), abs=1e-4) and cold[0] == pytest.approx(1.0)
    assert normalized(np.array([np.nan, 0.0])) == pytest.approx([0.0, 1.0])  # a NaN score gets no mass


def _state(n=4, seed=0):
    cfg = validate(compose_config(["strategy=particle_filtering", f"n={n}", f"seed={seed}", "logger=none"]))
    return ParticleState(Problem(unique_id="p/1", problem="x", answer="1"), cfg.strategy, RunSpec.of(cfg))


def test_finished_particles_keep_their_weight_and_are_not_extended():
    state = _state(n=4)
    done = Node(text="done", steps=["done"], scores=[0.999], finish_reason="stop", value=0.999)
    alive = Node(text="a", steps=["a"], scores=[0.5], value=0.5)
    state.particles = [done, alive, alive, alive]
    poor = [Node(text=f"a{i}", steps=["a", f"{i}"], scores=[0.5, 0.001], value=0.001) for i in range(3)]
    state.update([(Expansion(alive, 3), poor)])
    # the finished particle was in the pool with its own weight (logit 6.9 against -6.9): every slot copies it
    assert state.particles == [done] * 4
    assert state.done and state.frontier == []
    completions = state.result().completions
    assert len(completions) == 4 and all(c.finish_reason == "stop" and c.text == "done" for c in completions)


def test_copies_of_a_particle_are_one_request_and_finished_ones_are_never_extended():
    cfg = validate(compose_config(["strategy=particle_filtering", "n=16", "dataset.num_problems=4", "logger=none"]))
    problems = load_problems(cfg.dataset)
    policy = RecordingPolicy(RaggedPolicy())  # half the samples box an answer at each step: ragged finishing
    outputs = build_strategy(cfg.strategy).search(problems, policy, CountingPRM(build_prm(cfg.prm)), RunSpec.of(cfg))
    finished_texts = {c.text for o in outputs for c in o.completions}
    for call in policy.log:
        prefixes = [(request.problem, request.prefix) for request, _ in call]
        assert len(prefixes) == len(set(prefixes))  # copies of one particle: one request for several samples
        for request, _ in call:
            assert request.prefix not in finished_texts  # a finished particle never writes again
            assert sum(r.n for r, _ in call if r.problem == request.problem) <= cfg.n
    for output in outputs:
        assert len(output.completions) == 16
        assert all(c.finish_reason in ("eos", "stop") for c in output.completions)


def test_same_particles_however_problems_are_batched():
    def texts(size):
        return [[c.text for c in o.completions] for o in _search("particle_filtering",
                                                                [f"strategy.search_batch_size={size}"])[4]]

    assert texts("null") == texts(1)


def test_resampling_concentrates_particles():
    def distinct(temperature):
        outputs = _search("particle_filtering", [f"strategy.weight_temperature={temperature}"], n=16)[4]
        return sum(len({c.text for c in o.completions}) for o in outputs)

    assert distinct(0.05) < distinct(100.0)


def _accuracy(strategy, prm, tmp_path, n=8, problems=80):
    overrides = [f"strategy={strategy}", f"n={n}", f"dataset.num_problems={problems}", "logger=none", *prm]
    metrics = run(compose_config(overrides), run_dir=tmp_path / strategy)
    return {agg: metrics[f"acc/{agg}@{n}"] for agg in ("weighted", "maj", "naive")}


def test_no_gain_over_best_of_n_with_an_uninformative_prm(tmp_path):
    """A PRM whose scores are pure noise (discrimination 0) cannot guide the particles: whatever PF gains over
    best-of-N must then be noise. Two standard errors of a difference of two accuracies on 80 problems is ~0.15; the
    informative PRM (noise 0) shows the same comparison does move when the weights carry information."""
    null = ["prm.discrimination=0", "prm.noise=3.0"]
    pf, bon = _accuracy("particle_filtering", null, tmp_path / "null"), _accuracy("best_of_n", null, tmp_path / "null")
    for agg in ("weighted", "maj", "naive"):
        assert pf[agg] <= bon[agg] + 0.15, (agg, pf, bon)
    sharp = ["prm.discrimination=4", "prm.noise=0.1"]
    pf, bon = _accuracy("particle_filtering", sharp, tmp_path / "sharp"), _accuracy("best_of_n", sharp, tmp_path / "sharp")
    assert pf["maj"] > bon["maj"] + 0.15, (pf, bon)
