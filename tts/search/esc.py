"""Early-stopping self-consistency (ESC; Li et al., ICLR 2024, "Escape Sky-high Cost: Early-stopping Self-Consistency
for Multi-step Reasoning"): sample in windows and stop once a window agrees.

    python tts/main.py strategy=esc prm=none n=32 strategy.window=4

Per problem, with a budget of n samples: draw a window of `window` complete samples (one request; the last window is
smaller when `window` does not divide n); if every sample of the window has the same answer, stop; else draw the next
window. The answer is the majority over every sample drawn (self-consistency). A window with one answer throughout is
strong evidence that the full vote would pick it, which is where ESC saves its samples: on easy problems it stops after
one window, on hard ones it spends the whole budget.

Every sample drawn is a completion (`extra["esc_window"]`: its window, `Completion.vote` true, `.weight` 1), so a
problem has n completions or fewer with a `note`; the pipeline scores the majority over all of them as `final` and
counts `traces_generated` / `traces_used` (`traces_stopped` is 0: ESC never cuts a sample short). The windows of every
problem of a batch go to the backend in one call per round. No PRM is needed (prm=none scores nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from tts.config.schema import Config, StrategyConfig, is_whole
from tts.search.base import Compute, RunSpec, SearchOutput, Strategy, make_request, sampled_completion, score_samples
from tts.search.deepconf import answer_key
from tts.search.tree import SEED_STRIDE


@dataclass
class ESCConfig(StrategyConfig):
    adaptive: ClassVar[bool] = True  # stops sampling once a window agrees

    name: str = "esc"
    window: int = 4  # samples per window (at most n); stop when one window's answers all agree

    def check(self, run: Config) -> None:
        super().check(run)
        self.require(
            is_whole(self.window) and self.window >= 1, "window", f"must be a whole number >= 1, got {self.window!r}"
        )


class ESC(Strategy):
    config: ESCConfig

    def search(self, problems, policy, prm, spec: RunSpec) -> list[SearchOutput]:
        n, window = spec.n, min(self.config.window, spec.n)
        results: list[SearchOutput] = []
        for chunk in self.chunks(problems, results):
            samples: list[list] = [[] for _ in chunk]  # (output, window index) per problem
            calls = [0] * len(chunk)
            active = list(range(len(chunk)))
            round_ = 0
            while active:
                sizes = [min(window, n - len(samples[i])) for i in active]
                outputs = policy.generate(
                    [
                        # sample t of a problem is draw t - s of the request starting at sample s (seed offset
                        # SEED_STRIDE * s), as deepconf numbers its traces
                        make_request(chunk[i], spec, self.config, n=size, seed_offset=SEED_STRIDE * len(samples[i]))
                        for i, size in zip(active, sizes)
                    ]
                )
                still = []
                for i, drawn in zip(active, outputs):
                    calls[i] += 1
                    samples[i].extend((o, round_) for o in drawn)
                    keys = [answer_key(o.text) for o in drawn]
                    unanimous = keys[0] is not None and all(k == keys[0] for k in keys)
                    if not unanimous and len(samples[i]) < n:
                        still.append(i)
                active = still
                round_ += 1
            step_lists, scores, prm_tokens = score_samples(prm, chunk, [[o.text for o, _ in per] for per in samples])
            for per, steps, step_scores, prm_share, num_calls in zip(samples, step_lists, scores, prm_tokens, calls):
                completions = [
                    replace(sampled_completion(o, s, sc, {"esc_window": w}, spec=spec), vote=True, weight=1.0)
                    for (o, w), s, sc in zip(per, steps, step_scores)
                ]
                compute = Compute(
                    generated_tokens=sum(o.num_tokens for o, _ in per),
                    prm_tokens=prm_share,
                    backend_calls=num_calls,
                    traces_generated=len(per),
                    traces_stopped=0,
                    traces_used=len(per),
                )
                compute.count_prompts(o for o, _ in per)
                note = None
                if len(per) < n:
                    note = f"esc: window {per[-1][1] + 1} agreed after {len(per)} of {n} samples"
                results.append(SearchOutput(completions=completions, compute=compute, note=note))
        return results
