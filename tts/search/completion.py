"""How a solution is cut into PRM steps. The completion a strategy returns is `tts.store.records.Completion`: the same
object is graded, written to the run directory and read back by tracking and analysis."""

from __future__ import annotations

STEP_SEPARATOR = "\n\n"


def split_steps(text: str, separator: str = STEP_SEPARATOR) -> list[str]:
    """Cut a solution into PRM steps: pieces between separators, stripped; blank pieces are not steps."""
    return [piece.strip() for piece in text.split(separator) if piece.strip()]
