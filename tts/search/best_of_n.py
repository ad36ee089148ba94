"""Best-of-N: n independent complete solutions per problem in one backend call, every step scored by the PRM.

python tts/main.py strategy=best_of_n n=16
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tts.config.schema import StrategyConfig
from tts.search.base import Compute, RunSpec, SearchOutput, Strategy, make_request, sampled_completion, score_samples


@dataclass
class BestOfNConfig(StrategyConfig):
    independent_samples: ClassVar[bool] = True  # n i.i.d. samples: any K of them are a run at K

    name: str = "best_of_n"


class BestOfN(Strategy):
    config: BestOfNConfig

    def search(self, problems, policy, prm, spec: RunSpec) -> list[SearchOutput]:
        """n independent samples per problem, one backend call per chunk of problems, every step scored."""
        results: list[SearchOutput] = []
        for chunk in self.chunks(problems, results):
            outputs = policy.generate([make_request(p, spec, self.config, n=spec.n) for p in chunk])
            step_lists, scores, prm_shares = score_samples(
                prm, chunk, [[o.text for o in samples] for samples in outputs]
            )
            for samples, steps, step_scores, prm_tokens in zip(outputs, step_lists, scores, prm_shares):
                completions = [sampled_completion(o, s, sc, spec=spec) for o, s, sc in zip(samples, steps, step_scores)]
                compute = Compute(
                    generated_tokens=sum(o.num_tokens for o in samples), prm_tokens=prm_tokens, backend_calls=1
                )
                compute.count_prompts(samples)
                results.append(SearchOutput(completions=completions, compute=compute))
        return results
