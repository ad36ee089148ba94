"""Particle filtering over solution steps (Puri et al. 2025, "A Probabilistic Inference Approach to Inference-Time
Scaling of LLMs using Particle-Based Monte Carlo Methods", arXiv 2502.01618).

Search as inference: the PRM's score of a partial solution is read as the likelihood that it leads to a right answer,
and N particles (partial solutions) approximate the distribution of good solutions. Every iteration:

1. each unfinished particle writes one more step (stop at the blank line; copies of one particle are one request for
   as many samples, so they draw different steps);
2. the PRM scores the new prefixes (one call for all problems of the batch);
3. every particle gets the log-weight transform(reward) / `weight_temperature`, where reward is the newest reduced
   PRM score (`scoring.reduction`; the default `last` is the newest step's score) and transform is `logit` (the
   paper's and the reference implementation's choice: weights proportional to r / (1 - r)) or `identity`
   (softmax of the raw score); a finished particle keeps the weight it finished with and is not extended again;
4. N particles are drawn from the N weighted ones (`resampling`: `multinomial`, as in the paper, or `systematic`,
   which has the same expected counts with lower variance). Finished particles take part like any other: a good one
   is copied, a poor one may be dropped. The draw is seeded by (seed, problem id), so a run is reproducible and does
   not depend on how problems are batched.

The search ends when every particle has finished (the last allowed iteration, `budget.num_iterations`, writes the
rest to the end), so each problem gets exactly N finished completions, copies included: the particle approximation
itself, which the usual aggregations (naive / weighted / majority) read as they read best-of-N's samples. Low
`weight_temperature` concentrates the particles on the best-scored prefix (towards greedy search under the PRM); high
temperature makes resampling uniform (towards best-of-N, with copies). At most N samples are in flight per problem;
duplicated finished particles cost nothing more. Compute (generated tokens, PRM tokens, backend calls) is counted by
the shared step loop (tts/search/tree.py).

    python tts/main.py strategy=particle_filtering n=16 strategy.resampling=systematic
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tts.config.schema import Config
from tts.data.problem import stable_hash
from tts.search.base import RunSpec, SearchOutput
from tts.search.tree import Expansion, Node, TreeSearch, TreeSearchConfig, TreeState

RESAMPLING = ("multinomial", "systematic")
REWARD_TRANSFORMS = ("logit", "identity")
LOGIT_CLIP = 1e-7  # a PRM score of exactly 0 or 1 would make an infinite log-weight


@dataclass
class ParticleFilteringConfig(TreeSearchConfig):
    name: str = "particle_filtering"
    weight_temperature: float = 1.0  # log-weights are transform(reward) / this: low = exploit, high = uniform
    resampling: str = "multinomial"  # multinomial (the paper) | systematic (same expected counts, lower variance)
    reward_transform: str = "logit"  # log-weight from the PRM score: logit (the paper) | identity (the raw score)

    def check(self, run: Config) -> None:
        super().check(run)
        self.require(
            self.weight_temperature > 0 and math.isfinite(self.weight_temperature),
            "weight_temperature",
            f"must be a finite number > 0 (softmax temperature over particle rewards), got {self.weight_temperature}",
        )
        self.require(
            self.resampling in RESAMPLING,
            "resampling",
            f"must be one of {', '.join(RESAMPLING)}, got {self.resampling!r}",
        )
        self.require(
            self.reward_transform in REWARD_TRANSFORMS,
            "reward_transform",
            f"must be one of {', '.join(REWARD_TRANSFORMS)}, got {self.reward_transform!r}",
        )


def log_weights(rewards: np.ndarray, transform: str, temperature: float) -> np.ndarray:
    rewards = np.asarray(rewards, dtype=float)
    if transform == "logit":
        r = np.clip(rewards, LOGIT_CLIP, 1.0 - LOGIT_CLIP)
        rewards = np.log(r) - np.log1p(-r)
    return rewards / temperature


def normalized(logw: np.ndarray) -> np.ndarray:
    """softmax(logw); non-finite log-weights (a PRM that returned NaN) get no mass, and all of them: uniform."""
    logw = np.where(np.isfinite(logw), logw, -np.inf)
    if not np.isfinite(logw).any():
        return np.full(len(logw), 1.0 / len(logw))
    w = np.exp(logw - logw.max())
    return w / w.sum()


def resample(weights: np.ndarray, k: int, method: str, rng: np.random.Generator) -> np.ndarray:
    """`k` indices drawn from normalized `weights`, sorted (copies of one particle sit together).

    multinomial: k independent draws. systematic: one uniform offset u, the points (u + i) / k read off the
    cumulative weights; each index is drawn k * w times in expectation (floor or ceil of it), so it is unbiased too."""
    if method == "multinomial":
        return np.sort(rng.choice(len(weights), size=k, p=weights))
    if method == "systematic":
        edges = np.cumsum(weights)
        edges[-1] = 1.0  # rounding must not leave the last point beyond the end
        points = (rng.random() + np.arange(k)) / k
        return np.minimum(np.searchsorted(edges, points, side="right"), len(weights) - 1)
    raise ValueError(f"unknown resampling {method!r}; one of {', '.join(RESAMPLING)}")


class ParticleState(TreeState):
    config: ParticleFilteringConfig

    def __init__(self, problem, config: ParticleFilteringConfig, spec: RunSpec) -> None:
        super().__init__(problem, config, spec)
        # seeded per problem, not per batch: the same problem resamples the same way however problems are batched
        self.rng = np.random.default_rng([spec.seed, stable_hash(problem.unique_id)])
        self.particles: list[Node] = []  # the N current particles; copies of one particle are the same Node

    def update(self, groups) -> None:
        children = [c for _, kids in groups for c in kids]
        pool = [p for p in self.particles if p.finished] + children  # N: finished ones keep their weight
        config = self.config
        logw = log_weights(np.array([p.value for p in pool]), config.reward_transform, config.weight_temperature)
        self.particles = [pool[i] for i in resample(normalized(logw), self.n, config.resampling, self.rng)]
        copies: dict[int, Expansion] = {}
        for p in self.particles:
            if not p.finished:
                copies.setdefault(id(p), Expansion(p, 0)).n += 1
        self.frontier = list(copies.values())
        self.done = not self.frontier

    def result(self) -> SearchOutput:
        # unfinished particles only if the search ran out of iterations (the last one writes everything to the end)
        completions = [p.to_completion(self.spec, None if p.finished else "truncated") for p in self.particles]
        return SearchOutput(completions=completions, compute=self.compute)


class ParticleFiltering(TreeSearch):
    state_class = ParticleState

    config: ParticleFilteringConfig
