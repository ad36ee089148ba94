"""Hydra glue that makes runs and sweeps fail cleanly: checks before anything is created, sweeps that survive their
parts, workers that end with their sweep, and run directory names that always fit the file system.

- `RunGuard` (a Hydra callback, registered in conf/config.yaml) validates a single run before Hydra creates its
  directory, and every combination of a basic sweep before any job starts (invalid ones are listed up front; the valid
  ones still run). At the end of a sweep it names the jobs that failed and exits non-zero.
- `guarded_run` wraps `run(cfg)` in each job: a refused job prints one line, leaves no directory behind (an empty one
  Hydra made is removed) and, inside a sweep, is recorded instead of ending the sweep. In a joblib (loky) worker it
  also watches the sweep's main process and exits if it dies, so no orphan keeps running or holding a lock.
- `short_dirname` (resolver `tts_dirname`) keeps Hydra's override-derived directory name under the 255-byte file-name
  limit: long names become a readable prefix plus a hash of the whole, the same for the same overrides, so rerunning a
  command still finds (and resumes) its directory.
"""

from __future__ import annotations

import copy
import errno
import hashlib
import itertools
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

MAX_NAME_BYTES = 200  # below the 255-byte limit of one path component, leaving room for Hydra's and our suffixes
FAILURES_ENV = "TTS_SWEEP_FAILURES"  # file a sweep's jobs append their failures to (set by RunGuard)
SWEEP_PID_ENV = "TTS_SWEEP_PID"  # the sweep's main process, watched by its worker processes


# -- directory names --------------------------------------------------------------------------------------------------


def short_dirname(name: Any) -> str:
    """`name` if every path component fits, else a readable prefix + a hash of the whole name (deterministic)."""
    name = str(name)
    if all(len(part.encode()) <= MAX_NAME_BYTES for part in name.split("/")):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    readable = name.replace("/", "_").encode()[: MAX_NAME_BYTES - 14].decode("utf-8", errors="ignore")
    return f"{readable}_h{digest}"


if not OmegaConf.has_resolver("tts_dirname"):  # before Hydra resolves hydra.run.dir (conf/config.yaml)
    OmegaConf.register_new_resolver("tts_dirname", short_dirname)


# -- the jobs of a sweep ----------------------------------------------------------------------------------------------


def sweep_overrides(config: DictConfig) -> list[str]:
    """The overrides Hydra's basic sweeper expands: its `params` (an experiment's sweep axes, conf/experiment/), then
    the command line's, which win over them."""
    params = config.hydra.sweeper.get("params") or {}
    return [f"{key}={value}" for key, value in params.items()] + list(config.hydra.overrides.task)


