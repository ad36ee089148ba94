"""The hf policy and a PRM on a CUDA GPU (bf16), with the tiny checkpoints: skipped without a GPU."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("no CUDA GPU", allow_module_level=True)

from tests.tiny_models import tiny_dirs, tiny_prm_config  # noqa: E402
from tts.backends import GenerationRequest, build_policy  # noqa: E402
from tts.backends.hf import HFPolicyConfig  # noqa: E402
from tts.config.schema import ModelConfig  # noqa: E402
from tts.prms import build_prm  # noqa: E402


@pytest.fixture(scope="session")
def dirs(tmp_path_factory):
    return tiny_dirs(tmp_path_factory)


def test_policy_and_prm_on_gpu(dirs):
    policy = build_policy(ModelConfig(name="t", backend=HFPolicyConfig(_target_="tts.backends.hf.build", device="cuda"), path=str(dirs["llama"]),
                                      chat_template="llama3", dtype="bfloat16"), seed=0)
    request = GenerationRequest([{"role": "user", "content": "1+1?"}], n=4, temperature=0.8, max_tokens=8, seed=3)
    outs = policy.generate([request])[0]
    assert len(outs) == 4 and all(0 < o.num_tokens <= 8 for o in outs)
    assert policy.generate([request])[0] == outs
    prm = build_prm(tiny_prm_config("rlhflow", dirs["rlhflow"], "prm.engine.device=cuda", "prm.dtype=bfloat16"))
    scores = prm.score(["1+1?"], [[["a", "b"], ["a"]]])
    assert [len(s) for s in scores[0]] == [2, 1]
