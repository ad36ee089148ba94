"""Config composition: every group option composes, typos fail at compose time, cross-field rules fail in validate()."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from conftest import CONF, REPO, compose_config
from tts.config.schema import ConfigError
from tts.config.validate import validate

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
    ("model.backend.phrasings=0", "'model.backend.phrasings'"),
    ("model/backend=hf model.path=x model.backend.batch_size=0", "'model.backend.batch_size'"),
    ("prm=skywork-7b prm/engine=vllm", "'prm.engine'"),
])
def test_validate_names_the_key(override, key):
    cfg = compose_config(override.split())
    with pytest.raises(ConfigError, match=key):
        validate(cfg)


@pytest.mark.parametrize("backend", ["hf", "vllm", "openai", "llamacpp"])
def test_real_backend_needs_a_path(backend):
    cfg = compose_config([f"model/backend={backend}", "model.backend.base_url=http://127.0.0.1:1/v1"]
                         if backend == "openai" else [f"model/backend={backend}"])
    with pytest.raises(ConfigError, match="'model.path'"):
        validate(cfg)


# -- keys the schema does not know, even when added with `+` ---------------------------------------------------------


@pytest.mark.parametrize("override, nearest", [
    ("+strategy.temprature=0.5", "strategy.temperature"),
    ("+model.backend.skil=2", "model.backend.skill"),
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
    ("prm.noise=inf", "'prm.noise'"),
    ("prm.miss_prob=1.5", "'prm.miss_prob'"),
    ("model/backend=hf model.path=x model.backend.batch_size=0", "'model.backend.batch_size'"),
    ("prm=rlhflow-8b prm/engine=vllm prm.engine.gpu_memory_utilization=1.5", "'prm.engine.gpu_memory_utilization'"),
    ("logger.init_timeout=0", "'logger.init_timeout'"),
    ("logger.table_budget=-1", "'logger.table_budget'"),
])
def test_out_of_range_or_non_finite_values_are_refused(override, key):
    with pytest.raises(ConfigError, match=key):
        validate(compose_config(override.split()))


def test_help_offers_only_real_options_never_the_schemas():
    """The schemas live at the root of Hydra's ConfigStore, not in their groups: `--help` lists what can be chosen."""
    result = subprocess.run([sys.executable, "tts/main.py", "--help"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    groups = result.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    assert "strategy: beam, best_of_n" in groups and "model:" in groups
    assert "base_" not in groups


# -- typed components built by Hydra ---------------------------------------------------------------------------------

COMPONENT_GROUPS = {"strategy": "strategy", "prm": "prm", "model/backend": "model.backend"}
COMPONENT_OPTIONS = [(g, p.stem) for g in COMPONENT_GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


@pytest.mark.parametrize("group,option", COMPONENT_OPTIONS, ids=[f"{g}={o}" for g, o in COMPONENT_OPTIONS])
def test_every_component_option_extends_its_schema_and_holds_only_what_differs(group, option):
    """Each YAML extends its dataclass (registered in Hydra's ConfigStore), names its `_target_` once, and sets only
    knobs of that dataclass whose values differ from its defaults; Hydra composes it typed."""
    import dataclasses

    import yaml

    from tts.config.keys import option_schemas

    key = COMPONENT_GROUPS[group]
    data = yaml.safe_load((CONF / group / f"{option}.yaml").read_text())
    schema = option_schemas(key)[option]
    assert data["defaults"][0] == f"/schema/{group}/{schema.__name__}@_here_"
    defaults = {f.name: f.default for f in dataclasses.fields(schema) if f.default is not dataclasses.MISSING}
    values = {k: v for k, v in data.items() if k != "defaults"}
    assert values.keys() <= {f.name for f in dataclasses.fields(schema)}
    repeated = [k for k, v in values.items() if k in defaults and defaults[k] == v and k != "name"]
    assert not repeated, f"repeats a schema default: {repeated}"
    assert "_target_" in values and defaults.get("_target_", "???") == "???", "the YAML names the class, once"
    overrides = {"model/backend": ["model.path=x", "model.backend.base_url=http://127.0.0.1:1/v1"] * (option == "openai")
                 + ["model.path=x"] * (option in ("hf", "vllm")) + ["model.path=x.gguf"] * (option == "llamacpp")
                 }.get(group, [])
    cfg = compose_config([f"{group}={option}", "n=8", *overrides])
    assert OmegaConf.get_type(OmegaConf.select(cfg, key)) is schema  # typed while Hydra composes
    run = validate(cfg)
    typed = run.model.backend if group == "model/backend" else getattr(run, group)
    assert type(typed) is schema and typed._target_ == data["_target_"]


def test_a_knob_of_another_strategy_is_refused_naming_where_it_belongs():
    with pytest.raises(ConfigError) as error:
        validate(compose_config(["strategy=best_of_n", "+strategy.beam_width=2"]))
    message = str(error.value)
    assert message.startswith("config key 'strategy.beam_width': not a knob of BestOfNConfig")
    assert "strategy=beam,dvts,lookahead" in message and "\n" not in message


def test_each_strategy_has_only_its_own_knobs():
    """No union config: a knob of one strategy is not accepted by another (each dataclass declares its own)."""
    import dataclasses

    from tts.config.keys import option_schemas

    def knobs_of(group):
        return {o: {f.name for f in dataclasses.fields(s)} for o, s in option_schemas(group).items()}

    knobs = knobs_of("strategy")
    assert "beam_width" in knobs["beam"] and "beam_width" not in knobs["best_of_n"]
    assert "lookahead" in knobs["lookahead"] and "lookahead" not in knobs["beam"]
    assert "review_prompt" in knobs["filter_vote"] and "review_prompt" not in knobs["revisions"]
    sim, hf = knobs_of("model.backend")["sim"], knobs_of("model.backend")["hf"]
    assert "skill" in sim and "skill" not in hf and "batch_size" in hf and "batch_size" not in sim


def test_a_target_that_takes_no_typed_config_is_refused():
    with pytest.raises(ConfigError, match="config key 'strategy._target_'"):
        validate(compose_config(["strategy._target_=tts.search.base.make_request"]))
    with pytest.raises(ConfigError, match="config key 'strategy._target_': cannot import"):
        validate(compose_config(["strategy._target_=tts.search.no_such.Strategy"]))


def test_a_wrong_strategy_knob_on_the_command_line_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "tts/main.py"), "strategy.beam_width=2", "logger=none"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "config key 'strategy.beam_width': not a knob of BestOfNConfig" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_prompt_is_defined_once_and_named_by_every_model():
    prompts = {p.stem for p in (CONF / "prompt").glob("*.yaml")}
    for path in sorted((CONF / "model").glob("*.yaml")):
        text = path.read_text()
        assert "/prompt@prompt:" in text and "system:" not in text, f"{path.name} must name a prompt, not copy one"
        cfg = compose_config([f"model={path.stem}"])
        assert cfg.model.prompt.name in prompts and cfg.model.prompt.system


@pytest.mark.parametrize("override, expected", [
    ("model.backend=hf", "config key 'model.backend': a config group; choose its option with model/backend=hf"),
    ("model.sim.skill=2", "config key 'model.sim.skill': moved to 'model.backend.skill'"),
    ("prm.sim.noise=0.5", "config key 'prm.sim.noise': moved to 'prm.noise'"),
    ("model.system_prompt=x", "config key 'model.system_prompt': moved to 'model.prompt.system'"),
    ("model.gpu_memory_utilization=0.9", "config key 'model.gpu_memory_utilization': moved to "
                                         "'model.backend.gpu_memory_utilization'"),
    ("prm.family=rlhflow", "config key 'prm.family': moved: each PRM option names its family's class"),
    ("prm.backend=vllm", "config key 'prm.backend': moved: choose the engine with prm/engine=vllm"),
    ("model/backend=tpu", "config key 'model/backend': 'tpu' is not an option; choose one of hf, llamacpp, openai, sim, vllm"),
])
def test_keys_of_the_old_layout_say_where_they_went(override, expected):
    from tts.config.validate import check_overrides

    assert check_overrides([override]).startswith(expected)


def test_a_group_chosen_into_a_package_is_an_option_not_a_key():
    from tts.config.validate import check_overrides

    assert check_overrides(["prompt@model.prompt=none"]) is None
    assert "'nothing' is not an option" in check_overrides(["prompt@model.prompt=nothing"])
    assert validate(compose_config(["prompt@model.prompt=none"])).model.prompt.system == ""


def test_an_unimportable_target_is_one_line():
    for target, missing in (("tts.search.nope.X", "'nope'"), ("tts.search.beam.Nope", "'Nope'")):
        with pytest.raises(ConfigError) as error:
            validate(compose_config([f"strategy._target_={target}"]))
        assert str(error.value).startswith(f"config key 'strategy._target_': cannot import '{target}'")
        assert missing in str(error.value) and "\n" not in str(error.value)
