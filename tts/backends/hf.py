"""`model/backend=hf`: a policy on plain transformers (CPU or GPU), same semantics as the vLLM backend.

A hand-written batched decode loop (left padding, KV cache) rather than `model.generate`, because every row needs its
own temperature/top-p, its own random stream (a request's samples depend only on its seed, not on what else is in the
batch), its own token budget, and stop strings that are cut exactly: the output text ends right after the first stop
string (kept), `num_tokens` counts the generated tokens up to and including the one that completed it.

A request's prompt is evaluated once per batch and its KV cache copied to its `n` sample rows (the first sample of the
request in the batch carries `prompt_tokens_computed`). With `request.top_logprobs = k` every generated position keeps
the k highest log-probabilities of the model's own distribution (log-softmax of the raw logits, before temperature and
top-p, as vLLM returns them): k numbers per row and step are kept, never the vocabulary-wide logits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar, Optional

import numpy as np

from tts.backends.base import FinishReason, GenerationOutput, GenerationRequest, PolicyBackend
from tts.config.schema import Config, ModelConfig, PolicyBackendConfig, require

log = logging.getLogger(__name__)

_OFFLINE_HINT = "could not load {what} from the hub (offline?); download it and pass {key}=/local/dir"


def resolve_dtype(name: str, device: str):
    """`auto` is bfloat16 on a GPU and float32 on CPU."""
    import torch

    if name in (None, "", "auto"):
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    aliases = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}
    dtype = getattr(torch, aliases.get(name, name), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"config key 'dtype': unknown torch dtype {name!r} (auto | bfloat16 | float16 | float32)")
    return dtype


def resolve_device(name: str) -> str:
    import torch

    if name in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def from_pretrained(loader, path: str, *, what: str, key: str, **kwargs):
    """`loader.from_pretrained(path)` with a clear message when the files are not local and the hub is unreachable;
    a `.gguf` file is read through transformers' GGUF support (needs the gguf package)."""
    import os

    gguf = os.path.expanduser(path)
    if gguf.endswith(".gguf") and os.path.isfile(gguf):  # one GGUF file (llama.cpp's format), dequantised on load
        return loader.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf), **kwargs)
    local = os.path.isdir(os.path.expanduser(path))
    looks_local = os.path.isabs(path) or path.startswith((".", "~")) or path.count("/") > 1
    if looks_local and not local:
        raise OSError(f"{key}={path!r}: no such local directory (a hub id is 'owner/name')")
    try:
        return loader.from_pretrained(os.path.expanduser(path) if local else path, **kwargs)
    except OSError as err:  # LocalEntryNotFoundError, offline mode, no network: all OSError subclasses
        if local:
            raise OSError(f"could not load {what} from the local directory {path!r} ({key}): {err}") from err
        hint = _OFFLINE_HINT.format(what=f"{what} {path!r}", key=key)
        raise OSError(f"{hint} [{type(err).__name__}: {err}]") from err


def load_tokenizer(path: str, *, key: str, chat_template: str | None = None, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tokenizer = from_pretrained(
        AutoTokenizer, path, what="the tokenizer of", key=key, trust_remote_code=trust_remote_code
    )
    if chat_template:
        from tts.backends.chat_templates import load_chat_template

        tokenizer.chat_template = load_chat_template(chat_template)
    return tokenizer


def opened_turn(tokenizer, request: GenerationRequest) -> str:
    """Chat template over the messages with the assistant header opened (no partial answer yet)."""
    return tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)


