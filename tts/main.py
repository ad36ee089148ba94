"""Entry point: `python tts/main.py [overrides]`, or a sweep with `-m`, e.g.

python tts/main.py -m strategy=best_of_n n=4,16 seed=0,1
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable without installing it
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hydra
from omegaconf import DictConfig

from tts.cli.command_line import check_command_line
from tts.cli.sweep import guarded_run
from tts.pipeline import run


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    guarded_run(run, cfg)


if __name__ == "__main__":
    check_command_line(sys.argv[1:])
    main()
