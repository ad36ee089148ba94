"""MATH-like synthetic problems, and the solver that reads them back (the simulated world's ground truth).

`generate_problems(k, seed)` writes problems with the fields of MATH-500 from a handful of templates (linear equations,
fraction sums, radicals, series, circles, products of binomials, midpoints) whose gold answers are LaTeX: integers,
fractions, radicals, multiples of pi, polynomials and ordered pairs, so that equivalent-but-different forms occur.

`solve(problem_text)` parses a problem statement back into its worked solution (`Plan`). The simulated policy and the
simulated PRM both call it on the text they are given, as a real model reads the problem: nothing travels on a side
channel. A problem's latent difficulty is a deterministic function of its text, so the policy and the dataset's `level`
agree without sharing state.

    python -c "from tts.data.synthetic import generate_problems; print(generate_problems(1)[0])"
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import cast

from tts.data.problem import Problem

FINAL_TEMPLATE = "Therefore, the final answer is: $\\boxed{%s}$. I hope it is correct."

# Ways a model may close a step without changing its mathematics (`model.backend.phrasings` uses the first k).
PHRASINGS = (
    "",
    " This follows directly.",
    " That settles this step.",
    " Nothing else is needed here.",
    " We carry this into the next step.",
    " This is the key computation.",
    " The arithmetic checks out.",
    " We use this result below.",
)


def with_phrasing(step: str, variant: int) -> str:
    """`step` closed with phrasing `variant` (0: as written)."""
    return step + PHRASINGS[variant] if variant else step


def canonical_step(step: str) -> str:
    """A step with its closing phrase removed: what a reader checks is the mathematics, not the wording."""
    for phrase in PHRASINGS[1:]:
        if step.endswith(phrase):
            return step[: -len(phrase)]
    return step


def stable_uniform(*parts: object) -> float:
    """A uniform number in [0, 1) fixed by its inputs: the simulated world's only source of randomness."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


def stable_normal(*parts: object) -> float:
    u1 = max(stable_uniform("n1", *parts), 1e-12)
    u2 = stable_uniform("n2", *parts)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def latex_fraction(value: Fraction) -> str:
    """`\\frac{p}{q}` with the sign outside, or an integer."""
    if value.denominator == 1:
        return str(value.numerator)
    sign = "-" if value < 0 else ""
    return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


@dataclass(frozen=True)
class Plan:
    """A worked solution.

    `steps` are the step texts of the canonical correct solution, the last one boxing the answer. Other correct
    solutions take other shapes (see `next_steps`): the `core` steps (title, body) are all needed but two adjacent ones
    may be written as one, and the `checks` (title, body) are optional checking steps, of which the canonical solution
    writes the first `typical_checks`.
    """

    problem: str
    steps: tuple[str, ...]
    answer: str
    answer_forms: tuple[str, ...]
    wrong_answers: tuple[str, ...]
    difficulty: float
    subject: str
    core: tuple[tuple[str, str], ...] = ()
    checks: tuple[tuple[str, str], ...] = ()
    typical_checks: int = 0

    @property
    def done(self) -> int:
        """The position of a finished solution (after the final step)."""
        return len(self.core) + len(self.checks) + 1


# --- templates: each renders a problem from parameters and solves it from the parsed text -----------------------------


def _linear(a: int, b: int, c: int) -> tuple[list[str], Fraction | str, str]:
    x = Fraction(c - b, a)
    steps = [
        f"## Step 1: Isolate the term with $x$\nSubtracting ${b}$ from both sides gives ${a}x = {c - b}$.",
        f"## Step 2: Divide by the coefficient of $x$\nDividing both sides by ${a}$ gives $x = {latex_fraction(x)}$.",
    ]
    return steps, x, "Algebra"


