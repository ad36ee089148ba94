"""Best-of-N: n independent complete solutions per problem in one backend call, every step scored by the PRM.

python tts/main.py strategy=best_of_n n=16
"""

from __future__ import annotations

from dataclasses import dataclass

from tts.config.schema import Config, StrategyConfig
from tts.search.base import (
    SearchOutput,
    Strategy,
    batches,
    make_request,
    prompt_compute,
    sampled_completion,
    score_samples,
)


@dataclass
class BestOfNConfig(StrategyConfig):
    _target_: str = "tts.search.best_of_n.BestOfN"
    name: str = "best_of_n"


class BestOfN(Strategy):
    config: BestOfNConfig

    def search(self, problems, policy, prm, run: Config) -> list[SearchOutput]:
        """n independent samples per problem, one backend call per chunk of problems, every step scored."""
        results: list[SearchOutput] = []
        for chunk in batches(problems, run.strategy.search_batch_size):
            first_index = len(results)
            outputs = policy.generate([make_request(p, run, n=run.n) for p in chunk])
            step_lists, scores, prm_shares = score_samples(
                prm, chunk, [[o.text for o in samples] for samples in outputs]
            )
            for samples, steps, step_scores, prm_tokens in zip(outputs, step_lists, scores, prm_shares):
                completions = [
                    sampled_completion(o, s, sc, scoring=run.scoring) for o, s, sc in zip(samples, steps, step_scores)
                ]
                compute = {
                    "generated_tokens": sum(o.num_tokens for o in samples),
                    "prm_tokens": prm_tokens,
                    "backend_calls": 1,
                    **prompt_compute(samples),
                }
                results.append(SearchOutput(completions=completions, compute=compute))
            self.report_finished(list(enumerate(results[first_index:], start=first_index)))  # saved at once
        return results
