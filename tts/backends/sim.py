"""The simulated policy (`model=sim`): writes step-by-step solutions to synthetic problems, deterministic per seed.

It reads the problem statement from the chat, works out the correct solution (`tts.data.synthetic.solve`), and then
writes it step by step in the system prompt's format, steps separated by a blank line, ending in `\\boxed{...}`. Each
step
is right with probability sigmoid(slope * (skill - difficulty) * temperature factor); after the first error the solution
follows one of a few wrong paths and ends in that path's wrong answer, so wrong answers cluster as in real models.
With `varied_length` (default on) the solutions of one problem differ in shape and length: adjacent steps merged into
one, usual checking steps skipped, others added (`tts.data.synthetic.next_steps`), right and wrong solutions alike.
Continuing a partial answer (`request.prefix`) works as for a real model: the prefix is read back to tell whether the
solution has already gone wrong and on which path. A problem it cannot read gets a fluent but wrong solution.

Every random draw is a hash of (seed, problem, text so far, sample index), so a sample generated in one call equals the
same sample generated step by step, and temperature 0 is greedy (the same for every seed and sample).

Token confidence (`request.top_logprobs = k > 0`): each output also carries a (num_tokens, k) array of top-k
log-probabilities (`sim_top_logprobs`, below). The token distribution is geometric with a sharpness drawn once per
output, independent of everything tied to correctness; from the first wrong step on, the sharpness falls by
`confidence_signal` (docs/sim.md#token-confidence). With `confidence_signal = 0` every row of an output is the same row
and that row depends on no draw the text depends on, so no confidence measure can tell right from wrong.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np

from tts.backends.base import FinishReason, GenerationOutput, GenerationRequest, PolicyBackend
from tts.config.schema import Config, ModelConfig, PolicyBackendConfig
from tts.data.steps import STEP_SEPARATOR
from tts.data.synthetic import (
    FINAL_TEMPLATE,
    PHRASINGS,
    Plan,
    canonical_step,
    next_steps,
    perturb_last_integer,
    right_prefix,
    solve,
    stable_normal,
    stable_uniform,
    with_phrasing,
)
from tts.grading.extract import extract_answer

_TOKEN = re.compile(r"\w+|[^\w\s]")
SLOPE = 1.6  # logit per unit of (skill - difficulty): sets how sharply accuracy falls with difficulty
# Shapes of a solution when `model.backend.varied_length` is on (real models do not write one problem the same way
# twice):
MERGE_PROB = 0.25  # two adjacent core steps are written as one step
KEEP_CHECK_PROB = 0.8  # one of the problem's usual checking steps is written (else skipped)
EXTRA_CHECK_PROB = 0.2  # one of the other checking steps is added
# Token confidence (see sim_top_logprobs): log-sharpness of the token distribution, per output
SHARPNESS = 2.0  # median sharpness: the top token takes 1 - exp(-2) = 86% of the mass
SHARPNESS_SPREAD = 0.3  # s.d. of the log-sharpness between outputs (the noise every confidence measure sees)
AFTER_ERROR = 0.5  # steps after the first wrong one fall by this fraction of `confidence_signal` (the slip itself: all)


def count_tokens(text: str) -> int:
    """The sim's tokenizer: words and single punctuation marks (close to a BPE count on LaTeX-heavy text)."""
    return len(_TOKEN.findall(text))


_TOKEN_COUNTS: dict[str, int] = {}


def _count_cached(piece: str) -> int:
    """`count_tokens` of a step text; the sim writes the same few step texts many times, so they are remembered."""
    count = _TOKEN_COUNTS.get(piece)
    if count is None:
        if len(_TOKEN_COUNTS) > 1_000_000:
            _TOKEN_COUNTS.clear()
        count = _TOKEN_COUNTS[piece] = count_tokens(piece)
    return count


def truncate_to_tokens(text: str, max_tokens: int) -> str:
    for i, match in enumerate(_TOKEN.finditer(text)):
        if i == max_tokens:
            return text[: match.start()]
    return text


