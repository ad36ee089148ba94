"""What every real PRM family shares: loading, token-budget batching, and the hf / vLLM forward passes.

A family module only says how one (problem, steps) pair becomes token ids and at which token positions the step scores
are read (`encode`), and how a forward pass turns into one score per token (`token_scores`, hf) or how vLLM is set up
(`vllm_engine_kwargs`, `vllm_column`). Everything else is here:

* all of a solution's new step scores from one pass over its tokens, never an empty step (the base class refuses them);
* batches built by token budget: sequences sorted by length, a batch holds as many as fit in `prm.batch_tokens`
  counting padding (longest x count), so memory stays flat whatever the mix of lengths;
* `stats.tokens` counts every token given to the model (memo hits in the base class cost nothing), `stats.cached_tokens`
  those served from a KV cache instead of computed (vLLM's prefix cache, or a prefix shared within an hf call).

On vLLM with `prm.enable_prefix_caching` (the default) a solution is never scored whole: each step the memo does not
hold yet becomes one sequence cut right after that step's read-out token and is scored at its last token, so the
steps before it come from vLLM's prefix cache (kept by the search's previous iteration) and only the new step is
computed. A causal model's output at a position depends only on the tokens up to it, so the score equals the one a
full-sequence pass reads at that position. Two-token families use sequence `LAST` pooling (`classify`); a model whose
vLLM pooler is token-level only (Qwen2.5-Math-PRM) runs `token_classify` with prefix-cache reads switched on, and vLLM
then returns rows for the computed tokens alone, the last of them being the step score. With it off, every new
solution is scored in one `ALL`-pooled pass (vLLM serves no prefix cache to `ALL` pooling).

On transformers with `prm.enable_prefix_caching` the candidates of one call that share a token prefix (a parent's
children; in the first iteration, a problem's prompt) are scored on top of that prefix's KV cache: the prefixes run
once (several groups per forward pass), then each member's remaining tokens run in batches whose cache rows are copies
of its group's (`tts/prms/prefix_groups.py` picks the groups). Nothing is kept across calls: a parent's tokens are
computed once per call, not once per search.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Optional, TypeVar

from tts.config.schema import Config, PRMConfig
from tts.prms.base import ProcessRewardModel
from tts.prms.prefix_groups import PrefixGroup, plan_prefix_groups

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


PRM_BACKENDS = ("hf", "vllm")


@dataclass
class HFPRMConfig(PRMConfig):
    """Knobs of every PRM read from a real checkpoint, run by transformers (`backend: hf`) or by vLLM's pooling
    runner (`backend: vllm`). The families (one module each) add their input format's knobs."""

    shared: ClassVar[bool] = True

    backend: str = "hf"  # hf (transformers, any device) | vllm (pooling runner)
    path: Optional[str] = None  # hub id or local directory
    dtype: str = "auto"
    device: str = "auto"  # hf: cuda when available, else cpu
    trust_remote_code: bool = False
    batch_tokens: int = 8192  # hf: padded tokens per forward pass (longest x count); bounds activation memory
    max_length: Optional[int] = None  # vllm: max_model_len
    gpu_memory_utilization: float = 0.4  # vllm: share of GPU memory (the policy holds its own)
    enforce_eager: bool = False  # vllm
    # vllm: score each new step alone, its prefix from vLLM's prefix cache; hf: a token prefix shared by several
    # candidates of one call runs once, its KV cache under all of them
    enable_prefix_caching: bool = True
    block_size: Optional[int] = None  # vllm: KV-cache block size (the prefix cache's granularity); null: vLLM's

    def check(self, run: Config) -> None:
        super().check(run)
        self.require(
            self.backend in PRM_BACKENDS,
            "backend",
            f"must be one of {PRM_BACKENDS} (a PRM runs on hf or vllm), got {self.backend!r}",
        )
        self.require(bool(self.path), "path", "a real PRM needs a hub id or a local directory")
        self.require(self.batch_tokens >= 1, "batch_tokens", f"must be >= 1, got {self.batch_tokens}")
        self.require(
            0 < self.gpu_memory_utilization <= 1,
            "gpu_memory_utilization",
            f"must be a share of GPU memory in (0, 1], got {self.gpu_memory_utilization}",
        )

    def needs(self) -> Optional[tuple[str, str]]:
        return ("vllm", "tts[vllm]") if self.backend == "vllm" else ("transformers", "tts[hf]")

    def weights(self, run: Config) -> list[tuple[str, Optional[str]]]:
        return [("prm.path", self.path)]


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
        # vLLM: score each new step alone at the end of its own prefix, the prefix read from vLLM's cache;
        # hf: compute a token prefix shared by several candidates of a call once, as a KV cache under all of them
        self.prefix_reuse = bool(getattr(cfg, "enable_prefix_caching", True))

    # ------------------------------------------------------------------ family interface
    @abc.abstractmethod
    def encode(self, problem: str, steps: list[str]) -> Encoded:
        """Token ids of the published input format, and the read-out position of every step."""

    def token_scores(self, inputs: dict):
        """hf: a [batch, length] tensor of per-token step scores (only the read-out positions are used). `inputs` are
        the keyword arguments of the forward pass: `input_ids`, `attention_mask`, and on top of a shared prefix also
        `position_ids`, the KV cache and `use_cache`; pass them whole to the module `cache_module` names."""
        raise NotImplementedError(f"the {self.family} PRM has no transformers read-out")

    def cache_module(self):
        """hf: the module whose forward takes the KV cache (the model, or the backbone under a read-out head)."""
        return self.model

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
        return self._score_new_steps(problems, solutions, [0] * len(solutions))

    def _score_new_steps(self, problems: list[str], solutions: list[list[str]], known: list[int]) -> list[list[float]]:
        encoded = [self.encode(problem, steps) for problem, steps in zip(problems, solutions)]
        for enc, steps in zip(encoded, solutions):
            if len(enc.positions) != len(steps):
                raise RuntimeError(f"{self.family}: {len(enc.positions)} read-out positions for {len(steps)} steps")
        if self.backend == "vllm" and self.prefix_reuse:
            self._check_max_length(max(e.positions[-1] + 1 for e in encoded))
            return self._score_vllm_steps(encoded, known)
        self._check_max_length(max(len(e.ids) for e in encoded))
        self.stats.tokens += sum(len(e.ids) for e in encoded)
        if self.backend == "vllm":
            scored = self._score_vllm(encoded)
        elif self.prefix_reuse and self._cache_keyword():
            return self._score_hf_shared(problems, encoded, known)
        else:
            scored = self._score_hf(encoded)
        return [scores[done:] for scores, done in zip(scored, known)]

    def _check_max_length(self, longest: int) -> None:
        max_length = getattr(self.cfg, "max_length", None)
        if max_length and longest > max_length:
            raise ValueError(f"config key 'prm.max_length': a PRM input has {longest} tokens > {max_length}")

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
        """Every solution whole, batched by token budget."""
        results: list[list[float]] = [[] for _ in encoded]
        for batch in token_budget_batches([len(e.ids) for e in encoded], self.batch_tokens):
            ids, mask = self._right_padded([encoded[i].ids for i in batch])
            scores = self._forward(ids, mask)
            for row, i in enumerate(batch):
                results[i] = [float(scores[row, p]) for p in encoded[i].positions]
        return results

    def _score_hf_shared(self, problems: list[str], encoded: list[Encoded], known: list[int]) -> list[list[float]]:
        """Scores of the steps from `known[i]` on, every token prefix shared within a problem's candidates computed
        once; a candidate that shares too little with the others is scored whole."""
        groups = plan_prefix_groups(problems, [e.ids for e in encoded])
        results: list[list[float]] = [[] for _ in encoded]
        alone = [g.members[0] for g in groups if len(g.members) == 1]
        for i, scores in zip(alone, self._score_hf([encoded[i] for i in alone])):
            results[i] = scores[known[i] :]
        shared = [g for g in groups if len(g.members) > 1]
        for batch in token_budget_batches([g.shared for g in shared], self.batch_tokens):
            self._score_on_prefixes([shared[k] for k in batch], encoded, known, results)
        return results

    def _score_on_prefixes(
        self, groups: list[PrefixGroup], encoded: list[Encoded], known: list[int], results: list[list[float]]
    ) -> None:
        """The groups' shared prefixes in one pass that fills a KV cache (row k: group k, right-padded to the
        longest), then every member's remaining tokens on top of it; a step read-out inside the shared prefix (a
        member that is itself a prefix of the others) comes from the prefix pass."""
        prefix_ids, prefix_mask = self._right_padded([encoded[g.members[0]].ids[: g.shared] for g in groups])
        cache = self._new_cache()
        prefix_scores = self._forward(prefix_ids, prefix_mask, cache=cache)
        self.stats.cached_tokens += sum((len(g.members) - 1) * g.shared for g in groups)
        suffix_scores = self._score_suffixes(groups, encoded, cache, prefix_mask)
        for k, g in enumerate(groups):
            for i in g.members:
                results[i] = [
                    float(prefix_scores[k, p] if p < g.shared else suffix_scores[i][p - g.shared])
                    for p in encoded[i].positions[known[i] :]
                ]

    def _score_suffixes(self, groups: list[PrefixGroup], encoded: list[Encoded], cache, prefix_mask) -> dict:
        """Per-token scores of each member's tokens after its group's prefix, in token-budget batches (counting the
        cached prefix width x rows), each over a copy of the cache rows of its members' groups. The attention mask
        covers prefix (its padding masked) plus suffix, and position ids go on from the member's own prefix length,
        so every token sees exactly what a whole-sequence pass shows it."""
        import copy

        import torch

        rows = [(k, i) for k, g in enumerate(groups) for i in g.members if len(encoded[i].ids) > g.shared]
        lengths = [prefix_mask.shape[1] + len(encoded[i].ids) - groups[k].shared for k, i in rows]
        scores_of = {}
        for batch in token_budget_batches(lengths, self.batch_tokens):
            members = [rows[b] for b in batch]
            group_rows = torch.tensor([k for k, _ in members], dtype=torch.long)
            ids, suffix_mask = self._right_padded([encoded[i].ids[groups[k].shared :] for k, i in members])
            mask = torch.cat([prefix_mask[group_rows], suffix_mask], dim=1)
            start = torch.tensor([groups[k].shared for k, _ in members], dtype=torch.long)
            positions = start[:, None] + torch.arange(ids.shape[1], dtype=torch.long)[None, :]
            batch_cache = copy.deepcopy(cache)  # the pass appends to it; the next batch needs the prefix alone
            batch_cache.batch_select_indices(group_rows.to(self.device))
            scores = self._forward(ids, mask, cache=batch_cache, position_ids=positions)
            for row, (_, i) in enumerate(members):
                scores_of[i] = scores[row]
        return scores_of

    def _right_padded(self, sequences: list[list[int]]):
        """[batch, longest] ids and attention mask, padding on the right (read-out positions stay where they are)."""
        import torch

        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id or 0
        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), pad, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
            mask[row, : len(sequence)] = 1
        return ids, mask

    def _forward(self, ids, mask, cache=None, position_ids=None):
        """One forward pass: per-token scores [batch, length] on the CPU. With `cache`, the pass runs on top of the
        tokens it holds (`mask` then covers them too) and appends its own keys and values to it."""
        import torch

        inputs = {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}
        if position_ids is not None:
            inputs["position_ids"] = position_ids.to(self.device)
        if cache is not None:
            inputs.update({self._cache_keyword(): cache, "use_cache": True})
        with torch.inference_mode():
            scores = self.token_scores(inputs).float().cpu()
        self.forward_calls += 1
        return scores

    def _new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.cache_module().config)

    def _cache_keyword(self) -> str | None:
        """The keyword the cache module's forward takes a KV cache by (`cache` in current transformers,
        `past_key_values` before the rename), or None: a forward without one scores every candidate whole."""
        import inspect

        parameters = inspect.signature(self.cache_module().forward).parameters
        return next((name for name in ("cache", "past_key_values") if name in parameters), None)

    def _score_vllm(self, encoded: list[Encoded]) -> list[list[float]]:
        outputs = self.llm.encode(
            [{"prompt_token_ids": e.ids} for e in encoded], pooling_task="token_classify", use_tqdm=False
        )
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
PRM = TypeVar("PRM", bound=HFProcessRewardModel)


