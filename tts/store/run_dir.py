"""The run directory: per-problem records written batch by batch, resume, and the files that make a run reproducible.

    <run dir>/
      .hydra/                 Hydra's composed config and overrides
      config.yaml             the resolved config (what actually ran)
      fingerprint.json        the parts of the config that change results; a rerun must match it to resume
      run_info.json           git commit, package versions, seeds, command line, start time
      results/
        batch-000000.jsonl.gz one finished batch: its problems' records as gzip-compressed JSON lines (`zcat | jq`),
        batch-000001.jsonl.gz ... each written to a temporary name, fsynced and renamed into place (never half there)
        digests.jsonl         one line per batch: file name, sha256 and size of that file and the run's config hash,
                              appended and fsynced *before* the batch file appears (so every batch on disk has one)
        index.jsonl           one line per batch: the same file name, sha256, size and config hash, each problem's
                              scores (what metrics.json needs) and `entry_sha256`, the digest of the line itself;
                              appended and fsynced after the batch file
      metrics.json            run-level accuracies and compute, rewritten at the end of every run from the index
      .lock                   held (flock) by the process writing the directory; the kernel drops it when it dies

Every stored byte is checked before it is counted. Resuming checks each index entry (its own digest, the config hash,
the batch file's size and sha256, each problem's fields). A batch file without a usable entry (its line lost in a
crash, the whole index deleted, or the entry edited) is verified against digests.jsonl and its entry is rebuilt from
its records: nothing is searched again. An edited, truncated, foreign or missing batch is set aside
(`<batch>.damaged`, or `<batch>.unverified` when nothing vouches for it; never deleted) and its problems are searched
again. Each case is one warning naming the files. A crash or SIGKILL loses at most the batch in flight: a
half-written last index line is cut off (a complete last line that only lost its newline is kept). So the cost of
resuming and of writing metrics.json grows with the number of problems (a few KB each), not with the completions
already written.

Readers (analysis, merge) never repair: `summaries()` checks the index (entry digests, config hash, file sizes),
`iter_records()` also each batch's sha256 as it reads it, `verify()` every file without decompressing; anything that
does not check out raises `RunDamaged`, one line naming the file. Index entries written before entries carried their
own digest are read as "unverified" (their batch files are still checked), with one warning per directory.

Every reader goes through `RunDirectory`: `summaries()` (the index: cheap) and `iter_records()` (whole records,
batch by batch), typed as tts/data/records.py defines them, which also holds the one writer and the one reader of a
record's JSON. Run directories of older versions (one `results.jsonl`) are still read; resuming one is refused.
`find_run_dirs` finds the run directories at or below some paths, for every tool that takes a folder of runs.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import gzip
import hashlib
import json
import logging
import os
import platform
import re
import socket
import subprocess
import sys
import zlib
from collections.abc import Iterable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Optional, TextIO, Union

from tts.config.redaction import redact, redact_argv
from tts.config.schema import ConfigError
from tts.data.records import ProblemRecord, ProblemSummary, RecordError
from tts.scoring import AGGREGATIONS, aggregate_metrics, budgets

log = logging.getLogger(__name__)

RESULTS = "results"  # the folder of batch files and their index
INDEX = "index.jsonl"
DIGESTS = "digests.jsonl"  # per batch file: sha256, size, config hash; written before the file, to rebuild the index
LEGACY_RESULTS = "results.jsonl"  # the one-file format of older versions: read, never resumed
METRICS = "metrics.json"
FINGERPRINT = "fingerprint.json"
LOCK = ".lock"
BATCH_FILE = re.compile(r"^batch-(\d{6,})\.jsonl\.gz$")
# gzip level 6 (the default) is 4-8x smaller than the JSON at n=256 and costs well under a second per batch; mtime=0
# makes a batch file depend only on its records, so two runs of one config leave byte-identical files.
GZIP_LEVEL = 6

# Config sections that do not change a run's results: tracking, batching, progress lines, where the files come from.
NOT_FINGERPRINTED = {"logger": None, "batch_size": None, "progress_every": None}
# Keys added after run directories already existed, with the value that means what a directory without them did:
# left out of the fingerprint at that value, so those directories still resume (dotted paths into the config).
ADDED_LATER = {
    "dataset.hub_config": None,
    "dataset.answer_transform": None,
    "model.top_logprobs": 0,  # no log-probabilities: what every run did before confidence
    "prm.allow_foreign": False,
}
# Knobs that change results only through the policy's log-probabilities: with `model.top_logprobs=0` there are none,
# so they are left out too, and a run directory written before confidence resumes with `model.top_logprobs=0`.
CONFIDENCE_ONLY = (
    "model.backend.confidence_signal",
    "scoring.confidence_window",
    "scoring.confidence_tail",
    "scoring.deepconf_eta",
    "scoring.deepconf_measure",
    "scoring.borda_power",
)


def fingerprint_of(config: dict) -> dict:
    """The config minus what does not change results (`logger`, batch size, model/PRM/dataset paths, keys added
    later at the value that means what came before)."""
    kept = {k: v for k, v in redact(config).items() if k not in NOT_FINGERPRINTED}  # a credential never changes results
    for group in ("model", "prm", "dataset"):
        if isinstance(kept.get(group), dict):
            kept[group] = {k: v for k, v in kept[group].items() if k != "path"}
    dropped = [key for key, value in ADDED_LATER.items() if _get(kept, key, _MISSING) == value]
    if _get(kept, "model.top_logprobs", 0) == 0:
        dropped += CONFIDENCE_ONLY
    for key in dropped:
        _drop(kept, key)
    return kept


_MISSING = object()


def _get(tree: dict, dotted: str, default):
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return default
        tree = tree[part]
    return tree


def _drop(tree: dict, dotted: str) -> None:
    """Remove `dotted` from a nested dict (a copy along the path, so the caller's config is left as it was)."""
    head, _, rest = dotted.partition(".")
    if head not in tree:
        return
    if not rest:
        del tree[head]
        return
    if not isinstance(tree[head], dict):
        return
    tree[head] = dict(tree[head])
    _drop(tree[head], rest)


def _batch_number(name: str) -> int:
    """The number of a batch file's name: one that BATCH_FILE matches (`_entry_summaries` refuses any other)."""
    match = BATCH_FILE.match(name)
    assert match is not None, name
    return int(match.group(1))


def _flatten(tree: dict, prefix: str = "") -> dict:
    """Nested config -> {"a.b.c": value}; lists become tuples so that values can be compared and hashed."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return flat


def summary_problem(summary: ProblemSummary, n: Optional[int]) -> Optional[str]:
    """Why `summary` cannot be counted in a run of n samples (scores of another n), or None when it can."""
    scores = summary.scores
    if n is not None:
        # every aggregation it reports (maj always; naive and weighted unless prm=none; the confidence ones) at every n'
        reported = {"maj", *(name.rsplit("@", 1)[0] for name in scores.expected)}
        for k in budgets(n):
            for agg in sorted(
                reported, key=lambda a: (AGGREGATIONS.index(a) if a in AGGREGATIONS else len(AGGREGATIONS), a)
            ):
                for name, part in (
                    ("expected", scores.expected),
                    ("correct", scores.correct),
                    ("ungraded", scores.ungraded),
                ):
                    if f"{agg}@{k}" not in part:
                        return f"{summary.unique_id}: no scores.{name}.{agg}@{k} (a record of another n?)"
            if f"pass@{k}" not in scores.pass_at:
                return f"{summary.unique_id}: no scores.pass.pass@{k}"
    return None


_SAID_UNVERIFIED: set[Path] = set()  # index files already warned about as unverified, in this process


class RunDamaged(ValueError):
    """Results that do not verify (an edited, truncated, foreign or missing batch or index entry). The message is one
    line naming the file; readers raise it rather than count what they cannot trust."""


def entry_digest(entry: dict) -> str:
    """The sha256 of an index entry without its own `entry_sha256`: the scores metrics.json is computed from are
    covered as the batch files are (json's float text round-trips, so a re-read entry gives the same digest)."""
    body = {k: v for k, v in entry.items() if k != "entry_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("ascii")).hexdigest()


def _batch_entry(name: str, data: bytes, config_hash: str, summaries: list[dict]) -> dict:
    """The index entry of a batch file: the one constructor, for appending and for rebuilding a lost entry alike."""
    entry = {
        "file": name,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "config_hash": config_hash,
        "problems": summaries,
    }
    entry["entry_sha256"] = entry_digest(entry)
    return entry


def _digest_line(entry: dict) -> dict:
    return {k: entry.get(k) for k in ("file", "bytes", "sha256", "config_hash")}


def _line(data: dict) -> bytes:
    return (json.dumps(data, ensure_ascii=False) + "\n").encode("utf-8")


def _append_line(path: Path, data: dict) -> None:
    """One JSON line appended in one write and fsynced: a crash leaves it whole or torn at the end."""
    with naming_the_file(path), open(path, "ab") as handle:
        handle.write(_line(data))
        handle.flush()
        os.fsync(handle.fileno())


def _batch_records(data: bytes, name: str) -> list[ProblemRecord]:
    """The records of a batch file's bytes, or RecordError naming the file and what is wrong with it."""
    try:
        lines = gzip.decompress(data).splitlines()
    except (EOFError, OSError, zlib.error) as error:  # truncated (EOFError), not gzip or corrupt (BadGzipFile, zlib)
        raise RecordError(f"{name} is not a whole gzip file ({type(error).__name__}: {error})") from None
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(ProblemRecord.from_json(json.loads(line)))
        except (json.JSONDecodeError, UnicodeDecodeError, RecordError) as why:
            raise RecordError(f"{name} line {number}: {why}") from None
    return records


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


class RunDirectory:
    """One run's directory. The writer calls open(config), append(batch) per batch, write_metrics(); readers call
    summaries() or iter_records() and never change anything."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.results_dir = self.path / RESULTS
        self.index_path = self.results_dir / INDEX
        self.digests_path = self.results_dir / DIGESTS
        self.legacy_path = self.path / LEGACY_RESULTS
        self.metrics_path = self.path / METRICS
        self._config_hash: Optional[str] = None
        self._next_batch = 0

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
        return sorted((f.name for f in self.results_dir.iterdir() if BATCH_FILE.match(f.name)), key=_batch_number)

    # -- opening and resuming ---------------------------------------------------------------------------------

    def open(self, config: dict) -> dict[str, ProblemSummary]:
        """Create or reopen the directory for `config`; return the summaries of the problems already done, by
        unique_id, after checking every batch (see the module docstring).

        Refuses (ConfigError) when the directory holds results of a different configuration or of an older version.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock()
        fingerprint = fingerprint_of(config)
        stored_path = self.path / FINGERPRINT
        if self.legacy_path.exists() and self.legacy_path.stat().st_size > 0:
            self.close()
            raise ConfigError(
                f"config key 'hydra.run.dir': {self.path} holds results in the one-file format of older versions "
                f"({LEGACY_RESULTS}), which this version reads but does not resume; finish it with the version that "
                f"started it, or choose another directory with hydra.run.dir=..."
            )
        has_results = self.has_results()
        if has_results and not stored_path.exists():
            self.close()
            raise ConfigError(
                f"config key 'hydra.run.dir': {self.results_dir} exists but {FINGERPRINT} does not, so it cannot be "
                f"told whether those results come from this configuration. Refusing to mix them. Choose another "
                f"directory with hydra.run.dir=..., or move {self.results_dir} away to start over."
            )
        if stored_path.exists():
            stored = json.loads(stored_path.read_text())
            if stored != fingerprint and has_results and _before_typed_components(stored):
                self.close()
                raise ConfigError(
                    f"config key 'hydra.run.dir': {self.path} was written by a release before typed component configs "
                    f"(its config has a plain model.backend and prm.family); this release reads its results "
                    f"(analysis, merge) but does not resume it: finish it with the release that started it, or choose "
                    f"another directory"
                )
            if stored != fingerprint and has_results:
                ours, theirs = _flatten(fingerprint), _flatten(stored)
                changed = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
                details = ", ".join(f"{k}: {theirs.get(k)!r} -> {ours.get(k)!r}" for k in changed[:8])
                key = changed[0] if changed else "?"
                if key == "dataset.problems_sha256":  # the same settings on other problems: name the file to check
                    key, details = (
                        "dataset.path",
                        (
                            "other problems: the loaded problems (ids, texts, answers) have "
                            "another hash; another file, or the file changed"
                        ),
                    )
                if "model.top_logprobs" in changed and "model.top_logprobs" not in theirs:
                    key = "model.top_logprobs"
                    details += "; it was written before log-probabilities, and resumes with model.top_logprobs=0"
                self.close()
                raise ConfigError(
                    f"config key '{key}': the run directory {self.path} holds results of a "
                    f"different configuration ({details}). Refusing to mix them. Rerun with the original settings to "
                    f"resume, choose another directory (hydra.run.dir=..., or hydra.sweep.dir=... with -m), or delete "
                    f"{self.results_dir} to start over."
                )
        self._sign_lock()
        atomic_write(stored_path, json.dumps(fingerprint, indent=2, sort_keys=True))
        self._config_hash = config_hash(fingerprint)
        return self._check_and_repair(int(config["n"]) if "n" in config else None)

    def _check_and_repair(self, n: Optional[int]) -> dict[str, ProblemSummary]:
        """The index's summaries that pass every check, plus those of batch files whose lost entry is rebuilt from
        them; the rest is set aside (warned, never deleted) so their problems are redone."""
        self.results_dir.mkdir(exist_ok=True)
        raw = self.index_path.read_bytes() if self.index_path.exists() else b""
        lines = raw.splitlines(keepends=True)
        digests = self._digests()
        summaries: dict[str, ProblemSummary] = {}
        kept: list[bytes] = []
        kept_entries: list[dict] = []
        damaged: list[str] = []  # what is dropped: its problems are searched again
        entry_damage: dict[str, str] = {}  # batch file -> why its index entry was refused (the file may still be fine)
        unverified = 0
        for number, line in enumerate(lines, start=1):
            try:
                entry = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                entry = None
            if entry is None and number == len(lines) and not line.endswith(b"\n"):
                continue  # a torn last line: the index write of the batch in flight when the process died
            try:
                batch = self._entry_summaries(entry, n, summaries, digests)
            except RecordError as why:
                if isinstance(entry, dict) and isinstance(entry.get("file"), str) and BATCH_FILE.match(entry["file"]):
                    entry_damage.setdefault(entry["file"], f"index line {number}: {why}")
                else:
                    damaged.append(f"{INDEX} line {number}: {why}")
                continue
            unverified += "entry_sha256" not in entry
            for summary in batch:
                summaries[summary.unique_id] = summary
            kept.append(line if line.endswith(b"\n") else line + b"\n")
            kept_entries.append(entry)
        kept_files = {e["file"] for e in kept_entries}
        # A batch file without a usable entry (lost, torn, edited): its entry is rebuilt from the file when
        # digests.jsonl vouches for it, so nothing is searched again; otherwise the file is set aside, never deleted.
        rebuilt = []
        for name in self._batch_files():
            if name in kept_files:
                continue
            reason = entry_damage.pop(name, None)
            try:
                entry = self._rebuilt_entry(name, digests.get(name), n, summaries)
            except RecordError as why:
                damaged.append(f"{name} ({reason})" if reason else f"{name}: {why}")
                self._set_aside(name, ".damaged" if reason or name in digests else ".unverified")
                continue
            for data in entry["problems"]:
                summaries[data["unique_id"]] = ProblemSummary.from_json(data)
            kept.append(_line(entry))
            kept_entries.append(entry)
            kept_files.add(name)
            rebuilt.append(f"{name} ({reason})" if reason else name)
        damaged.extend(f"{name} ({reason})" for name, reason in entry_damage.items())  # missing, or a repeated line
        if damaged:
            log.warning(
                "%s: %d damaged batch(es) dropped, their problems are redone: %s",
                self.results_dir,
                len(damaged),
                "; ".join(damaged[:5]) + (" ..." if len(damaged) > 5 else ""),
            )
        if rebuilt:
            log.warning(
                "%s: %s had no usable index entry (lost in a crash, deleted or edited); rebuilt from the batch "
                "file%s, which %s vouches for; nothing is searched again",
                self.results_dir,
                ", ".join(rebuilt[:5]) + (" ..." if len(rebuilt) > 5 else ""),
                "s" if len(rebuilt) > 1 else "",
                DIGESTS,
            )
        if unverified:
            self._say_unverified(unverified)
        for file in self.results_dir.iterdir():
            if file.name.startswith(".") and file.name.endswith(".tmp"):
                file.unlink()  # a batch (or digests) file cut short while being written
        # numbering goes on from the last kept batch, so a resumed run names its batches as an uninterrupted one
        self._next_batch = max([0] + [_batch_number(f) + 1 for f in kept_files])
        order = sorted(range(len(kept)), key=lambda i: _batch_number(kept_entries[i]["file"]))  # as written
        kept, kept_entries = [kept[i] for i in order], [kept_entries[i] for i in order]
        repaired = b"".join(kept)
        if repaired != raw:
            if raw.startswith(repaired):
                with open(self.index_path, "r+b") as handle:  # the common case: cut a torn tail in place
                    handle.truncate(len(repaired))
                    os.fsync(handle.fileno())
            else:
                _atomic_write_bytes(self.index_path, repaired)
        # digests.jsonl lists exactly the kept batches (a stale line of a batch that never appeared is dropped)
        vouched = b"".join(_line(_digest_line(e)) for e in kept_entries)
        if (self.digests_path.read_bytes() if self.digests_path.exists() else b"") != vouched:
            _atomic_write_bytes(self.digests_path, vouched)
        return summaries

    def _say_unverified(self, count: int) -> None:
        """Warn once per directory and process that its index predates entry digests (read, resumed, unverified)."""
        if self.index_path.resolve() not in _SAID_UNVERIFIED:
            _SAID_UNVERIFIED.add(self.index_path.resolve())
            log.warning(
                "%s: %d index entries were written before entries carried their own digest: their scores are read "
                "unverified (their batch files are still checked)",
                self.index_path,
                count,
            )

    def _digests(self) -> dict[str, dict]:
        """digests.jsonl by file name (the last line of a name wins; a torn or unreadable line is skipped)."""
        digests: dict[str, dict] = {}
        if self.digests_path.exists():
            for line in self.digests_path.read_bytes().splitlines():
                try:
                    data = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
                if isinstance(data, dict) and isinstance(data.get("file"), str):
                    digests[data["file"]] = data
        return digests

    def _entry_summaries(self, entry, n: Optional[int], seen: dict, digests: dict) -> list[ProblemSummary]:
        """The summaries of an index entry (one batch), or RecordError saying why the batch cannot be counted."""
        if not isinstance(entry, dict) or not isinstance(entry.get("problems"), list) or not entry["problems"]:
            raise RecordError("not a batch entry")
        if "entry_sha256" in entry and entry_digest(entry) != entry["entry_sha256"]:
            raise RecordError("its index entry was edited after it was written (its entry_sha256 does not match)")
        if entry.get("config_hash") != self._config_hash:
            raise RecordError(
                f"written by another configuration (config hash {entry.get('config_hash')!r}, this run "
                f"{self._config_hash!r})"
            )
        file = entry.get("file")
        if not isinstance(file, str) or not BATCH_FILE.match(file):
            raise RecordError(f"bad file name {file!r}")
        path = self.results_dir / file
        if not path.exists():
            raise RecordError(f"{file} is missing")
        if path.stat().st_size != entry.get("bytes") or _sha256(path) != entry.get("sha256"):
            raise RecordError(
                f"{file} does not match its index entry (size or sha256): it was changed after it was written"
            )
        if file in digests and digests[file].get("sha256") != entry.get("sha256"):
            raise RecordError(f"{file}: its index entry and {DIGESTS} name different contents")
        return self._checked(map(ProblemSummary.from_json, entry["problems"]), n, seen)

    @staticmethod
    def _checked(summaries: Iterable[ProblemSummary], n: Optional[int], seen: dict) -> list[ProblemSummary]:
        """The summaries of one batch if each can be counted in a run of n and none is already recorded."""
        batch: list[ProblemSummary] = []
        in_batch: set[str] = set()
        for summary in summaries:
            why = summary_problem(summary, n)
            if why:
                raise RecordError(why)
            if summary.unique_id in seen or summary.unique_id in in_batch:
                raise RecordError(f"{summary.unique_id} is already recorded by an earlier batch")
            in_batch.add(summary.unique_id)
            batch.append(summary)
        return batch

    def _rebuilt_entry(self, name: str, digest: Optional[dict], n: Optional[int], seen: dict) -> dict:
        """The index entry of a batch file that lost its own, from its records, once digests.jsonl vouches for the
        file; RecordError when it does not (no digest, another configuration, other bytes) or a record is unusable."""
        if digest is None:
            raise RecordError(f"no index entry and no line in {DIGESTS}: nothing vouches for it")
        if digest.get("config_hash") != self._config_hash:
            raise RecordError(f"written by another configuration (config hash {digest.get('config_hash')!r})")
        data = (self.results_dir / name).read_bytes()
        if len(data) != digest.get("bytes") or hashlib.sha256(data).hexdigest() != digest.get("sha256"):
            raise RecordError(f"{name} does not match its line in {DIGESTS} (size or sha256)")
        records = _batch_records(data, name)
        summaries = [r.summary() for r in records]
        self._checked(summaries, n, seen)
        return _batch_entry(name, data, digest["config_hash"], [s.to_json() for s in summaries])

    def _set_aside(self, name: str, suffix: str) -> None:
        """Keep a batch file that cannot be counted for inspection, out of the way of readers and of new batch
        numbers (it is never deleted: it may be the only copy of hours of generation)."""
        path = self.results_dir / name
        if path.exists():
            os.replace(path, path.with_name(name + suffix))

    # -- reading (never changes anything) -------------------------------------------------------------------------

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
                records = _batch_records(data, entry["file"])
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
            try:
                entry = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                entry = None
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
        if unverified:
            self._say_unverified(unverified)
        return entries

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

    # -- writing ------------------------------------------------------------------------------------------------

    def append(self, records: Iterable[ProblemRecord]) -> None:
        """Write one batch durably: its line in digests.jsonl, the compressed batch file (atomically), then its index
        line (one write, fsync each). The digest goes first, so every batch file on disk is vouched for and a lost
        index line can be rebuilt from the file.

        A record whose summary would not be read back (a field of the wrong type) is a bug in the caller: refused here
        rather than written and dropped on resume.
        """
        records = list(records)
        if not records:
            return
        if self._config_hash is None:
            raise RuntimeError("RunDirectory.append before open(config)")
        summaries = []
        for record in records:
            if not isinstance(record, ProblemRecord):
                raise TypeError(f"RunDirectory.append takes ProblemRecords (tts.data.records), not {type(record)}")
            summaries.append(record.summary().to_json())
            try:
                ProblemSummary.from_json(summaries[-1])
            except RecordError as why:
                raise ValueError(f"refusing to write an incomplete record ({why})") from None
        name = f"batch-{self._next_batch:06d}.jsonl.gz"
        payload = "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in records).encode("utf-8")
        data = gzip.compress(payload, compresslevel=GZIP_LEVEL, mtime=0)
        entry = _batch_entry(name, data, self._config_hash, summaries)
        self.results_dir.mkdir(parents=True, exist_ok=True)
        _append_line(self.digests_path, _digest_line(entry))
        _atomic_write_bytes(self.results_dir / name, data)
        _append_line(self.index_path, entry)
        self._next_batch += 1

    def write_metrics(self, metrics: dict) -> None:
        atomic_write(self.metrics_path, json.dumps(metrics, indent=2, sort_keys=True))

    def write_config(self, config_yaml: str, run_info: dict) -> None:
        atomic_write(self.path / "config.yaml", config_yaml)
        atomic_write(self.path / "run_info.json", json.dumps(run_info, indent=2, sort_keys=True))

    # -- one writer at a time -----------------------------------------------------------------------------------

    def _lock(self) -> None:
        """Take the directory's lock, or refuse: two jobs appending to one results file would duplicate problems.

        The lock is an flock on `.lock`, so the kernel releases it when the holder dies (SIGKILL, pre-emption): a
        resumed job never waits for a stale lock. It is held until `close()`.
        """
        if getattr(self, "_lock_handle", None) is not None:
            return
        handle = open(self.path / LOCK, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP):  # a file system without locks
                log.warning("cannot lock %s (%s); make sure only one job writes this run directory", self.path, error)
                handle.close()
                return
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ConfigError(
                f"config key 'hydra.run.dir': {self.path} is being written by {holder}. Two jobs writing one run "
                f"directory would record problems twice. Wait for it to finish (or stop it), then rerun the same "
                f"command to resume; or choose another directory with hydra.run.dir=..."
            ) from None
        self._lock_handle: Optional[TextIO] = handle

    def _sign_lock(self) -> None:
        """Name this process in `.lock`, once the directory has accepted the config: a refused job changes nothing."""
        handle = getattr(self, "_lock_handle", None)
        if handle is not None:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            handle.flush()

    def close(self) -> None:
        """Release the directory's lock (also released by the kernel if the process dies)."""
        handle = getattr(self, "_lock_handle", None)
        if handle is not None:
            self._lock_handle = None
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            handle.close()

    def __enter__(self) -> RunDirectory:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def find_run_dirs(paths: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]) -> list[Path]:
    """The run directories at or below `paths`, each once: a path that is a run directory (results in either format)
    is taken as it is, a folder is searched recursively (its run directories sorted), skipping W&B's copies of the
    results files (under wandb/) and interrupted merges (`.<out>.merging-*`). The one finder of run directories: merge,
    the grading audit and analysis all call it. A path that does not exist raises FileNotFoundError."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[Path] = []
    for path in map(Path, paths):
        if RunDirectory(path).has_results():
            found.append(path)
        elif path.is_dir():
            below = [p.parent for p in path.rglob(RESULTS) if p.is_dir() and RunDirectory(p.parent).has_results()]
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: Path, text: str) -> None:
    _atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def naming_the_file(path: Path):
    """An OSError from writing `path` names it: write() and fsync() on a full disk raise ENOSPC without a file name,
    and the one-line error a user sees (tts.launch.sweep.guarded_run) should say which file could not be written."""
    try:
        yield
    except OSError as error:
        if error.filename is None and error.errno is not None:
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a whole file so that a reader (or a crash) sees the old or the new version, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with naming_the_file(path), open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    try:  # make the rename itself durable
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError:
        pass


def run_info(seed: int, config_hash: str) -> dict:
    """What reproduces this run: code version, packages, seeds, command (never the environment: it holds secrets)."""
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
                cwd=Path(__file__).resolve().parent,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    versions = {}
    for package in (
        "tts",
        "hydra-core",
        "omegaconf",
        "wandb",
        "math-verify",
        "latex2sympy2_extended",
        "sympy",
        "numpy",
        "transformers",
        "torch",
        "vllm",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return {
        "git_commit": commit,
        "python": platform.python_version(),
        "packages": versions,
        "seed": seed,
        "argv": redact_argv(sys.argv),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "config_hash": config_hash,
    }


def run_metrics(records: Sequence[ProblemRecord | ProblemSummary], n: int) -> dict:
    """metrics.json of a run (or of merged shards): accuracies and tokens, plus the backend calls spent."""
    metrics = aggregate_metrics(records, n)
    metrics["compute/backend_calls"] = round(sum(r.compute.get("backend_calls_share", 0.0) for r in records), 3)
    return metrics


def _before_typed_components(fingerprint: dict) -> bool:
    """A fingerprint of the layout before each component owned a typed config: `model.backend` was the backend's
    name and `prm.family` chose the PRM's class (now each is a component with its `_target_`)."""
    model, prm = fingerprint.get("model"), fingerprint.get("prm")
    return (isinstance(model, dict) and isinstance(model.get("backend"), str)) or (
        isinstance(prm, dict) and "family" in prm
    )


def config_hash(fingerprint: dict) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]
