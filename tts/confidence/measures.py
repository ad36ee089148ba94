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

Everything here is a pure function of a (tokens, k) array; records keep the summaries (`summarize`, rounded by
`for_record`), never the arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np

# DeepConf's defaults: 2048-token groups, the bottom 10% of groups, a 2048-token tail.
DEFAULT_WINDOW = 2048
DEFAULT_TAIL = 2048
BOTTOM_FRACTION = 0.10
# digits a record keeps of each measure: confidences are O(1), so 1e-5 keeps every ranking a run can resolve while a
# value takes 7 characters of JSON instead of 18
RECORD_DIGITS = 5


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
    if values.shape[0] == 0 or values.shape[1] == 0:
        return 0.0
    top = values.max(axis=1)
    normaliser = top + np.log(np.exp(values - top[:, None]).sum(axis=1))  # log-sum-exp of each row
    # the mean over a row of its renormalised log-probabilities is its mean log-probability less the normaliser
    return float(np.mean(normaliser - values.mean(axis=1)) - np.log(values.shape[1]))


def summarize(
    top_logprobs: np.ndarray,
    step_lengths: Optional[Sequence[int]] = None,
    window: int = DEFAULT_WINDOW,
    tail: int = DEFAULT_TAIL,
) -> dict[str, object]:
    """What a record keeps of a completion's log-probabilities: mean, lowest group, bottom-10% and tail confidence,
    self-certainty, and (given the token count of each step, in order) the lowest group confidence inside each step,
    so analysis can set a new threshold without generating again."""
    values = np.asarray(top_logprobs, dtype=np.float64)
    confidence = token_confidence(values)
    mean = float(confidence.mean()) if len(confidence) else 0.0
    if len(confidence) <= window:  # one group, the whole trace (most traces at DeepConf's 2048): no windows to scan
        low = bottom = mean
    else:
        groups = group_confidence(confidence, window)
        low, bottom = lowest_group(groups), bottom_mean(groups)
    summary: dict[str, object] = {
        "mean": mean,
        "lowest_group": low,
        "bottom10": bottom,
        "tail": mean if len(confidence) <= tail else tail_confidence(confidence, tail),
        "self_certainty": self_certainty(values),
    }
    if step_lengths is not None:
        summary["step_lowest"] = step_lowest_groups(confidence, step_lengths, window)
    return summary


def step_lowest_groups(
    confidence: np.ndarray, step_lengths: Sequence[int], window: int = DEFAULT_WINDOW
) -> list[Optional[float]]:
    """For each step (its tokens in order), the lowest group confidence inside it, with `group_confidence`'s groups.

    A group is a full window of `window` tokens; a step in which at least one full window ends gets the lowest of
    those. A step that ends before the trace has `window` tokens gets the one group `group_confidence` gives the trace
    cut at the step's end: the mean of the trace so far. So the lowest over the steps that end at or after token
    `window` is the trace's `lowest_group`, and the last step of a trace shorter than the window holds its mean. A
    step with no tokens gets None."""
    values = np.asarray(confidence, dtype=np.float64)
    running = np.concatenate(([0.0], np.cumsum(values)))
    ends = np.minimum(np.cumsum(np.asarray(step_lengths, dtype=np.int64)), len(values))
    starts = np.concatenate(([0], ends[:-1]))
    lowest = np.full(len(ends), np.nan)
    prefix = (ends > starts) & (ends < window)
    lowest[prefix] = running[ends[prefix]] / ends[prefix]
    full = (ends > starts) & (ends >= window)
    if full.any():
        groups = (running[window:] - running[:-window]) / window  # groups[j]: the window ending at token j + window
        first = np.maximum(starts[full] + 1, window) - window  # each step's first group; the next step's follows
        lowest[full] = np.minimum.reduceat(groups[: ends[full][-1] - window + 1], first)
    return [None if np.isnan(v) else float(v) for v in lowest]


def step_token_lengths(pieces: Sequence[tuple[str, int]], steps: Sequence[str]) -> list[int]:
    """How many of the tokens each step takes, for a text written as `pieces` of (text, tokens) (one per backend
    output) and split into `steps` (stripped, in order, as tts.data.steps.split_steps gives them).

    A backend says how many tokens each output has but not where in its text each token falls, so a step boundary
    inside an output is placed in proportion to its characters; boundaries between outputs are exact (a tree search's
    outputs are one step each, so its steps are exact)."""
    char_knots, token_knots = [0], [0]
    for text, tokens in pieces:
        char_knots.append(char_knots[-1] + len(text))
        token_knots.append(token_knots[-1] + int(tokens))
    full = "".join(text for text, _ in pieces)
    starts, position = [], 0
    for step in steps:
        found = full.find(step, position)
        starts.append(position if found < 0 else found)
        position = position if found < 0 else found + len(step)
    ends = [*starts[1:], len(full)][: len(steps)]  # a step owns the separator after it, the last one the rest
    boundaries = np.rint(np.interp(ends, char_knots, token_knots)).astype(np.int64)
    return np.diff(np.concatenate(([0], boundaries))).tolist()


def for_record(summary: dict[str, object], digits: int = RECORD_DIGITS) -> dict[str, object]:
    """`summarize`'s output rounded to `digits` decimals: what `Completion.confidence` keeps (about 60 bytes of JSON
    plus 8 per step)."""
    rounded: dict[str, object] = {}
    for name, value in summary.items():
        if isinstance(value, list):
            rounded[name] = [None if v is None else round(v, digits) for v in value]
        else:
            rounded[name] = round(value, digits)  # type: ignore[call-overload]
    return rounded


def completion_confidence(
    pieces: Sequence[tuple[str, np.ndarray]], steps: Sequence[str], window: int, tail: int
) -> Optional[dict[str, object]]:
    """The record summary of a completion written as `pieces` of (text, top-k log-probabilities), one per backend
    output in order (a tree search's completion is several outputs); None when any piece has no log-probabilities."""
    if not pieces or any(array is None for _, array in pieces):
        return None
    k = {array.shape[1] for _, array in pieces if array.ndim == 2}
    if len(k) != 1:
        return None  # outputs asked for different k (or none has a row): no one measure covers them
    arrays = [array for _, array in pieces]
    lengths = step_token_lengths([(text, len(array)) for text, array in pieces], steps)
    top = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
    return for_record(summarize(top, lengths, window, tail))
