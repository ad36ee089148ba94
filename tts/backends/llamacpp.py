"""`model/backend=llamacpp`: GGUF models on a CPU through llama.cpp (llama-cpp-python's low-level binding).

    python tts/main.py model=smollm2-135m prm=none dataset=gsm8k n=8

Why the low-level API and not `Llama.create_completion`: a request's n samples share one prompt, so the prompt is
evaluated once, its KV state is read out, and every other sample's sequence starts from a copy of that state (a
memory copy, no evaluation); all live samples of all requests are decoded together, one token each per
`llama_decode` call. Each sample sequence has its own KV stream (llama.cpp's non-unified cache): attention reads only
its own prompt and tokens, where a unified cache makes every sample attend over the cells of all of them (masked), a
cost that grows with n x length (at n=32 and 256 tokens the per-sequence streams decoded 1.8x faster here). The chat
turn's KV state is also kept per problem (a small LRU of sequence states), so the next continuation of a partial
answer (beam search, revisions) evaluates only the partial answer. Sampling, stop strings
and the top-k log-probabilities are done in numpy on the logits rows llama.cpp already computed: the library's own
`logprobs` option converts the whole vocabulary row to Python per token and is several times slower.

A request's samples depend on its seed only (each sample has its own random stream), not on what else is decoded in
the same batch; greedy decoding (temperature 0) takes the argmax.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import numpy as np

from tts.backends.base import FinishReason, GenerationOutput, GenerationRequest, PolicyBackend
from tts.backends.hf import cut_at_stop, sample_seed, text_token_ids
from tts.config.schema import Config, ModelConfig, PolicyBackendConfig, require

log = logging.getLogger(__name__)

CONTEXT_STEP = 256  # KV cells per sequence are allocated in multiples of this


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise natural-log probabilities of a (rows, vocab) float32 array."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def top_k_logprobs(logits: np.ndarray, k: int) -> np.ndarray:
    """(rows, k) float32: the k highest log-probabilities of each row's distribution, descending."""
    logp = log_softmax(logits)
    k = min(k, logp.shape[-1])
    part = np.partition(logp, logp.shape[-1] - k, axis=-1)[:, -k:]
    return -np.sort(-part, axis=-1).astype(np.float32)


