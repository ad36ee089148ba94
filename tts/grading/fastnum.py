"""Pure-Python keys for the common non-trivial answers, so they never need the (slow: 5-25 ms per answer, for the
ANTLR parse alone) symbolic worker:

* constant arithmetic in LaTeX: numbers, ``+ - \\cdot \\times * /``, implicit multiplication (``2\\sqrt{3}``),
  ``\\frac{a}{b}``, ``\\sqrt{x}``, ``\\sqrt[n]{x}``, ``\\pi``, integer and fractional powers, ``(..)``/``{..}``;
  evaluated exactly with `fractions.Fraction` while possible, else with 50-digit `decimal` arithmetic, and keyed with
  `tts.grading.keys.decimal_key` -- the same key the worker computes from sympy, so ``\\frac{\\sqrt2}{2}`` here and
  ``\\frac{1}{\\sqrt{2}}`` there (or here) agree;
* polynomials with rational coefficients in single-letter variables (``x^2 + 2x + 1``, ``(x+1)(x-1)``, ``2xy``),
  expanded exactly and keyed with `tts.grading.keys.poly_key`, as the worker keys them; letters that math_verify
  reads otherwise (``e``, ``i``, runs containing ``d``/``l``/``o`` such as ``dx``, ``ln``, ``or``) and decimals in
  polynomials (sympy keeps them as floats) are left to the worker;
* tuples / intervals / sets whose elements are such constants (or ``\\pm\\infty``), keyed like the worker keys
  what math_verify parses: ``(a, b)`` is an open interval when ``a < b`` and an ordered pair otherwise, ``[a, b]`` a
  closed interval when ``a < b``, three or more elements in brackets a tuple, ``\\{..\\}`` and bare comma lists
  sets.

Anything else (functions, ``!``, unions, division by a polynomial, ambiguous ``1/2\\pi``, a number followed by
``\\frac`` -- a mixed number or a product?, ``x2``) returns ``None`` and goes to the worker. This is a parser for a
small grammar, not an evaluator of model text, and sizes are bounded (length, nesting, exponents, digits, terms).
Tests check that both paths give the same keys (``tests/test_grading.py::test_fast_keys_match_worker``).
"""

from __future__ import annotations

import decimal
from decimal import Decimal
from fractions import Fraction

from tts.grading.keys import INF_KEY, NEG_INF_KEY, decimal_key, poly_key, rational_key

__all__ = ["fast_key", "huge_power_degree"]

Num = Fraction | Decimal

_CTX = decimal.Context(prec=50, Emax=10**6, Emin=-(10**6))
_PI = Decimal("3.14159265358979323846264338327950288419716939937510582097494459")
_MAX_LEN = 200
_MAX_DEPTH = 100  # `((((5))))` nested 60 deep is still a number (the parser uses ~4 frames per level)
_MAX_EXP = 400  # |exponent| bound for exact powers
_MAX_DIGITS = 400  # bound on numerator/denominator size


class _Reject(Exception):
    pass


# what parsing untrusted text may raise: each means "no fast answer", never a crash
_PARSE_ERRORS = (
    _Reject,
    ValueError,
    ZeroDivisionError,
    OverflowError,
    decimal.DecimalException,
    RecursionError,
    IndexError,
)


def _tokenize(s: str) -> list[str]:
    toks: list[str] = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c.isspace():
            i += 1
        elif c.isdigit() or (c == "." and i + 1 < n and s[i + 1].isdigit()):
            j = i
            while j < n and s[j].isdigit():
                j += 1
            if j < n and s[j] == "." and j + 1 < n and s[j + 1].isdigit():
                j += 1
                while j < n and s[j].isdigit():
                    j += 1
            toks.append(s[i:j])
            i = j
        elif c == "\\":
            j = i + 1
            while j < n and s[j].isalpha():
                j += 1
            if j == i + 1:
                raise _Reject
            toks.append(s[i:j])
            i = j
        elif c in "+-*/^(){}[]":
            toks.append(c)
            i += 1
        elif "a" <= c <= "z":
            j = i
            while j < n and "a" <= s[j] <= "z":
                j += 1
            run = s[i:j]
            # Letters are variables multiplied together (math_verify reads `2xy` as 2*x*y), but some letters and
            # runs mean something else to it: e (Euler), i (imaginary unit), d.. (differentials `dx`), `or`,
            # `and`, `gcd`, `ln`... Only short runs of the other letters are taken; the rest goes to the worker.
            if len(run) > 3 or any(ch in "deilo" for ch in run):
                raise _Reject
            toks.extend(run)
            i = j
        else:
            raise _Reject
    return toks