@dataclass(frozen=True)
class _State:
    """Where a partial solution stands: its position in the plan (`next_steps`), the steps written so far, and the
    wrong path it is on (None: still right)."""

    position: int
    written: int
    path: int | None


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _unreadable_plan(problem: str, num_wrong: int) -> Plan:
    """A problem the sim cannot solve: three generic steps and an answer drawn from a few guesses."""
    guesses = tuple(str(2 + int(stable_uniform("guess", problem, j) * 97)) for j in range(num_wrong))
    steps = (
        "## Step 1: Understand the problem\nWe identify the quantities involved.",
        "## Step 2: Set up the computation\nWe combine the given values.",
        FINAL_TEMPLATE % guesses[0],
    )
    core = tuple((title, body) for title, body in (step[len("## Step 1: ") :].split("\n", 1) for step in steps[:2]))
    return Plan(
        problem=problem,
        steps=steps,
        answer="",
        answer_forms=("",),
        wrong_answers=guesses,
        difficulty=10.0,
        subject="unknown",
        core=core,
    )


def sim_top_logprobs(pieces: Sequence[tuple[int, float]], z: float, signal: float, k: int) -> np.ndarray:
    """The (tokens, k) top-k log-probabilities of one output written as `pieces` of (tokens, drop).

    Every token's distribution is geometric over the vocabulary, P(j) = (1 - e^-b) e^(-b j) for the j-th most likely
    token, so one number b (the sharpness) fixes every confidence measure, and each measure rises with b. An output's
    log-sharpness is log SHARPNESS + SHARPNESS_SPREAD z, with z a standard normal drawn once per output from draws the
    text does not use; a piece's tokens lose `signal * drop` of it (drop 1 for the first wrong step, AFTER_ERROR for
    the wrong steps after it, 0 for right ones). So with signal 0 every row is the same function of z alone, and the
    right and wrong outputs' measures have exactly the same distribution, whatever their lengths or problems."""
    counts = np.fromiter((count for count, _ in pieces), dtype=np.int64, count=len(pieces))
    drops = np.fromiter((drop for _, drop in pieces), dtype=np.float64, count=len(pieces))
    log_sharpness = math.log(SHARPNESS) + SHARPNESS_SPREAD * z - signal * np.repeat(drops, counts)
    sharpness = np.exp(log_sharpness)[:, None]
    rows = np.log(-np.expm1(-sharpness)) - sharpness * np.arange(k)
    return rows.astype(np.float32)


@dataclass
class SimPolicyConfig(PolicyBackendConfig):
    """The simulated policy's knobs (`model.backend.*`; conf/model/backend/sim.yaml says what each one does)."""

    synthetic_only: ClassVar[bool] = True

    name: str = "sim"
    skill: float = 1.2
    temperature_sensitivity: float = 1.0
    num_wrong_answers: int = 8  # calibrated: docs/sim.md#calibration
    wrong_answer_skew: float = 0.5
    phrasings: int = 1
    varied_length: bool = True
    # review and revision prompts (below: respond)
    verify_accuracy: float = 0.8
    verify_difficulty_sensitivity: float = 1.0
    verify_unparsed_prob: float = 0.02
    revision_fix_prob: float = 0.9
    revision_break_prob: float = 0.02
    # token confidence (request.top_logprobs > 0; see sim_top_logprobs)
    confidence_signal: float = 1.2  # re-set with the calibration (docs/sim.md#token-confidence)

    def check(self, run: Config) -> None:
        super().check(run)
        self.require(
            1 <= self.phrasings <= len(PHRASINGS),
            "phrasings",
            f"must be in [1, {len(PHRASINGS)}], got {self.phrasings}",
        )
        for knob in ("verify_accuracy", "verify_unparsed_prob", "revision_fix_prob", "revision_break_prob"):
            value = getattr(self, knob)
            self.require(0.0 <= value <= 1.0, knob, f"must be a probability in [0, 1], got {value}")
        self.require(self.confidence_signal >= 0.0, "confidence_signal", f"must be >= 0, got {self.confidence_signal}")


