"""`model/backend=openai`: a policy served over an OpenAI-compatible completions API (`vllm serve`, SGLang, ...).

    python tts/main.py model=llama-3.2-1b model/backend=openai model.backend.base_url=http://gpu-node:8000/v1

A request is sent to `/v1/completions` exactly as the in-process vLLM backend would run it: the chat template of
`model.chat_template` is rendered here (with our tokenizer, from `model.path`), the partial answer appended as raw text,
and the prompt sent as token ids, so continuing a partial answer keeps its trailing blank line and BOS is not doubled.
`n`, `seed`, `temperature`, `top_p`, `max_tokens` and `stop` go as they are; `include_stop_str_in_output` keeps the
stop string in the text (a server that strips it anyway gets it put back from the `stop_reason` / `matched_stop` it
reports). Finish reasons map as for in-process vLLM. Token counts come from the `token_ids` the server returns
(`return_token_ids`); a server that returns none has its text re-tokenized with our tokenizer (logged once).
`model.top_logprobs = k` asks for the API's `logprobs=k` (token ids as keys, `return_tokens_as_token_ids`, so two
tokens that decode alike stay apart); a server that returns none is warned about once and its samples carry none. The
prompt tokens the server evaluated are the usage's `prompt_tokens` minus `prompt_tokens_details.cached_tokens` (vLLM
reports them with `--enable-prompt-tokens-details`), else unknown.

Many requests are in flight at once (asyncio, at most `model.backend.max_concurrency`), spread round-robin over the
URLs of
`model.backend.base_url`. The `openai` client retries connection errors, timeouts, 429 and 5xx with exponential backoff
(`model.backend.max_retries`); any other 4xx stops the run with the server's message. `model.backend.request_timeout`
is a deadline for a whole request, retries included, so a server that drips bytes cannot hold the run. Every failure
is one line (`PolicyUnavailable`: the URL, the status or the first bytes of a malformed reply, and what to do); the
problems finished before it stay recorded. The API key is read from the
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

from tts.backends.base import GenerationOutput, GenerationRequest, PolicyBackend, PolicyUnavailable, top_logprobs_array
from tts.backends.hf import load_tokenizer, prompt_ids
from tts.backends.vllm import map_finish_reason
from tts.config.schema import Config, ConfigError, ModelConfig, PolicyBackendConfig, require

log = logging.getLogger(__name__)


@dataclass
class OpenAIPolicyConfig(PolicyBackendConfig):
    """A served policy behind an OpenAI-compatible `/v1/completions` endpoint (`vllm serve`, SGLang):
    `model/backend=openai`. The tokenizer is loaded locally from `model.path` (prompts are sent as token ids)."""

    name: str = "openai"
    base_url: Any = None  # the server's URL, or a list of them used round-robin
    served_model_name: Optional[str] = None  # the server's name for the model; null: model.path
    api_key_env: str = "OPENAI_API_KEY"  # the environment variable the key is read from
    max_concurrency: int = 64  # requests in flight at once
    max_retries: int = 5  # on connection errors, 429 and 5xx, with backoff (the client's own); at most 20
    request_timeout: float = 600.0  # seconds one request may take from start to end, retries included

    def check(self, run: Config) -> None:
        super().check(run)
        base_urls(self.base_url)
        self.require(0 <= self.max_retries <= 20, "max_retries", f"must be in [0, 20], got {self.max_retries}")
        self.require(self.request_timeout > 0, "request_timeout", f"must be > 0 seconds, got {self.request_timeout}")
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
    body: dict[str, Any] = dict(
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
    if request.top_logprobs:
        body["logprobs"] = int(request.top_logprobs)
        body["extra_body"]["return_tokens_as_token_ids"] = True
    return body


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


def choice_top_logprobs(choice: Any, k: int) -> Optional[Any]:
    """(num_tokens, k) of a choice's `logprobs.top_logprobs` (one {token: logprob} per position); None when the
    server sent none."""
    positions = getattr(getattr(choice, "logprobs", None), "top_logprobs", None)
    if positions is None:
        return None
    return top_logprobs_array(((position or {}).values() for position in positions), k)


def cached_prompt_tokens(response: Any) -> Optional[int]:
    """Prompt tokens the server served from its prefix cache (`usage.prompt_tokens_details.cached_tokens`), or None
    when it does not say."""
    details = getattr(getattr(response, "usage", None), "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None)
    return int(cached) if isinstance(cached, int) else None


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
        self.max_retries = int(max_retries)
        self.timeout = float(timeout)
        self._next = 0
        self._warned_retokenize = False
        self._warned_logprobs = False
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
        url = self.urls[which]
        async with gate:
            try:
                # the deadline covers the whole request, retries included: httpx's own timeout restarts with every
                # byte, so a server that drips its answer slowly would otherwise hold the run forever
                raw = await asyncio.wait_for(self._send(request, prompt, which), timeout=self.timeout)
            except asyncio.TimeoutError:
                raise PolicyUnavailable(
                    f"the served policy at {url} did not finish a request within "
                    f"model.backend.request_timeout={self.timeout:g} s (retries included); is the server overloaded? "
                    f"raise the timeout or lower model.backend.max_concurrency"
                ) from None
        try:
            response = raw.parse()
            choices = sorted(response.choices, key=lambda c: c.index)
        except Exception as err:  # noqa: BLE001 - any reply the client cannot read as a completion
            raise PolicyUnavailable(
                f"the served policy at {url} sent a reply that is not a completion ({type(err).__name__}); "
                f"it begins {_first_bytes(raw)!r}; is model.backend.base_url an OpenAI-compatible /v1 endpoint?"
            ) from None
        if len(choices) != request.n:
            raise PolicyUnavailable(
                f"the served policy at {url} returned {len(choices)} samples, asked for n={request.n}"
            )
        return self._samples(request, prompt, response, choices)

    def _samples(self, request: GenerationRequest, prompt: list[int], response, choices) -> list[GenerationOutput]:
        """A response's choices as samples, with their top log-probabilities and prompt tokens (the first sample
        carries those the server evaluated, the prompt once for all n)."""
        stops = list(request.stop or [])
        samples = [map_choice(c, stops, self._count_tokens) for c in choices]
        cached = cached_prompt_tokens(response)
        for i, (sample, choice) in enumerate(zip(samples, choices)):
            sample.prompt_tokens = len(prompt)
            if cached is not None:
                sample.prompt_tokens_computed = max(0, len(prompt) - cached) if i == 0 else 0
            if request.top_logprobs:
                sample.top_logprobs = choice_top_logprobs(choice, request.top_logprobs)
                if sample.top_logprobs is None and not self._warned_logprobs:
                    log.warning("the served policy returns no log-probabilities; samples carry none (top_logprobs)")
                    self._warned_logprobs = True
        self.tokens_in_flight += sum(o.num_tokens for o in samples)
        return samples

    async def _send(self, request: GenerationRequest, prompt: list[int], which: int):
        """The raw HTTP answer of one request (parsed by the caller, so a malformed body can be shown)."""
        import openai

        url = self.urls[which]
        try:
            return await self.clients[which].completions.with_raw_response.create(
                **completion_body(request, prompt, self.model)
            )
        except openai.APIStatusError as err:  # what the client did not retry (4xx), or 5xx after its retries
            hint = "check the request settings" if err.status_code < 500 else "check the server's log"
            raise PolicyUnavailable(
                f"the served policy at {url} answered HTTP {err.status_code}: {_one_line(_message(err))}; {hint}"
            ) from None
        except openai.APIConnectionError as err:  # per-attempt timeouts included, after the client's retries
            raise PolicyUnavailable(
                f"could not reach the served policy at {url} ({type(err).__name__}: {_one_line(str(err))}) after "
                f"{self.max_retries} retries; is the server up and model.backend.base_url right?"
            ) from None

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


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_bytes(raw, limit: int = 80) -> str:
    try:
        return raw.http_response.text[:limit]
    except Exception:  # noqa: BLE001 - a body that cannot even be decoded
        return "<unreadable body>"


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
