"""peiyi9979/math-shepherd-mistral-7b-prm: a Mistral causal LM that predicts "+" / "-" at a step tag.

Input (the published format): `problem + " " + "Step 1: ... ки\nStep 2: ... ки"`, encoded with the tokenizer's BOS.
The score of a step is the softmax over the logits of the "+" and "-" tokens (tts/prms/two_token.py) at the position
of that step's tag "ки". A step that already starts with its own "Step k:" / "## Step k:" header is not numbered again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

from tts.prms.family import Encoded, PRMEngine, read_out_tokens
from tts.prms.two_token import TwoTokenConfig, TwoTokenPRM

_HAS_HEADER = re.compile(r"^(#+\s*)?Step\s*\d+\s*:", re.IGNORECASE)


@dataclass
class MathShepherdConfig(TwoTokenConfig):
    """Math-Shepherd: "Step k: ... <step_tag>" lines; P(good_token) vs bad_token at each step tag."""

    step_tag: str = "ки"  # the tag closing every step; scores are read at its position


class MathShepherdPRM(TwoTokenPRM):
    family_name = "math_shepherd"

    def __init__(self, config: MathShepherdConfig, tokenizer: Any = None, engine: Optional[PRMEngine] = None) -> None:
        super().__init__(config, tokenizer, engine)
        self.step_tag = config.step_tag or "ки"
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
        what = f"math_shepherd PRM: the step tag {self.step_tag!r} did not stay one token"
        return Encoded(list(enc["input_ids"]), read_out_tokens(self.tokenizer, enc, tags, self.step_tag_id, what))
