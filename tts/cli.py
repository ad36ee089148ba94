"""The command line checked before Hydra sees it: an unknown key or group option is one line and exit 2.

Hydra would compose first and, for a typo, suggest adding the key with `+` (which then runs with the typo stored);
for an unknown option it lists the schema entries (`base_strategy`) among the choices. Checked here, nothing has been
created yet and the message names the nearest valid key or the real options.
"""

from __future__ import annotations

import sys

from tts.config_keys import check_overrides


def check_command_line(argv: list[str]) -> None:
    from hydra._internal.utils import get_args_parser

    try:
        args, _ = get_args_parser().parse_known_args(argv)
    except SystemExit:  # Hydra reports its own usage errors
        return
    if args.config_dir or args.config_name or args.config_path:
        return  # another config tree: its keys and options are Hydra's to check
    message = check_overrides(list(args.overrides or []))
    if message:
        print(f"Error: {message}", file=sys.stderr)
        sys.exit(2)
