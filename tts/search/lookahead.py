"""Lookahead search (Snell et al. 2024): beam search where each candidate step is ranked by the PRM's score at the end
of a k-step greedy (temperature 0) rollout from it (`strategy.lookahead: k`; k = 0 is exactly beam search).

The rollout is only for ranking: its steps never enter a completion, but its tokens count as generated compute
(`generated_tokens`, and `rollout_tokens` on their own). Each rollout step is one more backend call for all problems
of the batch, so an iteration costs 1 + k calls.

    python tts/main.py strategy=lookahead n=16 strategy.lookahead=2
"""

from __future__ import annotations

from dataclasses import dataclass

from tts.config.schema import Config, is_whole
from tts.search.base import RunSpec, SearchOutput
from tts.search.beam import BeamConfig, BeamState
from tts.search.tree import TreeSearch, run_tree_search


@dataclass
class LookaheadConfig(BeamConfig):
    name: str = "lookahead"
    lookahead: int = 2  # k: greedy steps rolled out past each candidate before the PRM scores it (0 = beam search)

    def check(self, run: Config) -> None:
        super().check(run)
        self.require(
            is_whole(self.lookahead) and self.lookahead >= 0,
            "lookahead",
            f"must be a whole number of steps >= 0, got {self.lookahead!r}",
        )


class LookaheadSearch(TreeSearch):
    config: LookaheadConfig

    def search(self, problems, policy, prm, spec: RunSpec) -> list[SearchOutput]:
        return run_tree_search(
            problems,
            policy,
            prm,
            self.config,
            spec,
            BeamState,
            lookahead=self.config.lookahead,
            finished=self.report_finished,
        )
