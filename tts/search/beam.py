"""Beam search over solution steps, guided by the PRM (Snell et al. 2024; the open replication's `beam_search`).

N beams. Every iteration each beam in flight writes one more step (stop at the blank line); the PRM scores the new
prefixes (one call for all problems of the batch); beams that finished (end of text, a boxed answer, or the last
allowed iteration, which writes to the end) leave the pool; of the rest the best N / M (`beam_width` M) survive and
each is expanded M ways, so N beams are in flight again (when fewer than N / M survive, the survivors share the N slots
evenly). A problem stops once N beams have finished; its N completions are the best finished ones by reduced PRM score
(`scoring.reduction`). Beams in flight never exceed N.

    python tts/main.py strategy=beam n=16 strategy.beam_width=4
"""

from __future__ import annotations

from dataclasses import dataclass

from tts.config.schema import Config
from tts.search.base import RunSpec, SearchOutput, allocate
from tts.search.tree import Expansion, Node, TreeSearch, TreeSearchConfig, TreeState, drop_duplicates, top_k


@dataclass
class BeamConfig(TreeSearchConfig):
    name: str = "beam"
    beam_width: int = 4  # M: children per surviving beam; n / M beams survive each iteration
    filter_duplicates: bool = False  # drop beams whose text duplicates another's before pruning

    def check(self, run: Config) -> None:
        super().check(run)
        self.check_width(self.beam_width, run)


class BeamState(TreeState):
    config: BeamConfig

    def __init__(self, problem, config: BeamConfig, spec: RunSpec) -> None:
        super().__init__(problem, config, spec)
        self.finished: list[Node] = []
        self.survivors: list[Node] = []

    def update(self, groups) -> None:
        children = [c for _, kids in groups for c in kids]
        self.finished.extend(c for c in children if c.finished)
        alive = [c for c in children if not c.finished]
        if self.config.filter_duplicates:
            alive = drop_duplicates(alive)
        self.survivors = top_k(alive, self.n // self.config.beam_width)
        if len(self.finished) >= self.n or not self.survivors:
            self.done, self.frontier = True, []
            return
        slots = allocate(self.n, [1.0] * len(self.survivors))  # N beams in flight again
        self.frontier = [Expansion(node, k) for node, k in zip(self.survivors, slots)]

    def result(self) -> SearchOutput:
        ranked = sorted(self.finished, key=lambda node: -self.rank(node))
        return self.output(ranked, self.survivors, "beam search finished {} of {} beams")


class BeamSearch(TreeSearch):
    state_class = BeamState

    config: BeamConfig
