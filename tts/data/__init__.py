"""Datasets: the synthetic generator, local jsonl/parquet files, or a hub dataset, all into `Problem` records.

    dataset=synthetic                                   # generated, no download
    dataset=math500                                     # HuggingFaceH4/MATH-500 from the hub (or a local copy)
    dataset=math500 dataset.path=/data/math500.jsonl    # a local file
    dataset=jsonl dataset.path=my.jsonl '+dataset.columns={problem: question, answer: final}'

`num_problems` keeps the first K problems; `start` / `end` then cut a range, and `shard` / `num_shards` split that range
into contiguous parts, one per job (`dataset.shard=0,1,2,3 dataset.num_shards=4`; join them with `python -m tts.merge`).
"""

from __future__ import annotations

import os
from pathlib import Path

from tts.data.problem import Problem
from tts.data.synthetic import generate_problems

REQUIRED = ("problem", "answer")
OPTIONAL = ("unique_id", "solution", "subject", "level")


class DatasetError(ValueError):
    """A dataset that cannot be loaded; the message says which key to change."""


def _read_rows(dataset_cfg) -> list[dict]:
    path = dataset_cfg.path
    if path:
        file = Path(os.path.expanduser(path))
        if not file.exists():
            raise DatasetError(f"config key 'dataset.path': file not found: {file}")
        if file.suffix in (".jsonl", ".json"):
            import pandas as pd

            return pd.read_json(file, lines=file.suffix == ".jsonl").to_dict("records")
        if file.suffix == ".parquet":
            import pandas as pd

            return pd.read_parquet(file).to_dict("records")
        raise DatasetError(f"config key 'dataset.path': expected a .jsonl, .json or .parquet file, got {file.name}")
    hub_id = getattr(dataset_cfg, "hub_id", None)
    if not hub_id:
        raise DatasetError(f"config key 'dataset.path': dataset {dataset_cfg.name!r} needs a local file (dataset.path=...)")
    return _load_from_hub(hub_id, dataset_cfg.split)


def _load_from_hub(hub_id: str, split: str) -> list[dict]:
    try:
        import datasets

        return list(datasets.load_dataset(hub_id, split=split))
    except Exception as error:  # offline, gated or missing: one message with the way out
        raise DatasetError(
            f"could not load {hub_id!r} (split {split!r}) from the Hugging Face hub ({type(error).__name__}: {error}). "
            f"If this machine is offline, download it elsewhere (e.g. `datasets.load_dataset({hub_id!r}, split={split!r})"
            f".to_json('math500.jsonl')`) and pass dataset.path=/path/to/math500.jsonl"
        ) from error


def _to_problem(row: dict, index: int, columns: dict, source: str) -> Problem:
    def get(field: str):
        return row.get(columns.get(field, field))

    missing = [f"{f} (column {columns.get(f, f)!r})" for f in REQUIRED if get(f) is None]
    if missing:
        raise DatasetError(
            f"dataset {source!r} row {index} has no {', '.join(missing)}; its columns are {sorted(row)}. "
            f"Map them with dataset.columns, e.g. '+dataset.columns={{problem: question, answer: final_answer}}'"
        )
    level = get("level")
    try:
        level = int(str(level).replace("Level", "").strip()) if level is not None else None
    except ValueError:
        level = None
    return Problem(
        unique_id=str(get("unique_id") if get("unique_id") is not None else f"{source}/{index}"),
        problem=str(get("problem")),
        answer=str(get("answer")),
        solution=str(get("solution") or ""),
        subject=get("subject"),
        level=level,
    )


def load_problems(dataset_cfg) -> list[Problem]:
    """The problems of this run, after `num_problems` and the `start:end` shard."""
    if dataset_cfg.name == "synthetic" and not dataset_cfg.path:
        problems = generate_problems(dataset_cfg.num_problems or 500, dataset_cfg.generator_seed)
    else:
        columns = dict(dataset_cfg.columns or {})
        rows = _read_rows(dataset_cfg)
        problems = [_to_problem(row, i, columns, dataset_cfg.name) for i, row in enumerate(rows)]
        if dataset_cfg.num_problems:
            problems = problems[: dataset_cfg.num_problems]
    ids = [p.unique_id for p in problems]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"dataset {dataset_cfg.name!r} has repeated unique_id values; results are keyed by them")
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
    return shard


def shard_bounds(total: int, index: int, count: int) -> tuple[int, int]:
    """[lo, hi) of part `index` when `total` problems are cut into `count` contiguous parts differing by at most one."""
    return index * total // count, (index + 1) * total // count


__all__ = ["DatasetError", "Problem", "load_problems"]
