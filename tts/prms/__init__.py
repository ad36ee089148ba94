"""Process reward models: one module per PRM family (its input format and read-out) with its config dataclass (a
`PRMConfig` subclass, `prm.*`) and the class Hydra builds from conf/prm/<name>.yaml's `_target_`. Real families are
read from a checkpoint (tts/prms/family.py) by the engine of the nested group `prm/engine=hf|vllm`
(tts/prms/hf_engine.py, tts/prms/vllm_engine.py); heavy imports happen only when one is built.
"""

from __future__ import annotations

from tts.config.schema import PRMConfig, build
from tts.prms.base import ProcessRewardModel


def build_prm(config: PRMConfig) -> ProcessRewardModel:
    """The PRM `config._target_` names, built by Hydra from its typed config."""
    return build(config)


__all__ = ["ProcessRewardModel", "build_prm"]
