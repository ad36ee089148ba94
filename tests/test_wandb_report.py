"""`python -m analysis RUNS --out figs --wandb` and the sweep around it: an analysis run holding every figure, a W&B
Report definition, the sweep's progress lines; no secret in any written byte and nothing written into HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.wandb_report import build_report, report_spec
from wandb_offline import history, inspect, offline_runs, run_info

REPO = Path(__file__).resolve().parent.parent
ENV_SECRET = "env-secret-0f9e8d7c6b5a"
CLI_SECRET = "cli-secret-1a2b3c4d5e6f"


def test_report_objects_name_the_panels_without_a_server():
    import wandb_workspaces.reports.v2 as wr

    spec = report_spec("tts", "team", ["sim/sim/synthetic"], ["figures/bins_oracle", "figures/bins_model",
                                                             "figures/compute_optimal", "figures/accuracy_vs_n"])
    report = build_report(json.loads(json.dumps(spec)))  # the definition survives being written as JSON
    assert isinstance(report, wr.Report) and report.project == "tts" and report.entity == "team"
    grids = [b for b in report.blocks if isinstance(b, wr.PanelGrid)]
    headings = [b.text for b in report.blocks if isinstance(b, wr.H1)]
    assert headings == ["Accuracy vs N", "Difficulty bins", "Compute-optimal curve", "Runs"]
    accuracy, bins, optimal, runs = grids
    assert all(isinstance(p, wr.ScatterPlot) for p in accuracy.panels)
    assert {(p.x.name, p.y.name) for p in accuracy.panels} >= {("n", "acc_at_n/weighted"), ("n", "acc_at_n/maj")}
    assert bins.panels[0].media_keys == ["figures/bins_oracle", "figures/bins_model"]
    assert optimal.panels[0].media_keys == ["figures/compute_optimal"]
    assert isinstance(runs.panels[0], wr.RunComparer)
    # the runs table shows the sweep's search runs of that group, the media panels the analysis run
    assert "Metric('JobType') == 'search'" in runs.runsets[0].filters and "sim/sim/synthetic" in runs.runsets[0].filters
    assert "Metric('JobType') == 'analysis'" in bins.runsets[0].filters
    with_verifier = build_report(report_spec("tts", "team", ["g"], ["figures/bins_oracle", "figures/verifier_oracle",
                                                                    "figures/verifier_absolute"]))
    assert [b.text for b in with_verifier.blocks if isinstance(b, wr.H1)][3] == "Verifier diagnostics"
    verifier = [b for b in with_verifier.blocks if isinstance(b, wr.PanelGrid)][3]
    assert verifier.panels[0].media_keys == ["figures/verifier_oracle", "figures/verifier_absolute"]


@pytest.mark.slow
def test_sweep_and_its_analysis_write_no_secret_and_nothing_into_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "XDG_"))}
    env.update(HOME=str(home), WANDB_API_KEY=ENV_SECRET, HF_TOKEN=ENV_SECRET + "-hf", WANDB_MODE="offline",
               PYTHONPATH=str(REPO))
    sweep = tmp_path / "multirun"
    command = [sys.executable, "tts/main.py", "-m", "n=2,4", "seed=0,100", "dataset.num_problems=4", "batch_size=2",
               "budget.max_tokens=1000", f"hydra.sweep.dir={sweep}"]
    # a credential on the command line is not a config key: refused before anything is written, without echoing it
    refused = subprocess.run([*command, f"+api_key={CLI_SECRET}", f"+logger.api_key={CLI_SECRET}-2"], cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "credentials are read from the environment" in refused.stderr
    assert not sweep.exists()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    said = refused.stdout + refused.stderr + done.stdout + done.stderr
    assert "[1/4 jobs done]" in said and "[4/4 jobs done]" in said and "left" in said  # seed 100: the reference pool

    figs = tmp_path / "figs"
    done = subprocess.run([sys.executable, "-m", "analysis", str(sweep), "--out", str(figs), "--wandb"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    said += done.stdout + done.stderr
    assert "python -m analysis.wandb_report" in done.stdout  # the one command that saves the report later

    # no secret in any byte written (files, their names, what was printed), nothing in HOME
    for secret in (ENV_SECRET, CLI_SECRET):
        assert secret not in said
        for path in tmp_path.rglob("*"):
            assert secret not in str(path)
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path
    assert not list(home.rglob("*")), "something was written into HOME"

    # the runs: settings visible, the credential redacted, in the run directory and in W&B's offline run
    run_dirs = sorted(p.parent.parent for p in sweep.rglob("results/index.jsonl") if "wandb" not in p.parts)
    assert len(run_dirs) == 4
    for run_dir in run_dirs:
        assert "max_tokens: 1000" in (run_dir / "config.yaml").read_text()
        info = run_info(inspect(offline_runs(run_dir)[0]))
        assert info["config"]["update"]["budget"]["max_tokens"] == 1000

    # the analysis run: job_type analysis, the runs' project and group, every figure as an image
    (analysis_log,) = offline_runs(figs)
    records = inspect(analysis_log)
    info = run_info(records)
    assert info["job_type"] == "analysis" and info["project"] == "tts" and info["run_group"] == "sim/sim/synthetic"
    logged = {k.split(".")[0] for row in history(records, "figures/") for k in row}
    figures = {f"figures/{p.stem}" for p in figs.glob("*.png")}
    assert figures and figures <= logged
    assert {f"tables/{p.stem}" for p in figs.glob("*.csv")} <= {k.split(".")[0] for row in history(records) for k in row}
    spec = json.loads((figs / "wandb_report.json").read_text())
    headings = [s["heading"] for s in spec["sections"]]
    assert headings == ["Accuracy vs N", "Difficulty bins", "Compute-optimal curve", "Verifier diagnostics", "Runs"]
    media = [k for s in spec["sections"] for p in s["panels"] for k in p.get("media_keys", [])]
    assert {"figures/bins_oracle", "figures/compute_optimal", "figures/verifier_absolute"} <= set(media)
