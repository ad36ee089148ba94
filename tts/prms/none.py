"""No reward model (`prm=none`): scores nothing, so a run selects answers by majority and by the policy's own
confidence (deepconf, self_certainty, borda_sc; docs/confidence.md) only.

A strategy whose search a PRM guides (beam, DVTS, lookahead, REBASE: `StrategyConfig.needs_prm`) is refused with
`prm=none` before anything is generated, and the run reports neither naive nor weighted (they rank by PRM scores).

    python tts/main.py prm=none
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from tts.config.schema import PRMConfig
from tts.prms.base import ProcessRewardModel


@dataclass
class NoPRMConfig(PRMConfig):
    """`prm=none` has no knobs."""

    scores: ClassVar[bool] = False

    name: str = "none"


class NoPRM(ProcessRewardModel):
    """Every solution gets no step scores (an empty list), at no cost; completions keep their steps."""

    def __init__(self, config: NoPRMConfig) -> None:
        super().__init__(memoize=False)

    def score(self, problems: Sequence[str], step_lists: Sequence[Sequence[Sequence[str]]]) -> list[list[list[float]]]:
        if len(problems) != len(step_lists):
            raise ValueError(f"score() got {len(problems)} problems but {len(step_lists)} step lists")
        return [[[] for _ in solutions] for solutions in step_lists]

    def _score_batch(self, problems: list[str], solutions: list[list[str]]) -> list[list[float]]:
        return [[] for _ in solutions]
