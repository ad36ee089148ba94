"""The process-level model cache: one object per slot, reused while the building config stays the same, closed
before a different one is built and at the end of the process; the sim world is never shared."""

from __future__ import annotations

import tts.config.schema  # noqa: F401 - registers the schemas the YAML files extend
from conftest import typed_config
from tts.backends.base import GenerationOutput, GenerationRequest, PolicyBackend
from tts.runtime.model_cache import CACHE, ModelCache, acquire_policy, acquire_prm, config_key, release_job_models
from tts.prms.base import ProcessRewardModel


class Model:
    def __init__(self, name: str, log: list) -> None:
        self.name, self.log = name, log
        log.append(("build", name))

    def close(self) -> None:
        self.log.append(("close", self.name))


def test_same_key_reuses_a_new_key_closes_the_old_one_first():
    cache, log = ModelCache(), []
    a = cache.get("policy", "A", lambda: Model("a", log))
    assert cache.get("policy", "A", lambda: Model("again", log)) is a
    b = cache.get("policy", "B", lambda: Model("b", log))
    p = cache.get("prm", "P", lambda: Model("p", log))
    assert log == [("build", "a"), ("close", "a"), ("build", "b"), ("build", "p")]  # a is freed before b loads
    assert cache.builds == {"policy": 2, "prm": 1} and cache.holds(b) and cache.holds(p) and not cache.holds(a)
    cache.release()  # what runs at process exit
    assert log[-2:] == [("close", "b"), ("close", "p")] and not cache.holds(b)


def test_the_key_is_the_resolved_config():
    one = typed_config(["model=llama-3.2-1b", "model.path=/m", "seed=1"])
    two = typed_config(["model=llama-3.2-1b", "model.path=/m", "seed=2"])
    other = typed_config(["model=llama-3.2-1b", "model.path=/m", "model.backend.max_model_len=2048"])
    assert config_key(one.model) == config_key(two.model) != config_key(other.model)


def test_the_prm_key_includes_its_engine():
    """A PRM is rebuilt when its engine or an engine knob changes, and reused when only the run around it does."""
    def key(*overrides):
        return config_key(typed_config(["prm=rlhflow-8b", "prm.path=/p", *overrides]).prm)

    assert key("seed=1") == key("seed=2") != key("prm.engine.batch_tokens=4096")
    assert key() != key("prm/engine=vllm") != key("prm/engine=vllm", "prm.engine.block_size=32")


def test_the_sim_world_is_built_per_job_and_closed_by_it():
    cfg = typed_config([])
    policy, prm = acquire_policy(cfg.model, cfg.seed), acquire_prm(cfg.prm)
    assert acquire_policy(cfg.model, cfg.seed) is not policy and acquire_prm(cfg.prm) is not prm
    closed = []
    policy.close, prm.close = (lambda: closed.append("policy")), (lambda: closed.append("prm"))
    release_job_models(policy, prm, None)
    assert closed == ["policy", "prm"]


class CachingPolicy(PolicyBackend):
    """A shared-backend policy that counts how often its prefix cache is emptied."""

    resets = 0

    def _generate(self, requests):
        return [[GenerationOutput("x", "eos", 1)] * r.n for r in requests]

    def reset_prefix_cache(self) -> None:
        self.resets += 1


class CachingPRM(ProcessRewardModel):
    """A shared-backend PRM that counts how often its prefix cache is emptied."""

    resets = 0

    def _score_batch(self, problems, solutions):
        self.stats.tokens += sum(len(s) for s in solutions)
        return [[0.5] * len(s) for s in solutions]

    def reset_prefix_cache(self) -> None:
        self.resets += 1


def _acquire_both(cfg):
    return (acquire_policy(cfg.model, cfg.seed, lambda model_cfg, seed: CachingPolicy()),
            acquire_prm(cfg.prm, lambda prm_cfg: CachingPRM()))


def test_a_reused_model_starts_every_job_as_a_fresh_one():
    """Counters, PRM memo and prefix caches are emptied for each job, so what a job records (tokens, prefix-cache
    hits) does not depend on the jobs that ran before it in the process."""
    cfg = typed_config(["model=llama-3.2-1b", "model.path=/m", "prm=rlhflow-8b", "prm.path=/p", "prm/engine=vllm"])
    try:
        policy, prm = _acquire_both(cfg)
        assert (policy.resets, prm.resets) == (1, 1)
        policy.generate([GenerationRequest([{"role": "user", "content": "q"}], n=2)])  # the first job's work
        prm.score(["q"], [[["a", "b"]]])
        assert policy.stats.calls and prm.stats.tokens and prm._memo
        again_policy, again_prm = _acquire_both(cfg)
        assert again_policy is policy and again_prm is prm  # the next job: the same objects...
        assert (policy.resets, prm.resets) == (2, 2)  # ...their prefix caches emptied again
        assert policy.stats.calls == prm.stats.tokens == len(prm._memo) == 0
    finally:
        CACHE.release()