def sample_rows(logits: np.ndarray, temperature: np.ndarray, top_p: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """One token per row by inverse CDF with the row's own uniform: temperature and nucleus (top-p) sampling;
    rows with temperature 0 take the argmax. Only rows that ask for top_p < 1 sort their vocabulary."""
    tokens = logits.argmax(axis=-1)
    hot = np.flatnonzero(temperature > 0)
    if hot.size == 0:
        return tokens
    scaled = logits[hot] / temperature[hot, None]
    probs = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    for j, row in enumerate(hot):
        if top_p[row] < 1.0:
            order = np.argsort(-probs[j])
            sorted_probs = probs[j][order]
            before = np.cumsum(sorted_probs) - sorted_probs
            keep = order[before < top_p[row] * sorted_probs.sum()]  # the top token always stays
            mask = np.zeros_like(probs[j])
            mask[keep] = 1.0
            probs[j] *= mask
    cdf = np.cumsum(probs, axis=-1)
    target = uniforms[hot] * cdf[:, -1]
    picks = (cdf < target[:, None]).sum(axis=-1)
    tokens[hot] = np.minimum(picks, logits.shape[-1] - 1)
    return tokens


@dataclass
class _Prompt:
    """A request whose samples are being decoded: its prompt is evaluated into the first sample's sequence, and the
    KV state read from there seeds every later sample's sequence."""

    index: int
    request: GenerationRequest
    ids: list[int] = field(default_factory=list)  # the chat turn's ids, then the partial answer's
    chat: list[int] = field(default_factory=list)
    state: Optional[ctypes.Array] = None  # the prompt's KV sequence state, while samples are still to start
    logits: Optional[np.ndarray] = None  # the distribution of the first generated token
    computed: int = 0  # prompt tokens evaluated for it (the rest came from the per-problem cache)
    next_sample: int = 0


@dataclass
class _Sample:
    prompt: _Prompt
    index: int
    slot: int
    rng: np.random.Generator
    ids: list[int] = field(default_factory=list)
    text: bytearray = field(default_factory=bytearray)
    rows: list[np.ndarray] = field(default_factory=list)
    finish_reason: Optional[FinishReason] = None


class _TextCodec:
    """decode/encode over llama.cpp's vocabulary, the interface `text_token_ids` expects of a tokenizer."""

    def __init__(self, policy: LlamaCppPolicy) -> None:
        self.policy = policy

    def decode(self, ids: Sequence[int]) -> str:
        return self.policy.detokenize(ids).decode("utf-8", errors="replace")

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.policy.tokenize(text, add_special=add_special_tokens)


class LlamaCppPolicy(PolicyBackend):
    """A GGUF model in one llama.cpp context with n_seq sample sequences decoded together, each in a KV stream of its
    own of `n_ctx_seq` cells. With `n_ctx_seq=None` the context is sized to the longest prompt plus max_tokens asked
    for so far, and rebuilt larger when a request needs more (the prompt cache survives it)."""

    def __init__(
        self,
        path: str,
        *,
        n_ctx_seq: Optional[int] = None,
        n_seq: int = 16,
        n_batch: int = 512,
        n_threads: Optional[int] = None,
        prompt_cache_size: int = 64,
        chat_template: Optional[str] = None,
        flash_attn: bool = False,
    ) -> None:
        super().__init__()
        import llama_cpp

        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # llama.cpp's load chatter, not warnings
        self.lib = llama_cpp
        self.n_seq = n_seq
        self.fixed_ctx_seq = n_ctx_seq
        self.n_batch = n_batch
        self.flash_attn = flash_attn
        self.threads = n_threads or os.cpu_count() or 1
        self.prompt_cache_size = prompt_cache_size
        llama_cpp.llama_backend_init()
        model_params = llama_cpp.llama_model_default_params()
        self.model = llama_cpp.llama_model_load_from_file(path.encode(), model_params)
        if not self.model:
            raise OSError(f"llama.cpp could not load the GGUF file {path!r} (model.path)")
        self.ctx: Any = None  # the context, its KV memory and decode batch: built (and rebuilt) by _ensure_context
        self.memory: Any = None
        self.batch: Any = None
        self.n_ctx_seq = 0
        self._ensure_context(n_ctx_seq or CONTEXT_STEP)
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.chat_template = self._chat_template(chat_template)
        self.bos_text = self.detokenize([llama_cpp.llama_vocab_bos(self.vocab)], special=True).decode(errors="replace")
        self.eos_text = self.detokenize([llama_cpp.llama_vocab_eos(self.vocab)], special=True).decode(errors="replace")
        self._pieces: dict[int, bytes] = {}
        self._prompt_cache: OrderedDict[tuple[int, ...], tuple[ctypes.Array, np.ndarray]] = OrderedDict()
        self.prompt_evaluations = 0  # prompts evaluated (each request's, once), for tests and benchmarks
        self.prompt_tokens_evaluated = 0
        log.info("llamacpp policy %s: n_seq=%d threads=%d", path, n_seq, self.threads)

    def _ensure_context(self, cells: int) -> None:
        """A context whose every sequence holds `cells` KV cells: kept when it does, else built (rounded up to
        CONTEXT_STEP); with a fixed `n_ctx_seq`, a request that needs more is refused in one line."""
        if self.ctx is not None and cells <= self.n_ctx_seq:
            return
        if self.fixed_ctx_seq is not None:
            require(
                cells <= self.fixed_ctx_seq,
                "model.backend.n_ctx_seq",
                f"{self.fixed_ctx_seq} KV cells per sequence cannot hold a prompt plus max_tokens of {cells} tokens; "
                f"raise it, or leave it null to size it to the requests",
            )
            cells = self.fixed_ctx_seq
        cells = -(-cells // CONTEXT_STEP) * CONTEXT_STEP
        lib = self.lib
        if self.ctx is not None:
            lib.llama_batch_free(self.batch)
            lib.llama_free(self.ctx)
            self.ctx = None
        params = lib.llama_context_default_params()
        params.n_ctx = cells * self.n_seq
        params.n_seq_max = self.n_seq
        params.kv_unified = False  # a KV stream per sequence: each sample attends over its own cells only
        params.n_batch = params.n_ubatch = max(self.n_batch, self.n_seq)
        # llama.cpp's default (auto) turns flash attention on for CPU, whose half-precision sums move log-probabilities
        # by ~0.1-0.3 on this kind of model; off is the library's own default in `Llama`
        params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if self.flash_attn else 0
        params.n_threads = params.n_threads_batch = self.threads
        self.ctx = lib.llama_init_from_model(self.model, params)
        if not self.ctx:
            raise RuntimeError(
                f"llama.cpp could not create a context of {self.n_seq} sequences x {cells} KV cells "
                f"(model.backend.n_seq, model.backend.n_ctx_seq)"
            )
        self.memory = lib.llama_get_memory(self.ctx)
        self.n_ctx_seq = int(lib.llama_n_ctx_seq(self.ctx))
        self.batch = lib.llama_batch_init(params.n_batch, 0, 1)
        log.debug("llamacpp context: %d sequences x %d KV cells", self.n_seq, self.n_ctx_seq)

    # ------------------------------------------------------------------ text <-> tokens
    def tokenize(self, text: str, *, add_special: bool, special: bool = False) -> list[int]:
        data = text.encode()
        size = len(data) + 8
        out = (self.lib.llama_token * size)()
        n = self.lib.llama_tokenize(self.vocab, data, len(data), out, size, add_special, special)
        if n < 0:
            out = (self.lib.llama_token * -n)()
            n = self.lib.llama_tokenize(self.vocab, data, len(data), out, -n, add_special, special)
        return list(out[:n])

    def piece(self, token: int, special: bool = False) -> bytes:
        cached = self._pieces.get(token) if not special else None
        if cached is not None:
            return cached
        buf = ctypes.create_string_buffer(64)
        n = self.lib.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self.lib.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        piece = buf.raw[:n]
        if not special:
            self._pieces[token] = piece
        return piece

    def detokenize(self, ids: Sequence[int], special: bool = False) -> bytes:
        return b"".join(self.piece(int(t), special) for t in ids)

    def _chat_template(self, name: Optional[str]) -> str:
        """The model config's template (a shipped name or a file), else the one in the GGUF's metadata."""
        if name:
            from tts.backends.chat_templates import load_chat_template

            return load_chat_template(name)
        text = self.lib.llama_model_chat_template(self.model, None)
        if not text:
            raise ValueError("config key 'model.chat_template': the GGUF file has no chat template; name one")
        return text.decode()

    def render(self, request: GenerationRequest) -> str:
        """The chat turn with the assistant header opened (transformers' convention for the template's variables)."""
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        return env.from_string(self.chat_template).render(
            messages=request.messages, add_generation_prompt=True, bos_token=self.bos_text, eos_token=self.eos_text
        )

    def prompt_parts(self, request: GenerationRequest) -> tuple[list[int], list[int]]:
        """(chat turn ids, partial answer ids): the turn with one BOS at most (none added when the template wrote
        it), the partial answer as the ids the policy sampled for it or its text encoded raw after the turn."""
        turn = self.render(request)
        add_bos = not (self.bos_text and turn.startswith(self.bos_text))
        chat = self.tokenize(turn, add_special=add_bos, special=True)
        if request.prefix_ids is not None and request.prefix:
            return chat, list(request.prefix_ids)
        return chat, (self.tokenize(request.prefix, add_special=False) if request.prefix else [])

    # ------------------------------------------------------------------ KV sequences
    def _decode(self, tokens: Sequence[int], positions: Sequence[int], seqs: Sequence[int], wants: Sequence[bool]):
        """One llama_decode call; returns the logits rows of the tokens that want them, in order."""
        batch = self.batch
        batch.n_tokens = len(tokens)
        for i, (token, pos, seq, want) in enumerate(zip(tokens, positions, seqs, wants)):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = want
        status = self.lib.llama_decode(self.ctx, batch)
        if status != 0:
            raise RuntimeError(
                f"llama_decode failed ({status}): a KV sequence of {self.n_ctx_seq} cells is full "
                f"(model.backend.n_ctx_seq)"
            )
        rows = sum(bool(w) for w in wants)
        if rows == 0:
            return np.empty((0, self.n_vocab), dtype=np.float32)
        pointer = self.lib.llama_get_logits(self.ctx)
        return np.ctypeslib.as_array(pointer, shape=(rows, self.n_vocab)).copy()

    def _evaluate(self, ids: Sequence[int], start: int, seq: int) -> np.ndarray:
        """Evaluate `ids` at positions start.. into `seq`, in n_batch chunks; the last token's logits row."""
        last = np.empty(0, dtype=np.float32)
        for at in range(0, len(ids), self.n_batch):
            chunk = ids[at : at + self.n_batch]
            wants = [False] * len(chunk)
            wants[-1] = at + len(chunk) == len(ids)
            rows = self._decode(chunk, range(start + at, start + at + len(chunk)), [seq] * len(chunk), wants)
            if len(rows):
                last = rows[-1]
        return last

    def _state(self, seq: int) -> ctypes.Array:
        """The KV state of sequence `seq`, as a buffer `_restore` can put into any sequence."""
        size = self.lib.llama_state_seq_get_size(self.ctx, seq)
        buffer = (ctypes.c_uint8 * size)()
        self.lib.llama_state_seq_get_data(self.ctx, buffer, size, seq)
        return buffer

    def _restore(self, state: ctypes.Array, seq: int) -> None:
        if self.lib.llama_state_seq_set_data(self.ctx, state, len(state), seq) == 0:
            raise RuntimeError("llama.cpp could not restore a prompt's KV state into a sequence")

    def _load_prompt(self, prompt: _Prompt, seq: int) -> None:
        """Put the prompt into KV sequence `seq`: the chat turn from the per-problem cache or evaluated (and then
        cached), the partial answer evaluated after it."""
        chat, prefix = prompt.chat, prompt.ids[len(prompt.chat) :]
        key = tuple(chat)
        cached = self._prompt_cache.get(key)
        if cached is not None:
            self._prompt_cache.move_to_end(key)
            state, logits = cached
            self._restore(state, seq)
        else:
            logits = self._evaluate(chat, 0, seq)
            prompt.computed += len(chat)
            if self.prompt_cache_size > 0:
                self._prompt_cache[key] = (self._state(seq), logits)
                while len(self._prompt_cache) > self.prompt_cache_size:
                    self._prompt_cache.popitem(last=False)
        if prefix:
            logits = self._evaluate(prefix, len(chat), seq)
            prompt.computed += len(prefix)
        prompt.logits = logits
        self.prompt_evaluations += 1
        self.prompt_tokens_evaluated += prompt.computed

    def _forget(self, seq: int) -> None:
        self.lib.llama_memory_seq_rm(self.memory, seq, -1, -1)

    def reset_prefix_cache(self) -> None:
        self._prompt_cache.clear()

    # ------------------------------------------------------------------ requests -> outputs
    def _generate(self, requests: list[GenerationRequest]) -> list[list[GenerationOutput]]:
        results: list[list[Optional[GenerationOutput]]] = [[None] * r.n for r in requests]
        waiting = deque(_Prompt(i, r) for i, r in enumerate(requests) if r.n > 0)
        for prompt in waiting:
            prompt.chat, prefix = self.prompt_parts(prompt.request)
            prompt.ids = prompt.chat + prefix
        if waiting:
            self._ensure_context(max(len(p.ids) + max(p.request.max_tokens, 1) for p in waiting))
        free_slots = list(range(self.n_seq - 1, -1, -1))
        active: list[_Sample] = []
        pending_rows: dict[int, np.ndarray] = {}  # slot -> logits row of its next token
        try:
            while waiting or active:
                # a free slot starts the next sample: the first of a request evaluates (or restores) the prompt,
                # the others restore the KV state read after it
                while free_slots and waiting:
                    prompt = waiting[0]
                    slot = free_slots.pop()
                    if prompt.next_sample == 0:
                        self._load_prompt(prompt, slot)
                        if prompt.request.n > 1:
                            prompt.state = self._state(slot)
                    else:
                        assert prompt.state is not None
                        self._restore(prompt.state, slot)
                    index = prompt.next_sample
                    prompt.next_sample += 1
                    if prompt.next_sample == prompt.request.n:
                        waiting.popleft()
                        prompt.state = None
                    rng = np.random.default_rng(sample_seed(prompt.request.seed, index))
                    active.append(_Sample(prompt, index, slot, rng))
                    assert prompt.logits is not None
                    pending_rows[slot] = prompt.logits
                    if prompt.request.max_tokens <= 0:
                        active[-1].finish_reason = "length"
                # one token for every active sample, from the rows its last decode produced
                stepping = [s for s in active if s.finish_reason is None]
                if stepping:
                    self._step(stepping, pending_rows)
                    self.tokens_in_flight += len(stepping)
                for sample in [s for s in active if s.finish_reason is not None]:
                    active.remove(sample)
                    results[sample.prompt.index][sample.index] = self._output(sample)
                    self._forget(sample.slot)
                    free_slots.append(sample.slot)
                    pending_rows.pop(sample.slot, None)
        finally:
            for seq in range(self.n_seq):
                self._forget(seq)
        done = [[o for o in samples if o is not None] for samples in results]
        assert all(len(d) == len(s) for d, s in zip(done, results)), "every sample is decoded"
        return done

    def _step(self, samples: list[_Sample], rows: dict[int, np.ndarray]) -> None:
        """Sample one token for each sample from its pending logits row, check its end, and decode the continuing
        ones together (their next rows replace the pending ones)."""
        logits = np.stack([rows[s.slot] for s in samples])
        temperature = np.array([s.prompt.request.temperature for s in samples], dtype=np.float64)
        top_p = np.array([s.prompt.request.top_p for s in samples], dtype=np.float64)
        uniforms = np.array([s.rng.random() for s in samples])
        tokens = sample_rows(logits.astype(np.float64), temperature, top_p, uniforms)
        ks = [s.prompt.request.top_logprobs for s in samples]
        k = max(ks)
        top = top_k_logprobs(logits, k) if k > 0 else None
        going: list[_Sample] = []
        for j, (sample, token) in enumerate(zip(samples, tokens.tolist())):
            request = sample.prompt.request
            sample.ids.append(token)
            if top is not None and ks[j] > 0:
                sample.rows.append(top[j, : ks[j]])
            if self.lib.llama_vocab_is_eog(self.vocab, token):
                sample.finish_reason = "eos"
                continue
            piece = self.piece(token)
            sample.text += piece
            if request.stop and self._ends_in_stop(sample.text, len(piece), request.stop):
                sample.finish_reason = "stop"
            elif len(sample.ids) >= request.max_tokens:
                sample.finish_reason = "length"
            else:
                going.append(sample)
        if not going:
            return
        going.sort(key=lambda s: s.slot)  # consecutive sequence ids decode in one micro-batch across KV streams
        position = [len(s.prompt.ids) + len(s.ids) - 1 for s in going]
        new_rows = self._decode([s.ids[-1] for s in going], position, [s.slot for s in going], [True] * len(going))
        for sample, row in zip(going, new_rows):
            rows[sample.slot] = row

    @staticmethod
    def _ends_in_stop(text: bytearray, piece_len: int, stops: list[str]) -> bool:
        """Whether a stop string ends inside the newest piece (bytes, so a split character cannot hide one)."""
        for stop in stops:
            needle = stop.encode()
            if needle in text[max(0, len(text) - piece_len - len(needle) + 1) :]:
                return True
        return False

    def _output(self, sample: _Sample) -> GenerationOutput:
        request = sample.prompt.request
        text = bytes(sample.text).decode("utf-8", errors="replace")
        finish = sample.finish_reason or "length"
        if request.stop:
            text, hit = cut_at_stop(text, request.stop)
            if hit and finish != "eos":
                finish = "stop"
        ids = sample.ids[:-1] if finish == "eos" else sample.ids
        rows = None
        if request.top_logprobs > 0:
            rows = np.stack(sample.rows) if sample.rows else np.zeros((0, request.top_logprobs), dtype=np.float32)
        return GenerationOutput(
            text=text,
            finish_reason=finish,
            num_tokens=len(sample.ids),
            token_ids=text_token_ids(_TextCodec(self), ids, text),
            top_logprobs=rows,
            prompt_tokens=len(sample.prompt.ids),
            prompt_tokens_computed=sample.prompt.computed if sample.index == 0 else 0,
        )

    def close(self) -> None:
        if getattr(self, "ctx", None):
            self.lib.llama_batch_free(self.batch)
            self.lib.llama_free(self.ctx)
            self.lib.llama_model_free(self.model)
            self.ctx = None


@dataclass
class LlamaCppConfig(PolicyBackendConfig):
    """llama.cpp on CPU: `model/backend=llamacpp`, `model.path` a GGUF file."""

    shared: ClassVar[bool] = True

    name: str = "llamacpp"
    n_ctx_seq: Optional[int] = None  # KV cells of each sample sequence (prompt + answer); null: sized to the requests
    n_seq: int = 16  # samples decoded together in one batch, each in a KV stream of its own
    n_batch: int = 512  # prompt tokens per decode call
    n_threads: Optional[int] = None  # CPU threads (null: every core)
    prompt_cache_size: int = 64  # chat turns whose KV state is kept for the next continuation (LRU; 0: none)
    flash_attn: bool = False  # llama.cpp's flash attention: faster on long prompts, log-probabilities less exact

    def check(self, run: Config) -> None:
        super().check(run)
        path = run.model.path
        require(bool(path), "model.path", "model/backend=llamacpp needs a GGUF file")
        require(
            str(path).endswith(".gguf"),
            "model.path",
            f"{path!r} is not a .gguf file (llama.cpp reads GGUF files; convert a hub checkpoint with llama.cpp's "
            f"convert_hf_to_gguf.py)",
        )
        self.require(
            self.n_ctx_seq is None or self.n_ctx_seq >= CONTEXT_STEP,
            "n_ctx_seq",
            f"must be >= {CONTEXT_STEP} or null (sized to the requests), got {self.n_ctx_seq}",
        )
        self.require(1 <= self.n_seq <= 128, "n_seq", f"must be in [1, 128], got {self.n_seq}")
        self.require(self.n_batch >= 1, "n_batch", f"must be >= 1, got {self.n_batch}")
        self.require(self.n_threads is None or self.n_threads >= 1, "n_threads", "must be >= 1 or null (every core)")
        self.require(self.prompt_cache_size >= 0, "prompt_cache_size", f"must be >= 0, got {self.prompt_cache_size}")

    def needs(self) -> Optional[tuple[str, str]]:
        return ("llama_cpp", "tts[cpu]")

    def weights(self, run: Config) -> list[tuple[str, Optional[str]]]:
        return [("model.path", run.model.path)]


def build(config: LlamaCppConfig, model: ModelConfig, seed: int) -> LlamaCppPolicy:
    """The llama.cpp policy of `model` (`model.path`: a GGUF file); `seed` is unused (samples follow request seeds)."""
    assert model.path is not None, "LlamaCppConfig.check requires model.path"
    return LlamaCppPolicy(
        os.path.expanduser(model.path),
        n_ctx_seq=config.n_ctx_seq,
        n_seq=config.n_seq,
        n_batch=config.n_batch,
        n_threads=config.n_threads,
        prompt_cache_size=config.prompt_cache_size,
        chat_template=model.chat_template,
        flash_attn=config.flash_attn,
    )