class _Poly(dict):
    """A polynomial with rational coefficients: ``{((name, exponent), ...): Fraction}``, sorted monomials, no zero
    coefficients, at least one variable (constant results are plain `Fraction`)."""


# What the parser computes: a constant, or a polynomial with at least one variable.
Value = Num | _Poly

_MAX_TERMS = 500
_MAX_DEGREE = 60


def _poly(x: Value) -> _Poly:
    if isinstance(x, _Poly):
        return x
    if isinstance(x, Fraction):
        p = _Poly()
        if x != 0:
            p[()] = x
        return p
    raise _Reject  # irrational coefficients: leave to sympy


def _norm_poly(p: dict) -> Value:
    q = _Poly({m: c for m, c in p.items() if c != 0})
    if len(q) > _MAX_TERMS:
        raise _Reject
    if all(m == () for m in q):
        return q.get((), Fraction(0))
    return q


def _mono_mul(a: tuple, b: tuple) -> tuple:
    d = dict(a)
    for n, e in b:
        d[n] = d.get(n, 0) + e
    if any(e > _MAX_DEGREE for e in d.values()):
        raise _Reject
    return tuple(sorted(d.items()))


def _dec(x: Num) -> Decimal:
    if isinstance(x, Decimal):
        return x
    return _CTX.divide(Decimal(x.numerator), Decimal(x.denominator))


def _check(x: Num) -> Num:
    if isinstance(x, Fraction):
        if len(str(x.numerator)) > _MAX_DIGITS or len(str(x.denominator)) > _MAX_DIGITS:
            raise _Reject
    elif not x.is_finite() or (x != 0 and abs(x.adjusted()) > _MAX_DIGITS):
        raise _Reject
    return x


def _mul(a: Value, b: Value) -> Value:
    if isinstance(a, _Poly) or isinstance(b, _Poly):
        pa, pb = _poly(a), _poly(b)
        out: dict = {}
        for ma, ca in pa.items():
            for mb, cb in pb.items():
                m = _mono_mul(ma, mb)
                out[m] = out.get(m, Fraction(0)) + ca * cb
            if len(out) > _MAX_TERMS:
                raise _Reject
        return _norm_poly(out)
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return _check(a * b)
    return _check(_CTX.multiply(_dec(a), _dec(b)))


def _div(a: Value, b: Value) -> Value:
    if isinstance(b, _Poly):
        raise _Reject  # rational functions: leave to sympy
    if b == 0:
        raise _Reject
    if isinstance(a, _Poly):
        if not isinstance(b, Fraction):
            raise _Reject
        return _norm_poly({m: c / b for m, c in a.items()})
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return _check(a / b)
    return _check(_CTX.divide(_dec(a), _dec(b)))


def _add(a: Value, b: Value) -> Value:
    if isinstance(a, _Poly) or isinstance(b, _Poly):
        out = dict(_poly(a))
        for m, c in _poly(b).items():
            out[m] = out.get(m, Fraction(0)) + c
        return _norm_poly(out)
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return _check(a + b)
    return _check(_CTX.add(_dec(a), _dec(b)))


def _neg(a: Value) -> Value:
    if isinstance(a, _Poly):
        return _Poly({m: -c for m, c in a.items()})
    return -a


def _iroot(n: int, k: int) -> int | None:
    """Exact integer k-th root of n >= 0, or None."""
    if n < 0:
        return None
    if n < 2:
        return n
    r = int(round(n ** (1.0 / k))) if n.bit_length() < 1000 else None
    if r is None:
        return None
    for c in (r - 1, r, r + 1):
        if c >= 0 and c**k == n:
            return c
    return None


