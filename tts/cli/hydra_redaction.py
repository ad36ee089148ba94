"""Hydra callback: the files Hydra writes itself never hold a credential.

Hydra saves the composed config, its own config and the command-line overrides under `<run dir>/.hydra/` (and the
sweep's `multirun.yaml`) before the job starts, and its launchers log each job's overrides. This callback rewrites those
files with secrets redacted before the task runs (tts/config/redaction.py says what is secret), and redacts log
messages; the `${redact:...}` resolver keeps a secret override out of directory names built from
`hydra.job.override_dirname`.
Registered in conf/config.yaml (`hydra.callbacks.redact`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from tts.config.redaction import redact_text, register_resolver, secret_values
from tts.runtime.hydra_record import redact_yaml_file

register_resolver()  # before Hydra resolves hydra.run.dir / hydra.sweep.subdir
log = logging.getLogger(__name__)


def install_log_redaction() -> None:
    """Every log record's message is redacted before any handler (console, Hydra's job log file) formats it."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacting", False):
        return
    values = secret_values()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is the logging module's to report
            return record
        clean = redact_text(message, values)
        if clean != message:
            record.msg, record.args = clean, None
        return record

    factory.redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


class RedactHydraFiles(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        install_log_redaction()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        install_log_redaction()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        install_log_redaction()  # a launcher's worker process (joblib, submitit) starts here
        hydra = config.hydra
        files = []
        if hydra.output_subdir is not None:
            folder = Path(hydra.runtime.output_dir) / str(hydra.output_subdir)
            files += [folder / name for name in ("config.yaml", "hydra.yaml", "overrides.yaml")]
        if str(hydra.mode) == "RunMode.MULTIRUN":
            files.append(Path(str(hydra.sweep.dir)) / "multirun.yaml")
        for path in files:
            if path.exists():
                try:
                    redact_yaml_file(path)
                except Exception as error:  # noqa: BLE001 - never stop the job; say which file may hold a secret
                    log.warning("could not redact %s (%s: %s)", path, type(error).__name__, error)
