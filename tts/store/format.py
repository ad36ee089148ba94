"""The run directory's files and the bytes in them: names, the batch file and index line formats, the seal that
vouches for a batch, writes that a crash leaves whole or not at all, and the lock that keeps one writer at a time.

    <run dir>/
      .hydra/                 Hydra's composed config and overrides
      config.yaml             the resolved config (what actually ran)
      fingerprint.json        the parts of the config that change results; a rerun must match it to resume
      run_info.json           git commit and whether the checkout was dirty, the packages and weights the run's
                              components use, seeds, command line, start time (tts/store/provenance.py)
      results/
        batch-000000.jsonl.gz one finished batch: its problems' records as gzip-compressed JSON lines (`zcat | jq`),
        batch-000001.jsonl.gz ... each written to a temporary name, fsynced and renamed into place (never half there)
        digests.jsonl         the seal of every batch, appended and fsynced *before* the batch file appears
        index.jsonl           one line per batch: its seal, each problem's scores (what metrics.json needs) and
                              `entry_sha256`, the digest of the line itself; appended and fsynced after the batch file
      metrics.json            run-level accuracies and compute, rewritten at the end of every run from the index
      .lock                   held (flock) by the process writing the directory; the kernel drops it when it dies

One integrity mechanism, the seal: a batch's file name, size, sha256 and the hash of the config that wrote it. A batch
counts only when a seal matches its file and names the run's config hash, and it has exactly one seal: the one inside
its index entry when that entry is intact (its `entry_sha256` matches, or it predates entry digests), else its line
in digests.jsonl. digests.jsonl only copies the seals of the index entries (the writer rewrites it from the kept
entries at every open); it is kept so that a batch whose index entry was lost (a crash between the file and its index
line, a deleted or edited index) is sealed again and its entry rebuilt from its records. So the two files never
disagree about a batch: a wrong character in digests.jsonl cannot discard a batch that its intact entry vouches for,
and a batch file edited together with its digests line is still refused by its entry.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gzip
import hashlib
import json
import os
import re
import socket
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Optional, TextIO

from tts.data.records import ProblemRecord, RecordError

RESULTS = "results"  # the folder of batch files and their index
INDEX = "index.jsonl"
DIGESTS = "digests.jsonl"  # the seal of each batch file, written before the file: to rebuild a lost index entry
LEGACY_RESULTS = "results.jsonl"  # the one-file format of older versions: read, never resumed
METRICS = "metrics.json"
FINGERPRINT = "fingerprint.json"
LOCK = ".lock"
BATCH_FILE = re.compile(r"^batch-(\d{6,})\.jsonl\.gz$")
# gzip level 6 (the default) is 4-8x smaller than the JSON at n=256 and costs well under a second per batch; mtime=0
# makes a batch file depend only on its records, so two runs of one config leave byte-identical files.
GZIP_LEVEL = 6


def batch_number(name: str) -> int:
    """The number of a batch file's name: one that BATCH_FILE matches (the index checks refuse any other)."""
    match = BATCH_FILE.match(name)
    assert match is not None, name
    return int(match.group(1))


def entry_digest(entry: dict) -> str:
    """The sha256 of an index entry without its own `entry_sha256`: the scores metrics.json is computed from are
    covered as the batch files are (json's float text round-trips, so a re-read entry gives the same digest)."""
    body = {k: v for k, v in entry.items() if k != "entry_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("ascii")).hexdigest()


def batch_entry(name: str, data: bytes, config_hash: str, summaries: list[dict]) -> dict:
    """The index entry of a batch file (its seal, its problems' summaries, its own digest): the one constructor, for
    appending and for rebuilding a lost entry alike."""
    entry = {
        "file": name,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "config_hash": config_hash,
        "problems": summaries,
    }
    entry["entry_sha256"] = entry_digest(entry)
    return entry


def seal(entry: dict) -> dict:
    """The seal inside an index entry: its line in digests.jsonl."""
    return {k: entry.get(k) for k in ("file", "bytes", "sha256", "config_hash")}


def json_line(data: dict) -> bytes:
    return (json.dumps(data, ensure_ascii=False) + "\n").encode("utf-8")


def encode_batch(records: Sequence[ProblemRecord]) -> bytes:
    """A batch file's bytes: its records' JSON lines, gzip-compressed with no timestamp."""
    payload = "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    return gzip.compress(payload, compresslevel=GZIP_LEVEL, mtime=0)


def decode_batch(data: bytes, name: str) -> list[ProblemRecord]:
    """The records of a batch file's bytes, or RecordError naming the file and what is wrong with it."""
    try:
        lines = gzip.decompress(data).splitlines()
    except (EOFError, OSError, zlib.error) as error:  # truncated (EOFError), not gzip or corrupt (BadGzipFile, zlib)
        raise RecordError(f"{name} is not a whole gzip file ({type(error).__name__}: {error})") from None
    records = []
    for number, text in enumerate(lines, start=1):
        try:
            records.append(ProblemRecord.from_json(json.loads(text)))
        except (json.JSONDecodeError, UnicodeDecodeError, RecordError) as why:
            raise RecordError(f"{name} line {number}: {why}") from None
    return records


# -- writes that a crash leaves whole ---------------------------------------------------------------------------------


def append_line(path: Path, data: dict) -> None:
    """One JSON line appended in one write and fsynced: a crash leaves it whole or torn at the end."""
    with naming_the_file(path), open(path, "ab") as handle:
        handle.write(json_line(data))
        handle.flush()
        os.fsync(handle.fileno())


def parse_line(line: bytes) -> Any:
    """The value of one JSON line, or None when it is not JSON (torn by a crash, or edited into something else)."""
    try:
        return json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


@contextlib.contextmanager
def naming_the_file(path: Path) -> Iterator[None]:
    """An OSError from writing `path` names it: write() and fsync() on a full disk raise ENOSPC without a file name,
    and the one-line error a user sees (tts.cli.sweep.guarded_run) should say which file could not be written."""
    try:
        yield
    except OSError as error:
        if error.filename is None and error.errno is not None:
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write a whole file (text as UTF-8) so that a reader (or a crash) sees the old or the new version, never half
    of one."""
    data = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with naming_the_file(path), open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # make the rename itself durable
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


# -- one writer at a time ---------------------------------------------------------------------------------------------


def try_lock(path: Path) -> tuple[Optional[TextIO], str]:
    """An exclusive flock on `path`, taken without waiting: (its open handle, "") while this process holds it, or
    (None, who holds it, as `sign` wrote it). An flock is dropped by the kernel when its holder dies (SIGKILL,
    pre-emption), so nobody ever waits for a stale lock. Other OSErrors (a file system without locks) propagate."""
    handle = open(path, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        if error.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        return None, holder
    return handle, ""


def sign(handle: TextIO) -> None:
    """Name this process in a lock file it holds, for the message of whoever is refused next."""
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
