"""Time the search strategies on the simulated world: the search alone, and the whole job (search + grading + scoring
+ saving), per (strategy, N), with an optional profile of the search's hot spots.

    python benchmarks/search_sweep.py                                   # beam, dvts at N = 4 .. 256 on 500 problems
    python benchmarks/search_sweep.py --strategies beam --n 256 --num-problems 100 --profile
    python benchmarks/search_sweep.py --pipeline                        # also time run(cfg) end to end per job

CPU seconds are reported beside wall seconds because the machine may be shared: CPU time is what the job costs, wall
time is what it took on a busy machine.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import tts.registry  # noqa: E402,F401  # registers the schemas
from tts.backends import build_policy  # noqa: E402
from tts.data import load_problems  # noqa: E402
from tts.prms import build_prm  # noqa: E402
from tts.config.validate import validate  # noqa: E402
from tts.search import build_strategy  # noqa: E402
from tts.search.base import RunSpec  # noqa: E402


def compose_config(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def time_search(composed, profile: bool) -> dict:
    """Run the strategy over the dataset in `batch_size` batches, as the pipeline does, without grading or saving."""
    cfg = validate(composed)
    problems = load_problems(cfg.dataset)
    policy, prm = build_policy(cfg.model, cfg.seed), build_prm(cfg.prm)
    search, spec = build_strategy(cfg.strategy).search, RunSpec.of(cfg)
    profiler = cProfile.Profile() if profile else None
    wall, cpu = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    for start in range(0, len(problems), cfg.batch_size):
        search(problems[start : start + cfg.batch_size], policy, prm, spec)
    if profiler:
        profiler.disable()
    result = {"search_wall_s": time.perf_counter() - wall, "search_cpu_s": time.process_time() - cpu,
              "backend_calls": policy.stats.calls, "generated_tokens": policy.stats.generated_tokens,
              "prm_tokens": prm.stats.tokens, "prm_calls": prm.stats.calls}
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
        result["profile"] = out.getvalue()
    return result


def time_pipeline(cfg) -> dict:
    from tts.pipeline import run

    wall, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        run(cfg, run_dir=Path(tmp))
    return {"job_wall_s": time.perf_counter() - wall, "job_cpu_s": time.process_time() - cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", default="beam,dvts")
    parser.add_argument("--n", default="4,16,64,256")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-problems", type=int, default=500)
    parser.add_argument("--profile", action="store_true", help="print the search's top functions by own time")
    parser.add_argument("--pipeline", action="store_true", help="also time the whole job (run(cfg))")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = parser.parse_args()
    print(f"{'strategy':10s} {'N':>4s} {'search wall':>12s} {'search cpu':>11s} {'job wall':>9s} {'job cpu':>8s} "
          f"{'calls':>6s} {'gen tokens':>11s} {'prm tokens':>11s}")
    for strategy in args.strategies.split(","):
        for n in (int(x) for x in args.n.split(",")):
            cfg = compose_config([f"strategy={strategy}", f"n={n}", f"seed={args.seed}", "logger=none",
                                  f"dataset.num_problems={args.num_problems}", *args.overrides])
            row = time_search(cfg, args.profile)
            if args.pipeline:
                row.update(time_pipeline(cfg))
            print(f"{strategy:10s} {n:4d} {row['search_wall_s']:12.1f} {row['search_cpu_s']:11.1f} "
                  f"{row.get('job_wall_s', float('nan')):9.1f} {row.get('job_cpu_s', float('nan')):8.1f} "
                  f"{row['backend_calls']:6d} {row['generated_tokens']:11d} {row['prm_tokens']:11d}", flush=True)
            if args.profile:
                print(row["profile"])


if __name__ == "__main__":
    main()
