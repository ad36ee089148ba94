"""The PRM's engine is a nested config group (`prm/engine=hf|vllm`, conf/prm/engine/): every real family composes
with either engine, each engine has only its own knobs, and what it needs to run (its package) is its own."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from conftest import CONF, compose_config, typed_config
from tts.config.keys import option_schemas
from tts.config.schema import ConfigError, PRMEngineConfig
from tts.config.validate import check_overrides, validate
from tts.prms.family import PRMFamilyConfig
from tts.prms.hf_engine import HFPRMEngineConfig
from tts.prms.vllm_engine import VLLMPRMEngineConfig

ENGINES = {"hf": HFPRMEngineConfig, "vllm": VLLMPRMEngineConfig}
FAMILIES = ["math-shepherd", "qwen2.5-math-prm-7b", "rlhflow-8b", "skywork-1.5b", "skywork-7b"]


@pytest.mark.parametrize("engine", list(ENGINES))
def test_each_engine_option_extends_its_schema_and_names_its_target_once(engine):
    data = yaml.safe_load((CONF / "prm" / "engine" / f"{engine}.yaml").read_text())
    schema = option_schemas("prm.engine")[engine]
    assert schema is ENGINES[engine] and issubclass(schema, PRMEngineConfig)
    assert data["defaults"] == [f"/schema/prm/engine/{schema.__name__}@_here_", "_self_"]
    assert set(data) == {"defaults", "_target_", "name"}  # every knob's value is the dataclass default


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("engine", list(ENGINES))
def test_every_family_composes_with_either_engine_typed(family, engine):
    overrides = [f"prm={family}", f"prm/engine={engine}"]
    if family.startswith("skywork") and engine == "vllm":
        with pytest.raises(ConfigError, match=r"config key 'prm\.engine': the skywork PRM runs on hf only"):
            validate(compose_config(overrides))
        return
    run = typed_config(overrides)
    assert isinstance(run.prm, PRMFamilyConfig) and type(run.prm.engine) is ENGINES[engine]
    assert run.prm.engine.name == engine
    assert typed_config([f"prm={family}"]).prm.engine.name == "hf"  # the default engine


def test_an_engine_has_only_its_own_knobs():
    hf, vllm = ({f.name for f in dataclasses.fields(schema)} for schema in ENGINES.values())
    assert {"device", "batch_tokens", "enable_prefix_caching"} <= hf
    assert {"gpu_memory_utilization", "max_length", "enforce_eager", "block_size", "enable_prefix_caching"} <= vllm
    assert "gpu_memory_utilization" not in hf and "batch_tokens" not in vllm
    error = validate_error(["prm=rlhflow-8b", "prm/engine=vllm", "+prm.engine.batch_tokens=4096"])
    assert error.startswith("config key 'prm.engine.batch_tokens': not a knob of VLLMPRMEngineConfig (prm.engine)")
    assert "it is a knob of prm/engine=hf" in error


def test_each_engine_needs_its_own_package():
    """Preflight asks every component of the run (tts.config.schema.components) what it imports: the engine, by its
    own key, not the family."""
    from tts.config.schema import components

    def needs(overrides):
        return {key: c.needs() for key, c in components(typed_config(overrides)) if c.needs()}

    assert needs(["prm=rlhflow-8b"]) == {"prm.engine": ("transformers", "tts[hf]")}
    assert needs(["prm=rlhflow-8b", "prm/engine=vllm"]) == {"prm.engine": ("vllm", "tts[vllm]")}
    assert needs([]) == {}  # prm=sim has no engine, the sim policy imports nothing


def test_engine_rules_name_the_engine_key():
    assert validate_error(["prm=rlhflow-8b", "prm.engine.batch_tokens=0"]).startswith(
        "config key 'prm.engine.batch_tokens': must be >= 1"
    )
    assert validate_error(["prm=math-shepherd", "prm/engine=vllm", "prm.engine.gpu_memory_utilization=0"]).startswith(
        "config key 'prm.engine.gpu_memory_utilization': must be a share of GPU memory"
    )


def test_the_old_backend_key_says_where_the_engine_went():
    assert check_overrides(["prm.backend=vllm"]) == (
        "config key 'prm.backend': moved: choose the engine with prm/engine=vllm (or hf); its knobs are under "
        "prm.engine"
    )
    assert check_overrides(["prm.engine=vllm"]).startswith(
        "config key 'prm.engine': a config group; choose its option with prm/engine=vllm (one of hf, vllm)"
    )


def validate_error(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as error:
        validate(compose_config(overrides))
    return str(error.value)
