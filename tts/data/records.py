"""The per-problem record of a run and its completions, typed from the strategy that builds a completion to the run
directory, tracking and analysis.

    ProblemRecord       one problem: its dataset fields, n Completions, Scores, compute counters, ungraded answers, note
      Completion        one solution: text, PRM steps and scores, finish reason, tokens, answer, key, verdict
      Scores            predictions and correctness at every budget n' (what tts.scoring.score_problem computes)
    ProblemSummary      the part of a record that run metrics need; one per problem in results/index.jsonl

The on-disk form (one JSON object per line of a batch file, `zcat results/batch-*.jsonl.gz | jq`) has exactly one
writer, `to_json`, and one reader, `from_json`, per type. `ProblemRecord.to_json` writes the keys, their order and their
values as the release before typed records did, so a run's files are byte-identical to what that release wrote
(tests/test_records.py reads and rewrites a run it wrote, tests/data/legacy_run).
Records of older versions stay readable: a key this version does not know is kept (`unknown`) and written back after
the known ones, never dropped; completions written before they carried `answer_rule` and `correct` read them as None
and remember that they were absent (`absent`), so such a record is written back as it was read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from tts.data.problem import Problem

# The scores a summary keeps, in their on-disk order (predictions stay in the batch files).
SUMMARY_SCORES = ("expected", "correct", "ungraded", "pass")
# Completion keys that versions before the per-completion verdict did not write.
LATER_COMPLETION_KEYS = ("answer_rule", "correct")
# Completion fields a strategy steers scoring with, kept inside `extra` on disk (in this order, next to each other).
STEERING_KEYS = ("vote", "weight")


class RecordError(ValueError):
    """A JSON object that is not a record (or summary) this version can read; the message says what is missing."""


@dataclass
class Completion:
    """One of the n solutions a strategy returns for a problem; grading fills `answer`, `key`, `answer_rule`, `correct`.

    `steps` are the texts the PRM scored (the solution split at blank lines, stripped, empty pieces dropped), one score
    each in `step_scores`. `finish_reason` is `stop`/`eos` for a solution that ended by itself, `length` when it hit
    `budget.max_tokens`, `truncated` when the search ran out of iterations before it finished. `tokens` counts the
    tokens
    generated for this completion's own text; compute shared with siblings (beam prefixes, lookahead rollouts) is
    counted once in the run's totals. `extra` holds what a strategy adds (filter-vote's verdict, the revisions chain
    and position). `vote` and `weight` are how a strategy steers scoring (tts.scoring): whether the completion may
    vote in "maj" (None: not marked, it may) and its weight in the strategy's own vote, "final" (None: the strategy
    has none). On disk they sit inside `extra`, as records have always had them: after its keys, or after the first
    `vote_at` of them (filter-vote's records: after the verdict). `answer_rule` is the extraction rule that found
    `answer`; `correct` its verdict (None: ungraded, or a record of a version before verdicts). `confidence` is the
    policy's confidence in the text
    (tts.confidence.measures.completion_confidence: mean, lowest_group, bottom10, tail, self_certainty, and
    step_lowest, one per step), None when the backend returned no log-probabilities; it is written only when present,
    so records without it are written as before.
    """

    text: str
    steps: list[str]
    step_scores: list[float]
    finish_reason: str
    tokens: int
    answer: Optional[str] = None
    key: Optional[str] = None
    extra: dict = field(default_factory=dict)
    answer_rule: Optional[str] = None
    correct: Optional[bool] = None
    confidence: Optional[dict] = None
    vote: Optional[bool] = None
    weight: Optional[float] = None
    vote_at: Optional[int] = None  # on disk, vote and weight follow this many of extra's keys (None: all of them)
    absent: frozenset[str] = frozenset()  # LATER_COMPLETION_KEYS missing from the file it was read from
    unknown: dict = field(default_factory=dict)  # keys of the file this version does not know, as read

    def to_json(self) -> dict:
        """The on-disk object. Built by hand: dataclasses.asdict deep-copies every list, which at n=256 costs more than
        the search."""
        data = {
            "text": self.text,
            "steps": list(self.steps),
            "step_scores": list(self.step_scores),
            "finish_reason": self.finish_reason,
            "tokens": self.tokens,
            "answer": self.answer,
            "key": self.key,
        }
        if self.extra or self.vote is not None or self.weight is not None:
            data["extra"] = self._extra_on_disk()
        if "answer_rule" not in self.absent:
            data["answer_rule"] = self.answer_rule
        if "correct" not in self.absent:
            data["correct"] = self.correct
        if self.confidence is not None:
            data["confidence"] = self.confidence
        if self.unknown:
            data.update(self.unknown)
        return data

    def _extra_on_disk(self) -> dict:
        steering = [(name, getattr(self, name)) for name in STEERING_KEYS if getattr(self, name) is not None]
        own = list(self.extra.items())
        return dict(own[: self.vote_at] + steering + own[self.vote_at :])  # vote_at None: after all of them

    @classmethod
    def from_json(cls, data) -> Completion:
        """Raises RecordError when `data` lacks a field every version wrote (text, steps, scores, finish, tokens)."""
        if not isinstance(data, dict):
            raise RecordError(f"a completion that is not an object: {data!r:.80}")
        extra = data.get("extra", {})
        steering = {}
        if isinstance(extra, dict) and ("vote" in extra or "weight" in extra):  # lifted out, where they sat noted
            at = min(list(extra).index(name) for name in STEERING_KEYS if name in extra)
            steering = {name: extra[name] for name in STEERING_KEYS if name in extra}
            extra = {name: value for name, value in extra.items() if name not in STEERING_KEYS}
            steering["vote_at"] = None if at == len(extra) else at
        try:
            completion = cls(
                text=data["text"],
                steps=data["steps"],
                step_scores=data["step_scores"],
                finish_reason=data["finish_reason"],
                tokens=data["tokens"],
                answer=data.get("answer"),
                key=data.get("key"),
                extra=extra,
                answer_rule=data.get("answer_rule"),
                correct=data.get("correct"),
                confidence=data.get("confidence"),
                **steering,
            )
        except KeyError as missing:
            raise RecordError(f"a completion without {missing}") from None
        if "answer_rule" not in data or "correct" not in data:
            completion.absent = frozenset(k for k in LATER_COMPLETION_KEYS if k not in data)
        if not data.keys() <= _COMPLETION_KEYS:
            completion.unknown = {k: v for k, v in data.items() if k not in _COMPLETION_KEYS}
        return completion


_COMPLETION_KEYS = frozenset(
    (
        "text",
        "steps",
        "step_scores",
        "finish_reason",
        "tokens",
        "answer",
        "key",
        "extra",
        *LATER_COMPLETION_KEYS,
        "confidence",
    )
)


@dataclass
class Scores:
    """A problem's predictions and correctness at every budget n', keyed `<aggregation>@<n'>` (`pass@<n'>` for
    `pass_at`); see tts/scoring.py. A summary's scores have no `predictions` (None)."""

    correct: dict[str, Optional[bool]]
    expected: dict[str, float]
    ungraded: dict[str, float]
    pass_at: dict[str, float]  # "pass" on disk
    predictions: Optional[dict[str, Optional[str]]] = None
    unknown: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        data: dict[str, Any] = {} if self.predictions is None else {"predictions": self.predictions}
        data.update(correct=self.correct, expected=self.expected, ungraded=self.ungraded)
        data["pass"] = self.pass_at
        data.update(self.unknown)
        return data

    @classmethod
    def from_json(cls, data, unique_id: str) -> Scores:
        """A record's scores, or a summary's (no predictions); RecordError names `unique_id` when parts are missing."""
        if not isinstance(data, dict) or not all(isinstance(data.get(k), dict) for k in SUMMARY_SCORES):
            raise RecordError(f"{unique_id}: no scores")
        return cls(
            correct=data["correct"],
            expected=data["expected"],
            ungraded=data["ungraded"],
            pass_at=data["pass"],
            predictions=data.get("predictions"),
            unknown={k: v for k, v in data.items() if k not in _SCORES_KEYS},
        )


_SCORES_KEYS = frozenset(("predictions", *SUMMARY_SCORES))


@dataclass
class ProblemSummary:
    """What run metrics are computed from (a few KB at n=256, against ~300 KB for the record): one per problem in the
    index, so that resuming or finishing a run never reads the completions back."""

    unique_id: str
    scores: Scores  # without predictions
    compute: dict[str, float]
    ungraded_answers: Optional[int] = None

    def to_json(self) -> dict:
        """The index form: scores in SUMMARY_SCORES order, `ungraded_answers` only when known."""
        scores = self.scores
        data: dict[str, Any] = {
            "unique_id": self.unique_id,
            "scores": {
                "expected": scores.expected,
                "correct": scores.correct,
                "ungraded": scores.ungraded,
                "pass": scores.pass_at,
            },
            "compute": self.compute,
        }
        if self.ungraded_answers is not None:
            data["ungraded_answers"] = self.ungraded_answers
        return data

    @classmethod
    def from_json(cls, data) -> ProblemSummary:
        """Raises RecordError when `data` lacks what a summary needs (a stub, a record of another program)."""
        unique_id = _unique_id(data)
        return cls(
            unique_id=unique_id,
            scores=Scores.from_json(data.get("scores"), unique_id),
            compute=_compute(data, unique_id),
            ungraded_answers=data.get("ungraded_answers"),
        )


@dataclass
class ProblemRecord:
    """Everything a run records about one problem: the problem as the dataset gave it (the fields of
    tts.data.problem.Problem, `answer` being the gold answer), its completions, their scores, the compute spent on it
    (`generated_tokens`, `prm_tokens`, `backend_calls`, ... as the strategy counted, plus the pipeline's
    `backend_calls_share` and `prm_cached_tokens`), how many distinct answers the grader could not grade, and why it
    has fewer than n completions (`note`), if it does."""

    unique_id: str
    problem: str
    answer: str
    solution: str
    subject: Optional[str]
    level: Optional[int]
    completions: list[Completion]
    scores: Scores
    compute: dict[str, float]
    ungraded_answers: Optional[int] = None
    note: Optional[str] = None
    unknown: dict = field(default_factory=dict)  # keys of the file this version does not know, as read

    @classmethod
    def graded(
        cls,
        problem: Problem,
        completions: Sequence[Completion],
        scores: Scores,
        compute: dict,
        ungraded_answers: int,
        note: Optional[str] = None,
    ) -> ProblemRecord:
        """The record of a problem the pipeline has searched and graded. Every field of `problem` becomes a field of
        the record: a field added to Problem fails here until the record (and so the file format) has it too."""
        return cls(
            **problem.as_dict(),
            completions=list(completions),
            scores=scores,
            compute=compute,
            ungraded_answers=ungraded_answers,
            note=note or None,
        )

    def summary(self) -> ProblemSummary:
        return ProblemSummary(
            unique_id=self.unique_id,
            compute=self.compute,
            ungraded_answers=self.ungraded_answers,
            scores=Scores(
                correct=self.scores.correct,
                expected=self.scores.expected,
                ungraded=self.scores.ungraded,
                pass_at=self.scores.pass_at,
            ),
        )

    def to_json(self) -> dict:
        """The on-disk object: the problem's fields, completions, scores, compute, ungraded_answers and note (only
        when there is one) in that order, then the keys this version did not know when it read the record."""
        data = {
            "unique_id": self.unique_id,
            "problem": self.problem,
            "answer": self.answer,
            "solution": self.solution,
            "subject": self.subject,
            "level": self.level,
            "completions": [c.to_json() for c in self.completions],
            "scores": self.scores.to_json(),
            "compute": self.compute,
        }
        if self.ungraded_answers is not None:
            data["ungraded_answers"] = self.ungraded_answers
        if self.note is not None:
            data["note"] = self.note
        data.update(self.unknown)
        return data

    @classmethod
    def from_json(cls, data) -> ProblemRecord:
        """Raises RecordError when `data` lacks what a record needs (a stub line, a record of another program)."""
        unique_id = _unique_id(data)
        if not isinstance(data.get("completions"), list):
            raise RecordError(f"{unique_id}: no completions")
        return cls(
            unique_id=unique_id,
            problem=data.get("problem"),
            answer=data.get("answer"),
            solution=data.get("solution", ""),
            subject=data.get("subject"),
            level=data.get("level"),
            completions=[Completion.from_json(c) for c in data["completions"]],
            scores=Scores.from_json(data.get("scores"), unique_id),
            compute=_compute(data, unique_id),
            ungraded_answers=data.get("ungraded_answers"),
            note=data.get("note"),
            unknown={k: v for k, v in data.items() if k not in _RECORD_KEYS},
        )


_RECORD_KEYS = frozenset(
    (
        "unique_id",
        "problem",
        "answer",
        "solution",
        "subject",
        "level",
        "completions",
        "scores",
        "compute",
        "ungraded_answers",
        "note",
    )
)


def _unique_id(data) -> str:
    if not isinstance(data, dict) or not isinstance(data.get("unique_id"), str):
        raise RecordError("no unique_id")
    return data["unique_id"]


def _compute(data: dict, unique_id: str) -> dict:
    if not isinstance(data.get("compute"), dict):
        raise RecordError(f"{unique_id}: no compute")
    return data["compute"]
