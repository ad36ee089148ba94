"""End to end on the simulated world: run(cfg) on a composed config, resume, and a real Hydra multirun."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO, compose_config, results_files
from tts.pipeline import run
from tts.store.writer import RunDirectory


def _records(run_dir):
    return RunDirectory(run_dir).records()


def test_run_writes_records_metrics_and_config(tmp_path):
    cfg = compose_config(["n=8", "dataset.num_problems=12", "logger=none", "batch_size=5"])
    metrics = run(cfg, run_dir=tmp_path)
    records = _records(tmp_path)
    assert len(records) == 12 and len({r.unique_id for r in records}) == 12
    for r in records:
        assert len(r.completions) == 8
        for c in r.completions:
            assert set(c.to_json()) >= {"text", "steps", "step_scores", "answer", "key", "finish_reason", "tokens"}
            assert len(c.steps) == len(c.step_scores) > 0
            assert c.tokens > 0
        assert set(r.scores.correct) >= {f"{a}@{k}" for a in ("naive", "weighted", "maj") for k in (1, 2, 4, 8)}
        assert r.compute["generated_tokens"] == sum(c.tokens for c in r.completions)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == metrics
    for k in (1, 2, 4, 8):
        for name in (f"acc/naive@{k}", f"acc/weighted@{k}", f"acc/maj@{k}", f"pass@{k}"):
            assert 0.0 <= metrics[name] <= 1.0
    assert metrics["pass@8"] >= metrics["acc/maj@8"]
    assert metrics["tokens/generated"] == sum(r.compute["generated_tokens"] for r in records)
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "run_info.json").exists()


def test_rerun_resumes_without_redoing_problems(tmp_path):
    cfg = compose_config(["n=4", "dataset.num_problems=6", "logger=none"])
    first = run(cfg, run_dir=tmp_path)
    before = results_files(tmp_path)
    bigger = compose_config(["n=4", "dataset.num_problems=6", "logger=none", "batch_size=2"])
    assert run(bigger, run_dir=tmp_path) == first
    assert results_files(tmp_path) == before


def test_seed_changes_samples_but_not_problems(tmp_path):
    a = run(compose_config(["n=4", "dataset.num_problems=10", "logger=none", "seed=0"]), run_dir=tmp_path / "a")
    b = run(compose_config(["n=4", "dataset.num_problems=10", "logger=none", "seed=1"]), run_dir=tmp_path / "b")
    ra, rb = _records(tmp_path / "a"), _records(tmp_path / "b")
    assert [r.unique_id for r in ra] == [r.unique_id for r in rb]
    assert [c.text for c in ra[0].completions] != [c.text for c in rb[0].completions] or a != b


def test_main_multirun_makes_one_directory_per_job(tmp_path):
    result = subprocess.run(
        [sys.executable, "tts/main.py", "-m", "strategy=best_of_n", "n=4,16", "seed=0,1", "dataset.num_problems=5",
         "logger=none", f"hydra.sweep.dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(p.parent for p in tmp_path.rglob("metrics.json"))
    assert len(runs) == 4
    names = {str(p.relative_to(tmp_path)) for p in runs}
    # strategy, n and seed name the directory; every other override is appended, so different configs never collide
    assert names == {f"synthetic/sim_sim/best_of_n/n{n}_seed{s}/dataset.num_problems=5" for n in (4, 16) for s in (0, 1)}
    for p in runs:
        assert len(RunDirectory(p).summaries()) == 5
    assert result.stdout.count("accuracy@") == 4


def test_config_error_stops_before_generation(tmp_path):
    result = subprocess.run([sys.executable, "tts/main.py", "n=0", "logger=none", f"hydra.run.dir={tmp_path}"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "config key 'n'" in result.stderr
    assert not (tmp_path / "results").exists()
