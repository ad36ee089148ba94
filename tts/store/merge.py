"""Join the shard run directories of one experiment into a single run directory, keyed by unique_id.

    # shards of one run (dataset.shard=0,1,2,3 dataset.num_shards=4, or dataset.start/end ranges)
    python -m tts.store.merge --out outputs/merged/bon_n16 multirun/.../n16_seed0/dataset.num_shards=4,dataset.shard=*
    # every sharded run of a sweep at once: one merged directory per experiment, at its unsharded path under --out
    python -m tts.store.merge --sweep multirun --out merged

A merged directory looks like any run directory (results/, metrics.json recomputed from the records, config.yaml,
fingerprint.json, run_info.json), so analysis reads it, and rerunning the unsharded command on it finds nothing to do.
The merge is atomic: it is written into a hidden temporary directory beside --out and renamed into place, so a merge
killed at any moment leaves either no --out or a complete one (a rerun removes the temporary leftovers).
The merge refuses, with one line naming the directory and file: a shard whose results do not verify (an index entry
or batch file edited, truncated, overwritten or from another run: tts/store/format.py), a config.yaml changed after
its run, shards whose configs differ in anything but the shard range, a problem recorded in two shards, ranges that do
not tile (a shard given twice, overlapping ranges; holes unless --allow-missing), a shard still being written, a second
merge into the same --out while one runs (a lock beside --out), and (unless --allow-missing) problems of the dataset
range that no shard has recorded; it then says which shard to rerun.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from tts.data.records import ProblemRecord, ProblemSummary
from tts.store.format import FINGERPRINT, INDEX, LEGACY_RESULTS, LOCK, RESULTS, sign, try_lock
from tts.store.provenance import _flatten, config_hash, fingerprint_of, run_info
from tts.store.readers import RunDamaged, RunReader, find_run_dirs, is_locked, run_metrics
from tts.store.writer import RunDirectory

log = logging.getLogger(__name__)

# The dataset keys that say which part of the dataset a shard covers; shards of one run differ only in these.
RANGE_KEYS = ("start", "end", "shard", "num_shards")


class MergeError(ValueError):
    """Shards that cannot be merged; the message says which directories and what to do."""


def identity_of(config: dict) -> dict:
    """What must be equal for two run directories to be shards of one run: the fingerprint without the shard range."""
    fingerprint = fingerprint_of(config)
    fingerprint["dataset"] = {k: v for k, v in fingerprint.get("dataset", {}).items() if k not in RANGE_KEYS}
    return fingerprint


@dataclass
class Shard:
    path: Path
    config: dict
    summaries: list[ProblemSummary]  # per-problem scores from the index, in written order (the records stay on disk)

    @property
    def dataset(self) -> dict:
        return self.config["dataset"]

    @property
    def unique_ids(self) -> list[str]:
        return [s.unique_id for s in self.summaries]


@dataclass
class MergeReport:
    out: Path
    problems: int
    shards: list[Path]
    missing: dict[str, list[str]] = field(default_factory=dict)  # where it should have been -> unique_ids
    metrics: dict = field(default_factory=dict)
    checked_dataset: bool = True


def read_shard(path: Path) -> Shard:
    """A run directory's config and per-problem summaries, read only (the directory is not touched)."""
    path = Path(path)
    directory = RunReader(path)
    if not directory.has_results() or not (path / "config.yaml").exists():
        raise MergeError(
            f"{path} is not a run directory: it needs {RESULTS}/{INDEX} (or {LEGACY_RESULTS}) and config.yaml"
        )
    if is_locked(path):
        raise MergeError(
            f"{path} is still being written by {(path / LOCK).read_text().strip() or 'a job'}; merge after it finishes"
        )
    config = yaml.safe_load((path / "config.yaml").read_text())
    stored = directory.expected_config_hash()
    if stored is not None and config_hash(fingerprint_of(config)) != stored:
        raise MergeError(
            f"{path / 'config.yaml'} does not match the config its results were written under (config hash "
            f"{config_hash(fingerprint_of(config))} vs {stored} in {FINGERPRINT}): it was changed after the run; "
            f"restore it or rerun that shard"
        )
    try:
        directory.verify()  # every batch file against its index entry, every entry against its own digest
        summaries = list(directory.summaries().values())
    except RunDamaged as damage:
        raise MergeError(f"shard {path} is damaged: {damage}") from None
    return Shard(path=path, config=config, summaries=summaries)


