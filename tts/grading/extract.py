"""Pull the final answer out of a completion.

Rules, in order (`extract_answer_with_rule` also says which one gave the answer):

1. ``boxed``: the last *complete* ``\\boxed{...}`` or ``\\fbox{...}`` (nested braces, escaped ``\\{``/``\\}``
   skipped), or the brace-less form ``\\boxed 5``. A box that is cut off (unbalanced, e.g. a truncated generation)
   is skipped and the previous one is used. Empty boxes count as no answer.
   ``boxes``: when the final step (the text after the last blank line) lists several boxes as one answer --
   ``$\\boxed{-2}$ and $\\boxed{1}$``, ``x = \\boxed{-2}, x = \\boxed{1}`` (only commas, "and", "or", spacing and
   ``x =`` between them) -- the answer is the set of them, written ``-2, 1``.
2. ``hashes``: GSM8K's final-answer line, ``#### 18`` (the last ``####`` followed, up to the end of its line, by
   math rather than words, so that a Markdown heading ``#### Step 1`` is not an answer). Below the box, which is
   the instruction every prompt here gives; above the phrases, because a model that writes the marker means it as
   its final answer, while "the answer is" also appears mid-solution.
3. ``phrase``: the last phrase "final answer is", "final answer:", "the answer is", "answer:" (case-insensitive),
   followed by a ``$...$`` / ``\\(...\\)`` / ``\\[...\\]`` math span if there is one; else the rest of the
   sentence, or, when that sentence has words ("The largest $n$ is 34."), its last math span or number (``34``).
   A sentence of words alone, with no math in it, is an answer only when it is a short one (at most three words,
   "east", "no solution") that does not start like prose about the answer ("correct", "not", "that", ...):
   "the answer is correct or incorrect" gives no answer.
4. Only with ``lenient=True`` (config ``scoring.lenient_extraction``; off by default so the paper's protocol is
   unchanged), Math-Verify-style fallbacks: ``last_math``, the last math span of the text (an inline ``$...$`` or
   ``\\(...\\)`` span does not cross a line break: ``$\n9\n$`` is two stray dollar signs, not an answer); then
   ``last_number``, the last number that is not glued to a preceding letter (``2`` in ``AZYUK2A`` is part of a name).
5. Otherwise ``None``.

Everything is linear in the length of the text (``str.rfind`` and one forward brace scan per candidate, bounded
regexes on short windows), so a 1 MB completion costs milliseconds, and no input raises.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from tts.grading.braces import SHORT as _SHORT
from tts.grading.braces import match_brace
from tts.grading.normalize import has_words

__all__ = ["extract_answer", "extract_answer_with_rule", "MAX_ANSWER_CHARS", "RULES"]

#: Names of the extraction rules, as recorded with each completion (``answer_rule``).
RULES = ("boxed", "boxes", "hashes", "phrase", "last_math", "last_number")

#: Longest answer `extract_answer` returns from a fallback phrase (a box's content is not cut: it is what the model
#: wrote; the grader applies its own limits).
MAX_ANSWER_CHARS = 400


_MAX_BOX_CANDIDATES = 10_000  # box commands tried from the end (a real completion has a handful)

_PHRASES = ("final answer is", "final answer:", "final answer", "the answer is", "answer is", "answer:")

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

_MATH_SPAN = re.compile(  # an escaped `\$` (a dollar sign) is no delimiter
    r"\s*(?:(?<!\\)\$\$(.+?)(?<!\\)\$\$|(?<!\\)\$(.+?)(?<!\\)\$|\\\((.+?)\\\)|\\\[(.+?)\\\])", re.S
)


def _box_content(text: str, start: int, cmd: str, limit: int) -> tuple[str | None, bool, int]:
    """(content of the box command at ``start`` or ``None``, whether it was an unbalanced ``{``, end index)."""
    i = start + len(cmd)
    n = len(text)
    # `\boxedfoo` is another command, not a box.
    if i < n and text[i].isalpha():
        return None, False, i
    k = i
    while k < n and text[k] in " \t":
        k += 1
    if k >= n:
        return None, False, k
    if text[k] == "{":
        end = match_brace(text, k, limit)
        if end is None:
            return None, True, k
        content = text[k + 1 : end].strip()
        return content or None, False, end + 1
    if k == i or text[k] == "\\":
        return None, False, k  # `\boxed\boxed`, `\boxed\frac..`: not the brace-less form
    # `\boxed 5`: one token, up to whitespace or the closing `$`.
    j = k
    while j < n and j - k < MAX_ANSWER_CHARS and not text[j].isspace() and text[j] not in "$":
        j += 1
    content = text[k:j].strip().rstrip(".,;")
    return content or None, False, j


def _boxes_from_end(text: str) -> Iterator[tuple[str, int, int]]:
    """Complete boxes as (content, start, end), from the last one backwards."""
    # Candidates are visited from the end. An unbalanced box at position p means no earlier box can close after p
    # (its closing brace would have closed the later one first), so brace scans stop at the last unbalanced box;
    # each command's previous occurrence is searched once: the total work stays linear in len(text).
    limit = len(text)
    boxed, fbox = _rfind_cmd(text, "\\boxed", 0, limit), _rfind_cmd(text, "\\fbox", 0, limit)
    for _ in range(_MAX_BOX_CANDIDATES):
        pos = max(boxed, fbox)
        if pos < 0:
            return
        cmd = "\\boxed" if pos == boxed else "\\fbox"
        content, unbalanced, end = _box_content(text, pos, cmd, limit)
        if content is not None:
            yield content, pos, end
            limit = pos  # an earlier box listed with this one closes before this one starts
        if unbalanced:
            limit = pos
        if pos == boxed:
            boxed = _rfind_cmd(text, cmd, 0, pos) if pos > 0 else -1
        else:
            fbox = _rfind_cmd(text, cmd, 0, pos) if pos > 0 else -1


# What may stand between two boxes that a final step lists as one answer: `$\boxed{-2}$ and $\boxed{1}$`,
# `x = \boxed{-2}, x = \boxed{1}`, `\boxed{3} \text{ or } \boxed{4}`.
_BETWEEN_BOXES = re.compile(
    r"[\s$,;]*(?:(?:and|or|\\text\{\s*(?:and|or)\s*\}|\\quad|\\qquad|\\,|&)[\s$,;]*)?"
    r"(?:[a-zA-Z](?:_\{?\w{1,3}\}?)?\s*=\s*)?[\s$]*"
)
_MAX_LISTED_BOXES = 20


_WALK = 64


def _rfind_cmd(text: str, cmd: str, start: int, end: int) -> int:
    """``text.rfind(cmd, start, end)`` for a command (starting with a backslash). In a long text, walks back over
    the backslashes with single-character searches (memchr speed: a multi-character search over a megabyte without
    one costs ~15 ms), falling back to ``str.rfind`` after `_WALK` of them."""
    if end - start < _SHORT:
        return text.rfind(cmd, start, end)
    j = end
    for _ in range(_WALK):
        j = text.rfind("\\", start, j)
        if j < 0:
            return -1
        if text.startswith(cmd, j, end):
            return j
    return text.rfind(cmd, start, min(end, j + len(cmd) - 1))


def _find_cmd(text: str, cmd: str, start: int, end: int) -> int:
    """``text.find(cmd, start, end)``, forward, in the same way as `_rfind_cmd`."""
    if end - start < _SHORT:
        return text.find(cmd, start, end)
    j = start
    for _ in range(_WALK):
        j = text.find("\\", j, end)
        if j < 0:
            return -1
        if text.startswith(cmd, j, end):
            return j
        j += 1
    return text.find(cmd, j, end)


def _one_final_box(text: str) -> tuple[str | None, str | None]:
    """The common case, fast: the last ``\\boxed{`` is complete, and no other box precedes it in its step; else
    (None, None) and `_final_boxes` decides."""
    n = len(text)
    if n < _SHORT:  # a typical completion: a few plain string searches and one brace match
        k = text.rfind("\\boxed{")
        if k < 0 or "\\fbox" in text or text.find("\\boxed", k + 7) >= 0:
            return None, None
        i = match_brace(text, k + 6, n)
        if i is None:
            return None, None
        content = text[k + 7 : i].strip()
        prev = text.rfind("\\boxed", 0, k)
        if not content or (prev >= 0 and text.find("\n\n", prev, k) < 0):
            return None, None
        return content, "boxed"
    k = _rfind_cmd(text, "\\boxed{", 0, n)
    if k < 0 or _find_cmd(text, "\\fbox", k, n) >= 0 or _find_cmd(text, "\\boxed", k + 7, n) >= 0:
        return None, None
    end = match_brace(text, k + 6, len(text))
    if end is None:
        return None, None
    content = text[k + 7 : end].strip()
    prev = _rfind_cmd(text, "\\boxed", 0, k)
    if not content or (prev >= 0 and text.find("\n\n", prev, k) < 0) or _find_cmd(text, "\\fbox", 0, k) >= 0:
        return None, None
    return content, "boxed"


def _final_boxes(text: str) -> tuple[str | None, str | None]:
    """(answer, rule) from the boxes: the last box, or the set of boxes the final step lists as one answer."""
    boxes = _boxes_from_end(text)
    last = next(boxes, None)
    if last is None:
        return None, None
    listed = [last]
    step_start = text.rfind("\n\n", 0, last[1])
    for box in boxes:
        if box[1] < step_start or len(listed) >= _MAX_LISTED_BOXES:
            break
        between = text[box[2] : listed[-1][1]]
        if len(between) > 60 or not _BETWEEN_BOXES.fullmatch(between):
            break
        listed.append(box)
    contents = list(dict.fromkeys(c for c, _, _ in reversed(listed)))
    if len(contents) > 1:
        return ", ".join(contents), "boxes"
    return last[0], "boxed"


def _strip_sentence(s: str) -> str | None:
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


_NUMBER = re.compile(r"(?<![A-Za-z])[-+]?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?")
_ANY_SPAN = re.compile(r"(?<!\\)\$\$(.+?)(?<!\\)\$\$|(?<!\\)\$(.+?)(?<!\\)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.S)
_TAIL_CHARS = 4000  # lenient fallbacks look at the end of the text only: where a final answer is


def _last_span(text: str) -> tuple[str, int] | None:
    """(content, end) of the last non-empty math span of ``text``; an inline span (``$..$``, ``\\(..\\)``) that
    crosses a line break is no span (display math, ``$$..$$`` and ``\\[..\\]``, may)."""
    best = None
    for m in _ANY_SPAN.finditer(text):
        raw = next(g for g in m.groups() if g is not None)
        content = raw.strip()
        inline = m.group(2) is not None or m.group(3) is not None
        if content and len(content) <= MAX_ANSWER_CHARS and not (inline and "\n" in raw):
            best = (content, m.end())
    return best


def _last_number(text: str) -> tuple[str, int] | None:
    best = None
    for m in _NUMBER.finditer(text):
        best = (m.group(), m.end())
    return best


# Words that start prose about the answer rather than an answer in words: "the answer is correct", "... is not
# clear", "... is that ...", "... is as follows".
_PROSE_STARTS = frozenset(
    "correct incorrect wrong right not that this these those as in to the a an given below above clear obvious "
    "still also likely probably indeed now then therefore thus so because being what which how why if whether "
    "unknown undefined unclear same different".split()
)
_MAX_WORD_ANSWER = 3  # words in an answer written in words alone ("east", "no solution", "all real numbers")
_MATH_CHARS = re.compile(r"[\d=+*/^\\{}<>|$]")


def _from_sentence(sentence: str) -> str | None:
    """An answer sentence with words ("The largest $n$ is 34") gives its last math span or number (whichever ends
    last); a sentence of math alone ("x^2 + 1", "(A)") is the answer itself; words alone are an answer only when
    short and not prose (module docstring, rule 3)."""
    if not has_words(sentence.replace("$", " ")):
        return sentence
    found = [x for x in (_last_span(sentence), _last_number(sentence)) if x is not None]
    if found:
        return max(found, key=lambda x: x[1])[0]
    if _MATH_CHARS.search(sentence):
        return sentence
    words = sentence.split()
    if len(words) > _MAX_WORD_ANSWER or words[0].lower().strip("*_\"'") in _PROSE_STARTS:
        return None
    return sentence


_HASHES = "####"
_MAX_HASH_LINES = 64  # `####` lines tried from the end (Markdown headings before the final answer)


def _after_hashes(text: str) -> str | None:
    """GSM8K's final-answer line: the math after the last `####` (not part of a longer run of `#`) that is followed
    by math, not words, up to the end of its line."""
    end = len(text)
    for _ in range(_MAX_HASH_LINES):
        k = text.rfind(_HASHES, 0, end)
        if k < 0:
            return None
        end = k
        if (k > 0 and text[k - 1] == "#") or text.startswith("#", k + len(_HASHES)):
            continue
        line = text[k + len(_HASHES) : k + len(_HASHES) + MAX_ANSWER_CHARS + 1].split("\n", 1)[0]
        line = line.strip().strip("*").strip().rstrip(".").strip()
        if len(line) >= 2 and line[0] == "$" and line[-1] == "$" and "$" not in line[1:-1]:
            line = line[1:-1].strip()
        if line and len(line) <= MAX_ANSWER_CHARS and not has_words(line):
            return line
    return None


def _after_phrase(text: str) -> str | None:
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
    sentence = _strip_sentence(rest)
    return _from_sentence(sentence) if sentence else None


def extract_answer_with_rule(text: str, lenient: bool = False) -> tuple[str | None, str | None]:
    """(final answer or ``None``, the rule that gave it: one of `RULES`, or ``None``). Never raises."""
    try:
        if not isinstance(text, str) or not text:
            return None, None
        ans, rule = _one_final_box(text)
        if ans is None:
            ans, rule = _final_boxes(text)
        if ans is None and _HASHES in text:
            ans, rule = _after_hashes(text), "hashes"
        if ans is None:
            ans, rule = _after_phrase(text), "phrase"
        if ans is None and lenient:
            tail = text[-_TAIL_CHARS:]
            span = _last_span(tail)
            if span is not None:
                ans, rule = span[0], "last_math"
            else:
                num = _last_number(tail)
                ans, rule = (num[0], "last_number") if num is not None else (None, None)
        if ans is not None:
            ans = ans.strip()
        return (ans, rule) if ans else (None, None)
    except Exception:  # pragma: no cover  # noqa: BLE001 - defensive: extraction must never take a run down
        return None, None


def extract_answer(text: str, lenient: bool = False) -> str | None:
    """The final answer in ``text`` (see the module docstring), or ``None``. Never raises."""
    return extract_answer_with_rule(text, lenient)[0]
