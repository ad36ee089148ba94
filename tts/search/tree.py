"""Shared machinery of the step-level tree searches (beam, DVTS, lookahead, REBASE).

A tree search grows partial solutions one step (text up to and including a blank line) at a time. The strategies differ
only in *which* nodes they expand, *how many* children each gets, and when a problem is done; that policy lives in a
small per-problem state object (`TreeState`). Everything else is here and is the same for every strategy:

- each problem's search is a generator that yields what it needs (requests to generate, candidates to score), and
  one driver answers all of them (the config's `search_batch_size` problems at a time; null = the whole batch). In
  lockstep (every backend but vLLM, or `strategy.schedule=lockstep`) that is one backend call per generation round
  for all active problems and one PRM call per iteration for all of them. With `strategy.schedule=per_problem` on a
  backend that streams (vLLM), a problem's next requests join the engine's running batch as soon as its scores are
  in, so no problem waits for another's slowest sample; the samples are the same (each request has its own seed);
- the last allowed iteration (`budget.num_iterations`) generates to the end without the stop string, so every node in
  flight finishes;
- a child is finished when the backend says `eos` / `length`, when its new step holds an extracted answer
  (`\\boxed{}`), or when the search generated it to the end;
- exact per-problem compute: generated tokens (rollouts included), PRM tokens (a shared PRM call is split over problems
  in proportion to the text each sent, `share_tokens`), backend calls the problem took part in.

    python tts/main.py strategy=beam n=16
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

import numpy as np

from tts.backends.base import GenerationStream
from tts.confidence.measures import completion_confidence
from tts.config.schema import Config, StrategyConfig, is_whole
from tts.data.problem import Problem
from tts.data.records import Completion
from tts.data.steps import STEP_SEPARATOR, split_steps
from tts.grading import extract_answer
from tts.scoring import reduce_scores
from tts.search.base import Compute, Finished, RunSpec, SearchOutput, Strategy, batches, make_request, share_tokens

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
    ids: Optional[tuple[int, ...]] = None  # the policy's token ids of `text` when known (the root's are empty)
    # (output text, its top-k log-probabilities) of every backend output `text` is made of, in order (None: the
    # backend returned none); a child shares its parent's tuple, so a path's arrays are held once
    pieces: Optional[tuple[tuple[str, np.ndarray], ...]] = ()

    @property
    def token_ids(self) -> Optional[tuple[int, ...]]:
        return () if not self.text else self.ids

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def to_completion(self, spec: RunSpec, finish_reason: Optional[str] = None) -> Completion:
        """The completion a strategy returns; its confidence summary (windows from `spec`) reads the outputs'
        log-probabilities concatenated, each step's tokens those of the output that wrote it."""
        return Completion(
            text=self.text,
            steps=list(self.steps),
            step_scores=list(self.scores),
            finish_reason=finish_reason or self.finish_reason or "truncated",
            tokens=self.tokens,
            confidence=completion_confidence(self.pieces, self.steps, spec.confidence_window, spec.confidence_tail)
            if self.pieces
            else None,
        )


@dataclass(eq=False)
class Expansion:
    """Ask for `n` children of `parent`; `to_end` generates each to the end of the solution (no stop string)."""

    parent: Node
    n: int
    to_end: bool = False
    tag: object = None  # the state's own bookkeeping (e.g. which DVTS subtree asked)


