"""The step format every policy writes and every PRM reads: steps separated by a blank line (the blog's format)."""

from __future__ import annotations

STEP_SEPARATOR = "\n\n"


def split_steps(text: str, separator: str = STEP_SEPARATOR) -> list[str]:
    """Cut a solution into PRM steps: pieces between separators, stripped; blank pieces are not steps."""
    return [piece.strip() for piece in text.split(separator) if piece.strip()]
