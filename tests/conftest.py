"""Shared fixtures: compose the real Hydra config as a user would, with outputs in a temporary directory."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import tts.registry  # noqa: F401 - every component's config is registered as the schema of its options

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"

# Tests never talk to a W&B server.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# Tests never write into the home directory: the tools they drive (Jupyter and IPython, matplotlib, vLLM's compile
# cache, Hugging Face, W&B's settings, XDG caches) would, so every one of them, and HOME itself for whatever else,
# points into one scratch directory per test session (removed at exit). Set here, at import, so every subprocess a
# test starts (a run, a kernel, a server) inherits it.
SCRATCH_HOME = Path(tempfile.mkdtemp(prefix="tts-tests-home-"))
atexit.register(shutil.rmtree, SCRATCH_HOME, True)
for _variable, _folder in {
    "HOME": "home",
    "IPYTHONDIR": "ipython",
    "JUPYTER_CONFIG_DIR": "jupyter/config",
    "JUPYTER_DATA_DIR": "jupyter/data",
    "JUPYTER_RUNTIME_DIR": "jupyter/runtime",
    "MPLCONFIGDIR": "matplotlib",
    "XDG_CACHE_HOME": "cache",
    "XDG_CONFIG_HOME": "config",
    "XDG_DATA_HOME": "data",
    "VLLM_CACHE_ROOT": "cache/vllm",
    "HF_HOME": "cache/huggingface",
    "WANDB_CONFIG_DIR": "config/wandb",
    "WANDB_CACHE_DIR": "cache/wandb",
}.items():
    (SCRATCH_HOME / _folder).mkdir(parents=True, exist_ok=True)
    os.environ[_variable] = str(SCRATCH_HOME / _folder)


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
