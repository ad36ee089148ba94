"""Typed configuration: one dataclass per config group, registered in Hydra's ConfigStore, plus `validate(cfg)`.

The YAML files under `conf/` start from these schemas (`defaults: [/base_<group>@_here_, _self_]`), so a misspelt key fails when
Hydra composes the config, before anything runs. Rules that involve several fields (`n % beam_width == 0`) cannot be
typed; they live in `validate`, which `run` calls first and which names the offending key and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


@dataclass
class SimPolicyConfig:
    skill: float = 1.2
    temperature_sensitivity: float = 1.0
    num_wrong_answers: int = 4
    wrong_answer_skew: float = 1.0
    phrasings: int = 1
    varied_length: bool = True
    # review and revision prompts (tts/backends/sim_tasks.py)
    verify_accuracy: float = 0.8
    verify_difficulty_sensitivity: float = 1.0
    verify_unparsed_prob: float = 0.02
    revision_fix_prob: float = 0.9
    revision_break_prob: float = 0.02


@dataclass
class ModelConfig:
    name: str = MISSING
    backend: str = "sim"
    path: Optional[str] = None
    system_prompt: str = ""
    chat_template: Optional[str] = None
    dtype: str = "auto"
    device: str = "auto"
    trust_remote_code: bool = False
    batch_size: int = 64
    gpu_memory_utilization: float = 0.5
    tensor_parallel_size: int = 1
    max_model_len: Optional[int] = None
    enable_prefix_caching: bool = True
    enforce_eager: bool = False
    max_num_batched_tokens: Optional[int] = None  # vllm: tokens per engine step; null: vLLM's default
    # openai backend: a served policy (one URL or a list, used round-robin); the key is read from this variable
    base_url: Any = None
    served_model_name: Optional[str] = None  # the server's name for the model; null: model.path
    api_key_env: str = "OPENAI_API_KEY"
    max_concurrency: int = 64
    max_retries: int = 5
    request_timeout: float = 600.0
    sim: SimPolicyConfig = field(default_factory=SimPolicyConfig)


@dataclass
class SimPRMConfig:
    discrimination: float = 1.5
    noise: float = 1.0
    bias: float = 0.5
    length_penalty: float = 0.0


@dataclass
class PRMConfig:
    name: str = MISSING
    family: str = "sim"
    backend: str = "sim"
    path: Optional[str] = None
    dtype: str = "auto"
    device: str = "auto"
    trust_remote_code: bool = False
    batch_tokens: int = 8192
    max_length: Optional[int] = None
    gpu_memory_utilization: float = 0.4
    enforce_eager: bool = False
    enable_prefix_caching: bool = True  # vllm: score each new step alone, its prefix from vLLM's prefix cache;
    # hf: a token prefix shared by several candidates of one call runs once, its KV cache under all of them
    block_size: Optional[int] = None    # vllm: KV-cache block size (the prefix cache's granularity); null: vLLM's
    good_token: str = "+"
    bad_token: str = "-"
    step_tag: str = ""
    system_prompt: str = ""
    sim: SimPRMConfig = field(default_factory=SimPRMConfig)


@dataclass
class StrategyConfig:
    name: str = MISSING
    temperature: float = 0.8
    top_p: float = 1.0
    beam_width: int = 4
    filter_duplicates: bool = False
    lookahead: int = 0
    rebase_temperature: float = 0.2
    search_batch_size: Optional[int] = None
    # tree searches on a backend that streams (vLLM): problems advance together (lockstep: each iteration waits for
    # every problem's slowest sample) or independently (per_problem); the samples are the same either way
    schedule: str = "lockstep"
    # filter_vote: the policy reviews each sample (tts/search/filter_vote.py)
    review_prompt: str = ""
    review_system_prompt: str = ""
    review_temperature: Optional[float] = None
    review_max_tokens: int = 512
    # revisions: chains of sequential revisions (tts/search/revisions.py)
    revisions_per_chain: int = 1
    revision_prompt: str = ""
    revision_attempt_template: str = ""
    revision_context_tokens: Optional[int] = None


@dataclass
class BudgetConfig:
    name: str = MISSING
    max_tokens: int = 2048
    num_iterations: int = 40


@dataclass
class DatasetConfig:
    name: str = MISSING
    path: Optional[str] = None
    hub_id: Optional[str] = None
    split: str = "test"
    num_problems: Optional[int] = None
    start: int = 0
    end: Optional[int] = None
    shard: int = 0  # this job's part of [start:end] when it is split into num_shards contiguous parts
    num_shards: int = 1
    generator_seed: int = 1234
    columns: Dict[str, str] = field(default_factory=dict)


@dataclass
class LoggerConfig:
    name: str = MISSING
    project: str = "tts"
    entity: Optional[str] = None
    mode: str = "offline"
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    job_type: str = "search"
    log_table: bool = True
    log_artifact: bool = True
    init_timeout: float = 15.0
    run_id: Optional[str] = None
    resume: str = "allow"


@dataclass
class ScoringConfig:
    reduction: str = "last"
    grading_timeout: float = 5.0
    subset_draws: int = 200
    lenient_extraction: bool = False


@dataclass
class Config:
    model: ModelConfig = MISSING
    prm: PRMConfig = MISSING
    strategy: StrategyConfig = MISSING
    budget: BudgetConfig = MISSING
    dataset: DatasetConfig = MISSING
    logger: LoggerConfig = MISSING
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    n: int = 4
    seed: int = 0
    batch_size: int = 64


GROUPS = {
    "model": ModelConfig,
    "prm": PRMConfig,
    "strategy": StrategyConfig,
    "budget": BudgetConfig,
    "dataset": DatasetConfig,
    "logger": LoggerConfig,
}


def register_configs() -> None:
    """Store the schemas so that `conf/*.yaml` can extend them (`defaults: [/base_<group>@_here_]`).

    They are stored at the root, not in their group: an entry of a group is an option Hydra offers (`--help`, error
    messages), and a schema is not one."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for group, schema in GROUPS.items():
        cs.store(name=f"base_{group}", node=schema)
    from tts.launch.sweep import short_dirname  # run directory names that fit the file system (conf/config.yaml)

    if not OmegaConf.has_resolver("tts_dirname"):
        OmegaConf.register_new_resolver("tts_dirname", short_dirname)


