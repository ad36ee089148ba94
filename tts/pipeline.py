"""`run(cfg)`: one experiment, top to bottom. validate (the typed config) -> seed -> data -> run dir (resume) ->
models -> search -> grade -> score -> save per batch -> metrics -> track.

Tests and notebooks call `run(cfg)` on a composed config; `tts/main.py` is only the Hydra entry point.
"""

from __future__ import annotations

import logging
import random
import time
import zlib
from pathlib import Path
from typing import Optional

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from tts.config.redaction import redact
from tts.config.schema import Config, to_container
from tts.config.validate import validate
from tts.data import load_problems_and_identity
from tts.data.records import ProblemRecord
from tts.grading import AnswerGrader, extract_answer_with_rule
from tts.launch.model_cache import acquire_policy, acquire_prm, release_job_models
from tts.launch.preflight import check_before_generation
from tts.launch.sweep import write_hydra_files
from tts.scoring import AGGREGATIONS, reduce_scores, score_problem
from tts.search import build_strategy
from tts.search.base import SearchOutput, share_tokens
from tts.store.run_dir import RunDirectory, config_hash, fingerprint_of, run_info, run_metrics
from tts.tracking.tracker import build_tracker

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    import sys

    if "torch" in sys.modules:  # only when a real backend has pulled torch in; the sim path never imports it
        sys.modules["torch"].manual_seed(seed)


