"""Qwen/Qwen2.5-Math-PRM-7B: a Qwen2.5 backbone with a 2-class head on every token.

Input (the published format): the tokenizer's chat template over a system turn ("Please reason step by step, and put
your final answer within \\boxed{}." by default, `prm.system_prompt`), the problem as the user turn, and the assistant
turn made of the steps each followed by "<extra_0>". The score of a step is softmax(head)[1] at its "<extra_0>".

Loading: with `prm.trust_remote_code=true` the checkpoint's own code (`AutoModel`, as the model card does); with it
false, a `Qwen2ForProcessRewardModel` checkpoint is read into our own module (the `AutoModel` backbone plus the
`score.0` -> ReLU -> `score.2` head from the safetensors, the layout vLLM also loads); a checkpoint saved as
`*ForTokenClassification` (num_labels=2) is loaded with `AutoModelForTokenClassification`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from tts.prms.family import (
    Encoded,
    PRMEngine,
    PRMFamily,
    PRMFamilyConfig,
    VLLMPooling,
    checkpoint_tensors,
    load_prm_tokenizer,
    single_token_id,
)

DEFAULT_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
SEPARATOR = "<extra_0>"


@dataclass
class QwenPRMConfig(PRMFamilyConfig):
    """Qwen2.5-Math-PRM: steps joined by the separator in the assistant turn; softmax(head)[1] at each separator."""

    step_tag: str = SEPARATOR  # the step separator (one special token)
    system_prompt: str = DEFAULT_SYSTEM  # the published system turn


class QwenPRM(PRMFamily):
    family_name = "qwen_prm"

    def __init__(self, config: QwenPRMConfig, tokenizer: Any = None, engine: Optional[PRMEngine] = None) -> None:
        tokenizer = load_prm_tokenizer(config) if tokenizer is None else tokenizer
        self.system_prompt = config.system_prompt or DEFAULT_SYSTEM
        self.separator = config.step_tag or SEPARATOR
        self.separator_id = single_token_id(tokenizer, self.separator, "qwen_prm step separator")
        super().__init__(config, tokenizer, engine)

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
            raise ValueError(
                f"qwen_prm: {len(positions)} {self.separator!r} tokens for {len(steps)} steps "
                f"(does a step or the problem contain {self.separator!r}?)"
            )
        return Encoded(ids, positions)

    def hf_auto_class(self) -> str:
        if any(a.endswith("ForTokenClassification") for a in _architectures(self.config.path)):
            return "AutoModelForTokenClassification"
        return "AutoModel"

    def prepare_hf_model(self, model: Any) -> Any:
        path = self.config.path
        if self.config.trust_remote_code or not any(a.endswith("ForProcessRewardModel") for a in _architectures(path)):
            return model
        # AutoModel without remote code gave the bare backbone: add the reward head from the checkpoint
        assert path is not None, "the PRM was loaded from prm.path"
        param = next(model.parameters())
        head = load_reward_head(path, model.config.hidden_size).to(device=param.device, dtype=param.dtype)
        return _RewardHeadModel(model, head.eval())

    def token_scores(self, model: Any, inputs: dict) -> Any:
        import torch

        out = model(**inputs)
        logits = out.logits if hasattr(out, "logits") else out[0]
        return torch.softmax(logits.float(), dim=-1)[..., 1]

    def cache_module(self, model: Any) -> Any:
        return getattr(model, "backbone", model)  # our head module: the backbone takes the cache

    def vllm_pooling(self, step_by_step: bool) -> VLLMPooling:
        from vllm.config import PoolerConfig

        # vLLM implements Qwen2ForProcessRewardModel natively (its own head), with a token-level pooler only
        native = dict(
            runner="pooling",
            native_head=True,
            pooler_config=PoolerConfig(task="token_classify", tok_pooling_type="ALL"),
        )
        return VLLMPooling(native, column=1, sequence_pooling=False)


class _RewardHeadModel:
    """Backbone + 2-class head as a callable returning `.logits` (our module for `Qwen2ForProcessRewardModel`)."""

    def __init__(self, backbone, head) -> None:
        self.backbone, self.head = backbone, head

    def __call__(self, **inputs):
        from types import SimpleNamespace

        hidden = self.backbone(**inputs).last_hidden_state
        return SimpleNamespace(logits=self.head(hidden.to(self.head[0].weight.dtype)))

    def parameters(self):
        yield from self.backbone.parameters()
        yield from self.head.parameters()

    def to(self, *args, **kwargs):
        self.backbone.to(*args, **kwargs)
        self.head.to(*args, **kwargs)
        return self

    def eval(self):
        self.backbone.eval()
        self.head.eval()
        return self


def load_reward_head(path: str, hidden_size: int):
    """`score.0` (hidden -> hidden), ReLU, `score.2` (hidden -> labels) from the checkpoint's safetensors."""
    import torch

    tensors = checkpoint_tensors(path, lambda key: key.startswith("score."))
    if "score.0.weight" not in tensors or "score.2.weight" not in tensors:
        raise ValueError(f"qwen_prm: no reward head (score.0 / score.2) in {path}")
    labels = tensors["score.2.weight"].shape[0]
    head = torch.nn.Sequential(
        torch.nn.Linear(hidden_size, hidden_size), torch.nn.ReLU(), torch.nn.Linear(hidden_size, labels)
    )
    head.load_state_dict({k[len("score.") :]: v for k, v in tensors.items()}, strict=False)
    return head


def _architectures(path: Optional[str]) -> list[str]:
    import json
    import os

    config_file = os.path.join(os.path.expanduser(path or ""), "config.json")
    if not os.path.isfile(config_file):
        return []
    with open(config_file) as f:
        return json.load(f).get("architectures") or []
