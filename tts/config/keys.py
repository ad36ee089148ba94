"""Which config keys exist: the run's schema (`tts.config.schema`) plus, under each component, the fields of the config
its `_target_` takes.

Hydra's `+key=value` adds a key even where the schema has none, so `+strategy.temprature=0.5` (the spelling Hydra's
own hint suggests after a typo) would run with the typo stored and `temperature` unchanged; and a component's node is
untyped until the entry types it. `tts.config.validate` uses these functions to name the first unknown key with the
nearest valid one. Keys under a dict-typed field (`dataset.columns`) are the user's to choose and stay allowed.

The component classes are found from the YAML files under conf/ (their `_target_`): the config groups are the only
registry.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional

import yaml

from tts.config.schema import COMPONENTS, ComponentConfig, Config, ConfigError

CONF = Path(__file__).resolve().parents[2] / "conf"


def strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def field_types(schema: type) -> dict[str, Any]:
    hints = typing.get_type_hints(schema)
    return {f.name: strip_optional(hints[f.name]) for f in dataclasses.fields(schema)}


def is_open(annotation: Any) -> bool:
    """A dict-typed field: its keys are user data (`dataset.columns`), not schema."""
    return annotation is dict or typing.get_origin(annotation) is dict


# -- components -----------------------------------------------------------------------------------------------------


def config_class(target: str, key: str) -> type[ComponentConfig]:
    """The config dataclass the component `target` takes: the annotation of a class's `config` attribute, else of
    its (or its `__init__`'s) `config` parameter. Raises ConfigError naming `<key>._target_` when the target cannot
    be found or takes none."""
    base = COMPONENTS[key]
    try:
        built = locate(target)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"config key '{key}._target_': cannot import {target!r} ({error})") from None
    try:
        # a class declares it as an attribute (`config: BeamConfig`) or takes it in __init__; a function takes it
        hints = typing.get_type_hints(built) if inspect.isclass(built) else {}
        if "config" not in hints:
            hints = typing.get_type_hints(built.__init__ if inspect.isclass(built) else built)
    except (NameError, TypeError):
        hints = {}
    schema = hints.get("config")
    if not (isinstance(schema, type) and issubclass(schema, base)):
        raise ConfigError(
            f"config key '{key}._target_': {target!r} must declare `config: <a {base.__name__} subclass>` "
            f"(a class attribute, or its first argument)"
        )
    return schema


def locate(target: str) -> Any:
    """The object a dotted path names (`tts.search.beam.BeamSearch`), as Hydra's `_target_` resolves it, without the
    error Hydra's own lookup logs: the longest importable module prefix, then attributes. A module that exists but
    fails to import (a missing dependency) raises its own error."""
    parts = target.split(".")
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        try:
            found = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name is not None and (name == error.name or name.startswith(error.name + ".")):
                continue  # this prefix is not a module: try a shorter one
            raise
        for attribute in parts[i:]:
            found = getattr(found, attribute)  # AttributeError: the module has no such name
        return found
    raise ImportError(f"no module named {parts[0]!r}")


@functools.cache
def option_targets(group: str) -> dict[str, str]:
    """The `_target_` of each YAML option of a component group (`strategy`, `prm`, `model/backend`), by option."""
    targets = {}
    for path in sorted((CONF / group).glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if isinstance(data, dict) and isinstance(data.get("_target_"), str):
            targets[path.stem] = data["_target_"]
    return targets


def option_override(key: str, option: str) -> str:
    """How a component's option is chosen on the command line: `strategy=beam`, `model/backend=hf`."""
    return f"{component_group_dir(key)}={option}"


def component_group_dir(key: str) -> str:
    """conf/ folder of a component's options: `model.backend` -> `model/backend`."""
    return key.replace(".", "/")


@functools.cache
def component_knobs(key: str) -> dict[str, frozenset[str]]:
    """Every option of the component at `key`, with the knobs its config takes (dotted, nested ones included)."""
    return {
        option: frozenset(keys_of(config_class(target, key)))
        for option, target in option_targets(component_group_dir(key)).items()
    }


# -- the schema's keys ----------------------------------------------------------------------------------------------


def keys_of(schema: type, prefix: str = "") -> list[str]:
    """Every dotted key a dataclass defines (nested dataclasses included)."""
    keys = []
    for name, annotation in field_types(schema).items():
        keys.append(prefix + name)
        if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
            keys.extend(keys_of(annotation, f"{prefix}{name}."))
    return keys


@functools.lru_cache(maxsize=1)
def schema_keys() -> frozenset[str]:
    """Every key any configuration can have: the run's schema and the knobs of every component option under conf/."""
    keys = set(keys_of(Config))
    for key in COMPONENTS:
        for knobs in component_knobs(key).values():
            keys.update(f"{key}.{knob}" for knob in knobs)
    return frozenset(keys)


def key_is_known(key: str) -> bool:
    """Whether a dotted key names a field of the schema or of some component option, or lies under a dict-typed
    field. Which option of a component is chosen is not known here, so a knob of any of them passes; the composed
    config is checked against the chosen one (`unknown_keys`)."""
    if key in schema_keys():
        return True
    schema: Any = Config
    for part in key.split("."):
        if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
            return False
        fields = field_types(schema)
        if part not in fields:
            return False
        if is_open(fields[part]):
            return True
        schema = fields[part]
    return False


def unknown_keys(cfg: Any, schema: type = Config, prefix: str = "") -> Iterable[tuple[str, Optional[type]]]:
    """(key, the config class it was looked up in) for each key of a composed config that its schema lacks; under a
    component, the schema is the config its `_target_` takes."""
    from omegaconf import DictConfig

    fields = field_types(schema)
    for name in cfg.keys():
        key = f"{prefix}{name}"
        if name not in fields:
            yield key, schema
            continue
        child = cfg._get_node(name)
        if not isinstance(child, DictConfig) or child._is_missing():
            continue
        if key in COMPONENTS:
            target = child.get("_target_")
            if not isinstance(target, str):
                raise ConfigError(
                    f"config key '{key}._target_': missing; the option's YAML must name the class Hydra builds"
                )
            yield from unknown_keys(child, config_class(target, key), key + ".")
        elif dataclasses.is_dataclass(fields[name]):
            yield from unknown_keys(child, fields[name], key + ".")


def nearest_key(key: str, candidates: Iterable[str], fallback: bool = True) -> Optional[str]:
    """The candidate closest to `key`; with `fallback`, the closest sibling under the same parent when none is
    close (a typo in a leaf of a small group)."""
    import difflib

    candidates = sorted(candidates)
    parent = key.rsplit(".", 1)[0] + "." if "." in key else ""
    if parent and all(c.startswith(parent) for c in candidates):  # siblings: compare the leaves, not the shared prefix
        leaves = {c[len(parent) :]: c for c in candidates}
        near = difflib.get_close_matches(key[len(parent) :], list(leaves), n=1, cutoff=0.6)
        return leaves[near[0]] if near else None
    near = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if not near and fallback and "." in key:
        parent = key.rsplit(".", 1)[0] + "."
        near = difflib.get_close_matches(key, [k for k in candidates if k.startswith(parent)], n=1, cutoff=0.0)
    return near[0] if near else None
