"""What every PRM read from a checkpoint shares: its config (the weights, and the engine that runs them), the
tokenizer, the hooks through which an engine reads the family's scores, and the seam to the engine (`PRMEngine`, fed
`Encoded` inputs).

A family module (rlhflow and math_shepherd through tts/prms/two_token.py, qwen_prm, skywork) says only how a
(problem, steps) pair becomes token ids with the read-out position of every step (`encode`), and how a score is read:
on transformers from the model's per-token outputs (`token_scores`; `hf_auto_class` and `prepare_hf_model` when it
loads differently), on vLLM by the pooler it sets up (`vllm_pooling`). The engine it is given (`prm/engine=hf|vllm`,
tts/prms/hf_engine.py, tts/prms/vllm_engine.py) does the rest: loading, batching, prefix caches, token accounting.

    python tts/main.py prm=rlhflow-8b prm/engine=vllm
"""

from __future__ import annotations

import abc
import gc
import glob
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

from omegaconf import MISSING

from tts.config.schema import Config, PRMConfig, PRMEngineConfig, build
from tts.prms.base import ProcessRewardModel


@dataclass
class Encoded:
    """One PRM input: token ids and the positions whose per-token score is a step score (one per step, in order)."""

    ids: list[int]
    positions: list[int]


class PRMEngine(abc.ABC):
    """Runs a family's inputs through its checkpoint: one class per option of conf/prm/engine/ (tts/prms/hf_engine.py,
    tts/prms/vllm_engine.py). `forward_calls` counts the passes (tests and benchmarks)."""

    forward_calls: int

    @abc.abstractmethod
    def score(
        self, family: PRMFamily, problems: list[str], encoded: list[Encoded], known: list[int]
    ) -> list[list[float]]:
        """The scores of the steps of `encoded[i]` from `known[i]` on (the memo holds the ones before), read as
        `family` says; adds the tokens given and those served from a KV cache to `family.stats`."""

    def reset_prefix_cache(self) -> None:
        """Forget what a cache kept from earlier calls (the default keeps nothing across calls)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Drop the model, so that its memory can be freed."""


@dataclass
class VLLMPooling:
    """How vLLM reads a family's scores: the `vllm.LLM(...)` arguments that set up its pooler (runner, convert,
    hf_overrides, pooler_config; `native_head`: the architecture brings its own head), the column of the pooled output
    that is the step score, and whether a step scored alone pools its sequence (`classify`, LAST) or, the pooler being
    token-level only, is the last row of the computed tokens (`token_classify`)."""

    engine_kwargs: dict
    column: int = 0
    sequence_pooling: bool = True


@dataclass
class PRMFamilyConfig(PRMConfig):
    """Knobs of every PRM read from a checkpoint: which weights, and the engine that runs them (`prm.engine`, an
    option of conf/prm/engine/). A family adds the knobs of its input format."""

    shared: ClassVar[bool] = True

    path: Optional[str] = None  # hub id or local directory
    dtype: str = "bfloat16"  # weights and activations (auto: hf picks bfloat16 on a GPU and float32 on a CPU)
    trust_remote_code: bool = False  # load with the checkpoint's own modelling code
    engine: PRMEngineConfig = MISSING  # how the checkpoint runs: hf (transformers) | vllm (pooling runner)

    def check(self, run: Config) -> None:
        super().check(run)
        self.require(bool(self.path), "path", "a real PRM needs a hub id or a local directory")

    def weights(self, run: Config) -> list[tuple[str, Optional[str]]]:
        return [("prm.path", self.path)]


