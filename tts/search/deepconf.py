"""DeepConf online (Fu et al. 2025, "Deep Think with Confidence", arXiv 2508.15260, Algorithm 2): sample traces until
their confidence-weighted vote agrees, and stop any trace whose confidence falls below what the warm-up traces set.

    python tts/main.py strategy=deepconf prm=none n=32

Per problem, with a budget of n traces:

1. warm-up: `warmup` complete traces (at most n) in one request. Each trace's confidence is its lowest group confidence
   (the mean token confidence over a sliding window of `scoring.confidence_window` tokens, tts.confidence.measures);
   the stopping threshold s is the (100 - eta)th percentile of the warm-up confidences, so the top eta% of them clear
   it (eta 10: aggressive, only the most confident tenth; eta 90: conservative).
2. online: further traces are generated step by step (each request continues a trace's text up to the next blank line,
   as the tree searches do), at most `wave` of them in flight per problem. At every step boundary a trace whose lowest
   group confidence so far is below s is stopped; the tokens it generated count. A trace that finishes joins the vote.
3. the vote: every complete trace whose confidence clears s votes for its answer with its confidence as weight. Once
   the leading answer holds at least `tau` of the vote weight (after the warm-up or after any later trace finishes),
   sampling stops; traces still in flight are cut ("cancelled", their tokens count too). Otherwise it stops when n
   traces have been started and all of them have ended.

A real engine could stop a trace at the token where its window dips; here checks happen at step boundaries on every
backend, so a stopped trace may run on to the end of the step it dipped in (at most one step of tokens per stop).

Every trace started is returned as a completion (`extra["deepconf"]`: warmup / kept / stopped / cancelled,
`extra["confidence"]`: its lowest group confidence, `Completion.vote`: whether it votes, `Completion.weight`: its
vote weight), so a problem has n completions or fewer with a `note` saying that sampling stopped early. The pipeline
scores the strategy's own answer as `final` (the weighted vote over the traces that vote; acc/final in metrics.json)
and counts `traces_generated`, `traces_stopped`, `traces_used` per problem. The PRM is not needed: with prm=none no
PRM scores anything; with a PRM every returned completion's steps are scored as best-of-N's are.

A backend that returns no log-probabilities gives no confidence: nothing is stopped, every complete trace votes with
weight 1, and the strategy is answer-consensus early stopping (a warning says so once).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar, Optional

import numpy as np

from tts.backends.base import GenerationOutput, GenerationRequest
from tts.confidence.measures import completion_confidence, group_confidence, lowest_group, token_confidence
from tts.config.schema import Config, StrategyConfig, is_whole, require
from tts.data.records import Completion
from tts.data.steps import STEP_SEPARATOR
from tts.grading import extract_answer, normalize_answer
from tts.search.base import Compute, RunSpec, SearchOutput, Strategy, make_request, score_samples
from tts.search.tree import SEED_STRIDE, Node, _child

log = logging.getLogger(__name__)


@dataclass
class DeepConfConfig(StrategyConfig):
    adaptive: ClassVar[bool] = True  # stops traces whose confidence falls below the warm-up threshold

    name: str = "deepconf"
    warmup: int = 16  # N_init: complete traces that set the threshold (at most n are drawn)
    eta: float = 10.0  # keep the top eta% of warm-up confidences (threshold: their (100 - eta)th percentile); 90: safe
    tau: float = 0.95  # stop sampling once the leading answer holds this share of the confidence-weighted vote
    wave: int = 4  # online traces in flight per problem at once (smaller: fewer wasted once the vote agrees)

    def check(self, run: Config) -> None:
        super().check(run)
        for knob in ("warmup", "wave"):
            value = getattr(self, knob)
            self.require(is_whole(value) and value >= 1, knob, f"must be a whole number >= 1, got {value!r}")
        self.require(0.0 < self.eta <= 100.0, "eta", f"must be a percentage in (0, 100], got {self.eta}")
        self.require(0.0 < self.tau <= 1.0, "tau", f"must be in (0, 1], got {self.tau}")
        require(
            run.model.top_logprobs >= 1,
            "model.top_logprobs",
            f"strategy=deepconf reads the policy's token confidence: ask for k >= 1 log-probabilities per token "
            f"(the default is 5), got {run.model.top_logprobs}",
        )


def answer_key(text: str) -> Optional[str]:
    """The answer a trace votes for during the search (normalised text; grading later uses full equivalence, so the
    search may see two equivalent forms as two answers and sample a little longer, never shorter)."""
    answer = extract_answer(text)
    return None if answer is None else normalize_answer(answer)


def consensus(keys: list[Optional[str]], weights: list[float]) -> float:
    """The share of the vote weight held by the leading answer (0 when nothing with an answer votes)."""
    totals: dict[str, float] = {}
    for key, weight in zip(keys, weights):
        if key is not None:
            totals[key] = totals.get(key, 0.0) + weight
    total = sum(totals.values())
    return max(totals.values()) / total if total > 0 else 0.0


@dataclass(eq=False)
class Trace:
    """One sampled solution, grown step by step (or written whole in the warm-up), with its token confidences."""

    index: int  # its place among the problem's traces: the seed offset of its requests
    warmup: bool
    node: Node = field(default_factory=Node)
    tokens: Optional[np.ndarray] = None  # token confidences so far (None: the backend gave no log-probabilities)
    confidence: Optional[float] = None  # lowest group confidence so far (a trace shorter than the window: its mean)
    status: str = "running"  # running -> kept (finished) | stopped (low confidence) | cancelled (the vote agreed)
    steps_taken: int = 0
    outputs: list[GenerationOutput] = field(default_factory=list)  # every backend output, for the prompt accounting

    def add(self, output: GenerationOutput, to_end: bool, max_tokens: int, window: int) -> None:
        self.node = _child(
            self.node,
            output.text,
            output.finish_reason,
            output.num_tokens,
            to_end,
            max_tokens,
            output.token_ids,
            output.top_logprobs,
        )
        self.outputs.append(output)
        self.steps_taken += 1
        if output.top_logprobs is not None:
            new = token_confidence(output.top_logprobs)
            self.tokens = new if self.tokens is None else np.concatenate([self.tokens, new])
            self.confidence = lowest_group(group_confidence(self.tokens, window))


class _ProblemSearch:
    """One problem's traces, threshold and vote."""

    def __init__(self, problem, spec: RunSpec, config: DeepConfConfig) -> None:
        self.problem = problem
        self.spec = spec
        self.config = config
        self.traces: list[Trace] = []
        self.threshold: Optional[float] = None
        self.agreed = False
        self.calls = 0  # backend calls this problem took part in

    def votes(self, trace: Trace) -> bool:
        if trace.status != "kept":
            return False
        return self.threshold is None or trace.confidence is None or trace.confidence >= self.threshold

    @staticmethod
    def weight(trace: Trace) -> float:
        return 1.0 if trace.confidence is None else trace.confidence

    def take_warmup(self, samples: list[GenerationOutput]) -> None:
        for j, sample in enumerate(samples):
            trace = Trace(index=j, warmup=True)
            trace.add(sample, to_end=True, max_tokens=self.spec.max_tokens, window=self.spec.confidence_window)
            trace.status = "kept"
            self.traces.append(trace)
        values = [t.confidence for t in self.traces if t.confidence is not None]
        if values:
            self.threshold = float(np.percentile(values, 100.0 - self.config.eta))
        self.update_vote()

    def update_vote(self) -> None:
        voters = [t for t in self.traces if self.votes(t)]
        share = consensus([answer_key(t.node.text) for t in voters], [self.weight(t) for t in voters])
        if share >= self.config.tau:
            self.agreed = True
            for trace in self.running():
                trace.status = "cancelled"

    def running(self) -> list[Trace]:
        return [t for t in self.traces if t.status == "running"]

    def refill(self) -> None:
        """Start traces until `wave` are in flight or n have been started."""
        if self.agreed:
            return
        while len(self.running()) < self.config.wave and len(self.traces) < self.spec.n:
            self.traces.append(Trace(index=len(self.traces), warmup=False))

    def request(self, trace: Trace) -> GenerationRequest:
        last = trace.steps_taken >= self.spec.num_iterations - 1
        return make_request(
            self.problem,
            self.spec,
            self.config,
            prefix=trace.node.text,
            prefix_ids=trace.node.token_ids,
            stop=None if last else [STEP_SEPARATOR],
            max_tokens=max(1, self.spec.max_tokens - trace.node.tokens),
            seed_offset=SEED_STRIDE * trace.index,
        )

    def take_step(self, trace: Trace, sample: GenerationOutput) -> None:
        last = trace.steps_taken >= self.spec.num_iterations - 1
        trace.add(sample, to_end=last, max_tokens=self.spec.max_tokens, window=self.spec.confidence_window)
        value = trace.confidence
        if self.threshold is not None and value is not None and value < self.threshold:
            trace.status = "stopped"  # also in its last step: a token-level check would have stopped it there
        elif trace.node.finished:
            trace.status = "kept"

    def result(self, step_lists, scores, prm_tokens: int) -> SearchOutput:
        spec = self.spec
        completions = []
        for trace, steps, step_scores in zip(self.traces, step_lists, scores):
            votes = self.votes(trace)
            pieces = trace.node.pieces
            completions.append(
                Completion(
                    text=trace.node.text,
                    steps=steps,
                    step_scores=step_scores,
                    finish_reason=trace.node.finish_reason or trace.status,
                    tokens=trace.node.tokens,
                    extra={"deepconf": "warmup" if trace.warmup else trace.status, "confidence": trace.confidence},
                    vote=votes,
                    weight=self.weight(trace) if votes else 0.0,
                    confidence=completion_confidence(pieces, steps, spec.confidence_window, spec.confidence_tail)
                    if pieces
                    else None,
                )
            )
        stopped = sum(t.status == "stopped" for t in self.traces)
        used = sum(bool(c.vote) for c in completions)
        compute = Compute(
            generated_tokens=sum(t.node.tokens for t in self.traces),
            prm_tokens=prm_tokens,
            backend_calls=self.calls,
            traces_generated=len(self.traces),
            traces_stopped=stopped,
            traces_used=used,
        )
        compute.count_prompts(o for t in self.traces for o in t.outputs)
        note = None
        if len(completions) < self.spec.n:  # only the vote stops a problem before n traces have started
            note = (
                f"deepconf: the confidence-weighted vote agreed after {len(completions)} of {self.spec.n} traces "
                f"({stopped} stopped, {used} voted)"
            )
        return SearchOutput(completions=completions, compute=compute, note=note)


