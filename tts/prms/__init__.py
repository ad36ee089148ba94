"""Process reward models, chosen by `prm.family` (input format) and `prm.backend` (sim | hf | vllm).

Each family module has `build(prm_cfg) -> ProcessRewardModel`; it is imported only when chosen.
"""

from __future__ import annotations

import importlib

from tts.prms.base import ProcessRewardModel

# prm.family -> module with `build(prm_cfg) -> ProcessRewardModel`
FAMILIES = {
    "sim": "tts.prms.sim",
    "rlhflow": "tts.prms.rlhflow",
    "math_shepherd": "tts.prms.math_shepherd",
    "qwen_prm": "tts.prms.qwen_prm",
    "skywork": "tts.prms.skywork",
}


def build_prm(prm_cfg) -> ProcessRewardModel:
    if prm_cfg.family not in FAMILIES:
        raise ValueError(f"config key 'prm.family': unknown PRM family {prm_cfg.family!r}; known: {sorted(FAMILIES)}")
    module = importlib.import_module(FAMILIES[prm_cfg.family])
    return module.build(prm_cfg)


__all__ = ["ProcessRewardModel", "build_prm"]
