"""The simulated PRM (`prm=sim`): reads the problem and the steps it is given and scores each prefix.

Like a real verifier it sees only text: it works the problem out (`tts.data.synthetic.solve`) and checks whether the
prefix so far agrees with a correct solution (any equivalent form of the final answer counts; a correct solution may
merge adjacent steps or skip and add checking steps, see `tts.data.synthetic.next_steps`). The score is
sigmoid(bias + discrimination * (right - 1/2) + noise * z - length_penalty * k), where z is a standard normal fixed by
(problem, prefix): asking twice gives the same score, and a search that tries many candidates can find the ones the
verifier over-rates, as it can with a real PRM.

With probability `miss_prob` the verifier overlooks an error (drawn once per problem and prefix ending in the first
wrong step): that prefix and every continuation of it are scored as right, as a real PRM scores a solution whose
mistake it does not see. Noise alone lets naive best-of-N rise towards pass@N; overlooked errors are what make it stop
improving at large N while weighted voting, which sums over an answer's samples, stays ahead (docs/sim.md#calibration).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import ClassVar

from tts.backends.sim import count_tokens
from tts.config.schema import Config, PRMConfig
from tts.data.synthetic import right_prefix, solve
from tts.prms.base import ProcessRewardModel


@dataclass
class SimPRMConfig(PRMConfig):
    """The simulated verifier's knobs (`prm.*`; conf/prm/sim.yaml says what each one does)."""

    synthetic_only: ClassVar[bool] = True

    name: str = "sim"
    discrimination: float = 1.5  # logit gap between a correct prefix and one that has gone wrong
    noise: float = 0.75  # std of the logit noise, fixed per (problem, prefix); noise 0 and miss_prob 0: a perfect PRM
    bias: float = 0.5  # logit of a correct prefix before noise
    length_penalty: float = 0.0  # logit lost per step
    miss_prob: float = 0.1  # probability the verifier overlooks an error: that wrong solution then scores as right
    allow_foreign: bool = False  # judge problems it did not generate (every step of them counts as wrong)

    def judges_foreign_problems(self) -> bool:
        return self.allow_foreign

    def check(self, run: Config) -> None:
        super().check(run)
        self.require(
            0.0 <= self.miss_prob <= 1.0, "miss_prob", f"must be a probability in [0, 1], got {self.miss_prob}"
        )


class SimPRM(ProcessRewardModel):
    def __init__(self, config: SimPRMConfig) -> None:
        super().__init__()
        cfg = config
        self.discrimination = float(cfg.discrimination)
        self.noise = float(cfg.noise)
        self.bias = float(cfg.bias)
        self.length_penalty = float(cfg.length_penalty)
        self.miss_prob = float(cfg.miss_prob)

    def _score_batch(self, problems: list[str], solutions: list[list[str]]) -> list[list[float]]:
        results = []
        for problem, steps in zip(problems, solutions):
            plan = solve(problem)
            right = right_prefix(plan, steps)[0] if plan else 0  # steps [0, right) agree with some correct solution
            if plan and right < len(steps) and self.miss_prob > 0.0 and self._overlooks(problem, steps[: right + 1]):
                right = len(steps)  # the first error goes unnoticed, and so does the rest, which follows from it
            scores = []
            running = hashlib.blake2b(f"prm\x1f{problem}".encode(), digest_size=16)
            for k, step in enumerate(steps):
                running.update(b"\x1f" + step.encode())
                z = _normal_from_digest(running.copy().digest())
                logit = self.bias + self.discrimination * ((1.0 if k < right else 0.0) - 0.5) + self.noise * z
                scores.append(1.0 / (1.0 + math.exp(-(logit - self.length_penalty * k))))
            # A real PRM re-encodes the problem and every step: count those tokens as its compute.
            self.stats.tokens += count_tokens(problem) + sum(count_tokens(s) for s in steps)
            results.append(scores)
        return results

    def _overlooks(self, problem: str, prefix: list[str]) -> bool:
        """Whether the verifier misses the error that ends `prefix` (its first wrong step): fixed per (problem, prefix),
        so every solution that makes this error is over-rated alike, and a search can find and follow it."""
        digest = hashlib.blake2b("\x1f".join(["prm-miss", problem, *prefix]).encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") / 2.0**64 < self.miss_prob


def _normal_from_digest(digest: bytes) -> float:
    """A standard normal fixed by a hash of the prefix (Box-Muller on its two halves)."""
    u1 = max(int.from_bytes(digest[:8], "little") / 2.0**64, 1e-12)
    u2 = int.from_bytes(digest[8:], "little") / 2.0**64
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
