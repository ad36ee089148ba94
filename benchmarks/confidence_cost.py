"""What token confidence costs a run: bytes each completion's record gains, and time (sim arrays, summaries, scoring).

    python benchmarks/confidence_cost.py                     # best-of-N n=256 on 20 synthetic problems
    python benchmarks/confidence_cost.py --n 64 --problems 50

Runs the same best-of-N search twice on the simulated world, with `model.top_logprobs=5` (every completion carries
its confidence summary, scored by the confidence aggregations) and with `model.top_logprobs=0` (none), and prints:
the JSON bytes per completion each record holds and the difference (the `confidence` entry), the gzip'd batch bytes
per completion, and the wall time of each run. The texts and all other figures are the same in both runs.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import compose_config  # noqa: E402
from tts.pipeline import run  # noqa: E402
from tts.store.writer import RunDirectory  # noqa: E402


def measure(n: int, problems: int, top_logprobs: int, root: Path) -> dict:
    run_dir = root / f"k{top_logprobs}"
    overrides = [f"n={n}", f"dataset.num_problems={problems}", f"model.top_logprobs={top_logprobs}", "logger=none"]
    started = time.perf_counter()
    metrics = run(compose_config(overrides), run_dir=run_dir)
    seconds = time.perf_counter() - started
    completions = [c for r in RunDirectory(run_dir).records() for c in r.completions]
    plain = sum(len(json.dumps(c.to_json())) for c in completions)
    confidence = sum(len(json.dumps(c.confidence)) + len(', "confidence": ') for c in completions if c.confidence)
    gz = sum(len(p.read_bytes()) for p in (run_dir / "results").glob("batch-*.jsonl.gz"))
    raw = sum(len(gzip.decompress(p.read_bytes())) for p in (run_dir / "results").glob("batch-*.jsonl.gz"))
    steps = sum(len(c.steps) for c in completions) / len(completions)
    return {
        "completions": len(completions),
        "json_bytes_per_completion": plain / len(completions),
        "confidence_bytes_per_completion": confidence / len(completions),
        "batch_bytes_per_completion": raw / len(completions),
        "gzip_bytes_per_completion": gz / len(completions),
        "steps_per_completion": steps,
        "seconds": seconds,
        "aggregations": sorted({k.split("/")[1].split("@")[0] for k in metrics if k.startswith("acc/")}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--problems", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        with_conf = measure(args.n, args.problems, 5, Path(tmp))
        without = measure(args.n, args.problems, 0, Path(tmp))
    print(f"best_of_n n={args.n}, {args.problems} synthetic problems, {with_conf['completions']} completions")
    print(f"  steps per completion            {with_conf['steps_per_completion']:.2f}")
    print(f"  confidence entry, JSON bytes    {with_conf['confidence_bytes_per_completion']:.1f} per completion")
    for label, key in (
        ("batch JSON bytes", "batch_bytes_per_completion"),
        ("gzip'd bytes", "gzip_bytes_per_completion"),
    ):
        print(
            f"  {label:<31} {with_conf[key]:.1f} with, {without[key]:.1f} without "
            f"(+{with_conf[key] - without[key]:.1f} per completion)"
        )
    print(f"  run wall time                   {with_conf['seconds']:.1f} s with, {without['seconds']:.1f} s without")
    print(f"  aggregations with               {', '.join(with_conf['aggregations'])}")


if __name__ == "__main__":
    main()
