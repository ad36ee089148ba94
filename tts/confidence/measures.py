"""The policy's confidence in what it wrote, from the top-k log-probabilities of each generated token.

Selection and stopping rules that need no reward model read only these numbers (see docs/confidence.md):

- token confidence (DeepConf, Fu et al. 2025): C_i = -(1/k) sum_j log P_i(j) over the k most likely tokens at
  position i. High when the distribution is peaked (the top token takes the mass and the other k-1 are unlikely).
- group confidence: the mean token confidence over a sliding window of `window` tokens ending at each position (a
  trace shorter than the window has one group, its mean). DeepConf summarises a trace by its lowest group, the mean of
  its bottom 10% of groups, or its tail (the mean over the last `tail` tokens).
- self-certainty (Kang et al. 2025): the mean over tokens of KL(U || P_i), the divergence of the token distribution
  from uniform. A backend returns only the top k log-probabilities, so P_i is the top-k distribution renormalised and
  U is uniform over those k tokens: -log k - (1/k) sum_j log Ptilde_i(j). With the full vocabulary the measure is the
  paper's; with k tokens it ranks traces the same way when the tail mass is small, and it costs nothing extra.

Everything here is a pure function of a (tokens, k) array; records keep the summaries (`summarize`), never the arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np

# DeepConf's defaults: 2048-token groups, the bottom 10% of groups, a 2048-token tail.
DEFAULT_WINDOW = 2048
DEFAULT_TAIL = 2048
BOTTOM_FRACTION = 0.10


def token_confidence(top_logprobs: np.ndarray) -> np.ndarray:
    """(tokens,) DeepConf token confidence from a (tokens, k) array of natural-log probabilities."""
    values = np.asarray(top_logprobs, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"top_logprobs must be (tokens, k), got shape {values.shape}")
    if values.shape[0] == 0:
        return np.zeros(0)
    return -values.mean(axis=1)


def group_confidence(confidence: np.ndarray, window: int = DEFAULT_WINDOW) -> np.ndarray:
    """Mean token confidence of every window of `window` consecutive tokens (one group for a shorter trace)."""
    values = np.asarray(confidence, dtype=np.float64)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if len(values) == 0:
        return np.zeros(0)
    if len(values) <= window:
        return np.array([values.mean()])
    sums = np.cumsum(np.concatenate(([0.0], values)))
    return (sums[window:] - sums[:-window]) / window


def lowest_group(groups: np.ndarray) -> float:
    return float(np.min(groups)) if len(groups) else 0.0


def bottom_mean(groups: np.ndarray, fraction: float = BOTTOM_FRACTION) -> float:
    """Mean of the lowest `fraction` of the groups (at least one)."""
    if not len(groups):
        return 0.0
    count = max(1, int(len(groups) * fraction))
    return float(np.mean(np.partition(np.asarray(groups, dtype=np.float64), count - 1)[:count]))


def tail_confidence(confidence: np.ndarray, tail: int = DEFAULT_TAIL) -> float:
    """Mean token confidence of the last `tail` tokens."""
    return float(np.mean(confidence[-tail:])) if len(confidence) else 0.0


def self_certainty(top_logprobs: np.ndarray) -> float:
    """Mean over tokens of KL(uniform || top-k distribution renormalised), from a (tokens, k) array."""
    values = np.asarray(top_logprobs, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"top_logprobs must be (tokens, k), got shape {values.shape}")
    if values.shape[0] == 0:
        return 0.0
    k = values.shape[1]
    renormalised = values - np.logaddexp.reduce(values, axis=1, keepdims=True)
    return float(np.mean(-np.log(k) - renormalised.mean(axis=1)))


def summarize(
    top_logprobs: np.ndarray,
    step_lengths: Optional[Sequence[int]] = None,
    window: int = DEFAULT_WINDOW,
    tail: int = DEFAULT_TAIL,
) -> dict[str, object]:
    """What a record keeps of a completion's log-probabilities: mean, lowest group, bottom-10% and tail confidence,
    self-certainty, and (given the token count of each step, in order) the lowest group confidence inside each step,
    so analysis can set a new threshold without generating again."""
    confidence = token_confidence(top_logprobs)
    groups = group_confidence(confidence, window)
    summary: dict[str, object] = {
        "mean": float(confidence.mean()) if len(confidence) else 0.0,
        "lowest_group": lowest_group(groups),
        "bottom10": bottom_mean(groups),
        "tail": tail_confidence(confidence, tail),
        "self_certainty": self_certainty(top_logprobs),
    }
    if step_lengths is not None:
        summary["step_lowest"] = step_lowest_groups(confidence, step_lengths, window)
    return summary


def step_lowest_groups(
    confidence: np.ndarray, step_lengths: Sequence[int], window: int = DEFAULT_WINDOW
) -> list[Optional[float]]:
    """For each step (its tokens in order), the lowest group confidence among the windows that end inside it."""
    lowest: list[Optional[float]] = []
    start = 0
    running = np.cumsum(np.concatenate(([0.0], np.asarray(confidence, dtype=np.float64))))
    for length in step_lengths:
        end = min(start + int(length), len(confidence))
        if end <= start:
            lowest.append(None)
            start = end
            continue
        ends = np.arange(start + 1, end + 1)
        begins = np.maximum(ends - window, 0)
        means = (running[ends] - running[begins]) / (ends - begins)
        lowest.append(float(means.min()))
        start = end
    return lowest