def _root(x: Value, k: int) -> Num:
    if k < 1 or k > 20 or isinstance(x, _Poly):
        raise _Reject
    if x < 0:
        raise _Reject  # complex or odd roots of negatives: leave to sympy
    if isinstance(x, Fraction):
        a, b = _iroot(x.numerator, k), _iroot(x.denominator, k)
        if a is not None and b is not None:
            return Fraction(a, b)
    d = _dec(x)
    if d == 0:
        return Fraction(0)
    if k == 2:
        return _CTX.sqrt(d)
    return _check(_CTX.power(d, _CTX.divide(Decimal(1), Decimal(k))))


def _pow(a: Value, b: Value) -> Value:
    if isinstance(b, _Poly):
        raise _Reject
    if isinstance(a, _Poly):
        if not (isinstance(b, Fraction) and b.denominator == 1 and 0 <= b.numerator <= _MAX_DEGREE):
            raise _Reject
        r: Value = Fraction(1)
        for _ in range(b.numerator):
            r = _mul(r, a)
        return r
    if isinstance(b, Fraction) and b.denominator == 1:
        e = b.numerator
        if abs(e) > _MAX_EXP:
            raise _Reject
        if a == 0 and e < 0:
            raise _Reject
        if isinstance(a, Fraction):
            if abs(e) * max(len(str(a.numerator)), len(str(a.denominator))) > _MAX_DIGITS:
                raise _Reject
            return _check(a**e)
        return _check(_CTX.power(a, e))
    if isinstance(b, Fraction) and b.denominator <= 20 and abs(b.numerator) <= _MAX_EXP:
        # a^(p/q) = (a^(1/q))^p for a >= 0
        r = _root(a, b.denominator)
        return _pow(r, Fraction(b.numerator))
    if a <= 0:
        raise _Reject
    return _check(_CTX.power(_dec(a), _dec(b)))


class _Parser:
    def __init__(self, toks: list[str]):
        self.t = toks
        self.i = 0
        self.depth = 0
        self.inexact_from_decimals = False

    def peek(self) -> str | None:
        return self.t[self.i] if self.i < len(self.t) else None

    def take(self, tok: str | None = None) -> str:
        if self.i >= len(self.t):
            raise _Reject
        x = self.t[self.i]
        if tok is not None and x != tok:
            raise _Reject
        self.i += 1
        return x

    def group(self) -> Value:
        """``{expr}`` or a single digit (``\\frac12``)."""
        p = self.peek()
        if p == "{":
            self.take()
            v = self.expr()
            self.take("}")
            return v
        if p is not None and p.isdigit():
            self.take()
            if len(p) > 1:  # `\frac123` is `\frac{1}{2}3`: split the digit run
                self.t.insert(self.i, p[1:])
            return Fraction(int(p[0]))
        raise _Reject

    def expr(self) -> Value:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise _Reject
        sign = 1
        while self.peek() in ("+", "-"):
            if self.take() == "-":
                sign = -sign
        v = self.term()
        if sign < 0:
            v = _neg(v)
        while self.peek() in ("+", "-"):
            op = self.take()
            w = self.term()
            v = _add(v, w if op == "+" else _neg(w))
        self.depth -= 1
        return v

    def term(self) -> Value:
        v = self.power()
        slash = implicit = False
        while True:
            p = self.peek()
            if p in ("\\cdot", "\\times", "*"):
                self.take()
                v = _mul(v, self.power())
            elif p in ("/", "\\div"):
                self.take()
                slash = True
                v = _div(v, self.power())
            elif p is not None and (p[0].isdigit() or p.isalpha() or p in ("\\frac", "\\sqrt", "\\pi", "(", "{")):
                if p[0].isdigit() or (p == "\\frac" and self.t[self.i - 1][0].isdigit()):
                    raise _Reject  # `2 3`, `2\frac12` (mixed number?)
                implicit = True
                v = _mul(v, self.power())
            else:
                break
            if slash and implicit:
                raise _Reject  # `1/2\pi`: ambiguous
        return v

    def power(self) -> Value:
        v = self.atom()
        if self.peek() == "^":
            self.take()
            p = self.peek()
            if p == "{":
                e = self.group()
            elif p is not None and p.isdigit():
                e = self.group()
            else:
                raise _Reject
            if self.peek() == "^":
                raise _Reject  # `2^3^2`
            v = _pow(v, e)
        return v

    def atom(self) -> Value:
        p = self.take()
        if p[0].isdigit() or p[0] == ".":
            if "." in p:
                self.inexact_from_decimals = True
            if len(p) > 60:
                raise _Reject
            return Fraction(p)
        if p == "\\pi":
            return _PI
        if len(p) == 1 and p.isalpha():
            return _Poly({((p, 1),): Fraction(1)})
        if p == "\\frac":
            a = self.group()
            b = self.group()
            return _div(a, b)
        if p == "\\sqrt":
            k = 2
            if self.peek() == "[":
                self.take()
                kv = self.expr()
                self.take("]")
                if not (isinstance(kv, Fraction) and kv.denominator == 1):
                    raise _Reject
                k = kv.numerator
            return _root(self.group(), k)
        if p in ("(", "{"):
            v = self.expr()
            self.take(")" if p == "(" else "}")
            return v
        raise _Reject


