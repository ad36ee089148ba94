"""Shared machinery of the step-level tree searches (beam, DVTS, lookahead, REBASE).

A tree search grows partial solutions one step (text up to and including a blank line) at a time. The strategies differ
only in *which* nodes they expand, *how many* children each gets, and when a problem is done; that policy lives in a
small per-problem state object (`TreeState`). Everything else is here and is the same for every strategy:

- one backend call per generation round for all active problems of a batch (`strategy.search_batch_size` problems at
  a time; null = the whole batch), and one PRM call per iteration for all of them;
- the last allowed iteration (`budget.num_iterations`) generates to the end without the stop string, so every node in
  flight finishes;
- a child is finished when the backend says `eos` / `length`, when its new step holds an extracted answer
  (`\\boxed{}`), or when the search generated it to the end;
- exact per-problem compute: generated tokens (rollouts included), PRM tokens (a shared PRM call is split over problems
  in proportion to the text each sent, `share_tokens`), backend calls the problem took part in.

    python tts/main.py strategy=beam n=16
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from tts.grading import extract_answer
from tts.scoring import reduce_scores
from tts.search.base import SearchOutput, batches, make_request, share_tokens
from tts.search.completion import STEP_SEPARATOR, Completion, split_steps

FINISHED_BY_BACKEND = ("eos", "length")
SEED_STRIDE = 1_000_003  # seed offset between repeated requests for one prefix (far from the sweep's seeds 0, 1, 2 ...)


@dataclass(eq=False)
class Node:
    """A partial (or finished) solution: the text so far, its steps and their PRM scores.

    `tokens` counts the tokens generated for this node's own text (its ancestors' steps included); `value` is what the
    search ranks it by (its reduced PRM score, or the score at the end of a lookahead rollout).
    """

    text: str = ""
    steps: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    tokens: int = 0
    finish_reason: Optional[str] = None  # None while the node can still be expanded
    value: float = 0.0

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def to_completion(self, finish_reason: Optional[str] = None) -> Completion:
        return Completion(text=self.text, steps=list(self.steps), step_scores=list(self.scores),
                          finish_reason=finish_reason or self.finish_reason or "truncated", tokens=self.tokens)


@dataclass(eq=False)
class Expansion:
    """Ask for `n` children of `parent`; `to_end` generates each to the end of the solution (no stop string)."""

    parent: Node
    n: int
    to_end: bool = False
    tag: object = None  # the state's own bookkeeping (e.g. which DVTS subtree asked)


class TreeState:
    """One problem's search. Subclasses decide what to expand next (`expansions`) and what to keep (`update`)."""

    def __init__(self, problem, cfg) -> None:
        self.problem = problem
        self.cfg = cfg
        self.n = int(cfg.n)
        self.reduction = str(cfg.scoring.reduction)
        self.compute = {"generated_tokens": 0, "prm_tokens": 0, "backend_calls": 0}
        self.done = False

    def expansions(self, last: bool) -> list[Expansion]:
        """What to generate this iteration; `last` is the final allowed iteration (everything goes to the end)."""
        raise NotImplementedError

    def update(self, groups: list[tuple[Expansion, list[Node]]]) -> None:
        """Take the scored children of this iteration's expansions (in the order `expansions` returned them)."""
        raise NotImplementedError

    def result(self) -> SearchOutput:
        raise NotImplementedError

    def rank(self, node: Node) -> float:
        return reduce_scores(node.scores, self.reduction)


def allocate(total: int, weights: list[float]) -> list[int]:
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


def top_k(nodes: list[Node], k: int) -> list[Node]:
    """The `k` highest-valued nodes, best first; ties keep their original order (so results are deterministic)."""
    return sorted(nodes, key=lambda node: -node.value)[:k]


def drop_duplicates(nodes: list[Node]) -> list[Node]:
    seen: set[str] = set()
    kept = []
    for node in nodes:
        if node.text not in seen:
            seen.add(node.text)
            kept.append(node)
    return kept


def _may_hold_answer(step: str) -> bool:
    """Cheap guard before `extract_answer`: each of its rules needs a box command or the word "answer"."""
    return "\\boxed" in step or "\\fbox" in step or "answer" in step.lower()


def _child(parent: Node, text: str, finish_reason: str, num_tokens: int, to_end: bool, max_tokens: int) -> Node:
    body = text[: -len(STEP_SEPARATOR)] if text.endswith(STEP_SEPARATOR) else text
    if STEP_SEPARATOR in body:
        new_steps = split_steps(text)
    else:  # the usual case: one step, up to the blank line
        body = body.strip()
        new_steps = [body] if body else []
    node = Node(text=parent.text + text, steps=parent.steps + new_steps, tokens=parent.tokens + num_tokens)
    if finish_reason in FINISHED_BY_BACKEND:
        node.finish_reason = finish_reason
    elif to_end:
        node.finish_reason = finish_reason or "eos"
    elif new_steps and _may_hold_answer(new_steps[-1]) and extract_answer(new_steps[-1]) is not None:
        node.finish_reason = "stop"  # the step boxed an answer: the solution is over
    elif node.tokens >= max_tokens:
        node.finish_reason = "length"
    elif not new_steps and not text.endswith(STEP_SEPARATOR):
        node.finish_reason = finish_reason  # nothing written and no step boundary: the model has stopped
    return node


def plain_config(cfg):
    """The config as nested namespaces: a search reads it per request, and DictConfig attribute access is ~30 us."""
    if isinstance(cfg, DictConfig):
        return _namespace(OmegaConf.to_container(cfg, resolve=True))
    return cfg


def _namespace(value):
    if isinstance(value, dict):
        return SimpleNamespace(**{k: _namespace(v) for k, v in value.items()})
    return value


