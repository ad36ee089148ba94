"""Config composition: every group option composes, typos fail at compose time, cross-field rules fail in validate()."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from conftest import CONF, REPO, compose_config
from tts.config.schema import ConfigError, validate

GROUPS = ["model", "prm", "strategy", "budget", "dataset", "logger"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


def test_defaults_are_the_simulated_world():
    cfg = compose_config()
    assert (cfg.model.name, cfg.prm.name, cfg.dataset.name, cfg.strategy.name, cfg.logger.name) == (
        "sim", "sim", "synthetic", "best_of_n", "wandb")
    assert cfg.n == 4 and cfg.seed == 0
    assert cfg.logger.mode == "offline"
    assert cfg.dataset.num_problems == 500
    validate(cfg)


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_group_option_composes(group, option):
    overrides = [f"{group}={option}"]
    if group == "dataset" and option == "jsonl":
        overrides.append("dataset.path=problems.jsonl")
    cfg = compose_config(overrides)
    assert cfg[group].name == option, f"{group}/{option}.yaml must set name: {option} (the name users see)"


def test_misspelt_key_fails_at_compose_time():
    with pytest.raises(ConfigCompositionException) as error:
        compose_config(["strategy.temprature=0.5"])
    assert "temprature" in str(error.value.__cause__ or error.value)


def test_misspelt_top_level_key_fails():
    with pytest.raises(ConfigCompositionException, match="num_samples"):
        compose_config(["num_samples=4"])


def test_unknown_group_option_fails():
    with pytest.raises(ConfigCompositionException, match="no_such_strategy"):
        compose_config(["strategy=no_such_strategy"])


def test_non_integer_n_fails_at_compose_time():
    with pytest.raises(ConfigCompositionException) as error:
        compose_config(["n=2.5"])
    assert isinstance(error.value.__cause__, (ValidationError, ConfigKeyError)) or "n" in str(error.value)


@pytest.mark.parametrize("override,key", [
    ("n=0", "'n'"),
    ("n=-4", "'n'"),
    ("seed=-1", "'seed'"),
    ("scoring.reduction=median", "'scoring.reduction'"),
    ("strategy.top_p=0", "'strategy.top_p'"),
    ("budget.max_tokens=0", "'budget.max_tokens'"),
    ("dataset.num_problems=0", "'dataset.num_problems'"),
    ("dataset.end=0", "'dataset.end'"),
    ("logger.mode=sometimes", "'logger.mode'"),
    ("model.backend=tpu", "'model.backend'"),
])
def test_validate_names_the_key(override, key):
    cfg = compose_config([override])
    with pytest.raises(ConfigError, match=key):
        validate(cfg)


def test_real_backend_needs_a_path():
    cfg = compose_config(["model.backend=hf"])
    with pytest.raises(ConfigError, match="'model.path'"):
        validate(cfg)


# -- keys the schema does not know, even when added with `+` ---------------------------------------------------------


@pytest.mark.parametrize("override, nearest", [
    ("+strategy.temprature=0.5", "strategy.temperature"),
    ("+model.sim.skil=2", "model.sim.skill"),
    ("+scoring.subset_draw=5", "scoring.subset_draws"),
])
def test_keys_added_with_plus_are_refused_naming_the_nearest_key(override, nearest):
    cfg = compose_config([override])
    with pytest.raises(ConfigError, match=f"did you mean '{nearest}'"):
        validate(cfg)


def test_keys_a_group_option_adds_stay_allowed():
    cfg = compose_config(["dataset=jsonl", "dataset.path=x.jsonl", "+dataset.columns={problem: question}",
                          "+dataset.columns.answer=final"])
    validate(cfg)
    assert dict(cfg.dataset.columns) == {"problem": "question", "answer": "final"}


@pytest.mark.parametrize("args, expected", [
    (["+strategy.temprature=0.5"], "config key 'strategy.temprature': not a known key; did you mean "
                                   "'strategy.temperature'?"),
    (["strategy.temprature=0.5"], "did you mean 'strategy.temperature'?"),
    (["-m", "n=4", "+strategy.temprature=0.5,0.7"], "did you mean 'strategy.temperature'?"),
    (["strategy=base_strategy"], "config key 'strategy': 'base_strategy' is a schema, not an option"),
    (["-m", "strategy=beam,base_strategy"], "'base_strategy' is a schema, not an option"),
])
def test_command_line_typos_are_one_line_before_anything_runs(tmp_path, args, expected):
    result = subprocess.run([sys.executable, str(REPO / "tts/main.py"), *args, "logger=none"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("Error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert expected in result.stderr
    assert list(tmp_path.iterdir()) == [], "nothing is created for a typo"


def test_schema_entries_are_not_listed_as_options():
    result = subprocess.run([sys.executable, "tts/main.py", "strategy=nope"], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "beam, best_of_n" in result.stderr and "base_" not in result.stderr


# -- every value in range and finite, before any generation ----------------------------------------------------------


@pytest.mark.parametrize("override, key", [
    ("seed=4294967296", "'seed'"),
    ("dataset.generator_seed=-1", "'dataset.generator_seed'"),
    ("scoring.subset_draws=0", "'scoring.subset_draws'"),
    ("scoring.subset_draws=-3", "'scoring.subset_draws'"),
    ("scoring.grading_timeout=inf", "'scoring.grading_timeout'"),
    ("scoring.grading_timeout=1e12", "'scoring.grading_timeout'"),
    ("strategy.temperature=nan", "'strategy.temperature'"),
    ("prm.sim.noise=inf", "'prm.sim.noise'"),
    ("model.batch_size=0", "'model.batch_size'"),
    ("prm.gpu_memory_utilization=1.5", "'prm.gpu_memory_utilization'"),
    ("logger.init_timeout=0", "'logger.init_timeout'"),
])
def test_out_of_range_or_non_finite_values_are_refused(override, key):
    with pytest.raises(ConfigError, match=key):
        validate(compose_config([override]))


def test_help_offers_only_real_options_never_the_schemas():
    """The schemas live at the root of Hydra's ConfigStore, not in their groups: `--help` lists what can be chosen."""
    result = subprocess.run([sys.executable, "tts/main.py", "--help"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    groups = result.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    assert "strategy: beam, best_of_n" in groups and "model:" in groups
    assert "base_" not in groups
