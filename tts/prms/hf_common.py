"""What every real PRM family shares: loading, token-budget batching, and the hf / vLLM forward passes.

A family module only says how one (problem, steps) pair becomes token ids and at which token positions the step scores
are read (`encode`), and how a forward pass turns into one score per token (`token_scores`, hf) or how vLLM is set up
(`vllm_engine_kwargs`, `vllm_column`). Everything else is here:

* one forward pass per solution (all its step scores at once), never an empty step (the base class refuses them);
* batches built by token budget: sequences sorted by length, a batch holds as many as fit in `prm.batch_tokens`
  counting padding (longest x count), so memory stays flat whatever the mix of lengths;
* `stats.tokens` counts every token encoded (memo hits in the base class cost nothing).
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass
from typing import Sequence

from tts.prms.base import ProcessRewardModel

log = logging.getLogger(__name__)


@dataclass
class Encoded:
    """One PRM input: token ids and the positions whose per-token score is a step score (one per step, in order)."""

    ids: list[int]
    positions: list[int]


def token_budget_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Indices grouped so that (longest in batch) x (batch size) <= batch_tokens; a longer sequence goes alone."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        width = max(longest, lengths[i])
        if current and width * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current, longest = [], 0
            width = lengths[i]
        current.append(i)
        longest = width
    if current:
        batches.append(current)
    return batches


def char_to_token(offsets: Sequence[tuple[int, int]], char: int) -> int:
    """Index of the token whose character span contains `char` (special tokens have empty spans and never match)."""
    for index, (start, end) in enumerate(offsets):
        if start <= char < end:
            return index
    raise ValueError(f"no token covers character {char}")


def encode_rendered(tokenizer, text: str) -> dict:
    """Tokenize a chat-template rendering (no second BOS when the template wrote one) with character offsets."""
    bos = tokenizer.bos_token
    add_special = not (bos and text.startswith(bos))
    return tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=True)


def good_bad_token_ids(tokenizer, good: str, bad: str, family: str) -> tuple[int, int]:
    """Ids of the "good" and "bad" read-out tokens as the model cards encode them: `encode("+ -")` gives exactly two
    tokens (the second with its leading space), whose logits are compared at each step position."""
    pair = tokenizer.encode(f"{good} {bad}", add_special_tokens=False)
    if len(pair) != 2:
        raise ValueError(f"{family} PRM: {good!r} {bad!r} must encode to two tokens, got {pair}")
    return pair[0], pair[1]


def single_token_id(tokenizer, text: str, what: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"{what} {text!r} must be one token of this tokenizer, it is {len(ids)}: {ids}")
    return ids[0]


class HFProcessRewardModel(ProcessRewardModel):
    """A PRM read from per-token scores. Subclasses: `encode`, and `token_scores` (hf) / `vllm_*` (vLLM)."""

    family: str = ""
    #: which transformers Auto class loads the checkpoint for the hf backend
    auto_class: str = "AutoModelForCausalLM"

    def __init__(self, cfg, *, tokenizer=None, model=None, llm=None) -> None:
        super().__init__()
        self.cfg = cfg
        self.backend = cfg.backend
        self.batch_tokens = int(cfg.batch_tokens)
        self.forward_calls = 0  # model forward passes (batches), for tests and benchmarks
        self.tokenizer = tokenizer
        self.model = model
        self.llm = llm
        self.device = "cpu"

    # ------------------------------------------------------------------ family interface
    @abc.abstractmethod
    def encode(self, problem: str, steps: list[str]) -> Encoded:
        """Token ids of the published input format, and the read-out position of every step."""

    def token_scores(self, input_ids, attention_mask):
        """hf: a [batch, length] tensor of per-token step scores (only the read-out positions are used)."""
        raise NotImplementedError(f"the {self.family} PRM has no transformers read-out")

    def vllm_engine_kwargs(self) -> dict:
        """vLLM: extra `vllm.LLM(...)` arguments (runner, convert, hf_overrides, pooler_config)."""
        raise NotImplementedError(
            f"config key 'prm.backend': the {self.family} PRM cannot run on vLLM; use prm.backend=hf"
        )

    def vllm_column(self) -> int:
        """vLLM: which column of the per-token pooled output is the step score."""
        return 0

    def on_model_loaded(self) -> None:
        """hf: called once the model is on its device (extra heads, checks)."""

    # ------------------------------------------------------------------ the batch
    def _score_batch(self, problems: list[str], solutions: list[list[str]]) -> list[list[float]]:
        encoded = [self.encode(problem, steps) for problem, steps in zip(problems, solutions)]
        for enc, steps in zip(encoded, solutions):
            if len(enc.positions) != len(steps):
                raise RuntimeError(f"{self.family}: {len(enc.positions)} read-out positions for {len(steps)} steps")
        self.stats.tokens += sum(len(e.ids) for e in encoded)
        max_length = getattr(self.cfg, "max_length", None)
        if max_length:
            longest = max(len(e.ids) for e in encoded)
            if longest > max_length:
                raise ValueError(f"config key 'prm.max_length': a PRM input has {longest} tokens > {max_length}")
        if self.backend == "vllm":
            return self._score_vllm(encoded)
        return self._score_hf(encoded)

    def _score_hf(self, encoded: list[Encoded]) -> list[list[float]]:
        import torch

        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id or 0
        results: list[list[float]] = [[] for _ in encoded]
        for batch in token_budget_batches([len(e.ids) for e in encoded], self.batch_tokens):
            width = max(len(encoded[i].ids) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):  # right padding: read-out positions stay where encode put them
                n = len(encoded[i].ids)
                ids[row, :n] = torch.tensor(encoded[i].ids, dtype=torch.long)
                mask[row, :n] = 1
            with torch.inference_mode():
                scores = self.token_scores(ids.to(self.device), mask.to(self.device)).float().cpu()
            self.forward_calls += 1
            for row, i in enumerate(batch):
                results[i] = [float(scores[row, p]) for p in encoded[i].positions]
        return results

    def _score_vllm(self, encoded: list[Encoded]) -> list[list[float]]:
        outputs = self.llm.encode([{"prompt_token_ids": e.ids} for e in encoded], pooling_task="token_classify",
                                  use_tqdm=False)
        self.forward_calls += 1
        column = self.vllm_column()
        results = []
        for enc, out in zip(encoded, outputs):
            data = out.outputs.data  # [num_tokens, num_labels]
            if data.dim() == 1:
                data = data[:, None]
            results.append([float(data[p, column]) for p in enc.positions])
        return results

    def close(self) -> None:
        import gc

        self.model = None
        self.llm = None
        gc.collect()


# ---------------------------------------------------------------------- loading
def load_hf(prm_cls, cfg, **extra) -> HFProcessRewardModel:
    """Tokenizer + model for `prm.backend=hf` (or the vLLM engine for `prm.backend=vllm`)."""
    from tts.backends.hf import from_pretrained, load_tokenizer, resolve_device, resolve_dtype

    if not cfg.path:
        raise ValueError("config key 'prm.path': a real PRM needs a hub id or a local directory")
    tokenizer = load_tokenizer(cfg.path, key="prm.path", trust_remote_code=cfg.trust_remote_code)
    prm = prm_cls(cfg, tokenizer=tokenizer, **extra)
    if cfg.backend == "vllm":
        prm.llm = build_vllm_pooling(cfg, prm.vllm_engine_kwargs())
        return prm
    if cfg.backend != "hf":
        raise ValueError(f"config key 'prm.backend': the {prm_cls.family} PRM runs on hf or vllm, got {cfg.backend!r}")
    import transformers

    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    loader = getattr(transformers, prm_cls.auto_class)
    model = from_pretrained(loader, cfg.path, what=f"the {prm_cls.family} PRM", key="prm.path", dtype=dtype,
                            trust_remote_code=cfg.trust_remote_code)
    prm.model = model.to(device).eval()
    prm.device = device
    prm.on_model_loaded()
    log.info("%s PRM %s on %s (%s), batch_tokens=%d", prm_cls.family, cfg.path, device, dtype, cfg.batch_tokens)
    return prm


def check_classify_head(engine_kwargs: dict) -> None:
    """vLLM's `convert="classify"` on a causal LM without `classifier_from_token` + `method` silently builds a randomly
    initialised score head (every score garbage): refuse it."""
    overrides = engine_kwargs.get("hf_overrides") or {}
    if engine_kwargs.get("convert") == "classify" and not engine_kwargs.get("native_head", False):
        if not overrides.get("classifier_from_token") or not overrides.get("method"):
            raise ValueError("vLLM convert='classify' without hf_overrides {'classifier_from_token': [bad, good], "
                             "'method': 'from_2_way_softmax'} leaves the classification head uninitialised "
                             "(random scores); refusing to build it")


def build_vllm_pooling(cfg, engine_kwargs: dict):
    """One `vllm.LLM` as a pooling model. `import vllm` happens only here."""
    check_classify_head(engine_kwargs)
    try:
        import vllm  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("prm.backend=vllm needs vllm installed (GPU: pip install vllm; CPU: "
                          "scripts/vllm_cpu_lane.sh)") from err
    from vllm import LLM

    kwargs = {k: v for k, v in engine_kwargs.items() if k != "native_head"}
    kwargs.setdefault("runner", "pooling")
    kwargs.update(
        model=cfg.path,
        tokenizer=cfg.path,
        dtype=cfg.dtype,
        trust_remote_code=cfg.trust_remote_code,
        gpu_memory_utilization=cfg.gpu_memory_utilization,
        enforce_eager=bool(getattr(cfg, "enforce_eager", False)),
    )
    if cfg.max_length:
        kwargs["max_model_len"] = cfg.max_length
    try:
        return LLM(**kwargs)
    except OSError as err:
        raise OSError(f"could not load the PRM {cfg.path!r} from the hub (offline?); download it and pass "
                      f"prm.path=/local/dir [{err}]") from err


def two_token_pooler_kwargs(bad: str, good: str) -> dict:
    """vLLM: a causal LM as a per-token P(good) scorer (sigmoid(logit_good - logit_bad) = 2-way softmax)."""
    from vllm.config import PoolerConfig

    return dict(
        runner="pooling",
        convert="classify",
        hf_overrides={"classifier_from_token": [bad, good], "method": "from_2_way_softmax"},
        pooler_config=PoolerConfig(task="token_classify", tok_pooling_type="ALL"),
    )
