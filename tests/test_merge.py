"""Shards and their merge: dataset.shard/num_shards and start/end split a run; `python -m tts.store.merge` joins it back."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, compose_config
from tts.store.merge import MergeError, _unsharded_path, merge, merge_sweep
from tts.pipeline import run
from tts.data.records import ProblemRecord
from tts.store.writer import RunDirectory

BASE = ["n=4", "dataset.num_problems=9", "logger=none", "batch_size=2"]


def _lines(run_dir: Path) -> list[ProblemRecord]:
    return RunDirectory(run_dir).records()


def _shards(root: Path, extra=(), count=3, which=None) -> list[Path]:
    dirs = []
    for i in which if which is not None else range(count):
        run(compose_config(BASE + list(extra) + [f"dataset.shard={i}", f"dataset.num_shards={count}"]),
            run_dir=root / f"shard{i}")
        dirs.append(root / f"shard{i}")
    return dirs


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    root = tmp_path_factory.mktemp("whole")
    metrics = run(compose_config(BASE), run_dir=root)
    return root, metrics


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return _shards(tmp_path_factory.mktemp("shards"))


def test_shards_split_the_problems_contiguously(shards, whole):
    ids = [[r.unique_id for r in _lines(d)] for d in shards]
    assert [len(i) for i in ids] == [3, 3, 3]
    assert sum(ids, []) == [r.unique_id for r in _lines(whole[0])]


def test_merge_equals_the_unsharded_run(shards, whole, tmp_path):
    out = tmp_path / "merged"
    report = merge(shards, out)
    assert report.problems == 9 and not report.missing
    merged, expected = _lines(out), _lines(whole[0])
    assert [r.unique_id for r in merged] == [r.unique_id for r in expected]
    for a, b in zip(merged, expected):
        assert a.completions == b.completions and a.scores == b.scores
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == report.metrics
    for key, value in whole[1].items():
        if key != "compute/backend_calls":  # 3 shards x 2 batches vs 5 batches: the calls really were more
            assert metrics[key] == value, key
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["dataset"]["shard"] == 0 and config["dataset"]["num_shards"] == 1
    assert config["n"] == 4 and config["strategy"]["name"] == "best_of_n"
    assert json.loads((out / "run_info.json").read_text())["merged_from"] == [str(d) for d in shards]
    # a merged directory is a normal run dir: the unsharded command on it finds everything done ...
    assert RunDirectory(out).open(_container(BASE)).keys() == {r.unique_id for r in expected}
    # ... and analysis reads it like any other
    from analysis.runs import read_run_dir

    analysed_config, analysed = read_run_dir(out)
    assert len(analysed) == 9 and analysed_config["n"] == 4


def _container(overrides):
    from tts.pipeline import load_run_config

    from tts.config.validate import validate

    return load_run_config(validate(compose_config(overrides)))[1]  # as run(cfg) records it


def test_start_end_ranges_merge_too(tmp_path, whole):
    a = tmp_path / "a"
    b = tmp_path / "b"
    run(compose_config(BASE + ["dataset.end=4"]), run_dir=a)
    run(compose_config(BASE + ["dataset.start=4"]), run_dir=b)
    report = merge([b, a], tmp_path / "merged")
    assert report.problems == 9 and report.metrics["acc/weighted@4"] == whole[1]["acc/weighted@4"]


def test_overlapping_shards_are_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run(compose_config(BASE + ["dataset.end=5"]), run_dir=a)
    run(compose_config(BASE + ["dataset.start=3"]), run_dir=b)
    with pytest.raises(MergeError, match=r"problem 'synthetic/.*' is recorded in two shards.*overlap"):
        merge([a, b], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_shards_of_different_configs_are_refused(tmp_path, shards):
    other = _shards(tmp_path, extra=["strategy.temperature=0.5"], which=[2])
    with pytest.raises(MergeError, match=r"differ in more than the shard range \(strategy.temperature: 0.8 vs 0.5\)"):
        merge(shards[:2] + other, tmp_path / "merged")
    # what does not change results may differ between shards (tracking, batch size, model path)
    relaxed = _shards(tmp_path / "relaxed", extra=["batch_size=1"], which=[2])
    assert merge(shards[:2] + relaxed, tmp_path / "merged").problems == 9


def test_missing_problems_are_reported_by_shard(tmp_path, shards):
    # shard 1 was never run, and shard 2 was killed after its first batch
    cut = tmp_path / "shard2"
    cut.mkdir()
    for name in ("config.yaml", "fingerprint.json", "results/batch-000000.jsonl.gz"):
        (cut / name).parent.mkdir(exist_ok=True)
        (cut / name).write_bytes((shards[2] / name).read_bytes())
    index = (shards[2] / "results" / "index.jsonl").read_bytes().splitlines(keepends=True)
    (cut / "results" / "index.jsonl").write_bytes(index[0] + index[1][:30])  # killed while indexing batch 2
    with pytest.raises(MergeError) as error:
        merge([shards[0], cut], tmp_path / "merged")
    message = str(error.value)
    assert f"{cut}: 1 problem(s)" in message
    assert "(no shard given covers them): 3 problem(s)" in message
    assert "Rerun the command of each shard listed" in message
    report = merge([shards[0], cut], tmp_path / "merged", allow_missing=True)
    assert report.problems == 5 and sum(len(v) for v in report.missing.values()) == 4
    assert json.loads((tmp_path / "merged" / "metrics.json").read_text())["problems"] == 5


def test_a_shard_still_running_is_refused(tmp_path, shards):
    holder = RunDirectory(shards[1])
    holder._lock()
    try:
        with pytest.raises(MergeError, match="still being written by pid"):
            merge(shards, tmp_path / "merged")
    finally:
        holder.close()


def test_merge_never_overwrites(tmp_path, shards):
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "notes.txt").write_text("mine")
    with pytest.raises(MergeError, match="already exists and is not empty"):
        merge(shards, tmp_path / "merged")


def test_unsharded_path_drops_only_the_range_overrides():
    assert _unsharded_path(Path("synthetic/sim_sim/beam/n4_seed0/dataset.num_shards=4,dataset.shard=1")) == \
        Path("synthetic/sim_sim/beam/n4_seed0")
    assert _unsharded_path(Path("a/n4_seed0/dataset.end=10,dataset.num_problems=20,dataset.start=5")) == \
        Path("a/n4_seed0/dataset.num_problems=20")


def test_cli_merges_a_sweep_and_explains_refusals(tmp_path, shards):
    sweep = tmp_path / "sweep" / "synthetic" / "sim_sim" / "best_of_n" / "n4_seed0"
    for i, shard in enumerate(shards):
        target = sweep / f"dataset.num_problems=9,dataset.num_shards=3,dataset.shard={i}"
        target.mkdir(parents=True)
        shutil.copytree(shard, target, dirs_exist_ok=True)
    # a second experiment of the sweep (seed 1) with only one of its shards run: refused, but only it
    lone = sweep.parent / "n4_seed1" / "dataset.num_problems=9,dataset.num_shards=3,dataset.shard=0"
    run(compose_config(BASE + ["seed=1", "dataset.shard=0", "dataset.num_shards=3"]), run_dir=lone)
    ok = subprocess.run([sys.executable, "-m", "tts.store.merge", "--sweep", str(tmp_path / "sweep"), "--out",
                         str(tmp_path / "merged")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 1
    assert "merge refused: problems missing from the shards" in ok.stderr and "6 problem(s)" in ok.stderr
    out = tmp_path / "merged" / "synthetic" / "sim_sim" / "best_of_n" / "n4_seed0" / "dataset.num_problems=9"
    assert "merged 3 shards" in ok.stdout and str(out) in ok.stdout
    assert len(_lines(out)) == 9
    assert not (tmp_path / "merged" / "synthetic" / "sim_sim" / "best_of_n" / "n4_seed1").exists()
    refused = subprocess.run([sys.executable, "-m", "tts.store.merge", "--out", str(tmp_path / "m2"), str(shards[0]),
                              str(shards[0])], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "merge refused:" in refused.stderr and "two shards" in refused.stderr
    assert not (tmp_path / "m2").exists()
    assert merge_sweep(tmp_path / "merged", tmp_path / "again") == []  # nothing sharded left to merge


def test_a_merge_killed_at_any_moment_leaves_nothing_or_a_complete_directory(tmp_path, shards):
    """The merge writes into a hidden directory beside --out and renames it into place; kill it while it writes."""
    import os
    import signal
    import time

    out = tmp_path / "merged"
    caught = 0
    for attempt in range(6):
        proc = subprocess.Popen([sys.executable, "-m", "tts.store.merge", "--out", str(out), *map(str, shards)], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while proc.poll() is None and not any(p.name.startswith(".merged.merging-") for p in tmp_path.iterdir()):
                time.sleep(0.0005)
            time.sleep(0.002 * attempt)  # at different moments of the write
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=60)
        if proc.returncode == -signal.SIGKILL and not out.exists():
            caught += 1  # killed mid-merge: nothing at --out, only the hidden leftover
        if out.exists():  # the rename happened: then the directory is whole
            assert len(_lines(out)) == 9 and json.loads((out / "metrics.json").read_text())["problems"] == 9
            shutil.rmtree(out)
    assert caught, "no kill landed during the merge: it never saw the temporary directory"
    report = merge(shards, out)  # the rerun cleans up after the killed ones
    assert report.problems == 9 and len(_lines(out)) == 9
    assert not [p for p in tmp_path.iterdir() if ".merging-" in p.name]


# -- merge checks what it merges ---------------------------------------------------------------------------------------


def _copies(root: Path, shards) -> list[Path]:
    copies = []
    for shard in shards:
        shutil.copytree(shard, root / shard.name)
        copies.append(root / shard.name)
    return copies


def test_a_shard_batch_from_a_run_with_another_seed_is_refused(tmp_path, shards):
    """A batch file of the seed-1 run copied over a seed-0 shard's (alone, or with its index line) is named."""
    other = _shards(tmp_path / "seed1", extra=["seed=1"], which=[1])[0]
    for with_entry in (False, True):
        copies = _copies(tmp_path / f"copy{with_entry}", shards)
        theirs = other / "results" / "batch-000000.jsonl.gz"
        (copies[1] / "results" / "batch-000000.jsonl.gz").write_bytes(theirs.read_bytes())
        if with_entry:
            lines = (copies[1] / "results" / "index.jsonl").read_bytes().splitlines(keepends=True)
            first = (other / "results" / "index.jsonl").read_bytes().splitlines(keepends=True)[0]
            (copies[1] / "results" / "index.jsonl").write_bytes(first + b"".join(lines[1:]))
        out = tmp_path / f"merged{with_entry}"
        with pytest.raises(MergeError) as refused:
            merge(copies, out)
        message = str(refused.value)
        assert f"shard {copies[1]} is damaged" in message and "batch-000000.jsonl.gz" in message
        assert ("written by another configuration" if with_entry else "changed after it was written") in message
        assert not out.exists()


