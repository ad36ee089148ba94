"""Search strategies. Each module holds one strategy: its config dataclass (a `StrategyConfig` subclass with only its
own knobs and rules) and its class (a `Strategy`), which Hydra builds from conf/strategy/<name>.yaml's `_target_`.
Every strategy returns exactly `n` completions per problem.
"""

from __future__ import annotations

from tts.config.schema import StrategyConfig, build
from tts.search.base import Strategy


def build_strategy(config: StrategyConfig) -> Strategy:
    """The strategy `config._target_` names, built by Hydra from its typed config."""
    return build(config)


__all__ = ["Strategy", "build_strategy"]