def _fraction_sum(a: int, b: int, c: int, d: int) -> tuple[list[str], Fraction | str, str]:
    common = b * d // math.gcd(b, d)
    total = Fraction(a, b) + Fraction(c, d)
    steps = [
        f"## Step 1: Find a common denominator\nThe least common multiple of ${b}$ and ${d}$ is ${common}$.",
        f"## Step 2: Rewrite both fractions\n$\\frac{{{a}}}{{{b}}} = \\frac{{{a * common // b}}}{{{common}}}$ and "
        f"$\\frac{{{c}}}{{{d}}} = \\frac{{{c * common // d}}}{{{common}}}$.",
        f"## Step 3: Add the numerators\nThe sum is $\\frac{{{a * common // b + c * common // d}}}{{{common}}}$.",
        f"## Step 4: Simplify\nIn lowest terms this is ${latex_fraction(total)}$.",
    ]
    return steps, total, "Prealgebra"


def _radical(n: int) -> tuple[list[str], Fraction | str, str]:
    outside, inside = 1, n
    for k in range(int(math.isqrt(n)), 1, -1):
        if n % (k * k) == 0:
            outside, inside = k, n // (k * k)
            break
    answer = f"{outside}\\sqrt{{{inside}}}" if inside > 1 else str(outside)
    steps = [
        f"## Step 1: Factor out the largest perfect square\n${n} = {outside * outside} \\cdot {inside}$.",
        f"## Step 2: Take the square root of the perfect square\n$\\sqrt{{{outside * outside}}} = {outside}$.",
        f"## Step 3: Combine\n$\\sqrt{{{n}}} = {answer}$.",
    ]
    return steps, answer, "Algebra"


def _series(lo: int, hi: int) -> tuple[list[str], Fraction | str, str]:
    count = hi - lo + 1
    total = count * (lo + hi) // 2
    steps = [
        f"## Step 1: Count the terms\nThere are ${hi} - {lo} + 1 = {count}$ integers.",
        f"## Step 2: Pair the first and last terms\nEach pair sums to ${lo} + {hi} = {lo + hi}$.",
        f"## Step 3: Multiply\nThe sum is $\\frac{{{count} \\cdot {lo + hi}}}{{2}} = {total}$.",
    ]
    return steps, Fraction(total), "Intermediate Algebra"


def _circle(r: int) -> tuple[list[str], Fraction | str, str]:
    steps = [
        f"## Step 1: Recall the area formula\nThe area of a circle is $\\pi r^2$ with $r = {r}$.",
        f"## Step 2: Substitute the radius\n$\\pi \\cdot {r}^2 = {r * r}\\pi$.",
    ]
    return steps, f"{r * r}\\pi", "Geometry"


def _binomials(a: int, b: int) -> tuple[list[str], Fraction | str, str]:
    s, p = a + b, a * b
    linear = "" if s == 0 else (f"+ {s}x" if s > 0 else f"- {-s}x")
    if s in (1, -1):
        linear = linear.replace("1x", "x")
    constant = "" if p == 0 else (f"+ {p}" if p > 0 else f"- {-p}")
    answer = f"x^2 {linear} {constant}".replace("  ", " ").strip()
    steps = [
        "## Step 1: Multiply the first terms\n$x \\cdot x = x^2$.",
        f"## Step 2: Collect the cross terms\n${a}x + {b}x = {s}x$.",
        f"## Step 3: Multiply the constants\n${a} \\cdot {b} = {p}$.",
        f"## Step 4: Write the expansion\nThe product is ${answer}$.",
    ]
    return steps, answer, "Algebra"


def _midpoint(x1: int, y1: int, x2: int, y2: int) -> tuple[list[str], Fraction | str, str]:
    mx, my = Fraction(x1 + x2, 2), Fraction(y1 + y2, 2)
    answer = f"\\left({latex_fraction(mx)}, {latex_fraction(my)}\\right)"
    steps = [
        f"## Step 1: Average the $x$-coordinates\n$\\frac{{{x1} + {x2}}}{{2}} = {latex_fraction(mx)}$.",
        f"## Step 2: Average the $y$-coordinates\n$\\frac{{{y1} + {y2}}}{{2}} = {latex_fraction(my)}$.",
    ]
    return steps, answer, "Geometry"


