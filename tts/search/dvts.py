"""Diverse verifier tree search (Beeching, Tunstall, Rush 2024): N / M independent subtrees (`beam_width` M), each
extended greedily: every iteration a subtree's current node gets M candidate next steps and keeps the one the PRM
scores highest.

Budget-fair ending (differs from the reference implementation, which returns the unfinished sibling candidates as
they are): when a subtree's chosen candidate is finished, the subtree stops and its M candidates of that step are its
M leaves. Siblings that are already finished are kept; unfinished ones are written to the end in the next iteration
(one sample each, in the same backend call as the other problems' steps, scored in the same PRM call). So every
problem gets exactly N = (N / M) * M finished completions, N samples are in flight per iteration at most, and the
completion of the siblings is counted as generated compute like any other step.

    python tts/main.py strategy=dvts n=16 strategy.beam_width=4
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tts.config.schema import Config
from tts.data.records import Completion
from tts.search.base import RunSpec, SearchOutput
from tts.search.tree import Expansion, Node, TreeSearch, TreeSearchConfig, TreeState


@dataclass
class DVTSConfig(TreeSearchConfig):
    name: str = "dvts"
    beam_width: int = 4  # M: candidate steps per subtree per iteration, and leaves per subtree

    def check(self, run: Config) -> None:
        super().check(run)
        self.check_width(self.beam_width, run)


@dataclass(eq=False)
class Subtree:
    current: Node
    leaves: list[Node] = field(default_factory=list)  # the M final candidates; those in `pending` are unfinished
    pending: list[int] = field(default_factory=list)  # leaves still to write to the end

    @property
    def ended(self) -> bool:
        return bool(self.leaves)


class DvtsState(TreeState):
    config: DVTSConfig

    def __init__(self, problem, config: DVTSConfig, spec: RunSpec) -> None:
        super().__init__(problem, config, spec)
        self.subtrees = [Subtree(Node()) for _ in range(self.n // config.beam_width)]

    def expansions(self, last: bool) -> list[Expansion]:
        out = []
        for t, tree in enumerate(self.subtrees):
            if not tree.ended:
                out.append(Expansion(tree.current, self.config.beam_width, tag=(t, None)))
            for j in tree.pending:
                out.append(Expansion(tree.leaves[j], 1, to_end=True, tag=(t, j)))
        return out

    def update(self, groups) -> None:
        for expansion, children in groups:
            t, j = expansion.tag
            tree = self.subtrees[t]
            if j is not None:  # a sibling written to the end
                tree.leaves[j] = children[0]
                tree.pending.remove(j)
                continue
            best = max(range(len(children)), key=lambda i: (children[i].value, -i))
            if children[best].finished:
                tree.leaves = list(children)
                tree.pending = [i for i, c in enumerate(children) if not c.finished]
            else:
                tree.current = children[best]
        self.done = all(tree.ended and not tree.pending for tree in self.subtrees)

    def result(self) -> SearchOutput:
        completions: list[Completion] = []
        for tree in self.subtrees:
            if tree.ended:
                completions.extend(leaf.to_completion(self.spec) for leaf in tree.leaves)
            else:  # out of iterations (cannot happen: the last iteration writes every subtree to the end)
                completions.extend(
                    tree.current.to_completion(self.spec, "truncated") for _ in range(self.config.beam_width)
                )
        return SearchOutput(completions=completions, compute=self.compute)


class DVTS(TreeSearch):
    state_class = DvtsState

    config: DVTSConfig
