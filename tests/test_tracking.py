"""W&B tracking: what an offline run writes, deterministic ids on rerun, fast clear failure when online cannot work."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from conftest import compose_config
from tts.pipeline import run
from tts.tracking.tracker import online_problem, scrub
from tts.store.writer import RunDirectory
from wandb_offline import history, inspect, of_type, offline_runs, run_info, summary, table


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """No key, no server, and an empty HOME that must stay empty: W&B writes only into the run directory."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_ARTIFACT_DIR", "WANDB_API_KEY", "WANDB_MODE",
                 "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    yield tmp_path
    assert not list(home.rglob("*")), "W&B wrote into HOME"


def test_offline_run_logs_names_metrics_tables_and_results_artifact(wandb_env):
    run_dir = wandb_env / "run"
    cfg = compose_config(["n=4", "dataset.num_problems=6", "logger=wandb", "logger.tags=[smoke]"])
    metrics = run(cfg, run_dir=run_dir)
    (log_file,) = offline_runs(run_dir)
    records = inspect(log_file)
    info = run_info(records)
    assert info["display_name"] == "best_of_n-n4-seed0" and info["run_group"] == "sim/sim/synthetic"
    assert set(info["tags"]) == {"smoke", "sim", "synthetic", "best_of_n", "n=4", "seed=0"}
    assert info["job_type"] == "search"
    config = info["config"]["update"]
    assert config["strategy"]["name"] == "best_of_n" and config["n"] == 4 and config["logger"]["mode"] == "offline"
    # the project's own settings named like credentials stay visible
    assert config["budget"]["max_tokens"] == cfg.budget.max_tokens and config["prm"]["_target_"] == cfg.prm._target_

    final = summary(records)
    for name in ("acc/weighted@4", "acc/maj@4", "acc/naive@4", "pass@4", "tokens/generated"):
        assert final[name] == pytest.approx(metrics[name])
    assert final["acc_at_n/weighted"] == pytest.approx(metrics["acc/weighted@4"])

    artifacts = {a["type"]: a for a in of_type(records, "artifact")}
    assert {c["path"] for c in artifacts["results"]["manifest"]["contents"]} == {
        "results/index.jsonl", "results/batch-000000.jsonl.gz", "results/digests.jsonl", "config.yaml", "metrics.json",
        "run_info.json", "completions.table.json", "problems.table.json"}
    # the results files are the run directory's, byte for byte
    for content in artifacts["results"]["manifest"]["contents"]:
        if content["path"].startswith("results/"):
            assert Path(content["local_path"]).read_bytes() == (run_dir / content["path"]).read_bytes()
    assert len(RunDirectory(run_dir).summaries()) == 6


def test_rerun_in_the_same_directory_reuses_the_wandb_run_id(wandb_env):
    run_dir = wandb_env / "run"
    cfg = compose_config(["n=2", "dataset.num_problems=3", "logger=wandb", "logger.log_table=false"])
    run(cfg, run_dir=run_dir)
    # what is logged changes (a tag): the rerun logs again, to the same W&B run
    run(compose_config(["n=2", "dataset.num_problems=3", "logger=wandb", "logger.log_table=false",
                        "logger.tags=[again]"]), run_dir=run_dir)
    ids = {p.stem for p in offline_runs(run_dir)}
    other = wandb_env / "other"
    run(cfg, run_dir=other)
    assert len(ids) == 1 and len(list((run_dir / "wandb").glob("offline-run-*"))) == 2
    assert {p.stem for p in offline_runs(other)} != ids


def test_wandb_keeps_one_copy_within_twice_the_results_and_a_rerun_logs_nothing_new(wandb_env):
    """The README's concern at small scale: W&B's folder holds one copy of the completions (the results artifact
    refers to the run's own batch files; the tables are files of their own, never staged twice) and stays within 2x
    the results; rerunning the finished run adds no byte and no W&B run."""
    run_dir = wandb_env / "run"
    cfg = compose_config(["n=16", "dataset.num_problems=60", "logger=wandb"])
    run(cfg, run_dir=run_dir)
    (log_file,) = offline_runs(run_dir)
    inspect(log_file)

    def sizes(folder: Path) -> dict:
        return {p: p.stat().st_size for p in folder.rglob("*") if p.is_file()}

    results, tracked = sizes(run_dir / "results"), sizes(run_dir / "wandb")
    assert sum(tracked.values()) <= 2 * sum(results.values()), (sum(tracked.values()), sum(results.values()))
    batches = {p.read_bytes() for p in results if p.name.startswith("batch-")}
    assert not [p for p in tracked if p.read_bytes() in batches], "W&B holds a copy of a results batch"
    assert not [p for p in tracked if "media/table" in str(p)], "a table logged to the run is kept three times"
    # every problem's selected completions are in the table
    columns, rows = table(log_file, "completions")
    on_disk = {r.unique_id: r for r in RunDirectory(run_dir).iter_records()}
    shown = {(row[columns.index("unique_id")], row[columns.index("index")]) for row in rows}
    assert {uid for uid, _ in shown} == set(on_disk)
    picked_naive = [row for row in rows if row[columns.index("picked_naive")]]
    assert len(picked_naive) == len(on_disk)
    assert len(rows) < 16 * 60  # the budget cut it: at this size every row would be far more than the results

    # the same command again: nothing new to log
    started = time.perf_counter()
    run(cfg, run_dir=run_dir)
    print(f"rerun of a finished run: {time.perf_counter() - started:.1f} s")
    assert sizes(run_dir / "wandb") == tracked
    assert len(offline_runs(run_dir)) == 1


