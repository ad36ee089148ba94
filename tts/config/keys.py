"""Which config keys exist, for the checks Hydra cannot make and for messages that name the nearest valid key.

Hydra types every node while it composes (each option's YAML extends its dataclass, `tts.config.schema`), so a
misspelt knob or a wrong type fails there. Two things remain: Hydra's `+key=value` adds a key even to a typed node, so
`+strategy.temprature=0.5` (the spelling Hydra's own hint suggests after a typo) would run with the typo stored and
`temperature` unchanged (`added_keys` finds it); and a message that names the knob the user meant, or the option that
has it, needs every option's schema (`option_schemas`, read off the option's YAML `defaults`).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import typing
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import DictConfig, OmegaConf

from tts.config.schema import ComponentConfig, Config

CONF = Path(__file__).resolve().parents[2] / "conf"
SCHEMA_PREFIX = "/schema/"


def field_types(schema: type) -> dict[str, Any]:
    hints = typing.get_type_hints(schema)
    types = {}
    for item in dataclasses.fields(schema):
        annotation = hints[item.name]
        if typing.get_origin(annotation) is typing.Union:  # Optional[X] -> X
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = args[0] if len(args) == 1 else annotation
        types[item.name] = annotation
    return types


def component_schemas() -> list[type[ComponentConfig]]:
    """Every component config defined in the component packages (importing them registers their schemas)."""
    importlib.import_module("tts.registry")
    return [schema for schema in ComponentConfig._subclasses if schema.group]


@functools.cache
def option_schemas(group: str) -> dict[str, type[ComponentConfig]]:
    """The schema each option of a component group extends (`strategy`, `model.backend`), by option name."""
    by_name = {(s.group, s.__name__): s for s in component_schemas()}
    schemas = {}
    for path in sorted((CONF / group.replace(".", "/")).glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for entry in data.get("defaults", []) if isinstance(data, dict) else []:
            if isinstance(entry, str) and entry.startswith(SCHEMA_PREFIX):
                schema = by_name.get((group, entry[len(SCHEMA_PREFIX) :].split("@")[0].rsplit("/", 1)[-1]))
                if schema is not None:
                    schemas[path.stem] = schema
    return schemas


def options_with_knob(group: str, knob: str) -> list[str]:
    """The options of a component group whose schema has `knob`."""
    return sorted(o for o, s in option_schemas(group).items() if knob in {f.name for f in dataclasses.fields(s)})


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
    """Every key any configuration can have: the run's schema and the knobs of every component config."""
    keys = set(keys_of(Config))
    for schema in component_schemas():
        keys.update(keys_of(schema, schema.group + "."))
    return frozenset(keys)


def key_is_known(key: str) -> bool:
    """Whether a dotted key names a field of the schema or of some component, or lies under a dict-typed field (its
    keys are the user's: `dataset.columns.problem`). Which option of a component is chosen is not known here, so a
    knob of any of them passes; the composed config is checked against the chosen one (`added_keys`)."""
    if key in schema_keys():
        return True
    parent = key.rsplit(".", 1)[0]
    return parent in schema_keys() and _is_open(parent)


def _is_open(key: str) -> bool:
    schema: Any = Config
    annotation: Any = None
    for part in key.split("."):
        if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
            return False
        annotation = field_types(schema).get(part)
        schema = annotation
    return annotation is dict or typing.get_origin(annotation) is dict


def added_keys(node: DictConfig, prefix: str = "") -> Iterator[tuple[str, type]]:
    """(key, the dataclass that lacks it) for each key of a composed config that its typed node does not define:
    keys added with `+`. Under a dict-typed field (`dataset.columns`) every key is the user's."""
    schema = OmegaConf.get_type(node)
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        return
    fields = {f.name for f in dataclasses.fields(schema)}
    for name in map(str, node.keys()):
        key = prefix + name
        if name not in fields:
            yield key, schema
            continue
        child = node._get_node(name)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            yield from added_keys(child, key + ".")


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
        near = difflib.get_close_matches(key, [k for k in candidates if k.startswith(parent)], n=1, cutoff=0.0)
    return near[0] if near else None
