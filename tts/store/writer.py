"""Writing a run directory: open (refusing another configuration), resume (check and repair what is there), append
one batch at a time, and one writer at a time (the lock).

Every stored byte is checked before it is counted (tts/store/format.py: the seal). Opening checks each index entry
(its own digest, the config hash, the batch file's size and sha256, each problem's fields). A batch file without an
intact entry (its line lost in a crash, the whole index deleted, or the entry edited) is checked against its seal in
digests.jsonl and its entry is rebuilt from its records: nothing is searched again. An edited, truncated, foreign or
missing batch is set aside (`<batch>.damaged`, or `<batch>.unverified` when nothing vouches for it; never deleted) and
its problems are searched again. Each case is one warning naming the files. A crash or SIGKILL loses at most the
batch in flight: a half-written last index line is cut off (a complete last line that only lost its newline is kept).
So the cost of resuming and of writing metrics.json grows with the number of problems (a few KB each), not with the
completions already written. Run directories of older versions (one `results.jsonl`) are read, never resumed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
from collections.abc import Iterable
from typing import Optional, TextIO

from tts.config.schema import ConfigError
from tts.data.records import ProblemRecord, ProblemSummary, RecordError
from tts.scoring import budgets
from tts.store.format import (
    BATCH_FILE,
    DIGESTS,
    FINGERPRINT,
    INDEX,
    LEGACY_RESULTS,
    LOCK,
    append_line,
    atomic_write,
    batch_entry,
    batch_number,
    decode_batch,
    encode_batch,
    entry_digest,
    json_line,
    parse_line,
    seal,
    sign,
    try_lock,
)
from tts.store.provenance import _flatten, before_typed_components, config_hash, fingerprint_of
from tts.store.readers import RunReader

log = logging.getLogger(__name__)


class _UntrustedEntry(RecordError):
    """An index line that cannot vouch for its batch (not a batch entry, or edited after it was written): the batch
    file's seal is then its line in digests.jsonl."""


def summary_problem(summary: ProblemSummary, n: Optional[int]) -> Optional[str]:
    """Why `summary` cannot be counted in a run of n samples (scores of another n), or None when it can."""
    scores = summary.scores
    if n is not None:
        # every aggregation it reports (maj always; naive and weighted unless prm=none; the confidence ones) at every n'
        reported = {"maj", *(name.rsplit("@", 1)[0] for name in scores.expected)}
        for k in budgets(n):
            for agg in sorted(reported):
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


