"""End to end through `tts/main.py` with real (tiny, random) models: hf policy + each hf PRM family.

The tiny policy writes garbage; the point is that the whole pipeline (prompting, generation, step splitting, PRM
scoring, records) runs on real transformers models and produces one record per problem.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.tiny_models import tiny_dirs  # noqa: E402
from tts.store.writer import RunDirectory  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PRMS = {  # prm config -> tiny checkpoint of its family
    "rlhflow-8b": "rlhflow",
    "math-shepherd": "math_shepherd",
    "qwen2.5-math-prm-7b": "qwen_prm",
    "skywork-1.5b": "skywork",
}


@pytest.fixture(scope="session")
def dirs(tmp_path_factory):
    return tiny_dirs(tmp_path_factory)


def _strategy() -> str:
    return "beam" if (ROOT / "conf" / "strategy" / "beam.yaml").exists() else "best_of_n"


@pytest.mark.parametrize("prm", list(PRMS))
def test_main_runs_with_tiny_models(dirs, prm, tmp_path):
    if not (ROOT / "tts" / "main.py").exists():
        pytest.skip("tts/main.py is not there yet")
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable, "tts/main.py",
        "model=llama-3.2-1b", f"model.path={dirs['llama']}", "model/backend=hf", "model.backend.device=cpu",
        "model.dtype=float32",
        f"prm={prm}", f"prm.path={dirs[PRMS[prm]]}", "prm/engine=hf", "prm.engine.device=cpu", "prm.dtype=float32",
        "prm.trust_remote_code=false",
        f"strategy={_strategy()}", "n=4", "dataset=synthetic", "dataset.num_problems=3",
        "budget.max_tokens=24", "budget.num_iterations=3", "logger=none", f"hydra.run.dir={run_dir}",
    ]
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    import os

    env = {**os.environ, **env}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = list(run_dir.rglob("results/index.jsonl"))
    assert results, f"no results/index.jsonl under {run_dir}: {sorted(p.name for p in run_dir.rglob('*'))}"
    records = RunDirectory(results[0].parent.parent).records()
    assert len(records) == 3
    # the PRM's tokens split into computed and served from a shared prefix's KV cache, per problem and in the metrics
    metrics = json.loads((results[0].parent.parent / "metrics.json").read_text())
    cached = sum(r.compute["prm_cached_tokens"] for r in records)
    assert metrics["tokens/prm_cached"] == cached > 0
    assert metrics["tokens/prm"] == metrics["tokens/prm_computed"] + cached