class DeepConf(Strategy):
    config: DeepConfConfig

    def search(self, problems, policy, prm, spec: RunSpec) -> list[SearchOutput]:
        results: list[SearchOutput] = []
        warned = False
        for chunk in self.chunks(problems, results):
            searches = [_ProblemSearch(p, spec, self.config) for p in chunk]
            warmup = min(self.config.warmup, spec.n)
            outputs = policy.generate([make_request(p, spec, self.config, n=warmup) for p in chunk])
            for search, samples in zip(searches, outputs):
                search.calls += 1
                search.take_warmup(samples)
            if not warned and any(t.tokens is None for s in searches for t in s.traces):
                log.warning("deepconf: the backend returned no log-probabilities; no trace is stopped for confidence")
                warned = True
            while True:
                live: list[tuple[_ProblemSearch, Trace]] = []
                for search in searches:
                    search.refill()
                    live.extend((search, trace) for trace in search.running())
                if not live:
                    break
                outputs = policy.generate([search.request(trace) for search, trace in live])
                for (search, trace), samples in zip(live, outputs):
                    search.take_step(trace, samples[0])
                for search in {id(s): s for s, _ in live}.values():  # each problem in this call, once
                    search.calls += 1
                    search.update_vote()
            # with prm=none the PRM scores nothing, at no cost; with a PRM the returned steps are scored as best-of-N's
            step_lists, scores, prm_tokens = score_samples(
                prm, chunk, [[t.node.text for t in s.traces] for s in searches]
            )
            results.extend(s.result(st, sc, pt) for s, st, sc, pt in zip(searches, step_lists, scores, prm_tokens))
        return results
