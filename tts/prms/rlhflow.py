"""RLHFlow/Llama3.1-8B-PRM-Deepseek-Data (and -Mistral-Data): a Llama 3.1 chat model trained to answer "+" or "-".

Input (the published format): a conversation through the tokenizer's own chat template where the first user turn is
`problem + " " + step_1`, every later user turn is the next step, and every assistant turn is "+". The score of step k
is P("+") against "-" (tts/prms/two_token.py) at the position that predicts the k-th assistant "+", i.e. the last
token of the k-th assistant header.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from tts.prms.family import Encoded, PRMEngine, encode_rendered, read_out_tokens
from tts.prms.two_token import TwoTokenConfig, TwoTokenPRM


@dataclass
class RLHFlowConfig(TwoTokenConfig):
    """RLHFlow's PRMs (Llama3.1-8B-PRM-Deepseek-Data, the blog's): chat turns, the score is P(good_token)."""


class RLHFlowPRM(TwoTokenPRM):
    family_name = "rlhflow"

    def __init__(self, config: RLHFlowConfig, tokenizer: Any = None, engine: Optional[PRMEngine] = None) -> None:
        super().__init__(config, tokenizer, engine)
        self.answer_id = self.tokenizer.encode(self.good_token, add_special_tokens=False)[-1]

    def conversation(self, problem: str, steps: list[str], answer: str) -> list[dict[str, str]]:
        turns: list[dict[str, str]] = []
        for k, step in enumerate(steps):
            turns.append({"role": "user", "content": f"{problem} {step}" if k == 0 else step})
            turns.append({"role": "assistant", "content": answer})
        return turns

    def encode(self, problem: str, steps: list[str]) -> Encoded:
        # render once with unique markers as assistant answers to learn where each "+" lands, then for real
        markers = [f"\ue000{k}\ue001" for k in range(len(steps))]
        turns = self.conversation(problem, steps, "")
        for k, marker in enumerate(markers):
            turns[2 * k + 1]["content"] = marker
        marked = self.tokenizer.apply_chat_template(turns, tokenize=False)
        text, answer_chars, cursor = "", [], 0
        for marker in markers:
            at = marked.index(marker, cursor)
            text += marked[cursor:at]
            answer_chars.append(len(text))
            text += self.good_token
            cursor = at + len(marker)
        text += marked[cursor:]
        enc = encode_rendered(self.tokenizer, text)
        what = f"rlhflow PRM: the assistant answer {self.good_token!r} is not a token of its own; check the template"
        answers = read_out_tokens(self.tokenizer, enc, answer_chars, self.answer_id, what)
        return Encoded(list(enc["input_ids"]), [token - 1 for token in answers])  # the logits that predict the answer