def test_an_overwritten_or_truncated_shard_batch_is_refused_naming_it(tmp_path, shards):
    for how in ("overwritten", "truncated"):
        copies = _copies(tmp_path / how, shards)
        batch = copies[0] / "results" / "batch-000001.jsonl.gz"
        first = (copies[0] / "results" / "batch-000000.jsonl.gz").read_bytes()
        batch.write_bytes(first if how == "overwritten" else batch.read_bytes()[:-15])
        result = subprocess.run([sys.executable, "-m", "tts.store.merge", "--out", str(tmp_path / f"m-{how}"),
                                 *map(str, copies)], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]
        assert result.stderr.startswith(f"merge refused: shard {copies[0]} is damaged: {batch}")
        assert "Error" not in result.stderr  # no EOFError traceback
        assert not (tmp_path / f"m-{how}").exists()


def test_scores_edited_in_a_shard_index_or_its_config_are_refused(tmp_path, shards):
    copies = _copies(tmp_path / "index", shards)
    index = copies[2] / "results" / "index.jsonl"
    lines = index.read_bytes().splitlines(keepends=True)
    entry = json.loads(lines[0])
    entry["problems"][0]["scores"]["expected"]["weighted@4"] = 1.0 - entry["problems"][0]["scores"]["expected"][
        "weighted@4"]
    index.write_bytes(json.dumps(entry).encode() + b"\n" + b"".join(lines[1:]))
    with pytest.raises(MergeError, match=r"index.jsonl line 1 \(batch-000000.jsonl.gz\): the entry was edited"):
        merge(copies, tmp_path / "merged")
    copies = _copies(tmp_path / "config", shards)
    config = yaml.safe_load((copies[2] / "config.yaml").read_text())
    config["seed"] = 7  # the shard now claims to be of another run than its results were written under
    (copies[2] / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(MergeError, match=r"config.yaml does not match the config its results were written under"):
        merge(copies, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_shards_that_do_not_tile_their_range_are_refused_from_their_configs(tmp_path, shards):
    with pytest.raises(MergeError, match=r"do not cover their dataset range: dataset.shard=1 of dataset.num_shards=3"):
        merge([shards[0], shards[2]], tmp_path / "merged", check_dataset=False)
    a, b = tmp_path / "a", tmp_path / "b"
    run(compose_config(BASE + ["dataset.end=3"]), run_dir=a)
    run(compose_config(BASE + ["dataset.start=5"]), run_dir=b)
    with pytest.raises(MergeError, match=r"\[3:5\] between"):
        merge([a, b], tmp_path / "merged", check_dataset=False)
    report = merge([a, b], tmp_path / "merged", check_dataset=False, allow_missing=True)
    assert report.problems == 7


def test_a_second_merge_into_the_same_out_is_refused_while_the_first_runs(tmp_path, shards):
    from tts.store.merge import merge_lock

    out = tmp_path / "merged"
    with merge_lock(out):  # a first merge into --out is under way
        result = subprocess.run([sys.executable, "-m", "tts.store.merge", "--out", str(out), *map(str, shards)],
                                cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]
        assert f"merge refused: another merge into {out} is running (pid " in result.stderr
        assert not out.exists() and not [p for p in tmp_path.iterdir() if ".merging-" in p.name]
    assert merge(shards, out).problems == 9  # released: the merge goes ahead