class SimPolicy(PolicyBackend):
    """See the module docstring. Built from `model.backend` (a SimPolicyConfig); the model's weights are the sim's
    own, so `model` is not read."""

    def __init__(self, config: SimPolicyConfig, model: Optional[ModelConfig] = None, seed: int = 0) -> None:
        super().__init__()
        cfg = config
        self.skill = float(cfg.skill)
        self.temperature_sensitivity = float(cfg.temperature_sensitivity)
        self.num_wrong = max(1, int(cfg.num_wrong_answers))
        skew = float(cfg.wrong_answer_skew)
        weights = [1.0 / (j + 1) ** skew for j in range(self.num_wrong)]
        total = sum(weights)
        self._wrong_cdf = [sum(weights[: j + 1]) / total for j in range(self.num_wrong)]
        self.seed = seed
        self.phrasings = int(cfg.phrasings)
        self.varied_length = bool(cfg.varied_length)
        self.cfg = cfg  # the review and revision answers read their knobs (verify_accuracy, revision_fix_prob, ...)
        self._plans: dict[str, Plan] = {}
        self._wrong_steps: dict[tuple[str, str, int], str] = {}

    # -- the world ------------------------------------------------------------------------------------------------

    def plan(self, problem: str) -> Plan:
        plan = self._plans.get(problem)
        if plan is None:
            plan = solve(problem) or _unreadable_plan(problem, self.num_wrong)
            self._plans[problem] = plan
        return plan

    def wrong_step(self, plan: Plan, right: str, path: int) -> str:
        """The step `right` (a right step text) gone wrong on path `path`: a slip in its mathematics, or the path's
        wrong answer boxed when `right` is the final step."""
        key = (plan.problem, right, path)
        step = self._wrong_steps.get(key)
        if step is None:
            if len(self._wrong_steps) > 1_000_000:
                self._wrong_steps.clear()
            step = self._wrong_steps[key] = self._make_wrong_step(plan, right, path)
        return step

    def _make_wrong_step(self, plan: Plan, right: str, path: int) -> str:
        wrong_answer = plan.wrong_answers[path % len(plan.wrong_answers)]
        if right == plan.steps[-1]:
            return FINAL_TEMPLATE % wrong_answer
        header, _, body = right.partition("\n")
        slipped = perturb_last_integer(body, path + 1)  # the slip is in the mathematics, never the step number
        if slipped is None or slipped == body:
            slipped = f"{body}\nSo the result is ${wrong_answer}$."
        return f"{header}\n{slipped}"

    def step_probability(self, plan: Plan, temperature: float) -> float:
        """Probability that one step is right: falls with difficulty; temperature flattens it towards 1/2."""
        factor = max(0.2, 1.0 + self.temperature_sensitivity * (0.8 - temperature))
        return _sigmoid(SLOPE * (self.skill - plan.difficulty) * factor)

    def read_prefix(self, plan: Plan, prefix: str) -> _State:
        steps = [s.strip() for s in prefix.split(STEP_SEPARATOR) if s.strip()]
        right, position = right_prefix(plan, steps)
        path = None
        for k in range(right, len(steps)):  # the wrong part: which path, and how far along the plan it is
            step = canonical_step(steps[k])
            options = next_steps(plan, position, k + 1)
            if not options:
                break
            if path is None:
                found = [
                    (j, after)
                    for text, after in options
                    for j in range(self.num_wrong)
                    if step == self.wrong_step(plan, text, j)
                ]
                path = found[0][0] if found else int(stable_uniform("path", plan.problem, step) * self.num_wrong)
                after = found[0][1] if found else None
            else:
                after = next((a for text, a in options if step == self.wrong_step(plan, text, path)), None)
            if after is None:  # not a step this policy writes: a boxed answer ends it, anything else counts as one step
                after = plan.done if "\\boxed" in step else options[0][1]
            position = after
        return _State(position=position, written=len(steps), path=path)

    def _shape(self, plan: Plan, options: tuple, position: int, draw) -> int:
        """Which of the right `options` the solution takes next (see MERGE_PROB etc.); `draw(tag)` is uniform."""
        core = len(plan.core)
        if position < core:
            return 1 if self.varied_length and len(options) > 1 and draw("merge") < MERGE_PROB else 0
        for i, (_, after) in enumerate(options[:-1]):
            usual = after - 1 - core < plan.typical_checks
            if not self.varied_length:
                return i if usual else len(options) - 1
            if draw(f"check{after}") < (KEEP_CHECK_PROB if usual else EXTRA_CHECK_PROB):
                return i
        return len(options) - 1

    def _draw_path(self, u: float) -> int:
        return next(j for j, c in enumerate(self._wrong_cdf) if u <= c)

    # -- generation -----------------------------------------------------------------------------------------------

    def _generate(self, requests: list[GenerationRequest]) -> list[list[GenerationOutput]]:
        outputs = [self._samples(request) for request in requests]
        for request, samples in zip(requests, outputs):  # the sim's tokens of the prompt; it reuses nothing
            tokens = sum(_count_cached(m["content"]) for m in request.messages) + _count_cached(request.prefix)
            for o in samples:
                o.prompt_tokens = o.prompt_tokens_computed = tokens
        return outputs

    def _samples(self, request: GenerationRequest) -> list[GenerationOutput]:
        """All `request.n` samples; the per-request work (plan, reading the prefix) is done once, not per sample."""
        problem = request.problem
        if "<problem>" in problem:
            return [self._sample(request, k) for k in range(request.n)]
        setup = self._setup(request, problem)
        return [self._write(request, k, setup) for k in range(request.n)]

    def _setup(self, request: GenerationRequest, problem: str) -> tuple:
        plan = self.plan(problem)
        return (
            plan,
            self.read_prefix(plan, request.prefix),
            self.step_probability(plan, request.temperature),
            [s for s in (request.stop or []) if s],
        )

    def _sample(self, request: GenerationRequest, sample: int) -> GenerationOutput:
        if "<problem>" in request.problem:  # a review or revision prompt: answered below (respond)
            answered = respond(self, request, sample)
            if answered is not None:
                return answered
        return self._write(request, sample, self._setup(request, request.problem))

    def _write(self, request: GenerationRequest, sample: int, setup: tuple) -> GenerationOutput:
        plan, state, p_right, stops = setup
        greedy = request.temperature == 0.0
        seed = "greedy" if greedy else request.seed
        index = "greedy" if greedy else sample
        text = ""
        num_tokens = 0  # summed per piece: every piece but the last ends in whitespace, a token boundary
        context = request.prefix
        finish: FinishReason = "eos"
        position, written, path = state.position, state.written, state.path
        pieces: list[tuple[int, float]] = []  # (tokens, confidence drop) per piece: see sim_top_logprobs
        while position < plan.done:
            options = next_steps(plan, position, written + 1)
            draw = lambda tag: stable_uniform("shape", tag, seed, plan.problem, context, index)  # noqa: B023 - used at once
            shape = self._shape(plan, options, position, draw)
            right, after = options[shape]
            drop = 0.0 if path is None else AFTER_ERROR
            if path is None:
                u = stable_uniform(seed, plan.problem, context, index)
                if u >= p_right:
                    path = self._draw_path((u - p_right) / max(1e-12, 1.0 - p_right))
                    drop = 1.0
            last = after == plan.done
            if path is None:
                step = right
                if last and len(plan.answer_forms) > 1:
                    form = int(stable_uniform("form", seed, plan.problem, context, index) * len(plan.answer_forms))
                    step = FINAL_TEMPLATE % plan.answer_forms[form]
            else:
                step = self.wrong_step(plan, right, path)
            position, written = after, written + 1
            if self.phrasings > 1 and not last:
                step = with_phrasing(
                    step, int(stable_uniform("phrase", seed, plan.problem, context, index) * self.phrasings)
                )
            piece = step if last else step + STEP_SEPARATOR
            hit = next((s for s in stops if s in piece), None)
            if hit is not None:
                piece = piece[: piece.index(hit) + len(hit)]
                text += piece
                num_tokens += _count_cached(piece)
                pieces.append((_count_cached(piece), drop))
                finish = "stop"
                break
            text += piece
            num_tokens += _count_cached(piece)
            pieces.append((_count_cached(piece), drop))
            context += piece
        if num_tokens > request.max_tokens:
            text, num_tokens, finish = truncate_to_tokens(text, request.max_tokens), request.max_tokens, "length"
        output = GenerationOutput(text=text, finish_reason=finish, num_tokens=num_tokens)
        if request.top_logprobs > 0:
            z = stable_normal("confidence", seed, plan.problem, request.prefix, index)
            output.top_logprobs = self.top_logprobs(pieces, z, request.top_logprobs)[:num_tokens]
        return output

    def top_logprobs(self, pieces: Sequence[tuple[int, float]], z: float, k: int) -> np.ndarray:
        return sim_top_logprobs(pieces, z, self.cfg.confidence_signal, k)


