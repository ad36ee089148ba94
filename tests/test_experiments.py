"""Named sweeps in conf/experiment/ (`python tts/main.py -m +experiment=paper`): their sweep axes, the jobs they make,
that every job is valid, where their runs land, and multirun.sh (the reference pool, then the sweep)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from conftest import CONF, REPO
from tts.cli.sweep import invalid_combinations, sweep_combinations, sweep_overrides
from tts.store.writer import RunDirectory

STRATEGIES = "best_of_n,beam,dvts,lookahead"
EXPERIMENTS = {  # name -> (sweep params, number of jobs)
    "paper": ({"strategy": STRATEGIES, "n": "4,16,64,256", "seed": "0,1,2,3,4"}, 80),
    "paper_pool": ({"strategy": "best_of_n", "n": "256", "seed": "100"}, 1),
    "quick": ({"strategy": STRATEGIES, "n": "4,16", "seed": "0,1", "dataset.num_problems": "100"}, 16),
    "quick_pool": ({"strategy": "best_of_n", "n": "16", "seed": "100", "dataset.num_problems": "100"}, 1),
}


def _run_dirs(root: Path) -> list[str]:
    return sorted(str(p.parent.relative_to(root)) for p in root.rglob("metrics.json") if "wandb" not in p.parts)


def test_every_experiment_file_is_tested():
    assert {p.stem for p in (CONF / "experiment").glob("*.yaml")} == set(EXPERIMENTS)


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_composes_to_its_sweep_and_every_job_is_valid(name):
    params, jobs = EXPERIMENTS[name]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="config", overrides=[f"+experiment={name}"], return_hydra_config=True)
            assert {k: str(v) for k, v in cfg.hydra.sweeper.params.items()} == params
            assert "experiment" in cfg.hydra.job.config.override_dirname.exclude_keys  # its params name the dirs
            combinations = sweep_combinations(sweep_overrides(cfg))
            assert len(combinations) == jobs and combinations[0][-1] == f"+experiment={name}"
            assert invalid_combinations(cfg) == []  # each job composes and passes validation (n % beam_width ...)
    finally:
        GlobalHydra.instance().clear()
    # the command line (after the experiment) wins over its values, as for the basic sweeper
    smaller = sweep_combinations(sweep_overrides(cfg) + ["n=4", "seed=0,1"])
    assert len(smaller) == 2 * len(params["strategy"].split(","))
    assert smaller[-1] == [f"strategy={params['strategy'].split(',')[-1]}", "n=4", "seed=1",
                           *(["dataset.num_problems=100"] if "dataset.num_problems" in params else []),
                           f"+experiment={name}"]


def test_the_command_line_check_accepts_experiments_and_names_the_options():
    from tts.config.validate import check_overrides

    assert check_overrides(["+experiment=paper", "logger=none"]) is None
    message = check_overrides(["+experiment=papr"])
    assert message is not None and "paper_pool" in message and "conf/experiment/" in message


def test_quick_experiment_runs_in_a_fresh_directory(tmp_path):
    """The documented command, on 5 problems: 16 jobs in the sweep directory's usual layout, counted as 16."""
    result = subprocess.run(
        [sys.executable, str(REPO / "tts" / "main.py"), "-m", "+experiment=quick", "logger=none",
         "dataset.num_problems=5"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert _run_dirs(tmp_path / "multirun") == sorted(
        f"synthetic/sim_sim/{s}/n{n}_seed{seed}/dataset.num_problems=5"
        for s in STRATEGIES.split(",") for n in (4, 16) for seed in (0, 1))
    assert "[16/16 jobs done]" in result.stdout
    for run_dir in (tmp_path / "multirun").rglob("metrics.json"):
        assert len(RunDirectory(run_dir.parent).summaries()) == 5


def test_multirun_sh_runs_the_pool_then_the_sweep_with_the_same_arguments(tmp_path):
    """EXPERIMENT=quick ./multirun.sh, sharded and on the joblib launcher (arguments reach both sweeps), then merged."""
    sweep = tmp_path / "sweep"
    env = dict(os.environ, EXPERIMENT="quick", PYTHON=sys.executable)
    result = subprocess.run(
        ["./multirun.sh", "strategy=best_of_n", "dataset.num_problems=6", "dataset.num_shards=2", "dataset.shard=0,1",
         "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "logger=none", f"hydra.sweep.dir={sweep}"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Joblib" in result.stdout + result.stderr  # really the joblib launcher
    # the pool (n=16, seed 100) and the sweep (strategy=best_of_n leaves n x seed = 4 runs), each in 2 shards
    assert len(_run_dirs(sweep)) == 10
    merged = subprocess.run([sys.executable, "-m", "tts.store.merge", "--sweep", str(sweep), "--out",
                             str(tmp_path / "merged")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert merged.returncode == 0, merged.stderr
    assert _run_dirs(tmp_path / "merged") == sorted(
        f"synthetic/sim_sim/best_of_n/n{n}_seed{seed}/dataset.num_problems=6"
        for n, seed in ((4, 0), (4, 1), (16, 0), (16, 1), (16, 100)))
