"""The simulated PRM (`prm=sim`): reads the problem and the steps it is given and scores each prefix.

Like a real verifier it sees only text: it works the problem out (`tts.data.synthetic.solve`) and checks whether the
prefix so far agrees with a correct solution (any equivalent form of the final answer counts; a correct solution may
merge adjacent steps or skip and add checking steps, see `tts.data.synthetic.next_steps`). The score is
sigmoid(bias + discrimination * (right - 1/2) + noise * z - length_penalty * k), where z is a standard normal fixed by
(problem, prefix): asking twice gives the same score, and a search that tries many candidates can find the ones the
verifier over-rates, as it can with a real PRM.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import ClassVar

from tts.backends.sim import count_tokens
from tts.config.schema import PRMConfig
from tts.data.synthetic import right_prefix, solve
from tts.prms.base import ProcessRewardModel


@dataclass
class SimPRMConfig(PRMConfig):
    """The simulated verifier's knobs (`prm.*`; conf/prm/sim.yaml says what each one does)."""

    synthetic_only: ClassVar[bool] = True

    _target_: str = "tts.prms.sim.SimPRM"
    name: str = "sim"
    discrimination: float = 1.5  # logit gap between a correct prefix and one that has gone wrong
    noise: float = 1.0  # std of the logit noise, fixed per (problem, prefix): 0 is a perfect verifier
    bias: float = 0.5  # logit of a correct prefix before noise
    length_penalty: float = 0.0  # logit lost per step
    allow_foreign: bool = False  # judge problems it did not generate (every step of them counts as wrong)


class SimPRM(ProcessRewardModel):
    def __init__(self, config: SimPRMConfig) -> None:
        super().__init__()
        cfg = config
        self.discrimination = float(cfg.discrimination)
        self.noise = float(cfg.noise)
        self.bias = float(cfg.bias)
        self.length_penalty = float(cfg.length_penalty)

    def _score_batch(self, problems: list[str], solutions: list[list[str]]) -> list[list[float]]:
        results = []
        for problem, steps in zip(problems, solutions):
            plan = solve(problem)
            right = right_prefix(plan, steps)[0] if plan else 0  # steps [0, right) agree with some correct solution
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


def _normal_from_digest(digest: bytes) -> float:
    """A standard normal fixed by a hash of the prefix (Box-Muller on its two halves)."""
    u1 = max(int.from_bytes(digest[:8], "little") / 2.0**64, 1e-12)
    u2 = int.from_bytes(digest[8:], "little") / 2.0**64
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