# -- review and revision prompts ------------------------------------------------------------------------------------
# How the simulated policy answers review prompts (`strategy=filter_vote`) and revision prompts (`strategy=revisions`).
#
# The sim reads these prompts as a model would, from the text alone (no side channel). It knows the tags of the default
# templates in `conf/strategy/{filter_vote,revisions}.yaml`:
# - a review prompt holds `<problem>...</problem>` and `<solution>...</solution>` and names `[[correct]]` and
# `[[wrong]]`;
# - a revision prompt holds `<problem>...</problem>` and zero or more `<attempt>...</attempt>` blocks, newest last.
# A prompt with other markers is not recognised and is read as an (unreadable) problem, as a model that did not
# understand the instruction would.
#
# Review: the sim works out whether the solution's boxed answer is one of the problem's right answer forms and gives
# the right verdict with probability 1/2 + (verify_accuracy - 1/2) * p_step ** verify_difficulty_sensitivity, where
# p_step
# is its per-step success probability on that problem (near 1 on easy problems, low on hard ones): verdicts fall towards
# chance as problems get harder. With probability verify_unparsed_prob the review ends without a usable verdict (none,
# both, or a garbled one).
#
# Revision: the newest attempt is read step by step against the right solution. A right attempt is kept, except that
# with probability revision_break_prob the revision introduces an error at a random step. In a wrong attempt the
# revision finds the first wrong step with probability revision_fix_prob * p_solve (p_solve = p_step ** steps, the
# chance
# of solving the problem afresh: errors are easy to find in problems the policy usually solves, hard in those it rarely
# does) and redoes the solution from there, each step right with the usual probability p_step; otherwise it repeats the
# mistake and keeps the attempt's wrong answer (revisions get stuck). Kept right prefixes make revisions a ratchet on
# problems of middling difficulty, while on hard problems they mostly get stuck and fresh samples explore more: the
# trade-off behind Snell et al.'s difficulty-dependent sequential / parallel ratio. Wrong paths are the problem's usual
# ones, so wrong answers still cluster.
#
# Every draw is a hash of (seed, prompt contents, sample index), as for plain sampling; temperature 0 is greedy.

