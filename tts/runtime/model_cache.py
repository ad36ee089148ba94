"""Models built once per process: the jobs of a one-process sweep share the loaded policy and PRM.

    python tts/main.py -m hydra/launcher=basic seed=0,1,2 model=llama-3.2-1b prm=rlhflow-8b   # loads each once

Hydra's basic launcher runs every job of a sweep in one process, one after another; building a vLLM engine or loading
an 8B PRM per job costs more than many jobs' search, and freeing a vLLM engine's GPU memory between jobs is unreliable.
So `run` asks this cache instead of building: one slot for the policy and one for the PRM, each keyed by the resolved
config group that builds it (`model`, `prm`). The next job gets the same object when its config is the same (its
counters reset, its PRM memo and vLLM prefix caches empty, so that a job computes and records what it would in a
process of its own), and the old one is closed first when it needs a different one. Whatever is held is closed at
process exit.

Only components whose config says `shared` are kept (hf, vllm: expensive to build, and every request carries its own
seed, so the build seed of a real model changes nothing). The sim world and a served policy (openai) are built per
job and closed by it.
"""

from __future__ import annotations

import atexit
import dataclasses
import gc
import json
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any, Optional

from tts.backends import build_policy as default_build_policy
from tts.backends.base import GenerationStats, PolicyBackend
from tts.config.schema import ModelConfig, PRMConfig
from tts.prms import build_prm as default_build_prm
from tts.prms.base import PRMStats, ProcessRewardModel

log = logging.getLogger(__name__)


def config_key(config: Any) -> str:
    """The identity of a model: its typed config (nested ones included), as canonical JSON."""
    return json.dumps(dataclasses.asdict(config), sort_keys=True, default=str)


class ModelCache:
    """At most one object per slot, rebuilt only when the key changes. `builds` counts real builds per slot."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[str, Any]] = {}
        self.builds: Counter[str] = Counter()

    def get(self, slot: str, key: str, build: Callable[[], Any]) -> Any:
        held = self._held.get(slot)
        if held is not None and held[0] == key:
            log.info("model cache: reusing the %s", slot)
            return held[1]
        self.release(slot)  # free the old model before loading the new one
        obj = build()
        self._held[slot] = (key, obj)
        self.builds[slot] += 1
        log.info("model cache: built the %s", slot)
        return obj

    def holds(self, obj: Any) -> bool:
        return any(held is obj for _, held in self._held.values())

    def release(self, slot: str | None = None) -> None:
        """Close the object in `slot` (every slot when None)."""
        for name in [slot] if slot else list(self._held):
            held = self._held.pop(name, None)
            if held is not None:
                try:
                    held[1].close()
                finally:
                    gc.collect()
                log.info("model cache: closed the %s", name)


CACHE = ModelCache()
atexit.register(CACHE.release)


def acquire_policy(
    model: ModelConfig, seed: int, build_policy: Optional[Callable[[ModelConfig, int], PolicyBackend]] = None
) -> PolicyBackend:
    """The policy of `model` (built by `build_policy`, default `tts.backends.build_policy`), from the cache when
    its backend is shared; counters and prefix cache reset for this job."""
    build_policy = build_policy or default_build_policy
    if not model.backend.shared:
        return build_policy(model, seed)
    policy = CACHE.get("policy", config_key(model), lambda: build_policy(model, seed))
    policy.stats = GenerationStats()
    policy.reset_prefix_cache()
    return policy


def acquire_prm(
    config: PRMConfig, build_prm: Optional[Callable[[PRMConfig], ProcessRewardModel]] = None
) -> ProcessRewardModel:
    """The PRM of `config` (built by `build_prm`, default `tts.prms.build_prm`), from the cache when it is shared;
    counters reset, memo and prefix cache empty."""
    build_prm = build_prm or default_build_prm
    if not config.shared:
        return build_prm(config)
    prm = CACHE.get("prm", config_key(config), lambda: build_prm(config))
    prm.stats = PRMStats()
    prm.clear_memo()
    prm.reset_prefix_cache()
    return prm


def release_job_models(*objects) -> None:
    """End of a job: close what the job built for itself; what the cache holds stays for the next job."""
    for obj in objects:
        if obj is not None and not CACHE.holds(obj):
            obj.close()
