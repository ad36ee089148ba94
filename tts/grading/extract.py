"""Pull the final answer out of a completion.

Rules, in order:

1. The last *complete* ``\\boxed{...}`` or ``\\fbox{...}`` (nested braces, escaped ``\\{``/``\\}`` skipped), or the
   brace-less form ``\\boxed 5``. A box that is cut off (unbalanced, e.g. a truncated generation) is skipped and the
   previous one is used. Empty boxes count as no answer.
2. Otherwise the last phrase "final answer is", "final answer:", "the answer is", "answer:" (case-insensitive),
   followed by a ``$...$`` / ``\\(...\\)`` / ``\\[...\\]`` math span if there is one, else the rest of the sentence.
3. Otherwise ``None``.

Everything is linear in the length of the text (``str.rfind`` and one forward brace scan per candidate, bounded
regexes on short windows), so a 1 MB completion costs milliseconds, and no input raises.
"""

from __future__ import annotations

import re
from typing import Optional, Tuple

__all__ = ["extract_answer", "MAX_ANSWER_CHARS"]

#: Longest answer `extract_answer` returns from a fallback phrase (a box's content is not cut: it is what the model
#: wrote; the grader applies its own limits).
MAX_ANSWER_CHARS = 400

_BOX_COMMANDS = ("\\boxed", "\\fbox")

_MAX_BOX_CANDIDATES = 10_000  # box commands tried from the end (a real completion has a handful)

_PHRASES = ("final answer is", "final answer:", "final answer", "the answer is", "answer is", "answer:")

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

_MATH_SPAN = re.compile(r"\s*(?:\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\])", re.S)


_BRACE_TOKENS = re.compile(r"\\.|[{}]", re.S)


def _match_brace(text: str, open_idx: int, limit: int) -> Optional[int]:
    """Index of the ``}`` closing the ``{`` at ``open_idx`` (searching before ``limit``); ``None`` if unbalanced.
    Escaped ``\\{``/``\\}`` (and any other backslash pair) are skipped."""
    depth = 0
    for m in _BRACE_TOKENS.finditer(text, open_idx, limit):
        c = m.group()
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return m.start()
    return None


def _box_content(text: str, start: int, cmd: str, limit: int) -> Tuple[Optional[str], bool]:
    """(content of the box command at ``start`` or ``None``, whether it was an unbalanced ``{``)."""
    i = start + len(cmd)
    n = len(text)
    # `\boxedfoo` is another command, not a box.
    if i < n and text[i].isalpha():
        return None, False
    k = i
    while k < n and text[k] in " \t":
        k += 1
    if k >= n:
        return None, False
    if text[k] == "{":
        end = _match_brace(text, k, limit)
        if end is None:
            return None, True
        content = text[k + 1 : end].strip()
        return content or None, False
    if k == i or text[k] == "\\":
        return None, False  # `\boxed\boxed`, `\boxed\frac..`: not the brace-less form
    # `\boxed 5`: one token, up to whitespace or the closing `$`.
    j = k
    while j < n and j - k < MAX_ANSWER_CHARS and not text[j].isspace() and text[j] not in "$":
        j += 1
    content = text[k:j].strip().rstrip(".,;")
    return content or None, False


def _last_box(text: str) -> Optional[str]:
    # Candidates are visited from the end. An unbalanced box at position p means no earlier box can close after p
    # (its closing brace would have closed the later one first), so brace scans stop at the last unbalanced box;
    # each command's previous occurrence is searched once: the total work stays linear in len(text).
    limit = len(text)
    nxt = {cmd: text.rfind(cmd) for cmd in _BOX_COMMANDS}
    for _ in range(_MAX_BOX_CANDIDATES):
        cmd = max(nxt, key=lambda c: nxt[c])
        pos = nxt[cmd]
        if pos < 0:
            return None
        content, unbalanced = _box_content(text, pos, cmd, limit)
        if content is not None:
            return content
        if unbalanced:
            limit = pos
        nxt[cmd] = text.rfind(cmd, 0, pos) if pos > 0 else -1
    return None


def _strip_sentence(s: str) -> Optional[str]:
    s = s.strip()
    # Up to the end of the line, and the end of the sentence (a period followed by a space or the end, not a decimal
    # point).
    s = s.split("\n", 1)[0]
    m = re.search(r"\.(\s|$)", s)
    if m:
        s = s[: m.start()]
    s = s.strip().strip("*").strip()
    s = s.rstrip(".,;:!").strip()
    if s.lower().startswith("is "):
        s = s[3:].strip()
    if not s or len(s) > MAX_ANSWER_CHARS:
        return None
    return s


def _after_phrase(text: str) -> Optional[str]:
    low = text.translate(_ASCII_LOWER)  # not str.lower(): it can change the length of non-ASCII text
    best, best_len = -1, 0
    for p in _PHRASES:
        k = low.rfind(p)
        # Prefer the latest phrase; at the same position the longest phrase ("final answer is" over "answer is").
        if k > best or (k == best and len(p) > best_len):
            best, best_len = k, len(p)
    if best < 0:
        return None
    rest = text[best + best_len : best + best_len + 4 * MAX_ANSWER_CHARS]
    rest = rest.lstrip(" \t:*")
    m = _MATH_SPAN.match(rest)
    if m:
        content = next(g for g in m.groups() if g is not None).strip()
        if content and len(content) <= MAX_ANSWER_CHARS:
            return content
    return _strip_sentence(rest)


def extract_answer(text: str) -> Optional[str]:
    """The final answer in ``text`` (see the module docstring), or ``None``. Never raises."""
    try:
        if not isinstance(text, str) or not text:
            return None
        ans = _last_box(text)
        if ans is None:
            ans = _after_phrase(text)
        if ans is not None:
            ans = ans.strip()
        return ans or None
    except Exception:  # pragma: no cover - defensive: extraction must never take a run down
        return None