def _expected_problems(dataset: dict) -> list[str]:
    """unique_ids, in dataset order, of the problems a run with this dataset config covers."""
    from omegaconf import OmegaConf

    from tts.data import load_problems

    return [p.unique_id for p in load_problems(OmegaConf.create(dataset))]


def _union_range(shards: Sequence[Shard]) -> dict:
    """The dataset config of the whole run the shards are parts of: the union of their ranges, unsplit."""
    dataset = copy.deepcopy(shards[0].dataset)
    ends = [s.dataset.get("end") for s in shards]
    dataset.update(
        start=min(s.dataset.get("start", 0) for s in shards),
        end=None if any(e is None for e in ends) else max(e for e in ends if e is not None),
        shard=0,
        num_shards=1,
    )
    return dataset


def merge(
    shard_dirs: Sequence[Path], out: Path, allow_missing: bool = False, check_dataset: bool = True
) -> MergeReport:
    """Merge `shard_dirs` into `out`; see the module docstring. Raises MergeError without writing anything."""
    if not shard_dirs:
        raise MergeError("no shard directories given")
    shards = [read_shard(Path(d)) for d in shard_dirs]
    out = Path(out)
    if any(out.resolve() == s.path.resolve() for s in shards):
        raise MergeError(f"--out {out} is one of the shards; choose a new directory")

    # 1. one experiment: configs equal but for the shard range
    reference = _flatten(identity_of(shards[0].config))
    for shard in shards[1:]:
        other = _flatten(identity_of(shard.config))
        changed = sorted(k for k in set(reference) | set(other) if reference.get(k) != other.get(k))
        if changed:
            details = ", ".join(f"{k}: {reference.get(k)!r} vs {other.get(k)!r}" for k in changed[:8])
            raise MergeError(
                f"{shards[0].path} and {shard.path} are not shards of one run: their configs differ in "
                f"more than the shard range ({details})"
            )

    # 2. every problem once
    owner: dict[str, Path] = {}
    for shard in shards:
        for uid in shard.unique_ids:
            if uid in owner:
                raise MergeError(
                    f"problem {uid!r} is recorded in two shards, {owner[uid]} and {shard.path}: their "
                    f"ranges overlap (dataset.start/end/shard). Merge shards that split the dataset"
                )
            owner[uid] = shard.path
    by_id = {r.unique_id: r for s in shards for r in s.summaries}
    gaps = _tiling_gaps(shards)

    # 3. nothing missing: compare with the problems each shard (and the whole range) should hold
    merged_dataset = _union_range(shards)
    order: Optional[list[str]] = None
    missing: dict[str, list[str]] = {}
    if check_dataset:
        try:
            order = _expected_problems(merged_dataset)
            for shard in shards:
                lost = [u for u in _expected_problems(shard.dataset) if u not in by_id]
                if lost:
                    missing[str(shard.path)] = lost
            in_no_shard = [u for u in order if u not in by_id and not any(u in m for m in missing.values())]
            if in_no_shard:
                missing["(no shard given covers them)"] = in_no_shard
            stray = [u for u in by_id if u not in set(order)]
            if stray:
                raise MergeError(
                    f"{len(stray)} recorded problems (e.g. {stray[0]!r}) are not in the dataset range "
                    f"{merged_dataset.get('start')}:{merged_dataset.get('end')}"
                )
        except MergeError:
            raise
        except Exception as error:  # noqa: BLE001 - the dataset may be on another machine; the merge still works
            log.warning(
                "could not load the dataset to check for missing problems (%s: %s); merging what is there",
                type(error).__name__,
                error,
            )
            order, missing, check_dataset = None, {}, False
    if not check_dataset and gaps and not allow_missing:
        raise MergeError(
            f"the shards do not cover their dataset range: {'; '.join(gaps)}. Add the missing shard, or pass "
            f"--allow-missing"
        )
    if missing and not allow_missing:
        lines = [f"  {where}: {len(ids)} problem(s), e.g. {ids[:3]}" for where, ids in missing.items()]
        raise MergeError(
            "problems missing from the shards:\n" + "\n".join(lines) + "\nRerun the command of each "
            "shard listed (it resumes where it stopped), add the missing shard, or pass --allow-missing"
        )

    # 4. write the merged run directory into a temporary directory beside --out, then rename it into place, holding
    # --out's merge lock throughout: a second merge into it is refused rather than removing this one's staging
    out.parent.mkdir(parents=True, exist_ok=True)
    with merge_lock(out):
        return _write(shards, owner, by_id, order, missing, merged_dataset, out, check_dataset)


