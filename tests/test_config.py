"""Config composition: every group option composes, typos fail at compose time, cross-field rules fail in validate()."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from conftest import CONF, compose_config
from tts.config import ConfigError, validate

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
