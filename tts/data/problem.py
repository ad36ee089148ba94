"""The problem record every dataset loader produces (the fields of MATH-500)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Problem:
    unique_id: str
    problem: str
    answer: str
    solution: str = ""
    subject: str | None = None
    level: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)
