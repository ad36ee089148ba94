"""Which candidates of one PRM call share a token prefix worth computing once (`prm/engine=hf`, its
`enable_prefix_caching`).

Beam search scores the children of every parent together: they share the parent's tokens, and in the first iteration
every candidate of a problem shares the prompt. Sorted by token ids, candidates with a common prefix sit next to each
other, and the prefix a run of sorted candidates shares is the shortest common prefix of neighbours in the run. The plan
cuts each problem's sorted candidates into the runs that save the most tokens, (members - 1) x shared prefix per run:
a parent's children form one run rather than one run per problem, because the parent's tokens are then shared too.

Equality is on token ids, never on text, so a BPE merge across a step boundary cannot make two candidates look alike.

    plan_prefix_groups(["p", "p", "q"], [[1, 2, 3, 4], [1, 2, 3, 5], [9]], min_shared=2)
    # [PrefixGroup(members=[0, 1], shared=3), PrefixGroup(members=[2], shared=0)]
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

#: below this many shared tokens a group is not worth its extra forward pass and cache copy: score the members whole
MIN_SHARED_TOKENS = 16


@dataclass
class PrefixGroup:
    """Candidates (indices into the call) whose token ids all start with the same `shared` tokens (0: one alone)."""

    members: list[int]
    shared: int


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Binary search on slice equality: a few comparisons that run in C, not a Python loop over every token (the
    prefixes are thousands of tokens long, and a call compares every neighbour pair)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def plan_prefix_groups(
    keys: Sequence[Hashable], sequences: Sequence[list[int]], min_shared: int = MIN_SHARED_TOKENS
) -> list[PrefixGroup]:
    """Groups over all `sequences`, formed among those with the same key (the problem: different problems share at
    most a system prompt, and keeping them apart keeps the plan cheap). Every index is in exactly one group."""
    by_key: dict[Hashable, list[int]] = {}
    for index, key in enumerate(keys):
        by_key.setdefault(key, []).append(index)
    groups = []
    for indices in by_key.values():
        for run in best_runs([sequences[i] for i in indices], min_shared):
            groups.append(PrefixGroup([indices[j] for j in run.members], run.shared))
    return groups


def best_runs(sequences: Sequence[list[int]], min_shared: int) -> list[PrefixGroup]:
    """Cut the sorted sequences into runs that save the most tokens (a dynamic programme over the cut points); a run
    whose shared prefix is shorter than `min_shared` is not formed, its sequences stay alone."""
    n = len(sequences)
    order = sorted(range(n), key=sequences.__getitem__)
    neighbours = [common_prefix_length(sequences[a], sequences[b]) for a, b in zip(order, order[1:])]
    saved = [0] * (n + 1)  # saved[end]: the most tokens saved over the first `end` sorted sequences
    run_start = [0] * (n + 1)  # run_start[end]: where the last run of that best cut starts
    for end in range(1, n + 1):
        saved[end], run_start[end] = saved[end - 1], end - 1
        shared = None
        for start in range(end - 2, -1, -1):  # the run order[start:end]
            if shared is None or neighbours[start] < shared:
                shared = neighbours[start]
            if shared < min_shared:
                break
            if saved[start] + (end - start - 1) * shared > saved[end]:
                saved[end], run_start[end] = saved[start] + (end - start - 1) * shared, start
    runs = []
    end = n
    while end > 0:
        start = run_start[end]
        members = [order[k] for k in range(start, end)]
        runs.append(PrefixGroup(members, min(neighbours[start : end - 1]) if len(members) > 1 else 0))
        end = start
    return runs[::-1]