def _const_key(s: str) -> tuple[str, Num | None] | None:
    s = s.strip()
    if s in ("\\infty", "+\\infty", "\\infinity", "oo"):
        return INF_KEY, None
    if s in ("-\\infty", "-\\infinity", "-oo"):
        return NEG_INF_KEY, None
    if not s or len(s) > _MAX_LEN:
        return None
    try:
        p = _Parser(_tokenize(s))
        v = p.expr()
        if p.i != len(p.t):
            return None
    except _PARSE_ERRORS:
        return None
    if isinstance(v, _Poly):
        if p.inexact_from_decimals:
            return None  # sympy keeps decimal coefficients as Floats: not a rational polynomial there
        return poly_key(v), None
    if isinstance(v, Fraction):
        return rational_key(v), v
    # Decimals were read exactly (`Fraction("0.25")`), so an irrational result is keyed exactly too: `0.25\pi` and
    # `\frac{\pi}{4}` share a key, and no loose tolerance can turn it into a made-up fraction.
    return decimal_key(v), v


def _split_top(s: str) -> list[str] | None:
    """Split on top-level commas (outside (), [], {})."""
    parts, depth, cur = [], 0, []
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s) and s[i + 1] in "{}":
            cur.append(s[i : i + 2])
            i += 2
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth < 0:
                return None
        if c == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    if depth != 0:
        return None
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def _less(a: tuple[str, Num | None], b: tuple[str, Num | None]) -> bool | None:
    ka, va = a
    kb, vb = b
    if ka == NEG_INF_KEY:
        return kb != NEG_INF_KEY
    if kb == INF_KEY:
        return ka != INF_KEY
    if ka == INF_KEY or kb == NEG_INF_KEY:
        return False
    if va is None or vb is None:
        return None
    da, db = _dec(va), _dec(vb)
    if abs(da - db) <= Decimal("1e-30") * (abs(da) + abs(db)):
        return None  # equal or too close to call here
    return da < db


_TOWER_LETTERS = "abcfghjkmnpqrstuvwxyz"  # not e, i, d, l, o: math_verify reads those otherwise (see _tokenize)


def _tower_srepr(s: str) -> str | None:
    """``x^{y^{z}}`` (a power tower of single letters) as sympy's ``srepr`` of what math_verify parses -- the key
    the worker would give (``e:`` + srepr), without the parse that costs about a second for six levels."""
    s = s.replace(" ", "")
    if len(s) == 1:
        return f"Symbol('{s}', real=True)" if s in _TOWER_LETTERS else None
    if len(s) < 3 or s[0] not in _TOWER_LETTERS or s[1] != "^":
        return None
    rest = s[2:]
    if rest.startswith("{") and rest.endswith("}"):
        rest = rest[1:-1]
    elif len(rest) != 1:
        return None
    inner = _tower_srepr(rest)
    return None if inner is None else f"Pow(Symbol('{s[0]}', real=True), {inner})"


