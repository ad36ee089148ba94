"""`validate(cfg)`: the composed config checked key by key and rule by rule, and turned into typed objects once.

    run = validate(cfg)          # a tts.config.schema.Config; run.strategy is e.g. a BeamConfig
    run.strategy.beam_width      # plain attribute access from here on: nothing downstream reads a DictConfig

Every failure is a `ConfigError` whose one line names the key and the fix: an unknown key (with the nearest valid one,
or the knobs of the chosen component when a knob belongs to another), a value of the wrong type, a number out of range
or not finite, a rule across fields (`n % beam_width == 0`). `check_overrides` applies the key and option checks to
the command line before Hydra composes anything (tts/cli/command_line.py).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from tts.config.keys import CONF, added_keys, key_is_known, nearest_key, option_schemas, options_with_knob, schema_keys
from tts.config.redaction import is_secret_key
from tts.config.schema import (
    MAX_TOP_LOGPROBS,
    SEED_LIMIT,
    ComponentConfig,
    Config,
    ConfigError,
    ScoringConfig,
    StrategyConfig,
    components,
    is_whole,
    require,
)

REDUCTIONS = ("last", "min", "prod", "mean")
LOGGER_MODES = ("offline", "online", "disabled")


def validate(cfg: DictConfig) -> Config:
    """Check every key and every rule before any data is loaded or any model built; return the typed config."""
    check_known_keys(cfg)
    check_finite(cfg)
    try:
        run: Config = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    except InterpolationResolutionError as error:  # a resolver's own message (e.g. ${package_file:...}) on one line
        cause = str(getattr(error, "msg", error)).split("raised while resolving interpolation: ", 1)[-1]
        raise ConfigError(f"config key '{error.full_key}': {cause.strip().splitlines()[0]}") from None
    except OmegaConfBaseException as error:
        raise ConfigError(_omegaconf_message(error, "")) from None
    _check_run(run)
    require(
        not run.strategy.needs_prm or run.prm.scores,
        "prm",
        f"strategy={run.strategy.name} is steered by a PRM's step scores and prm=none scores nothing; choose a PRM "
        f"(e.g. prm=sim) or a strategy that needs none ({', '.join(strategies_without_prm())})",
    )
    for key, component in components(run):
        check_target(key, component)
        component.check(run)
    return run


def strategies_without_prm() -> list[str]:
    """The strategy options whose schema declares no need of a PRM."""
    schemas = option_schemas("strategy").items()
    return sorted(option for option, schema in schemas if issubclass(schema, StrategyConfig) and not schema.needs_prm)


def check_target(key: str, config: ComponentConfig) -> None:
    """The class `_target_` names must take this config: a `_target_` overridden to another class (one whose config
    is another dataclass) would run that class under this option's name and knobs."""
    import inspect
    import typing

    from tts.config.schema import locate

    try:
        built = locate(config._target_)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"config key '{key}._target_': cannot import {config._target_!r} ({error})") from None
    try:
        hints = typing.get_type_hints(built) if inspect.isclass(built) else {}
        if "config" not in hints:  # a class takes it in __init__, a function as its first argument
            hints = typing.get_type_hints(built.__init__ if inspect.isclass(built) else built)
    except (NameError, TypeError):
        hints = {}
    takes = hints.get("config")
    if not (isinstance(takes, type) and isinstance(config, takes)):
        raise ConfigError(
            f"config key '{key}._target_': {config._target_!r} does not take a {type(config).__name__} "
            f"(the option's schema); choose another option, or a class whose `config` is {type(config).__name__}"
        )


def _omegaconf_message(error: OmegaConfBaseException, prefix: str) -> str:
    key = f"{prefix}{getattr(error, 'full_key', '') or getattr(error, 'key', '')}"
    first = str(getattr(error, "msg", error)).strip().splitlines()[0]
    return f"config key '{key}': {first}"


