"""Key formats shared by the pure-Python fast path (`tts.grading.fastnum`) and the symbolic worker
(`tts.grading.symbolic`), so the same value gets the same key whichever path computed it. Pure Python.

* ``q:p/q``   -- an exact rational (``q:1/2``, ``q:-3/1``, ``q:0/1``);
* ``n:d.ddddddddddde±x`` -- a real irrational value to 12 significant digits (``n:1.41421356237e+0``);
* ``c:re,im`` -- a complex value, each part in one of the forms above without the prefix;
* ``x:oo`` / ``x:-oo`` -- infinities;
* structured keys: ``tup(k1,k2,..)``, ``int(k1,k2)`` / ``int[k1,k2)`` / ..., ``set{sorted keys}`` (``set1{k}`` for
  a single element),
  ``uni{sorted interval keys}``, ``mat(r, c)[k;k;..]``, ``eq:k=k``, ``e:<srepr>`` (expressions with free symbols;
  ``p:x,y|2.0:1/1;0.1:-3/2`` when it is a polynomial with rational coefficients: sorted variable names, then the
  sorted (exponents : coefficient) terms -- a canonical form, computed alike by both paths),
  ``mc:A`` (multiple-choice letters), ``s:<normalised string>`` (fallback: equal only as strings).

A value is recognised as rational (``q:``) when it lies within a relative ``1e-24`` of a fraction with denominator
at most ``10**6`` (both paths read decimals as exact rationals first, so ``0.25\\pi`` is never taken for a
fraction): ``\\sqrt{2}\\cdot\\sqrt{2}`` or ``\\log_2 8`` vote
with ``2`` and ``3``.
"""

from __future__ import annotations

import decimal
import re
from decimal import Decimal
from fractions import Fraction

__all__ = [
    "rational_key",
    "decimal_key",
    "poly_key",
    "key_kind",
    "decide_by_keys",
    "NUMERIC_PREFIXES",
    "INF_KEY",
    "NEG_INF_KEY",
    "NOKEY",
]

NUMERIC_PREFIXES = ("q:", "n:", "c:")
INF_KEY = "x:oo"
NEG_INF_KEY = "x:-oo"
#: Not a key: the answer parses, but building its key failed (the worker's answer; it decides nothing).
NOKEY = "__nokey__"

SIG_DIGITS = 12
MAX_RATIONAL_DEN = 10**6
_CTX30 = decimal.Context(prec=30, rounding=decimal.ROUND_HALF_EVEN, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)
_MAX_RATIONAL_EXP = 40  # values beyond 10**±40 are not tested for being a small-denominator fraction


def rational_key(v: Fraction) -> str:
    return f"q:{v.numerator}/{v.denominator}"


def poly_key(terms: dict) -> str:
    """Key of a polynomial given as ``{((name, exponent), ...): Fraction}`` (zero coefficients and zero exponents
    left out); a constant polynomial gets the rational key."""
    names = sorted({n for mono, c in terms.items() if c != 0 for n, e in mono if e != 0})
    if not names:
        return rational_key(sum((c for c in terms.values()), Fraction(0)))
    rows = sorted((tuple(dict(mono).get(n, 0) for n in names), c) for mono, c in terms.items() if c != 0)
    return (
        "p:"
        + ",".join(names)
        + "|"
        + ";".join(".".join(str(e) for e in exps) + f":{c.numerator}/{c.denominator}" for exps, c in rows)
    )


def _part(d: Decimal, rel: Fraction) -> str:
    """One real part: ``p/q`` when (nearly) rational, else 12 significant digits."""
    if d == 0:
        return "0/1"
    d = _CTX30.plus(d)
    if abs(d.adjusted()) > _MAX_RATIONAL_EXP:
        return format(d, f".{SIG_DIGITS - 1}e")
    f = Fraction(d)
    r = f.limit_denominator(MAX_RATIONAL_DEN)
    if abs(f - r) <= abs(f) * rel + rel / 100:
        return f"{r.numerator}/{r.denominator}"
    return format(d, f".{SIG_DIGITS - 1}e")