register_configs()

BACKENDS = ("sim", "hf", "vllm", "openai")
REDUCTIONS = ("last", "min", "prod", "mean")
LOGGER_MODES = ("offline", "online", "disabled")


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key and how to fix it."""


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"config key '{key}': {message}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


SEED_LIMIT = 2**32 - 1  # numpy's legacy seeding (np.random.seed) takes 32-bit seeds


def validate(cfg: DictConfig) -> None:
    """Check every key and every rule before any data is loaded or any model built. Raises `ConfigError`."""
    from tts.config.keys import check_known_keys, check_finite

    check_known_keys(cfg)
    check_finite(cfg)
    _check(_is_int(cfg.n) and cfg.n >= 1, "n", f"must be a whole number >= 1 (completions per problem), got {cfg.n!r}")
    _check(_is_int(cfg.seed) and 0 <= cfg.seed <= SEED_LIMIT, "seed",
           f"must be a whole number in [0, {SEED_LIMIT}], got {cfg.seed!r}")
    _check(0 <= cfg.dataset.generator_seed <= SEED_LIMIT, "dataset.generator_seed",
           f"must be a whole number in [0, {SEED_LIMIT}], got {cfg.dataset.generator_seed!r}")
    _check(_is_int(cfg.batch_size) and cfg.batch_size >= 1, "batch_size",
           f"must be >= 1 (problems saved per batch), got {cfg.batch_size!r}")
    _check(cfg.model.backend in BACKENDS, "model.backend", f"must be one of {BACKENDS}, got {cfg.model.backend!r}")
    _check(cfg.prm.backend in BACKENDS, "prm.backend", f"must be one of {BACKENDS}, got {cfg.prm.backend!r}")
    if cfg.model.backend != "sim":
        _check(bool(cfg.model.path), "model.path", "a real backend needs a hub id or a local directory")
    if cfg.prm.backend != "sim":
        _check(bool(cfg.prm.path), "prm.path", "a real PRM needs a hub id or a local directory")
    _check(cfg.prm.backend != "openai", "prm.backend", "a PRM runs on sim, hf or vllm (openai serves policies)")
    if cfg.model.backend == "openai":
        from tts.backends.openai import base_urls

        base_urls(cfg.model.base_url)  # raises ConfigError naming model.base_url
    _check(0.0 <= cfg.strategy.temperature, "strategy.temperature", f"must be >= 0, got {cfg.strategy.temperature}")
    _check(0.0 < cfg.strategy.top_p <= 1.0, "strategy.top_p", f"must be in (0, 1], got {cfg.strategy.top_p}")
    _check(cfg.budget.max_tokens >= 1, "budget.max_tokens", f"must be >= 1, got {cfg.budget.max_tokens}")
    _check(cfg.budget.num_iterations >= 1, "budget.num_iterations", f"must be >= 1, got {cfg.budget.num_iterations}")
    _check(cfg.scoring.reduction in REDUCTIONS, "scoring.reduction",
           f"must be one of {REDUCTIONS}, got {cfg.scoring.reduction!r}")
    _check(0 < cfg.scoring.grading_timeout <= 3600, "scoring.grading_timeout",
           f"must be in (0, 3600] seconds (the longest one answer comparison may take), "
           f"got {cfg.scoring.grading_timeout}")
    _check(_is_int(cfg.scoring.subset_draws) and cfg.scoring.subset_draws >= 1, "scoring.subset_draws",
           f"must be a whole number >= 1 (random subsets per n' for weighted and majority), "
           f"got {cfg.scoring.subset_draws!r}")
    _check(cfg.dataset.num_problems is None or cfg.dataset.num_problems >= 1, "dataset.num_problems",
           f"must be >= 1 or null (all problems), got {cfg.dataset.num_problems}")
    _check(cfg.dataset.start >= 0, "dataset.start", f"must be >= 0, got {cfg.dataset.start}")
    if cfg.dataset.end is not None:
        _check(cfg.dataset.end > cfg.dataset.start, "dataset.end",
               f"must be > dataset.start ({cfg.dataset.start}), got {cfg.dataset.end}: the shard would be empty")
    _check(cfg.dataset.num_shards >= 1, "dataset.num_shards", f"must be >= 1, got {cfg.dataset.num_shards}")
    _check(0 <= cfg.dataset.shard < cfg.dataset.num_shards, "dataset.shard",
           f"must be in [0, dataset.num_shards={cfg.dataset.num_shards}), got {cfg.dataset.shard}")
    _check(cfg.logger.mode in LOGGER_MODES, "logger.mode", f"must be one of {LOGGER_MODES}, got {cfg.logger.mode!r}")
    _check(cfg.logger.init_timeout > 0, "logger.init_timeout", f"must be > 0 seconds, got {cfg.logger.init_timeout}")
    for key in ("model.batch_size", "model.tensor_parallel_size", "prm.batch_tokens"):
        value = OmegaConf.select(cfg, key)
        _check(value >= 1, key, f"must be >= 1, got {value}")
    for key in ("model.gpu_memory_utilization", "prm.gpu_memory_utilization"):
        value = OmegaConf.select(cfg, key)
        _check(0 < value <= 1, key, f"must be a share of GPU memory in (0, 1], got {value}")
    _validate_sim(cfg)
    _validate_strategy(cfg)


def _validate_sim(cfg: DictConfig) -> None:
    from tts.data.synthetic import PHRASINGS

    phrasings = cfg.model.sim.phrasings
    _check(1 <= phrasings <= len(PHRASINGS), "model.sim.phrasings", f"must be in [1, {len(PHRASINGS)}], got {phrasings}")


SCHEDULES = ("per_problem", "lockstep")


def _validate_strategy(cfg: DictConfig) -> None:
    """Rules of the search strategies; a strategy that needs more adds them here."""
    strategy = cfg.strategy
    if strategy.search_batch_size is not None:
        _check(strategy.search_batch_size >= 1, "strategy.search_batch_size", "must be >= 1 or null (all problems)")
    _check(strategy.schedule in SCHEDULES, "strategy.schedule",
           f"must be one of {', '.join(SCHEDULES)}, got {strategy.schedule!r}")
    if strategy.name in ("beam", "dvts", "lookahead"):
        width = strategy.beam_width
        _check(_is_int(width) and width >= 1, "strategy.beam_width", f"must be a whole number >= 1, got {width!r}")
        _check(width <= cfg.n, "strategy.beam_width",
               f"must be <= n ({cfg.n}): {strategy.name} keeps n / beam_width beams; lower beam_width or raise n")
        _check(cfg.n % width == 0, "strategy.beam_width",
               f"n ({cfg.n}) must be a multiple of beam_width ({width}) for {strategy.name}; "
               f"e.g. n={max(width, cfg.n - cfg.n % width)}")
    if strategy.name == "beam":
        _check(strategy.lookahead == 0, "strategy.lookahead",
               f"beam search does not roll out (got {strategy.lookahead}); use strategy=lookahead strategy.lookahead=k")
    _check(_is_int(strategy.lookahead) and strategy.lookahead >= 0, "strategy.lookahead",
           f"must be a whole number of steps >= 0, got {strategy.lookahead!r}")
    if strategy.name == "rebase":
        _check(strategy.rebase_temperature > 0, "strategy.rebase_temperature",
               f"must be > 0 (softmax temperature over node scores), got {strategy.rebase_temperature}")
    if strategy.name == "filter_vote":
        for placeholder in ("{problem}", "{solution}"):
            _check(placeholder in strategy.review_prompt, "strategy.review_prompt",
                   f"must contain the placeholder {placeholder}")
        _check(strategy.review_max_tokens >= 1, "strategy.review_max_tokens", "must be >= 1 (tokens of one review)")
        _check(strategy.review_temperature is None or strategy.review_temperature >= 0, "strategy.review_temperature",
               "must be >= 0 or null (use strategy.temperature)")
    if strategy.name == "revisions":
        length = strategy.revisions_per_chain
        _check(_is_int(length) and length >= 1, "strategy.revisions_per_chain", f"must be >= 1, got {length!r}")
        _check(cfg.n % length == 0, "strategy.revisions_per_chain",
               f"must divide n={cfg.n} (n / revisions_per_chain chains run in parallel), got {length}")
        for placeholder in ("{problem}", "{attempts}"):
            _check(placeholder in strategy.revision_prompt, "strategy.revision_prompt",
                   f"must contain the placeholder {placeholder}")
        _check("{attempt}" in strategy.revision_attempt_template, "strategy.revision_attempt_template",
               "must contain the placeholder {attempt}")
        _check(strategy.revision_context_tokens is None or strategy.revision_context_tokens >= 1,
               "strategy.revision_context_tokens", "must be >= 1 or null (budget.max_tokens)")
    sim = cfg.model.sim
    for key in ("verify_accuracy", "verify_unparsed_prob", "revision_fix_prob", "revision_break_prob"):
        _check(0.0 <= sim[key] <= 1.0, f"model.sim.{key}", f"must be a probability in [0, 1], got {sim[key]}")


def to_container(cfg: DictConfig) -> dict:
    """The resolved config as plain dicts (for the run directory and W&B)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