_PROBLEM = re.compile(r"<problem>\s*(.*?)\s*</problem>", re.DOTALL)
_SOLUTION = re.compile(r"<solution>\s*(.*)\s*</solution>", re.DOTALL)  # greedy: the solution text is untrusted
_ATTEMPT = re.compile(r"<attempt>\s*(.*?)\s*</attempt>", re.DOTALL)
VERDICTS = ("[[correct]]", "[[wrong]]")
# reviews that a parser must not read as a verdict: none, both, garbled
_MALFORMED = (
    "I could not decide whether the solution is correct.",
    "Verdict: [[correct]] or [[wrong]], depending on how the last step is read.",
    "Verdict: [[corect]]",
)


def respond(policy: SimPolicy, request: GenerationRequest, sample: int) -> Optional[GenerationOutput]:
    """The sim's answer to a review or revision prompt, or None when the prompt is neither (read it as a problem)."""
    text = request.problem
    match = _PROBLEM.search(text)
    if match is None:
        return None
    problem = match.group(1)
    solution = _SOLUTION.search(text[match.end() :])
    if solution is not None and all(v in text for v in VERDICTS):
        return review(policy, request, sample, problem, solution.group(1).strip())
    return revise(policy, request, sample, problem, _ATTEMPT.findall(text[match.end() :]))


