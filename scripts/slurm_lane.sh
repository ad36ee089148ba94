#!/usr/bin/env bash
# The SLURM lane: a one-node SLURM cluster on this machine, the `slurm`-marked tests against it, and nothing left
# running afterwards.
#
#   bash scripts/slurm_lane.sh              # as root on Debian/Ubuntu; installs slurm-wlm and munge if missing
#   PYTHON=.venv/bin/python bash scripts/slurm_lane.sh -k cancelled   # extra arguments go to pytest
#
# The cluster is plain processes (no systemd): munged (as the munge user), slurmctld and slurmd, all configured under a
# fresh temporary folder (SLURM_CONF points there; /etc/slurm is not touched) and talking over 127.0.0.1 only. It is
# configured like a small cluster without accounting (no slurmdbd: sacct fails) and with JobRequeue=0 (jobs are
# requeued only if they asked for it), the two settings that broke sweeps before. On exit, also on failure or Ctrl-C,
# the lane cancels its jobs and stops exactly the processes it started (and the job steps they started).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  echo "slurm lane: installing slurm-wlm and munge" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

STATE="$(mktemp -d /tmp/tts-slurm-lane.XXXXXX)"
chmod 755 "$STATE"  # munged (as the munge user) must reach its socket folder below
export SLURM_CONF="$STATE/slurm.conf"
started=()  # pids of the daemons this lane started, in start order

descendants() {  # every process below pid $1 (job steps of slurmd survive it, so they are collected first)
  local child
  for child in $(pgrep -P "$1" 2>/dev/null || true); do
    echo "$child"
    descendants "$child"
  done
}

stop_all() {
  local status=$? pid victims=()
  trap - EXIT INT TERM
  if ((${#started[@]})); then
    scancel --full --quiet --user="$(id -un)" 2>/dev/null || true  # our cluster's jobs only (SLURM_CONF is ours)
    for pid in "${started[@]}"; do
      victims+=($(descendants "$pid") "$pid")
    done
    for pid in $(printf '%s\n' "${victims[@]}" | tac); do  # newest first: the daemons after their children
      kill -TERM "$pid" 2>/dev/null || true
    done
    for _ in $(seq 50); do  # up to 10 s for a clean exit, then SIGKILL what is left of ours
      alive=0
      for pid in "${victims[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
      ((alive)) || break
      sleep 0.2
    done
    for pid in "${victims[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  fi
  if ((status != 0)) && [[ -d "$STATE" ]]; then
    for log in "$STATE"/*.log "$STATE"/munge/munged.log; do
      [[ -f "$log" ]] && { echo "--- $log (last lines)" >&2; tail -n 20 "$log" >&2; }
    done
  fi
  rm -rf "$STATE"
  exit "$status"
}
trap stop_all EXIT
trap 'exit 130' INT TERM

free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# munge: SLURM's authentication, on a private socket
mkdir -p "$STATE/munge"
chown munge:munge "$STATE/munge"
setpriv --reuid=munge --regid=munge --clear-groups \
  munged --foreground --force --socket="$STATE/munge/munge.socket" --pid-file="$STATE/munge/munged.pid" \
  --log-file="$STATE/munge/munged.log" --seed-file="$STATE/munge/munged.seed" --key-file=/etc/munge/munge.key \
  >/dev/null 2>&1 &
started+=($!)

NODE="$(hostname -s)"
# slurmd -C reports this machine's CPUs and memory; announce 90% of the memory, or slurmd drains the node
node_line="$(slurmd -C | head -n 1 | sed -E 's/ UpTime=.*//')"
memory="$(sed -E 's/.*RealMemory=([0-9]+).*/\1/' <<<"$node_line")"
node_line="$(sed -E "s/RealMemory=[0-9]+/RealMemory=$((memory * 9 / 10))/; s/^NodeName=[^ ]+/NodeName=${NODE}/" \
  <<<"$node_line")"
mkdir -p "$STATE/ctld" "$STATE/d"
cat >"$SLURM_CONF" <<EOF
ClusterName=ttslane
SlurmctldHost=${NODE}(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE/munge/munge.socket,cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SwitchType=switch/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
JobRequeue=0
KillWait=5
${node_line} NodeAddr=127.0.0.1 NodeHostname=${NODE} State=UNKNOWN
PartitionName=lane Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

for _ in $(seq 50); do [[ -S "$STATE/munge/munge.socket" ]] && break; sleep 0.1; done
slurmctld -D -c -i >/dev/null 2>&1 &
started+=($!)
slurmd -D -N "$NODE" >/dev/null 2>&1 &
started+=($!)

echo "slurm lane: waiting for node ${NODE} to be idle" >&2
for i in $(seq 120); do
  state="$(sinfo --noheader --nodes="$NODE" --format=%t 2>/dev/null || true)"
  [[ "$state" == "idle" ]] && break
  ((i == 120)) && { echo "slurm lane: node ${NODE} not idle after 60 s (state: '${state}')" >&2; exit 1; }
  sleep 0.5
done
echo "slurm lane: cluster up ($(sinfo --noheader --format='%P %D node(s) %c CPUs %m MB')); SLURM_CONF=$SLURM_CONF" >&2

status=0
"$PYTHON" -m pytest -m slurm tests/test_slurm.py -q -p no:cacheprovider "$@" || status=$?
exit "$status"
