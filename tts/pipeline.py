"""`run(cfg)`: one experiment, top to bottom. validate (the typed config) -> seed -> data -> run dir (resume) ->
models -> search -> grade -> score -> save as problems finish -> metrics -> track.

A long run can be watched and stopped: a progress line every `progress_every` seconds (problems saved, tokens/s, time
left) whatever the backend; each problem is saved as soon as its strategy hands it over (`Strategy.report_finished`;
the tree searches do as each problem's search ends, the others per `search_batch_size` chunk), else when its batch
ends; SIGTERM or SIGINT keeps every saved problem, logs one line saying how many and where, and exits with status
128 + the signal's number (143, 130). Rerunning the same command resumes (tts/store/writer.py).

Tests and notebooks call `run(cfg)` on a composed config; `tts/main.py` is only the Hydra entry point.
"""

from __future__ import annotations

import logging
import random
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

import tts.registry  # noqa: F401 - every component's config is the schema of its options before Hydra composes
from tts.config.redaction import redact, redact_text
from tts.config.schema import Config, to_container
from tts.config.validate import validate
from tts.data import load_problems_and_identity
from tts.data.problem import stable_hash
from tts.data.records import ProblemRecord
from tts.grading import AnswerGrader, extract_answer_with_rule
from tts.runtime.hydra_record import write_hydra_files
from tts.runtime.model_cache import acquire_policy, acquire_prm, release_job_models
from tts.runtime.preflight import check_before_generation, foreign_problems
from tts.runtime.progress import Progress
from tts.runtime.signals import Stopped, StopSignal, StopSignals
from tts.scoring import FOREIGN_PRM_METRIC, ScoringSettings, registered, reported_aggregations, score_problem
from tts.search import build_strategy
from tts.search.base import RunSpec, SearchOutput, share_tokens
from tts.store.provenance import config_hash, fingerprint_of, run_info
from tts.store.readers import run_metrics
from tts.store.writer import RunDirectory
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
    flat_keys = iter(grader.keys([a for per in answers for a in per]))
    keys = [[next(flat_keys) for _ in per] for per in answers]  # split back per problem
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
    scoring = cfg.scoring
    settings = ScoringSettings(
        draws=scoring.subset_draws,
        reduction=scoring.reduction,
        deepconf_eta=tuple(scoring.deepconf_eta),
        deepconf_measure=scoring.deepconf_measure,
        borda_power=scoring.borda_power,
        prm_scored=cfg.prm.scores,
    )
    for i, (problem, output) in enumerate(zip(problems, outputs)):
        # each completion's answer, key, extraction rule and own verdict: what scoring reads (and W&B's completions
        # table filters on)
        for completion, answer, key, (_, rule) in zip(output.completions, answers[i], keys[i], extracted[i]):
            completion.answer, completion.key, completion.answer_rule = answer, key, rule
            completion.correct = key_correct[i].get(key) if key is not None else False
        records.append(
            ProblemRecord.graded(
                problem,
                output.completions,
                score_problem(output.completions, replace(settings, seed=cfg.seed + stable_hash(problem.unique_id))),
                compute=output.compute.as_dict(),
                ungraded_answers=ungraded[i],
                note=output.note,
            )
        )
    return records


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
    info = run_info(run_cfg.seed, config_hash(fingerprint_of(config)), run_cfg)
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
            try:
                with StopSignals() as signals:  # from here on a stop signal keeps what is saved and says so
                    strategy = build_strategy(run_cfg.strategy)
                    policy = acquire_policy(run_cfg.model, run_cfg.seed)  # hf / vLLM: built once per process
                    prm = acquire_prm(run_cfg.prm)
                    grader = AnswerGrader(timeout=run_cfg.scoring.grading_timeout)
                    _search_all(todo, strategy, policy, prm, grader, directory, tracker, run_cfg, signals)
            except StopSignal as stop:
                kept = len(directory.summaries())
                log.warning(
                    "stopped by %s: kept %d of %d problems (%d finished in this run) in %s; rerun the same command "
                    "to resume",
                    signal.Signals(stop.signum).name,
                    kept,
                    len(problems),
                    kept - (len(problems) - len(todo)),
                    directory.results_dir,
                )
                raise Stopped(128 + stop.signum) from None
        # metrics.json from the index's per-problem scores: finishing a huge run never reads its completions back
        summaries = directory.summaries()
        metrics = run_metrics([summaries[p.unique_id] for p in problems if p.unique_id in summaries], run_cfg.n)
        if run_cfg.prm.synthetic_only and run_cfg.prm.judges_foreign_problems():
            # the simulated PRM judged problems it did not generate (allowed by prm.allow_foreign): flag it everywhere
            metrics[FOREIGN_PRM_METRIC] = float(len(foreign_problems(problems)))
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