def test_the_table_budget_keeps_each_problems_picks_first():
    from tts.tracking.tables import COMPLETION_COLUMNS, budgeted_rows

    def row(uid, index, naive=False, weighted=False, maj=False, text="x" * 50):
        values = dict.fromkeys(COMPLETION_COLUMNS)
        values.update(unique_id=uid, index=index, picked_naive=naive, picked_weighted=weighted, picked_maj=maj,
                      text=text)
        return [values[c] for c in COMPLETION_COLUMNS]

    problems = [[row("a", 0), row("a", 1, weighted=True, maj=True), row("a", 2, naive=True), row("a", 3)],
                [row("b", 0, naive=True, weighted=True), row("b", 1), row("b", 2, maj=True)]]
    size = len(json.dumps(problems[0][0])) + 2
    assert budgeted_rows(problems, 10 * size) == problems  # all fit: nothing cut
    # room for three rows: the first round (each problem's naive pick), then a's weighted pick
    kept = budgeted_rows(problems, 3 * size)
    index = COMPLETION_COLUMNS.index("index")
    assert [[r[index] for r in rows] for rows in kept] == [[1, 2], [0]]
    assert budgeted_rows(problems, 0) == [[], []]


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
    with caplog.at_level(logging.WARNING, logger="tts.tracking.tracker"):
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


@pytest.mark.parametrize("n", [256, 1024])
def test_every_n_logs_its_results_artifact_with_a_small_fixed_metadata(wandb_env, n):
    run_dir = wandb_env / "run"
    metrics = run(compose_config([f"n={n}", "dataset.num_problems=2", "logger=wandb"]), run_dir=run_dir)
    assert len([k for k in metrics if "@" in k]) > 100  # more than W&B allows as artifact metadata keys
    records = inspect(offline_runs(run_dir)[0])
    (results,) = [a for a in of_type(records, "artifact") if a["type"] == "results"]
    metadata = json.loads(results["metadata"])
    assert metadata["n"] == n and metadata["problems"] == 2
    assert metadata["acc_weighted"] == pytest.approx(metrics[f"acc/weighted@{n}"])
    assert len(metadata) < 20
    assert summary(records)[f"acc/weighted@{n}"] == pytest.approx(metrics[f"acc/weighted@{n}"])


def test_progress_is_logged_after_every_batch_and_a_resumed_run_continues_it(wandb_env):
    run_dir = wandb_env / "run"
    cfg = compose_config(["n=4", "dataset.num_problems=7", "batch_size=3", "logger=wandb", "logger.log_table=false"])
    metrics = run(cfg, run_dir=run_dir)
    (first,) = offline_runs(run_dir)
    rows = history(inspect(first), "progress/")
    assert [r["progress/problems_done"] for r in rows] == [3, 6, 7]  # one row per batch
    assert all(r["progress/problems_total"] == 7 and r["progress/tokens_per_s"] > 0 for r in rows)
    assert rows[-1]["progress/tokens_generated"] == metrics["tokens/generated"]
    for agg in ("naive", "weighted", "maj"):
        assert rows[-1][f"progress/acc_{agg}@4"] == pytest.approx(metrics[f"acc/{agg}@4"])
    assert rows[-1]["progress/pass@4"] == pytest.approx(metrics["pass@4"])

    # a crash after the first batch: the rerun logs to the same W&B run, continuing from the problems on disk
    index = run_dir / "results" / "index.jsonl"
    entries = index.read_text().splitlines(keepends=True)
    index.write_text(entries[0])
    for entry in entries[1:]:
        (run_dir / "results" / json.loads(entry)["file"]).unlink()
    assert run(cfg, run_dir=run_dir) == metrics
    again = [p for p in offline_runs(run_dir) if p != first]
    assert len(again) == 1 and again[0].name == first.name  # same run id
    rows = history(inspect(again[0]), "progress/")
    assert [r["progress/problems_done"] for r in rows] == [3, 6, 7]
    assert rows[-1]["progress/acc_weighted@4"] == pytest.approx(metrics["acc/weighted@4"])


