"""Entry point: `python tts/main.py [overrides]`, or a sweep with `-m`, e.g.

    python tts/main.py -m strategy=best_of_n n=4,16 seed=0,1
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable without installing it
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hydra
from omegaconf import DictConfig

from tts.config import ConfigError
from tts.data import DatasetError
from tts.pipeline import run


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except (ConfigError, DatasetError) as error:
        # A bad config or dataset is the user's to fix: one clear line, no traceback, nothing generated.
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