def _check_run(run: Config) -> None:
    """The rules of the groups that are not components."""
    require(
        is_whole(run.n) and run.n >= 1, "n", f"must be a whole number >= 1 (completions per problem), got {run.n!r}"
    )
    require(
        is_whole(run.seed) and 0 <= run.seed <= SEED_LIMIT,
        "seed",
        f"must be a whole number in [0, {SEED_LIMIT}], got {run.seed!r}",
    )
    dataset, scoring, logger = run.dataset, run.scoring, run.logger
    require(
        0 <= dataset.generator_seed <= SEED_LIMIT,
        "dataset.generator_seed",
        f"must be a whole number in [0, {SEED_LIMIT}], got {dataset.generator_seed!r}",
    )
    require(
        is_whole(run.batch_size) and run.batch_size >= 1,
        "batch_size",
        f"must be >= 1 (problems saved per batch), got {run.batch_size!r}",
    )
    require(
        is_whole(run.model.top_logprobs) and 0 <= run.model.top_logprobs <= MAX_TOP_LOGPROBS,
        "model.top_logprobs",
        f"must be a whole number in [0, {MAX_TOP_LOGPROBS}] (0: no log-probabilities), got {run.model.top_logprobs!r}",
    )
    require(
        0 < run.progress_every <= 86400,
        "progress_every",
        f"must be in (0, 86400] seconds (between progress lines), got {run.progress_every!r}",
    )
    require(run.budget.max_tokens >= 1, "budget.max_tokens", f"must be >= 1, got {run.budget.max_tokens}")
    require(run.budget.num_iterations >= 1, "budget.num_iterations", f"must be >= 1, got {run.budget.num_iterations}")
    require(
        scoring.reduction in REDUCTIONS, "scoring.reduction", f"must be one of {REDUCTIONS}, got {scoring.reduction!r}"
    )
    require(
        0 < scoring.grading_timeout <= 3600,
        "scoring.grading_timeout",
        f"must be in (0, 3600] seconds (the longest one answer comparison may take), got {scoring.grading_timeout}",
    )
    require(
        is_whole(scoring.subset_draws) and scoring.subset_draws >= 1,
        "scoring.subset_draws",
        f"must be a whole number >= 1 (random subsets per n' for weighted and majority), got {scoring.subset_draws!r}",
    )
    check_confidence_scoring(scoring)
    require(
        dataset.num_problems is None or dataset.num_problems >= 1,
        "dataset.num_problems",
        f"must be >= 1 or null (all problems), got {dataset.num_problems}",
    )
    require(dataset.start >= 0, "dataset.start", f"must be >= 0, got {dataset.start}")
    if dataset.end is not None:
        require(
            dataset.end > dataset.start,
            "dataset.end",
            f"must be > dataset.start ({dataset.start}), got {dataset.end}: the shard would be empty",
        )
    require(dataset.num_shards >= 1, "dataset.num_shards", f"must be >= 1, got {dataset.num_shards}")
    require(
        0 <= dataset.shard < dataset.num_shards,
        "dataset.shard",
        f"must be in [0, dataset.num_shards={dataset.num_shards}), got {dataset.shard}",
    )
    require(logger.mode in LOGGER_MODES, "logger.mode", f"must be one of {LOGGER_MODES}, got {logger.mode!r}")
    require(logger.init_timeout > 0, "logger.init_timeout", f"must be > 0 seconds, got {logger.init_timeout}")
    require(
        logger.table_budget >= 0,
        "logger.table_budget",
        f"must be >= 0 (x the results' bytes), got {logger.table_budget}",
    )


# -- keys -----------------------------------------------------------------------------------------------------------


def check_known_keys(cfg: DictConfig) -> None:
    """Raise ConfigError for the first key of `cfg` that its typed node does not define (added with `+`)."""
    for key, schema in added_keys(cfg):
        raise ConfigError(unknown_key_message(key, schema))


def unknown_key_message(key: str, schema: Optional[type] = None) -> str:
    """`config key 'x': not a known key ...` with the nearest valid key, if one is close; under a component, the
    nearest of its own knobs, and which other options have this knob when the key belongs to another."""
    if is_secret_key(key):  # a credential on the command line would be used by nothing: say where credentials go
        return (
            f"config key '{key}': not a known key; credentials are read from the environment (WANDB_API_KEY, "
            "HF_TOKEN, OPENAI_API_KEY or the variable model.backend.api_key_env names), never from the command "
            "line"
        )
    moved = moved_key(key)
    if moved:
        return f"config key '{key}': {moved}"
    if isinstance(schema, type) and issubclass(schema, ComponentConfig):
        owner, knob = key.rsplit(".", 1)
        near = nearest_key(key, [f"{owner}.{f.name}" for f in dataclasses.fields(schema)], fallback=False)
        hint = f"; did you mean '{near}'?" if near else ""
        elsewhere = options_with_knob(owner, knob)
        where = f"; it is a knob of {owner.replace('.', '/')}={','.join(elsewhere)}" if elsewhere else ""
        return (
            f"config key '{key}': not a knob of {schema.__name__} ({owner}){where}{hint} (`+` cannot add "
            f"keys a component's config does not have)"
        )
    near = nearest_key(key, schema_keys())
    hint = f"; did you mean '{near}'?" if near else ""
    return f"config key '{key}': not a known key{hint} (`+` cannot add keys the schema does not have)"


