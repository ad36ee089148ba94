"""The policy-backend seam: every generator (sim, transformers, vLLM) answers the same requests.

A strategy never talks to a model directly; it builds `GenerationRequest`s (chat messages plus an optional partial
assistant answer to continue) and gets back `GenerationOutput`s. Batching many problems into one `generate` call is the
caller's job; counting calls and tokens is the backend's, so compute accounting is the same for every backend.
"""

from __future__ import annotations

import abc
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Optional

import numpy as np

FinishReason = Literal["stop", "eos", "length"]


def build_messages(system_prompt: str, problem: str) -> list[dict[str, str]]:
    """Chat messages for a problem; the system prompt comes from the model's config (conf/prompt/)."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": problem})
    return messages


class PolicyUnavailable(RuntimeError):
    """The policy cannot answer: a served model that is down, refuses a request, answers something that is not a
    completion, or misses its deadline. The message is one line: where, what happened and what to do. The run keeps
    every problem finished before it and stops with that line, not a traceback (tts.cli.sweep.guarded_run)."""


@dataclass
class GenerationRequest:
    """One prompt to sample `n` continuations of.

    `messages` is the chat (system + user); `prefix` is partial assistant text that the model must continue verbatim
    (beam search passes the steps chosen so far, ending in the step separator).
    """

    messages: list[dict[str, str]]
    prefix: str = ""
    # the policy's own token ids for `prefix`, when the search kept them: a backend that tokenizes continues from
    # exactly these (the model reads the tokens it wrote, and its prefix cache serves them) instead of encoding `prefix`
    # again, which for text a model wrote often gives other ids than it sampled
    prefix_ids: Optional[tuple[int, ...]] = None
    n: int = 1
    temperature: float = 0.8
    top_p: float = 1.0
    max_tokens: int = 2048
    stop: list[str] | None = None
    seed: int = 0
    # k: return the k highest log-probabilities of every generated token's distribution (0: none); from the engine's
    # own logprob option, never a second forward pass
    top_logprobs: int = 0

    @property
    def problem(self) -> str:
        """The user turn: the problem statement (the last user message)."""
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "user")


@dataclass
class GenerationOutput:
    """One sampled continuation. `text` includes a matched stop string (so steps keep their blank line)."""

    text: str
    finish_reason: FinishReason
    num_tokens: int
    token_ids: Optional[tuple[int, ...]] = None  # ids that decode to exactly `text` (None: unknown)
    # (num_tokens, k) float32 natural-log probabilities, each row descending: the k most likely tokens at each
    # generated position (None: not asked for, request.top_logprobs == 0). tts.confidence.measures reads them.
    top_logprobs: Optional[np.ndarray] = None
    # tokens of the prompt this sample continued (chat + prefix), as an engine without any reuse would evaluate them
    prompt_tokens: int = 0
    # this sample's share of the prompt tokens the engine actually evaluated after KV/prefix reuse (the first sample
    # of a request that shares one prompt evaluation carries it, its siblings 0); None: the backend cannot tell
    prompt_tokens_computed: Optional[int] = None


def top_logprobs_array(positions: Iterable[Iterable[float]], k: int) -> np.ndarray:
    """(positions, k) float32, each row the k highest of that position's log-probabilities, descending. An engine
    may return k + 1 per position (the sampled token added when it is not among the k most likely): the k highest
    are the top k. A position with fewer than k is padded with -inf (no probability)."""
    table = np.full((0, k), -np.inf, dtype=np.float32)
    rows = [sorted(values, reverse=True)[:k] for values in positions]
    if rows:
        table = np.full((len(rows), k), -np.inf, dtype=np.float32)
        for i, row in enumerate(rows):
            table[i, : len(row)] = row
    return table


def prompt_tokens_computed(samples: Sequence[GenerationOutput]) -> int:
    """Prompt tokens evaluated for these samples after reuse; a sample whose backend cannot tell
    (`prompt_tokens_computed` None) counts its nominal prompt, the most it can have cost."""
    return sum(o.prompt_tokens if o.prompt_tokens_computed is None else o.prompt_tokens_computed for o in samples)


@dataclass
class GenerationStats:
    """What a backend has spent: the compute side of every budget-fair comparison."""

    calls: int = 0
    requests: int = 0
    samples: int = 0
    generated_tokens: int = 0
    prompt_tokens: int = 0  # prompt tokens of every sample, as an engine without reuse would evaluate them
    # prompt tokens the engine evaluated after KV/prefix reuse; a sample whose backend cannot tell counts in full
    prompt_tokens_computed: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class PolicyBackend(abc.ABC):
    """Base class of policy backends. Subclasses implement `_generate`; `generate` does the bookkeeping."""

    def __init__(self) -> None:
        self.stats = GenerationStats()
        # Tokens the call in progress has generated so far, where the backend can tell (hf and llamacpp per decoding
        # step, openai per answered request); read only by the run's progress lines, and back to 0 when the call
        # returns (its tokens are then in `stats`). A backend that cannot tell (vLLM's blocking generate) leaves it
        # at 0.
        self.tokens_in_flight = 0

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[GenerationOutput]]:
        """Sample `request.n` continuations for every request, in one batched backend call."""
        if not requests:
            return []
        try:
            outputs = self._generate(list(requests))
        finally:
            self.tokens_in_flight = 0
        if len(outputs) != len(requests):
            raise RuntimeError(f"{type(self).__name__} returned {len(outputs)} results for {len(requests)} requests")
        self.stats.calls += 1
        for request, samples in zip(requests, outputs):
            self.count_answer(request, samples)
        return outputs

    def count_answer(self, request: GenerationRequest, samples: list[GenerationOutput]) -> None:
        """Check one request's samples and add them to the stats (a call is counted by whoever sent it)."""
        if len(samples) != request.n:
            raise RuntimeError(f"{type(self).__name__} returned {len(samples)} samples, asked for n={request.n}")
        self.stats.requests += 1
        self.stats.samples += len(samples)
        self.stats.generated_tokens += sum(o.num_tokens for o in samples)
        self.stats.prompt_tokens += sum(o.prompt_tokens for o in samples)
        self.stats.prompt_tokens_computed += prompt_tokens_computed(samples)

    def stream(self):
        """A `GenerationStream` for requests that become ready at different times (below). The
        default answers them in lockstep batches through `generate`; a backend whose engine can be stepped overrides
        it."""
        return GenerationStream(self)

    @abc.abstractmethod
    def _generate(self, requests: list[GenerationRequest]) -> list[list[GenerationOutput]]:
        """Return, for each request, exactly `request.n` outputs."""

    def reset_prefix_cache(self) -> None:
        """Forget the KV cache of earlier requests (vLLM's prefix cache), so that a policy reused by the next job of a
        sweep starts it as a fresh one would; the default caches nothing across calls."""

    def close(self) -> None:
        """Release GPU memory or worker processes; the default holds nothing."""


