"""The analysis notebook runs top to bottom on a real (tiny) sim sweep, and is committed without outputs."""

from __future__ import annotations

import nbformat
from nbclient import NotebookClient

from conftest import REPO
from test_analysis import tiny_sweep

NOTEBOOK = REPO / "notebooks" / "analysis.ipynb"


def test_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_notebook_executes_and_shows_tables_and_figures(tmp_path, monkeypatch):
    monkeypatch.setenv("TTS_SWEEP", str(tiny_sweep()))
    monkeypatch.setenv("TTS_FIGS", str(tmp_path / "figs"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    tables = [o for o in outputs if "text/html" in o.get("data", {})]
    assert len(images) == 5 and len(tables) >= 5
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == sorted(
        ["accuracy_vs_n.png", "bins_oracle_bin.png", "bins_model_bin.png", "compute_optimal.png",
         "accuracy_vs_tokens.png"])
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "8 runs, 20 problems" in printed and "reference pool: best_of_n" in printed
