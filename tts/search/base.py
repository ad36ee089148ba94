"""What every strategy shares: the request it sends for a problem, the record it returns, and compute accounting.

A strategy is a class built by Hydra from its own typed config (`_target_` in conf/strategy/<name>.yaml; the config
dataclass, a `StrategyConfig` subclass, beside the class). It returns one `SearchOutput` per problem: exactly `cfg.n`
completions and the compute spent on that problem.
Generated tokens are exact per problem (every output belongs to one problem). PRM tokens are exact per run; a batched
PRM call encodes many problems at once, so its tokens are shared out in proportion to the text each problem sent.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Optional

from tts.backends.base import GenerationOutput, GenerationRequest, PolicyBackend, build_messages, prompt_tokens_computed
from tts.confidence.measures import completion_confidence
from tts.config.schema import Config, ScoringConfig, StrategyConfig
from tts.data.problem import Problem
from tts.data.records import Completion
from tts.data.steps import split_steps
from tts.prms.base import ProcessRewardModel


@dataclass
class SearchOutput:
    completions: list[Completion]
    compute: dict[str, int] = field(
        default_factory=lambda: {"generated_tokens": 0, "prm_tokens": 0, "backend_calls": 0}
    )
    note: Optional[str] = None  # why fewer than n completions, if ever


# Problems a search has finished before it returns: (index in the problems given to `search`, its output).
Finished = Callable[[list[tuple[int, "SearchOutput"]]], None]


class Strategy(abc.ABC):
    """A search strategy. A subclass declares its own config dataclass (`config: MyConfig`: the annotation tells the
    entry which dataclass types the YAML's knobs) and implements `search`.

    A long search may hand problems over as they finish (`self.report_finished(...)`), so that the pipeline saves
    them at once and a stopped run keeps them; whatever was not handed over is saved when `search` returns.
    """

    config: StrategyConfig
    on_finished: Optional[Finished] = None  # set by the pipeline for the run; None: nobody listens

    def __init__(self, config: StrategyConfig) -> None:
        self.config = config

    def report_finished(self, done: list[tuple[int, SearchOutput]]) -> None:
        """Hand over problems that are done (index into `search`'s problems, final output) before `search` returns.
        Each problem at most once; its output must be the one `search` returns for it."""
        if done and self.on_finished is not None:
            self.on_finished(done)

    @abc.abstractmethod
    def search(
        self, problems: Sequence[Problem], policy: PolicyBackend, prm: ProcessRewardModel, run: Config
    ) -> list[SearchOutput]:
        """Exactly `run.n` completions per problem (fewer only with `SearchOutput.note`), in problem order."""


def make_request(
    problem: Problem,
    cfg: Config,
    *,
    prefix: str = "",
    n: int = 1,
    temperature: Optional[float] = None,
    stop: Optional[list[str]] = None,
    max_tokens: Optional[int] = None,
    seed_offset: int = 0,
    prefix_ids: Optional[tuple[int, ...]] = None,
) -> GenerationRequest:
    """The policy request for `problem` under the run config (sampling knobs from `strategy`, limits from `budget`)."""
    return GenerationRequest(
        messages=build_messages(cfg.model.prompt.system, problem.problem),
        prefix=prefix,
        prefix_ids=prefix_ids,
        n=n,
        temperature=cfg.strategy.temperature if temperature is None else temperature,
        top_p=cfg.strategy.top_p,
        max_tokens=cfg.budget.max_tokens if max_tokens is None else max_tokens,
        stop=stop,
        seed=cfg.seed + seed_offset,
        top_logprobs=cfg.model.top_logprobs,
    )


def score_samples(
    prm: ProcessRewardModel, problems: Sequence[Problem], texts: Sequence[Sequence[str]]
) -> tuple[list[list[list[str]]], list[list[list[float]]], list[int]]:
    """Every step of every problem's sample texts scored in one PRM call: (steps, step scores, PRM tokens per problem),
    the call's tokens shared out in proportion to the step text each problem sent."""
    step_lists = [[split_steps(text) for text in per] for per in texts]
    before = prm.stats.tokens
    scores = prm.score([p.problem for p in problems], step_lists)
    sent = [sum(len(step) for steps in per for step in steps) for per in step_lists]
    return step_lists, scores, share_tokens(prm.stats.tokens - before, sent)


def sampled_completion(
    sample: GenerationOutput,
    steps: list[str],
    step_scores: list[float],
    extra: Optional[dict] = None,
    *,
    scoring: ScoringConfig,
) -> Completion:
    """A whole sampled solution with its PRM-scored steps, as the completion a strategy returns; with the policy's
    log-probabilities, its confidence summary (windows from `scoring`), so the arrays need not outlive the strategy."""
    return Completion(
        text=sample.text,
        steps=steps,
        step_scores=step_scores,
        finish_reason=sample.finish_reason,
        tokens=sample.num_tokens,
        extra=extra or {},
        confidence=completion_confidence(
            [(sample.text, sample.top_logprobs)], steps, scoring.confidence_window, scoring.confidence_tail
        )
        if sample.top_logprobs is not None
        else None,
    )


def prompt_compute(samples: Iterable[GenerationOutput]) -> dict[str, int]:
    """The prompt side of a problem's compute: prompt tokens its samples continued (`prompt_tokens`, as without
    reuse) and those the engine evaluated after KV/prefix reuse (`prompt_tokens_computed`)."""
    samples = list(samples)
    return {
        "prompt_tokens": sum(o.prompt_tokens for o in samples),
        "prompt_tokens_computed": prompt_tokens_computed(samples),
    }


def share_tokens(total: int, weights: Sequence[float]) -> list[int]:
    """Split `total` tokens over problems in proportion to `weights`, in whole tokens that add up to `total`."""
    weight_sum = float(sum(weights))
    if total <= 0 or weight_sum <= 0:
        return [0] * len(weights)
    raw = [total * w / weight_sum for w in weights]
    shares = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - shares[i], reverse=True)[: total - sum(shares)]:
        shares[i] += 1
    return shares


def batches(items: Sequence, size: Optional[int]) -> list[Sequence]:
    """`items` in chunks of `size` (None: one chunk)."""
    if not size or size >= len(items):
        return [items]
    return [items[i : i + size] for i in range(0, len(items), size)]
