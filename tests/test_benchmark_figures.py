"""The benchmarks' figures say what they show: the sim-findings figure's caption names what its intervals are over
(seeds or, for one seed, problems), and no interval of an accuracy reaches outside [0, 1]."""

from __future__ import annotations

import importlib.util

import matplotlib.collections as mcollections
import matplotlib.figure
import numpy as np
import pytest

from conftest import REPO


def _sim_findings():
    spec = importlib.util.spec_from_file_location("sim_findings", REPO / "benchmarks" / "sim_findings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("seeds, said", [(1, "over problems (one seed)"), (5, "over seeds (Student t)")])
def test_sim_findings_figure_says_what_its_bars_are_and_keeps_them_in_0_1(tmp_path, monkeypatch, seeds, said):
    module = _sim_findings()
    # near the edges, with intervals wide enough that mean +- interval would leave [0, 1]
    table = {strategy: {name: {n: (mean, 0.2, seeds) for n, mean in ((4, 0.05), (16, 0.5), (64, 0.97))}
                        for name in module.BINS}
             for strategy in ("best_of_n", "beam")}
    figures = []
    original = matplotlib.figure.Figure.savefig

    def keep(self, *args, **kwargs):
        figures.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    module.plot(table, tmp_path / "findings.png", "weighted")
    (fig,) = figures
    assert said in fig._suptitle.get_text()
    assert "over seeds" not in fig._suptitle.get_text() or seeds > 1
    for ax in fig.axes:
        bars = [c for c in ax.collections if isinstance(c, mcollections.LineCollection)]
        assert bars, "the error bars are drawn"
        ends = np.concatenate([np.concatenate([seg[:, 1] for seg in c.get_segments()]) for c in bars])
        assert ends.min() >= 0.0 and ends.max() <= 1.0


def test_the_real_model_table_reads_a_run_without_a_prm_and_agrees_with_its_records(tmp_path):
    """benchmarks/real_model_gsm8k.py on a prm=none run: every n' and every aggregation the run reports (a DeepConf
    eta of its own included), pass@n first, and sample counts that are the records' own."""
    import json
    import subprocess
    import sys

    from conftest import compose_config
    from tts.pipeline import run
    from tts.store.writer import RunDirectory

    run(compose_config(["prm=none", "n=4", "dataset.num_problems=5", "logger=none", "scoring.deepconf_eta=[25]"]),
        run_dir=tmp_path / "run")
    out = subprocess.run(
        [sys.executable, "benchmarks/real_model_gsm8k.py", str(tmp_path / "run"), "--out", str(tmp_path / "fig.png")],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:] for line in out.stdout.splitlines()
            if line.startswith("| ") and "aggregation" not in line}
    assert list(rows)[:2] == ["pass@n (any sample right)", "majority vote"] and len(rows["majority vote"]) == 3
    assert "DeepConf vote, top 25% confident" in rows and not any("top 10%" in name for name in rows)
    assert rows["majority vote"][-1].startswith(f"{metrics['acc/maj@4']:.3f}")
    records = list(RunDirectory(tmp_path / "run").records())
    right = sum(bool(c.correct) for r in records for c in r.completions)
    assert f"samples: {5 * 4}; right: {right} " in out.stdout
    assert (tmp_path / "fig.png").stat().st_size > 10_000
