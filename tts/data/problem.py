"""The problem record every dataset loader produces (the fields of MATH-500)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional


@dataclass
class Problem:
    unique_id: str
    problem: str
    answer: str
    solution: str = ""
    subject: Optional[str] = None
    level: Optional[int] = None

    def as_dict(self) -> dict:
        return asdict(self)
