"""Sequential revisions (Snell et al. 2024, section 6): n / L chains per problem, each of L attempts.

    python tts/main.py strategy=revisions n=16 strategy.revisions_per_chain=4

The first attempt of every chain is an ordinary sample (the same as best-of-n's for the same seed). Each later attempt
answers `strategy.revision_prompt`, which shows the problem and the chain's previous attempts, oldest first and newest
last, each rendered with `strategy.revision_attempt_template`. The previous attempts shown are capped at
`strategy.revision_context_tokens` generated tokens (default `budget.max_tokens`): the oldest are dropped first, so a
chain longer than its context sees only its latest attempts. Budget-fair: n generations per problem in all, L backend
calls per batch (one per revision round, for all chains of all problems).

All n attempts are the completions, so the pipeline's naive / weighted (PRM) and maj selections run over every attempt.
Each completion records `extra["chain"]`, `extra["position"]` (0 = first attempt), `extra["context_attempts"]` and
`extra["context_tokens"]` (the previous attempts its prompt held), so that analysis can, e.g., select among the last
attempts only. `revisions_per_chain=1` is best-of-n; `revisions_per_chain=n` is one chain of n sequential attempts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from tts.backends.base import GenerationOutput, GenerationRequest, build_messages
from tts.config.schema import Config, StrategyConfig, is_whole
from tts.search.base import Compute, RunSpec, SearchOutput, Strategy, make_request, sampled_completion, score_samples
from tts.search.filter_vote import fill


@dataclass
class RevisionsConfig(StrategyConfig):
    sequential: ClassVar[bool] = True  # each attempt reads its chain's earlier ones

    name: str = "revisions"
    revisions_per_chain: int = 4  # L, attempts per chain (1 = best-of-n); must divide n
    revision_prompt: str = ""  # {problem} and {attempts} are replaced verbatim (conf/strategy/revisions.yaml)
    revision_attempt_template: str = "{attempt}"  # how each previous attempt is shown ({attempt})
    revision_context_tokens: Optional[int] = None  # previous-attempt tokens a prompt may hold (null: budget.max_tokens)

    def check(self, run: Config) -> None:
        super().check(run)
        length = self.revisions_per_chain
        self.require(is_whole(length) and length >= 1, "revisions_per_chain", f"must be >= 1, got {length!r}")
        self.require(
            run.n % length == 0,
            "revisions_per_chain",
            f"must divide n={run.n} (n / revisions_per_chain chains run in parallel), got {length}",
        )
        for placeholder in ("{problem}", "{attempts}"):
            self.require(
                placeholder in self.revision_prompt, "revision_prompt", f"must contain the placeholder {placeholder}"
            )
        self.require(
            "{attempt}" in self.revision_attempt_template,
            "revision_attempt_template",
            "must contain the placeholder {attempt}",
        )
        self.require(
            self.revision_context_tokens is None or self.revision_context_tokens >= 1,
            "revision_context_tokens",
            "must be >= 1 or null (budget.max_tokens)",
        )


def context(attempts: list[GenerationOutput], budget: int) -> list[GenerationOutput]:
    """The newest attempts whose generated tokens add up to at most `budget`, oldest first (the oldest are dropped)."""
    kept, used = [], 0
    for attempt in reversed(attempts):
        if used + attempt.num_tokens > budget:
            break
        kept.append(attempt)
        used += attempt.num_tokens
    return kept[::-1]


def revision_request(
    problem: str, shown: list[GenerationOutput], spec: RunSpec, config: RevisionsConfig, seed_offset: int
) -> GenerationRequest:
    rendered = "\n\n".join(fill(config.revision_attempt_template, attempt=a.text.strip()) for a in shown)
    prompt = fill(config.revision_prompt, problem=problem, attempts=rendered)
    return GenerationRequest(
        messages=build_messages(spec.system_prompt, prompt),
        n=1,
        temperature=config.temperature,
        top_p=config.top_p,
        max_tokens=spec.max_tokens,
        seed=spec.seed + seed_offset,
        top_logprobs=spec.top_logprobs,
    )


class Revisions(Strategy):
    config: RevisionsConfig

    def search(self, problems, policy, prm, spec: RunSpec) -> list[SearchOutput]:
        length = self.config.revisions_per_chain
        chains = spec.n // length
        budget = self.config.revision_context_tokens or spec.max_tokens
        results: list[SearchOutput] = []
        for chunk in self.chunks(problems, results):
            # history[i][c]: the attempts of chain c of problem i so far;
            # shown[i][c]: (attempts, tokens) each prompt held
            first = policy.generate([make_request(p, spec, self.config, n=chains) for p in chunk])
            history = [[[o] for o in samples] for samples in first]
            shown = [[[(0, 0)] for _ in range(chains)] for _ in chunk]
            for position in range(1, length):
                pairs = [(i, c) for i in range(len(chunk)) for c in range(chains)]
                prompts = {}
                for i, c in pairs:
                    prompts[i, c] = context(history[i][c], budget)
                    shown[i][c].append((len(prompts[i, c]), sum(a.num_tokens for a in prompts[i, c])))
                outputs = policy.generate(
                    [
                        revision_request(
                            chunk[i].problem, prompts[i, c], spec, self.config, seed_offset=position * chains + c
                        )
                        for i, c in pairs
                    ]
                )
                for (i, c), samples in zip(pairs, outputs):
                    history[i][c].append(samples[0])
            attempts = [[a for chain in per for a in chain] for per in history]  # chain-major: chain 0's attempts first
            step_lists, scores, prm_shares = score_samples(prm, chunk, [[a.text for a in per] for per in attempts])
            for i, (per, steps, step_scores, prm_tokens) in enumerate(zip(attempts, step_lists, scores, prm_shares)):
                completions = []
                for j, (a, s, sc) in enumerate(zip(per, steps, step_scores)):
                    chain, position = divmod(j, length)
                    held, tokens = shown[i][chain][position]
                    extra = {"chain": chain, "position": position, "context_attempts": held, "context_tokens": tokens}
                    completions.append(sampled_completion(a, s, sc, extra, spec=spec))
                compute = Compute(
                    generated_tokens=sum(a.num_tokens for a in per),
                    prm_tokens=prm_tokens,
                    context_tokens=sum(held_tokens for chain in shown[i] for _, held_tokens in chain),
                    backend_calls=length,
                )
                compute.count_prompts(per)
                results.append(SearchOutput(completions=completions, compute=compute))
        return results
