"""The process-reward-model seam: `score(problems, step_lists) -> per-step scores`, memoised by prefix.

Search re-scores the same prefixes many times (a beam's first steps are shared by all its descendants), so the base class
remembers the score of every (problem, steps[:k]) it has seen and sends only solutions with an unseen prefix to the
model. Subclasses implement `_score_batch`, which scores whole step lists (a PRM reads all step scores of a solution in
one forward pass, so the unit of work is the solution, not the step).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Sequence

Steps = Sequence[str]


@dataclass
class PRMStats:
    """What a PRM has spent: `tokens` actually encoded (memo hits cost nothing) and forward calls."""

    calls: int = 0
    solutions_scored: int = 0
    memo_hits: int = 0
    tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class ProcessRewardModel(abc.ABC):
    """Base class of PRMs. `score` memoises; `_score_batch` does the real work and adds to `stats.tokens`."""

    def __init__(self, memoize: bool = True) -> None:
        self.stats = PRMStats()
        self.memoize = memoize
        self._memo: dict[tuple[str, tuple[str, ...]], float] = {}

    def score(self, problems: Sequence[str], step_lists: Sequence[Sequence[Steps]]) -> list[list[list[float]]]:
        """Score every step of every candidate solution.

        `step_lists[i]` holds the candidate solutions of `problems[i]`, each a list of non-empty step texts; the result
        has the same nesting with one float per step (the PRM's estimate that the solution is right so far).
        """
        if len(problems) != len(step_lists):
            raise ValueError(f"score() got {len(problems)} problems but {len(step_lists)} step lists")
        pending: dict[tuple[str, tuple[str, ...]], None] = {}
        for problem, solutions in zip(problems, step_lists):
            for steps in solutions:
                steps = tuple(steps)
                if not steps:
                    continue
                if any(not s.strip() for s in steps):
                    raise ValueError("a PRM step must be real text, never an empty string")
                if not self.memoize or (problem, steps) not in self._memo:
                    pending[(problem, steps)] = None
                else:
                    self.stats.memo_hits += 1
        fresh: dict[tuple[str, tuple[str, ...]], float] = {}
        if pending:
            todo = list(pending)
            scored = self._score_batch([p for p, _ in todo], [list(s) for _, s in todo])
            self.stats.calls += 1
            self.stats.solutions_scored += len(todo)
            for (problem, steps), scores in zip(todo, scored):
                if len(scores) != len(steps):
                    raise RuntimeError(f"{type(self).__name__} gave {len(scores)} scores for {len(steps)} steps")
                for k in range(1, len(steps) + 1):
                    fresh[(problem, steps[:k])] = float(scores[k - 1])
            if self.memoize:
                self._memo.update(fresh)
        lookup = self._memo if self.memoize else fresh
        return [
            [[lookup[(problem, tuple(steps[:k]))] for k in range(1, len(steps) + 1)] for steps in solutions]
            for problem, solutions in zip(problems, step_lists)
        ]

    def clear_memo(self) -> None:
        """Forget scored prefixes. The pipeline calls it after each batch: later batches hold other problems, so the
        memo would only grow (at n=256 it is most of a job's memory)."""
        self._memo.clear()

    @abc.abstractmethod
    def _score_batch(self, problems: list[str], solutions: list[list[str]]) -> list[list[float]]:
        """Score each (problem, steps) pair: one float per step. Add the tokens encoded to `self.stats.tokens`."""

    def close(self) -> None:
        """Release GPU memory; the default holds nothing."""
