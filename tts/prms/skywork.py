"""Skywork/Skywork-o1-Open-PRM-Qwen-2.5-{1.5B,7B}: a Qwen2.5 backbone with a scalar value head.

Input (the published format): `bos + problem + "\n"`, then every step's tokens followed by the "\n" token; the score of
a step is sigmoid(value_head(h)) at that step's closing "\n", h the last hidden state. Our steps are the blank-line
steps of the policy (stripped), each scored as one unit even when it spans several lines.

The value head is our own module (a linear layer hidden -> 1) whose weights are read from the checkpoint's
`*v_head*` tensors; the backbone is loaded with `AutoModel`. vLLM has no built-in architecture for it: hf only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

from tts.config.schema import Config
from tts.prms.family import Encoded, PRMEngine, PRMFamily, PRMFamilyConfig, checkpoint_tensors, load_prm_tokenizer
from tts.prms.hf_engine import HFPRMEngineConfig

STEP_TOKEN = "\n"


@dataclass
class SkyworkConfig(PRMFamilyConfig):
    """Skywork-o1-Open-PRM (Qwen2.5 + value head): sigmoid(value) at the token closing each step; hf only."""

    step_tag: str = STEP_TOKEN  # the token closing every step; the value head is read there

    def check(self, run: Config) -> None:
        super().check(run)
        self.require(
            isinstance(self.engine, HFPRMEngineConfig),
            "engine",
            "the skywork PRM runs on hf only (vLLM has no value-head architecture for it); use prm/engine=hf",
        )


class SkyworkPRM(PRMFamily):
    family_name = "skywork"

    def __init__(self, config: SkyworkConfig, tokenizer: Any = None, engine: Optional[PRMEngine] = None) -> None:
        tokenizer = load_prm_tokenizer(config) if tokenizer is None else tokenizer
        self.step_token = config.step_tag or STEP_TOKEN
        self.step_token_id = tokenizer.encode(self.step_token, add_special_tokens=False)[-1]
        self.value_head: Any = None  # read from the checkpoint by `prepare_hf_model`
        super().__init__(config, tokenizer, engine)

    def encode(self, problem: str, steps: list[str]) -> Encoded:
        bos = self.tokenizer.bos_token or ""
        ids = list(self.tokenizer.encode(bos + problem + "\n", add_special_tokens=False))
        positions = []
        for step in steps:
            ids.extend(self.tokenizer.encode(step, add_special_tokens=False))
            ids.append(self.step_token_id)
            positions.append(len(ids) - 1)
        return Encoded(ids, positions)

    def hf_auto_class(self) -> str:
        return "AutoModel"

    def prepare_hf_model(self, model: Any) -> Any:
        """The backbone as loaded; the value head read from the checkpoint's files (the hub cache for a hub id)."""
        path = self.config.path
        assert path is not None, "the PRM was loaded from prm.path"
        if not os.path.isdir(path):  # a hub id: the files are in the local cache after the backbone loaded
            from huggingface_hub import snapshot_download

            try:
                path = snapshot_download(path, allow_patterns=["*.safetensors", "*.json"], local_files_only=True)
            except Exception as err:  # noqa: BLE001 - not cached, gated, offline, corrupt: every one ends the same way
                raise OSError(
                    f"could not load the skywork PRM {self.config.path!r} from the hub (offline?); download it "
                    f"and pass prm.path=/local/dir [{err}]"
                ) from err
        param = next(model.parameters())
        self.value_head = load_value_head(path, model.config.hidden_size, param.dtype, param.device)
        return model

    def token_scores(self, model: Any, inputs: dict) -> Any:
        import torch

        head = self.value_head
        assert head is not None, "prepare_hf_model loads the value head before any scoring"
        hidden = model(**inputs).last_hidden_state
        return torch.sigmoid(head(hidden.to(head.weight.dtype)).squeeze(-1).float())


def load_value_head(path: str, hidden_size: int, dtype, device):
    """A Linear(hidden, 1) with the weights of the checkpoint's value head (any `*v_head*` weight of shape [1, H])."""
    import torch

    weight = bias = None
    for key, tensor in checkpoint_tensors(path, lambda key: "v_head" in key).items():
        if key.endswith("weight") and tuple(tensor.shape) == (1, hidden_size):
            weight = tensor
        elif key.endswith("bias") and tensor.numel() == 1:
            bias = tensor
    if weight is None:
        raise ValueError(f"skywork PRM: no value head (`*v_head*.weight` of shape [1, {hidden_size}]) in {path}")
    head = torch.nn.Linear(hidden_size, 1, bias=bias is not None)
    with torch.no_grad():
        head.weight.copy_(weight)
        if bias is not None:
            head.bias.copy_(bias.reshape(1))
    return head.to(device=device, dtype=dtype).eval()
