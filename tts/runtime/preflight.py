"""Checks that need the loaded problems or the chosen models, run before the run directory is opened or anything is
generated: each failure is a `ConfigError` naming the key and the fix (one line, exit 2), never a traceback after
minutes of model loading, and never a run that silently scores 0.

- `model=sim` only solves the problems `dataset=synthetic` generates; on anything else it would write boilerplate
  and score 0.000 without a word. `prm=sim` only judges them: beside a real policy on other problems it would score
  every step as wrong, so it is refused too unless `prm.allow_foreign=true` (then flagged in every summary).
- A real backend must be installed (`vllm`, `transformers`), and its weights must be a local model directory or a
  hub id that is cached or reachable (its `config.json` is fetched now, the weights later by the backend).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence

from tts.config.schema import Config, ConfigError, components
from tts.data.problem import Problem
from tts.runtime.limits import check_limits


def check_before_generation(run: Config, problems: Sequence[Problem]) -> None:
    """The run's size bounds (tts/runtime/limits.py), then what each chosen component says it needs (its `needs`,
    `weights` and `synthetic_only`), checked alike."""
    check_limits(run, problems)
    if run.model.backend.synthetic_only:
        check_sim_can_read(problems, run.dataset.name)
    if run.prm.synthetic_only and not run.prm.judges_foreign_problems():
        check_sim_prm_can_read(problems, run.dataset.name)
    for key, component in components(run):
        need = component.needs()
        if need:
            check_installed(key, component.name, *need)
        for weights_key, path in component.weights(run):
            check_weights(weights_key, path)


def check_sim_can_read(problems: Sequence[Problem], dataset: str) -> None:
    """The simulated policy reads its own synthetic problem types; refuse any other problem before generating."""
    unreadable = foreign_problems(problems)
    if unreadable:
        first = unreadable[0]
        text = first.problem if len(first.problem) <= 60 else first.problem[:57] + "..."
        raise ConfigError(
            f"config key 'model': the simulated policy (model=sim) only solves the problems of dataset=synthetic, and "
            f"{len(unreadable)} of the {len(problems)} problems of dataset {dataset!r} are not among them (e.g. "
            f"{first.unique_id}: {text!r}). Use a real model for your problems (e.g. model=qwen2.5-1.5b "
            f"model/backend=hf, or model=llama-3.2-1b with vLLM), or dataset=synthetic with model=sim"
        )


def foreign_problems(problems: Sequence[Problem]) -> list[Problem]:
    """The problems the simulated world did not generate (its policy cannot solve them, its PRM cannot judge them)."""
    from tts.data.synthetic import solve

    return [p for p in problems if solve(p.problem) is None]


def check_sim_prm_can_read(problems: Sequence[Problem], dataset: str) -> None:
    """The simulated PRM judges its own synthetic problems; refuse any other problem before generating."""
    unreadable = foreign_problems(problems)
    if unreadable:
        raise ConfigError(
            f"config key 'prm': the simulated PRM (prm=sim) only judges the problems of dataset=synthetic, and "
            f"{len(unreadable)} of the {len(problems)} problems of dataset {dataset!r} are not among them (e.g. "
            f"{unreadable[0].unique_id}); it would score every step of them as wrong. Use a real PRM (e.g. "
            f"prm=math-shepherd), prm=none, or prm.allow_foreign=true to run anyway (flagged in every summary)"
        )


def check_installed(key: str, name: str, module: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"config key '{key}': {name} needs the {module} package, which is not installed; "
            f"pip install '{extra}', or choose another {key.replace('.', '/')}=..."
        )


def _offline() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def check_weights(key: str, path: str | None) -> None:
    """A local model directory (with config.json), a GGUF file, or a hub id whose config.json is cached or
    downloadable now."""
    if not path:
        raise ConfigError(f"config key '{key}': a real backend needs a hub id or a local directory")
    local = os.path.expanduser(path)
    if local.endswith(".gguf"):  # one GGUF file (model=smollm2-135m): nothing to fetch
        if not os.path.isfile(local):
            raise ConfigError(f"config key '{key}': no GGUF file at {path}")
        return
    looks_local = os.path.isabs(path) or path.startswith((".", "~")) or path.count("/") != 1
    if os.path.isdir(local):
        if not os.path.isfile(os.path.join(local, "config.json")):
            raise ConfigError(
                f"config key '{key}': {path} is a directory without config.json, not a saved model; "
                f"pass the folder that save_pretrained wrote (or a hub id, owner/name)"
            )
        return
    if looks_local or os.path.exists(local):
        raise ConfigError(
            f"config key '{key}': no model directory at {path} (a hub id is owner/name); pass "
            f"{key}=/path/to/downloaded/model"
        )
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(path, "config.json"), str):
        return
    fix = (
        f"download it where the hub is reachable (hf download {path} --local-dir /local/dir) and pass "
        f"{key}=/local/dir, or run where the hub is reachable"
    )
    if _offline():
        raise ConfigError(
            f"config key '{key}': {path!r} is not in the local Hugging Face cache and the hub is "
            f"offline (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE); {fix}"
        )
    try:
        hf_hub_download(path, "config.json")
    except Exception as error:  # noqa: BLE001 - not found, gated, no network: all end the same way
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ConfigError(
            f"config key '{key}': cannot fetch {path!r} from the Hugging Face hub "
            f"({type(error).__name__}: {first_line}); {fix}"
        ) from None
