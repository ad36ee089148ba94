"""Policy backends, chosen by `model.backend`. Heavy imports (torch, vllm) happen only for the backend chosen."""

from __future__ import annotations

import importlib

from tts.backends.base import GenerationOutput, GenerationRequest, PolicyBackend

# backend name -> module with `build(model_cfg, seed) -> PolicyBackend`
BACKENDS = {
    "sim": "tts.backends.sim",
    "hf": "tts.backends.hf",
    "vllm": "tts.backends.vllm",
    "openai": "tts.backends.openai",
}


def build_policy(model_cfg, seed: int) -> PolicyBackend:
    module = importlib.import_module(BACKENDS[model_cfg.backend])
    return module.build(model_cfg, seed)


__all__ = ["GenerationOutput", "GenerationRequest", "PolicyBackend", "build_policy"]