_INT = r"(-?\d+)"
Solver = Callable[..., tuple[list[str], Fraction | str, str]]  # (steps, answer, subject) from the parsed numbers
TEMPLATES: dict[str, tuple[str, str, Solver, float]] = {
    # name: (statement, regex that reads it back, solver, base difficulty)
    "linear": (
        "Solve for $x$: ${0}x + {1} = {2}$. Express your answer as a common fraction if needed.",
        rf"Solve for \$x\$: \${_INT}x \+ {_INT} = {_INT}\$",
        _linear,
        -0.2,
    ),
    "fraction_sum": (
        "Compute $\\frac{{{0}}}{{{1}}} + \\frac{{{2}}}{{{3}}}$. Express your answer as a common fraction.",
        rf"Compute \$\\frac\{{{_INT}\}}\{{{_INT}\}} \+ \\frac\{{{_INT}\}}\{{{_INT}\}}\$",
        _fraction_sum,
        0.4,
    ),
    "radical": ("Simplify $\\sqrt{{{0}}}$.", rf"Simplify \$\\sqrt\{{{_INT}\}}\$", _radical, 0.0),
    "series": (
        "What is the sum of all integers from ${0}$ to ${1}$, inclusive?",
        rf"sum of all integers from \${_INT}\$ to \${_INT}\$",
        _series,
        0.2,
    ),
    "circle": (
        "A circle has radius ${0}$. What is its area? Express your answer in terms of $\\pi$.",
        rf"A circle has radius \${_INT}\$",
        _circle,
        -0.6,
    ),
    "binomials": ("Expand $(x + {0})(x + {1})$.", rf"Expand \$\(x \+ {_INT}\)\(x \+ {_INT}\)\$", _binomials, 0.3),
    "midpoint": (
        "What is the midpoint of the segment with endpoints $({0}, {1})$ and $({2}, {3})$? "
        "Express your answer as an ordered pair.",
        rf"endpoints \$\({_INT}, {_INT}\)\$ and \$\({_INT}, {_INT}\)\$",
        _midpoint,
        0.1,
    ),
}
_PATTERNS = {name: re.compile(spec[1]) for name, spec in TEMPLATES.items()}

# Optional checking steps (title, body), in the order a solution writes them.
CHECK_STEPS = (
    ("Check the arithmetic", "Recomputing each intermediate value gives the same results."),
    ("Verify against the question", "The result answers exactly what was asked."),
    ("Consider special cases", "No case of the problem changes the computation above."),
    ("Double-check the simplification", "The expression cannot be reduced further."),
)
_STEP = re.compile(r"## Step \d+: (.*?)\n(.*)", re.DOTALL)


def _match(pattern: str | re.Pattern[str], text: str, full: bool = False) -> re.Match[str]:
    """The match of a text this module wrote itself, so it always matches."""
    found = (re.fullmatch if full else re.match)(pattern, text)
    if found is None:
        raise ValueError(f"{text!r} does not match {pattern!r}")
    return found


def render_step(number: int, title: str, body: str) -> str:
    return f"## Step {number}: {title}\n{body}"


def merged_step(number: int, first: tuple[str, str], second: tuple[str, str]) -> str:
    """Two adjacent steps written as one (a model that does two things at once)."""
    title = f"{first[0]}, then {second[0][:1].lower()}{second[0][1:]}"
    return render_step(number, title, f"{first[1]} {second[1]}")