class PRMFamily(ProcessRewardModel):
    """A PRM read from a checkpoint: the family's input format and read-out, run by its engine. A family's
    `__init__` reads from the tokenizer what the engine asks it for, then calls this one, which builds the engine
    (`engine`: one already built, e.g. around a model in memory)."""

    family_name: ClassVar[str] = ""

    def __init__(self, config: PRMFamilyConfig, tokenizer: Any, engine: Optional[PRMEngine] = None) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.engine: PRMEngine = engine if engine is not None else build(config.engine, family=self)

    @abc.abstractmethod
    def encode(self, problem: str, steps: list[str]) -> Encoded:
        """Token ids of the published input format, and the read-out position of every step."""

    # -- read-out on transformers (tts/prms/hf_engine.py)
    def hf_auto_class(self) -> str:
        """Which transformers Auto class loads the checkpoint."""
        return "AutoModelForCausalLM"

    def prepare_hf_model(self, model: Any) -> Any:
        """The loaded model (on its device, in eval mode) as the family reads it, e.g. with a head read from the
        checkpoint's files. The default reads it as loaded."""
        return model

    @abc.abstractmethod
    def token_scores(self, model: Any, inputs: dict) -> Any:
        """A [batch, length] tensor of per-token step scores (only the read-out positions are used). `inputs` are the
        keyword arguments of the forward pass: `input_ids`, `attention_mask`, and on top of a shared prefix also
        `position_ids`, the KV cache and `use_cache`; pass them whole to the module `cache_module` names."""

    def cache_module(self, model: Any) -> Any:
        """The module whose forward takes the KV cache (the model, or the backbone under a read-out head)."""
        return model

    # -- read-out on vLLM (tts/prms/vllm_engine.py)
    def vllm_pooling(self, step_by_step: bool) -> VLLMPooling:
        """How vLLM's pooler reads the scores; `step_by_step`: each new step is scored alone at its last token (the
        steps before it from vLLM's prefix cache), else every solution whole."""
        raise NotImplementedError(
            f"config key 'prm.engine': the {self.family_name} PRM cannot run on vLLM; use prm/engine=hf"
        )

    # -- scoring
    def _score_batch(self, problems: list[str], solutions: list[list[str]]) -> list[list[float]]:
        return self._score_new_steps(problems, solutions, [0] * len(solutions))

    def _score_new_steps(self, problems: list[str], solutions: list[list[str]], known: list[int]) -> list[list[float]]:
        encoded = [self.encode(problem, steps) for problem, steps in zip(problems, solutions)]
        for enc, steps in zip(encoded, solutions):
            if len(enc.positions) != len(steps):
                raise RuntimeError(
                    f"{self.family_name}: {len(enc.positions)} read-out positions for {len(steps)} steps"
                )
        return self.engine.score(self, problems, encoded, known)

    def reset_prefix_cache(self) -> None:
        self.engine.reset_prefix_cache()

    def close(self) -> None:
        self.engine.close()
        gc.collect()


def checkpoint_tensors(path: str, wanted: Callable[[str], bool]) -> dict[str, Any]:
    """The tensors of the checkpoint's safetensors files (a local directory) whose names `wanted` accepts, by name;
    only those are read."""
    from safetensors import safe_open

    tensors = {}
    for file in sorted(glob.glob(os.path.join(path, "*.safetensors"))):
        with safe_open(file, framework="pt") as f:
            tensors.update({key: f.get_tensor(key) for key in f.keys() if wanted(key)})
    return tensors


def load_prm_tokenizer(config: PRMFamilyConfig) -> Any:
    """The checkpoint's tokenizer (`prm.path`)."""
    from tts.backends.hf import load_tokenizer

    if not config.path:
        raise ValueError("config key 'prm.path': a real PRM needs a hub id or a local directory")
    return load_tokenizer(config.path, key="prm.path", trust_remote_code=config.trust_remote_code)


# -- the tokenization the families share


def read_out_tokens(tokenizer: Any, encoding: dict, chars: Sequence[int], token_id: int, what: str) -> list[int]:
    """The index of the token at each of `chars` (offsets into the encoded text, where a family placed its read-out
    token): the token whose character span contains it (special tokens have empty spans and never match). Each must
    have stayed that one token (`token_id`), else ValueError: `what` went wrong."""
    ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
    positions = []
    for char in chars:
        token = next((index for index, (start, end) in enumerate(offsets) if start <= char < end), None)
        if token is None:
            raise ValueError(f"no token covers character {char}")
        if ids[token] != token_id:
            raise ValueError(f"{what} (found {tokenizer.convert_ids_to_tokens([ids[token]])})")
        positions.append(token)
    return positions


def encode_rendered(tokenizer: Any, text: str) -> dict:
    """Tokenize a chat-template rendering (no second BOS when the template wrote one) with character offsets."""
    bos = tokenizer.bos_token
    add_special = not (bos and text.startswith(bos))
    return tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=True)


def single_token_id(tokenizer: Any, text: str, what: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"{what} {text!r} must be one token of this tokenizer, it is {len(ids)}: {ids}")
    return ids[0]
