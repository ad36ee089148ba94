"""The `}` that closes a `{` in LaTeX, in time linear in the text: answer extraction and normalisation both need it, on
completions of a few hundred characters and on adversarial ones of a megabyte."""

from __future__ import annotations

import re

SHORT = 4096  # characters: below this, and for text dense in braces, one regex token per special character is cheapest

_BRACE_TOKENS = re.compile(r"\\.|[{}]", re.S)


def _match_dense(text: str, open_idx: int, limit: int) -> int | None:
    """`match_brace` for text dense in braces and backslashes: one regex token per special character."""
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


def match_brace(text: str, open_idx: int, limit: int) -> int | None:
    """Index of the ``}`` closing the ``{`` at ``open_idx`` (searching before ``limit``); ``None`` if unbalanced.
    Escaped ``\\{``/``\\}`` (and any other backslash pair) are skipped."""
    # One `str.find` cursor per special character: the runs of ordinary characters between them are skipped at
    # memchr speed (a regex scan costs ~40 ns per character: 40 ms for a 1 MB answer).
    # Dense LaTeX (judged on its first 4 kB): one regex token per special character is cheaper.
    window = text[open_idx : min(limit, open_idx + SHORT)]
    if limit - open_idx <= SHORT or (window.count("\\") + window.count("{") + window.count("}")) * 16 > len(window):
        return _match_dense(text, open_idx, limit)
    find = text.find

    def nxt(ch: str, start: int) -> int:
        j = find(ch, start, limit)
        return limit if j < 0 else j

    depth = 0
    bs, op, cl = nxt("\\", open_idx), nxt("{", open_idx), nxt("}", open_idx)
    while True:
        i = min(bs, op, cl)
        if i >= limit:
            return None
        if i == bs:
            skip = i + 2
            bs = nxt("\\", skip)
            if op < skip:
                op = nxt("{", skip)
            if cl < skip:
                cl = nxt("}", skip)
        elif i == op:
            depth += 1
            op = nxt("{", i + 1)
        else:
            depth -= 1
            if depth == 0:
                return i
            cl = nxt("}", i + 1)
