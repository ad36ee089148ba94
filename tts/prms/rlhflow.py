"""RLHFlow/Llama3.1-8B-PRM-Deepseek-Data (and -Mistral-Data): a Llama 3.1 chat model trained to answer "+" or "-".

Input (the published format): a conversation through the tokenizer's own chat template where the first user turn is
`problem + " " + step_1`, every later user turn is the next step, and every assistant turn is "+". The score of step k
is P("+") against "-" (softmax over those two token logits) at the position that predicts the k-th assistant "+", i.e.
the last token of the k-th assistant header. The two tokens are those of `encode("+ -")`, as in the model card.
"""

from __future__ import annotations

from dataclasses import dataclass

from tts.prms.hf_common import (
    Encoded,
    HFPRMConfig,
    HFProcessRewardModel,
    char_to_token,
    encode_rendered,
    good_bad_token_ids,
    load_hf,
)


class RLHFlowPRM(HFProcessRewardModel):
    family = "rlhflow"

    def __init__(self, cfg, **kwargs) -> None:
        super().__init__(cfg, **kwargs)
        self.good_token = cfg.good_token or "+"
        self.bad_token = cfg.bad_token or "-"
        self.good_id, self.bad_id = good_bad_token_ids(self.tokenizer, self.good_token, self.bad_token, "rlhflow")
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
        ids = list(enc["input_ids"])
        positions = []
        for char in answer_chars:
            token = char_to_token(enc["offset_mapping"], char)
            if ids[token] != self.answer_id:
                raise ValueError(
                    f"rlhflow PRM: the assistant answer {self.good_token!r} is not a token of its own "
                    f"(found {self.tokenizer.convert_ids_to_tokens([ids[token]])}); check the template"
                )
            positions.append(token - 1)  # the logits that predict the answer token
        return Encoded(ids, positions)

    def token_scores(self, inputs: dict):
        return two_token_probability(self.model, inputs, self.good_id, self.bad_id)

    def cache_module(self):
        return self.model.base_model

    def vllm_engine_kwargs(self) -> dict:
        from tts.prms.hf_common import two_token_pooler_kwargs

        bad, good = self.tokenizer.convert_ids_to_tokens([self.bad_id, self.good_id])
        return two_token_pooler_kwargs(bad=bad, good=good, last=self.prefix_reuse)


def two_token_probability(model, inputs: dict, good_id: int, bad_id: int):
    """softmax over (good, bad) logits at every position, from the hidden states and two rows of the LM head only
    (the full [batch, length, vocab] logits of a 128k vocabulary would not fit a useful token budget). `inputs`: the
    keyword arguments of `model.base_model` (ids, mask, and a KV cache with its position ids when there is one)."""
    import torch

    hidden = model.base_model(**inputs).last_hidden_state
    head = model.get_output_embeddings()
    rows = head.weight[[good_id, bad_id]]
    logits = hidden @ rows.T
    if getattr(head, "bias", None) is not None:
        logits = logits + head.bias[[good_id, bad_id]]
    return torch.softmax(logits.float(), dim=-1)[..., 0]


@dataclass
class RLHFlowConfig(HFPRMConfig):
    """RLHFlow's PRMs (Llama3.1-8B-PRM-Deepseek-Data, the blog's): chat turns, the score is P(good_token)."""

    _target_: str = "tts.prms.rlhflow.build"
    name: str = "rlhflow"
    good_token: str = "+"  # assistant answer of a good step; its probability is the score
    bad_token: str = "-"  # the competing answer token


def build(config: RLHFlowConfig) -> RLHFlowPRM:
    return load_hf(RLHFlowPRM, config)