def _search_all(todo, strategy, policy, prm, grader, directory, tracker, cfg: Config, signals) -> None:
    """Search `todo` batch by batch, saving each problem as soon as the strategy hands it over (else at batch end)."""
    started = time.perf_counter()
    with (
        tqdm(total=len(todo), desc=redact_text(f"{cfg.strategy.name} n={cfg.n}"), unit="problem") as bar,
        Progress(len(todo), policy, cfg.progress_every) as progress,
    ):
        for start in range(0, len(todo), cfg.batch_size):
            batch = todo[start : start + cfg.batch_size]
            saver = _BatchSaver(
                batch, policy, prm, grader, directory, tracker, cfg, signals, [bar.update, progress.add]
            )
            strategy.on_finished = saver.save
            try:
                outputs = strategy.search(batch, policy, prm, RunSpec.of(cfg))  # what it sees of the run
            finally:
                strategy.on_finished = None
            _check_budget(batch, outputs, cfg.n)
            saver.save([(i, output) for i, output in enumerate(outputs) if i not in saver.saved])
            prm.clear_memo()
    log.info("searched %d problems in %.1f s", len(todo), time.perf_counter() - started)


class _BatchSaver:
    """Grades, scores and saves the problems of one batch as the strategy hands them over.

    The batch's backend calls and PRM cache hits are shared among the problems saved together: each save takes what
    was spent since the previous one, so the run's totals are exact however the problems were handed over, and a
    batch saved in one piece is shared exactly as it always was.
    """

    def __init__(self, batch, policy, prm, grader, directory, tracker, cfg: Config, signals, on_saved) -> None:
        self.batch, self.policy, self.prm, self.grader = batch, policy, prm, grader
        self.directory, self.tracker, self.cfg, self.signals, self.on_saved = directory, tracker, cfg, signals, on_saved
        self.saved: set[int] = set()
        self.calls, self.cached = policy.stats.calls, prm.stats.cached_tokens

    def save(self, done: list[tuple[int, SearchOutput]]) -> None:
        if not done:
            return
        indices = [i for i, _ in done]
        if self.saved.intersection(indices) or len(set(indices)) != len(indices):
            raise RuntimeError(f"strategy handed over problems {sorted(indices)} twice (saved: {sorted(self.saved)})")
        problems, outputs = [self.batch[i] for i in indices], [output for _, output in done]
        _check_budget(problems, outputs, self.cfg.n)
        records = grade_batch(problems, outputs, self.grader, self.cfg)
        calls, cached = self.policy.stats.calls, self.prm.stats.cached_tokens
        share = (calls - self.calls) / len(records)
        for record in records:
            record.compute["backend_calls_share"] = share
        share_cached_prm_tokens(records, cached - self.cached)
        self.calls, self.cached = calls, cached
        with self.signals.hold():  # a stop signal waits until the file and its index line are written
            self.directory.append(records)
        self.saved.update(indices)
        self.tracker.log_batch(records)
        for update in self.on_saved:
            update(len(records))


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
    reported = reported_aggregations(metrics)
    # nan: no problem has n completions (an adaptive strategy that stopped early everywhere)
    figure = {name: metrics.get(name, float("nan")) for name in (f"pass@{n}", *(f"acc/{a}@{n}" for a in reported))}
    line = "  ".join(f"{agg} {figure[f'acc/{agg}@{n}']:.3f}" for agg in reported)
    own = [a.name for a in registered() if a.once and f"acc/{a.name}" in metrics]  # an adaptive strategy's answer
    line += "".join(f"  {agg} {metrics[f'acc/{agg}']:.3f}" for agg in own)
    if "traces/generated" in metrics:  # an adaptive strategy: the traces it drew per problem
        line += f" ({metrics['traces/generated']:.1f} traces)"
    label = redact_text(f"{cfg.strategy.name} n={n} seed={cfg.seed}")  # W&B captures the console (output.log)
    print(
        f"[{label}] accuracy@{n}: {line}  pass@{n} {figure[f'pass@{n}']:.3f}  "
        f"({int(metrics['problems'])} problems, {int(metrics['tokens/generated'])} tokens) -> {path}"
    )
    if metrics.get(FOREIGN_PRM_METRIC):
        print(
            f"WARNING: prm=sim judged {int(metrics[FOREIGN_PRM_METRIC])} problems it did not generate "
            f"(prm.allow_foreign=true): its scores of them are noise, and so are naive and weighted"
        )
