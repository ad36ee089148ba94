"""A problem's graded completions, as `tts.pipeline.grade_batch` hands them to `tts.scoring.score_problem`, from
per-completion lists (the scoring tests' inputs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from tts.data.records import Completion


def graded(
    keys: Sequence[Optional[str]],
    answers: Optional[Sequence[Optional[str]]] = None,
    correct: Optional[dict] = None,
    scores: Optional[Sequence[float]] = None,
    *,
    vote: Optional[Sequence[bool]] = None,
    weight: Optional[Sequence[float]] = None,
    confidence: Optional[Sequence[Optional[dict]]] = None,
) -> list[Completion]:
    """One completion per key: its answer (default: the key), verdict (`correct[key]`; no answer: wrong), PRM score
    (its one step's), and the strategy's vote and weight and the policy's confidence where given."""
    verdicts = correct or {}
    return [
        Completion(
            text="",
            steps=[],
            step_scores=[] if scores is None else [scores[i]],
            finish_reason="stop",
            tokens=0,
            answer=key if answers is None else answers[i],
            key=key,
            correct=verdicts.get(key) if key is not None else False,
            confidence=None if confidence is None else confidence[i],
            vote=None if vote is None else vote[i],
            weight=None if weight is None else weight[i],
        )
        for i, key in enumerate(keys)
    ]