def sweep_combinations(overrides: list[str]) -> list[list[str]]:
    """Each job's overrides, as Hydra's basic sweeper makes them: the cartesian product of the comma lists, in order;
    a key given twice keeps its first place and its last value.

    Raises ValueError for a sweep the basic sweeper cannot expand (an interval or a range it is not given as a list),
    and Hydra's own errors for overrides it cannot parse.
    """
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hydra = GlobalHydra.instance()  # its config loader expands glob() over a group's options, as the sweeper does
    parser = OverridesParser.create(config_loader=hydra.config_loader() if hydra.is_initialized() else None)
    axes: dict[str, list[str]] = {}
    for override in parser.parse_overrides(list(overrides)):
        key = override.get_key_element()
        if not override.is_sweep_override():
            axes[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            axes[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            raise ValueError(f"{key}: the basic sweeper does not expand a {override.value_type} sweep")
    return [list(combination) for combination in itertools.product(*axes.values())]


# -- before anything is created ---------------------------------------------------------------------------------------


def _task_config(config: DictConfig) -> DictConfig:
    task = copy.deepcopy(config)
    with open_dict(task):
        task.pop("hydra", None)
    return task


def _refuse(message: str) -> None:
    print(f"Error: {message}", file=sys.stderr)
    sys.exit(2)


class RunGuard(Callback):
    """Validate before Hydra creates directories; report a sweep's failed jobs at its end."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from tts.config.schema import ConfigError
        from tts.config.validate import validate

        try:
            validate(_task_config(config))
        except ConfigError as error:
            _refuse(str(error))
        params = config.hydra.sweeper.get("params")
        if params:  # `+experiment=...` without -m: Hydra runs the one job of the defaults and ignores the sweep axes
            axes = " ".join(f"{key}={value}" for key, value in params.items())
            print(
                f"Warning: the sweep parameters ({axes}) apply only to a sweep: add -m to run them; this is a single "
                "run",
                file=sys.stderr,
            )

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        invalid = invalid_combinations(config)
        broken = [(number, overrides, error) for number, overrides, error, composes in invalid if not composes]
        if broken:  # Hydra's launcher would stop the sweep at the first of these: refuse it before any job starts
            lines = [f"  #{number} ({' '.join(overrides)}): {error}" for number, overrides, error in broken]
            print(
                f"Error: {len(broken)} sweep job(s) cannot be composed; no job was started:\n" + "\n".join(lines),
                file=sys.stderr,
            )
            sys.exit(2)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        failures = sweep_dir / f".failed-jobs-{os.getpid()}.jsonl"
        failures.unlink(missing_ok=True)
        os.environ[FAILURES_ENV] = str(failures.resolve())
        os.environ[SWEEP_PID_ENV] = str(os.getpid())
        for number, overrides, error, _ in invalid:
            log.error(
                "sweep job #%d (%s) is invalid and will stop before generating (the other jobs still run): %s",
                number,
                " ".join(overrides),
                error,
            )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        path = Path(os.environ.pop(FAILURES_ENV, "") or "/nonexistent")
        os.environ.pop(SWEEP_PID_ENV, None)
        if not path.is_file():
            return
        failed = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        path.unlink()
        if not failed:
            return
        failed.sort(key=lambda f: f["job"])
        print(f"Error: {len(failed)} sweep job(s) failed:", file=sys.stderr)
        for failure in failed:
            print(f"  #{failure['job']} ({' '.join(failure['overrides'])}): {failure['error']}", file=sys.stderr)
        sys.exit(2 if all(f["refused"] for f in failed) else 1)


def invalid_combinations(config: DictConfig, limit: int = 1000) -> list[tuple[int, list[str], str, bool]]:
    """(job number, overrides, error, composes) of each combination of a basic sweep that `validate` refuses.

    `composes` is False for a combination Hydra cannot even compose (a value of the wrong type): its launcher would
    stop the whole sweep at that job, so the sweep is refused before any job starts.

    Other sweepers (Optuna, Ax) choose their points as they go, and very large sweeps are left to their jobs.
    """
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from tts.config.schema import ConfigError
    from tts.config.validate import validate

    if "BasicSweeper" not in str(config.hydra.sweeper.get("_target_", "")):
        return []
    try:
        combinations = sweep_combinations(sweep_overrides(config))
    except (HydraException, ValueError):  # a sweep that cannot be parsed or expanded: the sweeper reports it
        return []
    if len(combinations) > limit:
        return []
    loader = GlobalHydra.instance().config_loader()
    parser = OverridesParser.create()
    composed: dict[tuple, Any] = {}  # group choices -> their composed task config (composing is the slow part)
    invalid = []
    for number, overrides in enumerate(combinations):
        try:
            parsed = parser.parse_overrides(list(overrides))
            values = [o for o in parsed if _is_plain_value(o)]
            choices = tuple(text for text, o in zip(overrides, parsed) if o not in values)
            if choices not in composed:
                composed[choices] = _task_config(loader.load_sweep_config(config, list(choices)))
            task = copy.deepcopy(composed[choices])
            for override in values:  # what Hydra does after composing: set each value on the composed config
                OmegaConf.update(
                    task,
                    override.key_or_group,
                    override.value(),
                    merge=True,
                    force_add=override.is_force_add() or override.is_add(),
                )
            validate(task)
        except ConfigError as error:
            invalid.append((number, list(overrides), str(error), True))
        except Exception as error:  # noqa: BLE001 - a combination that does not even compose
            key = getattr(error, "full_key", None) or getattr(error.__cause__, "full_key", None)
            first = str(getattr(error, "msg", error)).strip().splitlines()[0]
            invalid.append(
                (
                    number,
                    list(overrides),
                    f"config key '{key}': {first}" if key else f"{type(error).__name__}: {first}",
                    False,
                )
            )
            continue
    return invalid


def _is_plain_value(override) -> bool:
    """`key=value` / `+key=value` on a config value (not a group choice, a deletion or a hydra setting)."""
    from tts.config.keys import CONF

    key = override.key_or_group
    return (
        not override.is_delete()
        and not key.startswith("hydra")
        and "/" not in key
        and override.package is None
        and not (CONF / key).is_dir()
    )


# -- in each job ------------------------------------------------------------------------------------------------------


def _hydra() -> DictConfig | None:
    from hydra.core.hydra_config import HydraConfig

    return cast(DictConfig, HydraConfig.get()) if HydraConfig.initialized() else None  # a DictConfig at runtime


def guarded_run(run: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """`run(cfg)` as a Hydra job: refusals are one line and leave nothing behind; a sweep outlives its failed jobs."""
    from hydra.types import RunMode

    from tts.backends.base import PolicyUnavailable
    from tts.config.schema import ConfigError
    from tts.data import DatasetError

    hydra = _hydra()
    in_sweep = hydra is not None and hydra.mode == RunMode.MULTIRUN
    if in_sweep:
        watch_sweep_process()
    try:
        return run(cfg)
    except (ConfigError, DatasetError) as error:
        # A bad config or dataset is the user's to fix: one clear line, no traceback, nothing generated.
        print(f"Error: {error}", file=sys.stderr)
        _remove_empty_run_dir(hydra)
        if not in_sweep or hydra is None:
            sys.exit(2)
        _record_failure(hydra, str(error), refused=True)
    except PolicyUnavailable as error:
        # a served policy that is down or misbehaving: one line (where, what, what to do), finished problems kept
        print(f"Error: {error}", file=sys.stderr)
        if not in_sweep or hydra is None:
            sys.exit(1)
        _record_failure(hydra, str(error), refused=False)
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):  # the disk (or the quota) is full, not the code broken
            raise
        where = error.filename or (f"into {hydra.runtime.output_dir}" if hydra is not None else "the run directory")
        message = f"no space left on the device writing {where}: {error.strerror}"
        print(f"Error: {message}", file=sys.stderr)
        if not in_sweep or hydra is None:
            sys.exit(1)
        _record_failure(hydra, message, refused=False)
    except Exception as error:  # noqa: BLE001 - one job's crash is recorded and the sweep goes on (re-raised alone)
        if not in_sweep or hydra is None:
            raise
        log.exception("sweep job #%s failed", hydra.job.num)
        _record_failure(hydra, f"{type(error).__name__}: {error}", refused=False)
    return None


def _record_failure(hydra: DictConfig, error: str, refused: bool) -> None:
    path = os.environ.get(FAILURES_ENV)
    if not path:
        return
    line = (
        json.dumps(
            {"job": int(hydra.job.num), "overrides": list(hydra.overrides.task), "error": error, "refused": refused}
        )
        + "\n"
    )
    with open(path, "a", encoding="utf-8") as handle:  # one short O_APPEND write: jobs never interleave lines
        handle.write(line)


def _remove_empty_run_dir(hydra: DictConfig | None) -> None:
    """Remove the directory Hydra made for a refused job (and parents it leaves empty), if nothing is in it."""
    if hydra is None:
        return
    from hydra.types import RunMode

    directory = Path(hydra.runtime.output_dir).resolve()
    stop = Path(hydra.sweep.dir if hydra.mode == RunMode.MULTIRUN else hydra.runtime.cwd).resolve()
    while True:
        try:
            directory.rmdir()  # only ever succeeds on an empty directory: an existing run's files are never touched
        except OSError:
            return
        directory = directory.parent
        if directory == stop or stop not in directory.parents:
            return  # parents are removed only inside the working directory (or the sweep directory)


def watch_sweep_process(interval: float = 0.5) -> None:
    """In a worker process of a sweep (joblib/loky), exit as soon as the sweep's main process is gone.

    A killed main process leaves loky workers running their job to the end; they would keep the GPU and the run
    directory's lock, and the rerun would be refused. The kernel releases the lock when this process exits, and the
    batch in flight is the only work lost (a rerun resumes).
    """
    main_pid = os.environ.get(SWEEP_PID_ENV)
    if not main_pid or int(main_pid) == os.getpid() or os.getppid() != int(main_pid):
        return  # the basic launcher (jobs run in the main process) or a launcher with its own process tree
    if getattr(watch_sweep_process, "started", False):
        return
    watch_sweep_process.started = True  # type: ignore[attr-defined]
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        print(
            f"tts: the sweep's main process {parent} is gone; stopping this worker (pid {os.getpid()})", file=sys.stderr
        )
        os._exit(3)

    threading.Thread(target=watch, name="tts-sweep-watch", daemon=True).start()
