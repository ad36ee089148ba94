"""`model/backend=openai`: a policy served over an OpenAI-compatible completions API (`vllm serve`, SGLang, ...).

    python tts/main.py model=llama-3.2-1b model/backend=openai model.backend.base_url=http://gpu-node:8000/v1

A request is sent to `/v1/completions` exactly as the in-process vLLM backend would run it: the chat template of
`model.chat_template` is rendered here (with our tokenizer, from `model.path`), the partial answer appended as raw text,
and the prompt sent as token ids, so continuing a partial answer keeps its trailing blank line and BOS is not doubled.
`n`, `seed`, `temperature`, `top_p`, `max_tokens` and `stop` go as they are; `include_stop_str_in_output` keeps the
stop string in the text (a server that strips it anyway gets it put back from the `stop_reason` / `matched_stop` it
reports). Finish reasons map as for in-process vLLM. Token counts come from the `token_ids` the server returns
(`return_token_ids`); a server that returns none has its text re-tokenized with our tokenizer (logged once).

Many requests are in flight at once (asyncio, at most `model.backend.max_concurrency`), spread round-robin over the
URLs of
`model.backend.base_url`. The `openai` client retries connection errors, timeouts, 429 and 5xx with exponential backoff
(`model.backend.max_retries`); any other 4xx stops the run with the server's message. The API key is read from the
environment
variable named by `model.backend.api_key_env` (a server started without a key accepts any).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Optional

from tts.backends.base import GenerationOutput, GenerationRequest, PolicyBackend
from tts.backends.hf import load_tokenizer, prompt_ids
from tts.backends.vllm import map_finish_reason
from tts.config.schema import Config, ConfigError, ModelConfig, PolicyBackendConfig, require

log = logging.getLogger(__name__)


@dataclass
class OpenAIPolicyConfig(PolicyBackendConfig):
    """A served policy behind an OpenAI-compatible `/v1/completions` endpoint (`vllm serve`, SGLang):
    `model/backend=openai`. The tokenizer is loaded locally from `model.path` (prompts are sent as token ids)."""

    _target_: str = "tts.backends.openai.build"
    name: str = "openai"
    base_url: Any = None  # the server's URL, or a list of them used round-robin
    served_model_name: Optional[str] = None  # the server's name for the model; null: model.path
    api_key_env: str = "OPENAI_API_KEY"  # the environment variable the key is read from
    max_concurrency: int = 64  # requests in flight at once
    max_retries: int = 5  # on connection errors, 429 and 5xx, with backoff (the client's own)
    request_timeout: float = 600.0  # seconds one request may take

    def check(self, run: Config) -> None:
        super().check(run)
        base_urls(self.base_url)
        require(bool(run.model.path), "model.path", "the served model's tokenizer: a hub id or a local directory")

    def needs(self) -> Optional[tuple[str, str]]:
        return ("openai", "tts[openai]")


def base_urls(value: Any) -> list[str]:
    """`model.backend.base_url` as a list of http(s) URLs; a config error naming the key otherwise."""
    urls = list(value) if isinstance(value, (list, tuple)) else [value]
    if not urls or any(not isinstance(u, str) or not u.startswith(("http://", "https://")) for u in urls):
        raise ConfigError(
            f"config key 'model.backend.base_url': model/backend=openai needs the server's URL (or a "
            f"list of them), e.g. http://127.0.0.1:8000/v1; got {value!r}"
        )
    return urls


def completion_body(request: GenerationRequest, prompt: list[int], model: str) -> dict[str, Any]:
    """The `/v1/completions` arguments of one request (vLLM / SGLang extras go in `extra_body`)."""
    return dict(
        model=model,
        prompt=prompt,
        n=request.n,
        temperature=request.temperature,
        top_p=request.top_p,
        max_tokens=request.max_tokens,
        stop=list(request.stop or []) or None,
        seed=request.seed,
        extra_body=dict(include_stop_str_in_output=True, skip_special_tokens=True, return_token_ids=True),
    )


_ABSENT = object()


def map_choice(choice: Any, stops: list[str], count_tokens) -> GenerationOutput:
    """One completion choice -> `GenerationOutput`, with the stop string kept and the finish reason as vLLM's."""
    extra = getattr(choice, "model_extra", None) or {}
    stop_reason = extra.get("stop_reason", _ABSENT)
    if stop_reason is _ABSENT:
        stop_reason = extra.get("matched_stop", _ABSENT)  # SGLang's name
    text = choice.text or ""
    if choice.finish_reason == "stop":
        if stop_reason is _ABSENT:
            raise RuntimeError(
                "the served policy does not say what ended a completion (no stop_reason / "
                "matched_stop): a stop string and the end of the answer cannot be told apart; serve "
                "the policy with vllm serve or SGLang"
            )
        if isinstance(stop_reason, str) and stop_reason in stops and not text.endswith(stop_reason):
            text += stop_reason  # the server stripped the stop string; steps keep theirs
    elif stop_reason is _ABSENT:
        stop_reason = None
    token_ids = extra.get("token_ids") or getattr(choice, "token_ids", None)
    num_tokens = len(token_ids) if token_ids is not None else count_tokens(text)
    return GenerationOutput(
        text=text, finish_reason=map_finish_reason(choice.finish_reason, stop_reason), num_tokens=num_tokens
    )


