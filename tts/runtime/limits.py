"""Bounds on a run's size, checked before the run directory is opened or anything is generated.

A mistyped `n=1000000` used to sit for twenty minutes and take gigabytes before anything was said. Each bound below is
far above what the paper's sweeps use (n <= 256, max_tokens 2048, 40 iterations) and can be raised for a run that
really needs more, with an environment variable (they are limits of the machine, not of the experiment, so they are
not part of the config and never change a run's fingerprint):

| bound                                  | default              | raise with            |
|----------------------------------------|----------------------|-----------------------|
| `n` (completions per problem)          | 65536                | `TTS_MAX_N`           |
| `budget.max_tokens`                    | 131072               | `TTS_MAX_TOKENS`      |
| `budget.num_iterations`                | 4096                 | `TTS_MAX_ITERATIONS`  |
| estimated memory of one batch          | the available memory | `TTS_MEMORY_GB`       |

The memory estimate is an upper bound on what the completions of the problems in flight (one batch: `batch_size`
problems, fewer when the run has fewer) can hold if every completion reaches `budget.max_tokens`:

    problems in flight x n x (max_tokens x BYTES_PER_TOKEN + BYTES_PER_COMPLETION)

BYTES_PER_TOKEN (64) covers a token's text (~4 characters) in the completion and again in its steps, the record's JSON
and compressed copy while its batch is written, and the backend's token ids; BYTES_PER_COMPLETION (4 KiB) the objects
around each completion. Model weights and KV caches (GPU memory) are not counted. Lowering `batch_size` lowers the
estimate without changing any result.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from tts.config.schema import Config, ConfigError

BYTES_PER_TOKEN = 64
BYTES_PER_COMPLETION = 4096
LIMITS = {  # config key -> (environment variable, default)
    "n": ("TTS_MAX_N", 65536),
    "budget.max_tokens": ("TTS_MAX_TOKENS", 131072),
    "budget.num_iterations": ("TTS_MAX_ITERATIONS", 4096),
}
MEMORY_ENV = "TTS_MEMORY_GB"


def _limit(variable: str, default: float, cast=int) -> float:
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = cast(text)
    except ValueError:
        raise ConfigError(f"environment variable {variable}: expected a number, got {text!r}") from None
    if value <= 0:
        raise ConfigError(f"environment variable {variable}: must be > 0, got {text!r}")
    return value


def available_memory() -> int:
    """Bytes of memory this process can still use without swapping (psutil's `available`, else free pages)."""
    try:
        import psutil  # type: ignore[import-untyped]

        return int(psutil.virtual_memory().available)
    except ImportError:  # psutil comes with wandb; without it, the free pages (a lower, so safer, figure)
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def estimated_memory(run: Config, problems: int) -> int:
    """The upper bound of the module docstring, in bytes."""
    in_flight = min(run.batch_size, problems)
    return in_flight * run.n * (run.budget.max_tokens * BYTES_PER_TOKEN + BYTES_PER_COMPLETION)


def check_limits(run: Config, problems: Sequence) -> None:
    """Refuse (ConfigError, one line: the bound and how to raise it) a run beyond a bound of the module docstring."""
    values = {
        "n": run.n,
        "budget.max_tokens": run.budget.max_tokens,
        "budget.num_iterations": run.budget.num_iterations,
    }
    for key, (variable, default) in LIMITS.items():
        limit = _limit(variable, default)
        if values[key] > limit:
            raise ConfigError(
                f"config key '{key}': {values[key]} is above the limit of {int(limit)}, set so that a mistyped value "
                f"is caught before hours of generation; if this run really needs it, raise the limit with "
                f"{variable}={values[key]} (environment variable)"
            )
    memory_gb = _limit(MEMORY_ENV, 0, float)
    budget = memory_gb * 2**30 if memory_gb else available_memory()
    needed = estimated_memory(run, len(problems))
    if needed > budget:
        in_flight = min(run.batch_size, len(problems))
        raise ConfigError(
            f"config key 'batch_size': this run may hold up to {needed / 2**30:.1f} GB of completions at once "
            f"({in_flight} problems in flight x n={run.n} x budget.max_tokens={run.budget.max_tokens} tokens), more "
            f"than the {budget / 2**30:.1f} GB {'set by ' + MEMORY_ENV if memory_gb else 'this machine has available'}"
            f"; lower batch_size (results do not change), n or budget.max_tokens, or set {MEMORY_ENV} to the memory "
            f"this run may use"
        )
