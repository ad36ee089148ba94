"""`run(cfg)`: one experiment, top to bottom. validate (the typed config) -> seed -> data -> run dir (resume) ->
models -> search -> grade -> score -> save as problems finish -> metrics -> track.

A long run can be watched and stopped: a progress line every `progress_every` seconds (problems saved, tokens/s, time
left) whatever the backend; each problem is saved as soon as its strategy hands it over (`Strategy.report_finished`;
the tree searches do as each problem's search ends, the others per `search_batch_size` chunk), else when its batch
ends; SIGTERM or SIGINT keeps every saved problem, logs one line saying how many and where, and exits with status
128 + the signal's number (143, 130). Rerunning the same command resumes (tts/store/run_dir.py).

Tests and notebooks call `run(cfg)` on a composed config; `tts/main.py` is only the Hydra entry point.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import threading
import time
import zlib
from pathlib import Path
from typing import Optional

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from tts.config.redaction import redact, redact_text
from tts.config.schema import Config, to_container
from tts.config.validate import validate
from tts.data import load_problems_and_identity
from tts.data.records import ProblemRecord
from tts.grading import AnswerGrader, extract_answer_with_rule
from tts.launch.model_cache import acquire_policy, acquire_prm, release_job_models
from tts.launch.preflight import check_before_generation, foreign_problems
from tts.launch.sweep import write_hydra_files
from tts.scoring import FOREIGN_PRM_METRIC, reduce_scores, reported_aggregations, score_problem
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
                    confidence=[c.confidence for c in output.completions],
                    deepconf_eta=cfg.scoring.deepconf_eta,
                    deepconf_measure=cfg.scoring.deepconf_measure,
                    borda_power=cfg.scoring.borda_power,
                    prm_scored=cfg.prm.scores,
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
            try:
                with _StopSignals() as signals:  # from here on a stop signal keeps what is saved and says so
                    strategy = build_strategy(run_cfg.strategy)
                    policy = acquire_policy(run_cfg.model, run_cfg.seed)  # hf / vLLM: built once per process
                    prm = acquire_prm(run_cfg.prm)
                    grader = AnswerGrader(timeout=run_cfg.scoring.grading_timeout)
                    _search_all(todo, strategy, policy, prm, grader, directory, tracker, run_cfg, signals)
            except _Signal as stop:
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
        if run_cfg.prm.synthetic_only and run_cfg.prm.allow_foreign:
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
        _Progress(len(todo), policy, cfg.progress_every) as progress,
    ):
        for start in range(0, len(todo), cfg.batch_size):
            batch = todo[start : start + cfg.batch_size]
            saver = _BatchSaver(
                batch, policy, prm, grader, directory, tracker, cfg, signals, [bar.update, progress.add]
            )
            strategy.on_finished = saver.save
            try:
                outputs = strategy.search(batch, policy, prm, cfg)
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


class _Progress:
    """A log line every `every` seconds while generating, from a timer thread: it appears during a long backend call
    too, on every backend (the tqdm bar moves only when problems are saved). Tokens are those of the backend calls
    that have returned, plus what the call in progress has generated where the backend tells (`tokens_in_flight`)."""

    def __init__(self, total: int, policy, every: float) -> None:
        self.total, self.policy, self.every, self.done = total, policy, every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tts-progress", daemon=True)

    def __enter__(self) -> _Progress:
        self.started, self.tokens = time.monotonic(), self.policy.stats.generated_tokens
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def add(self, count: int) -> None:
        self.done += count

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            log.info(self.line())

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        tokens = self.policy.stats.generated_tokens + getattr(self.policy, "tokens_in_flight", 0) - self.tokens
        done = self.done
        left = _duration(elapsed / done * (self.total - done)) if done else "unknown until a problem is saved"
        return (
            f"progress: {done}/{self.total} problems saved, {tokens} tokens generated "
            f"({tokens / max(elapsed, 1e-9):.1f} tokens/s), {_duration(elapsed)} elapsed, time left {left}"
        )


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class Stopped(SystemExit):
    """The run was stopped by SIGTERM or SIGINT after keeping its saved problems; the exit status is 128 + signal."""


class _Signal(BaseException):
    """Raised in the main thread by a stop signal; a BaseException so that no `except Exception` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _StopSignals:
    """SIGTERM and SIGINT raise `_Signal` where the main thread is, except while a batch file is being written
    (`hold`): then it is raised once the file and its index line are in place. Outside the main thread (a handler
    cannot be set there) the signals keep their handlers."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.pending: Optional[int] = None
        self.holding = 0
        self.previous: dict = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            # a submitit job (SLURM launcher) has its own pre-emption handling: on USR2 it checkpoints and requeues
            # the job, and the SIGTERM SLURM then sends must not cut that handler short; the requeued job resumes
            signals = [n for n in self.SIGNALS if not (n == signal.SIGTERM and os.environ.get("SUBMITIT_EXECUTOR"))]
            self.previous = {number: signal.signal(number, self._handle) for number in signals}
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.holding:
            self.pending = signum
            return
        raise _Signal(signum)

    @contextlib.contextmanager
    def hold(self):
        self.holding += 1
        try:
            yield
        finally:
            self.holding -= 1
        if not self.holding and self.pending is not None:
            raise _Signal(self.pending)


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
    if "acc/final" in metrics:  # an adaptive strategy: its own answer, and the traces it drew per problem
        line += f"  final {metrics['acc/final']:.3f} ({metrics.get('traces/generated', 0):.1f} traces)"
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
