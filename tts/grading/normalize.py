"""String normalisation of answers, and the pure-Python numeric fast path.

Every rewrite below is applied to both the prediction and the gold answer before anything else, so it only has to
be *sound* (never make two different MATH answers equal) for the answer formats of MATH, not complete:

* surrounding ``$``/``\\(\\)``/``\\[\\]`` and whole-answer ``\\boxed{}``/``\\fbox{}`` wrappers are dropped
  (the box was already used for extraction; gold answers sometimes keep one);
* ``\\dfrac``/``\\tfrac`` -> ``\\frac``, ``\\left``/``\\right``/``\\displaystyle`` and LaTeX spacing
  (``\\!``, ``\\,``, ``\\;``, ``\\:``, ``\\quad``, ``~``) are dropped: pure typography;
* ``\\text{..}``, ``\\textbf{..}``, ``\\mathrm{..}``, ``\\mbox{..}`` (and ``\\textit``, ``\\textrm``, ``\\mathbf``,
  ``\\textnormal``) are unwrapped to their content, as a separate word: MATH writes both ``\\text{(A)}`` and
  ``(A)``, ``5\\text{ cm}`` and ``5``;
* degree marks (``^\\circ``, ``^{\\circ}``, ``°``, ``\\degree``) and percent signs (``\\%``, ``%``) are dropped:
  MATH gold answers are inconsistent about them (``30^\\circ`` vs ``30``; ``50\\%`` vs ``50``); note that this makes
  ``50\\%`` equal to ``50``, not to ``0.5``;
* a leading ``\\$`` and a trailing unit word after a number (``cm``, ``inches``, ``dollars``, ``square units``, ...;
  a separate word, so ``2m`` stays an expression) are dropped: the problem fixes the unit, the answer is the number;
* thousands separators: ``1{,}000`` always, and ``1,000``/``12,345,678`` when the whole answer is digits in groups of
  three (a list of numbers would not have every later item exactly three digits long);
* a leading ``x =`` / ``f(x) =`` / ``x \\in`` with a single-variable left side is dropped when the right side has no
  letters (``x = 3`` means the answer ``3``; ``y = 2x + 3`` is kept as an equation);
* multiple-choice letters: ``(A)``, ``A)``, ``\\text{(A)}``, ``\\textbf{(A)}`` -> ``A``;
* mixed numbers ``2\\frac{1}{2}`` are read as ``5/2`` (MATH's convention; LaTeX parsers read a product), also
  written with a space: ``5 1/3`` is ``16/3``;
* ``12,\\! 345`` (a thousands comma with ``\\!`` and a space) is ``12345``; ``7\\text{ m}^2`` is ``7`` (a space
  before ``^`` is dropped, so the unit keeps its exponent and is dropped whole);
* inside ``\\sin``, ``\\cos``, ... degrees become radians (``\\cos 60^\\circ`` is ``\\frac12``, not ``\\cos 60``);
* prose around a single math span (``so $y < 2$ works``) is dropped: the span is the answer (`_inner_math`);
* a trailing full stop and all whitespace runs are collapsed.

`string_only` answers (words, times and ratios, numbers separated by a space, prose left with math inside) are
compared as strings only (`string_key`): a math parser misreads them.

`numeric_value` then recognises plain numbers (integers, decimals, ``a/b``, ``\\frac{a}{b}``, signs, mixed numbers,
scientific notation with small exponents) and returns an exact `fractions.Fraction`, so these never need sympy.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from tts.grading.braces import match_brace

__all__ = ["normalize_answer", "numeric_value", "is_mc_letter", "huge_integer_log10", "string_only", "string_key"]

_WRAPPERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))

_TEXT_CMDS = ("\\text", "\\textbf", "\\textit", "\\textrm", "\\mathrm", "\\mathbf", "\\mbox", "\\textnormal")

_UNITS = sorted(
    {
        "cm",
        "centimeter",
        "centimeters",
        "centimetre",
        "centimetres",
        "mm",
        "millimeter",
        "millimeters",
        "m",
        "meter",
        "meters",
        "metre",
        "metres",
        "km",
        "kilometer",
        "kilometers",
        "in",
        "inch",
        "inches",
        "ft",
        "foot",
        "feet",
        "yd",
        "yard",
        "yards",
        "mile",
        "miles",
        "mph",
        "units",
        "unit",
        "sq units",
        "square units",
        "square unit",
        "square feet",
        "square inches",
        "square meters",
        "square centimeters",
        "cubic units",
        "cubic feet",
        "cubic inches",
        "cubic centimeters",
        "degrees",
        "degree",
        "dollars",
        "dollar",
        "cents",
        "cent",
        "seconds",
        "second",
        "minutes",
        "minute",
        "hours",
        "hour",
        "days",
        "day",
        "weeks",
        "years",
        "year",
        "pounds",
        "pound",
        "lbs",
        "ounces",
        "grams",
        "gram",
        "kg",
        "kilograms",
        "liters",
        "litres",
        "gallons",
        "people",
        "students",
        "ways",
        "sq ft",
        "sq in",
        "sq cm",
        "sq m",
        "cm^2",
        "m^2",
        "in^2",
        "ft^2",
        "cm^3",
        "m^3",
        "in^3",
        "ft^3",
        "percent",
        "radians",
        "points",
        "handshakes",
        "marbles",
        "boxes",
        "books",
    },
    key=len,
    reverse=True,
)
# A unit must be a separate word (`5 m`, `5\text{ m}`), so that `2m` or `3x` (expressions) are left alone.
_UNIT_RE = re.compile(
    r"^(?P<num>[-+]?[\d.,/{}\\a-z]*?\d[\d.,}]*)\s+(?:" + "|".join(re.escape(u) for u in _UNITS) + r")\.?$"
)

_MC_RE = re.compile(r"^\(?\s*([A-E])\s*\)?$")
_THOUSANDS_RE = re.compile(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_EQ_PREFIX_RE = re.compile(
    r"^(?:[a-zA-Z]|\\[a-zA-Z]+|[a-zA-Z]\([a-zA-Z]\)|[a-zA-Z]_\{?\w\}?)"
    r"\s*(?:=|\\in)\s*(?P<rhs>.+)$"
)

_INT = r"\d+"
_DEC = r"(?:\d+\.\d*|\.\d+|\d+)"
_NUM_RE = re.compile(r"^(?P<sign>[-+]?)(?P<num>" + _DEC + r")(?:[eE](?P<exp>[-+]?\d{1,3}))?$")
_SLASH_RE = re.compile(r"^(?P<sign>[-+]?)(?P<a>" + _DEC + r")/(?P<b>" + _DEC + r")$")
_FRAC_RE = re.compile(
    r"^(?P<sign>[-+]?)(?P<whole>" + _INT + r")?\\frac(?:\{(?P<a>[-+]?" + _DEC + r")\}|(?P<a1>\d))"
    r"(?:\{(?P<b>[-+]?" + _DEC + r")\}|(?P<b1>\d))$"
)

MAX_NUMBER_CHARS = 60  # longer digit strings are not put through Fraction (still exact, but keep it cheap)


def _unwrap_command(s: str, cmd: str) -> str:
    """Replace every ``cmd{X}`` in ``s`` by ``X`` (balanced braces; linear)."""
    out = []
    i = 0
    n = len(s)
    while True:
        k = s.find(cmd + "{", i)
        if k < 0:
            out.append(s[i:])
            break
        # `\textbf{` must not be matched by `\text` + `{`: find() with the brace ensures the command ends here.
        out.append(s[i:k])
        j = k + len(cmd)
        m = match_brace(s, j, n)
        if m is None:  # unbalanced: leave the rest as is
            out.append(s[k:])
            break
        out.append(" " + s[j + 1 : m] + " ")  # `5\mathrm{cm}` -> `5 cm `: the unit stays a separate word
        i = m + 1
    return "".join(out)


def _strip_wrappers(s: str) -> str:
    changed = True
    while changed and s:
        changed = False
        s = s.strip()
        for a, b in _WRAPPERS:
            if len(s) >= len(a) + len(b) and s.startswith(a) and s.endswith(b):
                s = s[len(a) : len(s) - len(b)]
                changed = True
                break
        for cmd in ("\\boxed", "\\fbox"):
            if s.startswith(cmd + "{") and s.endswith("}"):
                inner = s[len(cmd) + 1 : -1]
                # only when the first brace closes at the very end
                depth = 0
                ok = True
                i = 0
                while i < len(inner):
                    c = inner[i]
                    if c == "\\":
                        i += 2
                        continue
                    if c == "{":
                        depth += 1
                    elif c == "}":
                        depth -= 1
                        if depth < 0:
                            ok = False
                            break
                    i += 1
                if ok and depth == 0:
                    s = inner
                    changed = True
    return s.strip()


def normalize_answer(ans: str) -> str:
    """Normalised form of an answer string (see the module docstring for every rewrite and why)."""
    s = ans.strip()
    s = _strip_wrappers(s)
    s = _inner_math(s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    # `12,\! 345`: a thousands separator written with a thin negative space (and a space after it)
    s = re.sub(r"(?<=\d),\s*\\!\s*(?=\d{3}(?!\d))", ",", s)
    # degrees inside a trigonometric function keep their meaning: `\cos 60^\circ` is cos(pi/3), not cos(60)
    if _TRIG_RE.search(s):
        s = _DEGREES_RE.sub(lambda m: "(\\frac{" + m.group(1) + "\\pi}{180})", s)
    for cmd in ("\\left", "\\right"):
        s = re.sub(re.escape(cmd) + r"(?![a-zA-Z])\s*", "", s)
    s = s.replace("\\displaystyle", "")
    s = re.sub(r"\\varnothing(?![a-zA-Z])", r"\\emptyset", s)  # two spellings of the empty set
    # spacing commands (a `\\` row separator followed by a space or comma is not one)
    s = re.sub(r"(?<!\\)\\[,;:!]", "", s)
    s = re.sub(r"(?<!\\)\\(?:qquad(?![a-zA-Z])|quad(?![a-zA-Z])|\s)", " ", s).replace("~", " ")
    # degree marks and percent signs
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|°|\\degree", "", s)
    s = s.replace("\\%", "").replace("%", "")
    # thousands separators written with braces
    s = s.replace("{,}", ",") if re.search(r"\d\{,\}\d", s) else s
    for cmd in _TEXT_CMDS:
        if cmd + "{" in s:
            s = _unwrap_command(s, cmd)
    s = _strip_wrappers(s)
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r" \^", "^", s)  # `7\text{ m}^2` -> `7 m^2`: the exponent belongs to the unit
    if s.endswith(".") and not s.endswith(".."):
        s = s[:-1].strip()
    # dollars
    if s.startswith("\\$"):
        s = s[2:].strip()
    elif s.startswith("$") and not s.endswith("$"):
        s = s[1:].strip()
    if s.endswith("\\$"):
        s = s[:-2].strip()
    # units after a number
    m = _UNIT_RE.match(s) if len(s) < 80 else None
    if m:
        s = m.group("num").strip()
    # multiple-choice letters
    m = _MC_RE.match(s)
    if m:
        return m.group(1)
    # `x = 3` -> `3` (right side without letters)
    m = _EQ_PREFIX_RE.match(s) if len(s) < 400 else None
    if m:
        rhs = m.group("rhs").strip()
        if "=" not in rhs and not re.search(r"[a-zA-Z]", re.sub(r"\\[a-zA-Z]+", "", rhs)):
            s = rhs
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    s = re.sub(r"\s+", " ", s).strip()
    m = _SPACED_MIXED_RE.match(s)
    if m:  # `5 1/3` is the mixed number 16/3 (MATH's convention), written with a space
        whole, a, b = int(m.group(2)), int(m.group(3)), int(m.group(4))
        if 0 < a < b:
            s = f"{m.group(1)}\\frac{{{whole * b + a}}}{{{b}}}"
    return s


_TRIG_RE = re.compile(r"\\(?:sin|cos|tan|sec|csc|cot)(?![a-zA-Z])")
_DEGREES_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|°|\\degree(?![a-zA-Z]))")
_SPACED_MIXED_RE = re.compile(r"^([-+]?)(\d{1,9}) (\d{1,9})/(\d{1,9})$")
_SPAN_RE = re.compile(r"(?<!\\)\$\$(.+?)(?<!\\)\$\$|(?<!\\)\$(.+?)(?<!\\)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.S)
_NEGATIONS = re.compile(r"\b(?:not|no|never|except|cannot|can't|isn't|nor|unless|but)\b", re.I)
_PROSE_RE = re.compile(r"^[A-Za-z\s,.;:!'\-]*$")
_MAX_INNER_MATH_CHARS = 2000


def _inner_math(s: str) -> str:
    """Prose around one math span (``so $y < 2$ works``) -> the span, so the answer is keyed by its mathematics,
    never by its leading words. Several spans, a negation, or anything but words outside the span: unchanged (and
    `string_only` then keeps the answer to its string key)."""
    if len(s) > _MAX_INNER_MATH_CHARS or not ("$" in s or "\\(" in s or "\\[" in s):
        return s
    spans = list(_SPAN_RE.finditer(s))
    if len(spans) != 1:
        return s
    m = spans[0]
    outside = s[: m.start()] + " " + s[m.end() :]
    if not _PROSE_RE.match(outside) or _NEGATIONS.search(outside):
        return s
    return next(g for g in m.groups() if g is not None).strip()


#: Names that may appear as letter runs in a LaTeX answer without being words.
_MATH_NAMES = frozenset(
    "sin cos tan sec csc cot arcsin arccos arctan sinh cosh tanh log ln lg exp lim max min gcd lcm det mod deg "
    "sup inf ker dim arg pi sqrt frac cdot infty".split()
)
#: Two-letter English words: `xy` is a product, `or` and `is` are not.
_SHORT_WORDS = frozenset("or is of in at to be no so an as by if it on up we and".split())
_LATEX_NAMED_GROUP = re.compile(r"\\(?:begin|end|operatorname|mathbb|mathcal|mathfrak|mathscr)\s*\{[^{}]*\}")
_LATEX_CMD = re.compile(r"\\[a-zA-Z]+")
_LETTER_RUN = re.compile(r"[A-Za-z]{2,}")
_COLON_NUMBERS = re.compile(r"\d\s*:\s*\d")
_SPACED_NUMBERS = re.compile(r"(?<![\d._^])\d+(?:\.\d+)?\s+\.?\d")  # not `\log_2 8`


def has_words(norm: str) -> bool:
    """Whether a normalised answer contains a word (``east``, ``no solution``): a run of three or more letters that
    is not a math name, or a two-letter English word."""
    if len(norm) > 5000:
        return True
    t = _LATEX_CMD.sub(" ", _LATEX_NAMED_GROUP.sub(" ", norm))
    for m in _LETTER_RUN.finditer(t):
        w = m.group()
        low = w.lower()
        if len(w) >= 3 and low not in _MATH_NAMES:
            return True
        if len(w) == 2 and low in _SHORT_WORDS:
            return True
    return False


def string_only(norm: str) -> bool:
    """Answers compared only as strings, never given a mathematical key, because a math parser misreads them:

    * words (``\\text{east}`` is not the product e*a*s*t, so it must not equal ``\\text{seat}``);
    * times of day and ratios (``3:15`` is not 3/15; ``3:4`` is kept as written, not the fraction 3/4, since a
      parser cannot tell a ratio from a time);
    * numbers separated by a space (``4 5`` is not 45; mixed numbers ``5 1/3`` were rewritten before);
    * prose left with math inside (several spans, a negation: see `_inner_math`)."""
    return bool("$" in norm or _COLON_NUMBERS.search(norm) or _SPACED_NUMBERS.search(norm) or has_words(norm))


def string_key(norm: str) -> str:
    """The key of a `string_only` answer: its normalised text (no spaces around ``:``); words compared without
    case. Other spaces stay: ``1 23`` and ``12 3`` must differ."""
    t = re.sub(r"\s*:\s*", ":", norm)
    return "s:" + (t.casefold() if has_words(norm) else t)


def is_mc_letter(norm: str) -> bool:
    return len(norm) == 1 and norm in "ABCDE"


def _dec(s: str) -> Fraction:
    return Fraction(s)


def numeric_value(norm: str) -> Fraction | None:
    """Exact value of a plain number (see the module docstring), else ``None``. Pure Python, no sympy."""
    if not norm or len(norm) > MAX_NUMBER_CHARS:
        return None
    s = norm.replace(" ", "")
    if s.startswith("{") and s.endswith("}") and s.count("{") == 1:
        s = s[1:-1]
    try:
        m = _NUM_RE.match(s)
        if m:
            v = _dec(m.group("num"))
            if m.group("exp"):
                v *= Fraction(10) ** int(m.group("exp"))
            return -v if m.group("sign") == "-" else v
        m = _SLASH_RE.match(s)
        if m:
            b = _dec(m.group("b"))
            if b == 0:
                return None
            v = _dec(m.group("a")) / b
            return -v if m.group("sign") == "-" else v
        m = _FRAC_RE.match(s)
        if m:
            a = _dec(m.group("a") if m.group("a") is not None else m.group("a1"))
            b = _dec(m.group("b") if m.group("b") is not None else m.group("b1"))
            if b == 0:
                return None
            v = a / b
            if m.group("whole"):
                if v < 0:
                    return None
                v = int(m.group("whole")) + v
            return -v if m.group("sign") == "-" else v
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return None


_TOWER_RE = re.compile(r"^(\d{1,50})\s*\^\s*(?:\{(.+)\}|(\d{1,50}))$")
_FACT_RE = re.compile(r"^(\d{1,50})\s*!$")


def _log10_int_expr(s: str, depth: int = 0) -> float | None:
    """log10 of a positive-integer power tower (``a^{b^{c}}``, every base >= 2) or factorial, else ``None``."""
    s = s.strip()
    if depth > 50:
        return None
    if s.startswith("{") and s.endswith("}"):
        s = s[1:-1].strip()
    if s.isdigit():
        v = int(s)
        return math.log10(v) if v > 0 else None
    m = _FACT_RE.match(s)
    if m:
        n = int(m.group(1))
        return math.lgamma(n + 1) / math.log(10) if n < 10**300 else math.inf
    m = _TOWER_RE.match(s)
    if m:
        base = int(m.group(1))
        if base < 2:
            return None
        exp_log = _log10_int_expr(m.group(2) if m.group(2) is not None else m.group(3), depth + 1)
        if exp_log is None:
            return None
        if exp_log > 300:
            return math.inf
        return (10.0**exp_log) * math.log10(base)
    return None


def huge_integer_log10(norm: str) -> float | None:
    """For answers that are plainly a positive integer written as a power tower or a factorial (``10^{10^{10}}``,
    ``100000!``), ``log10`` of the value (may be ``inf``), computed with floats in pure Python; else ``None``.

    Used to keep such answers away from sympy, which would try to build the integer: an answer with more than
    `tts.grading.grader.HUGE_LOG10` digits cannot equal a plain-number gold answer (at most 60 characters), so that
    comparison is decided "False" soundly, and any other comparison is reported ungraded."""
    if len(norm) > 300 or ("^" not in norm and "!" not in norm):
        return None
    try:
        return _log10_int_expr(norm)
    except (ValueError, OverflowError, RecursionError):
        return None
