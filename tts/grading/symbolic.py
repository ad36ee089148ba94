"""The sympy / math_verify side of grading. Only ever imported and run inside the worker process
(`tts.grading.worker`), where every call is under the parent's wall-clock bound.

Model text is parsed exclusively by ``math_verify.parse`` (LaTeX through the ANTLR grammar of
``latex2sympy2_extended``): no Python evaluation of model text happens anywhere.

`canonical_key` maps a (normalised) answer to a string such that equal strings mean equivalent answers:

* numbers (anything sympy reduces to a constant): ``q:p/q`` when the value is rational -- the same key the
  pure-Python fast path gives, so ``\\frac{\\sqrt{4}}{2}`` and ``1`` vote together -- else ``n:`` and the value to
  12 significant digits (``c:`` with real and imaginary parts for complex values);
* expressions with free symbols: ``e:`` and the ``srepr`` of ``cancel(expand(expr))`` (a canonical form for rational
  functions; other expressions keep sympy's own canonical ordering);
* sets, tuples, intervals, unions, matrices, equations: built from the keys of their parts (sets and unions sorted);
* anything math_verify cannot parse: ``None`` (the caller falls back to a string key).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Dict, List, Optional, Tuple

import sympy
from math_verify import parse, verify
from sympy.core.relational import Relational

_SIG_DIGITS = 12
_MAX_RATIONAL_DEN = 10**6


def _parse(s: str) -> List[Any]:
    return parse("$" + s + "$", parsing_timeout=None)


def _first_sympy(parsed: List[Any]) -> Any:
    for p in parsed:
        if not isinstance(p, str):
            return p
    return None


def _num_key(e: sympy.Expr) -> Optional[str]:
    if isinstance(e, sympy.Rational):
        return f"q:{e.p}/{e.q}"
    # Decimals that reach sympy as Floats carry ~15 significant digits: recognise rationals at that precision.
    rel = Fraction(1, 10**12) if e.atoms(sympy.Float) else Fraction(1, 10**24)
    v = sympy.N(e, 30)
    re_, im_ = v.as_real_imag()
    if not (re_.is_Number and im_.is_Number):
        return None
    if re_.has(sympy.oo, -sympy.oo, sympy.nan, sympy.zoo) or im_.has(sympy.oo, -sympy.oo, sympy.nan, sympy.zoo):
        return "x:" + sympy.srepr(e)

    def one(x: sympy.Number) -> str:
        if x == 0:
            return "0"
        f = Fraction(str(sympy.Float(x, 30)))
        r = f.limit_denominator(_MAX_RATIONAL_DEN)
        if abs(f - r) <= abs(f) * rel + rel / 100:
            return f"{r.numerator}/{r.denominator}"
        return sympy.Float(x, 30).__format__(f".{_SIG_DIGITS - 1}e")

    if abs(im_) <= abs(re_) * sympy.Float("1e-25") + sympy.Float("1e-27"):
        k = one(re_)
        return ("q:" if "/" in k or k == "0" else "n:") + (k if k != "0" else "0/1")
    return f"c:{one(re_)},{one(im_)}"


def _key(obj: Any) -> Optional[str]:
    if obj is None:
        return None
    if isinstance(obj, sympy.MatrixBase):
        return f"mat{obj.shape}[" + ";".join(_key(x) or "?" for x in obj) + "]"
    if isinstance(obj, (sympy.Equality,)):
        return f"eq:{_key(obj.lhs)}={_key(obj.rhs)}"
    if isinstance(obj, Relational):
        return f"rel:{type(obj).__name__}:{_key(obj.lhs)}:{_key(obj.rhs)}"
    if isinstance(obj, sympy.FiniteSet):
        return "set{" + ",".join(sorted(_key(x) or "?" for x in obj.args)) + "}"
    if isinstance(obj, sympy.Tuple) or isinstance(obj, tuple):
        return "tup(" + ",".join(_key(x) or "?" for x in obj) + ")"
    if isinstance(obj, sympy.Interval):
        lo = "(" if obj.left_open else "["
        hi = ")" if obj.right_open else "]"
        return f"int{lo}{_key(obj.start)},{_key(obj.end)}{hi}"
    if isinstance(obj, sympy.Union):
        return "uni{" + ",".join(sorted(_key(x) or "?" for x in obj.args)) + "}"
    if isinstance(obj, sympy.Set):
        return "setx:" + sympy.srepr(obj)
    if isinstance(obj, sympy.Expr):
        if obj.is_number:
            k = _num_key(obj)
            if k is not None:
                return k
        try:
            canon = sympy.cancel(sympy.expand(obj))
        except Exception:
            canon = obj
        if canon.is_number and canon != obj:
            k = _num_key(canon)
            if k is not None:
                return k
        return "e:" + sympy.srepr(canon)
    if isinstance(obj, sympy.Basic):
        return "b:" + sympy.srepr(obj)
    return None


_CACHE_LIMIT = 200_000
_PARSED: Dict[str, List[Any]] = {}
_KEYS: Dict[str, Optional[str]] = {}


def _parsed(norm: str) -> List[Any]:
    p = _PARSED.get(norm)
    if p is None:
        if len(_PARSED) > _CACHE_LIMIT:
            _PARSED.clear()
        p = _PARSED[norm] = _parse(norm)
    return p


def canonical_key(norm: str) -> Optional[str]:
    """Canonical key of a normalised answer (see the module docstring); ``None`` when it does not parse."""
    if norm in _KEYS:
        return _KEYS[norm]
    obj = _first_sympy(_parsed(norm))
    k = _key(obj) if obj is not None else None
    if len(_KEYS) > _CACHE_LIMIT:
        _KEYS.clear()
    _KEYS[norm] = k
    return k


_NUMERIC_PREFIXES = ("q:", "n:", "c:")


def _ordered(obj: Any) -> bool:
    return isinstance(obj, (sympy.Tuple, tuple, sympy.Interval))


def _unordered(obj: Any) -> bool:
    return isinstance(obj, sympy.FiniteSet) and len(obj) > 1


def _kind(key: Optional[str], obj: Any) -> Optional[str]:
    if key is None:
        return None
    if key.startswith(_NUMERIC_PREFIXES):
        return "num"
    if key.startswith("e:"):
        return "expr"
    if key.startswith(("int", "uni{")):
        return "interval"
    if key.startswith("tup("):
        return "tuple"
    if key.startswith("set{"):
        return "set" if _unordered(obj) else None
    return None


#: Pairs of kinds that are never equal: a number is not a set, an interval or a tuple, and (after
#: ``cancel(expand(.))``) an expression that still has free symbols is not a number.
_DISJOINT = {
    frozenset(p)
    for p in (
        ("num", "expr"), ("num", "interval"), ("num", "tuple"), ("num", "set"), ("expr", "interval"),
        ("expr", "tuple"), ("expr", "set"), ("interval", "set"), ("tuple", "set"),
    )
}


def equivalent(pred_norm: str, gold_norm: str) -> Tuple[bool, Optional[str], Optional[str]]:
    """Equivalence of two normalised answers, with the canonical keys of both (for the caller's caches).

    1. equal canonical keys -> equivalent;
    2. both plain numbers (``q:``/``n:``/``c:`` keys) with different keys -> not equivalent (exact for rationals,
       12 significant digits otherwise; a decimal approximation of an irrational gold answer is wrong, as in MATH);
    3. answers of disjoint kinds (`_DISJOINT`: number / expression with free symbols / interval or union / tuple /
       set of several values) -> not equivalent. This keeps order significant both ways (math_verify accepts
       ``(1,2)`` for ``\\{1,2\\}`` in one direction only) and avoids most calls to ``verify``, the expensive part;
    4. otherwise ``math_verify.verify(gold, pred)``.
    """
    kp, kg = canonical_key(pred_norm), canonical_key(gold_norm)
    if kp is not None and kp == kg:
        return True, kp, kg
    if kp is not None and kg is not None and kp.startswith(_NUMERIC_PREFIXES) and kg.startswith(_NUMERIC_PREFIXES):
        return False, kp, kg
    gold = _parsed(gold_norm)
    pred = _parsed(pred_norm)
    if not gold or not pred:
        return False, kp, kg
    og, op = _first_sympy(gold), _first_sympy(pred)
    if (_ordered(og) and _unordered(op)) or (_unordered(og) and _ordered(op)):
        return False, kp, kg
    if frozenset((_kind(kp, op), _kind(kg, og))) in _DISJOINT:
        return False, kp, kg
    return bool(verify(gold, pred, timeout_seconds=None)), kp, kg
