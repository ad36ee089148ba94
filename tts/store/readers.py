"""Reading run directories, never repairing them: the writer repairs (tts/store/writer.py), a reader names what is
wrong.

`RunReader(path).summaries()` checks the index (each entry's own digest, the config hash, the batch files' sizes),
`iter_records()` also each batch's sha256 as it reads it, `verify()` every file without decompressing; anything that
does not check out raises `RunDamaged`, one line naming the file. Readers trust the index alone: a batch file without
an intact index entry is damage to them, which only the writer's next open repairs (tts/store/format.py: the seal).
Index entries written before entries carried their own digest are read as "unverified" (their batch files are still
checked), with one warning per directory. Records and summaries are typed as tts/data/records.py defines them.
Run directories of older versions (one `results.jsonl`) are still read.

`find_run_dirs` finds the run directories at or below some paths, for every tool that takes a folder of runs.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Optional, Union

from tts.data.records import ProblemRecord, ProblemSummary, RecordError
from tts.scoring import aggregate_metrics
from tts.store.format import (
    BATCH_FILE,
    DIGESTS,
    FINGERPRINT,
    INDEX,
    LEGACY_RESULTS,
    LOCK,
    METRICS,
    RESULTS,
    batch_number,
    decode_batch,
    entry_digest,
    parse_line,
)
from tts.store.provenance import config_hash

log = logging.getLogger(__name__)

_SAID_UNVERIFIED: set[Path] = set()  # index files already warned about as unverified, in this process


class RunDamaged(ValueError):
    """Results that do not verify (an edited, truncated, foreign or missing batch or index entry). The message is one
    line naming the file; readers raise it rather than count what they cannot trust."""


class RunReader:
    """One run's directory, read only: summaries() (the index: cheap), iter_records() (whole records, batch by batch),
    verify() and files(). The writer (tts.store.writer.RunDirectory) is a RunReader too."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.results_dir = self.path / RESULTS
        self.index_path = self.results_dir / INDEX
        self.digests_path = self.results_dir / DIGESTS
        self.legacy_path = self.path / LEGACY_RESULTS
        self.metrics_path = self.path / METRICS

    def has_results(self) -> bool:
        """Whether the directory holds any results (in either format; batch files whose index was lost count)."""
        return (
            (self.index_path.exists() and self.index_path.stat().st_size > 0)
            or (self.legacy_path.exists() and self.legacy_path.stat().st_size > 0)
            or bool(self._batch_files())
        )

    def _batch_files(self) -> list[str]:
        """The names of the batch files in results/, in batch order."""
        if not self.results_dir.is_dir():
            return []
        return sorted((f.name for f in self.results_dir.iterdir() if BATCH_FILE.match(f.name)), key=batch_number)

    def summaries(self) -> dict[str, ProblemSummary]:
        """Per-problem summaries (unique_id, scores, compute, ungraded_answers) by unique_id, in written order.

        Reads only the index (a torn last line is ignored) and checks it (`_entries`); for an old one-file directory,
        the records themselves. Raises RunDamaged naming the file when something does not check out.
        """
        if not self._indexed():
            return {r.unique_id: r.summary() for r in self._legacy_records()}
        return {s.unique_id: s for entry in self._entries() for s in entry["summaries"]}

    def iter_records(self) -> Iterator[ProblemRecord]:
        """Every whole record, batch by batch in written order (one batch in memory at a time), each batch file
        checked against its index entry (sha256, the problems it holds) before it is decompressed."""
        if not self._indexed():
            yield from self._legacy_records()
            return
        for entry in self._entries():
            path = self.results_dir / entry["file"]
            data = path.read_bytes()
            self._check_bytes(path, data, entry)
            try:
                records = decode_batch(data, entry["file"])
            except RecordError as why:
                raise RunDamaged(f"{self.results_dir}/{why}") from None
            if [r.unique_id for r in records] != [s.unique_id for s in entry["summaries"]]:
                raise RunDamaged(f"{path} holds other problems than its index entry lists")
            yield from records

    def records(self) -> list[ProblemRecord]:
        return list(self.iter_records())

    def verify(self) -> None:
        """Check every results file (the index as summaries() does, and each batch file's sha256) without
        decompressing anything; RunDamaged names the first file that does not check out."""
        if self._indexed():
            for entry in self._entries():
                path = self.results_dir / entry["file"]
                self._check_bytes(path, path.read_bytes(), entry)

    def files(self) -> list[Path]:
        """The results files a copy of this run needs (the index, its batches and the digests that let a copy verify
        and rebuild them, or the old results.jsonl)."""
        if not self._indexed():
            return [self.legacy_path] if self.legacy_path.exists() else []
        digests = [self.digests_path] if self.digests_path.exists() else []
        return [self.index_path] + [self.results_dir / e["file"] for e in self._entries()] + digests

    def _indexed(self) -> bool:
        """Whether the results are in the batch format (an index, or batch files whose index was lost)."""
        return self.index_path.exists() or not self.legacy_path.exists()

    @staticmethod
    def _check_bytes(path: Path, data: bytes, entry: dict) -> None:
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise RunDamaged(f"{path}: its sha256 does not match its index entry: it was changed after it was written")

    def expected_config_hash(self) -> Optional[str]:
        """The config hash every index entry must carry: fingerprint.json's, else run_info.json's (a W&B artifact
        carries only the latter), else None (then the entries must at least agree with each other)."""
        try:
            return config_hash(json.loads((self.path / FINGERPRINT).read_text()))
        except (OSError, ValueError):
            pass
        try:
            value = json.loads((self.path / "run_info.json").read_text()).get("config_hash")
            return value if isinstance(value, str) else None
        except (OSError, ValueError, AttributeError):
            return None

    def _entries(self) -> list[dict]:
        """The index entries, each checked without reading its batch file: its own digest, the run's config hash,
        the file's presence and size, its problems' fields, each problem once; every batch file has an entry. The
        summaries are parsed once, under "summaries". Raises RunDamaged with one line naming the file."""
        expected = self.expected_config_hash()
        try:
            lines = self.index_path.read_bytes().splitlines(keepends=True)
        except FileNotFoundError:
            lines = []
        entries: list[dict] = []
        seen: set[str] = set()
        unverified = 0
        for number, line in enumerate(lines, start=1):
            if not line.endswith(b"\n") and number == len(lines):
                break  # torn by a crash, or the write in flight; the writer's next open() repairs it
            where = f"{self.index_path} line {number}"
            entry = parse_line(line)
            if (
                not isinstance(entry, dict)
                or not isinstance(entry.get("file"), str)
                or not BATCH_FILE.match(entry["file"])
            ):
                raise RunDamaged(f"{where} is not a batch entry")
            name = entry["file"]
            if "entry_sha256" not in entry:
                unverified += 1
            elif entry_digest(entry) != entry["entry_sha256"]:
                raise RunDamaged(f"{where} ({name}): the entry was edited after it was written (entry_sha256)")
            expected = expected or entry.get("config_hash")
            if entry.get("config_hash") != expected:
                raise RunDamaged(
                    f"{where} ({name}): written by another configuration (config hash {entry.get('config_hash')!r}, "
                    f"this run {expected!r})"
                )
            path = self.results_dir / name
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                raise RunDamaged(f"{path} is missing (listed at {where})") from None
            if size != entry.get("bytes"):
                raise RunDamaged(
                    f"{path}: {size} bytes where its index entry says {entry.get('bytes')}: truncated or changed "
                    f"after it was written"
                )
            try:
                entry["summaries"] = [ProblemSummary.from_json(data) for data in entry.get("problems") or []]
            except (RecordError, TypeError) as why:
                raise RunDamaged(f"{where} ({name}): {why}") from None
            for summary in entry["summaries"]:
                if summary.unique_id in seen:
                    raise RunDamaged(f"{where} ({name}): {summary.unique_id} is already recorded by an earlier batch")
                seen.add(summary.unique_id)
            entries.append(entry)
        listed = {e["file"] for e in entries}
        stray = [name for name in self._batch_files() if name not in listed]
        if stray and not is_locked(self.path):  # a live writer's batch in flight has no entry yet
            what = (
                f"{self.results_dir / stray[0]} has no entry in {INDEX}"
                if lines
                else f"{self.index_path} is missing but {self.results_dir} holds {len(stray)} batch file(s)"
            )
            raise RunDamaged(
                f"{what}; rerun the command that wrote this run: resuming rebuilds lost entries from the batch files "
                f"{DIGESTS} vouches for"
            )
        self._say_unverified(unverified)
        return entries

    def _say_unverified(self, count: int) -> None:
        """Warn once per directory and process that its index predates entry digests (read, resumed, unverified),
        when `count` of its entries do."""
        if count and self.index_path.resolve() not in _SAID_UNVERIFIED:
            _SAID_UNVERIFIED.add(self.index_path.resolve())
            log.warning(
                "%s: %d index entries were written before entries carried their own digest: their scores are read "
                "unverified (their batch files are still checked)",
                self.index_path,
                count,
            )

    def _legacy_records(self) -> Iterator[ProblemRecord]:
        if not self.legacy_path.exists():
            return
        with open(self.legacy_path, "rb") as handle:
            for line in handle:
                if not line.endswith(b"\n"):
                    break
                try:
                    yield ProblemRecord.from_json(json.loads(line))
                except (json.JSONDecodeError, UnicodeDecodeError, RecordError):
                    continue  # a stub or a torn line: never counted