def render_prompt(tokenizer, request: GenerationRequest) -> str:
    """Chat template over the messages with the assistant header opened, then the partial answer as raw text."""
    return opened_turn(tokenizer, request) + request.prefix


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Token ids of a rendered prompt: no second BOS when the template already wrote one."""
    bos = tokenizer.bos_token
    add_special = not (bos and text.startswith(bos))
    return tokenizer(text, add_special_tokens=add_special)["input_ids"]


def prompt_ids(tokenizer, request: GenerationRequest) -> list[int]:
    """A request's prompt as token ids, for every backend that sends ids. With `request.prefix_ids` (the ids the
    policy sampled for the partial answer) it is the opened chat turn followed by exactly those ids: the model
    continues the tokens it wrote, not a re-encoding of their text (which for model output is often a different
    tokenization, and misses the prefix cache). Without them, the rendered prompt encoded whole."""
    if request.prefix_ids is None or not request.prefix:
        return encode_prompt(tokenizer, render_prompt(tokenizer, request))
    return encode_prompt(tokenizer, opened_turn(tokenizer, request)) + list(request.prefix_ids)


def text_token_ids(tokenizer, ids, text: str) -> Optional[tuple[int, ...]]:
    """Token ids that decode to exactly `text`, from the ids sampled for it: the ids themselves, or, when a stop
    string ended inside the last token (its text was cut there), the ids before it plus the encoding of the cut
    tail. None when neither decodes to `text`."""
    ids = list(ids)
    if tokenizer.decode(ids) == text:
        return tuple(ids)
    head = tokenizer.decode(ids[:-1]) if ids else ""
    if ids and text.startswith(head):
        tail = tokenizer.encode(text[len(head) :], add_special_tokens=False) if len(text) > len(head) else []
        fixed = ids[:-1] + list(tail)
        if tokenizer.decode(fixed) == text:
            return tuple(fixed)
    return None


def eos_ids(tokenizer, model=None) -> set[int]:
    """Every token that ends a turn: the tokenizer's EOS and the generation config's (Llama 3 lists several)."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    config = getattr(model, "generation_config", None)
    extra = getattr(config, "eos_token_id", None)
    if isinstance(extra, int):
        ids.add(extra)
    elif extra:
        ids.update(int(i) for i in extra)
    return ids


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """Text up to and including the earliest stop string; (text, False) when none occurs."""
    best = None
    for stop in stops:
        at = text.find(stop)
        if at >= 0 and (best is None or at + len(stop) < best):
            best = at + len(stop)
    return (text, False) if best is None else (text[:best], True)


def sample_seed(request_seed: int, index: int) -> int:
    """The random stream of sample `index` of a request: fixed by the request's seed alone."""
    return (int(request_seed) * 1_000_003 + index * 7919 + 12345) % (2**63 - 1)