class RunDirectory(RunReader):
    """One run's directory. The writer calls open(config), append(batch) per batch, write_metrics(); readers call
    summaries() or iter_records() (RunReader) and never change anything."""

    _config_hash: Optional[str] = None  # set by open(): the hash every batch it appends carries
    _next_batch = 0
    _lock_handle: Optional[TextIO] = None

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
            if stored != fingerprint and has_results and before_typed_components(stored):
                self.close()
                raise ConfigError(
                    f"config key 'hydra.run.dir': {self.path} was written by a release before typed component configs "
                    f"(its config has a plain model.backend, prm.family or prm.backend); this release reads its "
                    f"results (analysis, merge) but does not resume it: finish it with the release that started it, or "
                    f"choose another directory"
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
        if self._lock_handle is not None:  # named once the directory has accepted the config
            sign(self._lock_handle)
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
        kept: list[tuple[bytes, dict]] = []  # (index line, entry) of every batch that counts
        damaged: list[str] = []  # what is dropped: its problems are searched again
        # batch file -> why its index entry was refused, and whether the entry was untrusted (then the file may still
        # be fine: its seal in digests.jsonl decides) or intact (then it was the file's one seal, and it does not match)
        entry_damage: dict[str, tuple[str, bool]] = {}
        unverified = 0
        for number, line in enumerate(lines, start=1):
            entry = parse_line(line)
            if entry is None and number == len(lines) and not line.endswith(b"\n"):
                continue  # a torn last line: the index write of the batch in flight when the process died
            try:
                batch = self._entry_summaries(entry, n, summaries)
            except RecordError as why:
                if isinstance(entry, dict) and isinstance(entry.get("file"), str) and BATCH_FILE.match(entry["file"]):
                    untrusted = isinstance(why, _UntrustedEntry)
                    entry_damage.setdefault(entry["file"], (f"index line {number}: {why}", untrusted))
                else:
                    damaged.append(f"{INDEX} line {number}: {why}")
                continue
            unverified += "entry_sha256" not in entry
            for summary in batch:
                summaries[summary.unique_id] = summary
            kept.append((line if line.endswith(b"\n") else line + b"\n", entry))
        kept_files = {e["file"] for _, e in kept}
        # A batch file without an intact entry (lost, torn, edited): its entry is rebuilt from the file when its seal
        # in digests.jsonl matches, so nothing is searched again; otherwise the file is set aside, never deleted.
        rebuilt = []
        for name in self._batch_files():
            if name in kept_files:
                continue
            reason, untrusted = entry_damage.pop(name, (None, True))
            try:
                if not untrusted:  # its intact entry sealed it, and it does not match: digests.jsonl is not asked
                    raise RecordError(reason)
                entry = self._rebuilt_entry(name, digests.get(name), n, summaries)
            except RecordError as why:
                damaged.append(f"{name} ({reason})" if reason else f"{name}: {why}")
                self._set_aside(name, ".damaged" if reason or name in digests else ".unverified")
                continue
            for data in entry["problems"]:
                summaries[data["unique_id"]] = ProblemSummary.from_json(data)
            kept.append((json_line(entry), entry))
            kept_files.add(name)
            rebuilt.append(f"{name} ({reason})" if reason else name)
        damaged.extend(f"{name} ({reason})" for name, (reason, _) in entry_damage.items())  # missing, or repeated
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
        self._say_unverified(unverified)
        for file in self.results_dir.iterdir():
            if file.name.startswith(".") and file.name.endswith(".tmp"):
                file.unlink()  # a batch (or digests) file cut short while being written
        # numbering goes on from the last kept batch, so a resumed run names its batches as an uninterrupted one
        self._next_batch = max([0] + [batch_number(f) + 1 for f in kept_files])
        kept.sort(key=lambda line_entry: batch_number(line_entry[1]["file"]))  # as written
        repaired = b"".join(line for line, _ in kept)
        if repaired != raw:
            if raw.startswith(repaired):
                with open(self.index_path, "r+b") as handle:  # the common case: cut a torn tail in place
                    handle.truncate(len(repaired))
                    os.fsync(handle.fileno())
            else:
                atomic_write(self.index_path, repaired)
        # digests.jsonl holds exactly the seals of the kept entries (a stale or wrong line is replaced)
        vouched = b"".join(json_line(seal(e)) for _, e in kept)
        if (self.digests_path.read_bytes() if self.digests_path.exists() else b"") != vouched:
            atomic_write(self.digests_path, vouched)
        return summaries

    def _digests(self) -> dict[str, dict]:
        """digests.jsonl by file name (the last line of a name wins; a torn or unreadable line is skipped)."""
        lines = self.digests_path.read_bytes().splitlines() if self.digests_path.exists() else []
        return {d["file"]: d for d in map(parse_line, lines) if isinstance(d, dict) and isinstance(d.get("file"), str)}

    def _entry_summaries(self, entry, n: Optional[int], seen: dict) -> list[ProblemSummary]:
        """The summaries of an index entry (one batch), or RecordError saying why the batch cannot be counted
        (_UntrustedEntry when the entry itself cannot vouch for its batch)."""
        if not isinstance(entry, dict) or not isinstance(entry.get("problems"), list) or not entry["problems"]:
            raise _UntrustedEntry("not a batch entry")
        if "entry_sha256" in entry and entry_digest(entry) != entry["entry_sha256"]:
            raise _UntrustedEntry("its index entry was edited after it was written (its entry_sha256 does not match)")
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
        data = path.read_bytes()
        if len(data) != entry.get("bytes") or hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            raise RecordError(
                f"{file} does not match its index entry (size or sha256): it was changed after it was written"
            )
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
        """The index entry of a batch file that lost its own, from its records, once its seal in digests.jsonl
        matches; RecordError when it does not (no seal, another configuration, other bytes) or a record is unusable."""
        if digest is None:
            raise RecordError(f"no index entry and no line in {DIGESTS}: nothing vouches for it")
        if digest.get("config_hash") != self._config_hash:
            raise RecordError(f"written by another configuration (config hash {digest.get('config_hash')!r})")
        data = (self.results_dir / name).read_bytes()
        entry = batch_entry(name, data, digest["config_hash"], [])
        if seal(entry) != seal(digest):
            raise RecordError(f"{name} does not match its line in {DIGESTS} (size or sha256)")
        summaries = [r.summary() for r in decode_batch(data, name)]
        self._checked(summaries, n, seen)
        return batch_entry(name, data, digest["config_hash"], [s.to_json() for s in summaries])

    def _set_aside(self, name: str, suffix: str) -> None:
        """Keep a batch file that cannot be counted for inspection, out of the way of readers and of new batch
        numbers (it is never deleted: it may be the only copy of hours of generation)."""
        path = self.results_dir / name
        if path.exists():
            os.replace(path, path.with_name(name + suffix))

    # -- writing ------------------------------------------------------------------------------------------------

    def append(self, records: Iterable[ProblemRecord]) -> None:
        """Write one batch durably: its seal in digests.jsonl, the compressed batch file (atomically), then its index
        line (one write, fsync each). The seal goes first, so every batch file on disk is vouched for and a lost
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
        data = encode_batch(records)
        entry = batch_entry(name, data, self._config_hash, summaries)
        self.results_dir.mkdir(parents=True, exist_ok=True)
        append_line(self.digests_path, seal(entry))
        atomic_write(self.results_dir / name, data)
        append_line(self.index_path, entry)
        self._next_batch += 1

    def write_metrics(self, metrics: dict) -> None:
        atomic_write(self.metrics_path, json.dumps(metrics, indent=2, sort_keys=True))

    def write_config(self, config_yaml: str, run_info: dict) -> None:
        atomic_write(self.path / "config.yaml", config_yaml)
        atomic_write(self.path / "run_info.json", json.dumps(run_info, indent=2, sort_keys=True))

    # -- one writer at a time -----------------------------------------------------------------------------------

    def _lock(self) -> None:
        """Take the directory's lock (`try_lock`), held until `close()`, or refuse: two jobs appending to one results
        file would duplicate problems."""
        if self._lock_handle is not None:
            return
        try:
            self._lock_handle, holder = try_lock(self.path / LOCK)
        except OSError as error:
            if error.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP):  # a file system without locks
                raise
            log.warning("cannot lock %s (%s); make sure only one job writes this run directory", self.path, error)
            return
        if self._lock_handle is None:
            raise ConfigError(
                f"config key 'hydra.run.dir': {self.path} is being written by {holder}. Two jobs writing one run "
                f"directory would record problems twice. Wait for it to finish (or stop it), then rerun the same "
                f"command to resume; or choose another directory with hydra.run.dir=..."
            )

    def close(self) -> None:
        """Release the directory's lock (also released by the kernel if the process dies)."""
        handle = self._lock_handle
        if handle is not None:
            self._lock_handle = None
            handle.close()  # closing drops the flock

    def __enter__(self) -> RunDirectory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
