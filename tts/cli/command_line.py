"""The command line checked before the job starts: a bad key, option or value is one line and exit 2.

Hydra's own report of the same mistakes is several lines with exit 1: for a typo it suggests adding the key with `+`
(which would run with the typo stored); for an unknown option it lists its choices without a word on what went wrong.
Here the overrides are read with Hydra's own parser, composed with Hydra's typed schemas, and the first failure is
said in one line naming the key (and the nearest valid key, the option that has the knob, or the real options) before
anything is created.
"""

from __future__ import annotations

import sys
from typing import Optional

from tts.config.keys import CONF
from tts.config.validate import check_overrides, unknown_key_message


def check_command_line(argv: list[str]) -> None:
    # Hydra's own parser (the one hydra.main uses) finds the overrides and whether another config tree is named;
    # Hydra parses the command line again and reports its own usage errors
    import argparse

    from hydra._internal.utils import get_args_parser

    if "--version" in argv:  # Hydra's parser would print it here, and again when Hydra runs
        return
    parser = get_args_parser()
    parser.exit_on_error = False
    try:
        args, _ = parser.parse_known_args(argv)
    except (argparse.ArgumentError, SystemExit):  # a usage error: Hydra reports it
        return
    if args.config_dir or args.config_name or args.config_path:
        return  # Hydra's version, or another config tree: its keys and options are Hydra's to check
    overrides = list(args.overrides or [])
    message = check_overrides(overrides) or _composition_error(overrides)
    if message:
        print(f"Error: {message}", file=sys.stderr)
        sys.exit(2)


def _composition_error(overrides: list[str]) -> Optional[str]:
    """Hydra composes the run with its typed schemas; its error (a knob the chosen option's dataclass lacks, a value
    of the wrong type) becomes one line naming the key."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # noqa: BLE001 - Hydra reports its own syntax errors
        return None
    if any(o.is_sweep_override() for o in parsed):
        return None  # a sweep: each job's values are checked by the sweep's own pre-check (tts/cli/sweep.py)
    task = [text for text, o in zip(overrides, parsed) if not o.key_or_group.startswith("hydra")]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            compose(config_name="config", overrides=task)
    except Exception as error:  # noqa: BLE001 - only key and value errors are reported here; the rest is Hydra's
        cause, key = error.__cause__, getattr(error.__cause__, "full_key", None)
        if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and key:
            return unknown_key_message(key, cause.object_type)  # names the option's dataclass and where the knob is
        if isinstance(cause, OmegaConfBaseException) and key:
            return f"config key '{key}': {str(cause.msg).strip().splitlines()[0]}"
    finally:
        GlobalHydra.instance().clear()
    return None
