"""REBASE, reward-balanced search (Wu et al. 2024, "An Empirical Analysis of Compute-Optimal Inference for
Problem-Solving with Language Models").

The tree grows one depth per iteration. The budget is N finished completions: with B = N - (finished so far), the B
samples of the next iteration are shared out over the unfinished nodes of the current depth in proportion to
softmax(score / `rebase_temperature`) (largest-remainder rounding, so exactly B), and a node that gets none is pruned.
Every sample either finishes (B shrinks by one) or becomes a node of the next depth, so at most N samples are in
flight and the search ends with exactly N finished completions (the last allowed iteration writes the rest to the end).
Low temperature concentrates the budget on the best node (towards greedy); high temperature spreads it evenly
(towards best-of-N).

    python tts/main.py strategy=rebase n=16 strategy.rebase_temperature=0.2
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tts.config.schema import Config
from tts.search.base import RunSpec, SearchOutput, allocate
from tts.search.tree import Expansion, Node, TreeSearch, TreeSearchConfig, TreeState


@dataclass
class RebaseConfig(TreeSearchConfig):
    name: str = "rebase"
    rebase_temperature: float = 0.2  # softmax temperature over node scores: low = exploit the best node

    def check(self, run: Config) -> None:
        super().check(run)
        self.require(
            self.rebase_temperature > 0,
            "rebase_temperature",
            f"must be > 0 (softmax temperature over node scores), got {self.rebase_temperature}",
        )


def softmax(values: list[float], temperature: float) -> list[float]:
    top = max(values)
    weights = [math.exp((v - top) / temperature) for v in values]
    total = sum(weights)
    return [w / total for w in weights]


class RebaseState(TreeState):
    config: RebaseConfig

    def __init__(self, problem, config: RebaseConfig, spec: RunSpec) -> None:
        super().__init__(problem, config, spec)
        self.finished: list[Node] = []
        self.alive: list[Node] = []

    def update(self, groups) -> None:
        children = [c for _, kids in groups for c in kids]
        self.finished.extend(c for c in children if c.finished)
        self.alive = [c for c in children if not c.finished]
        budget = self.n - len(self.finished)
        if budget <= 0 or not self.alive:
            self.done, self.frontier = True, []
            return
        counts = allocate(budget, softmax([c.value for c in self.alive], self.config.rebase_temperature))
        self.frontier = [Expansion(node, k) for node, k in zip(self.alive, counts) if k > 0]

    def result(self) -> SearchOutput:
        return self.output(self.finished, self.alive, "REBASE finished {} of {} completions")


class Rebase(TreeSearch):
    state_class = RebaseState

    config: RebaseConfig
