"""Requests that become ready at different times, answered as each one finishes: the seam that lets the problems of a
tree search advance independently.

A tree search is a loop per problem: generate the children of the chosen nodes, score them, choose again. Run in
lockstep, every problem waits each iteration for the slowest sample of any problem, and the engine spends most of an
iteration's tail decoding a handful of stragglers. A stream takes each problem's requests when that problem is ready
and hands back each request's samples as soon as they are done, so the next iteration of a fast problem joins the
engine's running batch while slow ones are still decoding (continuous batching across problems).

`PolicyBackend.stream()` gives a `GenerationStream`. This default one is lockstep: `ready()` sends everything submitted
so far in one `generate` call, so a search driven through it makes exactly the calls of an iteration-by-iteration
loop. A backend with an engine it can step (vLLM) returns its own stream (`streams = True`). Samples do not depend on
the schedule: every request carries its own seed.
"""

from __future__ import annotations

from typing import Any, Hashable, Sequence

from tts.backends.base import GenerationOutput, GenerationRequest

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

    def __enter__(self) -> "GenerationStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