def is_locked(path: Path) -> bool:
    """Whether a process holds the run directory's lock now (it is being written)."""
    if not (Path(path) / LOCK).exists():
        return False
    with open(Path(path) / LOCK) as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return False


def find_run_dirs(paths: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]) -> list[Path]:
    """The run directories at or below `paths`, each once: a path that is a run directory (results in either format)
    is taken as it is, a folder is searched recursively (its run directories sorted), skipping W&B's copies of the
    results files (under wandb/) and interrupted merges (`.<out>.merging-*`). The one finder of run directories: merge,
    the grading audit and analysis all call it. A path that does not exist raises FileNotFoundError."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[Path] = []
    for path in map(Path, paths):
        if RunReader(path).has_results():
            found.append(path)
        elif path.is_dir():
            below = [p.parent for p in path.rglob(RESULTS) if p.is_dir() and RunReader(p.parent).has_results()]
            below += [p.parent for p in path.rglob(LEGACY_RESULTS)]
            found.extend(
                sorted(
                    {
                        p
                        for p in below
                        if not any(part == "wandb" or ".merging-" in part for part in p.relative_to(path).parts)
                    }
                )
            )
        else:
            raise FileNotFoundError(
                f"{path}: neither a run directory (with {RESULTS}/ or {LEGACY_RESULTS}) nor a folder of runs"
            )
    return list(dict.fromkeys(found))


def run_metrics(records: Sequence[ProblemRecord | ProblemSummary], n: int) -> dict:
    """metrics.json of a run (or of merged shards): accuracies and tokens, plus the backend calls spent."""
    metrics = aggregate_metrics(records, n)
    metrics["compute/backend_calls"] = round(sum(r.compute.get("backend_calls_share", 0.0) for r in records), 3)
    return metrics