def _draw_key(request: GenerationRequest, sample: int, *parts: object) -> tuple:
    greedy = request.temperature == 0.0
    return ("greedy" if greedy else request.seed, *parts, "greedy" if greedy else sample)


def _draw(request: GenerationRequest, sample: int, *parts: object) -> float:
    return stable_uniform(*_draw_key(request, sample, *parts))


def is_right(plan: Plan, solution: str) -> bool:
    """The ground truth the sim judges by: the solution boxes one of the problem's right answer forms."""
    answer = extract_answer(solution)
    return answer is not None and bool(plan.answer) and answer.strip() in plan.answer_forms


def verdict_probability(policy: SimPolicy, plan: Plan, temperature: float) -> float:
    """Probability that a (parseable) verdict is right on this problem."""
    cfg = policy.cfg
    p_step = policy.step_probability(plan, temperature)
    return 0.5 + (cfg.verify_accuracy - 0.5) * p_step**cfg.verify_difficulty_sensitivity


def _wrong_path(plan: Plan, attempt: str) -> Optional[int]:
    """Which of the problem's wrong answers the attempt boxes (None: a right answer, no answer or another one)."""
    answer = extract_answer(attempt)
    if answer is None or answer.strip() not in plan.wrong_answers:
        return None
    return plan.wrong_answers.index(answer.strip())


def _finish(
    text: str,
    request: GenerationRequest,
    policy: SimPolicy,
    sample: int,
    key: tuple,
    steps: Optional[list[str]] = None,
    first_wrong: Optional[int] = None,
) -> GenerationOutput:
    """The output for `text`; asked for log-probabilities, a review is one right piece, a revision's `steps` lose
    confidence from `first_wrong` on, as a written solution does (sim_top_logprobs)."""
    num_tokens = count_tokens(text)
    if num_tokens > request.max_tokens:
        output = GenerationOutput(truncate_to_tokens(text, request.max_tokens), "length", request.max_tokens)
    else:
        output = GenerationOutput(text, "eos", num_tokens)
    if request.top_logprobs > 0:
        pieces: list[tuple[int, float]] = [(num_tokens, 0.0)]
        if steps is not None:
            wrong = len(steps) if first_wrong is None else first_wrong
            pieces = [
                (
                    count_tokens(step if i == len(steps) - 1 else step + STEP_SEPARATOR),
                    0.0 if i < wrong else 1.0 if i == wrong else AFTER_ERROR,
                )
                for i, step in enumerate(steps)
            ]
        z = stable_normal("confidence", *_draw_key(request, sample, *key))
        output.top_logprobs = policy.top_logprobs(pieces, z, request.top_logprobs)[: output.num_tokens]
    return output


def review(policy: SimPolicy, request: GenerationRequest, sample: int, problem: str, solution: str) -> GenerationOutput:
    plan = policy.plan(problem)
    truth = is_right(plan, solution)
    answer = extract_answer(solution)
    opening = (
        f"The solution concludes that the answer is ${answer}$."
        if answer is not None
        else "The solution does not state a final answer."
    )
    if _draw(request, sample, "unparsed", problem, solution) < policy.cfg.verify_unparsed_prob:
        pick = int(_draw(request, sample, "malformed", problem, solution) * len(_MALFORMED))
        return _finish(f"{opening}{STEP_SEPARATOR}{_MALFORMED[pick]}", request, policy, sample, (problem, solution))
    p_right = verdict_probability(policy, plan, request.temperature)
    right = _draw(request, sample, "verdict", problem, solution) < p_right
    says_correct = truth if right else not truth
    reason = (
        "I checked each step and the reasoning holds."
        if says_correct
        else "I found a mistake in the reasoning, so the answer cannot be trusted."
    )
    verdict = VERDICTS[0] if says_correct else VERDICTS[1]
    return _finish(
        f"{opening} {reason}{STEP_SEPARATOR}Verdict: {verdict}", request, policy, sample, (problem, solution)
    )