def decimal_key(re_: Decimal, im_: Decimal = Decimal(0), from_decimals: bool = False) -> str:
    """Key of the number ``re_ + i*im_`` given to (at least) 30 significant digits."""
    rel = Fraction(1, 10**12) if from_decimals else Fraction(1, 10**24)
    if im_ == 0 or abs(im_) <= abs(re_) * Decimal("1e-25") + Decimal("1e-27"):
        p = _part(re_, rel)
        return ("q:" if "/" in p else "n:") + p
    return f"c:{_part(re_, rel)},{_part(im_, rel)}"


# (key prefixes, kind), the first match deciding
_KINDS = (
    (NUMERIC_PREFIXES, "num"),
    ("p:", "poly"),
    ("e:", "expr"),
    ("mat(", "mat"),
    (("int(", "int[", "uni{"), "interval"),
    ("tup(", "tuple"),
    ("set{", "set"),
)


def key_kind(key: str) -> str | None:
    """Coarse kind of a key for `decide_by_keys`: num / expr / interval / tuple / set (several elements) / None."""
    return next((kind for prefixes, kind in _KINDS if key.startswith(prefixes)), None)


#: Kinds that are never equal: a number is not a set, an interval, a tuple or a matrix; a non-constant polynomial
#: (``p:``, canonical) is not a number; order matters (a tuple or interval is not a set of several values --
#: math_verify accepts ``(1,2)`` for ``\\{1,2\\}`` in one direction only; we refuse both ways). A general expression
#: (``e:``) against a number is left to math_verify: ``\\sin^2 x + \\cos^2 x`` is ``1``.
_SCALARS = ("num", "poly", "expr")
_COLLECTIONS = ("interval", "tuple", "set", "mat")
DISJOINT = frozenset(
    [frozenset(("num", "poly"))]
    + [frozenset((a, b)) for a in _SCALARS for b in _COLLECTIONS]
    + [
        frozenset(p)
        for p in (("interval", "set"), ("tuple", "set"), ("mat", "interval"), ("mat", "tuple"), ("mat", "set"))
    ]
)

_LEAF = r"(?:q:-?\d+/\d+|n:-?\d\.\d+e[-+]\d+|x:-?oo)"
_NUMERIC_STRUCTURE = re.compile(r"(?:tup\(|int[(\[]|uni\{|set1?\{|mat\(\d+, \d+\)\[|[,;)\]}]|" + _LEAF + r")+")
_FAMILIES = ("tup(", "int", "uni{", "set", "mat(")


def _family(key: str) -> str | None:
    """Structure family of a key made only of numeric leaves (tuples, intervals, sets, matrices), else None."""
    for f in _FAMILIES:
        if key.startswith(f):
            return f if _NUMERIC_STRUCTURE.fullmatch(key) else None
    return None


def decide_by_keys(ka: str | None, kb: str | None) -> bool | None:
    """``True`` when the keys are equal; ``False`` when they differ and are canonical for what they are -- two plain
    numbers (exact for rationals, 12 significant digits otherwise: a decimal approximation of an irrational gold
    answer is wrong, as in MATH), two expanded polynomials with rational coefficients (``p:``), two tuples / two
    intervals / two sets / two matrices whose entries are plain numbers, a tuple against an interval or union of
    plain numbers -- or of `DISJOINT` kinds; ``None`` when only math_verify can tell (e.g. a union against an
    interval, ``\\{3\\}`` against ``3``, general expressions)."""
    if ka is None or kb is None:
        return None
    if ka == kb:
        return True
    if ka.startswith(NUMERIC_PREFIXES) and kb.startswith(NUMERIC_PREFIXES):
        return False
    if ka.startswith("p:") and kb.startswith("p:"):
        return False  # polynomials with rational coefficients in expanded form: the form is canonical
    if frozenset((key_kind(ka), key_kind(kb))) in DISJOINT:
        return False
    fa, fb = _family(ka), _family(kb)
    if fa is not None and fa == fb and fa != "uni{":
        return False  # tuples / intervals / sets / matrices of plain numbers: the keys are canonical
    if fa is not None and fb is not None and "tup(" in (fa, fb) and {fa, fb} & {"int", "uni{"}:
        # math_verify reads `(a, b)` as an interval exactly when a < b, so a pair of numbers read as a tuple never
        # has the endpoints of an interval
        return False
    return None
