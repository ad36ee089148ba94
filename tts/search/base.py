"""What every strategy shares: what it is given besides its own config (`RunSpec`), the request it sends for a
problem, the record it returns, and compute accounting.

A strategy is a class built by Hydra from its own typed config (`_target_` in conf/strategy/<name>.yaml; the config
dataclass, a `StrategyConfig` subclass, beside the class). `search(problems, policy, prm, spec)` reads its knobs from
`self.config` and everything else from the run spec, never from the run config. It returns one `SearchOutput` per
problem: exactly `spec.n` completions and the compute spent on that problem (`Compute`).
Generated tokens are exact per problem (every output belongs to one problem). PRM tokens are exact per run; a batched
PRM call encodes many problems at once, so its tokens are shared out in proportion to the text each problem sent.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Optional

from tts.backends.base import GenerationOutput, GenerationRequest, PolicyBackend, build_messages, prompt_tokens_computed
from tts.confidence.measures import completion_confidence
from tts.config.schema import Config, StrategyConfig
from tts.data.problem import Problem
from tts.data.records import Completion
from tts.data.steps import split_steps
from tts.prms.base import ProcessRewardModel


@dataclass(frozen=True)
class RunSpec:
    """What a strategy needs from the run besides its own config: the budget, the model's prompt and log-probabilities,
    and the scoring knobs a strategy applies itself. Frozen: a strategy reads the run, it never changes it."""

    n: int  # completions per problem
    seed: int
    max_tokens: int  # tokens one completion may generate (budget.max_tokens)
    num_iterations: int  # steps a step-level search may take (budget.num_iterations)
    system_prompt: str  # the model's system prompt ("": none)
    top_logprobs: int  # log-probabilities per generated token the policy returns (0: none)
    reduction: str  # step scores -> one solution score (scoring.reduction), for the searches that rank by it
    confidence_window: int  # tokens per group of the confidence summaries (scoring.confidence_window)
    confidence_tail: int  # tokens of the tail confidence (scoring.confidence_tail)

    @classmethod
    def of(cls, run: Config) -> RunSpec:
        return cls(
            n=run.n,
            seed=run.seed,
            max_tokens=run.budget.max_tokens,
            num_iterations=run.budget.num_iterations,
            system_prompt=run.model.prompt.system,
            top_logprobs=run.model.top_logprobs,
            reduction=run.scoring.reduction,
            confidence_window=run.scoring.confidence_window,
            confidence_tail=run.scoring.confidence_tail,
        )


@dataclass
class Compute:
    """What a strategy spent on one problem. A counter that only some strategies keep is None where a strategy does
    not keep it, and then absent from the run record; the field order is the record's key order (`as_dict`)."""

    generated_tokens: int = 0  # every token the policy generated for the problem (rollouts and reviews included)
    review_tokens: Optional[int] = None  # of which reviews of the samples (filter_vote)
    prm_tokens: int = 0  # tokens the PRM was given for the problem (its share of each batched call)
    context_tokens: Optional[int] = None  # previous-attempt tokens the prompts showed (revisions)
    backend_calls: int = 0  # backend calls the problem took part in
    traces_generated: Optional[int] = None  # an adaptive strategy's traces: started,
    traces_stopped: Optional[int] = None  # stopped before their end,
    traces_used: Optional[int] = None  # and voting for its own answer
    prompt_tokens: Optional[int] = None  # prompt tokens the samples continued (as an engine without reuse evaluates)
    prompt_tokens_computed: Optional[int] = None  # those the engine evaluated after KV / prefix reuse
    rollout_tokens: Optional[int] = None  # of the generated tokens, those of lookahead rollouts (lookahead)

    def count_prompts(self, samples: Iterable[GenerationOutput]) -> None:
        """Add the prompt side of these samples: the prompt tokens they continued, and those evaluated after reuse."""
        samples = list(samples)
        self.prompt_tokens = (self.prompt_tokens or 0) + sum(o.prompt_tokens for o in samples)
        self.prompt_tokens_computed = (self.prompt_tokens_computed or 0) + prompt_tokens_computed(samples)

    def as_dict(self) -> dict[str, int]:
        """The run record's `compute`: every counter the strategy keeps, in field order."""
        return {f.name: value for f in fields(self) if (value := getattr(self, f.name)) is not None}