def test_completions_table_has_one_row_per_completion_beside_a_problems_table(wandb_env):
    run_dir = wandb_env / "run"
    # a budget that holds every completion (the default keeps W&B within 2x the results: test below)
    run(compose_config(["n=8", "dataset.num_problems=5", "logger=wandb", "logger.table_budget=1000"]), run_dir=run_dir)
    (log_file,) = offline_runs(run_dir)
    inspect(log_file)  # waits for the run to be complete
    columns, rows = table(log_file, "completions")
    assert {"unique_id", "level", "index", "answer", "correct", "score", "steps", "tokens", "finish_reason",
            "picked_naive", "picked_weighted", "picked_maj", "text", "step_scores"} <= set(columns)
    on_disk = {r.unique_id: r for r in RunDirectory(run_dir).iter_records()}
    by_problem: dict = {}
    for row in rows:
        by_problem.setdefault(row[columns.index("unique_id")], []).append(dict(zip(columns, row)))
    assert set(by_problem) == set(on_disk) and all(len(v) == 8 for v in by_problem.values())
    p_columns, p_rows = table(log_file, "problems")
    problems = {row[0]: dict(zip(p_columns, row)) for row in p_rows}
    assert set(problems) == set(on_disk)
    for uid, completions in by_problem.items():
        record = on_disk[uid]
        assert [c["index"] for c in completions] == list(range(8))
        assert sum(c["picked_naive"] for c in completions) == 1
        # the weighted and majority picks hold the predicted answer; correctness agrees with pass@8 and the gold
        for agg in ("weighted", "maj"):
            picked = [c for c in completions if c[f"picked_{agg}"]]
            assert {c["answer"] for c in picked} >= {record.scores.predictions[f"{agg}@8"]} - {None}
            assert all(c["correct"] == problems[uid][f"correct_{agg}"] for c in picked)
        assert any(c["correct"] for c in completions) == (problems[uid]["pass"] > 0)
        for c, full in zip(completions, record.completions):
            assert c["step_scores"] == pytest.approx(full.step_scores) and c["steps"] == len(full.steps)
            assert len(c["text"]) <= 1000 and full.text.startswith(c["text"].removesuffix(" [...]"))


def test_tables_are_never_cut_to_wandbs_row_limit(wandb_env, monkeypatch):
    """W&B cuts a logged table to wandb.Table.MAX_ROWS rows (10,000; n=256 on MATH-500 has 128,000 completions) with a
    log warning only; the limit is lowered here so that a small run crosses it."""
    import wandb

    monkeypatch.setattr(wandb.Table, "MAX_ROWS", 50)
    monkeypatch.setattr(wandb.Table, "MAX_ARTIFACT_ROWS", 40)
    run_dir = wandb_env / "run"
    run(compose_config(["n=16", "dataset.num_problems=6", "logger=wandb", "logger.table_budget=1000"]),
        run_dir=run_dir)
    (log_file,) = offline_runs(run_dir)
    inspect(log_file)
    parts = [table(log_file, f"completions_part{i}")[1] for i in (1, 2, 3)]
    assert sum(map(len, parts)) == 96 and all(len(part) <= 40 for part in parts)  # whole problems per part
    assert wandb.Table.MAX_ROWS == 50  # restored after logging


def test_completions_beyond_wandbs_artifact_limit_are_split_by_whole_problems():
    from tts.tracking.tracker import table_parts

    parts = table_parts([[1] * 4, [2] * 4, [3] * 4], limit=9)
    assert parts == [[1] * 4 + [2] * 4, [3] * 4]


def test_fast_tables_have_the_column_types_wandb_infers_row_by_row():
    import wandb

    from tts.tracking.tables import wandb_table

    columns = ["answer", "correct", "score", "tokens", "step_scores"]
    rows = [["1", True, 0.5, 10, [0.1, 0.2]], [None, None, 0.25, 12, []], ["x", False, 1, 3, [0.3, 0.1, 0.9]],
            ["2", True, 0.75, 7, [1]], [None, False, 0.0, 0, [0.4, 0.5]]]
    fast, slow = wandb_table(columns, rows), wandb.Table(columns=columns, data=rows)
    assert fast._column_types.to_json() == slow._column_types.to_json()
    assert fast.data == slow.data
