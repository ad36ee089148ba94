"""Datasets: the synthetic generator, local jsonl/json/csv/parquet files, or a hub dataset, all into `Problem` records.

    dataset=synthetic                                   # generated, no download
    dataset=math500                                     # HuggingFaceH4/MATH-500 from the hub (or a local copy)
    dataset=math500 dataset.path=/data/math500.jsonl    # a local file
    dataset=gsm8k                                       # openai/gsm8k (config main) from the hub: gold = after `####`
    dataset=gsm8k dataset.path=/data/gsm8k_test.jsonl   # a local copy with GSM8K's columns (question, answer)
    dataset=jsonl dataset.path=my.jsonl 'dataset.columns={problem: question, answer: final}'

A gold answer is compared with the model's extracted answer, so it must be an answer, not a worked solution:
`answer_transform` names how the mapped answer column becomes one (`gsm8k`: the text after the last `####`, thousands
separators removed), and a gold answer that still looks like a solution is refused before any generation (see
`check_gold_answer`).

`num_problems` keeps the first K problems; `start` / `end` then cut a range, and `shard` / `num_shards` split that range
into contiguous parts, one per job (`dataset.shard=0,1,2,3 dataset.num_shards=4`; join them with
`python -m tts.store.merge`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from tts.data.errors import DatasetError
from tts.data.problem import Problem
from tts.data.readers import Row, exact_text, read_file, read_hub_rows
from tts.data.synthetic import generate_problems

# A gold answer longer than this is prose (a worked solution), not an answer. MATH-500's longest answer is 53
# characters (a 3-vector as a pmatrix); GSM8K's finals are numbers.
MAX_ANSWER_CHARS = 200
FINAL_MARKER = "####"  # GSM8K's worked solutions end with `#### <final answer>`


def _gsm8k_final(text: str) -> str:
    """The text after the last `####`, with the commas of thousands separators removed (`1,450,000` -> `1450000`)."""
    if FINAL_MARKER not in text:
        raise ValueError(f"has no {FINAL_MARKER!r} line (GSM8K's worked solutions end with '#### <answer>')")
    final = text.rsplit(FINAL_MARKER, 1)[1].strip()
    return re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", final)


# dataset.answer_transform -> how the answer column becomes the gold answer (None: as written)
ANSWER_TRANSFORMS = {"gsm8k": _gsm8k_final}


def check_gold_answer(answer: str) -> str | None:
    """Why `answer` is a worked solution rather than an answer (None when it is an answer).

    The rule: a gold answer is refused when it spans more than one line, holds GSM8K's `####` marker, or is longer
    than MAX_ANSWER_CHARS characters. Graded against such a "gold answer" every completion would be wrong and the run
    would report 0.000 without a word, which is what mapping `answer` to GSM8K's raw `answer` column does.
    """
    text = answer.strip()
    if "\n" in text or "\r" in text:
        return "spans several lines"
    if FINAL_MARKER in text:
        return f"holds {FINAL_MARKER!r}"
    if len(text) > MAX_ANSWER_CHARS:
        return f"is {len(text)} characters long (more than {MAX_ANSWER_CHARS})"
    return None


def _read_rows(dataset_cfg) -> list[Row]:
    path = dataset_cfg.path
    if path:
        file = Path(os.path.expanduser(path))
        if not file.exists():
            raise DatasetError(f"config key 'dataset.path': file not found: {file}")
        return read_file(file)
    hub_id = getattr(dataset_cfg, "hub_id", None)
    if not hub_id:
        raise DatasetError(
            f"config key 'dataset.path': dataset {dataset_cfg.name!r} needs a local file (dataset.path=...)"
        )
    hub_config = getattr(dataset_cfg, "hub_config", None)
    return read_hub_rows(
        _load_from_hub(hub_id, hub_config, dataset_cfg.split, dataset_cfg.name), hub_id, dataset_cfg.split
    )


def _load_from_hub(hub_id: str, hub_config: str | None, split: str, name: str) -> list[dict]:
    config_arg = f"{hub_config!r}, " if hub_config else ""
    try:
        import datasets

        return list(datasets.load_dataset(hub_id, hub_config, split=split))
    except Exception as error:  # noqa: BLE001 - offline, gated or missing (many types): one message with the way out
        raise DatasetError(
            f"could not load {hub_id!r} (split {split!r}) from the Hugging Face hub ({type(error).__name__}: {error}). "
            f"If this machine is offline, download it elsewhere "
            f"(e.g. `datasets.load_dataset({hub_id!r}, {config_arg}split={split!r}).to_json('{name}.jsonl')`) "
            f"and pass dataset.path=/path/to/{name}.jsonl"
        ) from error


def _to_problem(
    row: Row, index: int, columns: dict, source: str, has_ids: bool, transform: str | None = None
) -> Problem:
    def column(field: str) -> str:
        return columns.get(field, field)

    def text(field: str, required: bool) -> str | None:
        try:
            value = exact_text(row.get(column(field)))
        except TypeError as kind:
            raise DatasetError(
                f"{row.where or f'row {index + 1}'}, column {column(field)!r}: {kind} where text or a "
                f"number is expected"
            ) from None
        except ValueError as why:  # text that is not valid Unicode
            raise DatasetError(f"{row.where or f'row {index + 1}'}, column {column(field)!r}: {why}") from None
        if value is None and required:
            if column(field) not in row:
                raise DatasetError(
                    f"dataset {source!r} {row.where or f'row {index + 1}'} has no {field} (column {column(field)!r}); "
                    f"its columns are {sorted(row)}. Map them with dataset.columns, e.g. "
                    f"'dataset.columns={{problem: question, answer: final_answer}}'"
                )
            raise DatasetError(
                f"{row.where or f'row {index + 1}'}, column {column(field)!r}: the {field} is missing "
                f"(null, NaN or empty); fix the row or remove it"
            )
        return value

    def required(field: str) -> str:
        value = text(field, True)
        assert value is not None  # text() raises for a missing required field
        return value

    problem, answer = required("problem"), required("answer")
    where = f"{row.where or f'row {index + 1}'}, column {column('answer')!r}"
    if transform is not None:
        try:
            answer = ANSWER_TRANSFORMS[transform](answer)
        except ValueError as error:
            raise DatasetError(
                f"config key 'dataset.answer_transform': {where}: the answer {error}; fix the row, or set "
                f"dataset.answer_transform=null if the column already holds final answers"
            ) from None
    why = check_gold_answer(answer)
    if why is not None:
        hint = (
            "set dataset.answer_transform=gsm8k to take the text after '####'"
            if FINAL_MARKER in answer
            else "map dataset.columns.answer to a column of final answers"
        )
        raise DatasetError(
            f"{where}: the gold answer {why}, so it looks like a worked solution rather than an answer (it starts "
            f"{answer.strip()[:30]!r}); {hint}"
        )
    # Ids are the keys of the results: all rows have one, or none has and the row index is used.
    unique_id = required("unique_id") if has_ids else f"{source}/{index}"
    level_text = text("level", False)
    level: int | None
    try:
        level = int(level_text.replace("Level", "").strip()) if level_text is not None else None
    except ValueError:
        level = None
    return Problem(
        unique_id=unique_id,
        problem=problem,
        answer=answer,
        solution=text("solution", False) or "",
        subject=text("subject", False),
        level=level,
    )


def _check_unique(problems: list[Problem], rows: list[Row], column: str) -> None:
    seen: dict[str, int] = {}
    for i, problem in enumerate(problems):
        if problem.unique_id in seen:
            first = rows[seen[problem.unique_id]].where or f"row {seen[problem.unique_id] + 1}"
            raise DatasetError(
                f"{rows[i].where or f'row {i + 1}'}, column {column!r}: unique_id "
                f"{problem.unique_id!r} is already used by {first}; results are keyed by it, so ids "
                f"must be unique"
            )
        seen[problem.unique_id] = i


def problems_sha256(problems: list[Problem]) -> str:
    """The identity of a problem set: ids, problem texts and gold answers, in order (a moved file keeps it)."""
    digest = hashlib.sha256()
    for p in problems:
        digest.update(json.dumps([p.unique_id, p.problem, p.answer], ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def _all_problems(dataset_cfg) -> list[Problem]:
    """Every problem of the dataset after `num_problems` (before the start:end / shard range)."""
    if dataset_cfg.name == "synthetic" and not dataset_cfg.path:
        return generate_problems(dataset_cfg.num_problems or 500, dataset_cfg.generator_seed)
    columns = dict(dataset_cfg.columns or {})
    rows = _read_rows(dataset_cfg)
    if dataset_cfg.num_problems:
        rows = rows[: dataset_cfg.num_problems]
    id_column = columns.get("unique_id", "unique_id")
    has_ids = any(id_column in row for row in rows)
    transform = getattr(dataset_cfg, "answer_transform", None)
    if transform is not None and transform not in ANSWER_TRANSFORMS:
        raise DatasetError(
            f"config key 'dataset.answer_transform': unknown transform {transform!r}; use one of "
            f"{sorted(ANSWER_TRANSFORMS)} or null (the answer column as written)"
        )
    problems = [_to_problem(row, i, columns, dataset_cfg.name, has_ids, transform) for i, row in enumerate(rows)]
    _check_unique(problems, rows, id_column)
    return problems


def load_problems(dataset_cfg) -> list[Problem]:
    """The problems of this run, after `num_problems` and the `start:end` shard."""
    return load_problems_and_identity(dataset_cfg)[0]


def load_problems_and_identity(dataset_cfg) -> tuple[list[Problem], str]:
    """This run's problems, and the sha256 of all problems before the range (`problems_sha256`).

    The hash goes into the run's fingerprint: with the range keys already there, it pins down exactly which problems
    a run directory holds, and shards of one dataset share it so that they still merge.
    """
    problems = _all_problems(dataset_cfg)
    shard = problems[dataset_cfg.start : dataset_cfg.end]
    if not shard:
        raise DatasetError(
            f"config keys 'dataset.start'/'dataset.end': the shard [{dataset_cfg.start}:{dataset_cfg.end}] of "
            f"{len(problems)} problems is empty"
        )
    index, count = getattr(dataset_cfg, "shard", 0), getattr(dataset_cfg, "num_shards", 1)
    if count > 1:
        lo, hi = shard_bounds(len(shard), index, count)
        if lo == hi:
            raise DatasetError(
                f"config key 'dataset.shard': shard {index} of dataset.num_shards={count} is empty: only {len(shard)} "
                f"problems in [{dataset_cfg.start}:{dataset_cfg.end}]; use at most {len(shard)} shards"
            )
        shard = shard[lo:hi]
    return shard, problems_sha256(problems)


def shard_bounds(total: int, index: int, count: int) -> tuple[int, int]:
    """[lo, hi) of part `index` when `total` problems are cut into `count` contiguous parts differing by at most one."""
    return index * total // count, (index + 1) * total // count


__all__ = ["DatasetError", "Problem", "load_problems", "load_problems_and_identity", "problems_sha256"]
