"""Strategy traits: declared on the config class, recorded in the run's config, read by analysis instead of names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import compose_config
from tts.config.keys import option_schemas
from tts.config.schema import TRAITS, StrategyConfig
from tts.pipeline import run

NONE = dict.fromkeys(TRAITS, False)


@pytest.fixture(scope="module")
def best_of_n_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("traits") / "best_of_n"
    run(compose_config(["strategy=best_of_n", "n=4", "dataset.num_problems=3", "logger=none"]), run_dir=run_dir)
    return run_dir


def _as(source: Path, target: Path, name: str, traits: dict | None) -> Path:
    """A copy of a run directory whose config names another strategy, with these traits (None: no `traits` key, as
    a run directory written before they were recorded)."""
    shutil.copytree(source, target)
    config = yaml.safe_load((target / "config.yaml").read_text())
    config["strategy"]["name"] = name
    config.pop("traits")
    if traits is not None:
        config["traits"] = traits
    (target / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return target


def test_every_strategy_option_declares_its_traits_on_its_config_class():
    schemas = option_schemas("strategy")
    assert all(issubclass(schema, StrategyConfig) for schema in schemas.values())
    declared = {name: {t for t, value in schema.traits().items() if value} for name, schema in schemas.items()}
    assert declared["best_of_n"] == {"independent_samples"}
    assert declared["beam"] == {"needs_prm"} and declared["particle_filtering"] == {"needs_prm"}
    assert declared["revisions"] == declared["filter_vote"] == {"sequential"}
    assert declared["deepconf"] == declared["esc"] == {"adaptive"}


def test_the_run_records_its_traits_and_they_do_not_change_its_identity(best_of_n_run):
    from analysis.runs import load_local

    config = yaml.safe_load((best_of_n_run / "config.yaml").read_text())
    assert config["traits"] == {**NONE, "independent_samples": True}
    assert "traits" not in json.loads((best_of_n_run / "fingerprint.json").read_text())  # older dirs still resume
    runs = load_local(best_of_n_run).runs
    assert runs[list(TRAITS)].iloc[0].to_dict() == config["traits"]


def test_subset_points_follow_the_recorded_trait_not_the_name(best_of_n_run, tmp_path):
    """A strategy analysis has never heard of gets K < n points because its run says its samples are independent;
    one that says nothing of it gets its own budget only; a run without `traits` gets its strategy's schema's."""
    from analysis.runs import accuracy_table, load_local, long_points

    dirs = [
        _as(best_of_n_run, tmp_path / "sampler", "my_sampler", {**NONE, "independent_samples": True}),
        _as(best_of_n_run, tmp_path / "searcher", "my_searcher", NONE),
        _as(best_of_n_run, tmp_path / "legacy", "best_of_n", None),
    ]
    table = accuracy_table(long_points(load_local(dirs).problems))
    budgets = table.groupby("strategy").budget.apply(set).to_dict()
    assert budgets == {"my_sampler": {1, 2, 4}, "my_searcher": {4}, "best_of_n": {1, 2, 4}}


def test_the_reference_pool_is_the_runs_of_independent_samples():
    from analysis.difficulty import assign_roles

    runs = pd.DataFrame({"strategy": ["my_sampler", "best_of_n", "my_sampler"], "variant": ["a", "b", "a"],
                         "n": [8, 8, 8], "seed": [100, 100, 0], "independent_samples": [True, False, True]})
    assert list(assign_roles(runs)) == ["reference", "candidate", "candidate"]
