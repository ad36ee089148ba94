"""Throughput of the transformers (hf) backend on a random model of realistic shape, built on the GPU itself.

    python benchmarks/gpu_throughput.py                 # Llama-3.2-1B shape, bf16, on the GPU (skips without one)
    python benchmarks/gpu_throughput.py --tiny          # a tiny shape on CPU: checks the script end to end
    python benchmarks/gpu_throughput.py --json out.json --n 16 --problems 4 --max-tokens 256

Measures, for the same number of generated tokens:
  * best-of-N through `HFPolicy.generate` (n samples per problem, one call);
  * beam-search-like stepwise generation through `HFPolicy.generate` (every iteration continues each beam from its
    text so far, `--step-tokens` per step: the prompt + prefix is prefilled again each iteration, as the hf backend
    has no cross-call prefix cache);
  * raw batched `model.generate` (sampling, fixed length) as the ceiling;
and, for an RLHFlow-format PRM (random weights, same shape unless --prm-tiny) scoring the beams after every iteration,
the tokens it encoded (with the prefix memo) against the unique prefix tokens (what a perfect prefix cache would
encode) and against scoring every solution from scratch.

The weights are random (nothing is downloaded); a word-level tokenizer with the full vocabulary size stands in for
the real one, so every sampled id decodes. Random models rarely emit EOS or the step separator, so every sequence
runs to its token limit: the token counts are exact and equal across the three generation paths.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LLAMA_32_1B = dict(  # meta-llama/Llama-3.2-1B-Instruct config.json (shape only)
    vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
    num_key_value_heads=8, max_position_embeddings=131072, rope_theta=500000.0, tie_word_embeddings=True,
    rms_norm_eps=1e-5,
)
TINY = dict(vocab_size=4096, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True)
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def word_tokenizer(vocab_size: int):
    """A word-level tokenizer with exactly `vocab_size` ids: "+", "-", the Llama 3 specials, then w0, w1, ..."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from tts.backends.chat_templates import load_chat_template

    words = ["+", "-", "[UNK]"]
    vocab = {w: i for i, w in enumerate(words)}
    first_special = vocab_size - len(SPECIALS)
    for i in range(len(words), first_special):
        vocab[f"w{i}"] = i
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                   pad_token="<|end_of_text|>", unk_token="[UNK]",
                                   chat_template=load_chat_template("llama3"))
    fast.add_special_tokens({"additional_special_tokens": SPECIALS[2:4]})
    assert len(fast) == vocab_size, (len(fast), vocab_size)
    return fast


