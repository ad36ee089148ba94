"""Policy backends: one module each (sim, hf, vllm, openai) with its config dataclass (a `PolicyBackendConfig`
subclass, `model.backend.*`) and the class or function Hydra builds from conf/model/backend/<name>.yaml's `_target_`.
Heavy imports (torch, vllm) happen only when that backend is built.
"""

from __future__ import annotations

from tts.backends.base import GenerationOutput, GenerationRequest, PolicyBackend
from tts.config.schema import ModelConfig, build


def build_policy(model: ModelConfig, seed: int) -> PolicyBackend:
    """The policy that runs `model`: its backend (`model.backend._target_`) built by Hydra."""
    return build(model.backend, model=model, seed=seed)


__all__ = ["GenerationOutput", "GenerationRequest", "PolicyBackend", "build_policy"]
