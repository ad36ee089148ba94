"""Lookahead search (Snell et al. 2024): beam search where each candidate step is ranked by the PRM's score at the end
of a k-step greedy (temperature 0) rollout from it (`strategy.lookahead: k`; k = 0 is exactly beam search).

The rollout is only for ranking: its steps never enter a completion, but its tokens count as generated compute
(`generated_tokens`, and `rollout_tokens` on their own). Each rollout step is one more backend call for all problems
of the batch, so an iteration costs 1 + k calls.

    python tts/main.py strategy=lookahead n=16 strategy.lookahead=2
"""

from __future__ import annotations

from tts.search.base import SearchOutput
from tts.search.beam import BeamState
from tts.search.tree import run_tree_search


def search(problems, policy, prm, cfg) -> list[SearchOutput]:
    return run_tree_search(problems, policy, prm, cfg, BeamState, lookahead=int(cfg.strategy.lookahead))
