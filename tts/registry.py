"""The component modules, imported so that each config dataclass is registered as the schema of its options.

Hydra can compose `conf/strategy/beam.yaml` only once `BeamConfig` is in its ConfigStore (`schema/strategy/BeamConfig`,
tts.config.schema.register_configs). A component's module defines its config beside its code, so every module of the
component packages is imported here; a new strategy, backend or PRM module is found without being listed anywhere.
Its heavy dependencies (torch, vllm) are imported only when the component is built.
"""

from __future__ import annotations

import importlib
import pkgutil

from tts.config.schema import register_configs

COMPONENT_PACKAGES = ("tts.search", "tts.backends", "tts.prms")


def import_components() -> None:
    for name in COMPONENT_PACKAGES:
        package = importlib.import_module(name)
        for module in pkgutil.walk_packages(package.__path__, name + "."):
            importlib.import_module(module.name)
    register_configs()


import_components()
