"""The simulated policy (`model=sim`): writes step-by-step solutions to synthetic problems, deterministic per seed.

It reads the problem statement from the chat, works out the correct solution (`tts.data.synthetic.solve`), and then
writes it step by step in the system prompt's format, steps separated by a blank line, ending in `\\boxed{...}`. Each step
is right with probability sigmoid(slope * (skill - difficulty) * temperature factor); after the first error the solution
follows one of a few wrong paths and ends in that path's wrong answer, so wrong answers cluster as in real models.
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
from tts.data.synthetic import (FINAL_TEMPLATE, Plan, canonical_step, perturb_last_integer, solve, stable_uniform,
                                 with_phrasing)
from tts.search.completion import STEP_SEPARATOR

_TOKEN = re.compile(r"\w+|[^\w\s]")
SLOPE = 1.6  # logit per unit of (skill - difficulty): sets how sharply accuracy falls with difficulty


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
    """Where a partial solution stands: the next step index and the wrong path it is on (None: still right)."""

    index: int
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
    return Plan(problem=problem, steps=steps, answer="", answer_forms=("",), wrong_answers=guesses,
                difficulty=10.0, subject="unknown")


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
        self.cfg = cfg  # sim_tasks reads the review / revision knobs (verify_accuracy, revision_fix_prob, ...)
        self._plans: dict[str, Plan] = {}
        self._wrong_steps: dict[tuple[str, int, int], str] = {}

    # -- the world ------------------------------------------------------------------------------------------------

    def plan(self, problem: str) -> Plan:
        plan = self._plans.get(problem)
        if plan is None:
            plan = solve(problem) or _unreadable_plan(problem, self.num_wrong)
            self._plans[problem] = plan
        return plan

    def wrong_step(self, plan: Plan, index: int, path: int) -> str:
        """Step `index` of wrong path `path`: the right step with a slip, or the wrong answer boxed at the end."""
        key = (plan.problem, index, path)
        step = self._wrong_steps.get(key)
        if step is None:
            if len(self._wrong_steps) > 1_000_000:
                self._wrong_steps.clear()
            step = self._wrong_steps[key] = self._make_wrong_step(plan, index, path)
        return step

    def _make_wrong_step(self, plan: Plan, index: int, path: int) -> str:
        wrong_answer = plan.wrong_answers[path % len(plan.wrong_answers)]
        if index == len(plan.steps) - 1:
            return FINAL_TEMPLATE % wrong_answer
        header, _, body = plan.steps[index].partition("\n")
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
        path = None
        for i, step in enumerate(steps):
            step = canonical_step(step)
            if path is None and (i >= len(plan.steps) or step != plan.steps[i]):
                candidates = [j for j in range(self.num_wrong) if i < len(plan.steps) and step == self.wrong_step(plan, i, j)]
                path = candidates[0] if candidates else int(stable_uniform("path", plan.problem, step) * self.num_wrong)
        return _State(index=len(steps), path=path)

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
        step_index, path = state.index, state.path
        while step_index < len(plan.steps):
            if path is None:
                u = stable_uniform(seed, plan.problem, context, index)
                if u >= p_right:
                    path = self._draw_path((u - p_right) / max(1e-12, 1.0 - p_right))
            if path is None:
                step = plan.steps[step_index]
                if step_index == len(plan.steps) - 1 and len(plan.answer_forms) > 1:
                    form = int(stable_uniform("form", seed, plan.problem, context, index) * len(plan.answer_forms))
                    step = FINAL_TEMPLATE % plan.answer_forms[form]
            else:
                step = self.wrong_step(plan, step_index, path)
            step_index += 1
            last = step_index == len(plan.steps)
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
