"""The command line checked before Hydra sees it: a bad key, option or value is one line and exit 2.

Hydra would compose first and, for a typo, suggest adding the key with `+` (which then runs with the typo stored);
for an unknown option it lists its choices without a word on what went wrong; a value of the wrong type ends
in a multi-line report. Checked here, nothing has been created yet and the message names the key (and the nearest
valid key, or the real options).
"""

from __future__ import annotations

import sys
from typing import Optional

from tts.config.keys import CONF
from tts.config.validate import check_overrides


def check_command_line(argv: list[str]) -> None:
    import argparse

    # The flags of Hydra's own command line (those of hydra.main's parser, Hydra 1.3), read here only to find the
    # overrides and whether another config tree is named; Hydra parses the command line again and reports its errors.
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    parser.add_argument("overrides", nargs="*")
    for flags in (
        ["--help", "-h"],
        ["--hydra-help"],
        ["--version"],
        ["--resolve"],
        ["--run", "-r"],
        ["--multirun", "-m"],
        ["--shell-completion", "-sc"],
    ):
        parser.add_argument(*flags, action="store_true")
    for flags in (
        ["--package", "-p"],
        ["--config-path", "-cp"],
        ["--config-name", "-cn"],
        ["--config-dir", "-cd"],
        ["--experimental-rerun"],
    ):
        parser.add_argument(*flags)
    parser.add_argument("--cfg", "-c", choices=["job", "hydra", "all"])
    parser.add_argument(
        "--info",
        "-i",
        nargs="?",
        const="all",
        choices=["all", "config", "defaults", "defaults-tree", "plugins", "searchpath"],
    )
    try:
        args, _ = parser.parse_known_args(argv)
    except (argparse.ArgumentError, SystemExit):  # Hydra reports its own usage errors
        return
    if args.version or args.config_dir or args.config_name or args.config_path:
        return  # Hydra's version, or another config tree: its keys and options are Hydra's to check
    overrides = list(args.overrides or [])
    message = check_overrides(overrides) or _type_error(overrides)
    if message:
        print(f"Error: {message}", file=sys.stderr)
        sys.exit(2)


def _type_error(overrides: list[str]) -> Optional[str]:
    """`config key 'n': Value '2.5' ... could not be converted to Integer` when the schema rejects a value's type."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    from tts.config.schema import ConfigError
    from tts.config.validate import check_known_keys

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # noqa: BLE001 - Hydra reports its own syntax errors
        return None
    if any(o.is_sweep_override() for o in parsed):
        return None  # a sweep: each job's values are checked by the sweep's own pre-check (tts/launch/sweep.py)
    task = [text for text, o in zip(overrides, parsed) if not o.key_or_group.startswith("hydra")]
    parsed_task = [o for o in parsed if not o.key_or_group.startswith("hydra")]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            compose(config_name="config", overrides=task)
    except Exception as error:  # noqa: BLE001 - only value errors are reported here; the rest is Hydra's
        cause = error.__cause__
        key = getattr(cause, "full_key", None)
        if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and key:
            # a knob the chosen component does not have (another option of it does, or check_overrides would have
            # caught it): compose without it, add it, and let the config check name the component and its knobs
            rest = [t for t, o in zip(task, parsed_task) if o.key_or_group != key]
            values = [o.value() for o in parsed_task if o.key_or_group == key]
            try:
                GlobalHydra.instance().clear()
                with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
                    cfg = compose(config_name="config", overrides=rest)
                with open_dict(cfg):
                    OmegaConf.update(cfg, key, values[0] if values else None, force_add=True)
                check_known_keys(cfg)
            except ConfigError as refused:
                return str(refused)
            except Exception:  # noqa: BLE001 - any other failure: Hydra's own message below says what is wrong
                pass
        if isinstance(cause, OmegaConfBaseException) and key:
            return f"config key '{key}': {str(cause.msg).strip().splitlines()[0]}"
    finally:
        GlobalHydra.instance().clear()
    return None