class TreeState:
    """One problem's search. Subclasses decide what to expand next (`expansions`) and what to keep (`update`), reading
    their knobs from `config` (a subclass narrows its type) and the run's from `spec`."""

    config: TreeSearchConfig

    def __init__(self, problem: Problem, config: TreeSearchConfig, spec: RunSpec) -> None:
        self.problem = problem
        self.config = config
        self.spec = spec
        self.n = spec.n
        self.compute = Compute(prompt_tokens=0, prompt_tokens_computed=0)
        self.done = False
        self.frontier: list[Expansion] = [Expansion(Node(), self.n)]  # the root, expanded N ways; `update` moves it

    def expansions(self, last: bool) -> list[Expansion]:
        """What to generate this iteration (by default the frontier); `last` is the final allowed iteration
        (everything goes to the end)."""
        return self.frontier

    def update(self, groups: list[tuple[Expansion, list[Node]]]) -> None:
        """Take the scored children of this iteration's expansions (in the order `expansions` returned them)."""
        raise NotImplementedError

    def result(self) -> SearchOutput:
        raise NotImplementedError

    def rank(self, node: Node) -> float:
        return reduce_scores(node.scores, self.spec.reduction)

    def output(self, finished: list[Node], unfinished: list[Node], shortfall: str) -> SearchOutput:
        """The first n of `finished`; only if the search ran out of iterations short of n, topped up with the best of
        `unfinished`, marked truncated. Fewer than n even so: noted (`shortfall`, given the count and n)."""
        completions = [node.to_completion(self.spec) for node in finished[: self.n]]
        completions += [
            node.to_completion(self.spec, "truncated") for node in top_k(unfinished, self.n - len(completions))
        ]
        note = None if len(completions) == self.n else shortfall.format(len(completions), self.n)
        return SearchOutput(completions=completions, compute=self.compute, note=note)


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


def _child(
    parent: Node,
    text: str,
    finish_reason: str,
    num_tokens: int,
    to_end: bool,
    max_tokens: int,
    token_ids: Optional[tuple[int, ...]] = None,
    top_logprobs: Optional[np.ndarray] = None,
) -> Node:
    body = text[: -len(STEP_SEPARATOR)] if text.endswith(STEP_SEPARATOR) else text
    if STEP_SEPARATOR in body:
        new_steps = split_steps(text)
    else:  # the usual case: one step, up to the blank line
        body = body.strip()
        new_steps = [body] if body else []
    node = Node(text=parent.text + text, steps=parent.steps + new_steps, tokens=parent.tokens + num_tokens)
    if parent.token_ids is not None and token_ids is not None:
        node.ids = parent.token_ids + tuple(token_ids)
    node.pieces = None if parent.pieces is None or top_logprobs is None else (*parent.pieces, (text, top_logprobs))
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


SCHEDULES = ("per_problem", "lockstep")


@dataclass
class TreeSearchConfig(StrategyConfig):
    """Knobs of every step-level tree search."""

    needs_prm: ClassVar[bool] = True  # the PRM's scores choose which nodes to expand

    # on a backend that streams (vLLM): problems advance together (lockstep: each iteration waits for every problem's
    # slowest sample) or independently (per_problem); the samples are the same either way
    schedule: str = "lockstep"

    def check(self, run: Config) -> None:
        super().check(run)
        self.require(
            self.schedule in SCHEDULES, "schedule", f"must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"
        )

    def check_width(self, width: int, run: Config) -> None:
        """`beam_width` M of beam, DVTS and lookahead: n / M beams or subtrees, so M must divide n."""
        self.require(is_whole(width) and width >= 1, "beam_width", f"must be a whole number >= 1, got {width!r}")
        self.require(
            width <= run.n,
            "beam_width",
            f"must be <= n ({run.n}): {self.name} keeps n / beam_width beams; lower beam_width or raise n",
        )
        self.require(
            run.n % width == 0,
            "beam_width",
            f"n ({run.n}) must be a multiple of beam_width ({width}) for {self.name}; "
            f"e.g. n={max(width, run.n - run.n % width)}",
        )


class TreeSearch(Strategy):
    """A strategy whose per-problem policy is a `TreeState` subclass, run by the shared step loop below."""

    state_class: ClassVar[type[TreeState]]
    config: TreeSearchConfig

    def search(self, problems, policy, prm, spec: RunSpec) -> list[SearchOutput]:
        return run_tree_search(
            problems, policy, prm, self.config, spec, self.state_class, finished=self.report_finished
        )


