"""Hydra's `.hydra/` record of a job, written into the run directory once it has accepted the configuration, with
every credential given as an override redacted (the same rule the Hydra callbacks apply to Hydra's own files)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import cast

from omegaconf import DictConfig, OmegaConf

from tts.config.redaction import redact
from tts.store.format import atomic_write


def write_hydra_files(cfg: DictConfig, run_dir: Path) -> None:
    """Hydra's `.hydra/` record of the job, written once the run directory has accepted this configuration.

    Hydra itself would write it before the job starts (hydra.output_subdir is null in conf/config.yaml), overwriting
    the record of an existing run even when the job is then refused.
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    full = cast(DictConfig, HydraConfig.instance().cfg)  # initialized: the whole composed config
    target = Path(run_dir) / ".hydra"
    target.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, target / "config.yaml")  # the same YAML Hydra writes (OmegaConf.to_yaml, unresolved)
    OmegaConf.save(copy.deepcopy(full), target / "hydra.yaml")
    OmegaConf.save(full.hydra.overrides.task, target / "overrides.yaml")
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):  # a credential given as an override stays out
        redact_yaml_file(target / name)


def redact_yaml_file(path: Path) -> None:
    """Rewrite a YAML file (Hydra's `.hydra/*.yaml`) with its secrets redacted; left alone when it holds none."""
    tree = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    clean = redact(tree)
    if clean != tree:
        atomic_write(Path(path), OmegaConf.to_yaml(OmegaConf.create(clean)))
