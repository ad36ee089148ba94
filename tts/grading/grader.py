"""`AnswerGrader` (voting keys and grading, with run-wide caches) and `equivalent`.

Per answer, the cheapest tier that decides wins:

1. *cache*: the same raw string again is one dict lookup (``stats["key_cache_hits"]``/``["grade_cache_hits"]``);
2. *fast path*, pure Python: `normalize_answer`, then `numeric_value` for plain numbers (exact `Fraction`, key
   ``q:p/q``); multiple-choice letters key as ``mc:A``; two answers whose normalised strings are equal are equivalent;
3. *symbolic*, in the worker process under the wall-clock bound (`tts.grading.worker`): math_verify parse/verify
   and the canonical keys of `tts.grading.symbolic`.

Soundness of keys: equal keys imply equivalent answers. If the symbolic key of an answer cannot be computed (parse
failure, timeout, too long) the key is ``s:`` + the normalised string, which only groups answers that are equal as
normalised strings.

Bounds: answers longer than ``max_chars`` (normalised) never go to sympy: their key is the string key, and grading
them is ``True`` only when they equal the gold as normalised strings, else ``None`` (ungraded, counted under
``stats["ungraded"]`` and ``stats["too_long"]``) -- a bound is never silently turned into "wrong".
"""

from __future__ import annotations

import threading
from fractions import Fraction
from typing import Dict, List, Optional, Sequence, Tuple

from tts.grading.normalize import huge_integer_log10, is_mc_letter, normalize_answer, numeric_value
from tts.grading.worker import ERROR, TIMEOUT, SymbolicWorker

__all__ = ["AnswerGrader", "equivalent"]

#: Normalised answers longer than this are not given to sympy (MATH gold answers are < 200 characters).
DEFAULT_MAX_CHARS = 1000
#: Integers with more digits than this (power towers, factorials) are never built by sympy.
HUGE_LOG10 = 10_000


_NUMERIC_KEYS = ("q:", "n:", "c:")  # keys of plain numbers (see tts.grading.symbolic)


def _q_key(v: Fraction) -> str:
    return f"q:{v.numerator}/{v.denominator}"