@dataclass
class SearchOutput:
    completions: list[Completion]
    compute: Compute = field(default_factory=Compute)
    note: Optional[str] = None  # why fewer than n completions, if ever


# Problems a search has finished before it returns: (index in the problems given to `search`, its output).
Finished = Callable[[list[tuple[int, "SearchOutput"]]], None]


class Strategy(abc.ABC):
    """A search strategy. A subclass declares the config dataclass it takes (`config: MyConfig`: its option's YAML
    extends that schema, and the entry checks that a `_target_` names a class taking it) and implements `search`.

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

    def chunks(self, problems: Sequence[Problem], results: list[SearchOutput]) -> Iterator[Sequence[Problem]]:
        """`problems` in chunks of `search_batch_size`; the outputs the loop body appends to `results` for a chunk
        are handed over (`report_finished`) as soon as it is done, so they are saved at once."""
        for chunk in batches(problems, self.config.search_batch_size):
            first = len(results)
            yield chunk
            self.report_finished(list(enumerate(results[first:], start=first)))

    @abc.abstractmethod
    def search(
        self, problems: Sequence[Problem], policy: PolicyBackend, prm: ProcessRewardModel, spec: RunSpec
    ) -> list[SearchOutput]:
        """Exactly `spec.n` completions per problem (fewer only with `SearchOutput.note`), in problem order."""


def make_request(
    problem: Problem,
    spec: RunSpec,
    sampling: StrategyConfig,
    *,
    prefix: str = "",
    n: int = 1,
    temperature: Optional[float] = None,
    stop: Optional[list[str]] = None,
    max_tokens: Optional[int] = None,
    seed_offset: int = 0,
    prefix_ids: Optional[tuple[int, ...]] = None,
) -> GenerationRequest:
    """The policy request for `problem`: the model's prompt and the run's limits and seed from `spec`, the sampling
    knobs from the strategy's config (`sampling`) unless given."""
    return GenerationRequest(
        messages=build_messages(spec.system_prompt, problem.problem),
        prefix=prefix,
        prefix_ids=prefix_ids,
        n=n,
        temperature=sampling.temperature if temperature is None else temperature,
        top_p=sampling.top_p,
        max_tokens=spec.max_tokens if max_tokens is None else max_tokens,
        stop=stop,
        seed=spec.seed + seed_offset,
        top_logprobs=spec.top_logprobs,
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
    sample: GenerationOutput, steps: list[str], step_scores: list[float], extra: Optional[dict] = None, *, spec: RunSpec
) -> Completion:
    """A whole sampled solution with its PRM-scored steps, as the completion a strategy returns; with the policy's
    log-probabilities, its confidence summary (windows from `spec`), so the arrays need not outlive the strategy."""
    return Completion(
        text=sample.text,
        steps=steps,
        step_scores=step_scores,
        finish_reason=sample.finish_reason,
        tokens=sample.num_tokens,
        extra=extra or {},
        confidence=completion_confidence(
            [(sample.text, sample.top_logprobs)], steps, spec.confidence_window, spec.confidence_tail
        )
        if sample.top_logprobs is not None
        else None,
    )


def allocate(total: int, weights: Sequence[float]) -> list[int]:
    """Split `total` whole slots over items in proportion to `weights` (largest remainder; ties to the earlier item)."""
    weight_sum = float(sum(weights))
    if total <= 0 or not weights:
        return [0] * len(weights)
    if weight_sum <= 0 or not math.isfinite(weight_sum):
        weights, weight_sum = [1.0] * len(weights), float(len(weights))
    raw = [total * w / weight_sum for w in weights]
    counts = [int(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def share_tokens(total: int, weights: Sequence[float]) -> list[int]:
    """Split `total` tokens over problems in proportion to `weights`, in whole tokens that add up to `total`; none
    to anyone when no problem sent anything (`allocate` would share them evenly)."""
    return allocate(total, weights) if sum(weights) > 0 else [0] * len(weights)


def batches(items: Sequence, size: Optional[int]) -> list[Sequence]:
    """`items` in chunks of `size` (None: one chunk)."""
    if not size or size >= len(items):
        return [items]
    return [items[i : i + size] for i in range(0, len(items), size)]