def load_hf(prm_cls: type[PRM], cfg, **extra) -> PRM:
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
    model = from_pretrained(
        loader,
        cfg.path,
        what=f"the {prm_cls.family} PRM",
        key="prm.path",
        dtype=dtype,
        trust_remote_code=cfg.trust_remote_code,
    )
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
            raise ValueError(
                "vLLM convert='classify' without hf_overrides {'classifier_from_token': [bad, good], "
                "'method': 'from_2_way_softmax'} leaves the classification head uninitialised "
                "(random scores); refusing to build it"
            )


def build_vllm_pooling(cfg, engine_kwargs: dict):
    """One `vllm.LLM` as a pooling model. `import vllm` happens only here."""
    check_classify_head(engine_kwargs)
    try:
        import vllm  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "prm.backend=vllm needs vllm installed (GPU: pip install vllm; CPU: scripts/vllm_cpu_lane.sh)"
        ) from err
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
        raise OSError(
            f"could not load the PRM {cfg.path!r} from the hub (offline?); download it and pass "
            f"prm.path=/local/dir [{err}]"
        ) from err


def two_token_pooler_kwargs(bad: str, good: str, *, last: bool) -> dict:
    """vLLM: a causal LM as a P(good) scorer (sigmoid(logit_good - logit_bad) = 2-way softmax), read at the last
    token of each sequence (`last`: prefix caching serves the sequence's prefix) or at every token (`ALL` pooling)."""
    from vllm.config import PoolerConfig

    pooler = (
        PoolerConfig(task="classify", seq_pooling_type="LAST")
        if last
        else PoolerConfig(task="token_classify", tok_pooling_type="ALL")
    )
    return dict(
        runner="pooling",
        convert="classify",
        hf_overrides={"classifier_from_token": [bad, good], "method": "from_2_way_softmax"},
        pooler_config=pooler,
    )