@functools.lru_cache(maxsize=200_000)
def next_steps(plan: Plan, position: int, number: int) -> tuple[tuple[str, int], ...]:
    """The right steps that may follow a solution that has used the plan up to `position` in `number - 1` steps.

    Each is (step text, position after it). Positions 0 .. len(core) - 1 are core steps: the next one alone, or merged
    with the one after it. From len(core) on, any later checking step may come next (the ones in between are
    skipped), or the final step (canonical answer form; any form of the answer is right) which ends at `plan.done`.
    """
    core = len(plan.core)
    if position >= plan.done:
        return ()
    if position < core:
        options = [(render_step(number, *plan.core[position]), position + 1)]
        if position + 1 < core:
            options.append((merged_step(number, plan.core[position], plan.core[position + 1]), position + 2))
        return tuple(options)
    options = [(render_step(number, *plan.checks[j - core]), j + 1) for j in range(position, core + len(plan.checks))]
    return tuple(options) + ((plan.steps[-1], plan.done),)


def right_prefix(plan: Plan, steps: list[str]) -> tuple[int, int]:
    """(how many leading `steps` are right, the plan position after them). Wording aside (`canonical_step`), a step
    is right when it is one of `next_steps`; a final step is right when it boxes any form of the answer."""
    finals = {FINAL_TEMPLATE % form for form in plan.answer_forms} | {plan.steps[-1]}
    position = 0
    for k, step in enumerate(steps):
        options = next_steps(plan, position, k + 1)
        if not options:
            return k, position
        if step in finals:
            if options[-1][1] != plan.done:  # a boxed answer before the core steps are all written
                return k, position
            position = plan.done
            continue
        text = canonical_step(step)
        after = next((p for t, p in options if t == text and p != plan.done), None)
        if after is None:
            return k, position
        position = after
    return len(steps), position


def _parameters(name: str, rng: random.Random) -> tuple[int, ...]:
    if name == "linear":
        return rng.randint(2, 12), rng.randint(1, 40), rng.randint(1, 80)
    if name == "fraction_sum":
        b, d = rng.randint(2, 12), rng.randint(2, 12)
        return rng.randint(1, b - 1), b, rng.randint(1, d - 1), d
    if name == "radical":
        return (rng.choice([2, 3, 5, 6, 7]) * rng.randint(2, 9) ** 2,)
    if name == "series":
        lo = rng.randint(1, 30)
        return lo, lo + rng.randint(5, 120)
    if name == "circle":
        return (rng.randint(2, 60),)
    if name == "binomials":
        return rng.randint(1, 12), rng.randint(1, 12)
    return rng.randint(-9, 9), rng.randint(-9, 9), rng.randint(-9, 9), rng.randint(-9, 9)


def latent_difficulty(problem_text: str, base: float) -> float:
    """The problem's hidden difficulty: a template offset plus a fixed per-text draw (so solver and dataset agree)."""
    return base + 0.9 * stable_normal("difficulty", problem_text)


def num_check_steps(difficulty: float) -> int:
    """Harder problems take longer solutions: more steps, each a chance to go wrong."""
    return max(0, min(len(CHECK_STEPS), int(round(1.0 + 1.2 * difficulty))))


def _answer_forms(answer: Fraction | str) -> tuple[str, ...]:
    """The gold answer first, then equivalent ways a model might write it."""
    if isinstance(answer, Fraction):
        gold = latex_fraction(answer)
        forms = [gold]
        if answer.denominator != 1:
            forms.append(gold.replace("\\frac", "\\dfrac"))
            sign = "-" if answer < 0 else ""
            forms.append(f"{sign}{abs(answer.numerator)}/{answer.denominator}")
            if 10**6 % answer.denominator == 0:
                forms.append(f"{float(answer):g}")
        elif abs(answer.numerator) >= 1000:
            forms.append(f"{answer.numerator:,}".replace(",", "{,}"))
        return tuple(forms)
    forms = [answer]
    if "\\sqrt" in answer:
        outside, inside = _match(r"(\d+)\\sqrt\{(\d+)\}", answer).groups()
        forms.append(f"{outside} \\sqrt{{{inside}}}")
        forms.append(f"\\sqrt{{{int(outside) ** 2 * int(inside)}}}")  # equal value, unsimplified
    if answer.endswith("\\pi"):
        forms.append(answer.replace("\\pi", " \\pi"))
    if answer.startswith("\\left("):
        forms.append(answer.replace("\\left(", "(").replace("\\right)", ")"))
    return tuple(forms)