def output_dir() -> Path:
    """Hydra's run directory when launched through Hydra, else `./outputs/run`."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return Path("outputs/run")


def grade_batch(problems, outputs: list[SearchOutput], grader: AnswerGrader, cfg: Config) -> list[ProblemRecord]:
    """Run records of one batch: answers, keys and correctness for every completion, then predictions per problem.

    All answers of the batch go to the grader at once, so symbolic work costs one round trip to its worker.
    """
    lenient = cfg.scoring.lenient_extraction
    extracted = [[extract_answer_with_rule(c.text, lenient) for c in o.completions] for o in outputs]
    answers = [[a for a, _ in per] for per in extracted]
    flat_keys = grader.keys([a for per in answers for a in per])
    keys, offset = [], 0
    for per in answers:
        keys.append(flat_keys[offset : offset + len(per)])
        offset += len(per)
    # one grade per distinct key and problem: members of a key group are equivalent
    to_grade = [
        (i, key, answer)
        for i, (per_a, per_k) in enumerate(zip(answers, keys))
        for key, answer in dict(zip(per_k, per_a)).items()
        if key is not None
    ]
    verdicts = grader.grade_many([a for _, _, a in to_grade], [problems[i].answer for i, _, _ in to_grade])
    key_correct: list[dict[str, Optional[bool]]] = [{} for _ in problems]
    ungraded = [0] * len(problems)
    for (i, graded_key, _), verdict in zip(to_grade, verdicts):
        key_correct[i][graded_key] = verdict
        ungraded[i] += verdict is None
    records = []
    reduction = cfg.scoring.reduction
    for i, (problem, output) in enumerate(zip(problems, outputs)):
        scores = [reduce_scores(c.step_scores, reduction) for c in output.completions]
        # each completion's answer, key, extraction rule and own verdict (W&B's completions table filters on it)
        for completion, answer, key, (_, rule) in zip(output.completions, answers[i], keys[i], extracted[i]):
            completion.answer, completion.key, completion.answer_rule = answer, key, rule
            completion.correct = key_correct[i].get(key) if key is not None else False
        # a strategy may restrict who votes in "maj" (filter-vote): Completion.extra["vote"] = False keeps one out
        vote_mask = (
            [c.extra.get("vote", True) for c in output.completions]
            if any("vote" in c.extra for c in output.completions)
            else None
        )
        # an adaptive strategy (deepconf, esc) gives each completion its vote weight: its own answer is scored "final"
        final_weights = (
            [float(c.extra.get("weight", 0.0)) for c in output.completions]
            if any("weight" in c.extra for c in output.completions)
            else None
        )
        records.append(
            ProblemRecord.graded(
                problem,
                output.completions,
                score_problem(
                    keys[i],
                    answers[i],
                    key_correct[i],
                    scores,
                    draws=cfg.scoring.subset_draws,
                    seed=cfg.seed + hash_id(problem.unique_id),
                    vote_mask=vote_mask,
                    final_weights=final_weights,
                ),
                compute=dict(output.compute),
                ungraded_answers=ungraded[i],
                note=output.note,
            )
        )
    return records


def hash_id(unique_id: str) -> int:
    """A stable small integer per problem (Python's hash() is salted per process)."""
    return zlib.crc32(unique_id.encode())


def load_run_config(run: Config) -> tuple[list, dict]:
    """The loaded problems, and the config a run directory records: the typed config plus the problems' hash (a
    run's identity includes its data, not only the file name)."""
    config = to_container(run)
    problems, config["dataset"]["problems_sha256"] = load_problems_and_identity(run.dataset)
    return problems, config


def run(cfg: DictConfig, run_dir: Optional[Path] = None) -> dict:
    """Run one configuration; returns the metrics (also written to `metrics.json`)."""
    run_cfg = validate(cfg)  # typed from here on
    seed_everything(run_cfg.seed)
    problems, config = load_run_config(run_cfg)
    check_before_generation(run_cfg, problems)
    directory = RunDirectory(run_dir or output_dir())
    done = directory.open(config)
    info = run_info(run_cfg.seed, config_hash(fingerprint_of(config)))
    directory.write_config(OmegaConf.to_yaml(redact(config)), info)
    write_hydra_files(cfg, directory.path)
    todo = [p for p in problems if p.unique_id not in done]
    log.info("%d problems, %d already recorded in %s", len(problems), len(problems) - len(todo), directory.path)

    tracker = build_tracker(run_cfg.logger)
    policy = prm = grader = None
    try:
        tracker.start(
            config, directory.path, [done[p.unique_id] for p in problems if p.unique_id in done], total=len(problems)
        )
        if todo:
            strategy = build_strategy(run_cfg.strategy)
            policy = acquire_policy(run_cfg.model, run_cfg.seed)  # hf / vLLM: built once per process
            prm = acquire_prm(run_cfg.prm)
            grader = AnswerGrader(timeout=run_cfg.scoring.grading_timeout)
            started = time.perf_counter()
            with tqdm(total=len(todo), desc=f"{run_cfg.strategy.name} n={run_cfg.n}", unit="problem") as bar:
                for start in range(0, len(todo), run_cfg.batch_size):
                    batch = todo[start : start + run_cfg.batch_size]
                    calls_before, cached_before = policy.stats.calls, prm.stats.cached_tokens
                    outputs = strategy.search(batch, policy, prm, run_cfg)
                    _check_budget(batch, outputs, run_cfg.n)
                    records = grade_batch(batch, outputs, grader, run_cfg)
                    share = (policy.stats.calls - calls_before) / len(batch)
                    for record in records:
                        record.compute["backend_calls_share"] = share
                    share_cached_prm_tokens(records, prm.stats.cached_tokens - cached_before)
                    directory.append(records)
                    tracker.log_batch(records)
                    prm.clear_memo()
                    bar.update(len(batch))
            log.info("searched %d problems in %.1f s", len(todo), time.perf_counter() - started)
        # metrics.json from the index's per-problem scores: finishing a huge run never reads its completions back
        summaries = directory.summaries()
        metrics = run_metrics([summaries[p.unique_id] for p in problems if p.unique_id in summaries], run_cfg.n)
        directory.write_metrics(metrics)
        _print_summary(metrics, run_cfg, directory.path)
        tracker.log_results(_in_order(directory, problems) if tracker.wants_records else [], metrics, directory)
        return metrics
    finally:
        tracker.finish()
        release_job_models(policy, prm)
        for closable in (grader, directory):
            if closable is not None:
                closable.close()


def _in_order(directory: RunDirectory, problems) -> list[ProblemRecord]:
    """The run's whole records in dataset order (for a tracker that logs them)."""
    by_id = {r.unique_id: r for r in directory.iter_records()}
    return [by_id[p.unique_id] for p in problems if p.unique_id in by_id]


def share_cached_prm_tokens(records: list[ProblemRecord], cached: int) -> None:
    """`compute.prm_cached_tokens`: the batch's PRM tokens served from the prefix cache, split like its PRM tokens."""
    shares = share_tokens(cached, [r.compute.get("prm_tokens", 0) for r in records])
    for record, share in zip(records, shares):
        record.compute["prm_cached_tokens"] = share


def _check_budget(batch, outputs, n: int) -> None:
    """Budget fairness: every problem gets exactly n completions, or fewer only with a recorded reason."""
    if len(outputs) != len(batch):
        raise RuntimeError(f"strategy returned {len(outputs)} results for {len(batch)} problems")
    for problem, output in zip(batch, outputs):
        if len(output.completions) > n or (len(output.completions) < n and not output.note):
            raise RuntimeError(
                f"strategy returned {len(output.completions)} completions for {problem.unique_id}, n={n}"
            )


def _print_summary(metrics: dict, cfg: Config, path: Path) -> None:
    n = cfg.n
    # nan: no problem has n completions (an adaptive strategy that stopped early everywhere)
    figure = {name: metrics.get(name, float("nan")) for name in (*(f"acc/{a}@{n}" for a in AGGREGATIONS), f"pass@{n}")}
    line = "  ".join(f"{agg} {figure[f'acc/{agg}@{n}']:.3f}" for agg in AGGREGATIONS)
    if "acc/final" in metrics:  # an adaptive strategy: its own answer, and the traces it drew per problem
        line += f"  final {metrics['acc/final']:.3f} ({metrics.get('traces/generated', 0):.1f} traces)"
    print(
        f"[{cfg.strategy.name} n={n} seed={cfg.seed}] accuracy@{n}: {line}  pass@{n} {figure[f'pass@{n}']:.3f}  "
        f"({int(metrics['problems'])} problems, {int(metrics['tokens/generated'])} tokens) -> {path}"
    )