def _write(shards, owner, by_id, order, missing, merged_dataset, out: Path, check_dataset: bool) -> MergeReport:
    """Step 4 of merge(), under --out's lock: copy the checked shards' records, batch by batch, into a staging
    directory and rename it to --out."""
    if (out / RESULTS).exists() or (out.exists() and any(out.iterdir())):
        raise MergeError(f"--out {out} already exists and is not empty; choose a new directory or delete it")
    shards_in_order = sorted(shards, key=lambda s: (s.dataset.get("start", 0), s.dataset.get("shard", 0)))
    if order is None:
        order = [u for s in shards_in_order for u in s.unique_ids]
    config = copy.deepcopy(shards[0].config)
    config["dataset"] = merged_dataset
    n = int(config["n"])
    metrics = run_metrics([by_id[u] for u in order if u in by_id], n)
    for leftover in out.parent.glob(f".{out.name}.merging-*"):  # from a merge killed before its rename
        log.info("removing %s, left by an interrupted merge", leftover)
        shutil.rmtree(leftover, ignore_errors=True)
    staging = out.parent / f".{out.name}.merging-{os.getpid()}"
    try:
        directory = RunDirectory(staging)
        directory.open(config)
        batch_size = int(config.get("batch_size") or 64)
        written: set[str] = set()
        for shard in shards_in_order:  # one shard batch at a time: memory stays bounded on huge runs
            chunk: list[ProblemRecord] = []
            try:
                for record in RunReader(shard.path).iter_records():  # each batch checked again as it is read
                    if owner.get(record.unique_id) != shard.path:
                        continue
                    chunk.append(record)
                    written.add(record.unique_id)
                    if len(chunk) == batch_size:
                        directory.append(chunk)
                        chunk = []
            except RunDamaged as damage:  # changed since it was verified above
                raise MergeError(f"shard {shard.path} is damaged: {damage}") from None
            directory.append(chunk)
        if written != set(by_id):  # the records copied are exactly those metrics.json counts
            raise MergeError(
                f"the shards' batch files hold {len(written)} of the {len(by_id)} problems their indexes list; "
                f"rerun the shards"
            )
        directory.write_metrics(metrics)
        info = run_info(int(config["seed"]), config_hash(fingerprint_of(config)))
        info["merged_from"] = [str(s.path) for s in shards]
        info["missing"] = missing
        directory.write_config(yaml.safe_dump(config, sort_keys=False), info)
        directory.close()
        (staging / LOCK).unlink(missing_ok=True)
        if out.exists():
            out.rmdir()  # empty (checked above); rename cannot replace a directory on every system
        os.rename(staging, out)
    except BaseException:  # anything, Ctrl-C included: remove the half-made merge, then re-raise
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return MergeReport(
        out=out,
        problems=len([u for u in order if u in by_id]),
        shards=[s.path for s in shards],
        missing=missing,
        metrics=metrics,
        checked_dataset=check_dataset,
    )


@contextlib.contextmanager
def merge_lock(out: Path) -> Iterator[None]:
    """Hold `.<out>.merge-lock` beside --out (an flock: the kernel drops it if the merge dies), or refuse at once
    with MergeError: two merges into one directory would remove each other's staging and leave a mix."""
    handle, holder = try_lock(out.parent / f".{out.name}.merge-lock")
    if handle is None:
        raise MergeError(
            f"another merge into {out} is running ({holder}); wait for it to finish, or choose another --out"
        )
    try:
        sign(handle)
        yield
    finally:
        handle.close()  # closing drops the flock


def _tiling_gaps(shards: Sequence[Shard]) -> list[str]:
    """Check from their configs alone that the shards tile their dataset range: shards of one split
    (start, end, num_shards) each once, and ranges that do not overlap. Raises MergeError for a shard given twice or
    overlapping ranges; returns the gaps (a shard of a split not given, a hole between ranges), which the dataset
    check names problem by problem when it can load the dataset."""
    gaps: list[str] = []
    ranges: list[tuple[int, Optional[int], str]] = []
    splits: dict[tuple, dict[int, Path]] = {}
    for shard in shards:
        start, end = shard.dataset.get("start", 0), shard.dataset.get("end")
        count = shard.dataset.get("num_shards", 1)
        if count <= 1:
            ranges.append((start, end, str(shard.path)))
            continue
        given = splits.setdefault((start, end, count), {})
        index = shard.dataset.get("shard", 0)
        if index in given:
            raise MergeError(
                f"shard {index} of dataset.num_shards={count} is given twice: {given[index]} and {shard.path}"
            )
        given[index] = shard.path
    for (start, end, count), given in splits.items():
        absent = [i for i in range(count) if i not in given]
        if absent:
            gaps.append(f"dataset.shard={','.join(map(str, absent))} of dataset.num_shards={count} not given")
        ranges.append((start, end, f"the dataset.num_shards={count} split of [{start}:{end}]"))
    ranges.sort(key=lambda r: r[0])
    for (start, end, where), (next_start, next_end, next_where) in zip(ranges, ranges[1:]):
        if end is None or end > next_start:
            raise MergeError(
                f"the dataset ranges of {where} [{start}:{end}] and {next_where} [{next_start}:{next_end}] overlap "
                f"(dataset.start/end); merge shards that split the dataset"
            )
        if end < next_start:
            gaps.append(f"[{end}:{next_start}] between {where} and {next_where}")
    return gaps


