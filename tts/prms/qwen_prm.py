"""Qwen/Qwen2.5-Math-PRM-7B: a Qwen2.5 backbone with a 2-class head on every token.

Input (the published format): the tokenizer's chat template over a system turn ("Please reason step by step, and put
your final answer within \\boxed{}." by default, `prm.system_prompt`), the problem as the user turn, and the assistant
turn made of the steps each followed by "<extra_0>". The score of a step is softmax(head)[1] at its "<extra_0>".

The real checkpoint is loaded with `AutoModel` + `trust_remote_code=True`; a checkpoint saved as
`*ForTokenClassification` (num_labels=2) is loaded with `AutoModelForTokenClassification` (the tiny test models).
"""

from __future__ import annotations

from tts.prms.hf_common import Encoded, HFProcessRewardModel, load_hf, single_token_id

DEFAULT_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
SEPARATOR = "<extra_0>"


class QwenPRM(HFProcessRewardModel):
    family = "qwen_prm"
    auto_class = "AutoModel"

    def __init__(self, cfg, **kwargs) -> None:
        super().__init__(cfg, **kwargs)
        self.system_prompt = cfg.system_prompt or DEFAULT_SYSTEM
        self.separator = cfg.step_tag or SEPARATOR
        self.separator_id = single_token_id(self.tokenizer, self.separator, "qwen_prm step separator")

    def encode(self, problem: str, steps: list[str]) -> Encoded:
        messages = [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": problem},
            {"role": "assistant", "content": self.separator.join(steps) + self.separator},
        ]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        ids = self.tokenizer.encode(text)
        positions = [i for i, t in enumerate(ids) if t == self.separator_id]
        if len(positions) != len(steps):
            raise ValueError(f"qwen_prm: {len(positions)} {self.separator!r} tokens for {len(steps)} steps "
                             f"(does a step or the problem contain {self.separator!r}?)")
        return Encoded(ids, positions)

    def token_scores(self, input_ids, attention_mask):
        import torch

        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        logits = out.logits if hasattr(out, "logits") else out[0]
        return torch.softmax(logits.float(), dim=-1)[..., 1]

    def vllm_engine_kwargs(self) -> dict:
        from vllm.config import PoolerConfig

        # vLLM implements Qwen2ForProcessRewardModel natively (its own head); read every token, pick our positions
        return dict(runner="pooling", native_head=True,
                    pooler_config=PoolerConfig(task="token_classify", tok_pooling_type="ALL"))

    def vllm_column(self) -> int:
        return 1


def build(prm_cfg) -> QwenPRM:
    auto_class = "AutoModel"
    if prm_cfg.backend == "hf":
        import json
        import os

        config_file = os.path.join(os.path.expanduser(prm_cfg.path or ""), "config.json")
        if os.path.isfile(config_file):
            with open(config_file) as f:
                architectures = json.load(f).get("architectures") or []
            if any(a.endswith("ForTokenClassification") for a in architectures):
                auto_class = "AutoModelForTokenClassification"
    cls = type("QwenPRM", (QwenPRM,), {"auto_class": auto_class})
    return load_hf(cls, prm_cfg)
