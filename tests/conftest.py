"""Shared fixtures: compose the real Hydra config as a user would, with outputs in a temporary directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"

# Tests never talk to a W&B server.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def compose_config(overrides: list[str] | None = None):
    """The config `python tts/main.py <overrides>` would run with."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides or []))


def typed_config(overrides: list[str] | None = None):
    """The typed config `run` would work with (`tts.config.validate.validate` of the composed one)."""
    from tts.config.validate import validate

    return validate(compose_config(overrides))


@pytest.fixture
def make_cfg():
    return compose_config


def results_files(run_dir: Path) -> dict[str, bytes]:
    """Every results file of a run directory (index and batches), by name: to compare two runs byte for byte."""
    folder = Path(run_dir) / "results"
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}