class AnswerGrader:
    """Voting keys and grading for one run; build once, share across all completions (thread-safe).

    ``stats`` (cumulative): ``key_calls``, ``key_cache_hits``, ``key_fast``, ``key_symbolic``, ``key_timeouts``,
    ``grade_calls``, ``grade_cache_hits``, ``grade_fast``, ``grade_symbolic``, ``ungraded``, ``too_long``,
    ``worker_restarts``."""

    def __init__(self, timeout: float = 5.0, max_chars: int = DEFAULT_MAX_CHARS):
        if timeout <= 0:
            raise ValueError("timeout must be > 0 seconds")
        self.timeout = float(timeout)
        self.max_chars = int(max_chars)
        self._worker: Optional[SymbolicWorker] = None
        self._lock = threading.RLock()
        self._norm: Dict[str, str] = {}
        self._fast_key: Dict[str, Optional[str]] = {}  # raw -> key when decidable in pure Python
        self._key: Dict[str, Optional[str]] = {}  # raw -> final key
        self._sym_key: Dict[str, Optional[str]] = {}  # normalised -> symbolic key (or None / TIMEOUT)
        self._grade: Dict[Tuple[str, str], Optional[bool]] = {}  # (raw answer, raw gold) -> result
        self._eq: Dict[Tuple[str, str], object] = {}  # (norm pred, norm gold) -> bool / TIMEOUT
        self._huge: set = set()  # normalised answers that are integers too large to build
        self.stats: Dict[str, int] = {
            k: 0
            for k in (
                "key_calls", "key_cache_hits", "key_fast", "key_symbolic", "key_timeouts", "grade_calls",
                "grade_cache_hits", "grade_fast", "grade_symbolic", "ungraded", "too_long", "too_large",
                "worker_restarts",
            )
        }

    # -- helpers --------------------------------------------------------------------------------------------------
    @property
    def worker(self) -> SymbolicWorker:
        if self._worker is None:
            self._worker = SymbolicWorker()
        return self._worker

    def close(self) -> None:
        """Stop the worker process (a later call starts a new one)."""
        if self._worker is not None:
            self._worker.close()

    def __enter__(self) -> "AnswerGrader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def normalize(self, answer: str) -> str:
        n = self._norm.get(answer)
        if n is None:
            try:
                n = normalize_answer(answer)
            except Exception:  # pragma: no cover - defensive
                n = " ".join(answer.split())
            self._norm[answer] = n
        return n

    def _fast(self, answer: str) -> Tuple[str, Optional[str]]:
        """(normalised, key or None when the fast path cannot decide)."""
        norm = self.normalize(answer)
        if answer in self._fast_key:
            return norm, self._fast_key[answer]
        v = numeric_value(norm)
        if v is not None:
            key: Optional[str] = _q_key(v)
        elif is_mc_letter(norm):
            key = "mc:" + norm
        elif not norm:
            key = "s:"
        else:
            key = None
            lg = huge_integer_log10(norm)
            if lg is not None and lg > HUGE_LOG10:
                self._huge.add(norm)
                self.stats["too_large"] += 1
                key = "s:" + norm
        self._fast_key[answer] = key
        return norm, key

    def _sync_restarts(self) -> None:
        if self._worker is not None:
            self.stats["worker_restarts"] = self._worker.restarts

    # -- keys -----------------------------------------------------------------------------------------------------
    def key(self, answer: Optional[str]) -> Optional[str]:
        """Canonical voting key: equivalent answers share it; ``None`` for no answer."""
        if answer is None:
            return None
        return self.keys([answer])[0]

    def keys(self, answers: Sequence[Optional[str]]) -> List[Optional[str]]:
        """`key` for many answers at once (one batch to the worker for all the symbolic ones)."""
        out: List[Optional[str]] = [None] * len(answers)
        with self._lock:
            todo: Dict[str, List[int]] = {}
            for i, a in enumerate(answers):
                if a is None:
                    continue
                self.stats["key_calls"] += 1
                k = self._key.get(a)
                if k is not None:
                    self.stats["key_cache_hits"] += 1
                    out[i] = k
                    continue
                norm, fk = self._fast(a)
                if fk is not None:
                    self.stats["key_fast"] += 1
                    self._key[a] = out[i] = fk
                    continue
                if len(norm) > self.max_chars:
                    self.stats["too_long"] += 1
                    self._key[a] = out[i] = "s:" + norm
                    continue
                if norm in self._sym_key:
                    sk = self._sym_key[norm]
                    self._key[a] = out[i] = sk if sk is not None and sk != TIMEOUT else "s:" + norm
                    continue
                todo.setdefault(norm, []).append(i)
            if todo:
                norms = list(todo)
                res = self.worker.run("key", norms, self.timeout)
                self._sync_restarts()
                for norm, r in zip(norms, res):
                    self.stats["key_symbolic"] += 1
                    if r == TIMEOUT:
                        self.stats["key_timeouts"] += 1
                        sk: Optional[str] = TIMEOUT
                    elif r == ERROR or not isinstance(r, str):
                        sk = None
                    else:
                        sk = r
                    self._sym_key[norm] = sk
                    k = sk if sk is not None and sk != TIMEOUT else "s:" + norm
                    for i in todo[norm]:
                        out[i] = k
                        self._key[answers[i]] = k  # type: ignore[index]
        return out

    # -- grading --------------------------------------------------------------------------------------------------
    def grade(self, answer: Optional[str], gold: str) -> Optional[bool]:
        """True/False; ``None`` = ungraded (the comparison hit the time bound or the size limit). No answer -> False."""
        return self.grade_many([answer], [gold])[0]

    def grade_many(self, answers: Sequence[Optional[str]], golds: Sequence[str]) -> List[Optional[bool]]:
        """`grade` for many (answer, gold) pairs at once (one batch to the worker)."""
        if len(answers) != len(golds):
            raise ValueError("answers and golds must have the same length")
        out: List[Optional[bool]] = [False] * len(answers)
        with self._lock:
            todo: Dict[Tuple[str, str], List[int]] = {}
            for i, (a, g) in enumerate(zip(answers, golds)):
                if a is None:
                    continue
                self.stats["grade_calls"] += 1
                ck = (a, g)
                if ck in self._grade:
                    self.stats["grade_cache_hits"] += 1
                    r = self._grade[ck]
                    if r is None:
                        self.stats["ungraded"] += 1
                    out[i] = r
                    continue
                pn, pk = self._fast(a)
                gn, gk = self._fast(g)
                decided: Optional[bool] = None
                if pn == gn and pn:
                    decided = True
                elif pk is not None and gk is not None:
                    decided = pk == gk
                elif pk is not None and pk.startswith("mc:") or gk is not None and gk.startswith("mc:"):
                    decided = False  # a letter against a non-letter (`(B)` vs `5`)
                elif pn in self._huge or gn in self._huge:
                    # an integer with > HUGE_LOG10 digits vs a plain number (< 61 digits): soundly different;
                    # against anything else: not decidable without building it -> ungraded
                    other = gk if pn in self._huge else pk
                    if other is not None and other.startswith("q:"):
                        decided = False
                    else:
                        self.stats["ungraded"] += 1
                        self._grade[ck] = out[i] = None
                        continue
                else:
                    # cached canonical keys: equal -> True; two plain numbers with different keys -> False
                    ka = pk if pk is not None else self._sym_key.get(pn)
                    kg = gk if gk is not None else self._sym_key.get(gn)
                    if ka == TIMEOUT or kg == TIMEOUT:
                        # parsing this answer already ran past the bound: do not spend it again
                        self.stats["ungraded"] += 1
                        self._grade[ck] = out[i] = None
                        continue
                    if isinstance(ka, str) and isinstance(kg, str):
                        if ka == kg:
                            decided = True
                        elif ka.startswith(_NUMERIC_KEYS) and kg.startswith(_NUMERIC_KEYS):
                            decided = False
                if decided is not None:
                    self.stats["grade_fast"] += 1
                    self._grade[ck] = out[i] = decided
                    continue
                if len(pn) > self.max_chars or len(gn) > self.max_chars:
                    self.stats["too_long"] += 1
                    self.stats["ungraded"] += 1
                    self._grade[ck] = out[i] = None
                    continue
                if (pn, gn) in self._eq:
                    r = self._eq[(pn, gn)]
                    res = None if r == TIMEOUT else bool(r)
                    if res is None:
                        self.stats["ungraded"] += 1
                    self._grade[ck] = out[i] = res
                    continue
                todo.setdefault((pn, gn), []).append(i)
            if todo:
                pairs = list(todo)
                res_list = self.worker.run("eq", [list(p) for p in pairs], self.timeout)
                self._sync_restarts()
                for pair, r in zip(pairs, res_list):
                    self.stats["grade_symbolic"] += 1
                    # ERROR here is a resource failure in the worker (MemoryError, RecursionError: math_verify
                    # itself catches parse errors), so like a timeout it is "ungraded", never "wrong"
                    if isinstance(r, list) and len(r) == 3:
                        res: Optional[bool] = r[0] is True
                        for norm, k in ((pair[0], r[1]), (pair[1], r[2])):
                            if norm not in self._sym_key and (k is None or isinstance(k, str)):
                                self._sym_key[norm] = k
                    else:
                        res = None
                    self._eq[pair] = TIMEOUT if res is None else res
                    for i in todo[pair]:
                        if res is None:
                            self.stats["ungraded"] += 1
                        out[i] = res
                        self._grade[(answers[i], golds[i])] = res  # type: ignore[index]
        return out

    def equivalent(self, pred: Optional[str], gold: str) -> bool:
        """Like `grade` but a timeout counts as not equivalent."""
        return self.grade(pred, gold) is True


_DEFAULT: Dict[float, AnswerGrader] = {}
_DEFAULT_LOCK = threading.Lock()


def _default_grader(timeout: float) -> AnswerGrader:
    with _DEFAULT_LOCK:
        g = _DEFAULT.get(timeout)
        if g is None:
            # share one worker process among the module-level graders
            g = AnswerGrader(timeout=timeout)
            if _DEFAULT:
                g._worker = next(iter(_DEFAULT.values())).worker
            _DEFAULT[timeout] = g
        return g


def equivalent(pred: Optional[str], gold: str, timeout: float = 5.0) -> bool:
    """Mathematical equivalence of a predicted and a gold answer; ``False`` for ``None``, and ``False`` when the
    comparison runs past ``timeout`` seconds (use `AnswerGrader.grade` to tell "ungraded" apart)."""
    if pred is None:
        return False
    return _default_grader(float(timeout)).grade(pred, gold) is True
