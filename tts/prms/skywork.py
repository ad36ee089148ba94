"""Skywork/Skywork-o1-Open-PRM-Qwen-2.5-{1.5B,7B}: a Qwen2.5 backbone with a scalar value head.

Input (the published format): `bos + problem + "\n"`, then every step's tokens followed by the "\n" token; the score of
a step is sigmoid(value_head(h)) at that step's closing "\n", h the last hidden state. Our steps are the blank-line
steps of the policy (stripped), each scored as one unit even when it spans several lines.

The value head is our own module (a linear layer hidden -> 1) whose weights are read from the checkpoint's
`*v_head*` tensors; the backbone is loaded with `AutoModel`. vLLM has no built-in architecture for it: hf only.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from tts.config.schema import Config
from tts.prms.hf_common import Encoded, HFPRMConfig, HFProcessRewardModel, load_hf

if TYPE_CHECKING:
    import torch

STEP_TOKEN = "\n"


class SkyworkPRM(HFProcessRewardModel):
    family = "skywork"
    auto_class = "AutoModel"

    def __init__(self, cfg, **kwargs) -> None:
        super().__init__(cfg, **kwargs)
        self.step_token = cfg.step_tag or STEP_TOKEN
        self.step_token_id = self.tokenizer.encode(self.step_token, add_special_tokens=False)[-1]
        self.value_head: Optional[torch.nn.Linear] = None  # read from the checkpoint by `build`

    def encode(self, problem: str, steps: list[str]) -> Encoded:
        bos = self.tokenizer.bos_token or ""
        ids = list(self.tokenizer.encode(bos + problem + "\n", add_special_tokens=False))
        positions = []
        for step in steps:
            ids.extend(self.tokenizer.encode(step, add_special_tokens=False))
            ids.append(self.step_token_id)
            positions.append(len(ids) - 1)
        return Encoded(ids, positions)

    def token_scores(self, inputs: dict):
        import torch

        head = self.value_head
        assert head is not None, "build() loads the value head before any scoring"
        hidden = self.model(**inputs).last_hidden_state
        return torch.sigmoid(head(hidden.to(head.weight.dtype)).squeeze(-1).float())


def load_value_head(path: str, hidden_size: int, dtype, device):
    """A Linear(hidden, 1) with the weights of the checkpoint's value head (any `*v_head*` weight of shape [1, H])."""
    import torch
    from safetensors import safe_open

    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    weight = bias = None
    for file in files:
        with safe_open(file, framework="pt") as f:
            for key in f.keys():
                if "v_head" not in key:
                    continue
                tensor = f.get_tensor(key)
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


@dataclass
class SkyworkConfig(HFPRMConfig):
    """Skywork-o1-Open-PRM (Qwen2.5 + value head): sigmoid(value) at the token closing each step; hf only."""

    _target_: str = "tts.prms.skywork.build"
    name: str = "skywork"
    step_tag: str = STEP_TOKEN  # the token closing every step; the value head is read there

    def check(self, run: Config) -> None:
        super().check(run)
        self.require(
            self.backend == "hf",
            "backend",
            "the skywork PRM runs on hf only (vLLM has no value-head architecture for it); use prm.backend=hf",
        )


def build(config: SkyworkConfig) -> SkyworkPRM:
    prm_cfg = config
    prm = load_hf(SkyworkPRM, prm_cfg)
    path = prm_cfg.path
    assert path is not None, "load_hf refuses a config without prm.path"
    if not os.path.isdir(path):  # a hub id: the files are in the local cache after load_hf
        from huggingface_hub import snapshot_download

        try:
            path = snapshot_download(path, allow_patterns=["*.safetensors", "*.json"], local_files_only=True)
        except Exception as err:  # noqa: BLE001 - not cached, gated, offline, corrupt: every one ends the same way
            raise OSError(
                f"could not load the skywork PRM {prm_cfg.path!r} from the hub (offline?); download it "
                f"and pass prm.path=/local/dir [{err}]"
            ) from err
    param = next(prm.model.parameters())
    prm.value_head = load_value_head(path, prm.model.config.hidden_size, param.dtype, param.device)
    return prm