def random_llama(shape: dict, device: str, dtype, seed: int):
    """Random weights allocated directly on `device` (no CPU copy of a 1B model)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(**shape, bos_token_id=shape["vocab_size"] - 5, eos_token_id=shape["vocab_size"] - 1)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def problems_text(tokenizer, count: int, words: int = 60) -> list[str]:
    import random

    rng = random.Random(0)
    vocab = [w for w in tokenizer.get_vocab() if w.startswith("w")]
    return [" ".join(rng.choice(vocab) for _ in range(words)) for _ in range(count)]


def bench_best_of_n(policy, problems, n, max_tokens, device):
    from tts.backends import GenerationRequest

    requests = [GenerationRequest([{"role": "user", "content": p}], n=n, temperature=0.8, max_tokens=max_tokens,
                                  stop=["\n\n"], seed=i) for i, p in enumerate(problems)]
    before = policy.stats.generated_tokens
    sync(device)
    t0 = time.perf_counter()
    policy.generate(requests)
    sync(device)
    seconds = time.perf_counter() - t0
    tokens = policy.stats.generated_tokens - before
    return dict(tokens=tokens, seconds=seconds, tokens_per_s=tokens / seconds)


def bench_stepwise(policy, problems, beams, iterations, step_tokens, device, prm=None):
    """Beam-like: every iteration extends each beam by one step (continuing its prefix); the PRM scores all beams."""
    from tts.backends import GenerationRequest

    texts = {(i, b): "" for i in range(len(problems)) for b in range(beams)}
    steps = {key: [] for key in texts}
    before = policy.stats.generated_tokens
    prm_seconds = 0.0
    sync(device)
    t0 = time.perf_counter()
    for it in range(iterations):
        keys = list(texts)
        requests = [GenerationRequest([{"role": "user", "content": problems[i]}], prefix=texts[(i, b)], n=1,
                                      temperature=0.8, max_tokens=step_tokens, stop=["\n\n"], seed=1000 * it + b)
                    for i, b in keys]
        outs = policy.generate(requests)
        for key, [out] in zip(keys, outs):
            texts[key] += out.text + "\n\n"
            steps[key].append(out.text.strip() or "w3")
        if prm is not None:
            sync(device)
            p0 = time.perf_counter()
            prm.score(problems, [[steps[(i, b)] for b in range(beams)] for i in range(len(problems))])
            sync(device)
            prm_seconds += time.perf_counter() - p0
    sync(device)
    seconds = time.perf_counter() - t0 - prm_seconds
    tokens = policy.stats.generated_tokens - before
    return dict(tokens=tokens, seconds=seconds, tokens_per_s=tokens / seconds, prm_seconds=prm_seconds), steps


def bench_raw_generate(model, tokenizer, problems, n, max_tokens, batch_size, device):
    import torch

    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                             add_generation_prompt=True) for p in problems for _ in range(n)]
    tokenizer.padding_side = "left"
    tokens = 0
    sync(device)
    t0 = time.perf_counter()
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(prompts[start:start + batch_size], add_special_tokens=False, padding=True,
                          return_tensors="pt").to(device)
        with torch.inference_mode():
            out = model.generate(**batch, do_sample=True, temperature=0.8, top_p=1.0, max_new_tokens=max_tokens,
                                 min_new_tokens=max_tokens, pad_token_id=tokenizer.pad_token_id)
        tokens += (out.shape[1] - batch["input_ids"].shape[1]) * out.shape[0]
    sync(device)
    seconds = time.perf_counter() - t0
    return dict(tokens=tokens, seconds=seconds, tokens_per_s=tokens / seconds)


def unique_prefix_tokens(sequences) -> int:
    """Distinct token prefixes over all sequences (nodes of their trie): what a perfect prefix cache would encode."""
    root: dict = {}
    nodes = 0
    for seq in sequences:
        node = root
        for token in seq:
            if token not in node:
                node[token] = {}
                nodes += 1
            node = node[token]
    return nodes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shape on CPU (smoke test of the script)")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on GPU, float32 on CPU")
    parser.add_argument("--problems", type=int, default=4)
    parser.add_argument("--n", type=int, default=16, help="best-of-N samples / beams per problem")
    parser.add_argument("--max-tokens", type=int, default=256, help="best-of-N and raw generate: tokens per sample")
    parser.add_argument("--step-tokens", type=int, default=64, help="stepwise: tokens per step")
    parser.add_argument("--iterations", type=int, default=4, help="stepwise: steps per beam")
    parser.add_argument("--batch-size", type=int, default=64, help="hf backend model.backend.batch_size")
    parser.add_argument("--prm-batch-tokens", type=int, default=16384)
    parser.add_argument("--no-prm", action="store_true")
    parser.add_argument("--prm-tiny", action="store_true", help="a small PRM instead of a second 1B model")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args(argv)

    import torch

    device = args.device or ("cpu" if args.tiny else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_throughput: no CUDA GPU here; skipping (run with --tiny for the CPU smoke version)")
        return 0
    if args.tiny:
        args.problems, args.n = min(args.problems, 2), min(args.n, 4)
        args.max_tokens, args.step_tokens, args.iterations = min(args.max_tokens, 16), min(args.step_tokens, 8), \
            min(args.iterations, 3)
    from tts.backends.hf import HFPolicy, resolve_dtype

    dtype = resolve_dtype(args.dtype or "auto", device)
    shape = TINY if args.tiny else LLAMA_32_1B
    tokenizer = word_tokenizer(shape["vocab_size"])
    t0 = time.perf_counter()
    model = random_llama(shape, device, dtype, seed=0)
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    policy = HFPolicy(model, tokenizer, batch_size=args.batch_size, device=device)
    policy.eos_token_ids = set()  # random weights: run every sequence to its limit so token counts match
    problems = problems_text(tokenizer, args.problems)
    info = dict(device=torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu", dtype=str(dtype),
                params=params, build_seconds=round(build_s, 2), problems=args.problems, n=args.n,
                max_tokens=args.max_tokens, step_tokens=args.step_tokens, iterations=args.iterations,
                batch_size=args.batch_size, torch=torch.__version__)
    print(json.dumps(info))

    bench_best_of_n(policy, problems[:1], 2, 4, device)  # warm-up (allocator, kernels)
    results: dict = {"info": info}
    results["best_of_n_hf"] = bench_best_of_n(policy, problems, args.n, args.max_tokens, device)
    print("best-of-N  hf backend :", json.dumps(results["best_of_n_hf"]))
    results["raw_generate"] = bench_raw_generate(model, tokenizer, problems, args.n, args.max_tokens,
                                                 args.batch_size, device)
    print("raw model.generate    :", json.dumps(results["raw_generate"]))

    prm = None
    if not args.no_prm:
        from tts.prms.hf_engine import HFPRMEngine, HFPRMEngineConfig
        from tts.prms.rlhflow import RLHFlowConfig, RLHFlowPRM

        prm_shape = TINY if (args.tiny or args.prm_tiny) else LLAMA_32_1B
        prm_tok = tokenizer if prm_shape is shape else word_tokenizer(prm_shape["vocab_size"])
        engine = HFPRMEngineConfig(device=device, batch_tokens=args.prm_batch_tokens)
        cfg = RLHFlowConfig(name="random-rlhflow", path="-", engine=engine)
        prm_model = random_llama(prm_shape, device, dtype, seed=1)
        prm = RLHFlowPRM(cfg, tokenizer=prm_tok, engine=HFPRMEngine(engine, prm_model, device))
    stepwise, steps = bench_stepwise(policy, problems, args.n, args.iterations, args.step_tokens, device, prm)
    results["stepwise_hf"] = stepwise
    print("stepwise   hf backend :", json.dumps(stepwise))
    if prm is not None:
        # every prefix the search scored, as the PRM encodes it
        encoded = [prm.encode(problems[i], steps[(i, b)][:k]).ids for (i, b) in steps
                   for k in range(1, args.iterations + 1)]
        from_scratch = sum(len(e) for e in encoded)
        results["prm"] = dict(tokens_encoded=prm.stats.tokens, tokens_computed=prm.stats.computed_tokens,
                              unique_prefix_tokens=unique_prefix_tokens(encoded),
                              tokens_without_memo=from_scratch, memo_hits=prm.stats.memo_hits,
                              forward_calls=prm.engine.forward_calls, seconds=round(stepwise["prm_seconds"], 3),
                              tokens_per_s=prm.stats.tokens / max(stepwise["prm_seconds"], 1e-9))
        print("PRM (rlhflow format)  :", json.dumps(results["prm"]))
    ratio = results["best_of_n_hf"]["tokens_per_s"] / results["raw_generate"]["tokens_per_s"]
    results["hf_over_raw"] = ratio
    print(f"hf backend best-of-N throughput = {ratio:.2f} x raw model.generate")
    if device.startswith("cuda"):
        results["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
