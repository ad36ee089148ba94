"""Typed configuration: the run's schema, and the base classes every component's own config extends.

Every config is a dataclass registered in Hydra's ConfigStore, so Hydra types and checks each node while it composes:
a misspelt knob, a knob of another option or a value of the wrong type fails before anything runs. The groups that
are not components (budget, dataset, logger, model) are stored as `base_<group>`; every component config (a
strategy, a policy backend, a PRM and its engine) is stored as `schema/<group>/<ClassName>` once its module is
imported (`tts.registry`), and its option's YAML extends it:

    defaults: [/schema/strategy/BeamConfig@_here_, _self_]
    _target_: tts.search.beam.BeamSearch     # the class Hydra builds, named once
    name: beam                               # then only the values that differ from the dataclass

`tts.config.validate.validate` turns the composed config into these objects (`OmegaConf.to_object`) and checks what
Hydra cannot: keys added with `+`, and the rules across fields (`check`). Nothing after it reads a DictConfig.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key and how to fix it."""


def require(condition: bool, key: str, message: str) -> None:
    """Raise `ConfigError` naming `key` unless `condition` holds."""
    if not condition:
        raise ConfigError(f"config key '{key}': {message}")


def is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


SEED_LIMIT = 2**32 - 1  # numpy's legacy seeding (np.random.seed) takes 32-bit seeds
MAX_TOP_LOGPROBS = 20  # `model.top_logprobs` at most: vLLM's default cap on log-probabilities per token


# -- the components' base configs ---------------------------------------------------------------------------------


@dataclass
class ComponentConfig:
    """What every component's config has: the class (or function) Hydra builds, and the option's name as users see
    it in sweeps, run directories and W&B. Subclasses add their own knobs and their rules (`check`); each subclass is
    the schema of the options that extend it (`schemas()`)."""

    # where this component's knobs sit in the run config ("strategy", "prm", "model.backend"): errors name keys by it
    group: ClassVar[str] = ""
    _subclasses: ClassVar[list[type[ComponentConfig]]] = []

    _target_: str = MISSING
    name: str = MISSING

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        ComponentConfig._subclasses.append(cls)

    def check(self, run: Config) -> None:
        """Rules that involve this component's knobs and the rest of the run (`n % beam_width == 0`); raise
        `ConfigError` through `self.require`. The default has none."""

    def require(self, condition: bool, knob: str, message: str) -> None:
        require(condition, f"{self.group}.{knob}", message)

    def needs(self) -> Optional[tuple[str, str]]:
        """(module, pip extra) the component imports when it is built; checked before anything is loaded."""
        return None

    def weights(self, run: Config) -> list[tuple[str, Optional[str]]]:
        """(config key, local directory or hub id) of each checkpoint it loads; checked before anything is loaded."""
        return []


def build(config: ComponentConfig, **runtime: Any) -> Any:
    """The component `config._target_` names, built by Hydra (`instantiate`) from its typed config; `runtime` holds
    what is not configuration (the run's seed, the model a backend loads)."""
    from hydra.utils import instantiate

    make = instantiate({"_target_": config._target_, "_partial_": True})
    return make(config, **runtime)


def locate(target: str) -> Any:
    """The object a dotted path names (`tts.search.beam.BeamSearch`), as Hydra's `_target_` resolves it, without the
    error Hydra's own lookup logs: the longest importable module prefix, then attributes. A module that exists but
    fails to import (a missing dependency) raises its own error."""
    import importlib

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


@dataclass
class StrategyConfig(ComponentConfig):
    """Knobs every strategy has: how the policy samples, and how many problems share a backend call."""

    group: ClassVar[str] = "strategy"
    needs_prm: ClassVar[bool] = False  # True: a PRM's step scores steer the search itself (refused with prm=none)

    # Traits, declared by each strategy and recorded in the run's config (`traits`): messages, analysis and tests read
    # them, never a strategy's name.
    independent_samples: ClassVar[bool] = False  # i.i.d. samples: a K-subset of the n is a run at K (K<n curves)
    sequential: ClassVar[bool] = False  # later calls read earlier samples (chains, reviews): sequential figures
    adaptive: ClassVar[bool] = False  # decides its own number of samples and reports its own answer ("final")

    temperature: float = 0.8  # sampling temperature of the policy
    top_p: float = 1.0  # nucleus sampling mass
    search_batch_size: Optional[int] = None  # problems per backend call (null: every problem of the batch)

    @classmethod
    def traits(cls) -> dict[str, bool]:
        """The strategy's declared traits, as the run's config records them."""
        return {name: getattr(cls, name) for name in TRAITS}

    def check(self, run: Config) -> None:
        self.require(self.temperature >= 0.0, "temperature", f"must be >= 0, got {self.temperature}")
        self.require(0.0 < self.top_p <= 1.0, "top_p", f"must be in (0, 1], got {self.top_p}")
        self.require(
            self.search_batch_size is None or self.search_batch_size >= 1,
            "search_batch_size",
            "must be >= 1 or null (all problems)",
        )


TRAITS = ("needs_prm", "independent_samples", "sequential", "adaptive")


@dataclass
class PolicyBackendConfig(ComponentConfig):
    """Base of the policy backends' configs (`model.backend`): how the weights of `model` are run."""

    group: ClassVar[str] = "model.backend"
    synthetic_only: ClassVar[bool] = False  # solves only the problems of dataset=synthetic (the simulated policy)
    # built once per process and reused by the next job of a sweep with the same config (tts/runtime/model_cache.py):
    # for backends that are expensive to build and whose outputs do not depend on the build seed
    shared: ClassVar[bool] = False