class OpenAIPolicy(PolicyBackend):
    """A served policy. Owns an event loop on a background thread: `generate` stays a plain blocking call while its
    requests run concurrently, and the HTTP clients live on one loop for the backend's whole life."""

    def __init__(
        self,
        urls: list[str],
        tokenizer,
        *,
        model: str,
        api_key: str,
        max_concurrency: int = 64,
        max_retries: int = 5,
        timeout: float = 600.0,
    ) -> None:
        super().__init__()
        self.urls = list(urls)
        self.tokenizer = tokenizer
        self.model = model
        self.max_concurrency = max(1, int(max_concurrency))
        self._next = 0
        self._warned_retokenize = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tts-openai-client", daemon=True)
        self._thread.start()

        async def make_clients():
            from openai import AsyncOpenAI

            return [
                AsyncOpenAI(base_url=url, api_key=api_key, max_retries=max_retries, timeout=timeout)
                for url in self.urls
            ]

        self.clients = self._run(make_clients())

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _count_tokens(self, text: str) -> int:
        if not self._warned_retokenize:
            log.warning("the served policy returns no token ids; generated tokens are counted by re-tokenizing")
            self._warned_retokenize = True
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _generate(self, requests: list[GenerationRequest]) -> list[list[GenerationOutput]]:
        prompts = [prompt_ids(self.tokenizer, r) for r in requests]
        for request, ids in zip(requests, prompts):
            self.stats.prompt_tokens += len(ids) * request.n
        first, self._next = self._next, self._next + len(requests)
        return self._run(self._all(requests, prompts, first))

    async def _all(self, requests, prompts, first: int) -> list[list[GenerationOutput]]:
        gate = asyncio.Semaphore(self.max_concurrency)
        tasks = [
            asyncio.ensure_future(self._one(r, ids, (first + i) % len(self.clients), gate))
            for i, (r, ids) in enumerate(zip(requests, prompts))
        ]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _one(self, request: GenerationRequest, prompt: list[int], which: int, gate) -> list[GenerationOutput]:
        import openai

        url = self.urls[which]
        async with gate:
            try:
                response = await self.clients[which].completions.create(**completion_body(request, prompt, self.model))
            except openai.APIStatusError as err:  # what the client did not retry (4xx), or 5xx after its retries
                raise RuntimeError(
                    f"the served policy at {url} answered HTTP {err.status_code}: {_message(err)}"
                ) from err
            except openai.APIConnectionError as err:  # timeouts included, after the client's retries
                raise RuntimeError(
                    f"could not reach the served policy at {url} ({type(err).__name__}: {err}); "
                    f"is the server up? (model.backend.base_url)"
                ) from err
        choices = sorted(response.choices, key=lambda c: c.index)
        if len(choices) != request.n:
            raise RuntimeError(f"the served policy at {url} returned {len(choices)} samples, asked for n={request.n}")
        stops = list(request.stop or [])
        samples = [map_choice(c, stops, self._count_tokens) for c in choices]
        self.tokens_in_flight += sum(o.num_tokens for o in samples)
        return samples

    def close(self) -> None:
        if self._loop.is_closed():
            return

        async def close_clients():
            for client in self.clients:
                await client.close()

        try:
            self._run(close_clients())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()


def _message(err) -> str:
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if body.get("message"):
            return str(body["message"])
    return str(getattr(err, "message", err))


def build(config: OpenAIPolicyConfig, model: ModelConfig, seed: int) -> OpenAIPolicy:
    try:
        import openai  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("model/backend=openai needs the openai client: pip install 'tts[openai]'") from err
    urls = base_urls(config.base_url)
    assert model.path is not None, "OpenAIPolicyConfig.check requires model.path"
    tokenizer = load_tokenizer(
        model.path, key="model.path", chat_template=model.chat_template, trust_remote_code=model.trust_remote_code
    )
    api_key = os.environ.get(config.api_key_env or "", "") or "EMPTY"
    name = config.served_model_name or model.path
    log.info("served policy %s at %s (max_concurrency=%d)", name, ", ".join(urls), config.max_concurrency)
    return OpenAIPolicy(
        urls,
        tokenizer,
        model=name,
        api_key=api_key,
        max_concurrency=config.max_concurrency,
        max_retries=config.max_retries,
        timeout=config.request_timeout,
    )
