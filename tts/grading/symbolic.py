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

from decimal import Decimal
from typing import Any, Dict, List, Optional, Tuple

import sympy
from math_verify import parse, verify
from sympy.core.relational import Relational

from tts.grading.keys import decide_by_keys, decimal_key



def _parse(s: str) -> List[Any]:
    return parse("$" + s + "$", parsing_timeout=None)


def _first_sympy(parsed: List[Any]) -> Any:
    for p in parsed:
        if not isinstance(p, str):
            return p
    return None


def _dec(x: Any) -> Decimal:
    return Decimal(str(sympy.Float(x, 30)))


def _num_key(e: sympy.Expr) -> Optional[str]:
    if isinstance(e, sympy.Rational):
        return f"q:{e.p}/{e.q}"
    v = sympy.N(e, 30)
    re_, im_ = v.as_real_imag()
    if not (re_.is_Number and im_.is_Number):
        return None
    if any(x in (sympy.oo, -sympy.oo, sympy.nan, sympy.zoo) for x in (re_, im_)):
        return "x:" + sympy.srepr(e)
    # decimals reach sympy as Floats with ~15 significant digits: rationals are recognised at that precision
    return decimal_key(_dec(re_), _dec(im_), from_decimals=bool(e.atoms(sympy.Float)))


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
        elems = sorted({_key(x) or "?" for x in obj.args})
        return ("set{" if len(elems) > 1 else "set1{") + ",".join(elems) + "}"
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


def _safe_key(norm: str) -> Optional[str]:
    try:
        return canonical_key(norm)
    except Exception:  # a key we cannot build is no reason not to ask math_verify (MemoryError still propagates)
        _KEYS[norm] = None
        return None


def equivalent(
    pred_norm: str, gold_norm: str, pred_key: Optional[str] = None, gold_key: Optional[str] = None
) -> Tuple[bool, Optional[str], Optional[str]]:
    """Equivalence of two normalised answers, with the canonical keys of both (for the caller's caches):
    `tts.grading.keys.decide_by_keys` when the keys decide, else ``math_verify.verify(gold, pred)``. Keys the caller
    already knows (pure-Python fast path) are passed in and not recomputed."""
    kp = pred_key if pred_key is not None else _safe_key(pred_norm)
    kg = gold_key if gold_key is not None else _safe_key(gold_norm)
    d = decide_by_keys(kp, kg)
    if d is not None:
        return d, kp, kg
    gold = _parsed(gold_norm)
    pred = _parsed(pred_norm)
    if not gold or not pred:
        return False, kp, kg
    return bool(verify(gold, pred, timeout_seconds=None)), kp, kg
