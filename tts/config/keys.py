"""Every config key must be one the schema knows, and every number must be finite.

Hydra's `+key=value` adds a key even where the schema has none, so `+strategy.temprature=0.5` (the spelling Hydra's
own hint suggests after a typo) would run with the typo stored and `temperature` unchanged. These checks close that
gap: a key that is not in the dataclass schemas of `tts.config.schema` is an error naming the nearest valid key. Keys under a
dict-typed field (`dataset.columns`) are the user's to choose and stay allowed.

`check_overrides` applies the same rules to the command line before Hydra composes anything (so nothing is created
for a typo, and a schema entry such as `base_strategy` is never accepted as a group option);
`check_known_keys` / `check_finite` check a composed config (tests and notebooks compose without the command line).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from pathlib import Path
from typing import Any, Iterable, Optional

from omegaconf import DictConfig, ListConfig

CONF = Path(__file__).resolve().parents[2] / "conf"


def _schema() -> type:
    from tts.config.schema import Config

    return Config


def _field_types(schema: type) -> dict[str, Any]:
    hints = typing.get_type_hints(schema)
    return {f.name: hints[f.name] for f in dataclasses.fields(schema)}


def _is_open(annotation: Any) -> bool:
    """A dict-typed field: its keys are user data (`dataset.columns`), not schema."""
    annotation = _strip_optional(annotation)
    return annotation is dict or typing.get_origin(annotation) is dict or annotation is Any


def _strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def schema_keys(schema: Optional[type] = None, prefix: str = "") -> list[str]:
    """Every dotted key the schema defines (`strategy.temperature`, `model.sim.skill`, ...)."""
    keys = []
    for name, annotation in _field_types(schema or _schema()).items():
        annotation = _strip_optional(annotation)
        keys.append(prefix + name)
        if dataclasses.is_dataclass(annotation):
            keys.extend(schema_keys(annotation, f"{prefix}{name}."))
    return keys


def unknown_key_message(key: str) -> str:
    """`config key 'x': not a known key ...` with the nearest valid key, if one is close."""
    near = difflib.get_close_matches(key, schema_keys(), n=1, cutoff=0.6)
    if not near:
        leaf = key.rsplit(".", 1)[-1]
        candidates = [k for k in schema_keys() if k.startswith(key.rsplit(".", 1)[0] + ".")] if "." in key else []
        near = difflib.get_close_matches(key.rsplit(".", 1)[0] + "." + leaf, candidates, n=1, cutoff=0.0)
    hint = f"; did you mean '{near[0]}'?" if near else ""
    from tts.config.redaction import is_secret_key

    if is_secret_key(key):  # a credential on the command line would be used by nothing: say where credentials go
        return (f"config key '{key}': not a known key; credentials are read from the environment (WANDB_API_KEY, "
                "HF_TOKEN, OPENAI_API_KEY or the variable model.api_key_env names), never from the command line")
    return f"config key '{key}': not a known key{hint} (`+` cannot add keys the schema of tts/config/schema.py does not have)"


def key_is_known(key: str) -> bool:
    """Whether a dotted key names a schema field or lies under a dict-typed one."""
    schema: Any = _schema()
    for part in key.split("."):
        if not dataclasses.is_dataclass(schema):
            return False
        fields = _field_types(schema)
        if part not in fields:
            return False
        annotation = _strip_optional(fields[part])
        if _is_open(annotation):
            return True
        schema = annotation
    return True


def check_known_keys(cfg: DictConfig) -> None:
    """Raise ConfigError for the first key of `cfg` that the schema does not define."""
    from tts.config.schema import ConfigError

    for key in _keys(cfg, _schema(), ""):
        raise ConfigError(unknown_key_message(key))


def _keys(node: DictConfig, schema: type, prefix: str) -> Iterable[str]:
    fields = _field_types(schema)
    for name in node.keys():
        key = f"{prefix}{name}"
        if name not in fields:
            yield key
            continue
        annotation = _strip_optional(fields[name])
        child = node._get_node(name)
        if dataclasses.is_dataclass(annotation) and isinstance(child, DictConfig) and not child._is_missing():
            yield from _keys(child, annotation, key + ".")


def check_finite(cfg: DictConfig, prefix: str = "") -> None:
    """Raise ConfigError for a NaN or infinite number anywhere in the config: no rule can hold for them."""
    from tts.config.schema import ConfigError

    items = cfg.items_ex(resolve=False) if isinstance(cfg, DictConfig) else enumerate(cfg)
    for name, value in items:
        key = f"{prefix}{name}"
        if isinstance(value, (DictConfig, ListConfig)):
            check_finite(value, key + ".")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config key '{key}': must be a finite number, got {value}")


# -- the command line, before Hydra composes anything -------------------------------------------------------------


def group_options(group: str) -> list[str]:
    """The options a user may choose for a config group: its YAML files (schema entries are not options)."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def check_overrides(overrides: list[str]) -> Optional[str]:
    """The one-line error for the first override naming an unknown key or group option, else None.

    Overrides Hydra cannot parse, `hydra.*` keys and deletions are left to Hydra.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # noqa: BLE001 - Hydra reports its own syntax errors
        return None
    groups = {p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra"}
    for override in parsed:
        key = override.key_or_group
        if key.split(".")[0].split("/")[0] == "hydra" or override.is_delete():
            continue
        if key in groups and override.package is None:
            message = _check_option(key, override)
            if message:
                return message
        elif not key_is_known(key):
            return unknown_key_message(key)
    return None


def _check_option(group: str, override) -> Optional[str]:
    if override.is_sweep_override():
        try:
            values = list(override.sweep_string_iterator())
        except Exception:  # noqa: BLE001 - a glob or range over options: Hydra expands and checks it
            return None
    else:
        values = [override.get_value_element_as_str()]
    options = group_options(group)
    for value in values:
        if value not in options:
            what = "is a schema, not an option" if value.startswith("base_") else "is not an option"
            return (f"config key '{group}': '{value}' {what}; choose one of {', '.join(options)} "
                    f"(the files in conf/{group}/)")
    return None
