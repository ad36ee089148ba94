"""The command line checked before Hydra sees it (tts/cli/command_line.py): Hydra's flags are recognised, a bad key is one
line and exit 2, and what is Hydra's to report (its own usage errors, another config tree) is left to Hydra."""

from __future__ import annotations

import pytest

from tts.cli.command_line import check_command_line


@pytest.mark.parametrize("argv", [
    ["strategy.temprature=0.5"],
    ["-m", "--cfg", "job", "strategy.temprature=0.5"],
    ["-p", "strategy", "-c", "job", "n=x"],           # a value of the wrong type (composed, not a sweep)
    ["--resolve", "--hydra-help", "-r", "+experiment=nope"],
])
def test_a_bad_override_is_one_line_and_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        check_command_line(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: config key '") and err.count("\n") == 1


@pytest.mark.parametrize("argv", [
    [], ["n=8", "seed=1"], ["-m", "+experiment=quick", "logger=none"], ["-m", "strategy=beam,dvts", "n=4,16"],
    ["--cfg", "job", "n=8"], ["-i", "defaults", "n=8"], ["--multirun", "--info", "-sc"],
    ["--version"],                                     # Hydra prints its version
    ["-cn", "other", "anything.goes=1"], ["--config-dir", "/elsewhere", "x=1"], ["-cp", "../conf", "x=1"],
    ["--cfg", "bogus", "x=1"],                         # Hydra's own usage errors: Hydra reports them
    ["--info", "strategy.temprature=0.5"],             # (taken as --info's value, not one of its choices)
    ["--experimental-rerun", "config.pickle"],
])
def test_hydra_flags_and_good_overrides_pass(argv, capsys):
    check_command_line(argv)
    assert capsys.readouterr().err == ""
