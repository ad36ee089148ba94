"""The analysis notebook runs top to bottom on a real (tiny) sim sweep, and is committed without outputs."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import nbformat
import pandas as pd
from nbclient import NotebookClient

from conftest import REPO, compose_config
from test_analysis import tiny_sweep

NOTEBOOK = REPO / "notebooks" / "analysis.ipynb"


@functools.lru_cache(maxsize=None)
def two_setting_sweep() -> Path:
    """The tiny sweep, plus a second setting (a noisier PRM) with one candidate run and its own reference pool."""
    from tts.pipeline import run

    root = Path(tempfile.mkdtemp(prefix="tts-notebook-sweep-"))
    atexit.register(shutil.rmtree, root, True)
    shutil.copytree(tiny_sweep(), root / "quiet")
    for n, seed in ((4, 0), (16, 100)):
        cfg = compose_config([f"n={n}", f"seed={seed}", "dataset.num_problems=20", "logger=none",
                              "strategy.temperature=1.0", "prm.noise=1.5"])
        run(cfg, run_dir=root / f"noisy/n{n}_seed{seed}")
    return root


def test_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_notebook_loops_over_settings_and_writes_what_the_cli_writes(tmp_path, monkeypatch):
    from analysis.__main__ import main

    # as a user typing `TTS_SWEEP=sweep TTS_FIGS=figs jupyter execute notebooks/analysis.ipynb` in tmp_path:
    # relative paths are read from there, though the kernel runs in notebooks/
    (tmp_path / "sweep").symlink_to(two_setting_sweep())
    monkeypatch.setenv("PWD", str(tmp_path))
    monkeypatch.setenv("TTS_SWEEP", "sweep")
    monkeypatch.setenv("TTS_FIGS", "figs")
    home = tmp_path / "home"  # the kernel and everything it runs must leave the home directory as it found it
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "11 runs, 20 problems, 2 settings" in printed
    assert not list(home.rglob("*")), "the notebook wrote into the home directory"
    runs = pd.read_csv(tmp_path / "figs" / "runs.csv")
    paths = [p for cell in runs.paths for p in cell.split(";")]
    assert paths and not [p for p in paths if Path(p).is_absolute()], "runs.csv names this machine's paths"
    assert all((tmp_path / "figs" / p / "config.yaml").exists() for p in paths)  # and still leads to the runs
    assert printed.count("reference pool: best_of_n") == 2  # one per setting

    assert main([str(two_setting_sweep()), "--out", str(tmp_path / "cli")]) == 0
    written = sorted(str(p.relative_to(tmp_path / "figs")) for p in (tmp_path / "figs").rglob("*") if p.is_file())
    by_cli = sorted(str(p.relative_to(tmp_path / "cli")) for p in (tmp_path / "cli").rglob("*") if p.is_file())
    assert written == by_cli
    assert len({Path(p).parent for p in written if p.endswith(".png")}) == 2  # a folder per setting
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    tables = [o for o in outputs if "text/html" in o.get("data", {})]
    assert len(images) == sum(p.endswith(".png") for p in written) and len(tables) >= 7
