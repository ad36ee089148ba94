"""The two W&B tables of a run, built from its records: `completions` (one row per completion, so W&B's table view can
filter, sort and group them) and `problems` (one compact row per problem).

Text columns are capped at `MAX_TEXT` characters (a cut text ends in " [...]"); the full texts stay in the run's
results artifact. Every completion is in that artifact (the compressed batches); the completions table holds as many
as fit in its byte budget (`budgeted_rows`: `logger.table_budget` times the results' bytes), each problem's selected
completions first. Uncompressed JSON of every completion would be 2-20 times the results themselves (at n=256 on 500
problems, 128,000 rows and about 70 MB against 3 MB of batches).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Optional

from tts.data.records import ProblemRecord
from tts.scoring import reduce_scores

MAX_TEXT = 1000
CUT = " [...]"
# The aggregations the tables have columns for: the same columns in every run, so W&B can show runs side by side (the
# others are in the run's metrics and results).
TABLE_AGGREGATIONS = ("naive", "weighted", "maj")

COMPLETION_COLUMNS = [
    "unique_id",
    "level",
    "index",
    "answer",
    "correct",
    "score",
    "steps",
    "tokens",
    "finish_reason",
    "picked_naive",
    "picked_weighted",
    "picked_maj",
    "text",
    "step_scores",
]
PROBLEM_COLUMNS = [
    "unique_id",
    "level",
    "subject",
    "problem",
    "gold",
    "pred_naive",
    "pred_weighted",
    "pred_maj",
    "correct_naive",
    "correct_weighted",
    "correct_maj",
    "pass",
    "completions",
    "tokens",
]


def cap(text: Optional[str], limit: int = MAX_TEXT) -> Optional[str]:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - len(CUT)] + CUT


def _at(record: ProblemRecord, n: int) -> int:
    """The n' the record's predictions are read at: the run's n, or fewer completions when a strategy recorded why."""
    return n if f"pass@{n}" in record.scores.pass_at else len(record.completions)


def completion_rows(record: ProblemRecord, n: int, reduction: str) -> list[list]:
    """One row per completion. `picked_naive`: the single highest-scoring completion (first of ties, as the
    selection does); `picked_weighted` / `picked_maj`: every completion whose answer is equivalent to the winner."""
    k = _at(record, n)
    completions = record.completions[:k]
    scores = [reduce_scores(c.step_scores, reduction) for c in completions]
    best = max(range(len(scores)), key=lambda i: (scores[i], -i)) if scores else None
    predictions = record.scores.predictions
    assert predictions is not None, "a record's scores have predictions (a summary's have none)"
    winners = {}
    for agg in ("weighted", "maj"):
        answer = predictions.get(f"{agg}@{k}")
        winners[agg] = next((c.key for c in completions if answer is not None and c.answer == answer), None)
    verdicts = _verdicts(record)
    rows = []
    for i, (c, score) in enumerate(zip(completions, scores)):
        correct = verdicts.get(c.key) if "correct" in c.absent else c.correct
        rows.append(
            [
                record.unique_id,
                record.level,
                i,
                c.answer,
                correct,
                float(score),
                len(c.steps),
                c.tokens,
                c.finish_reason,
                i == best,
                winners["weighted"] is not None and c.key == winners["weighted"],
                winners["maj"] is not None and c.key == winners["maj"],
                cap(c.text),
                [float(s) for s in c.step_scores],
            ]
        )
    return rows


PICKS = [COMPLETION_COLUMNS.index(f"picked_{agg}") for agg in TABLE_AGGREGATIONS]


def budgeted_rows(rows_per_problem: Sequence[list[list]], budget_bytes: float) -> list[list[list]]:
    """Each problem's completion rows cut to fit `budget_bytes` of JSON in all, the most useful first: round by round,
    every problem adds its next row in priority order (the completion naive selection picked, the first completion of
    the weighted and of the majority answer, then the others in order), until the next row would not fit. Rows keep
    their order within a problem; a problem whose turn does not fit stops growing, the others go on."""
    orders = []
    for rows in rows_per_problem:
        picked = [next((i for i, row in enumerate(rows) if row[column]), None) for column in PICKS]
        first = list(dict.fromkeys(i for i in picked if i is not None))
        orders.append(first + [i for i in range(len(rows)) if i not in first])
    sizes = [[len(json.dumps(row, default=str)) + 2 for row in rows] for rows in rows_per_problem]
    kept: list[list[int]] = [[] for _ in rows_per_problem]
    growing = set(range(len(rows_per_problem)))
    used = 0.0
    depth = 0
    while growing:
        for p in sorted(growing):
            if depth >= len(orders[p]):
                growing.discard(p)
                continue
            size = sizes[p][orders[p][depth]]
            if used + size > budget_bytes:
                growing.discard(p)
                continue
            used += size
            kept[p].append(orders[p][depth])
        depth += 1
    return [[rows[i] for i in sorted(chosen)] for rows, chosen in zip(rows_per_problem, kept)]


def _verdicts(record: ProblemRecord) -> dict:
    """For records written before completions carried `correct`: the verdicts of the keys that won some selection
    (any other key: None, unknown)."""
    scores = record.scores
    assert scores.predictions is not None, "a record's scores have predictions (a summary's have none)"
    by_answer = {}
    for name, answer in scores.predictions.items():
        if answer is not None and scores.correct.get(name) is not None:
            by_answer[answer] = scores.correct[name]
    verdicts = {}
    for c in record.completions:
        if c.key is not None and c.answer in by_answer:
            verdicts[c.key] = by_answer[c.answer]
    return verdicts


def problem_row(record: ProblemRecord, n: int) -> list:
    k = _at(record, n)
    scores = record.scores
    assert scores.predictions is not None, "a record's scores have predictions (a summary's have none)"
    return [
        record.unique_id,
        record.level,
        record.subject,
        cap(record.problem),
        record.answer,
        *(scores.predictions.get(f"{agg}@{k}") for agg in TABLE_AGGREGATIONS),
        *(scores.correct.get(f"{agg}@{k}") for agg in TABLE_AGGREGATIONS),
        scores.pass_at.get(f"pass@{k}"),
        len(record.completions),
        record.compute.get("generated_tokens"),
    ]


def wandb_table(columns: Sequence[str], rows: list[list]):
    """`wandb.Table(columns, data=rows)`, fast: W&B infers column types row by row (about 1 ms a row, minutes at n=256
    on MATH-500); a value's W&B type follows from its Python type (and a list's element types and length), so the types
    are inferred from one row per distinct signature, in order of last occurrence, and the rows are then set as data."""
    import wandb

    representatives: dict = {}
    for row in rows:
        signature = tuple((list, frozenset(map(type, v)), len(v)) if isinstance(v, list) else type(v) for v in row)
        representatives.pop(signature, None)
        representatives[signature] = row
    # a list of its own: the table keeps it as `table.columns` (and appends to it in add_column)
    column_keys: list[str | int] = list(columns)
    table = wandb.Table(columns=column_keys, data=list(representatives.values()))
    table.data = [list(row) for row in rows]
    return table
