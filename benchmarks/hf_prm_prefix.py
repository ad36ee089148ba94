"""PRM on transformers: tokens computed and wall time of beam-search-like calls with and without shared-prefix reuse.

One problem, `--parents` parents of `--parent-steps` steps each under a prompt of about `--prompt-tokens` tokens, and
`--children` children per parent (the parent plus one step), scored as beam search scores them: the parents in one call
(every candidate new, they share the prompt), then the children in the next (the memo holds the parents' steps, each
parent's children share it). Each call is scored with `prm.engine.enable_prefix_caching=true` (a token prefix shared
within the call computed once, on top of its KV cache) and `false` (every candidate whole); per call it prints the
tokens given, the tokens computed and the best wall time of `--repeats`.

    python benchmarks/hf_prm_prefix.py                                   # tiny random RLHFlow-format PRM, CPU
    python benchmarks/hf_prm_prefix.py --family rlhflow --prm /models/Llama3.1-8B-PRM-Deepseek-Data --device cuda \\
        --dtype bfloat16 --parents 16 --children 4 --prompt-tokens 300 --parent-steps 8

The tiny model's scores are random and its speed says little about an 8B model's; the token counts are exact.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STEP = "We compute {a} + {b} = {c}, and {c} - {a} = {b}, so the value of x is {c}."


def build_prm(args, path: str, reuse: bool):
    """The family's PRM option (conf/prm/) on `path`, run by the hf engine with shared-prefix reuse on or off."""
    from hydra import compose, initialize_config_dir

    import tts.registry  # noqa: F401 - the schemas conf/prm/ extends
    from tests.tiny_models import PRM_OPTIONS
    from tts.config.validate import validate
    from tts.prms import build_prm as build

    overrides = [f"prm={PRM_OPTIONS[args.family]}", f"prm.path={path}", f"prm.dtype={args.dtype}",
                 "prm.trust_remote_code=false", "prm/engine=hf", f"prm.engine.device={args.device}",
                 f"prm.engine.batch_tokens={args.batch_tokens}", f"prm.engine.enable_prefix_caching={reuse}"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return build(validate(compose(config_name="config", overrides=overrides)).prm)


def problem_text(tokenizer, tokens: int) -> str:
    """A problem statement of about `tokens` tokens."""
    sentence = "Let x be the sum of 12 and 30 minus 7, and let y be three times x. "
    text = "Solve the following math problem efficiently and clearly. "
    while len(tokenizer.encode(text, add_special_tokens=False)) < tokens:
        text += sentence
    return text + "What is y?"


def beam_calls(args, tokenizer) -> tuple[str, list[list[str]], list[list[str]]]:
    """The problem, the parents (first call) and their children (second call)."""
    problem = problem_text(tokenizer, args.prompt_tokens)
    parents = [[STEP.format(a=p, b=k, c=p + k) for k in range(args.parent_steps)] for p in range(args.parents)]
    children = [parent + [STEP.format(a=100 + c, b=p, c=100 + c + p)] for p, parent in enumerate(parents)
                for c in range(args.children)]
    return problem, parents, children


def measure(prm, problem: str, calls: list[list[list[str]]], repeats: int) -> list[tuple[int, int, float]]:
    """(tokens given, tokens computed, best seconds) per call, the calls run in order from an empty memo."""
    from tts.prms.base import PRMStats

    best: list[tuple[int, int, float]] = []
    for _ in range(repeats):
        prm.clear_memo()
        rows = []
        for solutions in calls:
            prm.stats = PRMStats()
            started = time.perf_counter()
            prm.score([problem], [solutions])
            rows.append((prm.stats.tokens, prm.stats.computed_tokens, time.perf_counter() - started))
        best = rows if not best else [(g, c, min(s, old[2])) for (g, c, s), old in zip(rows, best)]
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prm", help="PRM checkpoint directory (default: a tiny random one built here)")
    parser.add_argument("--family", default="rlhflow", choices=["rlhflow", "math_shepherd", "qwen_prm", "skywork"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch-tokens", type=int, default=8192)
    parser.add_argument("--parents", type=int, default=4)
    parser.add_argument("--children", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, default=200)
    parser.add_argument("--parent-steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = args.prm
        if path is None:
            from tests.tiny_models import (save_llama_causal_lm, save_mistral_style_lm, save_qwen_prm,
                                            save_skywork_prm)

            save = {"rlhflow": save_llama_causal_lm, "math_shepherd": save_mistral_style_lm,
                    "qwen_prm": save_qwen_prm, "skywork": save_skywork_prm}[args.family]
            path = str(save(Path(tmp) / args.family))
        results = {}
        for reuse in (False, True):
            prm = build_prm(args, path, reuse)
            problem, parents, children = beam_calls(args, prm.tokenizer)
            results[reuse] = measure(prm, problem, [parents, children], args.repeats)
            prm.close()
    print(f"{args.family} PRM, {args.parents} parents x {args.children} children, prompt ~{args.prompt_tokens} "
          f"tokens, {args.parent_steps} parent steps, device {args.device}, best of {args.repeats}")
    print(f"{'call':<10} {'given':>7} {'computed off':>13} {'computed on':>12} {'s off':>8} {'s on':>8}")
    for name, off, on in zip(("parents", "children"), results[False], results[True]):
        print(f"{name:<10} {off[0]:>7} {off[1]:>13} {on[1]:>12} {off[2]:>8.3f} {on[2]:>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
