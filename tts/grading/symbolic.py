"""The sympy / math_verify side of grading. Only ever imported and run inside the worker process
(`tts.grading.worker`), where every call is under the parent's wall-clock bound.

Model text is parsed exclusively by ``math_verify.parse`` restricted to ``LatexExtractionConfig`` (LaTeX through the
ANTLR grammar of ``latex2sympy2_extended``); math_verify's default extraction also includes ``ExprExtractionConfig``,
which would give plain-text expressions to sympy's ``parse_expr`` (Python ``eval``), so it is never used. No Python
evaluation of model text happens anywhere.

`canonical_key` maps a (normalised) answer to a string such that equal strings mean equivalent answers:

* numbers (anything sympy reduces to a constant): ``q:p/q`` when the value is rational -- the same key the
  pure-Python fast path gives, so ``\\frac{\\sqrt{4}}{2}`` and ``1`` vote together -- else ``n:`` and the value to
  12 significant digits (``c:`` with real and imaginary parts for complex values);
* expressions with free symbols: ``p:`` + the terms of ``cancel(expand(expr))`` when that is a polynomial with
  rational coefficients (`tts.grading.keys.poly_key`, canonical), else ``e:`` and its ``srepr`` (sympy's own
  ordering; equal keys still mean equal expressions, different keys decide nothing);
* sets, tuples, intervals, unions, matrices, equations: built from the keys of their parts (sets and unions
  sorted); an equation whose left side is a single symbol (``y = 2x + 3``) gets the key of its right side, since
  math_verify accepts ``2x + 3`` for it;
* anything math_verify cannot parse: ``None`` (the caller falls back to a string key).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from typing import Any

import sympy
from math_verify import LatexExtractionConfig, parse, verify
from sympy.core.relational import Relational

from tts.grading.keys import NOKEY, decide_by_keys, decimal_key, poly_key

#: LaTeX only: math_verify's default also tries `ExprExtractionConfig`, which hands plain-text expressions to sympy's
#: `parse_expr` -- Python evaluation of model text. Never enable it.
_EXTRACTION = [LatexExtractionConfig()]


def _parse(s: str) -> list[Any]:
    return parse("$" + s + "$", extraction_config=_EXTRACTION, parsing_timeout=None)


def _first_sympy(parsed: list[Any]) -> Any:
    for p in parsed:
        if not isinstance(p, str):
            return p
    return None


def _dec(x: Any) -> Decimal:
    return Decimal(str(sympy.Float(x, 30)))


def _num_key(e: sympy.Expr) -> str | None:
    if isinstance(e, sympy.Rational):
        return f"q:{e.p}/{e.q}"
    v = sympy.N(e, 30)
    re_, im_ = v.as_real_imag()
    if not (re_.is_Number and im_.is_Number):
        return None
    if any(x in (sympy.nan, sympy.zoo) for x in (re_, im_)):
        return None  # `3:0`, `\frac{1}{0}`: undefined values are not one value -- no key, the string decides
    if any(x in (sympy.oo, -sympy.oo) for x in (re_, im_)):
        return "x:" + sympy.srepr(e)
    return decimal_key(_dec(re_), _dec(im_))


def _is_rational_polynomial(e: sympy.Expr) -> bool:
    """An expanded polynomial with rational coefficients in ordinary symbols (not ``i``/``e``, which math_verify
    sometimes reads as constants and sometimes as symbols, with different assumptions)."""
    syms = e.free_symbols
    if not syms or any(s.name in ("i", "e", "E", "I") for s in syms):
        return False
    if not e.is_polynomial(*syms):
        return False
    try:
        return all(isinstance(c, sympy.Rational) for c in sympy.Poly(e, *sorted(syms, key=str)).coeffs())
    except Exception:  # noqa: BLE001 - sympy raises many types (PolynomialError, TypeError, ...): not a polynomial
        return False


def _parts(objs: Any) -> list[str] | None:
    """Keys of the parts of a structured answer; ``None`` if any part has none (the whole then has no key: two
    different unkeyable parts must not make two answers look equal)."""
    keys = [_key(x) for x in objs]
    return None if any(k is None for k in keys) else keys  # type: ignore[return-value]


def _key(obj: Any) -> str | None:
    if obj is None or _undefined(obj):
        return None  # `3:0`, `\frac{1}{0}`: undefined is no value -- no key, they equal nothing
    if isinstance(obj, sympy.MatrixBase):
        ks = _parts(obj)
        return None if ks is None else f"mat{obj.shape}[" + ";".join(ks) + "]"
    if isinstance(obj, sympy.Equality):
        if isinstance(obj.lhs, sympy.Symbol):
            # `y = 2x + 3` is its right side, as math_verify compares it with `2x + 3`
            return _key(obj.rhs)
        ks = _parts((obj.lhs, obj.rhs))
        return None if ks is None else f"eq:{ks[0]}={ks[1]}"
    if isinstance(obj, Relational):
        ks = _parts((obj.lhs, obj.rhs))
        return None if ks is None else f"rel:{type(obj).__name__}:{ks[0]}:{ks[1]}"
    if isinstance(obj, sympy.FiniteSet):
        ks = _parts(obj.args)
        if ks is None:
            return None
        elems = sorted(set(ks))
        return ("set{" if len(elems) > 1 else "set1{") + ",".join(elems) + "}"
    if isinstance(obj, (sympy.Tuple, tuple)):
        ks = _parts(obj)
        return None if ks is None else "tup(" + ",".join(ks) + ")"
    if isinstance(obj, sympy.Interval):
        ks = _parts((obj.start, obj.end))
        if ks is None:
            return None
        lo = "(" if obj.left_open else "["
        hi = ")" if obj.right_open else "]"
        return f"int{lo}{ks[0]},{ks[1]}{hi}"
    if isinstance(obj, sympy.Union):
        ks = _parts(obj.args)
        return None if ks is None else "uni{" + ",".join(sorted(ks)) + "}"
    if isinstance(obj, sympy.Set):
        return "setx:" + sympy.srepr(obj)
    if isinstance(obj, sympy.Expr):
        if obj.is_number:
            k = _num_key(obj)
            if k is not None:
                return k
        try:
            canon = sympy.cancel(sympy.expand(obj))
        except Exception:  # noqa: BLE001 - sympy raises many types on odd expressions: keep the uncancelled form
            canon = obj
        if canon.is_number and canon != obj:
            k = _num_key(canon)
            if k is not None:
                return k
        if _is_rational_polynomial(canon):
            syms = sorted(canon.free_symbols, key=lambda x: x.name)
            poly = sympy.Poly(canon, *syms)
            return poly_key(
                {
                    tuple((sym.name, int(e)) for sym, e in zip(syms, mono) if e): Fraction(int(c.p), int(c.q))
                    for mono, c in poly.terms()
                }
            )
        return "e:" + sympy.srepr(canon)
    if isinstance(obj, sympy.Basic):
        return "b:" + sympy.srepr(obj)
    return None


_CACHE_LIMIT = 200_000
_PARSED: dict[str, list[Any]] = {}
_KEYS: dict[str, str | None] = {}


def _parsed(norm: str) -> list[Any]:
    p = _PARSED.get(norm)
    if p is None:
        if len(_PARSED) > _CACHE_LIMIT:
            _PARSED.clear()
        p = _PARSED[norm] = _parse(norm)
    return p


def _exact(obj: Any) -> Any:
    """Decimals as exact rationals (``0.25`` -> 1/4, as the pure-Python path reads them), so that ``0.25\\pi`` gets
    the exact key of ``\\frac{\\pi}{4}``; and ``i`` as the imaginary unit when it is the only letter (``(2+i)(2-i)``
    is 5, ``3+4i`` a complex number)."""
    if not isinstance(obj, sympy.Basic):
        return obj
    floats = obj.atoms(sympy.Float)
    if floats:
        obj = obj.xreplace({f: sympy.Rational(str(f)) for f in floats if f.is_finite})
    syms = obj.free_symbols
    if syms and all(getattr(x, "name", None) == "i" for x in syms):
        obj = obj.xreplace({x: sympy.I for x in syms})
    return obj


def _undefined(obj: Any) -> bool:
    try:
        return isinstance(obj, sympy.Basic) and bool(obj.has(sympy.zoo, sympy.nan))
    except Exception:  # noqa: BLE001 - whatever sympy raises on an odd object: not known to be undefined
        return False


def canonical_key(norm: str) -> str | None:
    """Canonical key of a normalised answer (see the module docstring); ``None`` when it does not parse."""
    if norm in _KEYS:
        return _KEYS[norm]
    obj = _exact(_first_sympy(_parsed(norm)))
    k = _key(obj) if obj is not None else None
    if len(_KEYS) > _CACHE_LIMIT:
        _KEYS.clear()
    _KEYS[norm] = k
    return k


def safe_key(norm: str) -> str | None:
    """`canonical_key`, or NOKEY where sympy fails on the answer; running out of memory or recursion still raises."""
    try:
        return canonical_key(norm)
    except (MemoryError, RecursionError):
        raise  # out of resources: the caller reports "ungraded"
    except Exception:  # noqa: BLE001 - sympy raises many types; a key we cannot build is no reason not to ask math_verify
        return NOKEY


def equivalent(
    pred_norm: str,
    gold_norm: str,
    pred_key: str | None = None,
    gold_key: str | None = None,
    progress: Callable[[Any], None] | None = None,
) -> tuple[bool, str | None, str | None]:
    """Equivalence of two normalised answers, with the canonical keys of both (for the caller's caches):
    `tts.grading.keys.decide_by_keys` when the keys decide, else ``math_verify.verify(gold, pred)``. Keys the caller
    already knows (pure-Python fast path) are passed in and not recomputed; ``progress([pred_key, gold_key])`` is
    called once both keys are known."""
    kp = pred_key if pred_key is not None else safe_key(pred_norm)
    kg = gold_key if gold_key is not None else safe_key(gold_norm)
    if progress is not None:
        progress([kp, kg])  # the keys are known: if time runs out now, it was math_verify's comparison
    d = decide_by_keys(None if kp == NOKEY else kp, None if kg == NOKEY else kg)
    if d is not None:
        return d, kp, kg
    gold = _parsed(gold_norm)
    pred = _parsed(pred_norm)
    if not gold or not pred:
        return False, kp, kg
    if _undefined(_first_sympy(gold)) or _undefined(_first_sympy(pred)):
        return False, kp, kg  # `\frac{1}{0}` is no value: it equals nothing (math_verify: zoo == zoo)
    return bool(verify(gold, pred, timeout_seconds=None)), kp, kg


def plain_verify(answer: str, gold: str) -> bool:
    """Plain math_verify, as another project would call it, for `analysis.grading_audit`: both raw strings in ``$..$``,
    parsed by math_verify alone (LaTeX only: no Python evaluation of model text), ``verify(gold, answer)``."""
    g = _parse(gold)
    a = _parse(answer)
    return bool(g and a and verify(g, a, timeout_seconds=None))