@dataclass
class PRMConfig(ComponentConfig):
    """Base of the process reward models' configs (`prm`)."""

    group: ClassVar[str] = "prm"
    shared: ClassVar[bool] = False  # as PolicyBackendConfig.shared
    scores: ClassVar[bool] = True  # False: scores nothing (prm=none); naive and weighted are then not reported
    # judges only the problems of dataset=synthetic (the simulated PRM); refused on others unless `allow_foreign`
    synthetic_only: ClassVar[bool] = False

    def judges_foreign_problems(self) -> bool:
        """Told to judge problems a `synthetic_only` PRM cannot read (the simulated PRM's `allow_foreign`)."""
        return False


@dataclass
class PRMEngineConfig(ComponentConfig):
    """Base of the PRM engines' configs (`prm.engine`, chosen with prm/engine=hf|vllm): how a real PRM's checkpoint
    runs. Only the families read from a checkpoint have one (tts/prms/family.py); prm=sim and prm=none have none."""

    group: ClassVar[str] = "prm.engine"

    # vllm: score each new step alone, its prefix from vLLM's prefix cache; hf: a token prefix shared by several
    # candidates of one call runs once, its KV cache under all of them (docs/real-models.md)
    enable_prefix_caching: bool = True


# -- the run ------------------------------------------------------------------------------------------------------


@dataclass
class PromptConfig:
    """A system prompt, defined once under conf/prompt/ and named by model configs."""

    name: str = "none"
    system: str = ""


@dataclass
class ModelConfig:
    """The policy: its weights and chat format, and the backend that runs them (`model.backend`, a component)."""

    name: str = MISSING
    path: Optional[str] = None  # hub id or local directory (real backends)
    chat_template: Optional[str] = None  # shipped template name, a file, or null for the tokenizer's own
    dtype: str = "auto"
    trust_remote_code: bool = False
    # k highest log-probabilities of every generated token's distribution, for confidence measures (0: none); from the
    # engine's own logprob option, at most MAX_TOP_LOGPROBS
    top_logprobs: int = 5
    prompt: PromptConfig = field(default_factory=PromptConfig)
    backend: PolicyBackendConfig = MISSING  # how the weights run: an option of model/backend


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
    hub_config: Optional[str] = None  # the hub dataset's configuration (its `name`), e.g. "main" for openai/gsm8k
    split: str = "test"
    num_problems: Optional[int] = None
    start: int = 0
    end: Optional[int] = None
    shard: int = 0  # this job's part of [start:end] when it is split into num_shards contiguous parts
    num_shards: int = 1
    generator_seed: int = 1234
    columns: dict[str, str] = field(default_factory=dict)
    answer_transform: Optional[str] = None  # how the mapped answer column becomes the gold answer (tts.data)


@dataclass
class LoggerConfig:
    name: str = MISSING
    project: str = "tts"
    entity: Optional[str] = None
    mode: str = "offline"
    group: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    job_type: str = "search"
    log_table: bool = True
    log_artifact: bool = True
    table_budget: float = 1.0  # the completions table's JSON may take this many times the results' bytes
    init_timeout: float = 15.0
    run_id: Optional[str] = None
    resume: str = "allow"


@dataclass
class ScoringConfig:
    reduction: str = "last"
    grading_timeout: float = 5.0
    subset_draws: int = 200
    lenient_extraction: bool = False
    # the policy's confidence (tts/confidence; conf/config.yaml says what each does)
    confidence_window: int = 2048
    confidence_tail: int = 2048
    deepconf_eta: list[int] = field(default_factory=lambda: [10, 90])
    deepconf_measure: str = "lowest_group"
    borda_power: float = 0.5


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
    progress_every: float = 30.0  # seconds between progress lines while generating


def components(run: Any, prefix: str = "") -> list[tuple[str, ComponentConfig]]:
    """(config key, config) of every component inside `run`, outermost first: strategy, prm and its engine,
    model.backend, and whatever component a later one nests (no list to keep up to date)."""
    found = []
    for item in dataclasses.fields(run):
        value = getattr(run, item.name)
        if isinstance(value, ComponentConfig):
            found.append((prefix + item.name, value))
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            found.extend(components(value, f"{prefix}{item.name}."))
    return found


def to_container(run: Config) -> dict:
    """The typed config as plain dicts (for the run directory and W&B), with the strategy's declared traits."""
    return {**dataclasses.asdict(run), "traits": run.strategy.traits()}


# the groups whose YAML starts from a schema here (`defaults: [/base_<group>@_here_]`)
SCHEMAS = {"model": ModelConfig, "budget": BudgetConfig, "dataset": DatasetConfig, "logger": LoggerConfig}


def register_configs() -> None:
    """Store the schemas so that `conf/*.yaml` can extend them: the run's groups as `base_<group>`, every component
    config defined so far as `schema/<group>/<ClassName>` (`tts.registry` imports the component modules first).

    They are stored outside the option groups: an entry of a group is an option Hydra offers (`--help`, error
    messages), and a schema is not one. A dict-typed field (`dataset.columns`) holds the user's keys, so it is left
    open: `dataset.columns={problem: question}` sets it as written, without Hydra's `+` for a key the schema lacks."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for group, schema in SCHEMAS.items():
        node = OmegaConf.structured(schema)
        for item in dataclasses.fields(schema):
            if str(item.type).startswith("dict["):
                OmegaConf.set_struct(node[item.name], False)
        cs.store(name=f"base_{group}", node=node)
    for schema in ComponentConfig._subclasses:
        if schema.group:
            cs.store(group=f"schema/{schema.group.replace('.', '/')}", name=schema.__name__, node=schema)


register_configs()
