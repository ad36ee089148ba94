"""Key formats shared by the pure-Python fast path (`tts.grading.fastnum`) and the symbolic worker
(`tts.grading.symbolic`), so the same value gets the same key whichever path computed it. Pure Python.

* ``q:p/q``   -- an exact rational (``q:1/2``, ``q:-3/1``, ``q:0/1``);
* ``n:d.ddddddddddde±x`` -- a real irrational value to 12 significant digits (``n:1.41421356237e+0``);
* ``c:re,im`` -- a complex value, each part in one of the forms above without the prefix;
* ``x:oo`` / ``x:-oo`` -- infinities;
* structured keys: ``tup(k1,k2,..)``, ``int(k1,k2)`` / ``int[k1,k2)`` / ..., ``set{sorted keys}`` (``set1{k}`` for
  a single element),
  ``uni{sorted interval keys}``, ``mat(r, c)[k;k;..]``, ``eq:k=k``, ``e:<srepr>`` (expressions with free symbols),
  ``mc:A`` (multiple-choice letters), ``s:<normalised string>`` (fallback: equal only as strings).

A value is recognised as rational (``q:``) when it lies within a relative ``1e-24`` (``1e-12`` when it was computed
from decimals) of a fraction with denominator at most ``10**6``: ``\\sqrt{2}\\cdot\\sqrt{2}`` or ``\\log_2 8`` vote
with ``2`` and ``3``.
"""

from __future__ import annotations

import decimal
from decimal import Decimal
from fractions import Fraction

__all__ = ["rational_key", "decimal_key", "key_kind", "decide_by_keys", "NUMERIC_PREFIXES", "INF_KEY", "NEG_INF_KEY"]

NUMERIC_PREFIXES = ("q:", "n:", "c:")
INF_KEY = "x:oo"
NEG_INF_KEY = "x:-oo"

SIG_DIGITS = 12
MAX_RATIONAL_DEN = 10**6
_CTX30 = decimal.Context(prec=30, rounding=decimal.ROUND_HALF_EVEN, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)
_MAX_RATIONAL_EXP = 40  # values beyond 10**±40 are not tested for being a small-denominator fraction


def rational_key(v: Fraction) -> str:
    return f"q:{v.numerator}/{v.denominator}"


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


def key_kind(key: str) -> str | None:
    """Coarse kind of a key for `decide_by_keys`: num / expr / interval / tuple / set (several elements) / None."""
    if key.startswith(NUMERIC_PREFIXES):
        return "num"
    if key.startswith("e:"):
        return "expr"
    if key.startswith(("int(", "int[", "uni{")):
        return "interval"
    if key.startswith("tup("):
        return "tuple"
    if key.startswith("set{"):
        return "set"
    return None


#: Kinds that are never equal: a number is not a set, an interval or a tuple; an expression that still has free
#: symbols after ``cancel(expand(.))`` is not a number; order matters (a tuple or interval is not a set of several
#: values -- math_verify accepts ``(1,2)`` for ``\\{1,2\\}`` in one direction only; we refuse both ways).
DISJOINT = frozenset(
    frozenset(p)
    for p in (
        ("num", "expr"), ("num", "interval"), ("num", "tuple"), ("num", "set"), ("expr", "interval"),
        ("expr", "tuple"), ("expr", "set"), ("interval", "set"), ("tuple", "set"),
    )
)


def decide_by_keys(ka: str | None, kb: str | None) -> bool | None:
    """``True`` when the keys are equal, ``False`` when both are plain numbers (keys differ: exact for rationals, 12
    significant digits otherwise -- a decimal approximation of an irrational gold answer is wrong, as in MATH) or of
    `DISJOINT` kinds; ``None`` when only math_verify can tell."""
    if ka is None or kb is None:
        return None
    if ka == kb:
        return True
    if ka.startswith(NUMERIC_PREFIXES) and kb.startswith(NUMERIC_PREFIXES):
        return False
    if frozenset((key_kind(ka), key_kind(kb))) in DISJOINT:
        return False
    return None
