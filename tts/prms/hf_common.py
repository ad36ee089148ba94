"""What every real PRM family shares: loading, token-budget batching, and the hf / vLLM forward passes.

A family module only says how one (problem, steps) pair becomes token ids and at which token positions the step scores
are read (`encode`), and how a forward pass turns into one score per token (`token_scores`, hf) or how vLLM is set up
(`vllm_engine_kwargs`, `vllm_column`). Everything else is here:

* one forward pass per solution (all its step scores at once), never an empty step (the base class refuses them);
* batches built by token budget: sequences sorted by length, a batch holds as many as fit in `prm.batch_tokens`
  counting padding (longest x count), so memory stays flat whatever the mix of lengths;
* `stats.tokens` counts every token given to the model (memo hits in the base class cost nothing), `stats.cached_tokens`
  those vLLM served from its prefix cache.

On vLLM with `prm.enable_prefix_caching` (the default) a solution is never scored whole: each step the memo does not
hold yet becomes one sequence cut right after that step's read-out token and is scored at its last token, so the
steps before it come from vLLM's prefix cache (kept by the search's previous iteration) and only the new step is
computed. A causal model's output at a position depends only on the tokens up to it, so the score equals the one a
full-sequence pass reads at that position. Two-token families use sequence `LAST` pooling (`classify`); a model whose
vLLM pooler is token-level only (Qwen2.5-Math-PRM) runs `token_classify` with prefix-cache reads switched on, and vLLM
then returns rows for the computed tokens alone, the last of them being the step score. With it off, every new
solution is scored in one `ALL`-pooled pass (vLLM serves no prefix cache to `ALL` pooling).
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
        # vLLM: score each new step alone at the end of its own prefix, the prefix read from vLLM's cache
        self.prefix_reuse = cfg.backend == "vllm" and bool(getattr(cfg, "enable_prefix_caching", True))

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

    #: vLLM: whether the engine pools sequences (`classify`, LAST) when scoring step by step; False: its pooler is
    #: token-level only (`token_classify`) and the step score is the last row of the computed tokens
    vllm_sequence_pooling: bool = True

    def on_model_loaded(self) -> None:
        """hf: called once the model is on its device (extra heads, checks)."""

    # ------------------------------------------------------------------ the batch
    def _score_batch(self, problems: list[str], solutions: list[list[str]]) -> list[list[float]]:
        if self.prefix_reuse:
            return self._score_new_steps(problems, solutions, [0] * len(solutions))
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

    def _score_new_steps(self, problems: list[str], solutions: list[list[str]], known: list[int]) -> list[list[float]]:
        if not self.prefix_reuse:
            return super()._score_new_steps(problems, solutions, known)
        encoded = [self.encode(problem, steps) for problem, steps in zip(problems, solutions)]
        for enc, steps in zip(encoded, solutions):
            if len(enc.positions) != len(steps):
                raise RuntimeError(f"{self.family}: {len(enc.positions)} read-out positions for {len(steps)} steps")
        max_length = getattr(self.cfg, "max_length", None)
        if max_length:
            longest = max(e.positions[-1] + 1 for e in encoded)
            if longest > max_length:
                raise ValueError(f"config key 'prm.max_length': a PRM input has {longest} tokens > {max_length}")
        return self._score_vllm_steps(encoded, known)

    def _score_vllm_steps(self, encoded: list[Encoded], known: list[int]) -> list[list[float]]:
        """Each step from `known[i]` on as its own sequence, cut after its read-out token, scored at its last token;
        one request per distinct cut (candidates that share a step share its request)."""
        from vllm import PoolingParams

        cuts: dict[tuple[int, ...], int] = {}
        wanted: list[list[int]] = []
        for enc, done in zip(encoded, known):
            row = []
            for position in enc.positions[done:]:
                row.append(cuts.setdefault(tuple(enc.ids[: position + 1]), len(cuts)))
            wanted.append(row)
        prompts = [{"prompt_token_ids": list(ids)} for ids in cuts]
        self.stats.tokens += sum(len(ids) for ids in cuts)
        if self.vllm_sequence_pooling:
            task, params = "classify", PoolingParams()
        else:  # token-level pooler: let the request read the cache; rows then cover the computed tokens only
            task, params = "token_classify", PoolingParams(skip_reading_prefix_cache=False)
        outputs = self.llm.encode(prompts, pooling_params=params, pooling_task=task, use_tqdm=False) if prompts else []
        self.forward_calls += 1
        column = self.vllm_column()
        scores = []
        for out in outputs:
            self.stats.cached_tokens += int(out.num_cached_tokens or 0)
            data = out.outputs.data
            last = data if data.dim() == 1 else data[-1]  # classify: [labels]; token_classify: [rows, labels]
            scores.append(float(last[column] if last.dim() else last))
        return [[scores[j] for j in row] for row in wanted]

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

    def reset_prefix_cache(self) -> None:
        if self.llm is not None:
            from tts.backends.vllm import reset_engine_prefix_cache

            reset_engine_prefix_cache(self.llm)

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
        enable_prefix_caching=bool(getattr(cfg, "enable_prefix_caching", True)),
    )
    if cfg.max_length:
        kwargs["max_model_len"] = cfg.max_length
    if getattr(cfg, "block_size", None):
        kwargs["block_size"] = int(cfg.block_size)
    try:
        return LLM(**kwargs)
    except OSError as err:
        raise OSError(f"could not load the PRM {cfg.path!r} from the hub (offline?); download it and pass "
                      f"prm.path=/local/dir [{err}]") from err


def two_token_pooler_kwargs(bad: str, good: str, *, last: bool) -> dict:
    """vLLM: a causal LM as a P(good) scorer (sigmoid(logit_good - logit_bad) = 2-way softmax), read at the last
    token of each sequence (`last`: prefix caching serves the sequence's prefix) or at every token (`ALL` pooling)."""
    from vllm.config import PoolerConfig

    pooler = (PoolerConfig(task="classify", seq_pooling_type="LAST") if last
              else PoolerConfig(task="token_classify", tok_pooling_type="ALL"))
    return dict(
        runner="pooling",
        convert="classify",
        hf_overrides={"classifier_from_token": [bad, good], "method": "from_2_way_softmax"},
        pooler_config=pooler,
    )
