"""W&B tracking: what an offline run writes, deterministic ids on rerun, fast clear failure when online cannot work."""

from __future__ import annotations

import glob
import json
import logging
import struct
import time
from pathlib import Path

import pytest

from conftest import compose_config
from tts.pipeline import run
from tts.tracking import online_problem, scrub
from tts.results import RunDirectory


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """Keep W&B's staging, cache and settings inside the test's folder; no key, no server."""
    for name in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    return tmp_path


def _records(path: Path):
    """Records of a W&B transaction log (.wandb: a LevelDB-style log of protobuf records in 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        pending += data[pos : pos + length]
        pos += length
        if kind in (1, 4):  # a full record, or the last fragment of one
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _complete_records(path: Path, timeout: float = 30.0) -> list:
    """The records once the log holds the run's exit record (wandb-core may still be flushing after finish())."""
    deadline = time.monotonic() + timeout
    while True:
        records = list(_records(path))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def _offline_runs(run_dir: Path) -> list[Path]:
    return sorted(Path(p) for p in glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb")))


def test_offline_run_logs_names_metrics_table_and_results_artifact(wandb_env):
    run_dir = wandb_env / "run"
    cfg = compose_config(["n=4", "dataset.num_problems=6", "logger=wandb", "logger.tags=[smoke]"])
    metrics = run(cfg, run_dir=run_dir)
    (log_file,) = _offline_runs(run_dir)
    records = _complete_records(log_file)
    (info,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert info.display_name == "best_of_n-n4-seed0" and info.run_group == "sim/sim/synthetic"
    assert set(info.tags) == {"smoke", "sim", "synthetic", "best_of_n", "n=4", "seed=0"}
    assert info.job_type == "search"
    config = {item.key: json.loads(item.value_json) for item in info.config.update}
    assert config["strategy"]["name"] == "best_of_n" and config["n"] == 4 and config["logger"]["mode"] == "offline"

    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update({(u.key or "/".join(u.nested_key)): json.loads(u.value_json) for u in r.summary.update})
    for name in ("acc/weighted@4", "acc/maj@4", "acc/naive@4", "pass@4", "tokens/generated"):
        assert summary[name] == pytest.approx(metrics[name])

    artifacts = {r.artifact.type: r.artifact for r in records if r.WhichOneof("record_type") == "artifact"}
    assert {m.path for m in artifacts["results"].manifest.contents} == {"results/index.jsonl",
                                                                        "results/batch-000000.jsonl.gz", "config.yaml",
                                                                        "metrics.json", "run_info.json"}
    (table_file,) = log_file.parent.glob("files/media/table/problems_*.table.json")
    table = json.loads(table_file.read_text())
    assert {"problem", "gold", "level", "completions", "step_scores", "answers", "pred_weighted",
            "correct_maj"} <= set(table["columns"])
    assert len(table["data"]) == 6
    row = dict(zip(table["columns"], table["data"][0]))
    assert len(row["answers"].splitlines()) == 4 == len(row["step_scores"].splitlines())
    # the run directory is complete regardless of W&B
    assert len(RunDirectory(run_dir).summaries()) == 6


def test_rerun_in_the_same_directory_reuses_the_wandb_run_id(wandb_env):
    run_dir = wandb_env / "run"
    cfg = compose_config(["n=2", "dataset.num_problems=3", "logger=wandb", "logger.log_table=false"])
    run(cfg, run_dir=run_dir)
    run(cfg, run_dir=run_dir)
    ids = {p.stem for p in _offline_runs(run_dir)}
    other = wandb_env / "other"
    run(cfg, run_dir=other)
    assert len(ids) == 1 and len(list((run_dir / "wandb").glob("offline-run-*"))) == 2
    assert {p.stem for p in _offline_runs(other)} != ids


@pytest.mark.parametrize("base_url, key, message", [
    ("https://api.wandb.ai", None, "no W&B API key"),
    ("http://127.0.0.1:9", "0" * 40, "unreachable"),  # port 9 (discard) refuses at once on a test machine
])
def test_online_without_key_or_server_fails_fast_with_a_clear_message(wandb_env, monkeypatch, caplog, base_url, key,
                                                                      message):
    monkeypatch.setenv("WANDB_BASE_URL", base_url)
    if key:
        monkeypatch.setenv("WANDB_API_KEY", key)
    run_dir = wandb_env / "run"
    cfg = compose_config(["n=2", "dataset.num_problems=3", "logger=wandb", "logger.mode=online"])
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="tts.tracking"):
        metrics = run(cfg, run_dir=run_dir)
    assert time.perf_counter() - started < 20
    assert message in caplog.text and "Continuing without tracking" in caplog.text
    assert metrics["problems"] == 3 and len(RunDirectory(run_dir).summaries()) == 3
    assert not (run_dir / "wandb").exists()


def test_online_problem_accepts_a_netrc_key_for_the_server_host(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    netrc_file = tmp_path / "netrc"
    netrc_file.write_text("machine 127.0.0.1\n  login user\n  password " + "1" * 40 + "\n")
    netrc_file.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc_file))
    assert "unreachable" in online_problem("http://127.0.0.1:9", timeout=1)  # key found; only the server is missing
    assert "no W&B API key" in online_problem("http://localhost:9", timeout=1)


def test_secrets_never_reach_the_logged_config():
    config = {"model": {"path": "x", "hf_token": "hf_abc"}, "logger": {"api_key": "k", "project": "tts"},
              "prm": {"secret_sauce": None}, "items": [{"password": "p"}]}
    clean = scrub(config)
    assert clean["model"] == {"path": "x", "hf_token": "<redacted>"}
    assert clean["logger"] == {"api_key": "<redacted>", "project": "tts"}
    assert clean["prm"] == {"secret_sauce": None} and clean["items"] == [{"password": "<redacted>"}]