def perturb_last_integer(text: str, delta: int) -> str | None:
    """`text` with its last integer moved by `delta` (a slip), or None when that would be a degenerate 0 or 1."""
    matches = list(re.finditer(r"\d+", text))
    if not matches:
        return None
    m = matches[-1]
    value = int(m.group()) + delta
    if value < 2 <= int(m.group()):
        return None
    return f"{text[: m.start()]}{value}{text[m.end() :]}"


WRONG_DELTAS = (1, -1, 2, 3, -2, 5, 4, -3, 7, 9)


def _wrong_answers(gold: str, count: int) -> tuple[str, ...]:
    """Plausible wrong answers: the gold answer with its last number off by a small amount (a slip, not noise)."""
    wrong: list[str] = []
    for delta in WRONG_DELTAS:
        candidate = perturb_last_integer(gold, delta)
        if candidate is not None and candidate != gold and candidate not in wrong:
            wrong.append(candidate)
        if len(wrong) == count:
            break
    while len(wrong) < count:  # an answer without digits: wrong answers that at least differ from it
        wrong.append(f"{gold} + {len(wrong) + 1}")
    return tuple(wrong)


MAX_WRONG_ANSWERS = 8


@functools.lru_cache(maxsize=100_000)
def solve(problem_text: str) -> Plan | None:
    """Read a synthetic problem back into its worked solution, or None when the text is not one of ours."""
    for name, pattern in _PATTERNS.items():
        match = pattern.search(problem_text)
        if match is None:
            continue
        args = tuple(int(g) for g in match.groups())
        steps, answer, subject = TEMPLATES[name][2](*args)
        difficulty = latent_difficulty(problem_text, TEMPLATES[name][3])
        core = tuple(cast(tuple[str, str], _match(_STEP, step, full=True).groups()) for step in steps)
        typical = num_check_steps(difficulty)
        checks = [render_step(len(steps) + i + 1, *CHECK_STEPS[i]) for i in range(typical)]
        forms = _answer_forms(answer)
        return Plan(
            problem=problem_text,
            steps=tuple(steps + checks + [FINAL_TEMPLATE % forms[0]]),
            answer=forms[0],
            answer_forms=forms,
            wrong_answers=_wrong_answers(forms[0], MAX_WRONG_ANSWERS),
            difficulty=difficulty,
            subject=subject,
            core=core,
            checks=CHECK_STEPS,
            typical_checks=typical,
        )
    return None


def difficulty_level(difficulty: float) -> int:
    """MATH-style level 1-5 from the latent difficulty (cut points put roughly a fifth of problems in each level)."""
    cuts = (-0.55, -0.05, 0.35, 0.8)
    return 1 + sum(difficulty > c for c in cuts)


def generate_problems(num_problems: int = 500, seed: int = 1234) -> list[Problem]:
    """`num_problems` distinct problems, deterministic in `seed`, cycling through the templates."""
    rng = random.Random(seed)
    names = list(TEMPLATES)
    problems: list[Problem] = []
    seen: set[str] = set()
    for attempt in range(100 * num_problems + 100):
        if len(problems) == num_problems:
            break
        # Rotate templates per attempt, so a template whose small parameter space is used up yields to the next.
        name = names[attempt % len(names)]
        text = TEMPLATES[name][0].format(*_parameters(name, rng))
        if text in seen:
            continue
        seen.add(text)
        plan = solve(text)
        assert plan is not None, f"template {name} does not parse its own output: {text}"
        problems.append(
            Problem(
                unique_id=f"synthetic/{name}/{len(problems)}",
                problem=text,
                answer=plan.answer,
                solution="\n\n".join(plan.steps),
                subject=plan.subject,
                level=difficulty_level(plan.difficulty),
            )
        )
    if len(problems) < num_problems:
        raise ValueError(
            f"config key 'dataset.num_problems': the templates yield only {len(problems)} distinct problems"
        )
    return problems
