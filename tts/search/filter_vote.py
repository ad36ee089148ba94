"""Filter-vote (Chen et al. 2024, "Are More LM Calls All You Need?"): n samples, then the policy reviews each one.

    python tts/main.py strategy=filter_vote n=16

Two backend calls per batch of problems: one samples the n solutions of every problem (as best-of-n, so the samples
are the same as best-of-n's for the same seed), one asks the policy to review every sample with `strategy.review_prompt`
and to end with a verdict, `[[correct]]` or `[[wrong]]`. Each completion records its verdict in
`extra["verdict"]` ("correct" / "wrong" / "unparsed") and whether it may vote in `Completion.vote` (only "correct"
does; an unparsed review counts as not correct). Scoring then takes the majority over the answers that may vote,
falling back to all answers when none may (`tts.scoring`, "maj"), and also reports the plain vote ("maj_unfiltered");
naive and weighted selection by the PRM are unchanged. Review tokens count toward `generated_tokens`, and separately
under `review_tokens`; with n samples a problem costs 2n calls.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import ClassVar, Optional

from tts.backends.base import GenerationRequest
from tts.config.schema import Config, StrategyConfig
from tts.search.base import Compute, RunSpec, SearchOutput, Strategy, make_request, sampled_completion, score_samples

_VERDICT = re.compile(r"\[\[\s*(correct|wrong)\s*\]\]", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
UNPARSED_KEEP_CHARS = 400  # an unparsed review is kept (this much of it) in the record, to see what went wrong


@dataclass
class FilterVoteConfig(StrategyConfig):
    sequential: ClassVar[bool] = True  # a review call reads each sample

    name: str = "filter_vote"
    review_prompt: str = ""  # {problem} and {solution} are replaced verbatim (conf/strategy/filter_vote.yaml)
    review_system_prompt: str = ""  # system message of the review call ("": none)
    review_temperature: Optional[float] = None  # null: the same as `temperature`
    review_max_tokens: int = 512  # tokens one review may generate; they count toward the generated tokens

    def check(self, run: Config) -> None:
        super().check(run)
        for placeholder in ("{problem}", "{solution}"):
            self.require(
                placeholder in self.review_prompt, "review_prompt", f"must contain the placeholder {placeholder}"
            )
        self.require(self.review_max_tokens >= 1, "review_max_tokens", "must be >= 1 (tokens of one review)")
        self.require(
            self.review_temperature is None or self.review_temperature >= 0,
            "review_temperature",
            "must be >= 0 or null (use strategy.temperature)",
        )


def fill(template: str, **values: str) -> str:
    """Replace `{name}` placeholders in one pass; other braces (LaTeX) and braces inside the values stay as they are."""
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)] if m.group(1) in values else m.group(0), template)


def parse_verdict(text: str) -> str:
    """ "correct" or "wrong" when exactly one of the two verdicts appears (any number of times, any case, spaces inside
    the brackets allowed); "unparsed" when neither appears, when both do, or when it is garbled (`[[corect]]`)."""
    found = {m.lower() for m in _VERDICT.findall(text or "")}
    return found.pop() if len(found) == 1 else "unparsed"


def review_request(
    problem: str, solution: str, spec: RunSpec, config: FilterVoteConfig, seed_offset: int
) -> GenerationRequest:
    messages = [{"role": "system", "content": config.review_system_prompt}] if config.review_system_prompt else []
    prompt = fill(config.review_prompt, problem=problem, solution=solution.strip())
    messages.append({"role": "user", "content": prompt})
    temperature = config.temperature if config.review_temperature is None else config.review_temperature
    return GenerationRequest(
        messages=messages,
        n=1,
        temperature=temperature,
        top_p=config.top_p,
        max_tokens=config.review_max_tokens,
        seed=spec.seed + seed_offset,
    )


class FilterVote(Strategy):
    config: FilterVoteConfig

    def search(self, problems, policy, prm, spec: RunSpec) -> list[SearchOutput]:
        results: list[SearchOutput] = []
        for chunk in self.chunks(problems, results):
            outputs = policy.generate([make_request(p, spec, self.config, n=spec.n) for p in chunk])
            # one review per sample, each with its own seed so identical solutions get independent reviews
            reviews = policy.generate(
                [
                    review_request(p.problem, o.text, spec, self.config, seed_offset=1 + j)
                    for p, samples in zip(chunk, outputs)
                    for j, o in enumerate(samples)
                ]
            )
            step_lists, scores, prm_shares = score_samples(
                prm, chunk, [[o.text for o in samples] for samples in outputs]
            )
            offset = 0
            for samples, steps, step_scores, prm_tokens in zip(outputs, step_lists, scores, prm_shares):
                mine = [r[0] for r in reviews[offset : offset + len(samples)]]
                offset += len(samples)
                completions = []
                for o, s, sc, r in zip(samples, steps, step_scores, mine):
                    verdict = parse_verdict(r.text)
                    extra = {"verdict": verdict, "review_tokens": r.num_tokens}
                    if verdict == "unparsed":
                        extra["review"] = r.text[-UNPARSED_KEEP_CHARS:]
                    completion = sampled_completion(o, s, sc, extra, spec=spec)
                    # on disk the vote follows the verdict in `extra`, as filter-vote's records have always had it
                    completions.append(replace(completion, vote=verdict == "correct", vote_at=1))
                review_tokens = sum(r.num_tokens for r in mine)
                compute = Compute(
                    generated_tokens=sum(o.num_tokens for o in samples) + review_tokens,
                    review_tokens=review_tokens,
                    prm_tokens=prm_tokens,
                    backend_calls=2,
                )
                compute.count_prompts([*samples, *mine])
                results.append(SearchOutput(completions=completions, compute=compute))
        return results
