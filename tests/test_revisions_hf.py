"""filter_vote and revisions through the transformers backend with a tiny random Llama (no hub, CPU).

The tiny policy writes garbage, so its reviews are almost always "unparsed" and its revisions are noise; the point is
that review and revision prompts render through a real chat template and tokenizer, that budgets hold with real token
counts, and that the records come out as with the sim.
"""

from __future__ import annotations


import pytest
from conftest import compose_config

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.tiny_models import save_llama_causal_lm  # noqa: E402
from tts.pipeline import run  # noqa: E402
from tts.store.writer import RunDirectory  # noqa: E402


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return save_llama_causal_lm(tmp_path_factory.mktemp("tiny") / "llama")


def _hf(path) -> list[str]:
    return ["model=llama-3.2-1b", f"model.path={path}", "model/backend=hf", "model.backend.device=cpu",
            "model.dtype=float32", "prm=sim", "dataset.num_problems=2", "logger=none", "budget.max_tokens=12"]


def test_filter_vote_on_hf(llama, tmp_path):
    metrics = run(compose_config(_hf(llama) + ["strategy=filter_vote", "n=3", "strategy.review_max_tokens=6"]),
                  run_dir=tmp_path)
    records = RunDirectory(tmp_path).records()
    assert len(records) == 2
    for record in records:
        completions = record.completions
        assert len(completions) == 3
        assert all(c.extra["verdict"] in ("correct", "wrong", "unparsed") for c in completions)
        assert all(0 < c.extra["review_tokens"] <= 6 and c.tokens <= 12 for c in completions)
        assert record.compute["generated_tokens"] == sum(c.tokens + c.extra["review_tokens"] for c in completions)
    assert metrics["compute/backend_calls"] == pytest.approx(2.0)


def test_revisions_on_hf(llama, tmp_path):
    metrics = run(compose_config(_hf(llama) + ["strategy=revisions", "n=4", "strategy.revisions_per_chain=2",
                                               "strategy.revision_context_tokens=10"]), run_dir=tmp_path)
    records = RunDirectory(tmp_path).records()
    for record in records:
        completions = record.completions
        assert [(c.extra["chain"], c.extra["position"]) for c in completions] == [(0, 0), (0, 1), (1, 0), (1, 1)]
        assert all(c.tokens <= 12 and c.extra["context_tokens"] <= 10 for c in completions)
    assert metrics["compute/backend_calls"] == pytest.approx(2.0)