def first_wrong_step(plan: Plan, attempt: str) -> int:
    """The canonical step (index into `plan.steps`) where the attempt first goes wrong: its right prefix, in whatever
    shape it was written (merged steps, skipped or added checks), covers the plan up to there."""
    steps = [piece.strip() for piece in attempt.split(STEP_SEPARATOR) if piece.strip()]
    return min(right_prefix(plan, steps)[1], len(plan.steps) - 1)


def find_probability(policy: SimPolicy, plan: Plan, p_step: float) -> float:
    """Probability that a revision finds the first wrong step of a wrong attempt: revision_fix_prob on a problem the
    policy always solves, scaled by its chance of solving the problem afresh (p_step ** steps)."""
    return policy.cfg.revision_fix_prob * p_step ** len(plan.steps)


def revise(
    policy: SimPolicy, request: GenerationRequest, sample: int, problem: str, attempts: list[str]
) -> GenerationOutput:
    if not attempts:  # nothing to revise (all attempts dropped from the context): solve afresh
        fresh = GenerationRequest(
            messages=[{"role": "user", "content": problem}],
            n=1,
            temperature=request.temperature,
            top_p=request.top_p,
            max_tokens=request.max_tokens,
            stop=request.stop,
            seed=request.seed,
            top_logprobs=request.top_logprobs,
        )
        return policy._sample(fresh, sample)
    plan = policy.plan(problem)
    history = "\x1e".join(attempts)
    latest = attempts[-1]
    steps = list(plan.steps)
    if is_right(plan, latest):
        if _draw(request, sample, "break", problem, history) < policy.cfg.revision_break_prob:
            error = int(_draw(request, sample, "error", problem, history) * len(plan.steps))
            path = policy._draw_path(_draw(request, sample, "path", problem, history))
            steps[error:] = [policy.wrong_step(plan, plan.steps[i], path) for i in range(error, len(plan.steps))]
    else:
        error = first_wrong_step(plan, latest)
        p_step = policy.step_probability(plan, request.temperature)
        if _draw(request, sample, "fix", problem, history) < find_probability(policy, plan, p_step):
            # the error is found: redo the solution from there, each step right with the usual probability
            for i in range(error, len(plan.steps)):
                u = _draw(request, sample, "redo", i, problem, history)
                if u >= p_step:
                    path = policy._draw_path((u - p_step) / max(1e-12, 1.0 - p_step))
                    steps[i:] = [policy.wrong_step(plan, plan.steps[j], path) for j in range(i, len(plan.steps))]
                    break
        else:  # not found: the revision repeats the mistake and keeps the wrong answer
            wrong_path = _wrong_path(plan, latest)
            if wrong_path is None:
                wrong_path = policy._draw_path(_draw(request, sample, "path", problem, history))
            path = wrong_path
            steps[error:] = [policy.wrong_step(plan, plan.steps[i], path) for i in range(error, len(plan.steps))]
    first_wrong = next((i for i, (step, right) in enumerate(zip(steps, plan.steps)) if step != right), None)
    if steps[-1] == plan.steps[-1] and len(plan.answer_forms) > 1:
        form = int(_draw(request, sample, "form", problem, history) * len(plan.answer_forms))
        steps[-1] = FINAL_TEMPLATE % plan.answer_forms[form]
    text = STEP_SEPARATOR.join(steps)
    return _finish(text, request, policy, sample, (problem, history), steps, first_wrong)
