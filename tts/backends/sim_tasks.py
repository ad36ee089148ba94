"""How the simulated policy answers review prompts (`strategy=filter_vote`) and revision prompts (`strategy=revisions`).

The sim reads these prompts as a model would, from the text alone (no side channel). It knows the tags of the default
templates in `conf/strategy/{filter_vote,revisions}.yaml`:
- a review prompt holds `<problem>...</problem>` and `<solution>...</solution>` and names `[[correct]]` and `[[wrong]]`;
- a revision prompt holds `<problem>...</problem>` and zero or more `<attempt>...</attempt>` blocks, newest last.
A prompt with other markers is not recognised and is read as an (unreadable) problem, as a model that did not
understand the instruction would.

Review: the sim works out whether the solution's boxed answer is one of the problem's right answer forms and gives
the right verdict with probability 1/2 + (verify_accuracy - 1/2) * p_step ** verify_difficulty_sensitivity, where p_step
is its per-step success probability on that problem (near 1 on easy problems, low on hard ones): verdicts fall towards
chance as problems get harder. With probability verify_unparsed_prob the review ends without a usable verdict (none,
both, or a garbled one).

Revision: the newest attempt is read step by step against the right solution. A right attempt is kept, except that
with probability revision_break_prob the revision introduces an error at a random step. In a wrong attempt the
revision finds the first wrong step with probability revision_fix_prob * p_solve (p_solve = p_step ** steps, the chance
of solving the problem afresh: errors are easy to find in problems the policy usually solves, hard in those it rarely
does) and redoes the solution from there, each step right with the usual probability p_step; otherwise it repeats the
mistake and keeps the attempt's wrong answer (revisions get stuck). Kept right prefixes make revisions a ratchet on
problems of middling difficulty, while on hard problems they mostly get stuck and fresh samples explore more: the
trade-off behind Snell et al.'s difficulty-dependent sequential / parallel ratio. Wrong paths are the problem's usual
ones, so wrong answers still cluster.

Every draw is a hash of (seed, prompt contents, sample index), as for plain sampling; temperature 0 is greedy.
"""

from __future__ import annotations

import re
from typing import Optional

from tts.backends.base import GenerationOutput, GenerationRequest
from tts.backends.sim import SimPolicy, count_tokens, truncate_to_tokens
from tts.data.synthetic import FINAL_TEMPLATE, Plan, right_prefix, stable_uniform
from tts.grading.extract import extract_answer
from tts.search.completion import STEP_SEPARATOR

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
    solution = _SOLUTION.search(text[match.end():])
    if solution is not None and all(v in text for v in VERDICTS):
        return review(policy, request, sample, problem, solution.group(1).strip())
    return revise(policy, request, sample, problem, _ATTEMPT.findall(text[match.end():]))


def _draw(request: GenerationRequest, sample: int, *parts: object) -> float:
    greedy = request.temperature == 0.0
    return stable_uniform("greedy" if greedy else request.seed, *parts, "greedy" if greedy else sample)


def is_right(plan: Plan, solution: str) -> bool:
    """The ground truth the sim judges by: the solution boxes one of the problem's right answer forms."""
    answer = extract_answer(solution)
    return answer is not None and bool(plan.answer) and answer.strip() in plan.answer_forms


def verdict_probability(policy: SimPolicy, plan: Plan, temperature: float) -> float:
    """Probability that a (parseable) verdict is right on this problem."""
    cfg = policy.cfg
    p_step = policy.step_probability(plan, temperature)
    return 0.5 + (cfg.verify_accuracy - 0.5) * p_step ** cfg.verify_difficulty_sensitivity


def _wrong_path(plan: Plan, attempt: str) -> Optional[int]:
    """Which of the problem's wrong answers the attempt boxes (None: a right answer, no answer or another one)."""
    answer = extract_answer(attempt)
    if answer is None or answer.strip() not in plan.wrong_answers:
        return None
    return plan.wrong_answers.index(answer.strip())


def _finish(text: str, request: GenerationRequest) -> GenerationOutput:
    num_tokens = count_tokens(text)
    if num_tokens > request.max_tokens:
        return GenerationOutput(truncate_to_tokens(text, request.max_tokens), "length", request.max_tokens)
    return GenerationOutput(text, "eos", num_tokens)


def review(policy: SimPolicy, request: GenerationRequest, sample: int, problem: str, solution: str) -> GenerationOutput:
    plan = policy.plan(problem)
    truth = is_right(plan, solution)
    answer = extract_answer(solution)
    opening = (f"The solution concludes that the answer is ${answer}$." if answer is not None
               else "The solution does not state a final answer.")
    if _draw(request, sample, "unparsed", problem, solution) < policy.cfg.verify_unparsed_prob:
        pick = int(_draw(request, sample, "malformed", problem, solution) * len(_MALFORMED))
        return _finish(f"{opening}{STEP_SEPARATOR}{_MALFORMED[pick]}", request)
    p_right = verdict_probability(policy, plan, request.temperature)
    right = _draw(request, sample, "verdict", problem, solution) < p_right
    says_correct = truth if right else not truth
    reason = ("I checked each step and the reasoning holds." if says_correct
              else "I found a mistake in the reasoning, so the answer cannot be trusted.")
    verdict = VERDICTS[0] if says_correct else VERDICTS[1]
    return _finish(f"{opening} {reason}{STEP_SEPARATOR}Verdict: {verdict}", request)


def first_wrong_step(plan: Plan, attempt: str) -> int:
    """The canonical step (index into `plan.steps`) where the attempt first goes wrong: its right prefix, in whatever
    shape it was written (merged steps, skipped or added checks), covers the plan up to there."""
    steps = [piece.strip() for piece in attempt.split(STEP_SEPARATOR) if piece.strip()]
    return min(right_prefix(plan, steps)[1], len(plan.steps) - 1)


def find_probability(policy: SimPolicy, plan: Plan, p_step: float) -> float:
    """Probability that a revision finds the first wrong step of a wrong attempt: revision_fix_prob on a problem the
    policy always solves, scaled by its chance of solving the problem afresh (p_step ** steps)."""
    return policy.cfg.revision_fix_prob * p_step ** len(plan.steps)


def revise(policy: SimPolicy, request: GenerationRequest, sample: int, problem: str,
           attempts: list[str]) -> GenerationOutput:
    if not attempts:  # nothing to revise (all attempts dropped from the context): solve afresh
        fresh = GenerationRequest(messages=[{"role": "user", "content": problem}], n=1,
                                  temperature=request.temperature, top_p=request.top_p,
                                  max_tokens=request.max_tokens, stop=request.stop, seed=request.seed)
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
            path = _wrong_path(plan, latest)
            if path is None:
                path = policy._draw_path(_draw(request, sample, "path", problem, history))
            steps[error:] = [policy.wrong_step(plan, plan.steps[i], path) for i in range(error, len(plan.steps))]
    if steps[-1] == plan.steps[-1] and len(plan.answer_forms) > 1:
        form = int(_draw(request, sample, "form", problem, history) * len(plan.answer_forms))
        steps[-1] = FINAL_TEMPLATE % plan.answer_forms[form]
    return _finish(STEP_SEPARATOR.join(steps), request)