def cache_argument(model) -> str:
    """The keyword a model's forward takes its KV cache by: `cache` in current transformers (which deprecates
    `past_key_values`), `past_key_values` in releases before the rename."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@dataclass
class _Row:
    request: int
    sample: int
    prompt_ids: list[int]
    temperature: float
    top_p: float
    max_tokens: int
    stops: list[str]
    seed: int
    top_logprobs: int = 0  # k highest log-probabilities kept per generated position
    generated: list[int] = field(default_factory=list)
    logprobs: list[np.ndarray] = field(default_factory=list)  # one (k,) row per generated token
    prompt_computed: int = 0  # prompt tokens this row's batch evaluated for it (its request's first row in the batch)
    finish_reason: FinishReason | None = None
    text: str = ""


class HFPolicy(PolicyBackend):
    """Transformers causal LM answering `GenerationRequest`s in batches of at most `batch_size` sequences."""

    def __init__(self, model, tokenizer, *, batch_size: int = 64, device: str = "cpu") -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = max(1, int(batch_size))
        self.device = device
        self.eos_token_ids = eos_ids(tokenizer, model)
        pad = tokenizer.pad_token_id
        self.pad_token_id = int(pad if pad is not None else next(iter(self.eos_token_ids), 0))
        self._piece_cache: dict[int, str] = {}

    # ------------------------------------------------------------------ requests -> rows -> outputs
    def _generate(self, requests: list[GenerationRequest]) -> list[list[GenerationOutput]]:
        rows: list[_Row] = []
        for r_index, request in enumerate(requests):
            ids = prompt_ids(self.tokenizer, request)
            for s_index in range(request.n):
                rows.append(
                    _Row(
                        r_index,
                        s_index,
                        ids,
                        float(request.temperature),
                        float(request.top_p),
                        int(request.max_tokens),
                        list(request.stop or []),
                        sample_seed(request.seed, s_index),
                        max(0, int(request.top_logprobs)),
                    )
                )
        # similar lengths together: less padding
        order = sorted(range(len(rows)), key=lambda i: len(rows[i].prompt_ids))
        for start in range(0, len(order), self.batch_size):
            self._decode([rows[i] for i in order[start : start + self.batch_size]])
        results: list[list[GenerationOutput]] = [[None] * r.n for r in requests]  # type: ignore[list-item]
        for row in rows:
            results[row.request][row.sample] = GenerationOutput(
                row.text,
                row.finish_reason or "length",
                len(row.generated),
                top_logprobs=self._top_logprobs(row),
                prompt_tokens=len(row.prompt_ids),
                prompt_tokens_computed=row.prompt_computed,
            )
        return results

    # ------------------------------------------------------------------ the decode loop
    def _decode(self, rows: list[_Row]) -> None:
        import random

        import torch
        from transformers import DynamicCache

        device = self.device
        # each request's prompt once: its samples' rows get copies of its KV cache after the prefill
        first: dict[int, int] = {}  # request -> its prefill row
        prompts: list[_Row] = []
        for row in rows:
            if row.request not in first:
                first[row.request] = len(prompts)
                prompts.append(row)
                row.prompt_computed = len(row.prompt_ids)
        owner = torch.tensor([first[r.request] for r in rows], dtype=torch.long, device=device)
        width = max(len(r.prompt_ids) for r in rows)
        ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, row in enumerate(prompts):  # left padding
            ids[i, width - len(row.prompt_ids) :] = torch.tensor(row.prompt_ids, dtype=torch.long)
            mask[i, width - len(row.prompt_ids) :] = 1
        ids, mask = ids.to(device), mask.to(device)
        position = (mask.cumsum(-1) - 1).clamp(min=0)
        keep = max(r.top_logprobs for r in rows)
        # one uniform per row and step from the row's own stream: samples depend on the request seed only
        streams = [random.Random(r.seed) for r in rows]
        temperature = torch.tensor([r.temperature for r in rows], device=device, dtype=torch.float32)
        top_p = torch.tensor([r.top_p for r in rows], device=device, dtype=torch.float32)
        greedy = temperature <= 0
        all_greedy = bool(greedy.all())
        window = [max((len(s) for s in r.stops), default=0) + 4 for r in rows]
        for row in rows:
            if row.max_tokens <= 0:
                row.finish_reason = "length"
        live = [r.finish_reason is None for r in rows]
        steps = max(r.max_tokens for r in rows)

        cache = {cache_argument(self.model): DynamicCache(config=self.model.config)}
        with torch.inference_mode():
            out = self.model(
                input_ids=ids, attention_mask=mask, position_ids=position, **cache, use_cache=True, logits_to_keep=1
            )
            logits = out.logits[:, -1, :].float()
            if len(prompts) < len(rows):
                next(iter(cache.values())).reorder_cache(owner)  # type: ignore[arg-type]
                logits, mask, position = logits[owner], mask[owner], position[owner]
            for step in range(steps):
                if step:
                    logits = out.logits[:, -1, :].float()
                top = torch.log_softmax(logits, dim=-1).topk(keep, dim=-1).values.cpu().numpy() if keep else None
                if all_greedy:
                    next_ids = logits.argmax(dim=-1)
                else:
                    uniforms = torch.tensor([s.random() for s in streams], dtype=torch.float32).to(device)
                    next_ids = self._sample(logits, temperature, top_p, greedy, uniforms)
                tokens = next_ids.tolist()
                for i, row in enumerate(rows):
                    if not live[i]:
                        continue
                    token = tokens[i]
                    row.generated.append(token)
                    if top is not None and row.top_logprobs:
                        row.logprobs.append(top[i, : row.top_logprobs])
                    self.tokens_in_flight += 1
                    if token in self.eos_token_ids:
                        row.finish_reason = "eos"
                    elif row.stops and self._may_end_stop(token, row.stops) and self._stop_in_tail(row, window[i]):
                        row.finish_reason = "stop"
                    elif len(row.generated) >= row.max_tokens:
                        row.finish_reason = "length"
                    live[i] = row.finish_reason is None
                if not any(live):
                    break
                mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype, device=device)], dim=1)
                position = position[:, -1:] + 1
                out = self.model(
                    input_ids=next_ids[:, None],
                    attention_mask=mask,
                    position_ids=position,
                    **cache,
                    use_cache=True,
                    logits_to_keep=1,
                )
        for row in rows:
            text = self.tokenizer.decode(row.generated, skip_special_tokens=True)
            if row.stops:
                text, hit = cut_at_stop(text, row.stops)
                if hit and row.finish_reason != "eos":
                    row.finish_reason = "stop"
            row.text = text

    @staticmethod
    def _top_logprobs(row: _Row) -> Optional[np.ndarray]:
        """(num_tokens, k) float32 of a finished row; None when its request asked for none."""
        if not row.top_logprobs:
            return None
        if not row.logprobs:
            return np.zeros((0, row.top_logprobs), dtype=np.float32)
        return np.stack(row.logprobs).astype(np.float32, copy=False)

    def _may_end_stop(self, token: int, stops: list[str]) -> bool:
        """Cheap pre-check: can this token complete a stop string? Its own text must hold a stop's last character
        (a token that decodes to nothing printable alone, e.g. part of a multi-byte character, is checked anyway)."""
        piece = self._piece_cache.get(token)
        if piece is None:
            piece = self.tokenizer.decode([token], skip_special_tokens=True)
            self._piece_cache[token] = piece
        if not piece or "\ufffd" in piece:
            return True
        return any(stop[-1] in piece for stop in stops)

    def _stop_in_tail(self, row: _Row, window: int) -> bool:
        """Whether the newest tokens complete a stop string (only a short tail is decoded per step)."""
        tail = self.tokenizer.decode(row.generated[-window:], skip_special_tokens=True)
        return any(stop in tail for stop in row.stops)

    @staticmethod
    def _sample(logits, temperature, top_p, greedy, uniforms):
        """Temperature + nucleus sampling by inverse CDF, one given uniform per row; greedy rows take the argmax."""
        import torch

        scaled = logits / torch.where(greedy, torch.ones_like(temperature), temperature)[:, None]
        probs = torch.softmax(scaled, dim=-1)
        sorted_probs, sorted_idx = probs.sort(dim=-1, descending=True)
        before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass strictly above each token
        sorted_probs = sorted_probs * (before < top_p[:, None])  # the top token always stays
        cdf = sorted_probs.cumsum(dim=-1)
        target = (uniforms * cdf[:, -1]).unsqueeze(-1)
        pick = torch.searchsorted(cdf, target, right=True).clamp(max=cdf.shape[-1] - 1)
        sampled = sorted_idx.gather(-1, pick).squeeze(-1)
        return torch.where(greedy, logits.argmax(dim=-1), sampled)

    def close(self) -> None:
        import gc

        self.model = None
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


@dataclass
class HFPolicyConfig(PolicyBackendConfig):
    """transformers on any device: `model/backend=hf`."""

    shared: ClassVar[bool] = True

    name: str = "hf"
    device: str = "auto"  # cuda when available, else cpu
    batch_size: int = 64  # sequences per forward pass

    def check(self, run: Config) -> None:
        super().check(run)
        require(bool(run.model.path), "model.path", "a real backend needs a hub id or a local directory")
        self.require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")

    def needs(self) -> Optional[tuple[str, str]]:
        return ("transformers", "tts[hf]")

    def weights(self, run: Config) -> list[tuple[str, Optional[str]]]:
        return [("model.path", run.model.path)]


def build(config: HFPolicyConfig, model: ModelConfig, seed: int) -> HFPolicy:
    """The hf policy of `model` (`model.path` is a hub id or a local directory)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    device = resolve_device(config.device)
    dtype = resolve_dtype(model.dtype, device)
    assert model.path is not None, "HFPolicyConfig.check requires model.path"
    tokenizer = load_tokenizer(
        model.path, key="model.path", chat_template=model.chat_template, trust_remote_code=model.trust_remote_code
    )
    weights = from_pretrained(
        AutoModelForCausalLM,
        model.path,
        what="the policy model",
        key="model.path",
        dtype=dtype,
        trust_remote_code=model.trust_remote_code,
    )
    weights.to(device).eval()
    log.info("hf policy %s on %s (%s), batch_size=%d", model.path, device, dtype, config.batch_size)
    return HFPolicy(weights, tokenizer, batch_size=config.batch_size, device=device)