def fast_key(norm: str) -> str | None:
    """Key of a normalised answer in the subset described in the module docstring, else ``None``."""
    if not norm or len(norm) > _MAX_LEN:
        return None
    if "^" in norm and norm[0] in _TOWER_LETTERS and norm.count("^") > 1 and norm.count("{") < 30:
        tower = _tower_srepr(norm)
        if tower is not None:
            return "e:" + tower
    if "," not in norm:
        c = _const_key(norm)
        if c is None or c[0] in (INF_KEY, NEG_INF_KEY):
            return None  # a lone infinity is left to the worker
        return c[0]
    s = norm
    if s.startswith("\\{") and s.endswith("\\}"):
        parts = _split_top(s[2:-2])
        kind = "set"
    elif s[0] in "([" and s[-1] in ")]" and len(s) >= 2:
        parts = _split_top(s[1:-1])
        kind = s[0] + s[-1]
        # the first bracket must close at the very end: `(1,2)\cup(3,4)` or `(1)+(2)` is not one tuple
        depth = 0
        for j, ch in enumerate(s):
            if ch in "([":
                depth += 1
            elif ch in ")]":
                depth -= 1
                if depth == 0 and j != len(s) - 1:
                    return None
    else:
        parts = _split_top(s)
        kind = "list"
    if not parts or any(not p for p in parts):
        return None
    elems = []
    for p in parts:
        c = _const_key(p)
        if c is None or c[0].startswith("p:"):
            return None  # elements must be constants (sets / tuples of expressions go to the worker)
        elems.append(c)
    keys = [k for k, _ in elems]
    if kind in ("set", "list"):
        if any(k in (INF_KEY, NEG_INF_KEY) for k in keys):
            return None
        elems_k = sorted(set(keys))
        return ("set{" if len(elems_k) > 1 else "set1{") + ",".join(elems_k) + "}"
    if len(elems) == 2:
        if kind == "()" and keys[0] == keys[1] and keys[0].startswith("q:"):
            return "tup(" + ",".join(keys) + ")"  # `(0, 0)`: math_verify reads a pair, not an empty interval
        lt = _less(elems[0], elems[1])
        if lt is None:
            return None
        if lt:
            lo = "(" if kind[0] == "(" else "["
            hi = ")" if kind[1] == ")" else "]"
            return f"int{lo}{keys[0]},{keys[1]}{hi}"
        if kind in ("()", "[]") and not any(k in (INF_KEY, NEG_INF_KEY) for k in keys):
            return "tup(" + ",".join(keys) + ")"
        return None
    if kind in ("()", "[]") and not any(k in (INF_KEY, NEG_INF_KEY) for k in keys):
        return "tup(" + ",".join(keys) + ")"
    return None


def huge_power_degree(norm: str) -> int | None:
    """The degree of an answer that is, as a whole, a non-constant polynomial raised to an integer power too large
    to expand (``(x+1)^{100000}``), else ``None``. Such an answer is soundly different from any number and any
    polynomial we can key, and sympy would spend the whole time bound expanding it."""
    if len(norm) > _MAX_LEN or not norm.startswith("(") or "^" not in norm:
        return None
    depth = 0
    for j, ch in enumerate(norm):  # noqa: B007 - j is read after the loop: where the bracket closes
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0:
            break
    rest = norm[j + 1 :].replace(" ", "")
    if not rest.startswith("^"):
        return None
    exp = rest[1:]
    if exp.startswith("{") and exp.endswith("}"):
        exp = exp[1:-1]
    if not exp.isdigit() or len(exp) > 12 or int(exp) <= _MAX_DEGREE:
        return None
    try:
        p = _Parser(_tokenize(norm[1:j]))
        base = p.expr()
        if p.i != len(p.t) or not isinstance(base, _Poly):
            return None
    except _PARSE_ERRORS:
        return None
    return max(sum(e for _, e in mono) for mono in base) * int(exp)
