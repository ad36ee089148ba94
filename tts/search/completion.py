"""The record a strategy returns for each finished (or explicitly truncated) solution."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from tts.data.steps import STEP_SEPARATOR, split_steps  # noqa: F401 - the strategies' step format


@dataclass
class Completion:
    """One of the n solutions a strategy returns for a problem.

    `steps` are the texts the PRM scored (the solution split at blank lines, stripped, empty pieces dropped), one score
    each in `step_scores`. `finish_reason` is `stop`/`eos` for a solution that ended by itself, `length` when it hit
    `budget.max_tokens`, `truncated` when the search ran out of iterations before it finished. `tokens` counts the tokens
    generated for this completion's own text; compute shared with siblings (beam prefixes, lookahead rollouts) is
    counted once in the run's totals.
    """

    text: str
    steps: list[str]
    step_scores: list[float]
    finish_reason: str
    tokens: int
    answer: Optional[str] = None
    key: Optional[str] = None
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        # Built by hand: dataclasses.asdict deep-copies every list, which at n=256 costs more than the search.
        record = {"text": self.text, "steps": list(self.steps), "step_scores": list(self.step_scores),
                  "finish_reason": self.finish_reason, "tokens": self.tokens, "answer": self.answer, "key": self.key}
        if self.extra:
            record["extra"] = dict(self.extra)
        return record