def run_tree_search(
    problems,
    policy,
    prm,
    config: TreeSearchConfig,
    spec: RunSpec,
    make_state: type[TreeState],
    lookahead: int = 0,
    finished: Optional[Finished] = None,
) -> list[SearchOutput]:
    """Run `make_state(problem, config, spec)` searches over `problems`, `config.search_batch_size` problems at a time.

    `lookahead` > 0 scores every unfinished child at the end of a greedy rollout of that many more steps (one extra
    backend call per rollout step, all problems batched); the rollout tokens count as generated compute.
    `finished` is handed each problem's result as soon as its search ends (problems of one step together).
    """
    states = [make_state(p, config, spec) for p in problems]
    if lookahead > 0:
        for state in states:
            state.compute.rollout_tokens = 0
    offset = 0
    for chunk in batches(states, config.search_batch_size):
        _search_chunk(list(chunk), policy, prm, config, spec, lookahead, finished, offset)
        offset += len(chunk)
    return [state.result() for state in states]


@dataclass
class _Generate:
    """A problem's search needs these requests answered (one list of samples per request, in order)."""

    requests: list


@dataclass
class _Score:
    """A problem's search needs these candidates scored; `text` (characters sent) shares out a shared PRM call."""

    problem: str
    step_lists: list[list[str]]
    text: int


def _search_chunk(
    states: list[TreeState],
    policy,
    prm,
    config: TreeSearchConfig,
    spec: RunSpec,
    lookahead: int,
    finished: Optional[Finished],
    offset: int,
) -> None:
    searches = [_search_problem(state, lookahead) for state in states]
    stream = policy.stream() if config.schedule == "per_problem" else GenerationStream(policy)

    def hand_over(done: list[int]) -> None:
        if finished is not None:
            finished([(offset + i, states[i].result()) for i in sorted(done)])

    with stream:
        _drive(searches, stream, prm, stream.streams, spec.n, hand_over)


def _drive(searches, stream, prm, per_problem: bool, n: int, hand_over=None) -> None:
    """Run every problem's search (a generator of `_Generate` / `_Score` needs) to its end.

    Lockstep (`per_problem` false, or a stream that answers in batches): everything submitted is generated in one
    call, and the PRM is called once every problem that is not generating waits for scores, i.e. once per iteration
    for all problems, as an iteration-by-iteration loop does. Per problem: a problem's next requests are submitted as
    soon as its scores are in. The PRM is called for the problems waiting on it once they are at least as many as
    those still generating, or once their next requests (up to `n` samples each) would fill half of the engine's free
    sequence slots (stragglers of a few problems must not leave it idle); otherwise they wait, so that PRM calls stay
    few and large.

    `hand_over` is called with the problems whose search ended during each step of this loop (a PRM call or a round
    of answered requests), before the next step starts.
    """
    waiting: dict[int, list] = {}  # problem -> its samples so far, one slot per request
    left: dict[int, int] = {}  # problem -> requests not yet answered
    to_score: list[tuple[int, _Score]] = []
    ended: list[int] = []

    def advance(i: int, answer) -> None:
        try:
            need = searches[i].send(answer)
        except StopIteration:
            ended.append(i)
            return
        if isinstance(need, _Generate) and not need.requests:
            advance(i, [])  # nothing to generate: nothing to wait for
        elif isinstance(need, _Generate):
            waiting[i], left[i] = [None] * len(need.requests), len(need.requests)
            stream.submit([((i, j), request) for j, request in enumerate(need.requests)])
        else:
            to_score.append((i, need))

    def worth_scoring() -> bool:
        if not left:
            return True  # nothing else can happen
        if not per_problem:
            return False
        free = stream.free_slots
        return len(to_score) >= len(left) or (free > 0 and len(to_score) * n >= free / 2)

    def report() -> None:
        if ended and hand_over is not None:
            hand_over(list(ended))
        ended.clear()

    for i in range(len(searches)):
        advance(i, None)
    while left or to_score:
        report()
        if to_score and worth_scoring():
            batch, to_score[:] = sorted(to_score, key=lambda item: item[0]), []  # problem order, as in lockstep
            before = prm.stats.tokens
            scores = prm.score([need.problem for _, need in batch], [need.step_lists for _, need in batch])
            shares = share_tokens(prm.stats.tokens - before, [need.text for _, need in batch])
            for (i, _), per_problem_scores, share in zip(batch, scores, shares):
                advance(i, (per_problem_scores, share))
            continue
        for (i, j), samples in stream.ready():
            waiting[i][j] = samples
            left[i] -= 1
            if not left[i]:
                del left[i]
                advance(i, waiting.pop(i))
    report()


