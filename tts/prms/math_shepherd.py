"""peiyi9979/math-shepherd-mistral-7b-prm: a Mistral causal LM that predicts "+" / "-" at a step tag.

Input (the published format): `problem + " " + "Step 1: ... ки\nStep 2: ... ки"`, encoded with the tokenizer's BOS.
The score of a step is the softmax over the logits of the "+" and "-" tokens (from `encode("+ -")`) at the position of
that step's tag "ки". A step that already starts with its own "Step k:" / "## Step k:" header is not numbered again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tts.prms.hf_common import Encoded, HFPRMConfig, HFProcessRewardModel, char_to_token, good_bad_token_ids, load_hf
from tts.prms.rlhflow import two_token_probability

_HAS_HEADER = re.compile(r"^(#+\s*)?Step\s*\d+\s*:", re.IGNORECASE)


class MathShepherdPRM(HFProcessRewardModel):
    family = "math_shepherd"

    def __init__(self, cfg, **kwargs) -> None:
        super().__init__(cfg, **kwargs)
        self.step_tag = cfg.step_tag or "ки"
        self.good_token = cfg.good_token or "+"
        self.bad_token = cfg.bad_token or "-"
        self.good_id, self.bad_id = good_bad_token_ids(self.tokenizer, self.good_token, self.bad_token, "math_shepherd")
        self.step_tag_id = self.tokenizer.encode(self.step_tag, add_special_tokens=False)[-1]

    def format(self, problem: str, steps: list[str]) -> tuple[str, list[int]]:
        """The input text and the character offset of every step tag in it."""
        text = f"{problem} "
        tags = []
        for k, step in enumerate(steps, start=1):
            if k > 1:
                text += "\n"
            text += step if _HAS_HEADER.match(step) else f"Step {k}: {step}"
            text += " "
            tags.append(len(text))
            text += self.step_tag
        return text, tags

    def encode(self, problem: str, steps: list[str]) -> Encoded:
        text, tags = self.format(problem, steps)
        enc = self.tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        positions = []
        for char in tags:
            token = char_to_token(enc["offset_mapping"], char)
            if ids[token] != self.step_tag_id:
                raise ValueError(
                    f"math_shepherd PRM: the step tag {self.step_tag!r} did not stay one token "
                    f"(found {self.tokenizer.convert_ids_to_tokens([ids[token]])})"
                )
            positions.append(token)
        return Encoded(ids, positions)

    def token_scores(self, inputs: dict):
        return two_token_probability(self.model, inputs, self.good_id, self.bad_id)

    def cache_module(self):
        return self.model.base_model

    def vllm_engine_kwargs(self) -> dict:
        from tts.prms.hf_common import two_token_pooler_kwargs

        bad, good = self.tokenizer.convert_ids_to_tokens([self.bad_id, self.good_id])
        return two_token_pooler_kwargs(bad=bad, good=good, last=self.prefix_reuse)


@dataclass
class MathShepherdConfig(HFPRMConfig):
    """Math-Shepherd: "Step k: ... <step_tag>" lines; P(good_token) vs bad_token at each step tag."""

    _target_: str = "tts.prms.math_shepherd.build"
    name: str = "math-shepherd"
    step_tag: str = "ки"  # the tag closing every step; scores are read at its position
    good_token: str = "+"
    bad_token: str = "-"


def build(config: MathShepherdConfig) -> MathShepherdPRM:
    return load_hf(MathShepherdPRM, config)
