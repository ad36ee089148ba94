"""Key formats shared by the pure-Python fast path (`tts.grading.fastnum`) and the symbolic worker
(`tts.grading.symbolic`), so the same value gets the same key whichever path computed it. Pure Python.

* ``q:p/q``   -- an exact rational (``q:1/2``, ``q:-3/1``, ``q:0/1``);
* ``n:d.ddddddddddde±x`` -- a real irrational value to 12 significant digits (``n:1.41421356237e+0``);
* ``c:re,im`` -- a complex value, each part in one of the forms above without the prefix;
* ``x:oo`` / ``x:-oo`` -- infinities;
* structured keys: ``tup(k1,k2,..)``, ``int(k1,k2)`` / ``int[k1,k2)`` / ..., ``set{sorted keys}``,
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

__all__ = ["rational_key", "decimal_key", "NUMERIC_PREFIXES", "INF_KEY", "NEG_INF_KEY"]

NUMERIC_PREFIXES = ("q:", "n:", "c:")
INF_KEY = "x:oo"
NEG_INF_KEY = "x:-oo"

SIG_DIGITS = 12
MAX_RATIONAL_DEN = 10**6
_CTX30 = decimal.Context(prec=30, rounding=decimal.ROUND_HALF_EVEN)


def rational_key(v: Fraction) -> str:
    return f"q:{v.numerator}/{v.denominator}"


def _part(d: Decimal, rel: Fraction) -> str:
    """One real part: ``p/q`` when (nearly) rational, else 12 significant digits."""
    if d == 0:
        return "0/1"
    d = _CTX30.plus(d)
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
