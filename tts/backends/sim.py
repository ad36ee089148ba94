"""The simulated policy (`model=sim`): writes step-by-step solutions to synthetic problems, deterministic per seed.

It reads the problem statement from the chat, works out the correct solution (`tts.data.synthetic.solve`), and then
writes it step by step in the system prompt's format, steps separated by a blank line, ending in `\\boxed{...}`. Each step
is right with probability sigmoid(slope * (skill - difficulty) * temperature factor); after the first error the solution
follows one of a few wrong paths and ends in that path's wrong answer, so wrong answers cluster as in real models.
With `varied_length` (default on) the solutions of one problem differ in shape and length: adjacent steps merged into
one, usual checking steps skipped, others added (`tts.data.synthetic.next_steps`), right and wrong solutions alike.
Continuing a partial answer (`request.prefix`) works as for a real model: the prefix is read back to tell whether the
solution has already gone wrong and on which path. A problem it cannot read gets a fluent but wrong solution.

Every random draw is a hash of (seed, problem, text so far, sample index), so a sample generated in one call equals the
same sample generated step by step, and temperature 0 is greedy (the same for every seed and sample).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from tts.backends.base import GenerationOutput, GenerationRequest, PolicyBackend
from tts.data.synthetic import (FINAL_TEMPLATE, Plan, canonical_step, next_steps, perturb_last_integer, right_prefix,
                                 solve, stable_uniform, with_phrasing)
from tts.search.completion import STEP_SEPARATOR

_TOKEN = re.compile(r"\w+|[^\w\s]")
SLOPE = 1.6  # logit per unit of (skill - difficulty): sets how sharply accuracy falls with difficulty
# Shapes of a solution when `model.sim.varied_length` is on (real models do not write one problem the same way twice):
MERGE_PROB = 0.25  # two adjacent core steps are written as one step
KEEP_CHECK_PROB = 0.8  # one of the problem's usual checking steps is written (else skipped)
EXTRA_CHECK_PROB = 0.2  # one of the other checking steps is added


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
    core = tuple(tuple(step[len("## Step 1: "):].split("\n", 1)) for step in steps[:2])
    return Plan(problem=problem, steps=steps, answer="", answer_forms=("",), wrong_answers=guesses,
                difficulty=10.0, subject="unknown", core=core)


class SimPolicy(PolicyBackend):
    """See the module docstring. `cfg` is `model.sim` (skill, temperature_sensitivity, num_wrong_answers, ...)."""

    def __init__(self, cfg, seed: int = 0) -> None:
        super().__init__()
        self.skill = float(cfg.skill)
        self.temperature_sensitivity = float(cfg.temperature_sensitivity)
        self.num_wrong = max(1, int(cfg.num_wrong_answers))
        skew = float(cfg.wrong_answer_skew)
        weights = [1.0 / (j + 1) ** skew for j in range(self.num_wrong)]
        total = sum(weights)
        self._wrong_cdf = [sum(weights[: j + 1]) / total for j in range(self.num_wrong)]
        self.seed = seed
        self.phrasings = int(getattr(cfg, "phrasings", 1))
        self.varied_length = bool(getattr(cfg, "varied_length", True))
        self.cfg = cfg  # sim_tasks reads the review / revision knobs (verify_accuracy, revision_fix_prob, ...)
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
                found = [(j, after) for text, after in options for j in range(self.num_wrong)
                         if step == self.wrong_step(plan, text, j)]
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
        return [self._samples(request) for request in requests]

    def _samples(self, request: GenerationRequest) -> list[GenerationOutput]:
        """All `request.n` samples; the per-request work (plan, reading the prefix) is done once, not per sample."""
        problem = request.problem
        if "<problem>" in problem:
            return [self._sample(request, k) for k in range(request.n)]
        setup = self._setup(request, problem)
        return [self._write(request, k, setup) for k in range(request.n)]

    def _setup(self, request: GenerationRequest, problem: str) -> tuple:
        plan = self.plan(problem)
        return plan, self.read_prefix(plan, request.prefix), self.step_probability(plan, request.temperature), \
            [s for s in (request.stop or []) if s]

    def _sample(self, request: GenerationRequest, sample: int) -> GenerationOutput:
        if "<problem>" in request.problem:  # a review or revision prompt: tts/backends/sim_tasks.py reads it
            from tts.backends.sim_tasks import respond

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
        finish = "eos"
        position, written, path = state.position, state.written, state.path
        while position < plan.done:
            options = next_steps(plan, position, written + 1)
            shape = self._shape(plan, options, position,
                                lambda tag: stable_uniform("shape", tag, seed, plan.problem, context, index))
            right, after = options[shape]
            if path is None:
                u = stable_uniform(seed, plan.problem, context, index)
                if u >= p_right:
                    path = self._draw_path((u - p_right) / max(1e-12, 1.0 - p_right))
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
                step = with_phrasing(step, int(stable_uniform("phrase", seed, plan.problem, context, index) * self.phrasings))
            piece = step if last else step + STEP_SEPARATOR
            hit = next((s for s in stops if s in piece), None)
            if hit is not None:
                piece = piece[: piece.index(hit) + len(hit)]
                text += piece
                num_tokens += _count_cached(piece)
                finish = "stop"
                break
            text += piece
            num_tokens += _count_cached(piece)
            context += piece
        if num_tokens > request.max_tokens:
            text, num_tokens, finish = truncate_to_tokens(text, request.max_tokens), request.max_tokens, "length"
        return GenerationOutput(text=text, finish_reason=finish, num_tokens=num_tokens)


def build(model_cfg, seed: int) -> SimPolicy:
    return SimPolicy(model_cfg.sim, seed)
