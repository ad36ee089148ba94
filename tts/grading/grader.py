"""`AnswerGrader` (voting keys and grading, with run-wide caches) and `equivalent`.

Per answer, the cheapest tier that decides wins:

1. *cache*: the same raw string again is one dict lookup (``stats["key_cache_hits"]``/``["grade_cache_hits"]``);
2. *fast path*, pure Python, no sympy: `normalize_answer`; `numeric_value` for plain numbers (exact `Fraction`, key
   ``q:p/q``); ``mc:A`` for multiple-choice letters; `tts.grading.fastnum.fast_key` for constant LaTeX arithmetic
   (radicals, pi, fractions, powers) and tuples / intervals / sets of such constants. Two answers with equal
   normalised strings are equivalent; two known keys often decide (`tts.grading.keys.decide_by_keys`);
3. *symbolic*, in the worker process under the wall-clock bound (`tts.grading.worker`): the canonical keys of
   `tts.grading.symbolic` and math_verify's ``verify``.

Soundness of keys: equal keys imply equivalent answers. If the key of an answer cannot be computed (parse failure,
timeout, too long, too large) it is ``s:`` + the normalised string, which only groups answers that are equal as
normalised strings.

Bounds: every call into the worker is under ``timeout`` seconds per item (per answer for keys, per (answer, gold)
pair for grading). A grade that runs out of time is ``None`` ("ungraded", ``stats["ungraded"]``), and the answer is
remembered: later comparisons with it are ungraded at once instead of spending the bound again. Answers longer than
``max_chars`` (normalised) are never parsed: their key is the string key, and grading them gives ``True`` only when
they equal the gold as normalised strings, else ``None`` (``stats["too_long"]``). Integers too large to build
(``10^{10^{10}}``, ``100000!``; `tts.grading.normalize.huge_integer_log10`) are ``False`` against a plain-number
gold answer (soundly: they have more digits) and ungraded otherwise (``stats["too_large"]``); so are powers of
polynomials of degree over `HUGE_DEGREE` (``(x+1)^{100000}``: False against a number or a small polynomial);
products over ranges past 10^5 (``\\prod_{n=1}^{10^9} n``) are ungraded. A bound is never silently turned into
"wrong". Raw answers over ``10 * max_chars`` characters skip normalisation, so the parent's work stays linear.

Answers `tts.grading.normalize.string_only` flags (words, times and ratios, numbers separated by a space) get
their string key and equal only the same string: a math parser would read ``\\text{east}`` as the product
e*a*s*t, equal to ``\\text{seat}``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any, cast

from tts.grading.fastnum import fast_key, huge_power_degree
from tts.grading.keys import NOKEY, decide_by_keys, rational_key
from tts.grading.normalize import (
    huge_integer_log10,
    is_mc_letter,
    normalize_answer,
    numeric_value,
    string_key,
    string_only,
)
from tts.grading.worker import ItemResult, Outcome, SymbolicWorker

__all__ = ["AnswerGrader", "equivalent", "DEFAULT_MAX_CHARS", "HUGE_LOG10"]

#: Normalised answers longer than this are not given to sympy (MATH gold answers are < 200 characters).
DEFAULT_MAX_CHARS = 1000
#: Integers with more digits than this (power towers, factorials) are never built by sympy.
HUGE_LOG10 = 10_000
#: Powers of polynomials of higher degree (``(x+1)^{100000}``) are never expanded by sympy.
HUGE_DEGREE = 1_000

_ASK = object()  # "only the worker can tell"
#: How the parse of an answer ended when it used up the time or memory bound: comparisons with it are ungraded.
_OUT_OF_BOUNDS = (Outcome.TIMED_OUT, Outcome.FAILED)
#: Raw answers longer than this are not normalised beyond whitespace (and so keyed by their string).
_MAX_RAW_CHARS = 10 * DEFAULT_MAX_CHARS


class AnswerGrader:
    """Voting keys and grading for one run; build once, share across all completions (thread-safe).

    ``stats`` (cumulative): ``key_calls``, ``key_cache_hits``, ``key_fast``, ``key_symbolic`` (answers keyed by the
    worker), ``key_timeouts``, ``grade_calls``, ``grade_cache_hits``, ``grade_fast`` (decided without the worker),
    ``grade_symbolic`` (pairs sent to the worker), ``ungraded`` (grade results that are ``None``), ``too_long``,
    ``too_large``, ``worker_restarts``."""

    def __init__(self, timeout: float = 5.0, max_chars: int = DEFAULT_MAX_CHARS):
        if timeout <= 0:
            raise ValueError("timeout must be > 0 seconds")
        self.timeout = float(timeout)
        self.max_chars = int(max_chars)
        self._worker: SymbolicWorker | None = None
        self._lock = threading.RLock()
        self._fast_cache: dict[str, tuple[str, str | None]] = {}  # raw -> (normalised, fast key or None)
        self._key: dict[str, str] = {}  # raw -> final key
        # normalised -> worker key, NOKEY, None (math_verify cannot parse it) or the outcome of a parse out of bounds
        self._sym_key: dict[str, str | Outcome | None] = {}
        self._grade: dict[tuple[str, str], bool | None] = {}  # (raw answer, raw gold) -> result
        self._eq: dict[tuple[str, str], bool | None] = {}  # (norm answer, norm gold) -> result
        self._huge: set = set()  # normalised answers that are integers too large to build
        self._unevaluated: set = set()  # products over huge ranges: never evaluated, compared as strings
        self._string_only: set = set()  # normalised answers compared only as strings (words, times, `4 5`)
        self.stats: dict[str, int] = {
            k: 0
            for k in (
                "key_calls",
                "key_cache_hits",
                "key_fast",
                "key_symbolic",
                "key_timeouts",
                "grade_calls",
                "grade_cache_hits",
                "grade_fast",
                "grade_symbolic",
                "ungraded",
                "too_long",
                "too_large",
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

    def __enter__(self) -> AnswerGrader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __getstate__(self) -> dict:  # picklable (e.g. into a launcher subprocess): caches travel, the worker not
        with self._lock:
            state = self.__dict__.copy()
        state["_worker"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def _fast(self, answer: str) -> tuple[str, str | None]:
        """(normalised answer, its key when pure Python can compute it, else None)."""
        hit = self._fast_cache.get(answer)
        if hit is not None:
            return hit
        try:
            # Longer raw answers are never parsed (their key is a string key), so they skip the rewrites too: the
            # work done here stays linear in the answer's length whatever it contains (8,000 nested boxes, 1 MB of $).
            norm = normalize_answer(answer) if len(answer) <= _MAX_RAW_CHARS else " ".join(answer.split())
        except Exception:  # pragma: no cover  # noqa: BLE001 - defensive: normalisation is plain string work
            norm = " ".join(answer.split())
        key: str | None = None
        if not norm:
            key = "s:"
        elif len(norm) > self.max_chars:
            key = None  # the caller handles the size limit
        elif string_only(norm):
            key = string_key(norm)
            self._string_only.add(norm)
        else:
            v = numeric_value(norm)
            if v is not None:
                key = rational_key(v)
            elif is_mc_letter(norm):
                key = "mc:" + norm
            else:
                lg = huge_integer_log10(norm)
                if (lg is not None and lg > HUGE_LOG10) or (huge_power_degree(norm) or 0) > HUGE_DEGREE:
                    self._huge.add(norm)
                    key = "s:" + norm
                elif _long_product(norm):
                    self._unevaluated.add(norm)
                    key = "s:" + norm
                else:
                    key = fast_key(norm)
        self._fast_cache[answer] = (norm, key)
        return norm, key

    def _run(self, op: str, items: list[Any], on_progress: Any = None) -> list[ItemResult]:
        results = self.worker.run(op, items, self.timeout, on_progress)
        self.stats["worker_restarts"] = self.worker.restarts
        return results

    def _symbolic_keys(self, norms: list[str]) -> None:
        """Worker keys for these normalised answers, into ``_sym_key``: a key; None (math_verify cannot parse it);
        NOKEY (parsed, no key); TIMED_OUT / FAILED (out of time / resources: comparisons with it are ungraded)."""
        for norm, result in zip(norms, self._run("key", norms)):
            self.stats["key_symbolic"] += 1
            self.stats["key_timeouts"] += result.outcome is Outcome.TIMED_OUT
            if result.outcome is Outcome.DONE:
                key = result.value
                self._sym_key[norm] = key if key is None or isinstance(key, str) else NOKEY
            elif result.outcome is not Outcome.NOT_TRIED:  # not tried (a replacement was loading): nothing learnt
                self._sym_key[norm] = result.outcome

    def _known_key(self, norm: str, fast_path_key: str | None) -> str | None:
        if fast_path_key is not None:
            return fast_path_key
        key = self._sym_key.get(norm)
        return key if isinstance(key, str) and key != NOKEY else None

    # -- keys -----------------------------------------------------------------------------------------------------
    def key(self, answer: str | None) -> str | None:
        """Canonical voting key: equivalent answers share it; ``None`` for no answer."""
        if answer is None:
            return None
        with self._lock:
            self.stats["key_calls"] += 1
            k = self._key.get(answer)
            if k is not None:
                self.stats["key_cache_hits"] += 1
                return k
        return self._keys_uncached([answer])[0]

    def keys(self, answers: Sequence[str | None]) -> list[str | None]:
        """`key` for many answers at once (one batch to the worker for all the symbolic ones)."""
        out: list[str | None] = [None] * len(answers)
        miss: list[tuple[int, str]] = []
        with self._lock:
            for i, a in enumerate(answers):
                if a is None:
                    continue
                self.stats["key_calls"] += 1
                k = self._key.get(a)
                if k is not None:
                    self.stats["key_cache_hits"] += 1
                    out[i] = k
                else:
                    miss.append((i, a))
        if miss:
            uniq = list(dict.fromkeys(a for _, a in miss))
            got = dict(zip(uniq, self._keys_uncached(uniq)))
            with self._lock:
                self.stats["key_cache_hits"] += len(miss) - len(uniq)  # repeats within the batch
            for i, a in miss:
                out[i] = got[a]
        return out

    def _keys_uncached(self, answers: list[str]) -> list[str | None]:
        out: list[str | None] = [None] * len(answers)
        with self._lock:
            todo: dict[str, list[int]] = {}
            for i, a in enumerate(answers):
                norm, fk = self._fast(a)
                if fk is not None:
                    self.stats["key_fast"] += 1
                    if norm in self._huge:
                        self.stats["too_large"] += 1
                    self._key[a] = out[i] = fk
                elif len(norm) > self.max_chars:
                    self.stats["too_long"] += 1
                    self._key[a] = out[i] = "s:" + norm
                elif norm in self._sym_key:
                    self._key[a] = out[i] = self._known_key(norm, None) or "s:" + norm
                else:
                    todo.setdefault(norm, []).append(i)
            if todo:
                self._symbolic_keys(list(todo))
                for norm, idx in todo.items():
                    k = self._known_key(norm, None) or "s:" + norm
                    for i in idx:
                        out[i] = k
                        if norm in self._sym_key:  # else Outcome.NOT_TRIED: not remembered
                            self._key[answers[i]] = k
        return out

    # -- grading --------------------------------------------------------------------------------------------------
    def grade(self, answer: str | None, gold: str) -> bool | None:
        """True/False; ``None`` = ungraded (the comparison hit the time bound or a size limit). No answer -> False."""
        if answer is not None:
            with self._lock:  # the common case, a repeated pair: one dict lookup, no batch set-up
                cached = self._grade.get((answer, gold), _ASK)
                if cached is not _ASK:
                    self.stats["grade_calls"] += 1
                    self.stats["grade_cache_hits"] += 1
                    self.stats["ungraded"] += cached is None
                    return cast("bool | None", cached)
        return self.grade_many([answer], [gold])[0]

    def _decide(self, answer_norm: str, answer_key: str | None, gold_norm: str, gold_key: str | None) -> Any:
        """True / False / None (ungraded) when decidable without the worker, else `_ASK`."""
        if answer_norm == gold_norm and answer_norm:
            return True
        if answer_key == "s:" or gold_key == "s:":
            return False  # an empty answer
        if answer_norm in self._huge or gold_norm in self._huge:
            # an integer with > HUGE_LOG10 digits vs a plain number (< 61 characters): soundly different;
            # against anything else: not decidable without building it -> ungraded
            other = gold_key if answer_norm in self._huge else answer_key
            if other is not None and (other.startswith("q:") or _poly_degree(other) <= HUGE_DEGREE):
                return False  # a number, or a polynomial of small degree
            self.stats["too_large"] += 1
            return None
        if answer_norm in self._unevaluated or gold_norm in self._unevaluated:
            self.stats["too_large"] += 1
            return None  # `\prod_{n=1}^{10^9} n`: its value cannot be built in the bound, nor its size bounded
        if answer_norm in self._string_only or gold_norm in self._string_only:
            return answer_key == gold_key  # words, times, spaced numbers: equal only as (normalised) strings
        if (answer_key or "").startswith("mc:") or (gold_key or "").startswith("mc:"):
            return answer_key == gold_key  # letters only match letters (`(B)` vs `5` is wrong)
        if len(answer_norm) > self.max_chars or len(gold_norm) > self.max_chars:
            self.stats["too_long"] += 1
            return None
        if self._sym_key.get(answer_norm) in _OUT_OF_BOUNDS or self._sym_key.get(gold_norm) in _OUT_OF_BOUNDS:
            return None  # parsing one of them already ran out of time or memory: do not spend it again
        if (answer_key is None and answer_norm in self._sym_key and self._sym_key[answer_norm] is None) or (
            gold_key is None and gold_norm in self._sym_key and self._sym_key[gold_norm] is None
        ):
            return False  # math_verify cannot parse it: it equals nothing but itself (equal strings, above)
        decided = decide_by_keys(self._known_key(answer_norm, answer_key), self._known_key(gold_norm, gold_key))
        if decided is not None:
            return decided
        if (answer_norm, gold_norm) in self._eq:
            return self._eq[(answer_norm, gold_norm)]
        return _ASK

    def grade_many(self, answers: Sequence[str | None], golds: Sequence[str]) -> list[bool | None]:
        """`grade` for many (answer, gold) pairs at once (one batch to the worker)."""
        if len(answers) != len(golds):
            raise ValueError("answers and golds must have the same length")
        grades: list[bool | None] = [False] * len(answers)
        with self._lock:
            # Gold answers (dataset strings, one per problem) get their worker key first, once: most comparisons
            # are then decided by keys without a worker round trip.
            golds_to_key = []
            # (a single pair is one worker item: keys and comparison under one bound)
            for gold in dict.fromkeys(golds if len(answers) > 1 else ()):
                gold_norm, gold_key = self._fast(gold)
                if (
                    gold_key is None
                    and gold_norm not in self._sym_key
                    and len(gold_norm) <= self.max_chars
                    and gold_norm not in self._huge
                ):
                    golds_to_key.append(gold_norm)
            if golds_to_key:
                self._symbolic_keys(golds_to_key)

            for_worker: dict[tuple[str, str], list[int]] = {}  # (normalised answer, gold) -> indices of its pairs
            for index, (answer, gold) in enumerate(zip(answers, golds)):
                if answer is None:
                    continue
                self.stats["grade_calls"] += 1
                if (answer, gold) in self._grade:
                    self.stats["grade_cache_hits"] += 1
                    grades[index] = self._grade[(answer, gold)]
                    self.stats["ungraded"] += grades[index] is None
                    continue
                answer_norm, answer_key = self._fast(answer)
                gold_norm, gold_key = self._fast(gold)
                decided = self._decide(answer_norm, answer_key, gold_norm, gold_key)
                if decided is _ASK:
                    for_worker.setdefault((answer_norm, gold_norm), []).append(index)
                    continue
                self.stats["grade_fast"] += 1
                self.stats["ungraded"] += decided is None
                self._grade[(answer, gold)] = grades[index] = decided
            if for_worker:
                self._grade_in_worker(for_worker, answers, golds, grades)
        return grades

    def _grade_in_worker(
        self,
        for_worker: dict[tuple[str, str], list[int]],
        answers: Sequence[str | None],
        golds: Sequence[str],
        grades: list[bool | None],
    ) -> None:
        """Compare in the worker the normalised pairs `_decide` could not, into `grades`; remember what it learnt."""
        items = [
            [
                answer_norm,
                gold_norm,
                self._known_key(answer_norm, self._fast_key_of(answers[indices[0]])),
                self._known_key(gold_norm, self._fast_key_of(golds[indices[0]])),
            ]
            for (answer_norm, gold_norm), indices in for_worker.items()
        ]
        keys_reported: set[int] = set()  # items whose keys were known before their time ran out
        results = self._run("eq", items, lambda item, _keys: keys_reported.add(item))
        for item, ((answer_norm, gold_norm), result) in enumerate(zip(for_worker, results)):
            self.stats["grade_symbolic"] += 1
            # FAILED is a resource failure in the worker (MemoryError, RecursionError: math_verify itself catches
            # parse errors), so like a timeout it is "ungraded", never "wrong"
            grade: bool | None = None
            if result.outcome is Outcome.DONE:
                equal, answer_key, gold_key = result.value
                grade = equal is True
                for norm, key in ((answer_norm, answer_key), (gold_norm, gold_key)):
                    if norm not in self._sym_key and (key is None or isinstance(key, str)):
                        self._sym_key[norm] = key
            elif result.outcome in _OUT_OF_BOUNDS and item not in keys_reported and answer_norm not in self._sym_key:
                # it failed before the keys were known: parsing the answer (the gold's key is computed first,
                # separately) is what is too costly -- remember, do not spend the bound again
                self.stats["key_timeouts"] += result.outcome is Outcome.TIMED_OUT
                self._sym_key[answer_norm] = result.outcome
            tried = result.outcome is not Outcome.NOT_TRIED  # a pair not tried is not remembered: tried again later
            if tried:
                self._eq[(answer_norm, gold_norm)] = grade
            for index in for_worker[(answer_norm, gold_norm)]:
                self.stats["ungraded"] += grade is None
                grades[index] = grade
                if tried:
                    self._grade[(answers[index], golds[index])] = grade  # type: ignore[index]

    def _fast_key_of(self, raw: str | None) -> str | None:
        return None if raw is None else self._fast(raw)[1]

    def equivalent(self, pred: str | None, gold: str) -> bool:
        """Like `grade` but a timeout counts as not equivalent."""
        return self.grade(pred, gold) is True


_DEFAULT: dict[float, AnswerGrader] = {}
_DEFAULT_LOCK = threading.Lock()


_PRODUCT_BOUND = re.compile(r"\\prod\s*_\s*\{[^{}]*\}\s*\^\s*\{?\s*(?:10\s*\^\s*\{?\s*(\d+)|(\d+))")


def _long_product(norm: str) -> bool:
    """``\\prod`` with an upper bound over 10^5: sympy would spend the whole bound (or memory) evaluating it."""
    m = _PRODUCT_BOUND.search(norm) if "\\prod" in norm else None
    if m is None:
        return False
    if m.group(1) is not None:
        return int(m.group(1)) >= 5
    return len(m.group(2)) > 5


def _poly_degree(key: str) -> float:
    """Total degree of a polynomial key (``p:x,y|2.0:1/1;0.1:-3/2`` -> 2); infinity for any other key."""
    if not key.startswith("p:") or "|" not in key:
        return float("inf")
    try:
        return max(sum(int(e) for e in term.split(":", 1)[0].split(".")) for term in key.split("|", 1)[1].split(";"))
    except ValueError:
        return float("inf")


def _default_grader(timeout: float) -> AnswerGrader:
    with _DEFAULT_LOCK:
        g = _DEFAULT.get(timeout)
        if g is None:
            g = AnswerGrader(timeout=timeout)
            if _DEFAULT:  # share one worker process among the module-level graders
                g._worker = next(iter(_DEFAULT.values())).worker
            _DEFAULT[timeout] = g
        return g


def equivalent(pred: str | None, gold: str, timeout: float = 5.0) -> bool:
    """Mathematical equivalence of a predicted and a gold answer; ``False`` for ``None``, and ``False`` when the
    comparison runs past ``timeout`` seconds (use `AnswerGrader.grade` to tell "ungraded" apart)."""
    if pred is None:
        return False
    return _default_grader(float(timeout)).grade(pred, gold) is True
