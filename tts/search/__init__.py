"""Search strategies, chosen by `strategy.name`. Each module has
`search(problems, policy, prm, cfg) -> list[list[Completion]]` returning exactly `cfg.n` completions per problem."""

from __future__ import annotations

import importlib

from tts.store.records import Completion

# strategy.name -> module with `search(problems, policy, prm, cfg)`
STRATEGIES = {
    "best_of_n": "tts.search.best_of_n",
    "beam": "tts.search.beam",
    "dvts": "tts.search.dvts",
    "lookahead": "tts.search.lookahead",
    "rebase": "tts.search.rebase",
    "filter_vote": "tts.search.filter_vote",
    "revisions": "tts.search.revisions",
}


def get_strategy(name: str):
    if name not in STRATEGIES:
        raise ValueError(f"config key 'strategy.name': unknown strategy {name!r}; known: {sorted(STRATEGIES)}")
    return importlib.import_module(STRATEGIES[name]).search


__all__ = ["Completion", "get_strategy"]
