"""The process-reward-model seam: `score(problems, step_lists) -> per-step scores`, memoised by prefix.

Search re-scores the same prefixes many times (a beam's first steps are shared by all its descendants), so the base
class
remembers the score of every (problem, steps[:k]) it has seen and sends only solutions with an unseen prefix to the
model. Subclasses implement `_score_batch`, which scores whole step lists (a PRM reads all step scores of a solution in
one forward pass, so the unit of work is the solution, not the step). A PRM whose engine can read one step's score
without recomputing the steps before it (vLLM with its prefix cache) overrides `_score_new_steps`, which is told how
many leading steps of each solution the memo already holds and returns only the scores of the rest.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

Steps = Sequence[str]


@dataclass
class PRMStats:
    """What a PRM has spent: `tokens` given to the model (memo hits cost nothing), of which `cached_tokens` were
    served from a KV cache instead of computed (vLLM's `num_cached_tokens`; on hf, a prefix shared within a call)."""

    calls: int = 0
    solutions_scored: int = 0
    memo_hits: int = 0
    tokens: int = 0
    cached_tokens: int = 0

    @property
    def computed_tokens(self) -> int:
        return self.tokens - self.cached_tokens

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
            known = [self._known_steps(problem, steps) for problem, steps in todo]
            scored = self._score_new_steps([p for p, _ in todo], [list(s) for _, s in todo], known)
            self.stats.calls += 1
            self.stats.solutions_scored += len(todo)
            for (problem, steps), done, scores in zip(todo, known, scored):
                if len(scores) != len(steps) - done:
                    raise RuntimeError(
                        f"{type(self).__name__} gave {len(scores)} scores for {len(steps) - done} new steps"
                    )
                for k in range(done + 1, len(steps) + 1):
                    fresh[(problem, steps[:k])] = float(scores[k - done - 1])
            if self.memoize:
                self._memo.update(fresh)
        lookup = self._memo if self.memoize else fresh
        return [
            [[lookup[(problem, tuple(steps[:k]))] for k in range(1, len(steps) + 1)] for steps in solutions]
            for problem, solutions in zip(problems, step_lists)
        ]

    def _known_steps(self, problem: str, steps: tuple[str, ...]) -> int:
        """How many leading steps of `steps` the memo already scores (every shorter prefix of a memo entry is one too:
        a solution's scores are stored for all its prefixes at once)."""
        if not self.memoize:
            return 0
        for k in range(len(steps) - 1, 0, -1):
            if (problem, steps[:k]) in self._memo:
                return k
        return 0

    def _score_new_steps(self, problems: list[str], solutions: list[list[str]], known: list[int]) -> list[list[float]]:
        """Scores of `solutions[i][known[i]:]`. The default scores whole solutions; a backend whose cost does not
        grow with the steps before (a prefix cache) scores only the new ones."""
        scored = self._score_batch(problems, solutions)
        return [list(scores[done:]) for scores, done in zip(scored, known)]

    def clear_memo(self) -> None:
        """Forget scored prefixes. The pipeline calls it after each batch: later batches hold other problems, so the
        memo would only grow (at n=256 it is most of a job's memory)."""
        self._memo.clear()

    @abc.abstractmethod
    def _score_batch(self, problems: list[str], solutions: list[list[str]]) -> list[list[float]]:
        """Score each (problem, steps) pair: one float per step. Add the tokens encoded to `self.stats.tokens`."""

    def reset_prefix_cache(self) -> None:
        """Forget the KV cache of earlier solutions (vLLM's prefix cache), so that a PRM reused by the next job of a
        sweep computes, and records in `compute.prm_cached_tokens`, what a fresh one would; the default caches nothing
        across calls."""

    def close(self) -> None:
        """Release GPU memory; the default holds nothing."""