def _search_problem(state: TreeState, lookahead: int):
    """One problem's search, iteration by iteration: yields what it needs (`_Generate`, `_Score`) and is sent the
    answers (samples per request; (scores per candidate, PRM tokens of its share))."""
    stop = [STEP_SEPARATOR]
    max_tokens = state.spec.max_tokens
    iterations = state.spec.num_iterations
    for iteration in range(iterations):
        last = iteration == iterations - 1
        expansions = [e for e in state.expansions(last) if e.n > 0]
        if not expansions:
            state.done = True
            return
        requests = []
        repeats: dict[str, int] = {}
        for e in expansions:
            # Two expansions of the same text (DVTS subtrees at the root, duplicate beams) must not draw the same
            # samples: the k-th repeat of a prefix gets its own seed. A prefix asked once keeps `seed`, so the first
            # iteration from the root samples exactly what best-of-N's first steps would be.
            k = repeats.get(e.parent.text, 0)
            repeats[e.parent.text] = k + 1
            requests.append(
                make_request(
                    state.problem,
                    state.spec,
                    state.config,
                    prefix=e.parent.text,
                    prefix_ids=e.parent.token_ids,
                    n=e.n,
                    stop=None if (last or e.to_end) else stop,
                    max_tokens=max(1, max_tokens - e.parent.tokens),
                    seed_offset=SEED_STRIDE * k,
                )
            )
        outputs = yield _Generate(requests)
        groups: list[tuple[Expansion, list[Node]]] = []
        for e, samples in zip(expansions, outputs):
            to_end = last or e.to_end
            groups.append(
                (
                    e,
                    [
                        _child(
                            e.parent,
                            o.text,
                            o.finish_reason,
                            o.num_tokens,
                            to_end,
                            max_tokens,
                            o.token_ids,
                            o.top_logprobs,
                        )
                        for o in samples
                    ],
                )
            )
            state.compute.generated_tokens += sum(o.num_tokens for o in samples)
            state.compute.count_prompts(samples)
        state.compute.backend_calls += 1

        # what the PRM reads for each child: its own steps, or its lookahead rollout
        children = [c for _, group in groups for c in group]
        read = children
        if lookahead > 0 and not last:
            tips = yield from _rollout(state, children, lookahead, max_tokens)
            read = [tips.get(id(c), c) for c in children]
        scores, share = yield _Score(
            state.problem.problem, [node.steps for node in read], sum(len(node.text) for node in read)
        )
        state.compute.prm_tokens += share
        for child, full in zip(children, scores):
            child.scores = list(full[: len(child.steps)])
            child.value = reduce_scores(full, state.spec.reduction)
        state.update(groups)


def _rollout(state: TreeState, children: list[Node], lookahead: int, max_tokens: int):
    """Greedy (temperature 0) continuations of every unfinished child, `lookahead` steps deep, one request round per
    step. Returns id(child) -> the node at the end of its rollout. Rollout tokens are generated compute
    (`generated_tokens`, and separately `rollout_tokens`) but never part of a completion's text."""
    tips = {id(c): c for c in children if not c.finished}
    stop = [STEP_SEPARATOR]
    for _ in range(lookahead):
        keys = [key for key, tip in tips.items() if not tip.finished]
        if not keys:
            break
        outputs = yield _Generate(
            [
                make_request(
                    state.problem,
                    state.spec,
                    state.config,
                    prefix=tips[key].text,
                    prefix_ids=tips[key].token_ids,
                    n=1,
                    temperature=0.0,
                    stop=stop,
                    max_tokens=max(1, max_tokens - tips[key].tokens),
                )
                for key in keys
            ]
        )
        for key, samples in zip(keys, outputs):
            o = samples[0]
            state.compute.generated_tokens += o.num_tokens
            state.compute.rollout_tokens = (state.compute.rollout_tokens or 0) + o.num_tokens
            state.compute.count_prompts(samples)
            tips[key] = _child(tips[key], o.text, o.finish_reason, o.num_tokens, False, max_tokens, o.token_ids)
            # (a rollout is read by the PRM, never returned: its log-probabilities are not kept)
        state.compute.backend_calls += 1
    return tips