def run_tree_search(problems, policy, prm, cfg, make_state, lookahead: int = 0) -> list[SearchOutput]:
    """Run `make_state(problem, cfg)` searches over `problems`, `strategy.search_batch_size` problems at a time.

    `lookahead` > 0 scores every unfinished child at the end of a greedy rollout of that many more steps (one extra
    backend call per rollout step, all problems batched); the rollout tokens count as generated compute.
    """
    cfg = plain_config(cfg)
    states = [make_state(p, cfg) for p in problems]
    if lookahead > 0:
        for state in states:
            state.compute["rollout_tokens"] = 0
    for chunk in batches(states, cfg.strategy.search_batch_size):
        _search_chunk(list(chunk), policy, prm, cfg, lookahead)
    return [state.result() for state in states]


def _search_chunk(states: list[TreeState], policy, prm, cfg, lookahead: int) -> None:
    stop = [STEP_SEPARATOR]
    max_tokens = int(cfg.budget.max_tokens)
    iterations = int(cfg.budget.num_iterations)
    for iteration in range(iterations):
        last = iteration == iterations - 1
        plan = []  # (state, [expansions]) for the problems still searching
        requests = []
        for state in states:
            if state.done:
                continue
            expansions = [e for e in state.expansions(last) if e.n > 0]
            if not expansions:
                state.done = True
                continue
            plan.append((state, expansions))
            repeats: dict[str, int] = {}
            for e in expansions:
                to_end = last or e.to_end
                # Two expansions of the same text (DVTS subtrees at the root, duplicate beams) must not draw the same
                # samples: the k-th repeat of a prefix gets its own seed. A prefix asked once keeps `seed`, so the
                # first iteration from the root samples exactly what best-of-N's first steps would be.
                k = repeats.get(e.parent.text, 0)
                repeats[e.parent.text] = k + 1
                requests.append(make_request(state.problem, cfg, prefix=e.parent.text, n=e.n,
                                             stop=None if to_end else stop,
                                             max_tokens=max(1, max_tokens - e.parent.tokens),
                                             seed_offset=SEED_STRIDE * k))
        if not plan:
            return
        outputs = policy.generate(requests)
        # children, grouped per expansion, per problem
        groups_per_state: list[list[tuple[Expansion, list[Node]]]] = []
        cursor = 0
        for state, expansions in plan:
            groups = []
            generated = 0
            for e in expansions:
                samples = outputs[cursor]
                cursor += 1
                to_end = last or e.to_end
                children = [_child(e.parent, o.text, o.finish_reason, o.num_tokens, to_end, max_tokens)
                            for o in samples]
                generated += sum(o.num_tokens for o in samples)
                groups.append((e, children))
            state.compute["generated_tokens"] += generated
            state.compute["backend_calls"] += 1
            groups_per_state.append(groups)

        # what the PRM reads for each child: its own steps, or its lookahead rollout
        rollouts = None
        if lookahead > 0 and not last:
            rollouts = _rollouts(plan, groups_per_state, policy, cfg, lookahead, max_tokens)
        _score(plan, groups_per_state, rollouts, prm)
        for (state, _), groups in zip(plan, groups_per_state):
            state.update(groups)


def _rollouts(plan, groups_per_state, policy, cfg, lookahead: int, max_tokens: int) -> list[dict[int, Node]]:
    """Greedy (temperature 0) continuations of every unfinished child, `lookahead` steps deep, one call per step.

    Returns, per problem, id(child) -> the node at the end of its rollout. Rollout tokens are generated compute
    (`generated_tokens`, and separately `rollout_tokens`) but never part of a completion's text.
    """
    tips: list[dict[int, Node]] = []
    for (state, _), groups in zip(plan, groups_per_state):
        tips.append({id(c): c for _, children in groups for c in children if not c.finished})
    stop = [STEP_SEPARATOR]
    for _ in range(lookahead):
        requests, owners = [], []
        for i, ((state, _), per) in enumerate(zip(plan, tips)):
            for key, tip in per.items():
                if tip.finished:
                    continue
                requests.append(make_request(state.problem, cfg, prefix=tip.text, n=1, temperature=0.0, stop=stop,
                                             max_tokens=max(1, max_tokens - tip.tokens)))
                owners.append((i, key))
        if not requests:
            break
        outputs = policy.generate(requests)
        called = set()
        for (i, key), samples in zip(owners, outputs):
            o = samples[0]
            state = plan[i][0]
            state.compute["generated_tokens"] += o.num_tokens
            state.compute["rollout_tokens"] += o.num_tokens
            called.add(i)
            tips[i][key] = _child(tips[i][key], o.text, o.finish_reason, o.num_tokens, False, max_tokens)
        for i in called:
            plan[i][0].compute["backend_calls"] += 1
    return tips


def _score(plan, groups_per_state, rollouts, prm) -> None:
    """One PRM call for every child of every problem; sets each child's step scores and its value."""
    step_lists, text_sent = [], []
    for i, groups in enumerate(groups_per_state):
        read = [c for _, children in groups for c in children]
        if rollouts is not None:
            read = [rollouts[i].get(id(c), c) for c in read]
        step_lists.append([node.steps for node in read])
        text_sent.append(sum(len(node.text) for node in read))
    before = prm.stats.tokens
    scores = prm.score([state.problem.problem for state, _ in plan], step_lists)
    shares = share_tokens(prm.stats.tokens - before, text_sent)
    for (state, _), groups, per_scores, share in zip(plan, groups_per_state, scores, shares):
        state.compute["prm_tokens"] += share
        j = 0
        for _, children in groups:
            for c in children:
                full = per_scores[j]
                j += 1
                c.scores = list(full[: len(c.steps)])
                c.value = reduce_scores(full, state.reduction)
