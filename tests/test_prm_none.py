"""Runs without a reward model (`prm=none`), and the simulated PRM kept to the problems it can judge."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, compose_config, typed_config
from tts.config.keys import option_schemas
from tts.config.schema import ConfigError
from tts.pipeline import run
from tts.store.writer import RunDirectory


def _strategies(needs_prm: bool) -> list[str]:
    """The strategy options whose config declares (or not) that a PRM steers them: a new strategy is covered."""
    return sorted(name for name, schema in option_schemas("strategy").items() if schema.needs_prm == needs_prm)


def _main(args: list[str], run_dir: Path, env: dict | None = None):
    return subprocess.run([sys.executable, "tts/main.py", *args, "logger=none", f"hydra.run.dir={run_dir}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=env)


def test_main_runs_without_a_prm_on_the_default_world(tmp_path):
    result = _main(["prm=none"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    n = 4
    assert f"acc/maj@{n}" in metrics and f"acc/deepconf10@{n}" in metrics and f"acc/borda_sc@{n}" in metrics
    assert not any("naive" in name or "weighted" in name for name in metrics)
    assert metrics["tokens/prm"] == 0
    assert "naive" not in result.stdout and f"maj {metrics[f'acc/maj@{n}']:.3f}" in result.stdout
    for record in RunDirectory(tmp_path).records():
        for completion in record.completions:
            assert completion.steps and completion.step_scores == [] and completion.confidence is not None


@pytest.mark.parametrize("strategy", _strategies(needs_prm=False))
def test_strategies_that_need_no_prm_run_without_one(tmp_path, strategy):
    metrics = run(compose_config([f"strategy={strategy}", "prm=none", "n=4", "dataset.num_problems=4",
                                  "logger=none"]), run_dir=tmp_path)
    assert "acc/maj@4" in metrics and "acc/self_certainty@4" in metrics and "acc/weighted@4" not in metrics


@pytest.mark.parametrize("strategy", _strategies(needs_prm=True))
def test_strategies_a_prm_steers_are_refused_without_one(strategy):
    with pytest.raises(ConfigError, match=f"config key 'prm': strategy={strategy} is steered by a PRM"):
        typed_config([f"strategy={strategy}", "prm=none"])


def test_the_refusal_is_one_line_before_anything_is_generated(tmp_path):
    result = _main(["strategy=beam", "prm=none"], tmp_path / "run")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "strategy=beam" in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def _own_problems(tmp_path: Path) -> Path:
    path = tmp_path / "own.jsonl"
    path.write_text(json.dumps({"problem": "What is $2+3$?", "answer": "5"}) + "\n")
    return path


def test_the_sim_prm_is_refused_on_problems_it_did_not_generate(tmp_path):
    from tts.runtime.preflight import check_before_generation
    from tts.pipeline import load_run_config

    base = ["model=qwen2.5-1.5b", "model/backend=hf", f"model.path={tmp_path}/no-such-model", "dataset=jsonl",
            f"dataset.path={_own_problems(tmp_path)}"]
    refused = typed_config(base)
    with pytest.raises(ConfigError, match="config key 'prm': the simulated PRM .* only judges the problems of "
                                          "dataset=synthetic.*prm.allow_foreign=true"):
        check_before_generation(refused, load_run_config(refused)[0])
    allowed = typed_config([*base, "prm.allow_foreign=true"])
    with pytest.raises(ConfigError, match="config key 'model.path'"):  # past the PRM's check, to the policy's
        check_before_generation(allowed, load_run_config(allowed)[0])


def test_allowing_foreign_problems_is_recorded_and_flagged_in_every_summary(tmp_path):
    pytest.importorskip("transformers")
    from tests.tiny_models import save_llama_causal_lm

    model = save_llama_causal_lm(tmp_path / "llama")
    run_dir = tmp_path / "run"
    metrics = run(compose_config([
        "model=llama-3.2-1b", f"model.path={model}", "model/backend=hf", "model.backend.device=cpu",
        "model.dtype=float32", "dataset=jsonl", f"dataset.path={_own_problems(tmp_path)}", "prm.allow_foreign=true",
        "n=2", "budget.max_tokens=8", "logger=none",
    ]), run_dir=run_dir)
    assert metrics["warnings/prm_sim_foreign_problems"] == 1.0
    assert json.loads((run_dir / "metrics.json").read_text())["warnings/prm_sim_foreign_problems"] == 1.0
    assert "allow_foreign: true" in (run_dir / "config.yaml").read_text()
    from tts.tracking.tracker import artifact_metadata

    config = {"n": 2, "seed": 0, "strategy": {"name": "best_of_n"}, "model": {"name": "m"}, "prm": {"name": "sim"},
              "dataset": {"name": "jsonl"}}
    assert artifact_metadata(config, metrics)["warnings/prm_sim_foreign_problems"] == 1.0


def test_analysis_treats_confidence_aggregations_like_the_others_and_refuses_what_no_run_reports(tmp_path):
    from analysis.report import write_report
    from analysis.runs import accuracy_table, load_local, long_points

    for prm in ("sim", "none"):
        run(compose_config([f"prm={prm}", "n=4", "dataset.num_problems=6", "logger=none"]), run_dir=tmp_path / prm)
    sweep = load_local([str(tmp_path / "sim"), str(tmp_path / "none")])
    assert {"acc/deepconf10@4", "acc/borda_sc@4"} <= set(sweep.runs.columns)
    table = accuracy_table(long_points(sweep.problems, subsample=False))
    by_setting = table.groupby("setting").aggregation.apply(set).to_dict()
    with_prm, without = (next(v for k, v in by_setting.items() if name in k) for name in ("sim/sim/", "sim/none/"))
    assert {"naive", "weighted", "maj", "deepconf10", "deepconf90", "self_certainty", "borda_sc"} == with_prm
    assert without == with_prm - {"naive", "weighted"}
    none_only = load_local([str(tmp_path / "none")])
    with pytest.raises(ValueError, match="--aggregation weighted: no run of this sweep reports it"):
        write_report(none_only, tmp_path / "report", aggregation="weighted")


def test_the_whole_analysis_of_a_run_without_a_prm_draws_its_curves_and_no_verifier(tmp_path):
    """No step was scored, so there is no verifier to diagnose: the report skips it instead of failing."""
    from analysis.__main__ import main as analysis_main

    run(compose_config(["prm=none", "n=4", "dataset.num_problems=6", "logger=none"]), run_dir=tmp_path / "none")
    assert analysis_main([str(tmp_path / "none"), "--out", str(tmp_path / "figs")]) == 0
    written = {p.name for p in (tmp_path / "figs").rglob("*")}
    assert {"accuracy_vs_n.png", "compute_optimal.png"} <= written
    assert not any(name.startswith("verifier") for name in written)
