#!/usr/bin/env bash
# The papers' sweep: best-of-N, beam search, DVTS and lookahead search at n = 4, 16, 64, 256 with seeds 0-4
# (4 x 4 x 5 = 80 runs), one Hydra job each, after the reference pool the difficulty bins come from (best-of-N, n=256,
# seed 100: never scored). Extra arguments pass through to Hydra unchanged.
#
#   ./multirun.sh                                      # the simulated world, locally, jobs in parallel (joblib)
#   LAUNCHER=basic ./multirun.sh model=llama-3.2-1b prm=rlhflow-8b dataset=math500 dataset.path=math500.jsonl
#                                                      # one local GPU: one job after another
#   LAUNCHER=slurm PARTITION=gpu ./multirun.sh model=llama-3.2-1b prm=rlhflow-8b dataset=math500
#                                                      # a SLURM cluster: one GPU job per run (conf/hydra/launcher/slurm.yaml)
#   LAUNCHER=slurm PARTITION=gpu SHARDS=4 ./multirun.sh model=llama-3.2-1b prm=rlhflow-8b dataset=math500
#   python -m tts.store.merge --sweep multirun --out merged  # ... each run split over 4 jobs, then joined back by unique_id
#
# Rerunning the same command resumes: every run directory is named by its config, and a run skips the problems
# already in its run directory. A SLURM job that times out or is pre-empted is requeued and resumes by itself.
#
# Environment:
#   LAUNCHER   local (joblib, JOBS at once) | basic (one after another) | slurm (submitit, one GPU per job) |
#              slurm_cpu (submitit, no GPU) | submitit_local  [local]
#   STRATEGIES, BUDGETS, SEEDS   the sweep axes as comma lists  [best_of_n,beam,dvts,lookahead] [4,16,64,256] [0,1,2,3,4]
#   SHARDS     split each run's problems into this many jobs (dataset.shard / dataset.num_shards)  [1]
#   JOBS       LAUNCHER=local: jobs at once  [-1: one per core]
#   PARTITION, ACCOUNT, QOS, TIME_MIN, GPUS   LAUNCHER=slurm: sbatch partition, account, qos, minutes per job, GPUs per job
#   CPUS, MEM_GB   LAUNCHER=slurm|slurm_cpu: CPUs and memory (GB) per job; ask for no more than one node has, or sbatch
#              refuses the sweep  [slurm: 8, 64; slurm_cpu: 2, 8]
#   REFERENCE_N, REFERENCE_SEEDS   the reference pool run first: best-of-N at this n and these seeds (>= 100, so
#              analysis keeps it apart from the candidates and bins problems by it; see analysis/difficulty.py)
#              [256] [100]; REFERENCE_N=0 skips it
#   SWEEP_DIR  where the run directories go  [multirun, from conf/config.yaml]
#   PYTHON     the interpreter  [python]
#   DRY_RUN=1  print the command instead of running it
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LAUNCHER="${LAUNCHER:-local}"
STRATEGIES="${STRATEGIES:-best_of_n,beam,dvts,lookahead}"
BUDGETS="${BUDGETS:-4,16,64,256}"
SEEDS="${SEEDS:-0,1,2,3,4}"
SHARDS="${SHARDS:-1}"

args=(-m "strategy=${STRATEGIES}" "n=${BUDGETS}" "seed=${SEEDS}")
case "$LAUNCHER" in
  local) args+=(hydra/launcher=joblib "hydra.launcher.n_jobs=${JOBS:--1}") ;;
  basic) ;;  # Hydra's default launcher: jobs run one after another in this process
  submitit_local) args+=(hydra/launcher=submitit_local) ;;
  slurm|slurm_cpu)
    args+=("hydra/launcher=${LAUNCHER}")
    [[ -n "${PARTITION:-}" ]] && args+=("hydra.launcher.partition=${PARTITION}")
    [[ -n "${ACCOUNT:-}" ]] && args+=("hydra.launcher.account=${ACCOUNT}")
    [[ -n "${QOS:-}" ]] && args+=("hydra.launcher.qos=${QOS}")
    [[ -n "${TIME_MIN:-}" ]] && args+=("hydra.launcher.timeout_min=${TIME_MIN}")
    [[ -n "${GPUS:-}" ]] && args+=("hydra.launcher.gpus_per_node=${GPUS}")
    [[ -n "${CPUS:-}" ]] && args+=("hydra.launcher.cpus_per_task=${CPUS}")
    [[ -n "${MEM_GB:-}" ]] && args+=("hydra.launcher.mem_gb=${MEM_GB}")
    ;;
  *) echo "multirun.sh: LAUNCHER must be local, basic, slurm, slurm_cpu or submitit_local, got '${LAUNCHER}'" >&2; exit 2 ;;
esac
if ! [[ "$SHARDS" =~ ^[1-9][0-9]*$ ]]; then
  echo "multirun.sh: SHARDS must be a whole number >= 1, got '${SHARDS}'" >&2; exit 2
fi
if (( SHARDS > 1 )); then
  args+=("dataset.num_shards=${SHARDS}" "dataset.shard=$(seq -s, 0 $((SHARDS - 1)))")
fi
[[ -n "${SWEEP_DIR:-}" ]] && args+=("hydra.sweep.dir=${SWEEP_DIR}")

cmd=("${PYTHON:-python}" "${HERE}/tts/main.py" "${args[@]}" "$@")
# the reference pool: same launcher and extra arguments, its own strategy, n and seeds (args: -m strategy n seed ...)
pool=("${PYTHON:-python}" "${HERE}/tts/main.py" -m strategy=best_of_n "n=${REFERENCE_N:-256}"
      "seed=${REFERENCE_SEEDS:-100}" "${args[@]:4}" "$@")
if [[ "${DRY_RUN:-0}" == 1 ]]; then
  [[ "${REFERENCE_N:-256}" != 0 ]] && { printf '%q ' "${pool[@]}"; echo; }
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi
[[ "${REFERENCE_N:-256}" != 0 ]] && "${pool[@]}"
exec "${cmd[@]}"