def _unsharded_path(relative: Path) -> Path:
    """A shard's path with the shard-range overrides taken out of Hydra's override_dirname (its last component)."""
    parts = list(relative.parts)
    if parts and "=" in parts[-1]:
        kept = [item for item in parts[-1].split(",") if not any(item.startswith(f"dataset.{k}=") for k in RANGE_KEYS)]
        parts = parts[:-1] + ([",".join(kept)] if kept else [])
    return Path(*parts) if parts else Path("merged")


def merge_sweep(
    sweep: Path, out: Path, allow_missing: bool = False, check_dataset: bool = True, errors: Optional[list[str]] = None
) -> list[MergeReport]:
    """Merge every sharded run under `sweep`: run dirs are grouped by identity (config minus range).

    A group that cannot be merged does not stop the others: its reason is appended to `errors` (raised if None).
    """
    groups: dict[str, list[Path]] = {}
    for path in find_run_dirs(sweep):
        if not (path / "config.yaml").exists():
            continue  # results without the config they ran: nothing to tell which run they are a shard of
        config = yaml.safe_load((path / "config.yaml").read_text())
        groups.setdefault(config_hash(identity_of(config)), []).append(path)
    reports = []
    for paths in groups.values():
        sharded = [p for p in paths if _is_shard(yaml.safe_load((p / "config.yaml").read_text())["dataset"])]
        if not sharded:
            continue  # an unsharded run: nothing to merge
        try:
            reports.append(
                merge(sharded, out / _unsharded_path(sharded[0].relative_to(sweep)), allow_missing, check_dataset)
            )
        except MergeError as error:
            if errors is None:
                raise
            errors.append(str(error))
    return reports


def _is_shard(dataset: dict) -> bool:
    return dataset.get("num_shards", 1) > 1 or dataset.get("start", 0) > 0 or dataset.get("end") is not None


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tts.store.merge",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("shards", nargs="*", type=Path, help="shard run directories of one run")
    parser.add_argument("--out", type=Path, required=True, help="new directory for the merged run (or root, --sweep)")
    parser.add_argument("--sweep", type=Path, help="merge every sharded run found under this folder")
    parser.add_argument("--allow-missing", action="store_true", help="write the merge even if problems are missing")
    parser.add_argument(
        "--no-dataset-check",
        action="store_true",
        help="do not load the dataset to look for missing problems (e.g. it is not on this machine)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if bool(args.sweep) == bool(args.shards):
        parser.error("give either shard directories or --sweep DIR")
    try:
        errors: list[str] = []
        if args.sweep:
            reports = merge_sweep(args.sweep, args.out, args.allow_missing, not args.no_dataset_check, errors)
            if not reports and not errors:
                print(f"no sharded runs under {args.sweep}", file=sys.stderr)
                return 1
        else:
            reports = [merge(args.shards, args.out, args.allow_missing, check_dataset=not args.no_dataset_check)]
    except MergeError as error:
        print(f"merge refused: {error}", file=sys.stderr)
        return 1
    for report in reports:
        n = max([int(k.split("@")[1]) for k in report.metrics if k.startswith("pass@")] or [0])
        missing = sum(len(v) for v in report.missing.values())
        print(
            f"merged {len(report.shards)} shards -> {report.out}: {report.problems} problems"
            + (f", {missing} MISSING" if missing else "")
            + ("" if report.checked_dataset else " (dataset not checked for missing problems)")
            + f"; acc/weighted@{n} {report.metrics.get(f'acc/weighted@{n}', float('nan')):.3f}"
        )
    for message in errors:
        print(f"merge refused: {message}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
