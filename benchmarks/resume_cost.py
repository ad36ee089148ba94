"""What finishing (or resuming) a huge run costs once its records are on disk, and how many bytes they take.

For each size (default 500 x 256 and 2,500 x 256: problems x samples) the benchmark writes a complete run directory
of synthesized records, then times `run(cfg)` on it: the rerun a requeued SLURM job makes, which finds every problem
done, checks every batch and writes metrics.json. Beside it, the one-file format of older versions (results.jsonl):
its exact size, and the time to parse every line once (the old code parsed the whole file twice per finish, at open
and again for the metrics, and kept every record in memory; the figure here is one parse, records dropped as parsed,
so it is a lower bound).

Records are real sim records (a short n=256 run), cloned onto the problems of the synthetic dataset, so their size and
text are realistic; the search itself is not run at these sizes. Memory stays bounded: one batch in memory at a time.

    python benchmarks/resume_cost.py                       # 500 x 256 and 2,500 x 256
    python benchmarks/resume_cost.py --sizes 100 --n 64    # quick
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tts.config.validate import validate  # noqa: E402
from tts.pipeline import load_run_config, run  # noqa: E402
from tts.data.records import ProblemRecord  # noqa: E402
from tts.store.readers import run_metrics  # noqa: E402
from tts.store.writer import RunDirectory  # noqa: E402

TEMPLATES = 16  # real records the synthesized ones are cloned from


def compose_config(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def templates(n: int, workdir: Path) -> list[ProblemRecord]:
    """A few real records of an n-sample sim run."""
    run(compose_config([f"n={n}", f"dataset.num_problems={TEMPLATES}", "logger=none"]), run_dir=workdir / "template")
    return RunDirectory(workdir / "template").records()


def synthesized(problems, source: list[ProblemRecord]):
    """One record per problem, cloned from the templates (shallow copies: nothing is mutated)."""
    for i, problem in enumerate(problems):
        yield dataclasses.replace(source[i % len(source)], **problem.as_dict())


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(size: int, n: int, batch_size: int, source: list[dict], workdir: Path) -> dict:
    overrides = [f"n={n}", f"dataset.num_problems={size}", "logger=none", f"batch_size={batch_size}"]
    cfg = compose_config(overrides)
    # the config a run records, with the problems' hash, as run(cfg) opens it
    problems, config = load_run_config(validate(cfg))
    run_dir = workdir / f"run{size}"
    directory = RunDirectory(run_dir)
    directory.open(config)
    old_bytes, old_parse, write_s = 0, 0.0, 0.0
    records = list(synthesized(problems, source))  # shallow clones: the templates' nested data is shared
    for start in range(0, size, batch_size):
        batch = records[start : start + batch_size]
        old_bytes, old_parse = _old_format(batch, old_bytes, old_parse)
        started = time.perf_counter()
        directory.append(batch)
        write_s += time.perf_counter() - started
    directory.close()
    results_bytes = directory_bytes(run_dir / "results")

    started = time.perf_counter()
    metrics = run(cfg, run_dir=run_dir)  # the rerun: every problem done, every batch checked, metrics.json written
    finish_s = time.perf_counter() - started
    assert metrics["problems"] == size, metrics["problems"]

    started = time.perf_counter()  # the parts of it: checking the batches, metrics from the index
    summaries = RunDirectory(run_dir).open(config)
    check_s = time.perf_counter() - started
    started = time.perf_counter()
    run_metrics([summaries[p.unique_id] for p in problems], n)
    metrics_s = time.perf_counter() - started
    shutil.rmtree(run_dir)
    return {"problems": size, "n": n, "new_bytes": results_bytes, "old_bytes": old_bytes, "finish_s": finish_s,
            "check_s": check_s, "metrics_s": metrics_s, "old_parse_s": old_parse, "write_s": write_s}


def _old_format(batch: list[ProblemRecord], total_bytes: int, parse_s: float) -> tuple[int, float]:
    """Size of these records as results.jsonl lines, and the time to parse those lines back (no disk involved)."""
    lines = [json.dumps(r.to_json(), ensure_ascii=False).encode("utf-8") + b"\n" for r in batch]
    started = time.perf_counter()
    for line in lines:
        json.loads(line)
    return total_bytes + sum(len(line) for line in lines), parse_s + time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2500], help="problems per run")
    parser.add_argument("--n", type=int, default=256, help="samples per problem")
    parser.add_argument("--batch-size", type=int, default=64, help="problems per batch (the config's default)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="resume-cost-"))
    try:
        source = templates(args.n, workdir)
        print(f"records cloned from {len(source)} real sim records, n={args.n}; batch_size={args.batch_size}")
        print(f"{'problems':>9} {'results/ MB':>12} {'results.jsonl MB':>17} {'smaller':>8} {'finish s':>9} "
              f"{'(check s':>9} {'metrics s)':>10} {'old parse s':>12} {'write s':>8}")
        for size in args.sizes:
            m = measure(size, args.n, args.batch_size, source, workdir)
            print(f"{m['problems']:>9} {m['new_bytes'] / 1e6:>12.1f} {m['old_bytes'] / 1e6:>17.1f} "
                  f"{m['old_bytes'] / m['new_bytes']:>7.1f}x {m['finish_s']:>9.2f} {m['check_s']:>9.2f} "
                  f"{m['metrics_s']:>10.2f} {m['old_parse_s']:>12.2f} {m['write_s']:>8.1f}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
