"""The problem record every dataset loader produces (the fields of MATH-500)."""

from __future__ import annotations

import zlib
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


def stable_hash(value: object) -> int:
    """crc32 of `str(value)`: the same small integer in every process (Python's hash() is salted per process), for
    seeds and orders derived from a problem's unique_id."""
    return zlib.crc32(str(value).encode())
