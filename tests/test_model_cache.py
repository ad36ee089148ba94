"""The process-level model cache: one object per slot, reused while the building config stays the same, closed
before a different one is built and at the end of the process; the sim world is never shared."""

from __future__ import annotations

import tts.config  # noqa: F401 - registers the schemas the YAML files extend
from tts.model_cache import ModelCache, acquire_policy, acquire_prm, config_key, release_job_models


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


def test_the_key_is_the_resolved_config(make_cfg):
    one = make_cfg(["model=llama-3.2-1b", "model.path=/m", "seed=1"])
    two = make_cfg(["model=llama-3.2-1b", "model.path=/m", "seed=2"])
    other = make_cfg(["model=llama-3.2-1b", "model.path=/m", "model.max_model_len=2048"])
    assert config_key(one.model) == config_key(two.model) != config_key(other.model)


def test_the_sim_world_is_built_per_job_and_closed_by_it(make_cfg):
    cfg = make_cfg([])
    policy, prm = acquire_policy(cfg.model, cfg.seed), acquire_prm(cfg.prm)
    assert acquire_policy(cfg.model, cfg.seed) is not policy and acquire_prm(cfg.prm) is not prm
    closed = []
    policy.close, prm.close = (lambda: closed.append("policy")), (lambda: closed.append("prm"))
    release_job_models(policy, prm, None)
    assert closed == ["policy", "prm"]
