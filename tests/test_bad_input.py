"""The README's bad-input table, one test per row: what a user who gets something wrong sees.

Config and dataset mistakes run `python tts/main.py ...` as a user would and check that the job stops before any
generation (no results) with a message naming the key. Model misbehaviour (empty text, answers that never parse)
runs `run(cfg)` with a policy that produces it and checks that it is recorded as wrong, without a crash.
W&B without a key or server, and a fake API key in the environment, run end to end as subprocesses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, compose_config, results_files
from tts.backends.base import GenerationOutput, PolicyBackend
from tts.config.schema import ConfigError
from tts.pipeline import run
from tts.store.writer import RunDirectory


def _main(args: list[str], run_dir: Path, env: dict | None = None, timeout: int = 120):
    return subprocess.run([sys.executable, "tts/main.py", *args, f"hydra.run.dir={run_dir}"], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=env)


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# (row id, overrides (may use {tmp}), what stderr must say). Every row must stop before anything is generated.
CONFIG_ROWS = [
    ("unknown group option", ["model=gpt-5"], ["config key 'model': 'gpt-5' is not an option", "sim", "qwen2.5-1.5b"]),
    ("misspelt key", ["dataset.num_problem=5"],
     ["config key 'dataset.num_problem': not a known key", "did you mean 'dataset.num_problems'?"]),
    ("n=0", ["n=0"], ["config key 'n'", "must be a whole number >= 1", "got 0"]),
    ("negative n", ["n=-4"], ["config key 'n'", "got -4"]),
    ("non-integer n", ["n=2.5"], ["config key 'n'", "Value '2.5' of type 'float' could not be converted to Integer"]),
    ("non-numeric n", ["n=four"], ["config key 'n'", "Value 'four' of type 'str' could not be converted to Integer"]),
    ("beam width not dividing n", ["strategy=beam", "n=6"],
     ["config key 'strategy.beam_width'", "n (6) must be a multiple of beam_width (4)"]),
    ("dataset file missing", ["dataset=jsonl", "dataset.path={tmp}/nowhere.jsonl"],
     ["config key 'dataset.path'", "file not found", "nowhere.jsonl"]),
    ("dataset path not given", ["dataset=jsonl"], ["dataset.path"]),
    ("dataset missing a required column", ["dataset=jsonl", "dataset.path={tmp}/questions.jsonl"],
     ["has no problem (column 'problem')", "its columns are ['answer', 'question']", "dataset.columns"]),
    ("column mapping naming an absent column", ["dataset=jsonl", "dataset.path={tmp}/questions.jsonl",
                                                "+dataset.columns={problem: prompt}"],
     ["has no problem (column 'prompt')", "its columns are ['answer', 'question']"]),
    ("empty shard (range past the end)", ["dataset.num_problems=5", "dataset.start=7"],
     ["'dataset.start'/'dataset.end'", "[7:None] of 5 problems is empty"]),
    ("empty shard (start == end)", ["dataset.start=3", "dataset.end=3"], ["config key 'dataset.end'", "would be empty"]),
    ("empty shard (more shards than problems)", ["dataset.num_problems=2", "dataset.num_shards=3", "dataset.shard=0"],
     ["config key 'dataset.shard'", "shard 0 of dataset.num_shards=3 is empty", "use at most 2 shards"]),
    ("shard index out of range", ["dataset.num_shards=4", "dataset.shard=4"],
     ["config key 'dataset.shard'", "must be in [0, dataset.num_shards=4), got 4"]),
    ("key added with + that the schema lacks", ["+strategy.temprature=0.5"],
     ["config key 'strategy.temprature': not a known key", "did you mean 'strategy.temperature'?"]),
    ("schema entry chosen as an option", ["strategy=base_strategy"],
     ["config key 'strategy': 'base_strategy' is a schema, not an option", "best_of_n"]),
    ("seed beyond 32 bits", ["seed=4294967296"], ["config key 'seed'", "[0, 4294967295]"]),
    ("negative subset draws", ["scoring.subset_draws=-3"], ["config key 'scoring.subset_draws'", "got -3"]),
    ("zero subset draws", ["scoring.subset_draws=0"], ["config key 'scoring.subset_draws'", "got 0"]),
    ("infinite grading timeout", ["scoring.grading_timeout=inf"],
     ["config key 'scoring.grading_timeout'", "must be a finite number"]),
    ("model=sim on problems it cannot read", ["dataset=jsonl", "dataset.path={tmp}/own.jsonl"],
     ["config key 'model'", "only solves the problems of dataset=synthetic", "1 of the 1 problems",
      "What is $2+3$?", "Use a real model"]),
    ("policy weights not in a local directory", ["model=qwen2.5-1.5b", "model/backend=hf",
                                                 "model.path={tmp}/no-such-model"],
     ["config key 'model.path'", "no model directory at", "no-such-model"]),
    ("PRM weights not in a local directory", ["prm=math-shepherd", "prm.path={tmp}/no-such-prm"],
     ["config key 'prm.path'", "no model directory at"]),
    ("a directory that is not a saved model", ["model=qwen2.5-1.5b", "model/backend=hf", "model.path={tmp}"],
     ["config key 'model.path'", "without config.json"]),
    ("n beyond its limit", ["n=1000000"],
     ["config key 'n': 1000000 is above the limit of 65536", "raise the limit with TTS_MAX_N=1000000"]),
    ("max_tokens beyond its limit", ["budget.max_tokens=10000000"],
     ["config key 'budget.max_tokens': 10000000 is above the limit of 131072", "TTS_MAX_TOKENS=10000000"]),
    ("iterations beyond their limit", ["budget.num_iterations=100000"],
     ["config key 'budget.num_iterations'", "TTS_MAX_ITERATIONS=100000"]),
    ("a batch that cannot fit in memory", ["n=60000", "budget.max_tokens=100000"],
     ["config key 'batch_size': this run may hold up to", "64 problems in flight x n=60000",
      "this machine has available", "lower batch_size", "TTS_MEMORY_GB"]),
]


@pytest.mark.parametrize("overrides, expected", [pytest.param(o, e, id=i) for i, o, e in CONFIG_ROWS])
def test_config_and_dataset_errors_stop_before_generation(tmp_path, overrides, expected):
    _write_jsonl(tmp_path / "questions.jsonl", [{"question": "What is 1+1?", "answer": "2"}])
    _write_jsonl(tmp_path / "own.jsonl", [{"problem": "What is $2+3$?", "answer": "5"}])
    run_dir = tmp_path / "run"
    result = _main([o.replace("{tmp}", str(tmp_path)) for o in overrides] + ["logger=none"], run_dir)
    assert result.returncode == 2
    assert result.stderr.startswith("Error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]
    for text in expected:
        assert text in result.stderr, f"{text!r} not in:\n{result.stderr[-2000:]}"
    assert not list(tmp_path.rglob("index.jsonl")), "a config error must stop before anything is generated"
    assert not run_dir.exists(), "a refused job leaves no run directory behind"
    assert "accuracy@" not in result.stdout


def test_hub_weights_missing_offline_are_one_line(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))  # an empty cache, no hub
    for args, key in ((["model=qwen2.5-1.5b", "model/backend=hf"], "model.path"),
                      (["prm=math-shepherd", "prm.path=nobody/no-such-prm"], "prm.path")):
        result = _main(args + ["logger=none"], tmp_path / "run", env=env)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]
        assert result.stderr.startswith(f"Error: config key '{key}':") and "not in the local Hugging Face cache" in \
            result.stderr and "/local/dir" in result.stderr
        assert not (tmp_path / "run").exists()


def test_missing_vllm_is_one_line(tmp_path):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    result = _main(["model=llama-3.2-1b", "logger=none"], tmp_path / "run")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]
    assert result.stderr.startswith("Error: config key 'model.backend':") and "pip install 'tts[vllm]'" in result.stderr


def test_a_refused_job_never_touches_an_existing_run_directory(tmp_path):
    run_dir = tmp_path / "run"
    first = _main(["n=4", "dataset.num_problems=3", "logger=none"], run_dir)
    assert first.returncode == 0, first.stderr[-2000:]
    files = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.is_file()}
    assert run_dir / ".hydra" / "overrides.yaml" in files and run_dir / "main.log" in files and run_dir / ".lock" in files
    time.sleep(0.05)
    for refused in (["n=8", "dataset.num_problems=3"], ["n=4", "dataset.num_problems=3", "seed=-1"],
                    ["n=4", "dataset.num_problems=3", "scoring.subset_draws=0"]):
        result = _main(refused + ["logger=none"], run_dir)
        assert result.returncode == 2, result.stderr[-2000:]
        now = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.is_file()}
        changed = sorted(str(p) for p in set(now) | set(files) if now.get(p) != files.get(p))
        assert not changed, f"{refused} changed {changed}"


def test_a_full_disk_is_one_line_naming_the_file(capsys):
    import errno

    from tts.cli.sweep import guarded_run

    def run(cfg):
        raise OSError(errno.ENOSPC, "No space left on device", "outputs/run/results.jsonl")

    with pytest.raises(SystemExit) as stopped:
        guarded_run(run, None)
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert err.strip() == ("Error: no space left on the device writing outputs/run/results.jsonl: "
                           "No space left on device")


def test_results_of_another_config_in_the_run_dir_are_not_mixed(tmp_path):
    run(compose_config(["n=4", "dataset.num_problems=3", "logger=none"]), run_dir=tmp_path)
    before = results_files(tmp_path)
    result = _main(["n=8", "dataset.num_problems=3", "logger=none"], tmp_path)
    assert result.returncode != 0
    for text in ("config key 'n'", "holds results of a different configuration (n: 4 -> 8)", "Refusing to mix",
                 "Rerun with the original settings to resume", "hydra.run.dir=", "to start over"):
        assert text in result.stderr, result.stderr[-2000:]
    assert results_files(tmp_path) == before
    # what does not change results (tracking, batch size) may change between the runs: that is a resume
    again = _main(["n=4", "dataset.num_problems=3", "logger=none", "batch_size=1"], tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "3 already recorded" in again.stdout + again.stderr
    assert results_files(tmp_path) == before


def test_results_without_a_fingerprint_are_not_adopted(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "index.jsonl").write_text(json.dumps({"unique_id": "synthetic/linear/0"}) + "\n")
    with pytest.raises(ConfigError, match="fingerprint.json does not"):
        run(compose_config(["n=4", "dataset.num_problems=3", "logger=none"]), run_dir=tmp_path)


# -- a policy that misbehaves -------------------------------------------------------------------------------------


class _Rewritten(PolicyBackend):
    """The sim policy with some of its samples replaced by `rewrite(output, sample_index)` (None: keep)."""

    def __init__(self, inner: PolicyBackend, rewrite) -> None:
        super().__init__()
        self.inner, self.rewrite = inner, rewrite

    def _generate(self, requests):
        outputs = self.inner._generate(requests)
        return [[self.rewrite(o, k) or o for k, o in enumerate(samples)] for samples in outputs]


def _run_with_policy(monkeypatch, tmp_path, rewrite, n=4, problems=4):
    from tts.backends import build_policy

    monkeypatch.setattr("tts.runtime.model_cache.default_build_policy",
                        lambda model, seed: _Rewritten(build_policy(model, seed), rewrite))
    metrics = run(compose_config([f"n={n}", f"dataset.num_problems={problems}", "logger=none"]), run_dir=tmp_path)
    records = RunDirectory(tmp_path).records()
    assert len(records) == problems and all(len(r.completions) == n for r in records)
    return metrics, records


def test_policy_returning_empty_text_is_recorded_as_no_answer(monkeypatch, tmp_path):
    empty = GenerationOutput(text="", finish_reason="eos", num_tokens=0)
    metrics, records = _run_with_policy(monkeypatch, tmp_path, lambda o, k: empty)
    for record in records:
        for c in record.completions:
            assert c.text == "" and c.answer is None and c.steps == [] and c.step_scores == []
        assert not any(record.scores.correct.values())
    assert metrics["acc/weighted@4"] == metrics["acc/maj@4"] == metrics["acc/naive@4"] == metrics["pass@4"] == 0.0
    assert metrics["tokens/generated"] == 0


def test_empty_samples_among_good_ones_only_lose_their_vote(monkeypatch, tmp_path):
    empty = GenerationOutput(text="", finish_reason="length", num_tokens=0)
    metrics, records = _run_with_policy(monkeypatch, tmp_path, lambda o, k: empty if k % 2 else None, n=8)
    for record in records:
        assert [c.answer is None for c in record.completions] == [k % 2 == 1 for k in range(8)]
    assert metrics["pass@8"] > 0  # the real samples still count


@pytest.mark.parametrize("text", [
    "We tried hard.\n\nThe answer is somewhere between two and three.",   # no \boxed at all
    "## Step 1: Compute\nIt is big.\n\nTherefore, the final answer is: $\\boxed{\\frac{1}{",  # never closed
    "## Step 1: Compute\n\nTherefore, the final answer is: $\\boxed{)(*&^%$#@!}$.",  # garbage inside the box
    "\\boxed{" * 200 + "1" + "}" * 200,  # absurd nesting
])
def test_answer_that_never_parses_is_wrong_not_a_crash(monkeypatch, tmp_path, text):
    garbage = GenerationOutput(text=text, finish_reason="eos", num_tokens=len(text.split()))
    metrics, records = _run_with_policy(monkeypatch, tmp_path, lambda o, k: garbage)
    for record in records:
        assert all(c.text == text for c in record.completions)
        assert not any(record.scores.correct.values()), (text, record.scores.correct)
    assert metrics["acc/maj@4"] == 0.0 and metrics["pass@4"] == 0.0


# -- W&B and secrets ----------------------------------------------------------------------------------------------

SECRET = "sk-test-SECRET123"


def _clean_env(tmp_path: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path / "home"), WANDB_SILENT="true", **extra)  # no ~/.netrc key from this machine
    (tmp_path / "home").mkdir(exist_ok=True)
    return env


def _files_containing(root: Path, needle: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


def test_wandb_online_without_key_or_server_keeps_local_results_and_no_secret_leaks(tmp_path):
    """Three runs at once: online without a key, online with a key but no server, offline with a key in the env."""
    args = ["dataset.num_problems=3", "logger=wandb"]
    unreachable = "http://127.0.0.1:9"  # the discard port: nothing listens there
    jobs = {
        "no_key": (args + ["logger.mode=online"], _clean_env(tmp_path, WANDB_BASE_URL=unreachable)),
        "no_server": (args + ["logger.mode=online"],
                      _clean_env(tmp_path, WANDB_BASE_URL=unreachable, WANDB_API_KEY=SECRET + "x" * 32)),
        "offline": (args + [f"hydra.job.name=tts"], _clean_env(tmp_path, WANDB_API_KEY=SECRET)),
    }
    started = time.perf_counter()
    procs = {name: (subprocess.Popen([sys.executable, "tts/main.py", *a, f"hydra.run.dir={tmp_path / name}"], cwd=REPO,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), time.perf_counter())
             for name, (a, env) in jobs.items()}
    outputs = {}
    for name, (proc, t0) in procs.items():
        out, err = proc.communicate(timeout=120)
        outputs[name] = (proc.returncode, out, err, time.perf_counter() - started)
    for name, (rc, out, err, elapsed) in outputs.items():
        run_dir = tmp_path / name
        assert rc == 0, f"{name}: tracking must never fail a run\n{err[-2000:]}"
        assert len(RunDirectory(run_dir).summaries()) == 3
        assert json.loads((run_dir / "metrics.json").read_text())["problems"] == 3
        assert f"accuracy@4" in out
        # the secret stays in the environment: not in the run dir, its logs, .hydra, or W&B's offline files
        assert not _files_containing(run_dir, "SECRET123"), name
        assert "SECRET123" not in out + err
    for name in ("no_key", "no_server"):
        rc, out, err, elapsed = outputs[name]
        said = out + err  # Hydra's log handler writes to stdout
        warning = next((line for line in said.splitlines() if "W&B" in line and "WARNING" in line), "")
        assert "without tracking" in warning.lower(), said[-2000:]  # one clear line, not a traceback
        assert str(tmp_path / name) in warning  # says where the results are
        assert "Traceback" not in said
        assert elapsed < 60, f"{name}: gave up on W&B only after {elapsed:.0f} s"
        print(f"{name}: finished after {elapsed:.1f} s")
    assert "API key" in outputs["no_key"][1] + outputs["no_key"][2]  # says what is wrong
    assert list((tmp_path / "offline" / "wandb").glob("offline-run-*")), "the offline W&B run was written"
    assert not _files_containing(tmp_path / "home", "SECRET123")


def test_an_environment_secret_in_any_wandb_field_or_name_is_written_nowhere(tmp_path):
    """The secret given as W&B tags, group, project and job type and as a component's name: no file the run writes
    (the offline .wandb file, W&B's own metadata, the run directory's name included) holds it."""
    secret = "sk-test-FIELDSECRET789"
    env = _clean_env(tmp_path, OPENAI_API_KEY=secret)
    run_root = tmp_path / "runs"
    overrides = [
        "dataset.num_problems=2",
        "logger=wandb",
        f"logger.tags=[{secret},keep-me]",
        f"logger.group={secret}",
        f"logger.project=p-{secret}",
        f"logger.job_type={secret}",
        f"strategy.name={secret}",
        f"hydra.sweep.dir={run_root}",
    ]
    proc = subprocess.run([sys.executable, "tts/main.py", "-m", *overrides], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = [p for p in run_root.rglob("*")]
    assert any(p.suffix == ".wandb" for p in written), "the offline W&B run was written"
    assert not [p for p in written if "FIELDSECRET" in str(p)], "a path holds the secret"
    assert not _files_containing(run_root, "FIELDSECRET")
    assert "FIELDSECRET" not in proc.stdout + proc.stderr
    # the redaction hides the secret, not the run: the other tag is still there
    assert _files_containing(run_root, "keep-me")


def test_a_disk_that_fills_during_a_run_names_the_file_that_could_not_be_written(tmp_path, monkeypatch, capsys):
    """ENOSPC from fsync (where a full disk shows up for buffered writes) carries no file name; the one line says
    which results file could not be written, not just the run directory."""
    import errno

    from tts.cli.sweep import guarded_run

    real_fsync = os.fsync

    def full_disk_fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp") and "batch-" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk_fsync)
    cfg = compose_config(["n=4", "dataset.num_problems=2", "logger=none"])
    with pytest.raises(SystemExit) as stopped:
        guarded_run(lambda c: run(c, run_dir=tmp_path), cfg)
    assert stopped.value.code == 1
    [err] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("Error:")]
    assert err == (f"Error: no space left on the device writing {tmp_path / 'results' / 'batch-000000.jsonl.gz'}: "
                   "No space left on device")


def test_size_limits_are_raised_with_their_environment_variables(monkeypatch):
    """The bounds are knobs of the machine, not of the experiment: an environment variable raises (or lowers) each."""
    from tts.config.validate import validate
    from tts.data.synthetic import generate_problems
    from tts.runtime.limits import check_limits, estimated_memory

    problems = generate_problems(10, 1234)
    big = validate(compose_config(["n=100000", "batch_size=1", "budget.max_tokens=16"]))
    with pytest.raises(ConfigError, match="config key 'n': 100000 is above the limit of 65536"):
        check_limits(big, problems)
    monkeypatch.setenv("TTS_MAX_N", "100000")
    check_limits(big, problems)  # raised: accepted (1 problem in flight x 100000 x 16 tokens fits)
    run = validate(compose_config(["n=8", "batch_size=4"]))
    needed = estimated_memory(run, len(problems))
    assert needed == 4 * 8 * (2048 * 64 + 4096)  # min(batch_size, problems) x n x (max_tokens x 64 B + 4 KiB)
    assert estimated_memory(run, 2) == needed // 2  # a run of 2 problems never holds 4
    monkeypatch.setenv("TTS_MEMORY_GB", str(needed / 2**30 / 2))
    with pytest.raises(ConfigError, match=r"up to 0\.0 GB .* than the 0\.0 GB set by TTS_MEMORY_GB; lower batch_size"):
        check_limits(run, problems)
    monkeypatch.setenv("TTS_MEMORY_GB", str(needed / 2**30 * 2))
    check_limits(run, problems)
    monkeypatch.setenv("TTS_MAX_N", "a lot")
    with pytest.raises(ConfigError, match="environment variable TTS_MAX_N: expected a number"):
        check_limits(run, problems)