def moved_key(key: str) -> Optional[str]:
    """Where a key of the layout before typed components went (a command from an older note or script), else None."""
    leaf = key.rsplit(".", 1)[-1]
    if key == "prm.family":
        return "moved: each PRM option names its family's class (`_target_`); choose one with prm=<option>"
    if key == "prm.backend":
        return "moved: choose the engine with prm/engine=vllm (or hf); its knobs are under prm.engine"
    if key == "model.system_prompt":
        return "moved to 'model.prompt.system' (prompts are defined once, in conf/prompt/)"
    for old, new in (("model.sim.", "model.backend."), ("prm.sim.", "prm.")):
        if key.startswith(old):
            return f"moved to '{new}{key[len(old) :]}'"
    backend_knobs = {f.name for s in option_schemas("model.backend").values() for f in dataclasses.fields(s)}
    backend_knobs -= {"_target_", "name"}
    if key.count(".") == 1 and key.startswith("model.") and leaf in backend_knobs:
        return f"moved to 'model.backend.{leaf}' (a knob of the policy's backend, chosen with model/backend=...)"
    return None


def check_finite(cfg: DictConfig | ListConfig, prefix: str = "") -> None:
    """Raise ConfigError for a NaN or infinite number anywhere in the config: no rule can hold for them."""
    items = cfg.items_ex(resolve=False) if isinstance(cfg, DictConfig) else enumerate(cfg)
    for name, value in items:
        key = f"{prefix}{name!s}"  # OmegaConf types keys as str | bytes | int | ...; ours are str and int
        if isinstance(value, (DictConfig, ListConfig)):
            check_finite(value, key + ".")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config key '{key}': must be a finite number, got {value}")


# -- the command line, before Hydra composes anything -----------------------------------------------------------


def group_options(group: str) -> list[str]:
    """The options a user may choose for a config group: its YAML files (schema entries are not options)."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def check_overrides(overrides: list[str]) -> Optional[str]:
    """The one-line error for the first override naming an unknown key or group option, else None.

    Overrides Hydra cannot parse, `hydra.*` keys and deletions are left to Hydra. A knob is accepted here when some
    option of its component has it; the composed config is then checked against the option chosen (`validate`).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:  # Hydra reports its own syntax errors
        return None
    groups = {str(p.relative_to(CONF)) for p in CONF.rglob("*") if p.is_dir() and not p.name.startswith("_")}
    for override in parsed:
        key = override.key_or_group
        if key.split(".")[0].split("/")[0] == "hydra" or override.is_delete():
            continue
        if key in groups:  # `strategy=beam`, or a group into a package of its own: `prompt@model.prompt=none`
            message = _check_option(key, override)
            if message:
                return message
        elif key.replace(".", "/") in groups:  # `model.backend=hf`: a nested group is chosen with a slash
            value = override.get_value_element_as_str()
            return (
                f"config key '{key}': a config group; choose its option with {key.replace('.', '/')}={value} "
                f"(one of {', '.join(group_options(key.replace('.', '/')))})"
            )
        elif "/" not in key and not key_is_known(key):
            return unknown_key_message(key)
    return None


def _check_option(group: str, override) -> Optional[str]:
    from hydra.errors import HydraException

    if override.is_sweep_override():
        try:
            values = list(override.sweep_string_iterator())
        except HydraException:  # a glob or range over options: Hydra expands and checks it
            return None
    else:
        values = [override.get_value_element_as_str()]
    options = group_options(group)
    for value in values:
        if value not in options:
            what = "is a schema, not an option" if value.startswith("base_") else "is not an option"
            return (
                f"config key '{group}': '{value}' {what}; choose one of {', '.join(options)} "
                f"(the files in conf/{group}/)"
            )
    return None


DEEPCONF_MEASURES = ("lowest_group", "bottom10", "tail", "mean")


def check_confidence_scoring(scoring: ScoringConfig) -> None:
    """The confidence aggregations' knobs (deepconf@eta, borda_sc; docs/confidence.md)."""
    for knob in ("confidence_window", "confidence_tail"):
        value = getattr(scoring, knob)
        require(
            is_whole(value) and value >= 1, f"scoring.{knob}", f"must be a whole number of tokens >= 1, got {value!r}"
        )
    etas = list(scoring.deepconf_eta)
    require(
        all(is_whole(eta) and 0 < eta <= 100 for eta in etas) and len(set(etas)) == len(etas),
        "scoring.deepconf_eta",
        f"must be distinct whole percentages in (0, 100] (the share of traces kept), got {etas}",
    )
    require(
        scoring.deepconf_measure in DEEPCONF_MEASURES,
        "scoring.deepconf_measure",
        f"must be one of {', '.join(DEEPCONF_MEASURES)}, got {scoring.deepconf_measure!r}",
    )
    require(scoring.borda_power >= 0, "scoring.borda_power", f"must be >= 0, got {scoring.borda_power}")
