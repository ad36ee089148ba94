"""The package's shape: no import circles in tts and analysis (scripts/import_circles.py, standard library only), and
the layer contracts of pyproject.toml's [tool.importlinter] hold (lint-imports; skipped where import-linter is not
installed: `pip install -e ".[dev]"`)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

_spec = importlib.util.spec_from_file_location("import_circles", REPO / "scripts" / "import_circles.py")
assert _spec is not None and _spec.loader is not None
import_circles = importlib.util.module_from_spec(_spec)  # scripts/ is not a package
_spec.loader.exec_module(import_circles)


def test_the_circle_check_finds_a_circle_through_a_package(tmp_path):
    """`from pkg import mod` inside pkg's own modules is an import of pkg itself (its __init__.py)."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from pkg.a import f\n")
    (pkg / "a.py").write_text("def f():\n    from pkg import b\n")
    (pkg / "b.py").write_text("import os\n")
    (pkg / "c.py").write_text("from . import b\nfrom .b import os\n")
    graph = import_circles.imports(import_circles.modules([pkg]))
    assert graph["pkg.a"] == {"pkg", "pkg.b"} and graph["pkg.c"] == {"pkg", "pkg.b"}
    assert import_circles.circles(graph) == [["pkg", "pkg.a"]]
    (pkg / "a.py").write_text("def f():\n    import pkg.b\n")  # the module itself, not through the package
    assert import_circles.circles(import_circles.imports(import_circles.modules([pkg]))) == []


def test_no_import_circles():
    graph = import_circles.imports(import_circles.modules([REPO / "tts", REPO / "analysis"]))
    found = import_circles.circles(graph)
    assert not found, "import circles:\n" + "\n".join("{" + ", ".join(c) + "}" for c in found)


def _lint_imports() -> str | None:
    beside = Path(sys.executable).parent / "lint-imports"  # the test's own environment first
    return str(beside) if beside.exists() else shutil.which("lint-imports")


def test_import_layers():
    command = _lint_imports()
    if command is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    result = subprocess.run([command, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
