"""The read-out of the PRMs trained as causal LMs to answer a "good" or a "bad" token (Math-Shepherd, RLHFlow),
written once: the score of a step is the softmax over the logits of those two tokens at the step's read-out position.
The two tokens are those of `encode("+ -")`, as in the model cards; the families differ only in their input format
(tts/prms/math_shepherd.py, tts/prms/rlhflow.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from tts.prms.family import PRMEngine, PRMFamily, PRMFamilyConfig, VLLMPooling, load_prm_tokenizer


@dataclass
class TwoTokenConfig(PRMFamilyConfig):
    """The two answer tokens whose probabilities are compared."""

    good_token: str = "+"  # answer to a good step; its probability against bad_token's is the score
    bad_token: str = "-"  # the competing answer token


class TwoTokenPRM(PRMFamily):
    """P(good token) against the bad one, on transformers from two rows of the LM head, on vLLM as a 2-way
    classifier built from the same two tokens."""

    def __init__(self, config: TwoTokenConfig, tokenizer: Any = None, engine: Optional[PRMEngine] = None) -> None:
        tokenizer = load_prm_tokenizer(config) if tokenizer is None else tokenizer
        self.good_token = config.good_token or "+"
        self.bad_token = config.bad_token or "-"
        self.good_id, self.bad_id = good_bad_token_ids(tokenizer, self.good_token, self.bad_token, self.family_name)
        super().__init__(config, tokenizer, engine)

    def token_scores(self, model: Any, inputs: dict) -> Any:
        return two_token_probability(model, inputs, self.good_id, self.bad_id)

    def cache_module(self, model: Any) -> Any:
        return model.base_model

    def vllm_pooling(self, step_by_step: bool) -> VLLMPooling:
        """A causal LM as a P(good) scorer (sigmoid(logit_good - logit_bad) = 2-way softmax), read at the last token
        of each sequence when scoring step by step (prefix caching serves the sequence's prefix), else at every token
        (`ALL` pooling)."""
        from vllm.config import PoolerConfig

        bad, good = self.tokenizer.convert_ids_to_tokens([self.bad_id, self.good_id])
        pooler = (
            PoolerConfig(task="classify", seq_pooling_type="LAST")
            if step_by_step
            else PoolerConfig(task="token_classify", tok_pooling_type="ALL")
        )
        return VLLMPooling(
            dict(
                runner="pooling",
                convert="classify",
                hf_overrides={"classifier_from_token": [bad, good], "method": "from_2_way_softmax"},
                pooler_config=pooler,
            )
        )


def good_bad_token_ids(tokenizer: Any, good: str, bad: str, family: str) -> tuple[int, int]:
    """Ids of the "good" and "bad" read-out tokens as the model cards encode them: `encode("+ -")` gives exactly two
    tokens (the second with its leading space), whose logits are compared at each step position."""
    pair = tokenizer.encode(f"{good} {bad}", add_special_tokens=False)
    if len(pair) != 2:
        raise ValueError(f"{family} PRM: {good!r} {bad!r} must encode to two tokens, got {pair}")
    return pair[0], pair[1]


def two_token_probability(model: Any, inputs: dict, good_id: int, bad_id: int) -> Any:
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
