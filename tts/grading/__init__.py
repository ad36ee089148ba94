"""Answer extraction, normalisation, equivalence, voting keys and time-bounded grading (issue 3).

    from tts.grading import extract_answer, equivalent, AnswerGrader

    grader = AnswerGrader(timeout=cfg.scoring.grading_timeout)   # once per run; holds the run-wide caches
    ans = extract_answer(completion_text)      # str | None
    k = grader.key(ans)                        # voting key (None for no answer)
    ok = grader.grade(ans, problem.answer)     # True / False / None (= ungraded: hit the time bound)

Batch forms `grader.keys(answers)` and `grader.grade_many(answers, golds)` send all the symbolic work of a batch to
the worker process in one round trip. See `grader`, `normalize`, `symbolic` and `worker` for the details.
"""

from tts.grading.extract import extract_answer, extract_answer_with_rule
from tts.grading.grader import AnswerGrader, equivalent
from tts.grading.normalize import normalize_answer, numeric_value

__all__ = [
    "extract_answer",
    "extract_answer_with_rule",
    "equivalent",
    "AnswerGrader",
    "normalize_answer",
    "numeric_value",
]
