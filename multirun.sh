#!/usr/bin/env bash
# The papers' full sweep in one command: its reference pool, then its 80 runs (conf/experiment/paper_pool.yaml and
# paper.yaml; EXPERIMENT=quick for the small one of the same shape). Every argument goes to both sweeps: a model, PRM,
# dataset or launcher, e.g.  ./multirun.sh model=llama-3.2-1b prm=rlhflow-8b dataset=math500 hydra/launcher=slurm
# (to change the sweep axes, run the experiments directly: python tts/main.py -m +experiment=paper n=4,16; docs/scale-out.md).
set -euo pipefail
"${PYTHON:-python}" "$(dirname "$0")/tts/main.py" -m "+experiment=${EXPERIMENT:-paper}_pool" "$@"
exec "${PYTHON:-python}" "$(dirname "$0")/tts/main.py" -m "+experiment=${EXPERIMENT:-paper}" "$@"