# -- streams ---------------------------------------------------------------------------------------------------------
# Requests that become ready at different times, answered as each one finishes: the seam that lets the problems of a
# tree search advance independently.
#
# A tree search is a loop per problem: generate the children of the chosen nodes, score them, choose again. Run in
# lockstep, every problem waits each iteration for the slowest sample of any problem, and the engine spends most of an
# iteration's tail decoding a handful of stragglers. A stream takes each problem's requests when that problem is ready
# and hands back each request's samples as soon as they are done, so the next iteration of a fast problem joins the
# engine's running batch while slow ones are still decoding (continuous batching across problems).
#
# `PolicyBackend.stream()` gives a `GenerationStream`. This default one is lockstep: `ready()` sends everything
# submitted
# so far in one `generate` call, so a search driven through it makes exactly the calls of an iteration-by-iteration
# loop. A backend with an engine it can step (vLLM) returns its own stream (`streams = True`). Samples do not depend on
# the schedule: every request carries its own seed.

Ticket = tuple[Hashable, GenerationRequest]


class GenerationStream:
    """Lockstep: `ready()` answers everything submitted since the last `ready()` in one batched `generate` call."""

    streams = False  # True: ready() returns as soon as any request is done (the search then schedules per problem)

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self._queued: list[Ticket] = []

    def submit(self, tickets: Sequence[Ticket]) -> None:
        """Queue requests; each ticket's key comes back with its samples."""
        self._queued.extend(tickets)

    @property
    def in_flight(self) -> int:
        """Requests submitted and not yet returned by `ready()`."""
        return len(self._queued)

    @property
    def free_slots(self) -> int:
        """How many more sequences the backend would run at once than it has in flight (a streaming search then
        scores the problems waiting on the PRM once their next requests would fill them). Lockstep: none."""
        return 0

    def ready(self) -> list[tuple[Hashable, list[GenerationOutput]]]:
        """Samples of at least one submitted request (here: all of them), as (key, samples) pairs."""
        tickets, self._queued = self._queued, []
        outputs = self.policy.generate([request for _, request in tickets])
        return [(key, samples) for (key, _), samples in zip(tickets, outputs)]

    def close(self) -> None:
        """Drop what is still in flight (a search that stopped early must not leave requests in a shared engine)."""
        self._queued = []

    def __enter__(self) -> GenerationStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
