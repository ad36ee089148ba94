"""Read a dataset file (or hub split) into rows of exact values, without any type inference.

A gold answer is compared as text, so it must reach the grader exactly as the file wrote it: `"02139"` stays `02139`
(pandas would make it `2139.0`), `12345678901234567890` stays all twenty digits (not `1.2345678901234567e+19`), a JSON
`5` stays `5` (never `5.0`), and a missing answer is an error rather than the string `nan`. So:

- JSON and JSON lines are parsed with `json`'s `parse_int` / `parse_float` hooks, which hand over a number's own
  decimal text: no number is ever converted, so none is too large or loses digits;
- CSV cells are the strings written in the file (`csv` module, no dtype guessing);
- Parquet files and hub datasets keep their declared column types (Arrow): integers and decimals are written out
  exactly, floats by their shortest round-trip text.

Every row comes back with where it was read (`file line 3`), so that the caller can name the row of a bad value.
Anything that cannot be read (bad bytes, a line that is not JSON, a file that is not a table) raises `DatasetError`
with one line naming the file and the line or row.
"""

from __future__ import annotations

import csv
import decimal
import io
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tts.data.errors import DatasetError

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


class Row(dict):
    """One record of the file; `where` says where it was read, for error messages."""

    where: str = ""


def _row(values: dict, where: str) -> Row:
    row = Row(values)
    row.where = where
    return row


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _loads(text: str) -> Any:
    """JSON with every number kept as its decimal text (no int/float conversion, so nothing overflows or rounds)."""
    return json.loads(text, parse_int=str, parse_float=str, parse_constant=_no_constants)


def _decode(data: bytes, file: Path) -> str:
    try:
        return data.decode("utf-8-sig")  # tolerate a byte-order mark; anything else must be UTF-8
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        byte = data[error.start : error.start + 1]
        raise DatasetError(
            f"config key 'dataset.path': {file} line {line} is not UTF-8 text (byte {byte!r} at offset "
            f"{error.start}); save the file as UTF-8"
        ) from None


def _json_lines(text: str, file: Path) -> list[Row]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue  # blank lines (a trailing newline) are not records
        try:
            value = _loads(line)
        except ValueError as error:
            raise DatasetError(
                f"config key 'dataset.path': {file} line {number} is not JSON ({error}); each line "
                f"must be one JSON object"
            ) from None
        if not isinstance(value, dict):
            raise DatasetError(
                f"config key 'dataset.path': {file} line {number} is a JSON {type(value).__name__}, "
                f"not an object with the problem's fields"
            )
        rows.append(_row(value, f"{file} line {number}"))
    return rows


def _json_document(text: str, file: Path) -> list[Row]:
    """A .json file: a list of objects, or JSON lines (what `datasets`' `to_json` writes by default)."""
    try:
        value = _loads(text)
    except ValueError:
        return _json_lines(text, file)
    if isinstance(value, dict):  # one object: a JSON-lines file of one problem
        return _json_lines(text, file)
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise DatasetError(
            f"config key 'dataset.path': {file} must hold a JSON list of objects (one per problem) "
            f"or one JSON object per line"
        )
    return [_row(v, f"{file} record {i + 1}") for i, v in enumerate(value)]


def _csv(text: str, file: Path) -> list[Row]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return []
    except csv.Error as error:
        raise DatasetError(f"config key 'dataset.path': {file} line 1 is not CSV ({error})") from None
    rows = []
    try:
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) != len(header):
                raise DatasetError(
                    f"config key 'dataset.path': {file} line {reader.line_num} has {len(cells)} "
                    f"cells but the header has {len(header)} columns"
                )
            # An empty cell is a missing value, as in any CSV tool; everything else is the exact text.
            rows.append(
                _row({k: (v if v != "" else None) for k, v in zip(header, cells)}, f"{file} line {reader.line_num}")
            )
    except csv.Error as error:
        raise DatasetError(f"config key 'dataset.path': {file} line {reader.line_num} is not CSV ({error})") from None
    return rows


def _arrow_rows(records: Iterable[dict], source: str) -> list[Row]:
    return [_row(record, f"{source} row {i + 1}") for i, record in enumerate(records)]


def _parquet(file: Path) -> list[Row]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(file)
    except Exception as error:  # noqa: BLE001 - pyarrow raises several types for a file that is not Parquet
        raise DatasetError(
            f"config key 'dataset.path': {file} is not a readable Parquet file ({type(error).__name__}: {error})"
        ) from None
    return _arrow_rows(table.to_pylist(), str(file))


def read_file(file: Path) -> list[Row]:
    """The rows of a local .jsonl / .json / .csv / .parquet file, values exactly as stored."""
    if file.suffix not in SUFFIXES:
        raise DatasetError(f"config key 'dataset.path': expected a {', '.join(SUFFIXES)} file, got {file.name}")
    if file.suffix == ".parquet":
        if not file.is_file():
            raise DatasetError(f"config key 'dataset.path': cannot read {file}: not a file")
        return _parquet(file)
    try:
        data = file.read_bytes()
    except OSError as error:
        raise DatasetError(f"config key 'dataset.path': cannot read {file}: {error.strerror or error}") from None
    text = _decode(data, file)
    if file.suffix == ".jsonl":
        return _json_lines(text, file)
    if file.suffix == ".json":
        return _json_document(text, file)
    return _csv(text, file)


def read_hub_rows(records: Iterable[dict], hub_id: str, split: str) -> list[Row]:
    """Rows of a hub split (`datasets` yields Python values of the declared Arrow types)."""
    return _arrow_rows(records, f"{hub_id} ({split})")


def exact_text(value: Any) -> str | None:
    """A cell as the text it stands for; None when it is missing (null, NaN, empty or blank).

    Strings are kept character for character. Numbers arrive as their decimal text from JSON; from Parquet or the hub
    an integer or decimal is written out exactly and a float by its shortest round-trip form (`0.5`, never
    `0.50000001`). Anything else (a list, a boolean) is refused by the caller (TypeError), and so is a string that is
    not valid Unicode (ValueError): JSON's `\\ud800` escape decodes to a lone surrogate, which no UTF-8 file (the run
    directory's records) can hold.
    """
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError(
                f"invalid Unicode: a lone surrogate U+{ord(value[error.start]):04X} at character {error.start + 1} "
                f"(a \\u escape with no pair)"
            ) from None
        return value if value.strip() else None
    if isinstance(value, bool):
        raise TypeError("a boolean")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return None if math.isnan(value) else _finite(value)
    if isinstance(value, decimal.Decimal):
        return None if value.is_nan() else str(value)
    raise TypeError(f"a {type(value).__name__}")


def _finite(value: float) -> str:
    if math.isinf(value):
        raise TypeError("an infinite number")
    return repr(value)
